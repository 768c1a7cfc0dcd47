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
