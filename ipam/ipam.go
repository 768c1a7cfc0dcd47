// Package ipam hands out pod addresses the way Calico's IPAM does: an IP
// pool is carved into blocks (default /26); a node claims blocks with
// affinity and allocates from them, claims another when full (up to a
// limit), and otherwise borrows single addresses from other nodes' blocks.
// Each allocation is recorded under a handle (one per container), released
// addresses wait out a cooldown before reuse, and every write is a
// compare-and-swap on the datastore, so any number of nodes and concurrent
// CNI ADDs never hand out one address twice.
package ipam

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/tortie-net/tortie/datastore"
	"github.com/tortie-net/tortie/resources"
)

const (
	blockPrefix    = resources.Prefix + "ipam/blocks/"
	affinityPrefix = resources.Prefix + "ipam/affinities/"
	handlePrefix   = resources.Prefix + "ipam/handles/"
	maxAttempts    = 100
)

// ErrExhausted means no pool selecting the node has a free address.
var ErrExhausted = errors.New("ipam: no free address in the pools that select this node")

// ErrNoPool means no enabled pool can serve the request, because a pool it names
// does not exist or because none of the pools selects the node. Assign's
// error says which, and errors.Is(err, ErrNoPool) holds for both.
var ErrNoPool = errors.New("ipam: no usable IP pool")

type noPoolError string

func (e noPoolError) Error() string      { return string(e) }
func (noPoolError) Is(target error) bool { return target == ErrNoPool }

// TunnelHandlePrefix starts the IPAM handle of a node's tunnel address
// (the rest is the node name).
const TunnelHandlePrefix = "tortie-tunnel-addr-"

// Block is one allocation block.
type Block struct {
	CIDR     netip.Prefix `json:"cidr"`
	Affinity string       `json:"affinity,omitempty"` // "host:<node>"
	Allocs   []Alloc      `json:"allocations"`
}

// Alloc is one address of a block.
type Alloc struct {
	Handle   string `json:"handle,omitempty"`
	Node     string `json:"node,omitempty"`     // the node the address serves
	Released int64  `json:"released,omitempty"` // unix ms of the last release
}

// Prefix returns the block's CIDR.
func (b *Block) Prefix() netip.Prefix { return b.CIDR }

// AffinityNode returns the node holding the block's affinity, if any.
func (b *Block) AffinityNode() string { return strings.TrimPrefix(b.Affinity, "host:") }

// Addr returns the address of ordinal i.
func (b *Block) Addr(i int) netip.Addr {
	a := b.CIDR.Addr()
	for ; i > 0; i-- {
		a = a.Next()
	}
	return a
}

// InUse counts allocated addresses.
func (b *Block) InUse() int {
	n := 0
	for _, a := range b.Allocs {
		if a.Handle != "" {
			n++
		}
	}
	return n
}

// Handle records the addresses of one container (or other owner).
type Handle struct {
	ID   string       `json:"id"`
	Node string       `json:"node"`
	IPs  []netip.Addr `json:"ips"`
	// Attrs describe the owner (netns, interface, pod), enough to rebuild a
	// node's endpoints when its own state is lost.
	Attrs map[string]string `json:"attrs,omitempty"`
}

type affinity struct {
	State string `json:"state"` // pending | confirmed
}

// IPAM allocates from the pools in a datastore.
type IPAM struct {
	S                datastore.Store
	Cooldown         time.Duration // before a released address is reused (default 60s)
	MaxBlocksPerNode int           // default 20
	StrictAffinity   bool          // never borrow
	Now              func() time.Time
	// Invalid collects stored records that do not decode (nil: not
	// collected). They are skipped: an unreadable block is neither
	// allocated from nor claimed again.
	Invalid *resources.Invalid
}

func (m *IPAM) now() time.Time {
	if m.Now != nil {
		return m.Now()
	}
	return time.Now()
}

