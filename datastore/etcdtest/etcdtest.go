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
	cu := fmt.Sprintf("http://127.0.0.1:%d", FreePort(tb))
	pu := fmt.Sprintf("http://127.0.0.1:%d", FreePort(tb))
	m, err := datastore.StartEmbedded(tb.TempDir(), "test", cu, pu)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(m.Close)
	c, err := datastore.DialEtcd(datastore.EtcdConfig{Endpoints: []string{cu}})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.Close() })
	return c
}
