// Package flow is the router's flow table: one bounded table of
// connections, keyed by 5-tuple, that every forwarding worker shares.
//
// A flow is recorded with flags saying how the router treats its packets:
// ViaHost, a flow the node's kernel translated, whose replies must go back
// through the kernel so that its conntrack reverses the NAT; and network
// policy's connection tracking, PolicyAllowed or PolicyDenied, the verdict
// of the flow's first packet, with the generation of the policy state that
// gave it and a tag saying what decided (Verdict), so that later packets
// and replies ride the entry unevaluated and a flow judged under an older
// policy state is judged again on its next packet. One entry holds both
// kinds: a Service flow subject to policy is one flow. Entries expire after
// a timeout that depends on the protocol and on what was seen: a TCP flow
// is new until both directions have been seen, then established, then
// closing after a FIN or RST.
//
// The table is a fixed array of entries allocated by New and never grown:
// its memory is bounded by Config.Size. It is split into shards, each a
// power-of-two number of 4-way buckets under its own mutex; a key hashes
// (with a per-table random seed, so flows cannot be aimed at one bucket
// from outside) to one bucket of one shard. Inserting into a full bucket
// first takes an expired slot, then evicts the flow nearest to expiry that
// is not established; a bucket of established flows refuses the newcomer.
// Inserts, evictions, refusals and expiries are counted.
//
// Concurrency: every method is safe for concurrent use; workers contend
// only when their flows hash to the same shard. No method allocates.
package flow

import (
	"math/bits"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/tortie-net/tortie/header"
)

// Key is a flow's 5-tuple as one direction of it carries it. For ICMP
// echo, both ports hold the identifier; for fragments (which carry no
// ports after the first) and other protocols, both are zero.
type Key struct {
	Src, Dst         uint32
	SrcPort, DstPort uint16
	Proto            uint8
}

// Reverse is the key of the other direction.
func (k Key) Reverse() Key {
	return Key{Src: k.Dst, Dst: k.Src, SrcPort: k.DstPort, DstPort: k.SrcPort, Proto: k.Proto}
}

// Addrs is the key without ports (the key fragments are found by).
func (k Key) Addrs() Key { return Key{Src: k.Src, Dst: k.Dst, Proto: k.Proto} }

// Flags say how the router treats a flow's packets.
type Flags uint8

// Flow flags.
const (
	// ViaHost marks a flow that entered the router from the host after
	// the kernel translated it: its replies go to the host.
	ViaHost Flags = 1 << iota
	// PolicyAllowed: network policy allowed the flow; its packets and
	// replies pass.
	PolicyAllowed
	// PolicyDenied: network policy denied the flow; its packets are
	// dropped.
	PolicyDenied
)

// PolicyFlags are the flags a Verdict sets; at most one is set.
const PolicyFlags = PolicyAllowed | PolicyDenied

// Verdict is network policy's decision kept in a flow's entry.
type Verdict struct {
	Flags Flags  // PolicyAllowed, PolicyDenied, or zero: none recorded
	Gen   uint32 // the generation of the policy state that decided
	Tag   uint32 // the caller's note of what decided (for counters)
}

// TCP flags the table looks at.
const (
	TCPFin = 0x01
	TCPSyn = 0x02
	TCPRst = 0x04
	TCPAck = 0x10
)

type state uint8

const (
	stateNew state = iota
	stateEstablished
	stateClosing
	stateReset
	numStates
)

// Config sizes a table and sets its timeouts (zero: the default).
type Config struct {
	// Size is the number of entries, rounded up to a power of two
	// (default 65536, 40 bytes each: about 2.6 MB; at least 64).
	Size int
	// TCPNew: a TCP flow not yet seen in both directions (120 s, the
	// kernel's SYN_SENT).
	TCPNew time.Duration
	// TCPEstablished: seen both ways, neither FIN nor RST (24 h, what
	// kube-proxy sets the kernel's established timeout to).
	TCPEstablished time.Duration
	// TCPClosing: after a FIN (120 s, the kernel's TIME_WAIT).
	TCPClosing time.Duration
	// TCPReset: after an RST (10 s).
	TCPReset time.Duration
	// UDP: a UDP flow seen one way (30 s), and both ways (UDPStream,
	// 120 s), as the kernel's conntrack.
	UDP, UDPStream time.Duration
	// ICMP: an echo (30 s). Other: any other protocol (600 s).
	ICMP, Other time.Duration
}

