package router

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/tortie-net/tortie/api"
	"github.com/tortie-net/tortie/fib"
	"github.com/tortie-net/tortie/flow"
	"github.com/tortie-net/tortie/header"
	"github.com/tortie-net/tortie/policy"
)

// Policy is the network policy state SetPolicy installs.
type Policy struct {
	// Set is the compiled policy for this node's endpoints; nil turns
	// enforcement off. Ports name their endpoint with PortConfig.PolicyKey.
	Set *policy.Set
	// ServiceNets are the destinations the node's kernel translates
	// (Service cluster IPs). A pod's packet to one goes to the host
	// untranslated, and the host hands the translated packet back: its
	// egress is judged then, on the backend's address, as Calico judges
	// egress after DNAT. Without them, egress rules see the cluster IP.
	ServiceNets []netip.Prefix
}

// portPolicy is what the packet path needs of one port's endpoint.
type portPolicy struct {
	port    *Port // the port this was built for: a reused ID is another port
	ep      int32 // index in the Set
	in, out bool  // some policy or profile decides its ingress, egress
}

// policyState is one installed policy, immutable once published (its
// counters aside): the Set, its generation, the ports' endpoints by port
// ID, and the denied counters, sized for the Set.
type policyState struct {
	set      *policy.Set
	gen      uint32
	ports    []portPolicy
	subject  int // ports some policy or profile decides for
	svc      []netip.Prefix
	deniedEP []atomic.Uint64 // by Set endpoint index
	deniedBy []atomic.Uint64 // by policy.Verdict.Counter
}

// port returns the endpoint of the port with id in ports (the worker's
// snapshot), or nil if it has none or is subject to no policy.
func (ps *policyState) port(id uint32, ports []*Port) *portPolicy {
	if id >= uint32(len(ps.ports)) || id >= uint32(len(ports)) {
		return nil
	}
	e := &ps.ports[id]
	if e.port == nil || e.port != ports[id] || (!e.in && !e.out) {
		return nil
	}
	return e
}

func (ps *policyState) service(a uint32) bool {
	for _, p := range ps.svc {
		if p.Contains(addrOf(a)) {
			return true
		}
	}
	return false
}

