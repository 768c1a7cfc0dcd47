package agent

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/tortie-net/tortie/datastore"
	"github.com/tortie-net/tortie/fib"
	"github.com/tortie-net/tortie/resources"
)

// TestReadyWhileStarting asks Ready, as the API does, while Start runs on
// another goroutine (here retrying a registration the store refuses). The
// syncer Start makes must be published safely: run under -race.
func TestReadyWhileStarting(t *testing.T) {
	store := datastore.NewMemory()
	store.Down = true // registration fails and Start keeps retrying
	a := &Agent{Node: "n1", Addr: netip.MustParsePrefix("10.0.0.1/24"), Store: store, FIB: fib.New(), Log: zap.NewNop()}
	if err := a.Ready(context.Background()); err == nil || a.Synced() {
		t.Fatal("ready before Start")
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Start(ctx) }()
	for i := 0; i < 1000; i++ {
		if err := a.Ready(context.Background()); err == nil || a.Synced() {
			t.Fatal("ready before the first sync")
		}
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Start: %v, want context.Canceled", err)
	}
	if err := a.Start(context.Background()); err == nil {
		t.Fatal("a second Start was accepted")
	}
}

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

func TestTunnelNeeds(t *testing.T) {
	p := func(name, cidr, ipip, vxlan, sel string, disabled bool) *resources.IPPool {
		return &resources.IPPool{Metadata: resources.Meta{Name: name}, Spec: resources.IPPoolSpec{CIDR: netip.MustParsePrefix(cidr),
			IPIPMode: ipip, VXLANMode: vxlan, NodeSelector: sel, Disabled: disabled}}
	}
	zone := map[string]string{"zone": "a"}
	for _, c := range []struct {
		name        string
		pools       []*resources.IPPool
		ipip, vxlan bool
		from        string
	}{
		{"no pool encapsulates", []*resources.IPPool{p("n", "10.1.0.0/16", "Never", "Never", "", false), p("e", "10.2.0.0/16", "", "", "", false)}, false, false, ""},
		{"ipip", []*resources.IPPool{p("n", "10.1.0.0/16", "Never", "Never", "", false), p("i", "10.2.0.0/16", "CrossSubnet", "Never", "", false)}, true, false, "i"},
		{"vxlan", []*resources.IPPool{p("v", "10.1.0.0/16", "Never", "Always", "", false)}, false, true, "v"},
		{"both", []*resources.IPPool{p("v", "10.1.0.0/16", "Never", "Always", "", false), p("i", "10.2.0.0/16", "Always", "Never", "", false)}, true, true, "v,i"},
		{"disabled ipip pool", []*resources.IPPool{p("i", "10.2.0.0/16", "Always", "Never", "", true)}, false, false, ""},
		{"ipip pool for other nodes", []*resources.IPPool{p("i", "10.2.0.0/16", "Always", "Never", "zone == 'b'", false)}, false, false, ""},
		{"ipip pool for this node", []*resources.IPPool{p("i", "10.2.0.0/16", "Always", "Never", "zone == 'a'", false)}, true, false, "i"},
	} {
		ipip, vxlan, pools := TunnelNeeds(c.pools, zone)
		if ipip != c.ipip || vxlan != c.vxlan || strings.Join(pools, ",") != c.from {
			t.Errorf("%s: ipip %v vxlan %v from %v, want %v %v %s", c.name, ipip, vxlan, pools, c.ipip, c.vxlan, c.from)
		}
	}
}
