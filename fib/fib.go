// Package fib is tortie's forwarding information base: the set of routes a
// node forwards by, and the longest-prefix-match table built from them.
//
// Readers (the router's packet workers) never lock: they load an immutable
// *Table through an atomic pointer and keep using it for a whole batch. The
// control plane edits routes under a mutex and publishes a fresh Table per
// edit batch, so a burst of updates costs one rebuild. The package does no I/O.
package fib

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
)

// Kind says where a next hop leads.
type Kind uint8

// Next-hop kinds.
const (
	KindNone      Kind = iota // no next hop
	KindLocal                 // a pod port on this node
	KindRemote                // another node, reached per Mode
	KindHost                  // this node's own network stack (host TUN)
	KindBlackhole             // silently dropped (our own block's unused addresses)
)

func (k Kind) String() string {
	switch k {
	case KindLocal:
		return "local"
	case KindRemote:
		return "remote"
	case KindHost:
		return "host"
	case KindBlackhole:
		return "blackhole"
	}
	return "none"
}

// Mode is how traffic to a remote node is carried.
type Mode uint8

// Encapsulation modes.
const (
	ModeNative Mode = iota // routed as is, next hop = node address
	ModeIPIP               // IP protocol 4, outer node to node
	ModeVXLAN              // UDP 4789, VNI 4096
)

func (m Mode) String() string {
	switch m {
	case ModeIPIP:
		return "ipip"
	case ModeVXLAN:
		return "vxlan"
	}
	return "native"
}

// ParseMode accepts native, ipip and vxlan.
func ParseMode(s string) (Mode, error) {
	switch s {
	case "native", "":
		return ModeNative, nil
	case "ipip":
		return ModeIPIP, nil
	case "vxlan":
		return ModeVXLAN, nil
	}
	return 0, fmt.Errorf("unknown encapsulation mode %q (want native, ipip or vxlan)", s)
}

// NextHop is where matching packets go.
type NextHop struct {
	Kind Kind
	// Port is the router's port ID of a local pod (KindLocal).
	Port uint32
	// Node is the remote node's underlay address (KindRemote).
	Node [4]byte
	// Mode is the encapsulation toward Node (KindRemote).
	Mode Mode
	// VTEPMAC is the remote node's VTEP MAC (ModeVXLAN).
	VTEPMAC [6]byte
	// NodeName names the remote node, for people.
	NodeName string
}

// Source says who installed a route; when two sources hold the same prefix,
// the lower Source wins.
type Source uint8

// Route sources, in order of precedence.
const (
	SourceEndpoint  Source = iota // a local pod
	SourceHost                    // the node's own addresses and defaults
	SourceStatic                  // the node config file
	SourceBGP                     // learnt from a BGP peer
	SourceDatastore               // derived from the datastore
	numSources
)

func (s Source) String() string {
	return [...]string{"endpoint", "host", "static", "bgp", "datastore", "?"}[min(int(s), int(numSources))]
}

// Route maps a prefix to a next hop.
type Route struct {
	Prefix  netip.Prefix
	NextHop NextHop
	Source  Source
}

// Table is an immutable longest-prefix-match snapshot.
//
// Lookup probes one hash map per prefix length present, longest first. A pod
// cluster's FIB has few distinct lengths (/32 pods, /26 blocks, /0), so a
// lookup is a handful of probes whatever the number of routes, with memory
// linear in the routes.
type Table struct {
	masks  []uint32
	byLen  []map[uint32]int32
	hops   []NextHop
	routes []Route
	nodes  map[[4]byte]struct{}
}

// Lookup returns the next hop of the longest prefix containing addr, or nil.
func (t *Table) Lookup(addr uint32) *NextHop {
	for i, m := range t.byLen {
		if h, ok := m[addr&t.masks[i]]; ok {
			return &t.hops[h]
		}
	}
	return nil
}

// Match is Lookup returning the whole winning route, for explaining a
// lookup rather than forwarding.
func (t *Table) Match(addr uint32) (Route, bool) {
	for i, m := range t.byLen {
		if h, ok := m[addr&t.masks[i]]; ok {
			return t.routes[h], true
		}
	}
	return Route{}, false
}

// IsNode reports whether addr is the underlay address of a known remote node.
func (t *Table) IsNode(addr [4]byte) bool {
	_, ok := t.nodes[addr]
	return ok
}