func blockKey(cidr netip.Prefix) string { return blockPrefix + keyCIDR(cidr) }
func affinityKey(node string, cidr netip.Prefix) string {
	return affinityPrefix + node + "/" + keyCIDR(cidr)
}
func keyCIDR(p netip.Prefix) string { return strings.ReplaceAll(p.String(), "/", "-") }

// cidrOfKey reads the CIDR a block or affinity key ends with.
func cidrOfKey(s string) (netip.Prefix, bool) {
	i := strings.LastIndexByte(s, '-')
	if i < 0 {
		return netip.Prefix{}, false
	}
	p, err := netip.ParsePrefix(s[:i] + "/" + s[i+1:])
	return p, err == nil && p.Addr().Is4() && p.Masked() == p
}

// Request asks for one address.
type Request struct {
	Handle     string
	Node       string
	NodeLabels map[string]string
	// Pools names the pools (by name or CIDR) to take the address from.
	// Empty: every pool that selects the node and is in Automatic
	// assignment mode; a Manual pool is used only when named here.
	Pools []string
	// Use is what the address is for, resources.UseWorkload (a pod) or
	// resources.UseTunnel (a node's tunnel address): only pools allowing
	// it are used. Empty: Tunnel for a handle starting with
	// TunnelHandlePrefix, else Workload.
	Use   string
	Attrs map[string]string
}

// use is what the request's address is for.
func (r Request) use() string {
	switch {
	case r.Use != "":
		return r.Use
	case strings.HasPrefix(r.Handle, TunnelHandlePrefix):
		return resources.UseTunnel
	}
	return resources.UseWorkload
}

// Assign returns the address recorded for req.Handle, or allocates one.
func (m *IPAM) Assign(ctx context.Context, req Request) (netip.Addr, error) {
	if req.Handle == "" || req.Node == "" {
		return netip.Addr{}, errors.New("ipam: handle and node are required")
	}
	h, err := m.GetHandle(ctx, req.Handle)
	switch {
	case err == nil && len(h.IPs) > 0:
		return h.IPs[0], nil
	case errors.Is(err, ErrInvalid):
		// The handle record is unreadable; the blocks are the truth.
		a, ok, err := m.heldBy(ctx, req.Handle)
		if err != nil {
			return netip.Addr{}, err
		}
		if ok {
			return a, m.putHandle(ctx, Handle{ID: req.Handle, Node: req.Node, IPs: []netip.Addr{a}, Attrs: req.Attrs})
		}
	case err != nil && !errors.Is(err, datastore.ErrNotFound):
		return netip.Addr{}, err
	}
	if u := req.use(); u != resources.UseWorkload && u != resources.UseTunnel {
		return netip.Addr{}, fmt.Errorf("ipam: use %q: want %s or %s", u, resources.UseWorkload, resources.UseTunnel)
	}
	pools, err := m.pools(ctx, req)
	if err != nil {
		return netip.Addr{}, err
	}
	// As in Calico, reservations hold back addresses from every
	// assignment IPAM makes by itself (tortie has no requests for one
	// given address, which Calico lets use a reserved one).
	reserved, err := resources.Client{S: m.S, Invalid: m.Invalid}.Reserved(ctx)
	if err != nil {
		return netip.Addr{}, err
	}
	for attempt := 0; attempt < maxAttempts; attempt++ {
		addr, err := m.tryAssign(ctx, req, pools, reserved)
		if errors.Is(err, datastore.ErrConflict) || errors.Is(err, datastore.ErrExists) {
			continue // somebody else wrote first: read again
		}
		if err != nil {
			return netip.Addr{}, err
		}
		h := Handle{ID: req.Handle, Node: req.Node, IPs: []netip.Addr{addr}, Attrs: req.Attrs}
		if err := m.putHandle(ctx, h); err != nil {
			_ = m.Release(ctx, req.Handle)
			return netip.Addr{}, err
		}
		return addr, nil
	}
	return netip.Addr{}, fmt.Errorf("ipam: gave up after %d conflicting attempts", maxAttempts)
}

