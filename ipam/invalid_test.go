package ipam

import (
	"context"
	"encoding/json"
	"errors"
	"net/netip"
	"strings"
	"testing"

	"go.uber.org/zap"

	"github.com/tortie-net/tortie/datastore"
	"github.com/tortie-net/tortie/resources"
)

// Unreadable blocks are neither allocated from nor claimed again, and do
// not stop allocation from the rest of the pool.
func TestInvalidBlocksSkipped(t *testing.T) {
	ctx := context.Background()
	s := datastore.NewMemory()
	m := withPools(t, s, pool("p", "10.9.0.0/24", 26, ""))
	m.Invalid = resources.NewInvalid(zap.NewNop())
	put := func(key, v string) {
		t.Helper()
		if _, err := s.Put(ctx, key, []byte(v)); err != nil {
			t.Fatal(err)
		}
	}
	full := func(cidr string, n int) string {
		b, _ := json.Marshal(Block{CIDR: netip.MustParsePrefix(cidr), Affinity: "host:x", Allocs: make([]Alloc, n)})
		return string(b)
	}
	put(blockPrefix+"10.9.0.0-26", `{"cidr":"10.9.0.0/26","affinity":"host:a","allocations":[{"hand`) // truncated
	put(blockPrefix+"10.9.0.64-26", full("10.9.0.64/26", 3))                                          // too few slots
	put(blockPrefix+"10.9.0.128-26", `{"cidr":"garbage","allocations":[]}`)
	put(blockPrefix+"garbage", `{"cidr":"10.300.0.0/26"}`)
	put(blockPrefix+"10.9.1.0-26", full("10.9.0.192/26", 64)) // stored under another CIDR
	a := assign(t, m, "h1", "a")
	if !netip.MustParsePrefix("10.9.0.192/26").Contains(a) {
		t.Fatalf("assigned %v, want an address of the one usable block 10.9.0.192/26", a)
	}
	blocks, err := m.Blocks(ctx)
	if err != nil || len(blocks) != 1 || blocks[0].CIDR.String() != "10.9.0.192/26" {
		t.Fatalf("blocks: %v %+v", err, blocks)
	}
	if got := len(m.Invalid.List()); got != 5 {
		t.Fatalf("%d invalid records reported, want 5: %+v", got, m.Invalid.List())
	}
	// Release and GC go on past the unreadable blocks.
	if err := m.Release(ctx, "h1"); err != nil {
		t.Fatal(err)
	}
	if _, err := m.GC(ctx, "a", func(string) bool { return false }, map[string]bool{"a": true}); err != nil {
		t.Fatal(err)
	}
}

// A handle whose record is unreadable gets back the address the blocks
// say it holds, and its record is rewritten.
func TestInvalidHandleRecovered(t *testing.T) {
	ctx := context.Background()
	s := datastore.NewMemory()
	m := withPools(t, s, pool("p", "10.9.0.0/24", 26, ""))
	m.Invalid = resources.NewInvalid(zap.NewNop())
	a := assign(t, m, "h1", "a")
	if _, err := s.Put(ctx, handlePrefix+"h1", []byte(`{"id":"h1","node":"a","ips":["10.9.0.`)); err != nil {
		t.Fatal(err)
	}
	if _, err := m.GetHandle(ctx, "h1"); !errors.Is(err, ErrInvalid) {
		t.Fatalf("GetHandle of a truncated record: %v", err)
	}
	if len(m.Invalid.List()) != 1 {
		t.Fatalf("invalid handle not reported: %+v", m.Invalid.List())
	}
	if again := assign(t, m, "h1", "a"); again != a {
		t.Fatalf("handle with an unreadable record got %v, holds %v", again, a)
	}
	h, err := m.GetHandle(ctx, "h1")
	if err != nil || len(h.IPs) != 1 || h.IPs[0] != a {
		t.Fatalf("handle not rewritten: %v %+v", err, h)
	}
	if len(m.Invalid.List()) != 0 {
		t.Fatalf("rewritten handle still reported: %+v", m.Invalid.List())
	}
	// An unreadable handle of another container does not stop ADDs, and
	// CheckRecords finds it and a bad affinity.
	if _, err := s.Put(ctx, handlePrefix+"h2", []byte(`{"id":"h2","node":"a","ips":["not-an-ip"]}`)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Put(ctx, affinityPrefix+"a/garbage", []byte(`{"state":"confirmed"}`)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Put(ctx, affinityPrefix+"a/10.9.0.64-26", []byte(`{"state":7}`)); err != nil {
		t.Fatal(err)
	}
	assign(t, m, "h3", "a")
	if err := m.CheckRecords(ctx); err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, r := range m.Invalid.List() {
		keys = append(keys, r.Kind+" "+strings.TrimPrefix(r.Key, resources.Prefix))
	}
	if want := "IPAMAffinity ipam/affinities/a/10.9.0.64-26,IPAMAffinity ipam/affinities/a/garbage,IPAMHandle ipam/handles/h2"; strings.Join(keys, ",") != want {
		t.Fatalf("invalid records %v, want %s", keys, want)
	}
}

func FuzzDecodeBlock(f *testing.F) {
	b, _ := json.Marshal(Block{CIDR: netip.MustParsePrefix("10.9.0.0/30"), Affinity: "host:a", Allocs: make([]Alloc, 4)})
	f.Add("10.9.0.0-30", string(b))
	f.Add("10.9.0.0-26", `{"cidr":"10.9.0.0/26","allocations":[{"hand`)
	f.Add("garbage", `{"cidr":"10.300.0.0/16"}`)
	f.Fuzz(func(t *testing.T, key, value string) {
		kv := datastore.KV{Key: blockPrefix + key, Value: []byte(value)}
		b, err := DecodeBlock(kv)
		if err != nil {
			if b != nil || !errors.Is(err, ErrInvalid) {
				t.Fatalf("block %v with error %v", b, err)
			}
			return
		}
		// A valid block is usable: every ordinal maps into its CIDR.
		if !b.CIDR.Addr().Is4() || len(b.Allocs) != 1<<(32-b.CIDR.Bits()) || !b.CIDR.Contains(b.Addr(len(b.Allocs)-1)) {
			t.Fatalf("accepted unusable block %+v", b)
		}
		if p, ok := cidrOfKey(key); !ok || p != b.CIDR {
			t.Fatalf("block %s accepted under key %s", b.CIDR, key)
		}
	})
}

func FuzzDecodeHandle(f *testing.F) {
	f.Add("h1", `{"id":"h1","node":"a","ips":["10.9.0.1"],"attrs":{"netns":"/x"}}`)
	f.Add("h1", `{"id":"h1","node":"a","ips":["10.9.0.`)
	f.Add("h1", `{"id":"h1","node":"a","ips":["fd00::1"]}`)
	f.Fuzz(func(t *testing.T, id, value string) {
		h, err := DecodeHandle(datastore.KV{Key: handlePrefix + id, Value: []byte(value)})
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error %v does not wrap ErrInvalid", err)
			}
			return
		}
		if h.ID != id || h.Node == "" {
			t.Fatalf("accepted handle %+v under %q", h, id)
		}
		for _, a := range h.IPs {
			if !a.Is4() {
				t.Fatalf("accepted address %v", a)
			}
		}
	})
}

