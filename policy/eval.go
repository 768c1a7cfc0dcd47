package policy

import "fmt"

// Packet is what evaluation looks at: the 5-tuple (addresses as host-order
// integers, as the flow table keys them) and, for ICMP, type and code.
type Packet struct {
	Src, Dst         uint32
	SrcPort, DstPort uint16
	Proto            uint8
	ICMPType         uint8
	ICMPCode         uint8
}

// Decider says what produced a Verdict.
type Decider uint8

// Deciders.
const (
	// ByRule: a rule of a policy (Tier, Policy and Rule say which).
	ByRule Decider = iota
	// ByTierEnd: policies of Tier selected the endpoint and none of their
	// rules decided; the tier's default action is Deny.
	ByTierEnd
	// ByProfile: a rule of a profile (Policy names the profile).
	ByProfile
	// ByProfileEnd: the endpoint's profiles had no rule that decided.
	ByProfileEnd
	// ByDefault: no policy selected the endpoint in this direction (or the
	// last tier passed) and it names no profile: Calico's per-namespace
	// profile for Kubernetes pods allows.
	ByDefault
)

func (d Decider) String() string {
	switch d {
	case ByRule:
		return "rule"
	case ByTierEnd:
		return "end of tier"
	case ByProfile:
		return "profile rule"
	case ByProfileEnd:
		return "end of profiles"
	case ByDefault:
		return "default allow"
	}
	return fmt.Sprintf("decider(%d)", uint8(d))
}

// Verdict is the decision for one packet.
type Verdict struct {
	Action  Action // Allow or Deny
	Decider Decider
	Tier    string // the tier of the deciding policy, or whose end decided
	Policy  string // the deciding policy or profile
	Rule    int    // index of the deciding rule in its list; -1 when no rule decided
	Logged  bool   // a Log rule matched on the way
	// Counter numbers what decided (Set.Counters), so that callers count
	// verdicts per policy in an array rather than by name.
	Counter int
}

// Counter names one thing that can decide in a Set: a policy (Decider
// ByRule), a profile (ByProfile), the end of a tier (ByTierEnd, Policy
// empty), the end of the profiles or the default allow (Tier and Policy
// empty).
type Counter struct {
	Decider Decider
	Tier    string
	Policy  string
}

// Step is one entry considered during Explain, in evaluation order.
type Step struct {
	Tier    string
	Policy  string
	Rule    int // -1 for the end of a tier or of the profiles
	Action  Action
	Matched bool
	Note    string // what happened: "no match", "allow", "pass to next tier", …
}

// Entry kinds of a program.
const (
	kRule uint8 = iota
	kTierEnd
	kProfileEnd
	kDefaultAllow
)

// rule is one entry of an endpoint's program for one direction.
type rule struct {
	kind    uint8
	action  Action
	decider Decider // ByRule or ByProfile for kRule
	never   bool    // cannot match IPv4 (only IPv6 nets, ICMPv6)
	proto   int16   // -1: any
	noProto int16   // -1: none excluded
	icmp    icmpMatch
	notICMP icmpMatch
	src     match
	dst     match
	next    int32 // where Pass (or a passing tier end) continues
	counter int32 // Verdict.Counter of what this entry decides
	index   int
	tier    string
	policy  string
}

type icmpMatch struct {
	set  bool
	typ  uint8
	code int16 // -1: any
}

func (m *icmpMatch) matches(p *Packet) bool {
	return p.ICMPType == m.typ && (m.code < 0 || uint8(m.code) == p.ICMPCode)
}

func (r *rule) matches(p *Packet) bool {
	if r.never {
		return false
	}
	if r.proto >= 0 && int16(p.Proto) != r.proto {
		return false
	}
	if r.noProto >= 0 && int16(p.Proto) == r.noProto {
		return false
	}
	if r.icmp.set && !r.icmp.matches(p) {
		return false
	}
	if r.notICMP.set && r.notICMP.matches(p) {
		return false
	}
	return r.src.matches(p.Src, p.Proto, p.SrcPort) && r.dst.matches(p.Dst, p.Proto, p.DstPort)
}

// Set is a compiled policy state: for each local endpoint and direction, a
// program of rules. It is immutable once Compile returns it, so any number
// of goroutines may evaluate it at once; a new state is a new Set, which
// callers publish with an atomic pointer swap.
type Set struct {
	keys     []string
	index    map[string]int
	progs    [][2][]rule
	counters []Counter // [0] is the default allow
}