func (m *IPAM) putHandle(ctx context.Context, h Handle) error {
	b, _ := json.Marshal(h)
	_, err := m.S.Put(ctx, handlePrefix+h.ID, b)
	return err
}

// heldBy finds the address a handle holds in the blocks.
func (m *IPAM) heldBy(ctx context.Context, handle string) (netip.Addr, bool, error) {
	blocks, _, err := m.listBlocks(ctx)
	if err != nil {
		return netip.Addr{}, false, err
	}
	for _, kb := range blocks {
		for i, a := range kb.b.Allocs {
			if a.Handle == handle {
				return kb.b.Addr(i), true, nil
			}
		}
	}
	return netip.Addr{}, false, nil
}

func (m *IPAM) pools(ctx context.Context, req Request) ([]*resources.IPPool, error) {
	all, err := resources.Client{S: m.S, Invalid: m.Invalid}.Pools(ctx)
	if err != nil {
		return nil, err
	}
	var unknown []string
	for _, want := range req.Pools {
		if !slices.ContainsFunc(all, func(p *resources.IPPool) bool { return want == p.Metadata.Name || want == p.Spec.CIDR.String() }) {
			unknown = append(unknown, fmt.Sprintf("%q", want))
		}
	}
	if len(unknown) > 0 {
		return nil, noPoolError(fmt.Sprintf("ipam: IP pool %s does not exist (a network names pools by name or CIDR)", strings.Join(unknown, ", ")))
	}
	use := req.use()
	var out []*resources.IPPool
	wrongUse, manual := 0, 0
	for _, p := range all {
		if p.Spec.Disabled || !p.Selects(req.NodeLabels) {
			continue
		}
		named := slices.ContainsFunc(req.Pools, func(want string) bool { return want == p.Metadata.Name || want == p.Spec.CIDR.String() })
		switch {
		case len(req.Pools) > 0 && !named:
			continue
		case !p.Allows(use):
			wrongUse++
			continue
		case len(req.Pools) == 0 && p.Manual():
			manual++
			continue
		}
		out = append(out, p)
	}
	if len(out) == 0 {
		why := ""
		if wrongUse > 0 {
			why += fmt.Sprintf(" (%d allow no %s addresses)", wrongUse, use)
		}
		if manual > 0 {
			why += fmt.Sprintf(" (%d in Manual assignment mode, used only when named)", manual)
		}
		what := ""
		if use != resources.UseWorkload {
			what = " for " + use + " addresses"
		}
		return nil, noPoolError(fmt.Sprintf("ipam: no enabled IP pool%s selects node %s%s%s", what, req.Node, poolsHint(req.Pools), why))
	}
	return out, nil
}

// reservedIn reports whether a is in one of the reserved ranges.
func reservedIn(a netip.Addr, reserved []netip.Prefix) bool {
	for _, r := range reserved {
		if r.Contains(a) {
			return true
		}
	}
	return false
}

// allReserved reports whether every address of block b is reserved.
func allReserved(b netip.Prefix, reserved []netip.Prefix) bool {
	for _, r := range reserved {
		if r.Bits() <= b.Bits() && r.Contains(b.Addr()) {
			return true
		}
	}
	return false
}

func poolsHint(p []string) string {
	if len(p) == 0 {
		return ""
	}
	return " among " + strings.Join(p, ", ")
}

func inPools(pfx netip.Prefix, pools []*resources.IPPool) bool {
	for _, p := range pools {
		if p.Prefix().Contains(pfx.Addr()) {
			return true
		}
	}
	return false
}

