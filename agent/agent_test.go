package agent

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/tortie-net/tortie/resources"
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