func (c *Config) defaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	if c.Size <= 0 {
		c.Size = 65536
	}
	def(&c.TCPNew, 120*time.Second)
	def(&c.TCPEstablished, 24*time.Hour)
	def(&c.TCPClosing, 120*time.Second)
	def(&c.TCPReset, 10*time.Second)
	def(&c.UDP, 30*time.Second)
	def(&c.UDPStream, 120*time.Second)
	def(&c.ICMP, 30*time.Second)
	def(&c.Other, 600*time.Second)
}

const ways = 4

// entry is 40 bytes: the key (16 with padding), four bytes of state, the
// policy generation, the expiry and the policy tag.
type entry struct {
	key     Key
	used    bool
	replied bool
	state   state
	flags   Flags
	gen     uint32
	expires int64
	tag     uint32
}

type shard struct {
	mu      sync.Mutex
	slots   []entry // buckets × ways
	live    int
	inserts uint64
	evicted uint64
	refused uint64
	expired uint64
	_       [64]byte // keep shards' locks off each other's cache lines
}

// Table is a bounded flow table.
type Table struct {
	shards     []shard
	shardMask  uint64
	shardBits  uint
	bucketMask uint64
	seed       uint64
	size       int
	cfg        Config
}

// Stats are a table's counters.
type Stats struct {
	Entries   int    // live entries (expired ones not yet reused included)
	Capacity  int    // entries the table holds at most
	Inserts   uint64 // flows added
	Evictions uint64 // flows pushed out of a full bucket before expiring
	Refusals  uint64 // flows not added: their bucket held only established flows
	Expired   uint64 // expired entries reused
}

// New makes a table; all of its memory is allocated here.
func New(cfg Config) *Table {
	cfg.defaults()
	size := max(64, 1<<bits.Len(uint(cfg.Size-1)))
	nshards := min(64, size/ways)
	t := &Table{cfg: cfg, size: size, shards: make([]shard, nshards), seed: rand.Uint64() | 1}
	t.shardBits = uint(bits.TrailingZeros(uint(nshards)))
	t.shardMask = uint64(nshards - 1)
	per := size / nshards
	t.bucketMask = uint64(per/ways - 1)
	for i := range t.shards {
		t.shards[i].slots = make([]entry, per)
	}
	return t
}

// Capacity is the most entries the table holds.
func (t *Table) Capacity() int { return t.size }

func (t *Table) hash(k Key) uint64 {
	a := uint64(k.Src)<<32 | uint64(k.Dst)
	b := uint64(k.SrcPort)<<32 | uint64(k.DstPort)<<16 | uint64(k.Proto)
	h := (a ^ t.seed) * 0x9e3779b97f4a7c15
	h ^= h >> 29
	h = (h ^ b) * 0xbf58476d1ce4e5b9
	h ^= h >> 32
	return h
}

// bucket locks and returns the shard and bucket of k.
func (t *Table) bucket(k Key) (*shard, []entry) {
	h := t.hash(k)
	s := &t.shards[h&t.shardMask]
	b := int((h >> t.shardBits) & t.bucketMask * ways)
	s.mu.Lock()
	return s, s.slots[b : b+ways : b+ways]
}

// find returns the entry of k in bucket b (live or expired), or nil.
func find(b []entry, k Key) *entry {
	for i := range b {
		if e := &b[i]; e.used && e.key == k {
			return e
		}
	}
	return nil
}

// timeout is how long an entry in state st of protocol proto lives.
func (t *Table) timeout(e *entry) int64 {
	var d time.Duration
	switch e.key.Proto {
	case header.ProtocolTCP:
		switch e.state {
		case stateNew:
			d = t.cfg.TCPNew
		case stateEstablished:
			d = t.cfg.TCPEstablished
		case stateClosing:
			d = t.cfg.TCPClosing
		default:
			d = t.cfg.TCPReset
		}
	case header.ProtocolUDP:
		d = t.cfg.UDP
		if e.replied {
			d = t.cfg.UDPStream
		}
	case header.ProtocolICMP:
		d = t.cfg.ICMP
	default:
		d = t.cfg.Other
	}
	return int64(d)
}

