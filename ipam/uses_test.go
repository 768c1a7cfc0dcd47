package ipam

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/tortie-net/tortie/datastore"
	"github.com/tortie-net/tortie/datastore/etcdtest"
	"github.com/tortie-net/tortie/resources"
)

// onStores runs a case on the memory store and on etcd.
func onStores(t *testing.T, name string, run func(t *testing.T, s datastore.Store)) {
	t.Run(name+"/memory", func(t *testing.T) { run(t, datastore.NewMemory()) })
	t.Run(name+"/etcd", func(t *testing.T) { run(t, etcdtest.Start(t)) })
}

func assignReq(t *testing.T, m *IPAM, r Request) (netip.Addr, error) {
	t.Helper()
	if r.Node == "" {
		r.Node = "n"
	}
	return m.Assign(context.Background(), r)
}

func in(cidr string, a netip.Addr) bool { return netip.MustParsePrefix(cidr).Contains(a) }

// Pods get addresses only from pools allowing Workload, tunnel addresses
// only from pools allowing Tunnel; a pool that says nothing allows both;
// a LoadBalancer pool serves neither.
func TestAllowedUses(t *testing.T) {
	onStores(t, "restricted pools", func(t *testing.T, s datastore.Store) {
		m := withPools(t, s, pool("pods", "10.1.0.0/24", 26, ", allowedUses: [Workload]")+
			pool("tunnels", "10.2.0.0/24", 26, ", allowedUses: [Tunnel]")+
			pool("lb", "10.3.0.0/24", 26, ", allowedUses: [LoadBalancer]"))
		for i := range 5 {
			a, err := assignReq(t, m, Request{Handle: "pod" + string(rune('a'+i))})
			if err != nil || !in("10.1.0.0/24", a) {
				t.Fatalf("pod address %v, %v: want one from the Workload pool", a, err)
			}
		}
		a, err := assignReq(t, m, Request{Handle: TunnelHandlePrefix + "n"})
		if err != nil || !in("10.2.0.0/24", a) {
			t.Fatalf("tunnel address %v, %v: want one from the Tunnel pool", a, err)
		}
		a, err = assignReq(t, m, Request{Handle: "t2", Use: resources.UseTunnel, Pools: []string{"tunnels"}})
		if err != nil || !in("10.2.0.0/24", a) {
			t.Fatalf("named tunnel pool: %v, %v", a, err)
		}
		// A pool named for the wrong use is not used.
		_, err = assignReq(t, m, Request{Handle: "t3", Use: resources.UseTunnel, Pools: []string{"pods"}})
		if !errors.Is(err, ErrNoPool) || !strings.Contains(err.Error(), "1 allow no Tunnel addresses") {
			t.Fatalf("tunnel address from a Workload pool: %v", err)
		}
		_, err = assignReq(t, m, Request{Handle: "p9", Pools: []string{"lb"}})
		if !errors.Is(err, ErrNoPool) || !strings.Contains(err.Error(), "allow no Workload addresses") {
			t.Fatalf("pod address from a LoadBalancer pool: %v", err)
		}
		if _, err := assignReq(t, m, Request{Handle: "x", Use: "LoadBalancer"}); err == nil {
			t.Fatal("a LoadBalancer request was served")
		}
		// No blocks were ever taken from the LoadBalancer pool.
		blocks, _ := m.Blocks(context.Background())
		for _, b := range blocks {
			if in("10.3.0.0/24", b.CIDR.Addr()) {
				t.Fatalf("block %s claimed from the LoadBalancer pool", b.CIDR)
			}
		}
	})
	onStores(t, "default uses", func(t *testing.T, s datastore.Store) {
		m := withPools(t, s, pool("both", "10.4.0.0/24", 26, ""))
		for _, r := range []Request{{Handle: "pod"}, {Handle: TunnelHandlePrefix + "n"}} {
			if a, err := assignReq(t, m, r); err != nil || !in("10.4.0.0/24", a) {
				t.Fatalf("%s from a pool with the default uses: %v, %v", r.Handle, a, err)
			}
		}
	})
}

