// Package dsync keeps a node's view of the cluster in step with the
// datastore and turns it into routes: IP pools, nodes and IPAM blocks are
// listed in full, then watched; each burst of changes is coalesced into one
// re-list and one FIB update. Nothing is programmed before the first full
// list succeeds, and an unreachable datastore keeps the last view: it never
// means "deleted".
package dsync

import (
	"context"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/tortie-net/tortie/calico"
	"github.com/tortie-net/tortie/datastore"
	"github.com/tortie-net/tortie/encap"
	"github.com/tortie-net/tortie/fib"
	"github.com/tortie-net/tortie/header"
	"github.com/tortie-net/tortie/ipam"
	"github.com/tortie-net/tortie/resources"
)

// Snapshot is the cluster as last read.
type Snapshot struct {
	Pools      []*resources.IPPool
	Nodes      []*resources.Node
	Blocks     []*ipam.Block
	BGPConfigs []*resources.BGPConfiguration
	BGPPeers   []*resources.BGPPeer
	BGPFilters []*resources.BGPFilter
	Rev        int64
}

// Node finds a node by name.
func (s *Snapshot) Node(name string) *resources.Node {
	for _, n := range s.Nodes {
		if n.Metadata.Name == name {
			return n
		}
	}
	return nil
}

// PoolOf returns the pool containing p, if any.
func (s *Snapshot) PoolOf(p netip.Prefix) *resources.IPPool {
	for _, pool := range s.Pools {
		if pool.Prefix().Contains(p.Addr()) {
			return pool
		}
	}
	return nil
}

// PoolMode is the encapsulation a pool asks for and whether it is CrossSubnet.
func PoolMode(p *resources.IPPool) (fib.Mode, bool) {
	switch {
	case p.Spec.VXLANMode == resources.ModeAlways:
		return fib.ModeVXLAN, false
	case p.Spec.VXLANMode == resources.ModeCrossSubnet:
		return fib.ModeVXLAN, true
	case p.Spec.IPIPMode == resources.ModeAlways:
		return fib.ModeIPIP, false
	case p.Spec.IPIPMode == resources.ModeCrossSubnet:
		return fib.ModeIPIP, true
	}
	return fib.ModeNative, false
}

// MaxOverhead is the largest encapsulation overhead among the pools: pods
// get the underlay MTU minus it, as Calico computes.
func (s *Snapshot) MaxOverhead() int {
	worst := 0
	for _, p := range s.Pools {
		m, _ := PoolMode(p)
		worst = max(worst, encap.Overhead(m))
	}
	return worst
}

// NodeVTEP returns a node's VTEP MAC: the one it recorded, or Calico's
// derivation from its name.
func NodeVTEP(n *resources.Node) header.MAC {
	if m := n.Spec.VXLANTunnelMACAddr; m != (resources.MAC{}) {
		return header.MAC(m)
	}
	return calico.VTEPMAC(n.Metadata.Name)
}

// Resolve turns a route to prefix via the node at addr into a next hop:
// the pool's mode with the CrossSubnet rule, toward that node's VTEP. A
// prefix outside every pool (a route from a router outside the cluster) is
// routed natively; so is a next hop that is no registered node, unless the
// pool asks for VXLAN, which needs the node's VTEP (then ok is false).
func (s *Snapshot) Resolve(myAddr netip.Prefix, pfx netip.Prefix, addr netip.Addr) (fib.NextHop, bool) {
	return s.via(myAddr, pfx, addr, s.NodeAt(addr))
}

// via is Resolve with the node at addr already found (nil: none).
func (s *Snapshot) via(myAddr netip.Prefix, pfx netip.Prefix, addr netip.Addr, n *resources.Node) (fib.NextHop, bool) {
	mode, cross := fib.ModeNative, false
	if p := s.PoolOf(pfx); p != nil {
		mode, cross = PoolMode(p)
	}
	h := fib.NextHop{Kind: fib.KindRemote, Node: addr.As4(), Mode: calico.ModeFor(mode, cross, myAddr, addr)}
	if n != nil {
		h.NodeName, h.VTEPMAC = n.Metadata.Name, NodeVTEP(n)
	} else if h.Mode == fib.ModeVXLAN {
		return fib.NextHop{}, false
	}
	return h, true
}

// NodeAt finds the node whose underlay address is addr.
func (s *Snapshot) NodeAt(addr netip.Addr) *resources.Node {
	for _, n := range s.Nodes {
		if a, err := n.Address(); err == nil && a.Addr() == addr {
			return n
		}
	}
	return nil
}

// Routes derives node me's datastore routes: its own blocks blackholed
// (local pods' /32s win by longest prefix), other nodes' blocks via those
// nodes with the pool's mode and the CrossSubnet rule, and addresses
// borrowed from a block as /32s via the borrowing node. Blocks of nodes that
// are not registered are skipped and reported: a stale affinity must not
// program a bogus route. With ownOnly (BGP is the route source) only the
// blackholes are derived: other nodes' routes come from their speakers.
func Routes(me string, myAddr netip.Prefix, s *Snapshot, ownOnly bool) (routes []fib.Route, warnings []string) {
	nh := func(node string, pfx netip.Prefix) (fib.NextHop, bool) {
		n := s.Node(node)
		if n == nil {
			warnings = append(warnings, fmt.Sprintf("block %s belongs to unknown node %q: not routed", pfx, node))
			return fib.NextHop{}, false
		}
		addr, err := n.Address()
		if err != nil {
			warnings = append(warnings, err.Error())
			return fib.NextHop{}, false
		}
		return s.via(myAddr, pfx, addr.Addr(), n)
	}
	for _, b := range s.Blocks {
		owner := b.AffinityNode()
		pfx := b.Prefix()
		switch {
		case owner == me:
			routes = append(routes, fib.Route{Prefix: pfx, NextHop: fib.NextHop{Kind: fib.KindBlackhole}})
		case ownOnly:
			continue
		case owner != "":
			if h, ok := nh(owner, pfx); ok {
				routes = append(routes, fib.Route{Prefix: pfx, NextHop: h})
			}
		}
		for i, a := range b.Allocs {
			if a.Handle == "" || a.Node == owner || a.Node == me || a.Node == "" {
				continue
			}
			p := netip.PrefixFrom(b.Addr(i), 32)
			if h, ok := nh(a.Node, p); ok {
				routes = append(routes, fib.Route{Prefix: p, NextHop: h})
			}
		}
	}
	return routes, warnings
}