// advance moves a TCP entry's state on for a packet with flags tcp, seen
// in the flow's own direction (reply false) or the other (reply true).
func (e *entry) advance(tcp uint8, reply bool) {
	if reply {
		e.replied = true
	}
	if e.key.Proto != header.ProtocolTCP {
		return
	}
	switch {
	case tcp&TCPRst != 0:
		e.state = stateReset
	case tcp&TCPFin != 0 && e.state < stateClosing:
		e.state = stateClosing
	case tcp&TCPSyn != 0 && !reply && e.state != stateNew:
		// A new connection on a reused tuple.
		e.state, e.replied = stateNew, false
	case e.state == stateNew && e.replied && tcp&TCPAck != 0 && tcp&TCPSyn == 0:
		e.state = stateEstablished
	}
}

// Track records a packet of the flow k in its own direction: the flow is
// added with flags if it is not there (and flags are added to it if it
// is), and its timeout starts again. tcp holds the packet's TCP flags
// (zero for other protocols). now is Now(). Track reports false when the
// flow is not in the table and could not be added.
func (t *Table) Track(k Key, flags Flags, tcp uint8, now int64) bool {
	s, b := t.bucket(k)
	defer s.mu.Unlock()
	if e := find(b, k); e != nil {
		if e.expires <= now {
			// Expired but not yet reused: a new flow on this tuple.
			*e = entry{key: k, used: true}
			s.expired++
			s.inserts++
		}
		e.flags |= flags
		e.advance(tcp, false)
		e.expires = now + t.timeout(e)
		return true
	}
	e := t.insert(s, b, k, tcp, now)
	if e == nil {
		return false
	}
	e.flags = flags
	return true
}

// insert adds the flow k, absent from bucket b of shard s, for a packet
// with TCP flags tcp: into a free slot, an expired one, or in place of the
// flow nearest to expiry that is not established. It returns nil when
// every slot holds an established flow.
func (t *Table) insert(s *shard, b []entry, k Key, tcp uint8, now int64) *entry {
	victim := -1
	for i := range b {
		e := &b[i]
		if !e.used {
			victim = i
			s.live++
			break
		}
		if e.expires <= now {
			victim = i
			s.expired++
			break
		}
	}
	if victim < 0 {
		for i := range b {
			e := &b[i]
			if e.state == stateEstablished {
				continue
			}
			if victim < 0 || e.expires < b[victim].expires {
				victim = i
			}
		}
		if victim < 0 {
			s.refused++
			return nil
		}
		s.evicted++
	}
	e := &b[victim]
	*e = entry{key: k, used: true}
	e.advance(tcp, false)
	e.expires = now + t.timeout(e)
	s.inserts++
	return e
}

// Seen looks up the live flow k for a packet of its own direction (reply
// false) or of its other direction (reply true: k is the packet's key
// reversed). A live flow's state moves on and its timeout starts again, as
// with Track and Reply; Seen returns its flags and policy verdict. ok is
// false if the flow is not in the table or has expired; Seen never adds.
func (t *Table) Seen(k Key, reply bool, tcp uint8, now int64) (flags Flags, v Verdict, ok bool) {
	s, b := t.bucket(k)
	defer s.mu.Unlock()
	e := find(b, k)
	if e == nil || e.expires <= now {
		return 0, Verdict{}, false
	}
	e.advance(tcp, reply)
	e.expires = now + t.timeout(e)
	return e.flags, Verdict{Flags: e.flags & PolicyFlags, Gen: e.gen, Tag: e.tag}, true
}

