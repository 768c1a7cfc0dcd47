package datastore_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/tortie-net/tortie/datastore"
	"github.com/tortie-net/tortie/datastore/etcdtest"
)

// contract is what every Store must do.
func contract(t *testing.T, s datastore.Store) {
	ctx := context.Background()
	if _, err := s.Get(ctx, "/a"); !errors.Is(err, datastore.ErrNotFound) {
		t.Fatalf("get missing: %v", err)
	}
	watchCtx, stop := context.WithCancel(ctx)
	defer stop()
	// Watch from a known revision: revision 0 means "from whenever the
	// watch is established", which races with the writes below.
	_, rev, err := s.List(ctx, "/a")
	if err != nil {
		t.Fatal(err)
	}
	events := s.Watch(watchCtx, "/a", rev)
	r1, err := s.Create(ctx, "/a", []byte("1"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Create(ctx, "/a", []byte("x")); !errors.Is(err, datastore.ErrExists) {
		t.Fatalf("create twice: %v", err)
	}
	r2, err := s.Update(ctx, "/a", []byte("2"), r1)
	if err != nil || r2 <= r1 {
		t.Fatalf("update: %v", err)
	}
	if _, err := s.Update(ctx, "/a", []byte("3"), r1); !errors.Is(err, datastore.ErrConflict) {
		t.Fatalf("stale update: %v", err)
	}
	if _, err := s.Update(ctx, "/nope", []byte("3"), 1); !errors.Is(err, datastore.ErrNotFound) {
		t.Fatalf("update missing: %v", err)
	}
	kv, err := s.Get(ctx, "/a")
	if err != nil || string(kv.Value) != "2" || kv.Rev != r2 {
		t.Fatalf("get: %+v %v", kv, err)
	}
	_, _ = s.Put(ctx, "/ab", []byte("4"))
	_, _ = s.Put(ctx, "/b", []byte("5"))
	l, _, err := s.List(ctx, "/a")
	if err != nil || len(l) != 2 {
		t.Fatalf("list: %d %v", len(l), err)
	}
	if err := s.Delete(ctx, "/a", r1); !errors.Is(err, datastore.ErrConflict) {
		t.Fatalf("stale delete: %v", err)
	}
	if err := s.Delete(ctx, "/a", r2); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(ctx, "/a", 0); !errors.Is(err, datastore.ErrNotFound) {
		t.Fatalf("delete missing: %v", err)
	}
	// The watch saw create, update, put of /ab and delete, in order.
	var got []string
	timeout := time.After(10 * time.Second)
	for len(got) < 4 {
		select {
		case e := <-events:
			got = append(got, fmt.Sprintf("%d:%s=%s", e.Type, e.KV.Key, e.KV.Value))
		case <-timeout:
			t.Fatalf("watch saw only %v", got)
		}
	}
	if want := "[0:/a=1 0:/a=2 0:/ab=4 1:/a=]"; fmt.Sprint(got) != want {
		t.Fatalf("watch %v, want %s", got, want)
	}
	// Compare-and-swap under contention: no increment is lost.
	_, _ = s.Put(ctx, "/n", []byte("0"))
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 10; i++ {
				for {
					kv, err := s.Get(ctx, "/n")
					if err != nil {
						t.Error(err)
						return
					}
					var n int
					fmt.Sscan(string(kv.Value), &n)
					if _, err := s.Update(ctx, "/n", []byte(fmt.Sprint(n+1)), kv.Rev); err == nil {
						break
					} else if !errors.Is(err, datastore.ErrConflict) {
						t.Error(err)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	if kv, _ := s.Get(ctx, "/n"); string(kv.Value) != "80" {
		t.Fatalf("CAS lost updates: %s", kv.Value)
	}
}

func TestMemoryContract(t *testing.T) { contract(t, datastore.NewMemory()) }

func TestEtcdContract(t *testing.T) { contract(t, etcdtest.Start(t)) }

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
