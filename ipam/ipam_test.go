package ipam

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tortie-net/tortie/datastore"
	"github.com/tortie-net/tortie/datastore/etcdtest"
	"github.com/tortie-net/tortie/resources"
)

func withPools(t testing.TB, s datastore.Store, yaml string) *IPAM {
	t.Helper()
	objs, err := resources.Decode(strings.NewReader(yaml))
	if err != nil {
		t.Fatal(err)
	}
	if err := (resources.Client{S: s}).Apply(context.Background(), objs); err != nil {
		t.Fatal(err)
	}
	return &IPAM{S: s}
}

func pool(name, cidr string, blockSize int, extra string) string {
	return fmt.Sprintf("apiVersion: tortie.io/v1\nkind: IPPool\nmetadata: {name: %s}\nspec: {cidr: %s, blockSize: %d%s}\n---\n", name, cidr, blockSize, extra)
}

func assign(t *testing.T, m *IPAM, handle, node string) netip.Addr {
	t.Helper()
	a, err := m.Assign(context.Background(), Request{Handle: handle, Node: node})
	if err != nil {
		t.Fatalf("assign %s on %s: %v", handle, node, err)
	}
	return a
}

func TestClaimAllocateAndBorrow(t *testing.T) {
	m := withPools(t, datastore.NewMemory(), pool("p", "10.9.0.0/29", 30, ""))
	ctx := context.Background()
	var a []netip.Addr
	for i := 0; i < 4; i++ {
		a = append(a, assign(t, m, fmt.Sprint("a", i), "a"))
	}
	if a[0].String() != "10.9.0.0" || a[3].String() != "10.9.0.3" {
		t.Fatalf("first block allocations %v", a)
	}
	if b := assign(t, m, "b0", "b"); b.String() != "10.9.0.4" {
		t.Fatalf("node b should claim the second block, got %v", b)
	}
	// Node a is full and no block is free: it borrows from b's block.
	borrowed := assign(t, m, "a4", "a")
	if borrowed.String() != "10.9.0.5" {
		t.Fatalf("borrowed %v", borrowed)
	}
	blocks, _ := m.Blocks(ctx)
	if len(blocks) != 2 || blocks[1].AffinityNode() != "b" || blocks[1].Allocs[1].Node != "a" {
		t.Fatalf("borrowed address not recorded against node a: %+v", blocks)
	}
	// Same handle, same address (a retried ADD).
	if again := assign(t, m, "a4", "a"); again != borrowed {
		t.Fatalf("handle a4 reassigned %v", again)
	}
	m.StrictAffinity = true
	if _, err := m.Assign(ctx, Request{Handle: "a5", Node: "a"}); !errors.Is(err, ErrExhausted) {
		t.Fatalf("strict affinity should exhaust, got %v", err)
	}
}

func TestReleaseCooldownAndGC(t *testing.T) {
	m := withPools(t, datastore.NewMemory(), pool("p", "10.9.0.0/24", 26, ""))
	now := time.Unix(1000, 0)
	m.Now = func() time.Time { return now }
	m.Cooldown = time.Minute
	ctx := context.Background()
	first := assign(t, m, "h1", "a")
	if err := m.Release(ctx, "h1"); err != nil {
		t.Fatal(err)
	}
	if err := m.Release(ctx, "h1"); err != nil {
		t.Fatalf("second release: %v", err)
	}
	if again := assign(t, m, "h2", "a"); again == first {
		t.Fatal("released address reused inside the cooldown")
	}
	now = now.Add(2 * time.Minute)
	if again := assign(t, m, "h3", "a"); again != first {
		t.Fatalf("after the cooldown the lowest address should be reused, got %v", again)
	}
	// GC frees what the runtime no longer knows about.
	released, err := m.GC(ctx, "a", func(h string) bool { return h == "h2" }, nil)
	if err != nil || len(released) != 1 || released[0] != "h3" {
		t.Fatalf("GC released %v, %v", released, err)
	}
	if _, err := m.GetHandle(ctx, "h3"); !errors.Is(err, datastore.ErrNotFound) {
		t.Fatal("GC left the handle")
	}
	// An empty block of a deleted node is reclaimed.
	_ = m.Release(ctx, "h2")
	if _, err := m.GC(ctx, "a", func(string) bool { return false }, map[string]bool{}); err != nil {
		t.Fatal(err)
	}
	if blocks, _ := m.Blocks(ctx); len(blocks) != 0 {
		t.Fatalf("empty block of a gone node kept: %d", len(blocks))
	}
}

