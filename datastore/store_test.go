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
	if _, ok := <-m.Watch(ctx, "/k/", 1); ok {
		t.Fatal("a watch from a revision no longer kept delivered an event")
	}
	e, ok := <-m.Watch(ctx, "/k/", last-1)
	if !ok || e.KV.Key != "/k/9999" || e.KV.Rev != last {
		t.Fatalf("watch from the last revision but one: %+v (open %v), want /k/9999 at %d", e, ok, last)
	}
}

func TestEtcdRecords(t *testing.T) { storetest.Records(t, etcdtest.Start(t)) }

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
