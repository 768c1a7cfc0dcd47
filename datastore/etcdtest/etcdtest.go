// Package etcdtest starts a real, embedded etcd on loopback for tests.
package etcdtest

import (
	"fmt"
	"net"
	"testing"

	"github.com/tortie-net/tortie/datastore"
)

// FreePort returns a loopback TCP port nobody listens on right now.
func FreePort(tb testing.TB) int {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Start runs a one-member etcd for the test and returns a client of it.
func Start(tb testing.TB) *datastore.Etcd {
	tb.Helper()
	m := StartMember(tb, datastore.EmbeddedConfig{})
	c, err := datastore.DialEtcd(datastore.EtcdConfig{Endpoints: []string{m.URL}})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.Close() })
	return c
}

// StartMember runs a one-member etcd configured by cfg, filling in what
// it leaves empty: a temporary directory, a name, and loopback URLs on
// free ports (https when cfg names a certificate). It is closed when the
// test ends.
func StartMember(tb testing.TB, cfg datastore.EmbeddedConfig) *datastore.Embedded {
	tb.Helper()
	scheme := "http"
	if cfg.CertFile != "" {
		scheme = "https"
	}
	if cfg.Dir == "" {
		cfg.Dir = tb.TempDir()
	}
	if cfg.Name == "" {
		cfg.Name = "test"
	}
	if cfg.ClientURL == "" {
		cfg.ClientURL = fmt.Sprintf("%s://127.0.0.1:%d", scheme, FreePort(tb))
	}
	if cfg.PeerURL == "" {
		cfg.PeerURL = fmt.Sprintf("%s://127.0.0.1:%d", scheme, FreePort(tb))
	}
	m, err := datastore.StartEmbedded(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(m.Close)
	return m
}
