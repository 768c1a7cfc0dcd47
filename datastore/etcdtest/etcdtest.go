// Package etcdtest starts a real, embedded etcd on loopback for tests.
package etcdtest

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/tortie-net/tortie/datastore"
)

// FreePort returns a loopback TCP port nobody listens on right now,
// chosen below the kernel's ephemeral range where it can: a port from
// that range may meanwhile become the local port of some process's
// outgoing connection before the test binds it.
func FreePort(tb testing.TB) int {
	tb.Helper()
	low := ephemeralLow()
	for range 50 {
		if low <= minPort {
			break
		}
		port := minPort + rand.IntN(low-minPort)
		if l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port)); err == nil {
			l.Close()
			return port
		}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// minPort is the lowest port FreePort picks, above the well-known and
// most registered services.
const minPort = 10000

// ephemeralLow is the first port of the kernel's ephemeral range (32768
// when it cannot be read).
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 32768
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 32768
	}
	n, err := strconv.Atoi(f[0])
	if err != nil {
		return 32768
	}
	return n
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
	pickClient, pickPeer := cfg.ClientURL == "", cfg.PeerURL == ""
	// A port found free may be taken before etcd binds it (by another
	// test process): then try again on others, when they were ours to
	// choose.
	for attempt := 1; ; attempt++ {
		if pickClient {
			cfg.ClientURL = fmt.Sprintf("%s://127.0.0.1:%d", scheme, FreePort(tb))
		}
		if pickPeer {
			cfg.PeerURL = fmt.Sprintf("%s://127.0.0.1:%d", scheme, FreePort(tb))
		}
		m, err := datastore.StartEmbedded(cfg)
		if err == nil {
			tb.Cleanup(m.Close)
			return m
		}
		if !errors.Is(err, syscall.EADDRINUSE) || !(pickClient || pickPeer) || attempt == 5 {
			tb.Fatal(err)
		}
		tb.Logf("etcdtest: %v; trying other ports", err)
	}
}
