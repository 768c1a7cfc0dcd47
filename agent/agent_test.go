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
	uses := func(p *resources.IPPool, u ...string) *resources.IPPool { p.Spec.AllowedUses = u; return p }
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
		{"vxlan pool for pods only", []*resources.IPPool{uses(p("v", "10.1.0.0/16", "Never", "Always", "", false), "Workload"),
			uses(p("i", "10.2.0.0/16", "Always", "Never", "", false), "Tunnel", "Workload")}, true, false, "i"},
		{"vxlan pool for tunnels only", []*resources.IPPool{uses(p("v", "10.1.0.0/16", "Never", "Always", "", false), "Tunnel")}, false, true, "v"},
	} {
		ipip, vxlan, pools := TunnelNeeds(c.pools, zone)
		if ipip != c.ipip || vxlan != c.vxlan || strings.Join(pools, ",") != c.from {
			t.Errorf("%s: ipip %v vxlan %v from %v, want %v %v %s", c.name, ipip, vxlan, pools, c.ipip, c.vxlan, c.from)
		}
	}
}

// What an operator set on a node, including the Calico fields tortie keeps
// without acting on them, survives the node registering itself again;
// what tortie owns (the address, the VTEP MAC) is rewritten.
func TestRegisterKeepsOperatorFields(t *testing.T) {
	store := datastore.NewMemory()
	ctx := context.Background()
	objs, err := resources.Decode(strings.NewReader(`
apiVersion: projectcalico.org/v3
kind: Node
metadata: {name: n1, labels: {rack: r1}, annotations: {owner: net-team}}
spec:
  bgp: {ipv4Address: 10.0.0.9/24, ipv6Address: "fd00::1/64", asNumber: 65010}
  orchRefs: [{nodeName: n1, orchestrator: k8s}]
  wireguard: {interfaceIPv4Address: 10.244.0.1}
  addresses: [{address: 10.0.0.1, type: InternalIP}]
status: {podCIDRs: [10.244.0.0/24]}
`))
	if err != nil {
		t.Fatal(err)
	}
	rc := resources.Client{S: store}
	if err := rc.Apply(ctx, objs); err != nil {
		t.Fatal(err)
	}
	a := &Agent{Node: "n1", Addr: netip.MustParsePrefix("10.0.0.1/24"), Labels: map[string]string{"zone": "a"}, Store: store, Log: zap.NewNop()}
	if err := a.register(ctx); err != nil {
		t.Fatal(err)
	}
	nodes, err := rc.Nodes(ctx)
	if err != nil || len(nodes) != 1 {
		t.Fatalf("%v %v", nodes, err)
	}
	n := nodes[0]
	if addr, _ := n.Address(); addr.String() != "10.0.0.1/24" || n.Spec.BGP.ASNumber != 65010 || n.Spec.BGP.IPv6Address != "fd00::1/64" ||
		len(n.Spec.OrchRefs) != 1 || n.Spec.Wireguard == nil || len(n.Spec.Addresses) != 1 || len(n.Status.PodCIDRs) != 1 ||
		n.Metadata.Annotations["owner"] != "net-team" || n.Metadata.Labels["rack"] != "r1" || n.Metadata.Labels["zone"] != "a" {
		t.Fatalf("after registration: %+v %+v %+v", n.Metadata, n.Spec, n.Status)
	}
}
