package dsync

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/tortie-net/tortie/datastore"
	"github.com/tortie-net/tortie/fib"
	"github.com/tortie-net/tortie/internal/testutil"
	"github.com/tortie-net/tortie/ipam"
	"github.com/tortie-net/tortie/resources"
)

func apply(t *testing.T, s datastore.Store, y string) {
	t.Helper()
	objs, err := resources.Decode(strings.NewReader(y))
	if err != nil {
		t.Fatal(err)
	}
	if err := (resources.Client{S: s}).Apply(context.Background(), objs); err != nil {
		t.Fatal(err)
	}
}

const cluster = `apiVersion: tortie.io/v1
kind: IPPool
metadata: {name: p}
spec: {cidr: 10.244.0.0/16, blockSize: 30, vxlanMode: CrossSubnet}
---
apiVersion: tortie.io/v1
kind: Node
metadata: {name: a}
spec: {bgp: {ipv4Address: 10.0.1.1/24}}
---
apiVersion: tortie.io/v1
kind: Node
metadata: {name: b}
spec: {bgp: {ipv4Address: 10.0.1.2/24}}
---
apiVersion: tortie.io/v1
kind: Node
metadata: {name: c}
spec: {bgp: {ipv4Address: 10.0.2.3/24}}
`

func TestRoutes(t *testing.T) {
	s := datastore.NewMemory()
	apply(t, s, cluster)
	m := &ipam.IPAM{S: s, MaxBlocksPerNode: 1}
	ctx := context.Background()
	for i, node := range []string{"a", "a", "a", "a", "b", "c", "a"} { // a's 5th address is borrowed
		if _, err := m.Assign(ctx, ipam.Request{Handle: node + string(rune('0'+i)), Node: node}); err != nil {
			t.Fatal(err)
		}
	}
	f := fib.New()
	sy := &Syncer{Store: s, Me: "b", MyAddr: netip.MustParsePrefix("10.0.1.2/24"), FIB: f, Log: zap.NewNop()}
	if err := sy.Resync(ctx); err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, r := range f.Load().Routes() {
		got[r.Prefix.String()] = r.NextHop.Kind.String() + " " + r.NextHop.NodeName + " " + r.NextHop.Mode.String()
	}
	want := map[string]string{
		"10.244.0.0/30": "remote a native", // same subnet: CrossSubnet routes natively
		"10.244.0.4/30": "blackhole  native",
		"10.244.0.8/30": "remote c vxlan",  // other subnet: encapsulated
		"10.244.0.5/32": "remote a native", // borrowed from b's block by a
	}
	for p, w := range want {
		if got[p] != w {
			t.Errorf("%s: %q, want %q (all: %v)", p, got[p], w, got)
		}
	}
	if len(got) != len(want) {
		t.Errorf("routes %v", got)
	}
}

func TestUnknownNodeNotRouted(t *testing.T) {
	s := datastore.NewMemory()
	apply(t, s, cluster)
	if _, err := (&ipam.IPAM{S: s}).Assign(context.Background(), ipam.Request{Handle: "x", Node: "ghost"}); err != nil {
		t.Fatal(err)
	}
	sy := &Syncer{Store: s, Me: "a", FIB: fib.New(), Log: zap.NewNop()}
	snap, err := sy.read(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	routes, warnings := Routes("a", netip.MustParsePrefix("10.0.1.1/24"), snap, false)
	if len(routes) != 0 || len(warnings) != 1 {
		t.Fatalf("routes %v warnings %v", routes, warnings)
	}
}

// TestWatchAndUnreachable: changes arrive through the watch; when the
// store is down the last routes stay.
func TestWatchAndUnreachable(t *testing.T) {
	s := datastore.NewMemory()
	apply(t, s, cluster)
	f := fib.New()
	sy := &Syncer{Store: s, Me: "a", MyAddr: netip.MustParsePrefix("10.0.1.1/24"), FIB: f, Log: zap.NewNop()}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go sy.Run(ctx)
	wait := func(what string, cond func() bool) { testutil.WaitFor(t, 30*time.Second, what, cond) }
	wait("first sync", sy.Ready)
	if _, err := (&ipam.IPAM{S: s}).Assign(ctx, ipam.Request{Handle: "c1", Node: "c"}); err != nil {
		t.Fatal(err)
	}
	wait("c's block routed", func() bool { return f.Load().Len() == 1 })
	s.Down = true
	before := sy.Syncs()
	_ = sy.Resync(ctx) // fails: the store is down
	if f.Load().Len() != 1 || sy.Syncs() != before {
		t.Fatal("an unreachable datastore changed the routes")
	}
}

// TestInvalidRecordsDoNotStall: malformed records of every kind, present at
// the first list and written later, are skipped and reported; the rest of
// each snapshot and later changes are applied.
func TestInvalidRecordsDoNotStall(t *testing.T) {
	s := datastore.NewMemory()
	apply(t, s, cluster)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	put := func(key, v string) {
		t.Helper()
		if _, err := s.Put(ctx, resources.Prefix+key, []byte(v)); err != nil {
			t.Fatal(err)
		}
	}
	put("ippools/bad", `{"apiVersion":"tortie.io/v1","kind":"IPPool","metadata":{"name":"bad"},"spec":{"cidr":"10.300.0.0/16"}}`)
	put("nodes/bad", `{"apiVersion":"tortie.io/v1","kind":"Node","metadata":{"name":"bad"},"spec":{"bgp":{"ipv4Address":"not-an-ip"}}}`)
	put("ipam/blocks/10.244.9.0-30", `{"cidr":"10.244.9.0/30","allocations":[{"ha`)
	if _, err := (&ipam.IPAM{S: s}).Assign(ctx, ipam.Request{Handle: "c1", Node: "c"}); err != nil {
		t.Fatal(err)
	}
	inv := resources.NewInvalid(zap.NewNop())
	f := fib.New()
	sy := &Syncer{Store: s, Me: "a", MyAddr: netip.MustParsePrefix("10.0.1.1/24"), FIB: f, Log: zap.NewNop(), Invalid: inv}
	go sy.Run(ctx)
	wait := func(what string, cond func() bool) { testutil.WaitFor(t, 30*time.Second, what, cond) }
	wait("first sync", sy.Ready)
	if snap := sy.Snapshot(); len(snap.Pools) != 1 || len(snap.Nodes) != 3 || len(snap.Blocks) != 1 || f.Load().Len() != 1 {
		t.Fatalf("snapshot: %d pools %d nodes %d blocks, %d routes", len(snap.Pools), len(snap.Nodes), len(snap.Blocks), f.Load().Len())
	}
	if n := len(inv.List()); n != 3 {
		t.Fatalf("%d invalid records reported, want 3: %+v", n, inv.List())
	}
	put("bgppeers/bad", `{"apiVersion":"tortie.io/v1","kind":"BGPPeer","meta`)
	put("bgpconfigurations/default", `{"apiVersion":"tortie.io/v1","kind":"BGPConfiguration","metadata":{"name":"default"},"spec":{"asNumber":"x"}}`)
	if _, err := (&ipam.IPAM{S: s}).Assign(ctx, ipam.Request{Handle: "b1", Node: "b"}); err != nil {
		t.Fatal(err)
	}
	wait("b's block routed after the bad records", func() bool { return f.Load().Len() == 2 })
	wait("the new bad records reported", func() bool { return len(inv.List()) == 5 })
}
