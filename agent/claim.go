package agent

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"go.uber.org/zap"

	"github.com/tortie-net/tortie/datastore"
)

// A running node claims its name with a heartbeat: a record it rewrites
// every HeartbeatEvery, kept outside the prefix the nodes follow so that
// it wakes none of them. A second tortied that registers under a name
// whose node record has another address waits to see whether that
// heartbeat is alive, and refuses to start if it is: two nodes of one
// name would share a tunnel address and blocks, and one's pods would
// become unreachable.
const heartbeatPrefix = "/tortie/heartbeats/"

// DefaultHeartbeatEvery is how often a node rewrites its claim.
const DefaultHeartbeatEvery = 10 * time.Second

// readTimeout is the least a read of a claim may take before it fails.
const readTimeout = 5 * time.Second

// ErrNameHeld says that another live node holds this node's name.
var ErrNameHeld = errors.New("node name held by a live node")

// heartbeat is a claim's record. Each beat's differs from the last (its
// time), because a store need not count a write of the value a key holds
// as a change: the Kubernetes API skips it, and a holder rewriting the
// same record would look silent.
type heartbeat struct {
	Address  netip.Prefix `json:"address"`
	Instance string       `json:"instance"`
	Renewed  time.Time    `json:"renewed"`
}

func (a *Agent) heartbeatEvery() time.Duration {
	if a.HeartbeatEvery > 0 {
		return a.HeartbeatEvery
	}
	return DefaultHeartbeatEvery
}

// claimFree returns nil once the name is free for this node: its record's
// address is ours, or no heartbeat of the holder's arrives within two and
// a half of its periods. A holder's heartbeat within that window is
// ErrNameHeld. Every beat changes the record (its time), so a record that
// differs from the one first read, and is not this node's own, is a beat,
// however it is seen: on the watch, on a read after a watch the store
// ended early (a compacted revision, an expired resource version), or on
// the read that closes the window, which decides when the watch saw
// nothing (a watch may also stall without ending). A store that cannot be
// read is an error, and the registration is tried again; never a
// take-over.
func (a *Agent) claimFree(ctx context.Context, held netip.Prefix) error {
	key := heartbeatPrefix + a.Node
	kv, err := a.Store.Get(ctx, key)
	if errors.Is(err, datastore.ErrNotFound) {
		return nil // a holder that never claimed (or never ran)
	}
	if err != nil {
		return err
	}
	if a.ownBeat(kv.Value) {
		return nil // this node's own earlier run
	}
	window := a.heartbeatEvery() * 5 / 2
	a.Log.Info("the node name is registered with another address; waiting to see whether that node is alive",
		zap.String("node", a.Node), zap.Stringer("registered", held), zap.Stringer("mine", a.Addr), zap.Duration("wait", window))
	wctx, cancel := context.WithTimeout(ctx, window)
	defer cancel()
	heldErr := fmt.Errorf("%w: node %s is running at %s (its heartbeat is current); this node (%s) is refused. "+
		"Give this node another nodeName, or stop the other one: its claim lapses %v after it stops",
		ErrNameHeld, a.Node, held, a.Addr, window)
	c := newClaimWatch(a, key, kv)
	rev := kv.Rev
	for {
		if c.watch(wctx, rev) {
			return heldErr
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if wctx.Err() == nil {
			// The watch ended early. Pause so that a store refusing
			// watches is not asked in a tight loop.
			select {
			case <-wctx.Done():
			case <-time.After(window / 25):
			}
		}
		// Read the record: the read that closes the window decides when
		// the watch saw nothing; one after a watch ended early resumes it
		// from the store's current revision (the one the watch started
		// from may be gone for good).
		beat, cur, err := c.read(ctx, window)
		if err != nil {
			return err
		}
		if beat {
			return heldErr
		}
		if wctx.Err() != nil {
			break
		}
		rev = cur
	}
	a.Log.Warn("taking over the node name: the node registered under it sent no heartbeat",
		zap.String("node", a.Node), zap.Stringer("was", held), zap.Duration("waited", window))
	return nil
}

// claimWatch looks for a beat on one node's claim: a record that differs
// from the first one read and is not this node's own. A holder of an
// older release writes the same record each time (it has no time): from
// such a holder, a newer revision is a beat (a store that skips a write
// of the same value, the Kubernetes API, shows none).
type claimWatch struct {
	a     *Agent
	key   string
	first datastore.KV
	// timeless: the first record has no time (an older release's).
	timeless bool
}

func newClaimWatch(a *Agent, key string, first datastore.KV) claimWatch {
	var hb heartbeat
	timeless := json.Unmarshal(first.Value, &hb) != nil || hb.Renewed.IsZero()
	return claimWatch{a: a, key: key, first: first, timeless: timeless}
}

func (c claimWatch) beat(kv datastore.KV) bool {
	if c.a.ownBeat(kv.Value) {
		return false
	}
	if !bytes.Equal(kv.Value, c.first.Value) {
		return true
	}
	return c.timeless && kv.Rev > c.first.Rev
}

// watch watches the claim from rev until ctx ends or the watch does, and
// says whether it saw a beat. Keys that only share the claim's prefix
// (node n10's claim under n1's) are not the claim.
func (c claimWatch) watch(ctx context.Context, rev int64) bool {
	for e := range c.a.Store.Watch(ctx, c.key, rev) {
		if e.KV.Key == c.key && e.Type == datastore.EventPut && c.beat(e.KV) {
			return true
		}
	}
	return false
}

// read reads the claim and the store's revision, taking at most timeout
// (and no less than readTimeout), and says whether the record is a beat. A
// deleted claim (by hand) is no beat.
func (c claimWatch) read(ctx context.Context, timeout time.Duration) (bool, int64, error) {
	rctx, cancel := context.WithTimeout(ctx, max(timeout, readTimeout))
	defer cancel()
	kvs, rev, err := c.a.Store.List(rctx, c.key)
	if ctx.Err() != nil {
		return false, 0, ctx.Err()
	}
	if err != nil {
		return false, 0, fmt.Errorf("node %s: reading the claim on its name while waiting for its holder: %w", c.a.Node, err)
	}
	for _, kv := range kvs {
		if kv.Key == c.key {
			return c.beat(kv), rev, nil
		}
	}
	return false, rev, nil
}

// ownBeat says whether a claim record is this node's (its address).
func (a *Agent) ownBeat(value []byte) bool {
	var hb heartbeat
	return json.Unmarshal(value, &hb) == nil && hb.Address == a.Addr
}

// beat rewrites the claim until ctx ends. Failures are logged; the next
// beat tries again.
func (a *Agent) beat(ctx context.Context) {
	id := make([]byte, 8)
	_, _ = rand.Read(id)
	hb := heartbeat{Address: a.Addr, Instance: hex.EncodeToString(id)}
	t := time.NewTicker(a.heartbeatEvery())
	defer t.Stop()
	for {
		hb.Renewed = time.Now().UTC()
		b, _ := json.Marshal(hb)
		if _, err := a.Store.Put(ctx, heartbeatPrefix+a.Node, b); err != nil && ctx.Err() == nil {
			a.Log.Warn("node heartbeat not written", zap.Error(err))
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
