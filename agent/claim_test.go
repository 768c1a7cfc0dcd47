package agent

import (
	"bytes"
	"context"
	"errors"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/tortie-net/tortie/datastore"
	"github.com/tortie-net/tortie/datastore/etcdtest"
	"github.com/tortie-net/tortie/datastore/kubestore"
	"github.com/tortie-net/tortie/datastore/kubetest"
	"github.com/tortie-net/tortie/resources"
)

// TestNameClaim: a node whose name is held by a live node at another
// address is refused with ErrNameHeld; the same node restarting (same
// address) is not; once the holder stops, its name is taken over after
// the heartbeat window.
func TestNameClaim(t *testing.T) {
	store := datastore.NewMemory()
	// A node waits for two and a half of its own heartbeat periods: the
	// holder beats every 20 ms, and the one refused waits 5 s for that.
	node := n1On(store)
	ctx := context.Background()
	stop := live(t, node("10.0.1.1/24", 20*time.Millisecond))

	err := node("10.0.1.2/24", 2*time.Second).register(ctx)
	if !errors.Is(err, ErrNameHeld) || !strings.Contains(err.Error(), "10.0.1.1/24") {
		t.Fatalf("a second node of the same name: %v, want ErrNameHeld naming the holder", err)
	}
	if got := registered(t, store); got != "10.0.1.1/24" {
		t.Fatalf("the refused node changed the record: %s", got)
	}
	// The holder itself, restarting while its last heartbeat is fresh.
	if err := node("10.0.1.1/24", time.Hour).register(ctx); err != nil {
		t.Fatalf("the same node restarting: %v", err)
	}

	// The holder stops: its claim lapses and the name is taken over.
	stop()
	if err := node("10.0.1.2/24", 20*time.Millisecond).register(ctx); err != nil {
		t.Fatalf("after the holder stopped: %v", err)
	}
	if got := registered(t, store); got != "10.0.1.2/24" {
		t.Fatalf("record after the take-over: %s", got)
	}
}

