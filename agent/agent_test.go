package agent

import (
	"context"
	"errors"
	"net/netip"
	"testing"

	"go.uber.org/zap"

	"github.com/tortie-net/tortie/datastore"
	"github.com/tortie-net/tortie/fib"
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