// Len is the number of local endpoints.
func (s *Set) Len() int { return len(s.keys) }

// Index is the number Evaluate takes for the local endpoint with key.
func (s *Set) Index(key string) (int, bool) {
	i, ok := s.index[key]
	return i, ok
}

// Key is the key of local endpoint i.
func (s *Set) Key(i int) string { return s.keys[i] }

// Subject reports whether local endpoint ep is subject to policy in
// direction dir: some tier or profile decides there, so a packet can be
// denied. An endpoint that is not subject is allowed everything in that
// direction (Calico's default for pods no policy selects), and callers may
// skip evaluating it.
func (s *Set) Subject(ep int, dir Direction) bool {
	if ep < 0 || ep >= len(s.progs) || dir > Egress {
		return false
	}
	prog := s.progs[ep][dir]
	return len(prog) != 1 || prog[0].kind != kDefaultAllow
}

// Counters lists what can decide in the Set, indexed by Verdict.Counter;
// its length is fixed, so callers can size per-policy counters once per Set.
// Index 0 is the default allow. The slice must not be modified.
func (s *Set) Counters() []Counter { return s.counters }

// Evaluate decides a packet crossing local endpoint ep (an Index) in
// direction dir: for Ingress the packet's destination is the endpoint, for
// Egress its source. It does not allocate. An ep out of range is denied.
func (s *Set) Evaluate(ep int, dir Direction, p *Packet) Verdict {
	return s.run(ep, dir, p, nil)
}

// Explain returns Evaluate's verdict and every step that led to it.
func (s *Set) Explain(ep int, dir Direction, p *Packet) (Verdict, []Step) {
	var steps []Step
	v := s.run(ep, dir, p, &steps)
	return v, steps
}

func (s *Set) run(ep int, dir Direction, p *Packet, trace *[]Step) Verdict {
	if ep < 0 || ep >= len(s.progs) || dir > Egress {
		if trace != nil {
			*trace = append(*trace, Step{Rule: -1, Action: Deny, Note: "no such local endpoint or direction"})
		}
		return Verdict{Action: Deny, Decider: ByDefault, Rule: -1}
	}
	prog := s.progs[ep][dir]
	logged := false
	for k := 0; k < len(prog); {
		r := &prog[k]
		switch r.kind {
		case kRule:
			m := r.matches(p)
			if trace != nil {
				*trace = append(*trace, step(r, m))
			}
			if !m {
				k++
				continue
			}
			switch r.action {
			case Log:
				logged = true
				k++
			case Pass:
				k = int(r.next)
			default:
				return Verdict{Action: r.action, Decider: r.decider, Tier: r.tier, Policy: r.policy, Rule: r.index, Logged: logged, Counter: int(r.counter)}
			}
		case kTierEnd:
			if trace != nil {
				*trace = append(*trace, step(r, true))
			}
			if r.action == Pass {
				k = int(r.next)
				continue
			}
			return Verdict{Action: Deny, Decider: ByTierEnd, Tier: r.tier, Rule: -1, Logged: logged, Counter: int(r.counter)}
		case kProfileEnd:
			if trace != nil {
				*trace = append(*trace, step(r, true))
			}
			return Verdict{Action: Deny, Decider: ByProfileEnd, Rule: -1, Logged: logged, Counter: int(r.counter)}
		default: // kDefaultAllow
			if trace != nil {
				*trace = append(*trace, step(r, true))
			}
			return Verdict{Action: Allow, Decider: ByDefault, Rule: -1, Logged: logged, Counter: int(r.counter)}
		}
	}
	// Compile ends every program with a deciding entry; reaching here means
	// a bug, and failing closed is the safe answer.
	return Verdict{Action: Deny, Decider: ByDefault, Rule: -1, Logged: logged}
}

func step(r *rule, matched bool) Step {
	st := Step{Tier: r.tier, Policy: r.policy, Rule: r.index, Action: r.action, Matched: matched}
	switch r.kind {
	case kRule:
		switch {
		case !matched:
			st.Note = "no match"
		case r.action == Pass:
			st.Note = "pass to next tier"
		case r.action == Log:
			st.Note = "log, continue"
		default:
			st.Note = string(r.action)
		}
	case kTierEnd:
		st.Note = "end of tier: " + string(r.action)
	case kProfileEnd:
		st.Note = "end of profiles: Deny"
	default:
		st.Note = "no policy or profile: default Allow"
	}
	return st
}