// registered is the stored node n1's address.
func registered(t *testing.T, store datastore.Store) string {
	t.Helper()
	nodes, err := (resources.Client{S: store}).Nodes(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes {
		if n.Metadata.Name == "n1" && n.Spec.BGP != nil {
			return n.Spec.BGP.IPv4Address.String()
		}
	}
	t.Fatal("n1 is not registered")
	return ""
}

// TestNameClaimOtherNames: node n10's live heartbeat, whose key has n1's
// as its prefix, is not n1's; a new n1 takes over a name whose holder has
// stopped while n10 beats on.
func TestNameClaimOtherNames(t *testing.T) {
	store := datastore.NewMemory()
	ctx := context.Background()
	n := func(name, addr string, every time.Duration) *Agent {
		return &Agent{Node: name, Addr: netip.MustParsePrefix(addr), Store: store, Log: zap.NewNop(), HeartbeatEvery: every}
	}
	stale := n("n1", "10.0.1.1/24", time.Hour)
	if err := stale.register(ctx); err != nil {
		t.Fatal(err)
	}
	// One heartbeat, then the holder is gone.
	sctx, stop := context.WithCancel(ctx)
	stop()
	stale.beat(sctx)

	live(t, n("n10", "10.0.1.10/24", 10*time.Millisecond))

	if err := n("n1", "10.0.1.2/24", 40*time.Millisecond).register(ctx); err != nil {
		t.Fatalf("n1's holder stopped, n10 beats: %v", err)
	}
	if got := registered(t, store); got != "10.0.1.2/24" {
		t.Fatalf("record after the take-over: %s", got)
	}
}

// shortWatches is a store whose watches all end at once, as a store's do
// that keeps dropping them (a compacted revision, a lost connection). It
// is safe for concurrent use, as the store it wraps is.
type shortWatches struct {
	datastore.Store
	watches atomic.Int64
}

func (s *shortWatches) Watch(context.Context, string, int64) <-chan datastore.Event {
	s.watches.Add(1)
	ch := make(chan datastore.Event)
	close(ch)
	return ch
}

// stalledWatches is a store whose watches deliver nothing until they are
// cancelled, as an etcd watch does while its connection is lost. It is
// safe for concurrent use, as the store it wraps is.
type stalledWatches struct{ datastore.Store }

func (s stalledWatches) Watch(ctx context.Context, _ string, _ int64) <-chan datastore.Event {
	ch := make(chan datastore.Event)
	go func() { <-ctx.Done(); close(ch) }()
	return ch
}

// TestNameClaimWatchStalls: a watch that sees nothing does not make a live
// holder silent: the read that closes the window sees its beats.
func TestNameClaimWatchStalls(t *testing.T) {
	store := stalledWatches{datastore.NewMemory()}
	ctx := context.Background()
	n := n1On(store)
	live(t, n("10.0.1.1/24", 10*time.Millisecond))
	if err := n("10.0.1.2/24", 100*time.Millisecond).register(ctx); !errors.Is(err, ErrNameHeld) {
		t.Fatalf("a live holder behind a stalled watch: %v, want ErrNameHeld", err)
	}
}

// TestNameClaimWatchEnds: a watch that ends before the window is not a
// holder's silence. With every watch ending at once, a live holder is still
// seen (its claim read again has moved on) and refuses the newcomer; a
// stopped one is taken over only when the whole window has passed.
func TestNameClaimWatchEnds(t *testing.T) {
	store := &shortWatches{Store: datastore.NewMemory()}
	ctx := context.Background()
	n := n1On(store)
	stop := live(t, n("10.0.1.1/24", 10*time.Millisecond))

	if err := n("10.0.1.2/24", 2*time.Second).register(ctx); !errors.Is(err, ErrNameHeld) {
		t.Fatalf("a live holder behind watches that end: %v, want ErrNameHeld", err)
	}

	stop()
	store.watches.Store(0)
	every := 200 * time.Millisecond
	start := time.Now()
	if err := n("10.0.1.2/24", every).register(ctx); err != nil {
		t.Fatalf("after the holder stopped: %v", err)
	}
	if waited, window := time.Since(start), every*5/2; waited < window {
		t.Fatalf("took the name over after %v, before the %v window ended", waited, window)
	}
	if w := store.watches.Load(); w < 2 {
		t.Fatalf("%d watches over the window: an ended watch was not resumed", w)
	}
	if got := registered(t, store); got != "10.0.1.2/24" {
		t.Fatalf("record after the take-over: %s", got)
	}
}

// TestNameClaimStores: on each real store (etcd, the Kubernetes API) a
// live holder's heartbeats are seen, so a newcomer of its name is refused,
// and the name is taken over once the holder stops. The Kubernetes API does
// not count a write of the value a Lease already holds as a change, so a
// holder rewriting the same record there would look silent.
func TestNameClaimStores(t *testing.T) {
	stores := map[string]func(*testing.T) datastore.Store{
		"etcd": func(t *testing.T) datastore.Store { return etcdtest.Start(t) },
		"kubernetes": func(t *testing.T) datastore.Store {
			s, err := kubestore.New(kubetest.Start(t).Config)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			return s
		},
	}
	for name, open := range stores {
		t.Run(name, func(t *testing.T) {
			store := open(t)
			ctx := context.Background()
			n := n1On(store)
			held := netip.MustParsePrefix("10.0.1.1/24")
			holder := n(held.String(), 50*time.Millisecond)
			stop := beating(t, holder)
			if err := n("10.0.1.2/24", 4*time.Second).claimFree(ctx, held); !errors.Is(err, ErrNameHeld) {
				t.Fatalf("a live holder: %v, want ErrNameHeld", err)
			}
			stop()
			settled(t, store, heartbeatPrefix+"n1")
			if err := n("10.0.1.2/24", 50*time.Millisecond).claimFree(ctx, held); err != nil {
				t.Fatalf("after the holder stopped: %v", err)
			}
		})
	}
}

// settled waits until key has kept one value for a while: a write whose
// request was cancelled (a beat stopped in flight) may still land after
// its writer returned.
func settled(t *testing.T, store datastore.Store, key string) {
	t.Helper()
	var last []byte
	since := time.Now()
	waitFor(t, key+" to settle", func() bool {
		kv, err := store.Get(context.Background(), key)
		if err != nil || !bytes.Equal(kv.Value, last) {
			last, since = kv.Value, time.Now()
			return false
		}
		return time.Since(since) > 300*time.Millisecond
	})
}

// TestNameClaimOlderHolder: a holder of an older release rewrites one
// record without a time; in a store that counts each write (etcd, here the
// memory store) its beats are still seen.
func TestNameClaimOlderHolder(t *testing.T) {
	store := datastore.NewMemory()
	ctx, stop := context.WithCancel(context.Background())
	key := heartbeatPrefix + "n1"
	if _, err := store.Put(ctx, key, []byte(`{"address":"10.0.1.1/24","instance":"abc"}`)); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				_, _ = store.Put(ctx, key, []byte(`{"address":"10.0.1.1/24","instance":"abc"}`))
			}
		}
	}()
	t.Cleanup(func() { stop(); <-done })
	a := n1On(store)("10.0.1.2/24", 2*time.Second)
	if err := a.claimFree(context.Background(), netip.MustParsePrefix("10.0.1.1/24")); !errors.Is(err, ErrNameHeld) {
		t.Fatalf("an older holder beating: %v, want ErrNameHeld", err)
	}
}

// beating starts a's heartbeat and waits for its first beat; the stop it
// returns ends the heartbeat and waits until it has (the test's cleanup
// calls it too).
func beating(t *testing.T, a *Agent) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { a.beat(ctx); close(done) }()
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(stop)
	waitFor(t, a.Node+"'s first heartbeat", func() bool {
		_, err := a.Store.Get(ctx, heartbeatPrefix+a.Node)
		return err == nil
	})
	return stop
}

// n1On makes agents of node n1 on store, at an address and with a
// heartbeat period.
func n1On(store datastore.Store) func(addr string, every time.Duration) *Agent {
	return func(addr string, every time.Duration) *Agent {
		return &Agent{Node: "n1", Addr: netip.MustParsePrefix(addr), Store: store, Log: zap.NewNop(), HeartbeatEvery: every}
	}
}

// live registers a and starts its heartbeat, as beating does.
func live(t *testing.T, a *Agent) (stop func()) {
	t.Helper()
	if err := a.register(context.Background()); err != nil {
		t.Fatal(err)
	}
	return beating(t, a)
}