// SetPolicy installs p: from the next batch on, every worker enforces it.
// The state is built here, off the packet path, and published with an
// atomic pointer swap, as the FIB is; the ports attached later are mapped
// to the Set's endpoints as they come (AddPort). Each install is a new
// generation: flows judged under an older one are judged again on their
// next packet. SetPolicy is safe for concurrent use with everything else.
func (r *Router) SetPolicy(p Policy) error {
	for _, pfx := range p.ServiceNets {
		if !pfx.IsValid() || !pfx.Addr().Is4() {
			return fmt.Errorf("router: service net %v is not an IPv4 prefix", pfx)
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.polCfg = Policy{Set: p.Set, ServiceNets: append([]netip.Prefix(nil), p.ServiceNets...)}
	r.publishPolicy(*r.ports.Load())
	if p.Set != nil {
		r.polLogOnce.Do(func() { r.spawnPolicyLog() })
	}
	return nil
}

// publishPolicy builds the policy state for ports and publishes it. The
// caller holds r.mu. A port being added is published here before it is in
// the port table, and a port being removed after it left it, so a worker
// that sees a port sees a state that knows it (port checks the rest).
func (r *Router) publishPolicy(ports []*Port) {
	old := r.pol.Load()
	set := r.polCfg.Set
	if set == nil {
		if old != nil {
			r.retire(old)
			r.pol.Store(nil)
		}
		return
	}
	r.polGen++
	if r.polGen == 0 { // after 2^32 installs; 0 would look like no verdict
		r.polGen = 1
	}
	ps := &policyState{set: set, gen: r.polGen, ports: make([]portPolicy, len(ports)), svc: r.polCfg.ServiceNets}
	for id, p := range ports {
		if p == nil || p.cfg.PolicyKey == "" {
			continue
		}
		i, ok := set.Index(p.cfg.PolicyKey)
		if !ok {
			continue
		}
		e := portPolicy{port: p, ep: int32(i), in: set.Subject(i, policy.Ingress), out: set.Subject(i, policy.Egress)}
		if e.in || e.out {
			ps.subject++
		}
		ps.ports[id] = e
	}
	if old != nil && old.set == set {
		// Only the ports changed: the counters carry on.
		ps.deniedEP, ps.deniedBy = old.deniedEP, old.deniedBy
	} else {
		if old != nil {
			r.retire(old)
		}
		ps.deniedEP = make([]atomic.Uint64, set.Len())
		ps.deniedBy = make([]atomic.Uint64, len(set.Counters()))
	}
	r.pol.Store(ps)
}

// retire folds a state's denied counters into the totals kept by name. A
// worker still in a batch under the old state may count a few packets
// after this; those are lost, which keeps the packet path free of
// anything but an atomic add.
func (r *Router) retire(ps *policyState) {
	r.statMu.Lock()
	defer r.statMu.Unlock()
	if r.deniedEP == nil {
		r.deniedEP, r.deniedBy = map[string]uint64{}, map[policy.Counter]uint64{}
	}
	for i := range ps.deniedEP {
		if n := ps.deniedEP[i].Load(); n != 0 {
			r.deniedEP[ps.set.Key(i)] += n
		}
	}
	for i, c := range ps.set.Counters() {
		if n := ps.deniedBy[i].Load(); n != 0 {
			r.deniedBy[c] += n
		}
	}
}

// policyStats sums the retired counters and the current state's.
func (r *Router) policyStats() PolicyStats {
	r.mu.Lock()
	ps := r.pol.Load()
	r.statMu.Lock()
	ep := make(map[string]uint64, len(r.deniedEP))
	by := make(map[policy.Counter]uint64, len(r.deniedBy))
	for k, v := range r.deniedEP {
		ep[k] = v
	}
	for k, v := range r.deniedBy {
		by[k] = v
	}
	r.statMu.Unlock()
	r.mu.Unlock()
	st := PolicyStats{Logged: r.polLogged.Load(), LogsDropped: r.polLogDropped.Load()}
	if ps != nil {
		st.Generation, st.Subject = uint64(ps.gen), ps.subject
		for i := range ps.deniedEP {
			if n := ps.deniedEP[i].Load(); n != 0 {
				ep[ps.set.Key(i)] += n
			}
		}
		for i, c := range ps.set.Counters() {
			if n := ps.deniedBy[i].Load(); n != 0 {
				by[c] += n
			}
		}
	}
	for k, v := range ep {
		st.DeniedByEndpoint = append(st.DeniedByEndpoint, EndpointDenied{Endpoint: k, Packets: v})
	}
	for c, v := range by {
		st.DeniedByPolicy = append(st.DeniedByPolicy, PolicyDenied{Decider: c.Decider.String(), Tier: c.Tier, Policy: c.Policy, Packets: v})
	}
	slices.SortFunc(st.DeniedByEndpoint, func(a, b EndpointDenied) int { return cmp.Compare(a.Endpoint, b.Endpoint) })
	slices.SortFunc(st.DeniedByPolicy, func(a, b PolicyDenied) int {
		return cmp.Or(cmp.Compare(a.Tier, b.Tier), cmp.Compare(a.Policy, b.Policy), cmp.Compare(a.Decider, b.Decider))
	})
	return st
}

// PolicyStats is a copy of network policy's counters.
type PolicyStats = api.PolicyStats

// EndpointDenied counts the packets denied at one endpoint.
type EndpointDenied = api.EndpointDenied

// PolicyDenied counts the packets one policy, profile or end denied.
type PolicyDenied = api.PolicyDenied

// isNode says whether a is one of the node's own addresses.
func (w *worker) isNode(a uint32) bool { return w.r.isNode(a) }

func (r *Router) isNode(a uint32) bool {
	return a == r.nodeAddr || (a != 0 && a == r.tunnel.Load())
}

// policyAllows enforces the installed policy on a packet being forwarded
// from o to nh (a local pod, another node or the host). Packets between
// endpoints no policy decides for take no flow lookup: the answer comes
// from the state's port table alone.
func (w *worker) policyAllows(ps *policyState, o origin, nh *fib.NextHop, ip header.IPv4) bool {
	src, dst, fromNode, decide := w.r.policyEnds(ps, w.tab, w.ports, o, w.from, ip.SrcU32(), nh)
	if !decide {
		return true
	}
	return w.conntrack(ps, o, src, dst, fromNode, nh.Kind == fib.KindHost, ip)
}

// policyEnds finds the endpoints whose policy may decide a packet from
// address srcAddr, come in as o (from is its pod port when o is fromPod),
// routed to nh: the source's, the destination's, and whether it is the
// node's own. decide is false when policy has nothing to say: neither end
// is subject, or the route drops the packet anyway. The packet path and
// Trace both call it, so a trace answers as the packet path decides.
func (r *Router) policyEnds(ps *policyState, tab *fib.Table, ports []*Port, o origin, from *Port, srcAddr uint32, nh *fib.NextHop) (src, dst *portPolicy, fromNode, decide bool) {
	switch nh.Kind {
	case fib.KindLocal:
		dst = ps.port(nh.Port, ports)
	case fib.KindRemote, fib.KindHost:
	default:
		return nil, nil, false, false // dropped for its route anyway
	}
	switch o {
	case fromPod:
		if from != nil {
			src = ps.port(from.ID, ports)
		}
	case fromHost:
		// The node's own traffic, or what its kernel forwarded: a local
		// pod's packet after a Service's DNAT is judged for the pod's
		// egress here.
		if r.isNode(srcAddr) {
			fromNode = true
		} else if snh := tab.Lookup(srcAddr); snh != nil && snh.Kind == fib.KindLocal {
			src = ps.port(snh.Port, ports)
		}
	}
	return src, dst, fromNode, src != nil || dst != nil
}

// policyChecks says which sides evaluate a flow's first packet to dstAddr:
// the source's egress, then the destination's ingress, each when policy
// decides there. The node's own packets to its pods are allowed (kubelet's
// probes), as Calico allows them; a pod's packet to a Service address
// through the host is not judged for egress here but once translated.
func (ps *policyState) policyChecks(dstAddr uint32, src, dst *portPolicy, fromNode, toHost bool) (egress, ingress bool) {
	if fromNode {
		return false, false
	}
	egress = src != nil && src.out && !(toHost && len(ps.svc) > 0 && ps.service(dstAddr))
	ingress = dst != nil && dst.in
	return egress, ingress
}

// policyPacket is what policy evaluates of the packet with key k.
func policyPacket(k flow.Key, typ, code uint8) policy.Packet {
	pk := policy.Packet{Src: k.Src, Dst: k.Dst, Proto: k.Proto}
	if k.Proto == header.ProtocolICMP {
		pk.ICMPType, pk.ICMPCode = typ, code
	} else {
		pk.SrcPort, pk.DstPort = k.SrcPort, k.DstPort
	}
	return pk
}

// conntrack finds the packet's flow, or judges its first packet and
// records the verdict. Later packets of a flow ride its entry; replies (the
// reversed key) of an allowed flow pass; ICMP errors quoting a packet of an
// allowed flow, and fragments between the addresses of an allowed flow,
// pass. A flow judged under an older generation is judged again.
func (w *worker) conntrack(ps *policyState, o origin, src, dst *portPolicy, fromNode, toHost bool, ip header.IPv4) bool {
	t := w.r.flows
	p := flow.Parse(ip)
	typ, code := icmpTypeCode(ip)
	switch p.Kind {
	case flow.Plain:
		m := ctMemo{set: true, key: p.Key, tcp: p.TCP & memoTCPFlags, src: src, dst: dst, fromNode: fromNode, toHost: toHost}
		if m == w.ct {
			return true // as the packet before it, in this batch
		}
		if _, v, ok := t.Seen(p.Key, false, p.TCP, w.now); ok && v.Flags != 0 {
			if v.Gen == ps.gen {
				if v.Flags == flow.PolicyAllowed {
					w.remember(m)
				}
				return w.cached(ps, v, src, dst)
			}
			return w.judge(ps, p.Key, typ, code, src, dst, fromNode, toHost, p.TCP)
		}
		rk := p.Key.Reverse()
		if _, v, ok := t.Seen(rk, true, p.TCP, w.now); ok && v.Flags == flow.PolicyAllowed {
			if v.Gen == ps.gen {
				w.remember(m)
				return true
			}
			// A reply of a flow allowed under an older state: judge the
			// flow's own direction again (an echo reply's flow began
			// with an echo request).
			if typ == header.ICMPEchoReply {
				typ = header.ICMPEcho
			}
			return w.judge(ps, rk, typ, code, dst, src, w.isNode(rk.Src), o == fromHost, 0)
		}
		return w.judge(ps, p.Key, typ, code, src, dst, fromNode, toHost, p.TCP)
	case flow.Fragment, flow.Related:
		// An ICMP error's key is the quoted packet's, which was sent the
		// other way by one side or the other; a fragment's is by addresses.
		if f, ok := t.Lookup(p.Key, w.now); ok && f&flow.PolicyAllowed != 0 {
			return true
		}
		if f, ok := t.Lookup(p.Key.Reverse(), w.now); ok && f&flow.PolicyAllowed != 0 {
			return true
		}
	}
	// No allowed flow: judged as it stands, and not recorded (an error
	// or a fragment starts no flow).
	k := flow.Key{Src: ip.SrcU32(), Dst: ip.DstU32(), Proto: ip.Protocol()}
	v := w.verdict(ps, k, typ, code, src, dst, fromNode, toHost)
	if v.Flags == flow.PolicyDenied {
		w.denied(ps, v.Tag, src, dst)
		return false
	}
	return true
}

// ctMemo is the last packet conntrack let pass on its flow's entry in
// the flow table, in the current batch (reset by begin, with the policy
// state and the time): a packet like it (same flow, direction and
// endpoints, same TCP flags of those the table reads) would find the
// entry as that packet left it and pass the same way, and Seen again with
// the batch's time would change nothing, so it passes without the table:
// the segments of a superframe take one lookup, not one each. What
// another worker changes in the entry meanwhile (a reply that completes
// the handshake) the next batch's first packet sees. A TCP packet with
// SYN, FIN or RST, which moves a flow's state, is never remembered; nor
// is a denied one, which is counted each time.
type ctMemo struct {
	set              bool
	key              flow.Key
	tcp              uint8
	src, dst         *portPolicy
	fromNode, toHost bool
}

// memoTCPFlags are the TCP flags the flow table reads (PSH is not).
const memoTCPFlags = flow.TCPSyn | flow.TCPFin | flow.TCPRst | flow.TCPAck

// remember keeps m as the last packet passed (see ctMemo).
func (w *worker) remember(m ctMemo) {
	if m.tcp&(flow.TCPSyn|flow.TCPFin|flow.TCPRst) == 0 {
		w.ct = m
	}
}

// judge decides flow k, records the verdict in the flow table and says
// whether the packet passes. A non-TCP flow's verdict is also recorded by
// addresses, for its fragments, when allowed.
func (w *worker) judge(ps *policyState, k flow.Key, typ, code uint8, src, dst *portPolicy, fromNode, toHost bool, tcp uint8) bool {
	v := w.verdict(ps, k, typ, code, src, dst, fromNode, toHost)
	t := w.r.flows
	t.SetVerdict(k, v, tcp, w.now)
	if v.Flags == flow.PolicyDenied {
		w.denied(ps, v.Tag, src, dst)
		return false
	}
	if k.Proto != header.ProtocolTCP {
		t.SetVerdict(k.Addrs(), v, 0, w.now)
	}
	return true
}

// Tag bits: which side denied, then the deciding counter.
const tagIngress = 1

// verdict evaluates the packet with key k (and ICMP type and code) on the
// sides policyChecks names, egress first.
func (w *worker) verdict(ps *policyState, k flow.Key, typ, code uint8, src, dst *portPolicy, fromNode, toHost bool) flow.Verdict {
	v := flow.Verdict{Flags: flow.PolicyAllowed, Gen: ps.gen}
	egress, ingress := ps.policyChecks(k.Dst, src, dst, fromNode, toHost)
	if !egress && !ingress {
		return v
	}
	pk := policyPacket(k, typ, code)
	if egress {
		d := ps.set.Evaluate(int(src.ep), policy.Egress, &pk)
		w.logVerdict(ps, src.ep, policy.Egress, k, &d)
		if d.Action != policy.Allow {
			return flow.Verdict{Flags: flow.PolicyDenied, Gen: ps.gen, Tag: uint32(d.Counter) << 1}
		}
	}
	if ingress {
		d := ps.set.Evaluate(int(dst.ep), policy.Ingress, &pk)
		w.logVerdict(ps, dst.ep, policy.Ingress, k, &d)
		if d.Action != policy.Allow {
			return flow.Verdict{Flags: flow.PolicyDenied, Gen: ps.gen, Tag: uint32(d.Counter)<<1 | tagIngress}
		}
	}
	return v
}

// cached applies a verdict of the current generation.
func (w *worker) cached(ps *policyState, v flow.Verdict, src, dst *portPolicy) bool {
	if v.Flags == flow.PolicyAllowed {
		return true
	}
	w.denied(ps, v.Tag, src, dst)
	return false
}

// denied counts a denied packet: its drop reason, the endpoint whose
// policy denied it and what decided.
func (w *worker) denied(ps *policyState, tag uint32, src, dst *portPolicy) {
	w.drop(DropPolicyDenied)
	e := src
	if tag&tagIngress != 0 {
		e = dst
	}
	if e != nil && int(e.ep) < len(ps.deniedEP) {
		ps.deniedEP[e.ep].Add(1)
	}
	if c := int(tag >> 1); c < len(ps.deniedBy) {
		ps.deniedBy[c].Add(1)
	}
}

// icmpTypeCode reads an ICMP packet's type and code (zero otherwise).
func icmpTypeCode(ip header.IPv4) (uint8, uint8) {
	if ip.Protocol() != header.ProtocolICMP || !ip.IsFirstFragment() {
		return 0, 0
	}
	p := ip.Payload()
	if len(p) < 2 {
		return 0, 0
	}
	return p[0], p[1]
}

// policyLog is one Log rule match, queued for the logging goroutine.
type policyLog struct {
	set *policy.Set
	ep  int32
	dir policy.Direction
	key flow.Key
	v   policy.Verdict
}

// logVerdict queues a verdict that a Log rule marked; the queue is bounded
// and a full one drops (and counts) the record, so the packet path never
// waits or allocates for logging.
func (w *worker) logVerdict(ps *policyState, ep int32, dir policy.Direction, k flow.Key, d *policy.Verdict) {
	if !d.Logged {
		return
	}
	select {
	case w.r.polLog <- policyLog{set: ps.set, ep: ep, dir: dir, key: k, v: *d}:
	default:
		w.r.polLogDropped.Add(1)
	}
}

// spawnPolicyLog starts the goroutine that writes Log rule records, at
// most PolicyLogRate a second (PolicyLogBurst at once); the rest are
// counted as dropped. It ends when the router closes.
func (r *Router) spawnPolicyLog() {
	b := newBucket(r.cfg.PolicyLogRate, r.cfg.PolicyLogBurst)
	go func() {
		for {
			select {
			case <-r.polLogDone:
				return
			case l := <-r.polLog:
				if !b.allow(time.Now().UnixNano()) {
					r.polLogDropped.Add(1)
					continue
				}
				r.polLogged.Add(1)
				r.log.Info("policy log",
					zap.String("endpoint", l.set.Key(int(l.ep))), zap.Stringer("direction", l.dir),
					zap.String("action", string(l.v.Action)), zap.Stringer("decider", l.v.Decider),
					zap.String("tier", l.v.Tier), zap.String("policy", l.v.Policy), zap.Int("rule", l.v.Rule),
					zap.Uint8("protocol", l.key.Proto), zap.Stringer("src", addrOf(l.key.Src)), zap.Uint16("srcPort", l.key.SrcPort),
					zap.Stringer("dst", addrOf(l.key.Dst)), zap.Uint16("dstPort", l.key.DstPort))
			}
		}
	}()
}

func addrOf(a uint32) netip.Addr {
	return netip.AddrFrom4([4]byte{byte(a >> 24), byte(a >> 16), byte(a >> 8), byte(a)})
}