// Routes returns the winning routes, sorted by prefix. Callers must not modify it.
func (t *Table) Routes() []Route { return t.routes }

// Len is the number of routes in the table.
func (t *Table) Len() int { return len(t.routes) }

// Build makes a Table from routes that have distinct, masked prefixes.
func Build(routes []Route) *Table {
	t := &Table{nodes: map[[4]byte]struct{}{}}
	t.routes = slices.Clone(routes)
	slices.SortFunc(t.routes, func(a, b Route) int {
		if c := a.Prefix.Addr().Compare(b.Prefix.Addr()); c != 0 {
			return c
		}
		return cmp.Compare(a.Prefix.Bits(), b.Prefix.Bits())
	})
	var perLen [33]map[uint32]int32
	for _, r := range t.routes {
		bits := r.Prefix.Bits()
		if perLen[bits] == nil {
			perLen[bits] = map[uint32]int32{}
		}
		perLen[bits][AddrU32(r.Prefix.Addr())] = int32(len(t.hops))
		t.hops = append(t.hops, r.NextHop)
		if r.NextHop.Kind == KindRemote {
			t.nodes[r.NextHop.Node] = struct{}{}
		}
	}
	for bits := 32; bits >= 0; bits-- {
		if perLen[bits] != nil {
			t.masks = append(t.masks, Mask(bits))
			t.byLen = append(t.byLen, perLen[bits])
		}
	}
	return t
}

// Mask returns the IPv4 netmask of a prefix length as a host-order uint32.
func Mask(bits int) uint32 {
	if bits == 0 {
		return 0
	}
	return ^uint32(0) << (32 - bits)
}

// AddrU32 converts an IPv4 address to the host-order integer Lookup takes.
func AddrU32(a netip.Addr) uint32 {
	b := a.As4()
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

// FIB holds the routes of every source and publishes Tables of the winners.
type FIB struct {
	mu      sync.Mutex
	sources [numSources]map[netip.Prefix]NextHop
	cur     atomic.Pointer[Table]
	version atomic.Uint64
}

// New returns an empty FIB.
func New() *FIB {
	f := &FIB{}
	for i := range f.sources {
		f.sources[i] = map[netip.Prefix]NextHop{}
	}
	f.cur.Store(Build(nil))
	return f
}

// Load returns the current snapshot. It never blocks.
func (f *FIB) Load() *Table { return f.cur.Load() }

// Version counts published snapshots.
func (f *FIB) Version() uint64 { return f.version.Load() }

// Tx is an edit batch; see Update.
type Tx struct{ f *FIB }

// Set adds or replaces the route for r.Prefix from r.Source.
func (tx Tx) Set(r Route) error {
	if !r.Prefix.Addr().Is4() {
		return fmt.Errorf("fib: %s is not an IPv4 prefix", r.Prefix)
	}
	if r.Source >= numSources {
		return fmt.Errorf("fib: unknown route source %d", r.Source)
	}
	tx.f.sources[r.Source][r.Prefix.Masked()] = r.NextHop
	return nil
}

// Delete removes the route for p from source s, if present.
func (tx Tx) Delete(s Source, p netip.Prefix) {
	if s < numSources {
		delete(tx.f.sources[s], p.Masked())
	}
}

// ReplaceSource drops every route of s and installs routes instead.
func (tx Tx) ReplaceSource(s Source, routes []Route) error {
	if s >= numSources {
		return fmt.Errorf("fib: unknown route source %d", s)
	}
	clear(tx.f.sources[s])
	for _, r := range routes {
		r.Source = s
		if err := tx.Set(r); err != nil {
			return err
		}
	}
	return nil
}

// Update runs fn as one edit batch and publishes one new snapshot after it,
// even if fn returns an error part-way (edits already made stay).
func (f *FIB) Update(fn func(tx Tx) error) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	err := fn(Tx{f})
	winners := map[netip.Prefix]Route{}
	for s := numSources - 1; ; s-- {
		for p, nh := range f.sources[s] {
			winners[p] = Route{Prefix: p, NextHop: nh, Source: s}
		}
		if s == 0 {
			break
		}
	}
	routes := make([]Route, 0, len(winners))
	for _, r := range winners {
		routes = append(routes, r)
	}
	f.cur.Store(Build(routes))
	f.version.Add(1)
	return err
}