// SetVerdict records network policy's verdict for the flow k: its policy
// flags, generation and tag are replaced (v.Flags is masked to
// PolicyFlags) and its other flags kept. A live flow's state and timeout
// are left as they are (the packet that asked was already Seen); an absent
// or expired one is added as Track adds it, for a packet of its own
// direction with TCP flags tcp. SetVerdict reports false when the flow is
// not in the table and could not be added.
func (t *Table) SetVerdict(k Key, v Verdict, tcp uint8, now int64) bool {
	s, b := t.bucket(k)
	defer s.mu.Unlock()
	e := find(b, k)
	switch {
	case e != nil && e.expires <= now:
		*e = entry{key: k, used: true}
		s.expired++
		s.inserts++
		e.advance(tcp, false)
		e.expires = now + t.timeout(e)
	case e == nil:
		if e = t.insert(s, b, k, tcp, now); e == nil {
			return false
		}
	}
	e.flags = e.flags&^PolicyFlags | v.Flags&PolicyFlags
	e.gen, e.tag = v.Gen, v.Tag
	return true
}

// Reply looks up the flow k for a packet of its other direction (k is the
// flow's key, the packet's reversed) and returns its flags; a live flow's
// timeout starts again and its state moves on. ok is false if the flow is
// not in the table or has expired.
func (t *Table) Reply(k Key, tcp uint8, now int64) (flags Flags, ok bool) {
	s, b := t.bucket(k)
	defer s.mu.Unlock()
	e := find(b, k)
	if e == nil || e.expires <= now {
		return 0, false
	}
	e.advance(tcp, true)
	e.expires = now + t.timeout(e)
	return e.flags, true
}

// Lookup returns the flags of the live flow k without touching it.
func (t *Table) Lookup(k Key, now int64) (flags Flags, ok bool) {
	s, b := t.bucket(k)
	defer s.mu.Unlock()
	if e := find(b, k); e != nil && e.expires > now {
		return e.flags, true
	}
	return 0, false
}

// Stats sums the shards' counters.
func (t *Table) Stats() Stats {
	st := Stats{Capacity: t.size}
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.Lock()
		st.Entries += s.live
		st.Inserts += s.inserts
		st.Evictions += s.evicted
		st.Refusals += s.refused
		st.Expired += s.expired
		s.mu.Unlock()
	}
	return st
}

var epoch = time.Now()

// Now is the table's clock: monotonic nanoseconds. Callers read it once
// per batch of packets.
func Now() int64 { return int64(time.Since(epoch)) }

// Entry is one live flow as Snapshot copies it.
type Entry struct {
	Key     Key
	Flags   Flags
	Verdict Verdict // the policy verdict (Flags masked to PolicyFlags)
	// State is the TCP state ("new", "established", "closing", "reset");
	// for other protocols "new" until a reply was seen, then "replied".
	State string
	// Expires is the flow's expiry on the table's clock (Now).
	Expires int64
}

func (e *entry) stateName() string {
	if e.key.Proto != header.ProtocolTCP {
		if e.replied {
			return "replied"
		}
		return "new"
	}
	switch e.state {
	case stateNew:
		return "new"
	case stateEstablished:
		return "established"
	case stateClosing:
		return "closing"
	}
	return "reset"
}

// Snapshot copies at most limit live flows (unexpired at now) into a new
// slice, for showing the table (limit <= 0: none, more saying whether any live). Each shard is
// copied under its own lock, one after the other, so the result is not one
// instant of the whole table, and a busy table may hold flows the copy
// skipped. It allocates, unlike the packet path's methods, and holds each
// lock only while it walks that shard's entries. more says whether live
// flows were left out for the limit.
func (t *Table) Snapshot(limit int, now int64) (out []Entry, more bool) {
	out = make([]Entry, 0, min(max(limit, 0), 1024))
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.Lock()
		for j := range s.slots {
			e := &s.slots[j]
			if !e.used || e.expires <= now {
				continue
			}
			if len(out) >= limit {
				more = true
				break
			}
			out = append(out, Entry{
				Key: e.key, Flags: e.flags, State: e.stateName(), Expires: e.expires,
				Verdict: Verdict{Flags: e.flags & PolicyFlags, Gen: e.gen, Tag: e.tag},
			})
		}
		s.mu.Unlock()
		if more {
			break
		}
	}
	return out, more
}
