package datastore_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/tortie-net/tortie/datastore"
	"github.com/tortie-net/tortie/datastore/etcdtest"
	"github.com/tortie-net/tortie/ipam"
	"github.com/tortie-net/tortie/resources"
)

// churn does what pod churn does to the datastore: n CNI ADDs and DELs
// through the real IPAM.
func churn(t *testing.T, m *ipam.IPAM, round, n int) {
	t.Helper()
	ctx := context.Background()
	for i := 0; i < n; i++ {
		h := fmt.Sprintf("k8s-pod-network.r%d-%d", round, i)
		if _, err := m.Assign(ctx, ipam.Request{Handle: h, Node: "n1"}); err != nil {
			t.Fatalf("assign %s: %v", h, err)
		}
		if err := m.Release(ctx, h); err != nil {
			t.Fatalf("release %s: %v", h, err)
		}
	}
}

type sample struct{ rev, size, inUse int64 }

// soak churns rounds times on a member with the given compaction
// retention; with compaction on, after each round it waits until etcd's
// own periodic compactor has dropped the revisions the round started from,
// and lets the member defragment if worthwhile. It returns the revision
// and database sizes after each round.
func soak(t *testing.T, retention string, rounds int) []sample {
	member := etcdtest.StartMember(t, datastore.EmbeddedConfig{CompactionRetention: retention, DefragInterval: -1, DefragMinFree: 1})
	s, err := datastore.DialEtcd(datastore.EtcdConfig{Endpoints: []string{member.URL}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	raw, err := clientv3.New(clientv3.Config{Endpoints: []string{member.URL}, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { raw.Close() })
	ctx := context.Background()
	objs, err := resources.Decode(strings.NewReader("apiVersion: tortie.io/v1\nkind: IPPool\nmetadata: {name: p}\nspec: {cidr: 10.20.0.0/22, blockSize: 26}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if err := (resources.Client{S: s}).Apply(ctx, objs); err != nil {
		t.Fatal(err)
	}
	// No cooldown: every ADD may take the address the last DEL freed, as
	// under steady churn once the cooldown has passed.
	m := &ipam.IPAM{S: s, Cooldown: time.Nanosecond}
	var out []sample
	for r := 0; r < rounds; r++ {
		_, start, err := s.List(ctx, "/none")
		if err != nil {
			t.Fatal(err)
		}
		churn(t, m, r, 60)
		if retention != "0" {
			// Poll until the compactor has passed the round's first
			// revision: reading at it then fails with ErrCompacted.
			deadline := time.Now().Add(30 * time.Second)
			for {
				_, err := raw.Get(ctx, "/none", clientv3.WithRev(start))
				if errors.Is(err, rpctypes.ErrCompacted) {
					break
				}
				if err != nil && !errors.Is(err, rpctypes.ErrCompacted) {
					t.Fatalf("read at revision %d: %v", start, err)
				}
				if time.Now().After(deadline) {
					t.Fatalf("revision %d not compacted within 30s", start)
				}
				time.Sleep(50 * time.Millisecond)
			}
			if _, err := member.DefragIfWorthwhile(); err != nil {
				t.Fatal(err)
			}
		}
		_, rev, err := s.List(ctx, "/none")
		if err != nil {
			t.Fatal(err)
		}
		size, inUse := member.Size()
		out = append(out, sample{rev, size, inUse})
		t.Logf("round %d: revision %d, database %d bytes, %d in use", r, rev, size, inUse)
	}
	return out
}

// TestCompactionSoak: under steady pod churn, the embedded member's
// periodic compaction and defragmentation keep its database from growing:
// no round of the second half leaves the file or its live part at more
// than twice the largest of the first half's (history of one round kept;
// the size swings with when a defragmentation ran, so one early round is
// no reference), though every round adds as many revisions as the first.
// Without compaction, the same churn grows the live part to more than
// twice the largest the compacted database reached, which shows the bound
// can fail.
func TestCompactionSoak(t *testing.T) {
	if testing.Short() {
		t.Skip("soak")
	}
	const rounds = 8
	largest := func(s []sample) (l sample) {
		for _, x := range s {
			l.size, l.inUse = max(l.size, x.size), max(l.inUse, x.inUse)
		}
		return l
	}
	var compacted sample // the largest the compacted database reached
	t.Run("compacted", func(t *testing.T) {
		s := soak(t, "1s", rounds)
		if ref, last := s[1], s[rounds-1]; last.rev < ref.rev*3 {
			t.Fatalf("churn did not go on: revision %d after round 2, %d at the end", ref.rev, last.rev)
		}
		first := largest(s[:rounds/2])
		for i, x := range s[rounds/2:] {
			if x.inUse > 2*first.inUse || x.size > 2*first.size {
				t.Errorf("round %d: database %d bytes (%d in use), more than twice the first half's largest, %d (%d)", i+rounds/2, x.size, x.inUse, first.size, first.inUse)
			}
		}
		compacted = largest(s)
	})
	t.Run("control", func(t *testing.T) {
		if compacted.inUse == 0 {
			t.Skip("no compacted run to compare with")
		}
		s := soak(t, "0", rounds)
		if last := s[rounds-1]; last.inUse <= 2*compacted.inUse {
			t.Fatalf("without compaction the database stayed at %d bytes in use, with it at most %d: the churn is too small to tell", last.inUse, compacted.inUse)
		}
	})
}

// TestDefragHousekeeping: once compaction has freed most of the file, the
// member's housekeeping timer defragments it and the file shrinks.
func TestDefragHousekeeping(t *testing.T) {
	member := etcdtest.StartMember(t, datastore.EmbeddedConfig{CompactionRetention: "0", DefragInterval: 20 * time.Millisecond, DefragMinFree: 1 << 20})
	raw, err := clientv3.New(clientv3.Config{Endpoints: []string{member.URL}, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { raw.Close() })
	ctx := context.Background()
	val := strings.Repeat("x", 64<<10)
	for i := 0; i < 64; i++ {
		if _, err := raw.Put(ctx, fmt.Sprintf("/big/%d", i), val); err != nil {
			t.Fatal(err)
		}
	}
	d, err := raw.Delete(ctx, "/big/", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	// The backend commits in batches (every 100 ms, later on a busy
	// machine): the file grows once the writes are committed.
	var before int64
	for wait := time.Now().Add(30 * time.Second); ; {
		if before, _ = member.Size(); before >= 2<<20 {
			break
		}
		if time.Now().After(wait) {
			t.Fatalf("database only %d bytes 30s after writing 4 MiB", before)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Nothing is free before compaction: the timer must leave it alone.
	if did, err := member.DefragIfWorthwhile(); did || err != nil {
		t.Fatalf("defragmented with history still live: %v %v", did, err)
	}
	if _, err := raw.Compact(ctx, d.Header.Revision, clientv3.WithCompactPhysical()); err != nil {
		t.Fatal(err)
	}
	// Pages the compaction freed while a read transaction still held them
	// become free only at a later commit: a live cluster always has one
	// coming (heartbeats, status); here a small write every half second
	// stands for it. Without it the file stayed full, now and then, with
	// nothing left to commit.
	deadline := time.Now().Add(30 * time.Second)
	for i := 0; ; i++ {
		size, inUse := member.Size()
		if size < before/4 {
			t.Logf("database %d bytes before, %d after (%d in use)", before, size, inUse)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("database still %d bytes (%d in use) 30s after compaction; %d before", size, inUse, before)
		}
		if i%25 == 24 {
			if _, err := raw.Put(ctx, "/tick", fmt.Sprint(i)); err != nil {
				t.Fatal(err)
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
}
