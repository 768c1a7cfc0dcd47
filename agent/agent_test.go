package agent

import (
	"context"
	"net/netip"
	"testing"
	"time"
)

func TestWaitRouted(t *testing.T) {
	a := &Agent{}
	pod := netip.MustParseAddr("10.50.0.7")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	if err := a.WaitRouted(ctx, pod); err == nil {
		t.Fatal("WaitRouted returned before any pool was routed")
	}
	a.setRouted([]netip.Prefix{netip.MustParsePrefix("10.244.0.0/16")})
	done := make(chan error, 1)
	go func() { done <- a.WaitRouted(context.Background(), pod) }()
	select {
	case err := <-done:
		t.Fatalf("WaitRouted returned (%v) while no routed pool contains %s", err, pod)
	default:
	}
	// A sync that routes the pool wakes the waiter.
	a.setRouted([]netip.Prefix{netip.MustParsePrefix("10.244.0.0/16"), netip.MustParsePrefix("10.50.0.0/16")})
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := a.WaitRouted(context.Background(), pod); err != nil {
		t.Fatal(err)
	}
}
