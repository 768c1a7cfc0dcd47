package etcdtest

import (
	"errors"
	"fmt"
	"net"
	"syscall"
	"testing"

	"github.com/tortie-net/tortie/datastore"
)

// TestTakenPortIsAddrInUse: etcd refuses a client port someone holds
// with an error StartMember recognises as EADDRINUSE (and retries on
// other ports), and FreePort's ports can be bound.
func TestTakenPortIsAddrInUse(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	_, err = datastore.StartEmbedded(datastore.EmbeddedConfig{Dir: t.TempDir(), Name: "taken",
		ClientURL: fmt.Sprintf("http://%s", l.Addr()), PeerURL: fmt.Sprintf("http://127.0.0.1:%d", FreePort(t))})
	if !errors.Is(err, syscall.EADDRINUSE) {
		t.Fatalf("etcd on a taken port: %v, want EADDRINUSE", err)
	}
	for range 20 {
		port := FreePort(t)
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			t.Fatalf("FreePort gave %d: %v", port, err)
		}
		l.Close()
		if low := ephemeralLow(); port >= low && low > minPort {
			t.Errorf("FreePort gave %d, in the ephemeral range from %d", port, low)
		}
	}
	Start(t) // and a member starts
}