// A Manual pool serves only requests that name it, as in Calico.
func TestAssignmentModeManual(t *testing.T) {
	onStores(t, "manual and automatic", func(t *testing.T, s datastore.Store) {
		m := withPools(t, s, pool("auto", "10.1.0.0/30", 30, "")+pool("manual", "10.2.0.0/24", 26, ", assignmentMode: Manual"))
		for i := range 4 {
			a, err := assignReq(t, m, Request{Handle: "a" + string(rune('0'+i))})
			if err != nil || !in("10.1.0.0/30", a) {
				t.Fatalf("automatic assignment %d: %v, %v", i, a, err)
			}
		}
		// The automatic pool is full; the manual one is not used for it.
		if a, err := assignReq(t, m, Request{Handle: "a4"}); !errors.Is(err, ErrExhausted) {
			t.Fatalf("automatic assignment with only a Manual pool left: %v, %v", a, err)
		}
		for _, name := range []string{"manual", "10.2.0.0/24"} {
			a, err := assignReq(t, m, Request{Handle: "m-" + name, Pools: []string{name}})
			if err != nil || !in("10.2.0.0/24", a) {
				t.Fatalf("named Manual pool %s: %v, %v", name, a, err)
			}
		}
		// A tunnel address names its pools too (see agent.TunnelNeeds).
		if a, err := assignReq(t, m, Request{Handle: TunnelHandlePrefix + "n", Pools: []string{"manual"}}); err != nil || !in("10.2.0.0/24", a) {
			t.Fatalf("tunnel address from a named Manual pool: %v, %v", a, err)
		}
	})
	onStores(t, "manual only", func(t *testing.T, s datastore.Store) {
		m := withPools(t, s, pool("manual", "10.2.0.0/24", 26, ", assignmentMode: Manual"))
		_, err := assignReq(t, m, Request{Handle: "a"})
		if !errors.Is(err, ErrNoPool) || !strings.Contains(err.Error(), "1 in Manual assignment mode, used only when named") {
			t.Fatalf("only a Manual pool, not named: %v", err)
		}
	})
}

// Reserved addresses are never handed out; a block wholly reserved is never
// claimed; a reservation made after an address was handed out leaves it
// with its owner (it only stops new assignments).
func TestReservations(t *testing.T) {
	onStores(t, "reserved", func(t *testing.T, s datastore.Store) {
		m := withPools(t, s, pool("p", "10.5.0.0/28", 29, "")+`apiVersion: projectcalico.org/v3
kind: IPReservation
metadata: {name: gateways}
spec:
  reservedCIDRs: [10.5.0.0/31, 10.5.0.5, 10.5.0.9/29, "fd00::/64"]
`)
		ctx := context.Background()
		var got []string
		for i := range 6 {
			a, err := assignReq(t, m, Request{Handle: "h" + string(rune('0'+i))})
			if errors.Is(err, ErrExhausted) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, a.String())
		}
		if strings.Join(got, " ") != "10.5.0.2 10.5.0.3 10.5.0.4 10.5.0.6 10.5.0.7" {
			t.Fatalf("assigned %v", got)
		}
		if blocks, _ := m.Blocks(ctx); len(blocks) != 1 {
			t.Fatalf("%d blocks: the wholly reserved 10.5.0.8/29 was claimed", len(blocks))
		}
		// Reserving an address in use does not take it away.
		objs, err := resources.Decode(strings.NewReader("apiVersion: projectcalico.org/v3\nkind: IPReservation\nmetadata: {name: later}\nspec: {reservedCIDRs: [10.5.0.2]}\n"))
		if err != nil {
			t.Fatal(err)
		}
		if err := (resources.Client{S: s}).Apply(ctx, objs); err != nil {
			t.Fatal(err)
		}
		if a, err := assignReq(t, m, Request{Handle: "h0"}); err != nil || a.String() != "10.5.0.2" {
			t.Fatalf("h0 after its address was reserved: %v, %v", a, err)
		}
		// Released, it is not handed out again.
		m.Cooldown = 1 // the cooldown is not what keeps it
		if err := m.Release(ctx, "h0"); err != nil {
			t.Fatal(err)
		}
		if a, err := assignReq(t, m, Request{Handle: "h9"}); !errors.Is(err, ErrExhausted) {
			t.Fatalf("after the release: %v, %v; want no address", a, err)
		}
	})
}

// Borrowing from another node's block skips reserved addresses too.
func TestReservationsWhenBorrowing(t *testing.T) {
	onStores(t, "borrowing", func(t *testing.T, s datastore.Store) {
		m := withPools(t, s, pool("p", "10.6.0.0/29", 29, "")+
			"apiVersion: projectcalico.org/v3\nkind: IPReservation\nmetadata: {name: r}\nspec: {reservedCIDRs: [10.6.0.1/32, 10.6.0.2]}\n")
		if a, err := assignReq(t, m, Request{Handle: "b0", Node: "b"}); err != nil || a.String() != "10.6.0.0" {
			t.Fatalf("b: %v %v", a, err)
		}
		a, err := assignReq(t, m, Request{Handle: "a0", Node: "a"})
		if err != nil || a.String() != "10.6.0.3" {
			t.Fatalf("a borrows %v, %v; want 10.6.0.3", a, err)
		}
	})
}
