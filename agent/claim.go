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

// heartbeat is a claim's record.
type heartbeat struct {
	Address  netip.Prefix `json:"address"`
	Instance string       `json:"instance"`
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
// ErrNameHeld.
func (a *Agent) claimFree(ctx context.Context, held netip.Prefix) error {
	key := heartbeatPrefix + a.Node
	kv, err := a.Store.Get(ctx, key)
	if errors.Is(err, datastore.ErrNotFound) {
		return nil // a holder that never claimed (or never ran)
	}
	if err != nil {
		return err
	}
	var hb heartbeat
	if json.Unmarshal(kv.Value, &hb) == nil && hb.Address == a.Addr {
		return nil // this node's own earlier run
	}
	window := a.heartbeatEvery() * 5 / 2
	a.Log.Info("the node name is registered with another address; waiting to see whether that node is alive",
		zap.String("node", a.Node), zap.Stringer("registered", held), zap.Stringer("mine", a.Addr), zap.Duration("wait", window))
	wctx, cancel := context.WithTimeout(ctx, window)
	defer cancel()
	for e := range a.Store.Watch(wctx, key, kv.Rev) {
		if e.Type != datastore.EventPut {
			continue
		}
		var beat heartbeat
		if json.Unmarshal(e.KV.Value, &beat) == nil && beat.Address == a.Addr {
			continue
		}
		return fmt.Errorf("%w: node %s is running at %s (its heartbeat is current); this node (%s) is refused. "+
			"Give this node another nodeName, or stop the other one: its claim lapses %v after it stops",
			ErrNameHeld, a.Node, held, a.Addr, window)
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	a.Log.Warn("taking over the node name: the node registered under it sent no heartbeat",
		zap.String("node", a.Node), zap.Stringer("was", held), zap.Duration("waited", window))
	return nil
}

// beat rewrites the claim until ctx ends. Failures are logged; the next
// beat tries again.
func (a *Agent) beat(ctx context.Context) {
	id := make([]byte, 8)
	_, _ = rand.Read(id)
	b, _ := json.Marshal(heartbeat{Address: a.Addr, Instance: hex.EncodeToString(id)})
	t := time.NewTicker(a.heartbeatEvery())
	defer t.Stop()
	for {
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