func FuzzDecodeAffinity(f *testing.F) {
	f.Add("a/10.9.0.0-26", `{"state":"confirmed"}`)
	f.Add("a/garbage", `{"state":"pending"}`)
	f.Add("a/10.9.0.0-26", `{"state":`)
	f.Fuzz(func(t *testing.T, key, value string) {
		a, err := DecodeAffinity(datastore.KV{Key: affinityPrefix + key, Value: []byte(value)})
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error %v does not wrap ErrInvalid", err)
			}
			return
		}
		if a.Node == "" || !a.CIDR.Addr().Is4() || affinityKey(a.Node, a.CIDR) != affinityPrefix+key {
			t.Fatalf("accepted affinity %+v under %q", a, key)
		}
	})
}

// DecodeRecord decodes what IPAM writes, and finds invalid the damaged
// records its readers skip, by directory.
func TestDecodeRecord(t *testing.T) {
	ctx := context.Background()
	s := datastore.NewMemory()
	m := withPools(t, s, pool("p", "10.9.0.0/24", 26, ""))
	assign(t, m, "h1", "a")
	kvs, _, err := s.List(ctx, resources.Prefix+"ipam/")
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[string]int{}
	for _, kv := range kvs {
		kind, v, err := DecodeRecord(kv)
		if err != nil || v == nil {
			t.Errorf("%s: %v %v", kv.Key, v, err)
		}
		kinds[kind]++
	}
	if kinds[resources.KindIPAMBlock] != 1 || kinds[resources.KindIPAMAffinity] != 1 || kinds[resources.KindIPAMHandle] != 1 {
		t.Fatalf("kinds of IPAM's records: %v", kinds)
	}
	for _, c := range []struct{ key, value, kind string }{
		{blockPrefix + "10.9.0.0-26", `{"cidr":"10.9.0.0/26","allocations":[]}`, resources.KindIPAMBlock},
		{affinityPrefix + "a/10.9.0.0-26", `{"state":"maybe"}`, resources.KindIPAMAffinity},
		{handlePrefix + "h2", `{"id":"h2"}`, resources.KindIPAMHandle},
	} {
		kind, v, err := DecodeRecord(datastore.KV{Key: c.key, Value: []byte(c.value)})
		if kind != c.kind || v != nil || !errors.Is(err, ErrInvalid) {
			t.Errorf("DecodeRecord(%s) = %q, %v, %v; want %s, nothing, invalid", c.key, kind, v, err, c.kind)
		}
	}
	if kind, v, err := DecodeRecord(datastore.KV{Key: resources.Prefix + "ippools/p", Value: []byte("{")}); kind != "" || v != nil || err != nil {
		t.Errorf("a pool is no IPAM record: %q %v", kind, err)
	}
}