// Syncer runs the list-and-watch loop.
type Syncer struct {
	Store  datastore.Store
	Me     string
	MyAddr netip.Prefix
	FIB    *fib.FIB
	Log    *zap.Logger
	// BGP says other nodes' routes come from BGP, not from the datastore.
	BGP bool
	// Invalid collects stored records that do not decode (nil: not
	// collected); they are skipped and the rest is applied.
	Invalid *resources.Invalid
	// OnSync runs after each applied snapshot (kernel routes, tunnel
	// address, MTU); it must not block for long.
	OnSync func(*Snapshot)

	ready atomic.Bool
	mu    sync.Mutex
	snap  *Snapshot
	syncs atomic.Uint64
}

// Ready reports whether the first full sync has happened.
func (s *Syncer) Ready() bool { return s.ready.Load() }

// Syncs counts applied snapshots.
func (s *Syncer) Syncs() uint64 { return s.syncs.Load() }

// Snapshot returns the last applied view (nil before the first sync).
func (s *Syncer) Snapshot() *Snapshot {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.snap
}

func (s *Syncer) read(ctx context.Context) (*Snapshot, error) {
	rc := resources.Client{S: s.Store, Invalid: s.Invalid}
	// The first read gives the revision to watch from: whatever changes
	// while the rest is read shows up in the watch and triggers a re-list.
	pools, rev, err := rc.PoolsAt(ctx)
	if err != nil {
		return nil, err
	}
	nodes, err := rc.Nodes(ctx)
	if err != nil {
		return nil, err
	}
	blocks, err := (&ipam.IPAM{S: s.Store, Invalid: s.Invalid}).Blocks(ctx)
	if err != nil {
		return nil, err
	}
	confs, err := rc.BGPConfigurations(ctx)
	if err != nil {
		return nil, err
	}
	peers, err := rc.BGPPeers(ctx)
	if err != nil {
		return nil, err
	}
	filters, err := rc.BGPFilters(ctx)
	if err != nil {
		return nil, err
	}
	return &Snapshot{Pools: pools, Nodes: nodes, Blocks: blocks, BGPConfigs: confs, BGPPeers: peers, BGPFilters: filters, Rev: rev}, nil
}

// Resync reads everything now and applies it.
func (s *Syncer) Resync(ctx context.Context) error {
	snap, err := s.read(ctx)
	if err != nil {
		return err
	}
	routes, warnings := Routes(s.Me, s.MyAddr, snap, s.BGP)
	for _, w := range warnings {
		s.Log.Warn(w)
	}
	if err := s.FIB.Update(func(tx fib.Tx) error { return tx.ReplaceSource(fib.SourceDatastore, routes) }); err != nil {
		return err
	}
	s.mu.Lock()
	s.snap = snap
	s.mu.Unlock()
	if s.OnSync != nil {
		s.OnSync(snap)
	}
	s.syncs.Add(1)
	s.ready.Store(true)
	return nil
}

// Run syncs until ctx ends: a full list, then a watch whose events trigger
// coalesced re-lists. Failures are retried with backoff, keeping the last
// view meanwhile.
func (s *Syncer) Run(ctx context.Context) {
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		if err := s.Resync(ctx); err != nil {
			s.Log.Warn("datastore sync failed; keeping the last view", zap.Error(err), zap.Duration("retry", backoff))
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, 5*time.Second)
			continue
		}
		backoff = 100 * time.Millisecond
		wctx, cancel := context.WithCancel(ctx)
		events := s.Store.Watch(wctx, resources.Prefix, s.Snapshot().Rev)
		s.watch(ctx, events)
		cancel()
	}
}

// watch waits for changes; each burst (events within 20 ms of each other,
// or a periodic 30 s tick) becomes one re-list. It returns when the watch
// ends, so that Run re-lists from scratch.
func (s *Syncer) watch(ctx context.Context, events <-chan Event) {
	tick := time.NewTicker(30 * time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case _, ok := <-events:
			if !ok {
				return
			}
			Drain(events, 20*time.Millisecond)
		case <-tick.C:
		}
		if err := s.Resync(ctx); err != nil {
			s.Log.Warn("datastore resync failed; keeping the last view", zap.Error(err))
			return
		}
	}
}

// Event is an alias so callers need not import datastore for Watch.
type Event = datastore.Event

// Drain consumes a burst of watch events: it returns once none has come
// for quiet, or the channel closes.
func Drain(events <-chan Event, quiet time.Duration) {
	t := time.NewTimer(quiet)
	defer t.Stop()
	for {
		select {
		case _, ok := <-events:
			if !ok {
				return
			}
			if !t.Stop() {
				<-t.C
			}
			t.Reset(quiet)
		case <-t.C:
			return
		}
	}
}
