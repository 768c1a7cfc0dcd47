package underlay

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/tortie-net/tortie/internal/testutil"
	"github.com/tortie-net/tortie/nsutil"
)

// TestWatchMTU: the watch reports the interface's MTU at once and each
// change of it in its namespace, none of another interface's, and returns
// when its context ends, having failed nowhere.
func TestWatchMTU(t *testing.T) {
	ns := testutil.Netns(t)
	testutil.Run(t, "ip", "-n", ns, "link", "add", "u0", "mtu", "1500", "type", "veth", "peer", "name", "u1")
	mtus := make(chan int, 16)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	failures := make(chan error, 16)
	ended := make(chan error, 1)
	go func() {
		ended <- nsutil.Do(testutil.NetnsPath(ns), func() error {
			WatchMTU(ctx, "u0", func(mtu int) { mtus <- mtu }, func(err error) { failures <- err })
			return nil
		})
	}()
	next := func() int {
		t.Helper()
		select {
		case m := <-mtus:
			return m
		case <-time.After(10 * time.Second):
			t.Fatal("no MTU reported within 10 s")
			return 0
		}
	}
	if m := next(); m != 1500 {
		t.Fatalf("first report %d, want 1500", m)
	}
	for _, want := range []int{1400, 1450} {
		testutil.Run(t, "ip", "-n", ns, "link", "set", "u1", "mtu", "1300") // the peer: not reported
		testutil.Run(t, "ip", "-n", ns, "link", "set", "u0", "mtu", fmt.Sprint(want))
		if m := next(); m != want {
			t.Fatalf("reported %d, want %d", m, want)
		}
	}
	// A change of something else (the link up) reports nothing new.
	testutil.Run(t, "ip", "-n", ns, "link", "set", "u0", "up")
	testutil.Run(t, "ip", "-n", ns, "link", "set", "u0", "mtu", "1280")
	if m := next(); m != 1280 {
		t.Fatalf("reported %d, want 1280", m)
	}
	cancel()
	select {
	case err := <-ended:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the watch did not return within 10 s of its context's end")
	}
	select {
	case err := <-failures:
		t.Fatalf("the watch failed: %v", err)
	default:
	}
}
