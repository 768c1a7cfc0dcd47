package datastore_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/tortie-net/tortie/datastore"
	"github.com/tortie-net/tortie/datastore/etcdtest"
	"github.com/tortie-net/tortie/datastore/storetest"
)

func TestMemoryContract(t *testing.T) { storetest.Contract(t, datastore.NewMemory()) }

func TestEtcdContract(t *testing.T) { storetest.Contract(t, etcdtest.Start(t)) }

func TestMemoryRecords(t *testing.T) { storetest.Records(t, datastore.NewMemory()) }

// TestMemoryWatchCompacted: a watch from a revision older than the changes
// the memory store keeps ends at once, as etcd's from a compacted revision,
// so its caller re-lists; one from a kept revision replays what followed.
func TestMemoryWatchCompacted(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	m := datastore.NewMemory()
	var last int64
	for i := range 10000 {
		rev, err := m.Put(ctx, fmt.Sprintf("/k/%d", i), []byte("v"))
		if err != nil {
			t.Fatal(err)
		}
		last = rev
	}
	// 10000 changes: the store kept 8192, then the latest 4096 and
	// those after (revisions 4097 to 10000).
	if _, ok := <-m.Watch(ctx, "/k/", 4095); ok {
		t.Fatal("a watch from a revision no longer kept delivered an event")
	}
	if e, ok := <-m.Watch(ctx, "/k/", 4096); !ok || e.KV.Rev != 4097 || e.KV.Key != "/k/4096" {
		t.Fatalf("watch from the oldest kept revision but one: %+v (open %v), want /k/4096 at 4097", e, ok)
	}
	e, ok := <-m.Watch(ctx, "/k/", last-1)
	if !ok || e.KV.Key != "/k/9999" || e.KV.Rev != last {
		t.Fatalf("watch from the last revision but one: %+v (open %v), want /k/9999 at %d", e, ok, last)
	}
}

func TestEtcdRecords(t *testing.T) { storetest.Records(t, etcdtest.Start(t)) }

// TestMemoryWatchFallsBehind: a watcher more than 1024 changes behind has
// its watch ended (after what it was sent), not a gap in it.
func TestMemoryWatchFallsBehind(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	m := datastore.NewMemory()
	events := m.Watch(ctx, "/k/", 0)
	for i := range 2000 {
		if _, err := m.Put(ctx, fmt.Sprintf("/k/%d", i), []byte("v")); err != nil {
			t.Fatal(err)
		}
	}
	var last int64
	for e := range events { // ends: the watch was ended
		if e.KV.Rev != last+1 {
			t.Fatalf("event at revision %d after %d: a gap", e.KV.Rev, last)
		}
		last = e.KV.Rev
	}
	if last >= 2000 {
		t.Fatalf("the watch delivered all %d changes though it fell behind", last)
	}
}

func TestEtcdUnreachableIsAnError(t *testing.T) {
	c, err := datastore.DialEtcd(datastore.EtcdConfig{Endpoints: []string{fmt.Sprintf("127.0.0.1:%d", etcdtest.FreePort(t))}, Timeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	if _, err := c.Get(context.Background(), "/x"); !errors.Is(err, datastore.ErrUnavailable) {
		t.Fatalf("want ErrUnavailable, got %v", err)
	}
	if time.Since(start) > 10*time.Second {
		t.Fatal("an unreachable store must fail, not hang")
	}
}