// tryAssign makes one pass: affine blocks, then a new block, then
// borrowing, never handing out a reserved address.
func (m *IPAM) tryAssign(ctx context.Context, req Request, pools []*resources.IPPool, reserved []netip.Prefix) (netip.Addr, error) {
	blocks, unreadable, err := m.listBlocks(ctx)
	if err != nil {
		return netip.Addr{}, err
	}
	affine := 0
	for _, kb := range blocks {
		if kb.b.AffinityNode() != req.Node {
			continue
		}
		affine++
		if !inPools(kb.b.Prefix(), pools) {
			continue
		}
		if a, ok, err := m.allocIn(ctx, kb, req, reserved); ok || err != nil {
			return a, err
		}
	}
	maxBlocks := m.MaxBlocksPerNode
	if maxBlocks == 0 {
		maxBlocks = 20
	}
	if affine < maxBlocks {
		claimed, err := m.claim(ctx, req.Node, pools, blocks, unreadable, reserved)
		if err != nil {
			return netip.Addr{}, err
		}
		if claimed {
			return netip.Addr{}, datastore.ErrConflict // allocate from it on the next pass
		}
	}
	if !m.StrictAffinity {
		for _, kb := range blocks {
			if kb.b.AffinityNode() == req.Node || !inPools(kb.b.Prefix(), pools) {
				continue
			}
			if a, ok, err := m.allocIn(ctx, kb, req, reserved); ok || err != nil {
				return a, err
			}
		}
	}
	return netip.Addr{}, ErrExhausted
}

type keyedBlock struct {
	b   *Block
	rev int64
}

// ErrInvalid marks a stored IPAM record that does not decode or validate.
var ErrInvalid = errors.New("invalid record")

// DecodeBlock parses and checks a stored block: a CIDR matching its key, one
// allocation slot per address, an affinity of the form host:<node>.
func DecodeBlock(kv datastore.KV) (*Block, error) {
	var b Block
	if err := json.Unmarshal(kv.Value, &b); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	p := b.CIDR
	switch {
	case !p.IsValid() || !p.Addr().Is4():
		return nil, fmt.Errorf("%w: cidr %q: want an IPv4 CIDR", ErrInvalid, p)
	case p.Masked() != p:
		return nil, fmt.Errorf("%w: cidr %s has host bits set", ErrInvalid, p)
	case p.Bits() < 20:
		return nil, fmt.Errorf("%w: cidr %s: blocks are /20 to /32", ErrInvalid, p)
	case len(b.Allocs) != 1<<(32-p.Bits()):
		return nil, fmt.Errorf("%w: block %s has %d allocation slots, want %d", ErrInvalid, p, len(b.Allocs), 1<<(32-p.Bits()))
	case b.Affinity != "" && (!strings.HasPrefix(b.Affinity, "host:") || b.AffinityNode() == ""):
		return nil, fmt.Errorf("%w: block %s: affinity %q: want host:<node>", ErrInvalid, p, b.Affinity)
	case blockKey(p) != kv.Key:
		return nil, fmt.Errorf("%w: block %s is stored under another key", ErrInvalid, p)
	}
	return &b, nil
}

