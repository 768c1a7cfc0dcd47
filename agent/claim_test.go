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
	node := func(addr string, every time.Duration) *Agent {
		return &Agent{Node: "n1", Addr: netip.MustParsePrefix(addr), Store: store, Log: zap.NewNop(), HeartbeatEvery: every}
	}
	ctx := context.Background()
	holder := node("10.0.1.1/24", 20*time.Millisecond)
	if err := holder.register(ctx); err != nil {
		t.Fatal(err)
	}
	hctx, stop := context.WithCancel(ctx)
	beating := make(chan struct{})
	go func() { holder.beat(hctx); close(beating) }()
	t.Cleanup(func() { stop(); <-beating })

	waitFor(t, "the first heartbeat", func() bool {
		_, err := store.Get(ctx, heartbeatPrefix+"n1")
		return err == nil
	})

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
	<-beating
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
