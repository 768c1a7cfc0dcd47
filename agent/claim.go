package agent

import (
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
// ErrNameHeld. A watch that ends before the window does (a compacted
// revision, a store that dropped it) is not silence: the claim is read
// again, a newer one than last seen counts as a heartbeat, and the watch
// resumes from there. A store that cannot be read within the window is an
// error, never a take-over.
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
	pause := window / 25
	rev := kv.Rev
	for {
		var beat bool
		if beat, rev = a.watchBeat(wctx, key, rev); beat {
			return heldErr
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if wctx.Err() != nil {
			break // the whole window without a heartbeat
		}
		// The watch ended early. Pause so that a store refusing watches
		// is not asked in a tight loop, then read what it holds now.
		select {
		case <-wctx.Done():
		case <-time.After(pause):
		}
		cur, err := a.Store.Get(wctx, key)
		switch {
		case err == nil && cur.Rev > rev && !a.ownBeat(cur.Value):
			return heldErr
		case err == nil:
			rev = max(rev, cur.Rev)
		case errors.Is(err, datastore.ErrNotFound):
			// Deleted by hand: no holder's beat; go on watching.
		case ctx.Err() != nil:
			return ctx.Err()
		case wctx.Err() != nil:
			// The window ended during the read: silence throughout.
		default:
			return fmt.Errorf("node %s: reading the claim on its name while waiting for its holder %s: %w", a.Node, held, err)
		}
		if wctx.Err() != nil {
			break
		}
	}
	a.Log.Warn("taking over the node name: the node registered under it sent no heartbeat",
		zap.String("node", a.Node), zap.Stringer("was", held), zap.Duration("waited", window))
	return nil
}

// watchBeat watches key from rev until ctx ends or the watch does, and
// says whether a heartbeat not this node's own was written; it returns the
// revision of the last change it saw. Keys that only share key's prefix
// (node n10's claim under n1's) are not key.
func (a *Agent) watchBeat(ctx context.Context, key string, rev int64) (bool, int64) {
	for e := range a.Store.Watch(ctx, key, rev) {
		if e.KV.Key != key {
			continue
		}
		rev = max(rev, e.KV.Rev)
		if e.Type == datastore.EventPut && !a.ownBeat(e.KV.Value) {
			return true, rev
		}
	}
	return false, rev
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