// DecodeHandle parses and checks a stored handle record.
func DecodeHandle(kv datastore.KV) (Handle, error) {
	var h Handle
	if err := json.Unmarshal(kv.Value, &h); err != nil {
		return Handle{}, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	switch {
	case handlePrefix+h.ID != kv.Key:
		return Handle{}, fmt.Errorf("%w: handle %q is stored under another key", ErrInvalid, h.ID)
	case h.Node == "":
		return Handle{}, fmt.Errorf("%w: handle %q has no node", ErrInvalid, h.ID)
	}
	for _, a := range h.IPs {
		if !a.Is4() {
			return Handle{}, fmt.Errorf("%w: handle %q: %q is not an IPv4 address", ErrInvalid, h.ID, a)
		}
	}
	return h, nil
}

// Affinity is a node's claim on a block, stored under the node's name and
// the block's CIDR.
type Affinity struct {
	Node  string
	CIDR  netip.Prefix
	State string // pending | confirmed
}

// DecodeAffinity parses and checks a stored affinity record.
func DecodeAffinity(kv datastore.KV) (Affinity, error) {
	rest, ok := strings.CutPrefix(kv.Key, affinityPrefix)
	node, cidr, ok2 := strings.Cut(rest, "/")
	p, ok3 := cidrOfKey(cidr)
	if !ok || !ok2 || node == "" || !ok3 {
		return Affinity{}, fmt.Errorf("%w: key %s: want %s<node>/<cidr>", ErrInvalid, kv.Key, affinityPrefix)
	}
	var v affinity
	if err := json.Unmarshal(kv.Value, &v); err != nil {
		return Affinity{}, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if v.State != "pending" && v.State != "confirmed" {
		return Affinity{}, fmt.Errorf("%w: state %q: want pending or confirmed", ErrInvalid, v.State)
	}
	return Affinity{Node: node, CIDR: p, State: v.State}, nil
}

// DecodeRecord decodes the stored IPAM record kv as its key's directory
// says: it returns the record's kind (resources.KindIPAMBlock, ...) and
// the decoded *Block, Affinity or Handle, or why it does not decode; kind
// "" for a key outside IPAM's directories.
func DecodeRecord(kv datastore.KV) (kind string, v any, err error) {
	switch {
	case strings.HasPrefix(kv.Key, blockPrefix):
		b, err := DecodeBlock(kv)
		if err != nil {
			return resources.KindIPAMBlock, nil, err
		}
		return resources.KindIPAMBlock, b, nil
	case strings.HasPrefix(kv.Key, affinityPrefix):
		a, err := DecodeAffinity(kv)
		if err != nil {
			return resources.KindIPAMAffinity, nil, err
		}
		return resources.KindIPAMAffinity, a, nil
	case strings.HasPrefix(kv.Key, handlePrefix):
		h, err := DecodeHandle(kv)
		if err != nil {
			return resources.KindIPAMHandle, nil, err
		}
		return resources.KindIPAMHandle, h, nil
	}
	return "", nil, nil
}

func invalid(kind string, kv datastore.KV, err error) resources.InvalidRecord {
	return resources.InvalidRecord{Key: kv.Key, Kind: kind, Error: err.Error(), Rev: kv.Rev}
}

// listBlocks returns the readable blocks, and the CIDRs of unreadable ones
// (from their keys): those count as taken, so nobody claims them again
// while addresses in them may be in use.
func (m *IPAM) listBlocks(ctx context.Context) ([]keyedBlock, []netip.Prefix, error) {
	kvs, _, err := m.S.List(ctx, blockPrefix)
	if err != nil {
		return nil, nil, err
	}
	out := make([]keyedBlock, 0, len(kvs))
	var unreadable []netip.Prefix
	var bad []resources.InvalidRecord
	for _, kv := range kvs {
		b, err := DecodeBlock(kv)
		if err != nil {
			bad = append(bad, invalid(resources.KindIPAMBlock, kv, err))
			if p, ok := cidrOfKey(strings.TrimPrefix(kv.Key, blockPrefix)); ok {
				unreadable = append(unreadable, p)
			}
			continue
		}
		out = append(out, keyedBlock{b, kv.Rev})
	}
	m.Invalid.Replace(blockPrefix, bad)
	sort.Slice(out, func(i, j int) bool { return out[i].b.CIDR.Addr().Less(out[j].b.CIDR.Addr()) })
	return out, unreadable, nil
}

// CheckRecords reads every IPAM record (blocks, handles, affinities) and
// reports the invalid ones to m.Invalid.
func (m *IPAM) CheckRecords(ctx context.Context) error {
	if _, _, err := m.listBlocks(ctx); err != nil {
		return err
	}
	if _, err := m.Handles(ctx); err != nil {
		return err
	}
	kvs, _, err := m.S.List(ctx, affinityPrefix)
	if err != nil {
		return err
	}
	var bad []resources.InvalidRecord
	for _, kv := range kvs {
		if _, err := DecodeAffinity(kv); err != nil {
			bad = append(bad, invalid(resources.KindIPAMAffinity, kv, err))
		}
	}
	m.Invalid.Replace(affinityPrefix, bad)
	return nil
}

// allocIn takes the lowest free, unreserved ordinal of a block with
// compare-and-swap.
func (m *IPAM) allocIn(ctx context.Context, kb keyedBlock, req Request, reserved []netip.Prefix) (netip.Addr, bool, error) {
	cooldown := m.Cooldown
	if cooldown == 0 {
		cooldown = 60 * time.Second
	}
	now := m.now().UnixMilli()
	addr := kb.b.CIDR.Addr()
	for i, a := range kb.b.Allocs {
		if i > 0 {
			addr = addr.Next()
		}
		if a.Handle != "" || (a.Released != 0 && now-a.Released < cooldown.Milliseconds()) || reservedIn(addr, reserved) {
			continue
		}
		kb.b.Allocs[i] = Alloc{Handle: req.Handle, Node: req.Node}
		v, _ := json.Marshal(kb.b)
		if _, err := m.S.Update(ctx, blockKey(kb.b.CIDR), v, kb.rev); err != nil {
			return netip.Addr{}, false, err
		}
		return addr, true, nil
	}
	return netip.Addr{}, false, nil
}

// claim creates the first free block of the pools with affinity to node:
// a pending affinity, then the block (create-if-absent), then confirmed.
// A block whose every address is reserved is never claimed.
func (m *IPAM) claim(ctx context.Context, node string, pools []*resources.IPPool, blocks []keyedBlock, unreadable []netip.Prefix, reserved []netip.Prefix) (bool, error) {
	taken := map[netip.Prefix]bool{}
	for _, kb := range blocks {
		taken[kb.b.Prefix()] = true
	}
	overlapsUnreadable := func(p netip.Prefix) bool {
		for _, u := range unreadable {
			if u.Overlaps(p) {
				return true
			}
		}
		return false
	}
	for _, p := range pools {
		pfx := p.Prefix()
		size := 1 << (32 - p.Spec.BlockSize)
		for a := pfx.Addr(); pfx.Contains(a); {
			bp := netip.PrefixFrom(a, p.Spec.BlockSize)
			next := advance(a, size)
			if !taken[bp] && !overlapsUnreadable(bp) && !allReserved(bp, reserved) {
				return true, m.createBlock(ctx, node, bp, size)
			}
			if !next.IsValid() {
				break
			}
			a = next
		}
	}
	return false, nil
}

func advance(a netip.Addr, n int) netip.Addr {
	b := a.As4()
	v := uint64(b[0])<<24 | uint64(b[1])<<16 | uint64(b[2])<<8 | uint64(b[3])
	v += uint64(n)
	if v > 0xffffffff {
		return netip.Addr{}
	}
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

func (m *IPAM) createBlock(ctx context.Context, node string, cidr netip.Prefix, size int) error {
	pending, _ := json.Marshal(affinity{State: "pending"})
	if _, err := m.S.Create(ctx, affinityKey(node, cidr), pending); err != nil && !errors.Is(err, datastore.ErrExists) {
		return err
	}
	b, _ := json.Marshal(Block{CIDR: cidr, Affinity: "host:" + node, Allocs: make([]Alloc, size)})
	if _, err := m.S.Create(ctx, blockKey(cidr), b); err != nil {
		_ = m.S.Delete(ctx, affinityKey(node, cidr), 0)
		return err // ErrExists: another node won the block; the caller rereads
	}
	confirmed, _ := json.Marshal(affinity{State: "confirmed"})
	_, err := m.S.Put(ctx, affinityKey(node, cidr), confirmed)
	return err
}

// GetHandle reads a handle record.
func (m *IPAM) GetHandle(ctx context.Context, id string) (Handle, error) {
	kv, err := m.S.Get(ctx, handlePrefix+id)
	if err != nil {
		return Handle{}, err
	}
	h, err := DecodeHandle(kv)
	if err != nil {
		m.Invalid.Report(invalid(resources.KindIPAMHandle, kv, err))
		return Handle{}, fmt.Errorf("ipam: handle %s: %w", id, err)
	}
	m.Invalid.Clear(kv.Key)
	return h, nil
}

// Release frees every address of a handle. An unknown handle is not an
// error. Blocks are the truth: addresses held under the handle are found
// and freed even if the handle record was lost.
func (m *IPAM) Release(ctx context.Context, handle string) error {
	for attempt := 0; attempt < maxAttempts; attempt++ {
		blocks, _, err := m.listBlocks(ctx)
		if err != nil {
			return err
		}
		conflict := false
		for _, kb := range blocks {
			changed := false
			for i, a := range kb.b.Allocs {
				if a.Handle == handle {
					kb.b.Allocs[i] = Alloc{Released: m.now().UnixMilli()}
					changed = true
				}
			}
			if !changed {
				continue
			}
			v, _ := json.Marshal(kb.b)
			if _, err := m.S.Update(ctx, blockKey(kb.b.CIDR), v, kb.rev); errors.Is(err, datastore.ErrConflict) {
				conflict = true
			} else if err != nil {
				return err
			}
		}
		if conflict {
			continue
		}
		if err := m.S.Delete(ctx, handlePrefix+handle, 0); err != nil && !errors.Is(err, datastore.ErrNotFound) {
			return err
		}
		return nil
	}
	return fmt.Errorf("ipam: release of %s gave up after %d conflicts", handle, maxAttempts)
}

// Blocks lists every readable block.
func (m *IPAM) Blocks(ctx context.Context) ([]*Block, error) {
	kbs, _, err := m.listBlocks(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]*Block, len(kbs))
	for i, kb := range kbs {
		out[i] = kb.b
	}
	return out, nil
}

// Handles lists every readable handle record.
func (m *IPAM) Handles(ctx context.Context) ([]Handle, error) {
	kvs, _, err := m.S.List(ctx, handlePrefix)
	if err != nil {
		return nil, err
	}
	out := make([]Handle, 0, len(kvs))
	var bad []resources.InvalidRecord
	for _, kv := range kvs {
		h, err := DecodeHandle(kv)
		if err != nil {
			bad = append(bad, invalid(resources.KindIPAMHandle, kv, err))
			continue
		}
		out = append(out, h)
	}
	m.Invalid.Replace(handlePrefix, bad)
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

// GC releases the handles of node that keep does not vouch for (leaked by
// a runtime that never called DEL), and removes empty blocks whose
// affinity node no longer exists. It returns the released handles.
func (m *IPAM) GC(ctx context.Context, node string, keep func(handle string) bool, liveNodes map[string]bool) ([]string, error) {
	blocks, _, err := m.listBlocks(ctx)
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	var released []string
	for _, kb := range blocks {
		for _, a := range kb.b.Allocs {
			if a.Handle != "" && a.Node == node && !seen[a.Handle] && !keep(a.Handle) {
				seen[a.Handle] = true
				if err := m.Release(ctx, a.Handle); err != nil {
					return released, err
				}
				released = append(released, a.Handle)
			}
		}
	}
	if liveNodes != nil {
		for _, kb := range blocks {
			owner := kb.b.AffinityNode()
			if owner != "" && !liveNodes[owner] && kb.b.InUse() == 0 {
				if err := m.S.Delete(ctx, blockKey(kb.b.CIDR), kb.rev); err == nil {
					_ = m.S.Delete(ctx, affinityKey(owner, kb.b.CIDR), 0)
				}
			}
		}
	}
	return released, nil
}