func TestPoolSelection(t *testing.T) {
	m := withPools(t, datastore.NewMemory(),
		pool("zone-a", "10.1.0.0/24", 26, ", nodeSelector: \"zone == 'a'\"")+pool("off", "10.2.0.0/24", 26, ", disabled: true"))
	ctx := context.Background()
	if _, err := m.Assign(ctx, Request{Handle: "x", Node: "n", NodeLabels: map[string]string{"zone": "b"}}); err == nil ||
		!strings.Contains(err.Error(), "no enabled IP pool selects node n") || !errors.Is(err, ErrNoPool) {
		t.Fatalf("want a clear error, got %v", err)
	}
	// A pool that exists nowhere is named as such; one that exists but is
	// disabled is not "missing".
	_, err := m.Assign(ctx, Request{Handle: "x", Node: "n", NodeLabels: map[string]string{"zone": "a"}, Pools: []string{"zone-a", "nope"}})
	if !errors.Is(err, ErrNoPool) || !strings.Contains(err.Error(), `IP pool "nope" does not exist`) {
		t.Fatalf("unknown pool: %v", err)
	}
	_, err = m.Assign(ctx, Request{Handle: "x", Node: "n", NodeLabels: map[string]string{"zone": "a"}, Pools: []string{"10.2.0.0/24"}})
	if !errors.Is(err, ErrNoPool) || !strings.Contains(err.Error(), "no enabled IP pool selects node n among 10.2.0.0/24") {
		t.Fatalf("disabled pool: %v", err)
	}
	a, err := m.Assign(ctx, Request{Handle: "y", Node: "n", NodeLabels: map[string]string{"zone": "a"}})
	if err != nil || !netip.MustParsePrefix("10.1.0.0/24").Contains(a) {
		t.Fatalf("%v %v", a, err)
	}
}

// concurrent runs 200 assignments across three nodes at once: no address
// twice, every handle recorded; releasing all leaves every block empty.
func concurrent(t *testing.T, s datastore.Store) {
	m := withPools(t, s, pool("p", "10.20.0.0/22", 26, ""))
	ctx := context.Background()
	var mu sync.Mutex
	seen := map[netip.Addr]string{}
	var wg sync.WaitGroup
	for i := 0; i < 200; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			h := fmt.Sprintf("net.c%03d", i)
			a, err := m.Assign(ctx, Request{Handle: h, Node: fmt.Sprint("n", i%3)})
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			defer mu.Unlock()
			if other, dup := seen[a]; dup {
				t.Errorf("%v given to %s and %s", a, other, h)
			}
			seen[a] = h
		}()
	}
	wg.Wait()
	hs, err := m.Handles(ctx)
	if err != nil || len(hs) != 200 || len(seen) != 200 {
		t.Fatalf("%d handles, %d addresses, %v", len(hs), len(seen), err)
	}
	for _, h := range hs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := m.Release(ctx, h.ID); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	blocks, _ := m.Blocks(ctx)
	for _, b := range blocks {
		if b.InUse() != 0 {
			t.Errorf("block %s still has %d addresses", b.CIDR, b.InUse())
		}
	}
	if hs, _ := m.Handles(ctx); len(hs) != 0 {
		t.Errorf("%d handles left", len(hs))
	}
}

func TestConcurrentMemory(t *testing.T) { concurrent(t, datastore.NewMemory()) }
func TestConcurrentEtcd(t *testing.T)   { concurrent(t, etcdtest.Start(t)) }
