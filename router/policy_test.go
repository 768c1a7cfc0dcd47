package router

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/tortie-net/tortie/flow"
	"github.com/tortie-net/tortie/header"
	"github.com/tortie-net/tortie/internal/testutil"
	"github.com/tortie-net/tortie/policy"
	"github.com/tortie-net/tortie/router/routertest"
)

// tcp4 builds an IPv4 TCP segment with flags.
func tcp4(src [4]byte, sport uint16, dst [4]byte, dport uint16, flags uint8) []byte {
	b := pkt{src: src, dst: dst, proto: header.ProtocolTCP, payload: 20}.ip()
	binary.BigEndian.PutUint16(b[20:], sport)
	binary.BigEndian.PutUint16(b[22:], dport)
	b[32], b[33] = 0x50, flags
	return b
}

const (
	syn    = header.TCPFlagSYN
	synAck = header.TCPFlagSYN | header.TCPFlagACK
	ack    = header.TCPFlagACK
)

// icmpError4 builds an ICMP destination unreachable from src to dst quoting
// the packet orig.
func icmpError4(src, dst [4]byte, orig []byte) []byte {
	b := pkt{src: src, dst: dst, proto: header.ProtocolICMP, payload: 8 + 28}.ip()
	copy(b[28:], orig[:28])
	header.ICMP(b[20:]).EncodeError(header.ICMPDestUnreach, 3, 0)
	return b
}

// fromPodPkts processes IPv4 packets as frames read from port p in one batch.
func (h *harness) fromPodPkts(p *Port, pkts ...[]byte) {
	h.w.begin()
	for i, ip := range pkts {
		n := copy(h.w.bufs[i][Headroom:], eth(header.EtherTypeIPv4, ip))
		h.w.fromPod(p, h.w.bufs[i], Headroom, Headroom+n)
	}
	h.w.flush()
}

// endpoints is the policy view of the harness: pods A and B local, the
// VXLAN peer's pod remote.
func endpoints() []policy.Endpoint {
	ep := func(key, app string, a [4]byte, local bool) policy.Endpoint {
		return policy.Endpoint{Key: key, Namespace: "ns", Labels: map[string]string{"app": app}, IP: netip.AddrFrom4(a), Local: local}
	}
	return []policy.Endpoint{ep("ns/a", "a", podA, true), ep("ns/b", "b", podB, true), ep("ns/v", "v", remoteV, false)}
}

func compilePolicy(t testing.TB, pols ...policy.Policy) *policy.Set {
	t.Helper()
	s, err := policy.Compile(&policy.Inputs{Endpoints: endpoints(), GlobalNetworkPolicies: pols})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func tcpPorts(ps ...uint16) []policy.Port {
	var out []policy.Port
	for _, p := range ps {
		out = append(out, policy.Port{Min: p, Max: p})
	}
	return out
}

// bIsolated: B takes TCP 80 from A only (22 denied by rule, from anyone),
// and may start nothing (egress selected, no rule).
func bIsolated(t testing.TB) *policy.Set {
	return compilePolicy(t,
		policy.Policy{Name: "b-in", Selector: "app == 'b'", Types: []policy.Direction{policy.Ingress}, Ingress: []policy.Rule{
			{Action: policy.Deny, Protocol: "TCP", Destination: policy.Entity{Ports: tcpPorts(22)}},
			{Action: policy.Allow, Protocol: "TCP", Source: policy.Entity{Selector: "app == 'a'"}, Destination: policy.Entity{Ports: tcpPorts(80)}},
		}},
		policy.Policy{Name: "b-out", Selector: "app == 'b'", Types: []policy.Direction{policy.Egress}})
}

func (h *harness) setPolicy(s *policy.Set, svc ...netip.Prefix) {
	h.t.Helper()
	if err := h.r.SetPolicy(Policy{Set: s, ServiceNets: svc}); err != nil {
		h.t.Fatal(err)
	}
}

// deniedBy is the denied count of one endpoint and of one policy (by
// name, or a tier's end when policy is empty).
func (h *harness) deniedBy(ep, tier, pol string) (uint64, uint64) {
	st := h.r.Stats().Policy
	var e, p uint64
	for _, d := range st.DeniedByEndpoint {
		if d.Endpoint == ep {
			e = d.Packets
		}
	}
	for _, d := range st.DeniedByPolicy {
		if d.Tier == tier && d.Policy == pol {
			p = d.Packets
		}
	}
	return e, p
}

func (h *harness) expect(what string, got, n int) {
	h.t.Helper()
	if got != n {
		h.t.Fatalf("%s: %d packets delivered, want %d (drops %v)", what, got, n, h.drops())
	}
}

// TestPolicyConnection: an allowed connection's replies pass although B
// may start nothing; B's own new connection, a SYN to a port no rule
// allows and one a rule denies are dropped and counted per reason,
// endpoint and policy.
func TestPolicyConnection(t *testing.T) {
	h := newHarness(t)
	h.setPolicy(bIsolated(t))
	h.fromPodPkts(h.pA, tcp4(podA, 40000, podB, 80, syn))
	h.expect("A's SYN to B:80", len(h.devB.Take()), 1)
	h.fromPodPkts(h.pB, tcp4(podB, 80, podA, 40000, synAck))
	h.expect("B's SYN-ACK (a reply, no rule for it)", len(h.devA.Take()), 1)
	h.fromPodPkts(h.pA, tcp4(podA, 40000, podB, 80, ack), tcp4(podA, 40000, podB, 80, ack))
	h.expect("A's later segments", len(h.devB.Take()), 2)
	h.fromPodPkts(h.pB, tcp4(podB, 80, podA, 40000, ack))
	h.expect("B's later segments", len(h.devA.Take()), 1)

	// B starts a connection: its egress denies (end of the default tier).
	h.fromPodPkts(h.pB, tcp4(podB, 5000, podA, 80, syn), tcp4(podB, 5000, podA, 80, syn))
	h.expect("B's own SYN and its retransmission", len(h.devA.Take()), 0)
	if e, p := h.deniedBy("ns/b", policy.DefaultTier, ""); e != 2 || p != 2 {
		t.Fatalf("B's egress denials: endpoint %d, end of tier %d; want 2 and 2", e, p)
	}
	// The remote pod to B:81: no rule allows it; to B:22: b-in denies.
	h.fromVXLANPkt(tcp4(remoteV, 40000, podB, 81, syn))
	h.fromVXLANPkt(tcp4(remoteV, 40001, podB, 22, syn))
	h.fromVXLANPkt(tcp4(remoteV, 40001, podB, 22, syn))
	h.expect("remote SYNs to B", len(h.devB.Take()), 0)
	if e, p := h.deniedBy("ns/b", policy.DefaultTier, "b-in"); e != 5 || p != 2 {
		t.Fatalf("denials: endpoint B %d, b-in %d; want 5 and 2", e, p)
	}
	if n := h.r.Drops(DropPolicyDenied); n != 5 {
		t.Fatalf("policy_denied %d, want 5", n)
	}
	// A's reply ... to a connection B never had: denied as a new flow at
	// B's ingress (the remote SYN to 81 was never allowed).
	h.fromPodPkts(h.pA, tcp4(podA, 81, podB, 40000, synAck))
	h.expect("a reply to a denied flow", len(h.devB.Take()), 0)
	if st := h.r.Stats().Policy; st.Generation == 0 || st.Subject != 1 {
		t.Fatalf("policy stats %+v: want a generation and one subject endpoint", st)
	}
}

// TestPolicyICMPError: an ICMP error about a packet of an allowed flow
// passes with it, from either end; one about no flow is judged as itself.
func TestPolicyICMPError(t *testing.T) {
	h := newHarness(t)
	h.setPolicy(bIsolated(t))
	req := tcp4(podA, 40000, podB, 80, syn)
	h.fromPodPkts(h.pA, req)
	h.expect("A's SYN", len(h.devB.Take()), 1)
	// B answers with a port unreachable: B may start nothing, yet it passes.
	h.fromPodPkts(h.pB, icmpError4(podB, podA, req))
	h.expect("B's ICMP error about A's SYN", len(h.devA.Take()), 1)
	// A's error about B's reply: its key is the reply's, reversed.
	h.fromPodPkts(h.pA, icmpError4(podA, podB, tcp4(podB, 80, podA, 40000, synAck)))
	h.expect("A's ICMP error about B's reply", len(h.devB.Take()), 1)
	// About a flow that does not exist: B's egress denies it.
	h.fromPodPkts(h.pB, icmpError4(podB, podA, tcp4(podA, 1, podB, 2, syn)))
	h.expect("an unrelated ICMP error", len(h.devA.Take()), 0)
	if h.r.Drops(DropPolicyDenied) != 1 {
		t.Fatalf("drops %v", h.drops())
	}
}

// TestPolicyChange: after a new Set is installed, a new connection follows
// it and an existing flow is judged again on its next packet, in either
// direction.
func TestPolicyChange(t *testing.T) {
	h := newHarness(t)
	h.setPolicy(bIsolated(t))
	h.fromPodPkts(h.pA, tcp4(podA, 40000, podB, 80, syn))
	h.fromPodPkts(h.pB, tcp4(podB, 80, podA, 40000, synAck))
	h.fromPodPkts(h.pA, tcp4(podA, 40001, podB, 80, syn))
	h.fromPodPkts(h.pA, tcp4(podA, 40002, podB, 8080, syn))
	h.expect("before the change", len(h.devB.Take()), 2)
	h.devA.Take()
	gen := h.r.Stats().Policy.Generation

	// Now B takes 8080 from A, and no longer 80.
	h.setPolicy(compilePolicy(t, policy.Policy{Name: "b-in2", Selector: "app == 'b'", Types: []policy.Direction{policy.Ingress},
		Ingress: []policy.Rule{{Action: policy.Allow, Protocol: "TCP", Source: policy.Entity{Selector: "app == 'a'"}, Destination: policy.Entity{Ports: tcpPorts(8080)}}}}))
	if g := h.r.Stats().Policy.Generation; g != gen+1 {
		t.Fatalf("generation %d after %d", g, gen)
	}
	h.fromPodPkts(h.pA, tcp4(podA, 40003, podB, 80, syn))
	h.expect("a new connection to 80", len(h.devB.Take()), 0)
	h.fromPodPkts(h.pA, tcp4(podA, 40000, podB, 80, ack))
	h.expect("the established flow to 80, judged again", len(h.devB.Take()), 0)
	// The other flow to 80 is judged again from its reply's side: B's
	// egress is no longer selected, but the flow is no longer allowed.
	h.fromPodPkts(h.pB, tcp4(podB, 80, podA, 40001, synAck))
	h.fromPodPkts(h.pA, tcp4(podA, 40001, podB, 80, ack))
	h.expect("the other flow to 80", len(h.devB.Take()), 0)
	h.fromPodPkts(h.pA, tcp4(podA, 40002, podB, 8080, syn))
	h.expect("the flow to 8080, denied before", len(h.devB.Take()), 1)
	h.fromPodPkts(h.pA, tcp4(podA, 40004, podB, 8080, syn))
	h.expect("a new connection to 8080", len(h.devB.Take()), 1)
	// Counters of the first Set are kept by name: 8080 once before the
	// change; after it the new SYN, the flow to 80 judged again, the
	// other judged from its reply and its next segment.
	if _, p := h.deniedBy("ns/b", policy.DefaultTier, ""); p != 5 {
		t.Fatalf("end of tier denials %d over both Sets, want 5", p)
	}
}

// TestPolicyBatchMemo: segments of an allowed flow in one batch pass on
// the first one's lookup (ctMemo), and a batch after a policy change
// judges them again: each is denied and counted.
func TestPolicyBatchMemo(t *testing.T) {
	h := newHarness(t)
	h.setPolicy(bIsolated(t))
	h.fromPodPkts(h.pA, tcp4(podA, 40000, podB, 80, syn))
	h.fromPodPkts(h.pB, tcp4(podB, 80, podA, 40000, synAck))
	h.fromPodPkts(h.pB, tcp4(podB, 80, podA, 40000, ack), tcp4(podB, 80, podA, 40000, ack))
	h.expect("the replies in one batch", len(h.devA.Take()), 3)
	seg := func() []byte { return tcp4(podA, 40000, podB, 80, ack) }
	h.fromPodPkts(h.pA, seg(), seg(), seg())
	h.expect("the flow's segments in one batch", len(h.devB.Take()), 4)
	// The next batch's first segment takes the table again: the flow's
	// timeout starts again.
	expires := func() int64 {
		flows, _ := h.r.flows.Snapshot(100, flow.Now())
		for _, f := range flows {
			if f.Key == (flow.Key{Src: binary.BigEndian.Uint32(podA[:]), Dst: binary.BigEndian.Uint32(podB[:]), SrcPort: 40000, DstPort: 80, Proto: header.ProtocolTCP}) {
				return f.Expires
			}
		}
		t.Fatal("the flow is not in the table")
		return 0
	}
	was := expires()
	for now := flow.Now(); flow.Now() == now; {
	}
	h.fromPodPkts(h.pA, seg())
	h.expect("a segment in the next batch", len(h.devB.Take()), 1)
	if e := expires(); e <= was {
		t.Fatalf("the flow expires at %d after a later batch, %d before: its timeout did not start again", e, was)
	}

	h.setPolicy(compilePolicy(t, policy.Policy{Name: "b-in2", Selector: "app == 'b'", Types: []policy.Direction{policy.Ingress}}))
	h.fromPodPkts(h.pA, seg(), seg(), seg())
	h.expect("the flow's segments after the change", len(h.devB.Take()), 0)
	if n := h.r.Drops(DropPolicyDenied); n != 3 {
		t.Fatalf("policy_denied %d, want 3", n)
	}
	// FIN still moves the flow on, after segments that passed on the memo.
	h.setPolicy(bIsolated(t))
	h.fromPodPkts(h.pA, tcp4(podA, 40001, podB, 80, syn))
	h.fromPodPkts(h.pB, tcp4(podB, 80, podA, 40001, synAck))
	h.fromPodPkts(h.pA, tcp4(podA, 40001, podB, 80, ack), tcp4(podA, 40001, podB, 80, ack|header.TCPFlagPSH), tcp4(podA, 40001, podB, 80, ack|header.TCPFlagFIN))
	h.expect("segments and FIN", len(h.devB.Take()), 4)
	flows, _ := h.r.flows.Snapshot(100, flow.Now())
	var state string
	for _, f := range flows {
		if f.Key.SrcPort == 40001 && f.Key.DstPort == 80 {
			state = f.State
		}
	}
	if state != "closing" {
		t.Fatalf("flow after FIN is %q, want closing", state)
	}
}

// TestPolicyFromHost: the node's own packets reach a pod whatever its
// policy (kubelet's probes), and the pod's replies return; a packet the
// node forwarded from elsewhere is judged.
func TestPolicyFromHost(t *testing.T) {
	h := newHarness(t)
	h.setPolicy(bIsolated(t))
	h.fromHostPkts(tcp4(nodeA, 50000, podB, 8080, syn))
	h.expect("the node's probe", len(h.devB.Take()), 1)
	h.fromPodPkts(h.pB, tcp4(podB, 8080, nodeA, 50000, synAck))
	h.expect("B's answer to the node", len(h.host.Take()), 1)
	h.fromHostPkts(tcp4(remoteN, 50000, podB, 8080, syn))
	h.expect("a natively routed pod's SYN through the host", len(h.devB.Take()), 0)
	if h.r.Drops(DropPolicyDenied) != 1 {
		t.Fatalf("drops %v", h.drops())
	}
}

// TestPolicyServiceNets: A's packet to a Service address goes to the host
// unjudged; the translated packet the host hands back is judged at A's
// egress with the backend's address.
func TestPolicyServiceNets(t *testing.T) {
	h := newHarness(t)
	clusterIP := [4]byte{10, 0, 0, 200}
	aOut := policy.Policy{Name: "a-out", Selector: "app == 'a'", Types: []policy.Direction{policy.Egress}, Egress: []policy.Rule{
		{Action: policy.Allow, Protocol: "TCP", Destination: policy.Entity{Selector: "app == 'b'", Ports: tcpPorts(80)}}}}
	h.setPolicy(compilePolicy(t, aOut), netip.MustParsePrefix("10.0.0.128/25"))
	h.fromPodPkts(h.pA, tcp4(podA, 40000, clusterIP, 80, syn), tcp4(podA, 40001, clusterIP, 81, syn))
	h.expect("A's SYNs to the cluster IP", len(h.host.Take()), 2)
	h.fromHostPkts(tcp4(podA, 40000, podB, 80, syn), tcp4(podA, 40001, podB, 81, syn))
	h.expect("the translated SYNs", len(h.devB.Take()), 1)
	// The de-translated reply, from the cluster IP: a reply of A's flow.
	h.fromHostPkts(tcp4(clusterIP, 80, podA, 40000, synAck))
	h.expect("the reply from the cluster IP", len(h.devA.Take()), 1)
	// Without Service nets, A's egress sees the cluster IP.
	h.setPolicy(compilePolicy(t, aOut))
	h.fromPodPkts(h.pA, tcp4(podA, 40002, clusterIP, 80, syn))
	h.expect("A's SYN to the cluster IP, judged as is", len(h.host.Take()), 0)
	if err := h.r.SetPolicy(Policy{Set: compilePolicy(t), ServiceNets: []netip.Prefix{{}}}); err == nil {
		t.Fatal("an invalid service net was taken")
	}
}

// TestPolicyNotSubject: with no Set, or a Set that decides for neither
// end, packets take no flow lookup and nothing is recorded.
func TestPolicyNotSubject(t *testing.T) {
	h := newHarness(t)
	send := func() {
		h.fromPodPkts(h.pA, tcp4(podA, 40000, podB, 22, syn), udp4(podA, 1, remoteV, 2))
		h.fromVXLANPkt(tcp4(remoteV, 1, podA, 22, syn))
		h.expect("to B", len(h.devB.Take()), 1)
		h.expect("to A", len(h.devA.Take()), 1)
		h.expect("to V", len(h.u.Take()), 1)
	}
	send()
	// A policy for the remote pod only: nothing local is subject.
	h.setPolicy(compilePolicy(t, policy.Policy{Name: "v-in", Selector: "app == 'v'", Ingress: []policy.Rule{{Action: policy.Deny}}}))
	send()
	if st := h.r.Stats(); st.Flows.Inserts != 0 || st.Policy.Subject != 0 {
		t.Fatalf("flows %+v, policy %+v: nothing should be tracked", st.Flows, st.Policy)
	}
	// A port attached with a key the Set does not know, or none: not subject.
	h.setPolicy(bIsolated(t))
	if st := h.r.Stats().Policy; st.Subject != 1 {
		t.Fatalf("subject %d, want B only", st.Subject)
	}
	h.setPolicy(nil)
	send()
	if st := h.r.Stats().Policy; st.Generation != 0 {
		t.Fatalf("policy stats %+v after removing the Set", st)
	}
}

// TestPolicyPortsFollow: a port added after the Set is enforced, and a
// removed port's ID reused by another pod does not inherit its endpoint.
func TestPolicyPortsFollow(t *testing.T) {
	h := newHarness(t)
	h.setPolicy(bIsolated(t))
	if err := h.r.RemovePort(h.pB); err != nil {
		t.Fatal(err)
	}
	devC := routertest.NewDevice()
	pC, err := h.r.AddPort(PortConfig{Name: "c", Addr: netip.AddrFrom4(podB), MAC: macB, PolicyKey: "ns/c"}, devC)
	if err != nil {
		t.Fatal(err)
	}
	if pC.ID != h.pB.ID {
		t.Fatalf("port ID %d not reused (%d)", pC.ID, h.pB.ID)
	}
	h.fromPodPkts(h.pA, tcp4(podA, 40000, podB, 22, syn))
	h.expect("to the new pod at B's address and port ID", len(devC.Take()), 1)
	if err := h.r.RemovePort(pC); err != nil {
		t.Fatal(err)
	}
	if h.pB, err = h.r.AddPort(PortConfig{Name: "b", Addr: netip.AddrFrom4(podB), MAC: macB, PolicyKey: "ns/b"}, h.devB); err != nil {
		t.Fatal(err)
	}
	h.fromPodPkts(h.pA, tcp4(podA, 40001, podB, 22, syn))
	h.expect("to B again", len(h.devB.Take()), 0)
}

// TestPolicyPathAllocatesNothing: with policy in force, a flow's first
// packet (judged at both ends, recorded) and an established flow's packets
// allocate nothing; nor does a Log rule's record.
func TestPolicyPathAllocatesNothing(t *testing.T) {
	h := newHarness(t)
	h.u.Discard, h.devB.Discard, h.devA.Discard, h.host.Discard = true, true, true, true
	s := compilePolicy(t,
		policy.Policy{Name: "b-in", Selector: "app == 'b'", Ingress: []policy.Rule{{Action: policy.Log}, {Action: policy.Allow, Protocol: "TCP"}}},
		policy.Policy{Name: "a-out", Selector: "app == 'a'", Types: []policy.Direction{policy.Egress}, Egress: []policy.Rule{{Action: policy.Allow}}})
	h.setPolicy(s)
	first := eth(header.EtherTypeIPv4, tcp4(podA, 1, podB, 80, syn))
	est := eth(header.EtherTypeIPv4, tcp4(podA, 2, podB, 80, ack))
	sport := uint16(1000)
	run := func(f []byte, vary bool) {
		h.w.begin()
		n := copy(h.w.bufs[0][Headroom:], f)
		if vary {
			sport++
			binary.BigEndian.PutUint16(h.w.bufs[0][Headroom+14+20:], sport)
		}
		h.w.fromPod(h.pA, h.w.bufs[0], Headroom, Headroom+n)
		h.w.flush()
	}
	run(est, false)
	run(first, true)
	if n := testing.AllocsPerRun(500, func() { run(first, true) }); n != 0 {
		t.Fatalf("%v allocations per first packet", n)
	}
	if n := testing.AllocsPerRun(500, func() { run(est, false) }); n != 0 {
		t.Fatalf("%v allocations per packet of an established flow", n)
	}
	if st := h.r.Stats(); st.Flows.Inserts < 500 || st.Drops["policy_denied"] != 0 {
		t.Fatalf("flows %+v, drops %v: every first packet should be judged, none denied", st.Flows, st.Drops)
	}
}

// BenchmarkPolicy gives the cost per packet of a flow's first packet
// (judged at A's egress and B's ingress, recorded) and of an established
// flow's (one flow table hit), with n rules ahead of the one that allows.
func BenchmarkPolicy(b *testing.B) {
	// The same packet with no Set installed, for comparison.
	b.Run("none", func(b *testing.B) {
		h := newHarness(b)
		h.u.Discard, h.devB.Discard, h.devA.Discard, h.host.Discard = true, true, true, true
		f := eth(header.EtherTypeIPv4, tcp4(podA, 1, podB, 80, ack))
		buf := h.w.bufs[0]
		b.ReportAllocs()
		h.w.begin()
		for b.Loop() {
			m := copy(buf[Headroom:], f)
			h.w.fromPod(h.pA, buf, Headroom, Headroom+m)
			h.w.flush()
		}
	})
	for _, n := range []int{10, 100, 1000} {
		var rules []policy.Rule
		for i := range n {
			rules = append(rules, policy.Rule{Action: policy.Deny, Protocol: "UDP", Source: policy.Entity{
				Nets: []string{fmt.Sprintf("172.%d.%d.0/24", 16+i%16, i%256)}}, Destination: policy.Entity{Ports: tcpPorts(uint16(1000 + i))}})
		}
		rules = append(rules, policy.Rule{Action: policy.Allow, Protocol: "TCP", Source: policy.Entity{Selector: "app == 'a'"}})
		// first: a new flow each packet; established: a packet of an
		// allowed flow, each in a batch of its own (a flow table
		// lookup); batched: the same, all in one batch (ctMemo).
		for _, kind := range []string{"first", "established", "batched"} {
			b.Run(fmt.Sprintf("rules=%d/%s", n, kind), func(b *testing.B) {
				h := newHarness(b)
				h.u.Discard, h.devB.Discard, h.devA.Discard, h.host.Discard = true, true, true, true
				h.setPolicy(compilePolicy(b, policy.Policy{Name: "b-in", Selector: "app == 'b'", Ingress: rules},
					policy.Policy{Name: "a-out", Selector: "app == 'a'", Types: []policy.Direction{policy.Egress}, Egress: rules}))
				f := eth(header.EtherTypeIPv4, tcp4(podA, 1, podB, 80, ack))
				buf := h.w.bufs[0]
				// Each "first" packet is a flow of its own: source and
				// destination ports together, as a source port alone
				// would come round again after 65,536 packets, and its
				// flow would be in the table still.
				var flows uint32
				b.ReportAllocs()
				h.w.begin()
				for b.Loop() {
					if kind != "batched" {
						h.w.begin()
					}
					m := copy(buf[Headroom:], f)
					if kind == "first" {
						flows++
						binary.BigEndian.PutUint16(buf[Headroom+14+20:], uint16(flows))
						binary.BigEndian.PutUint16(buf[Headroom+14+22:], uint16(1024+flows>>16))
					}
					h.w.fromPod(h.pA, buf, Headroom, Headroom+m)
					h.w.flush()
				}
				if h.r.Drops(DropPolicyDenied) != 0 {
					b.Fatalf("drops %v", h.drops())
				}
			})
		}
	}
}

// TestPolicyLog: a Log rule's match is written by the logger with what
// decided and the flow, within the rate; the rest are counted as dropped.
func TestPolicyLog(t *testing.T) {
	core, logs := observer.New(zap.InfoLevel)
	h := newHarness(t)
	h.r.cfg.PolicyLogRate, h.r.cfg.PolicyLogBurst = 0.001, 2 // read when the logger starts
	h.r.log = zap.New(core)
	h.setPolicy(compilePolicy(t, policy.Policy{Name: "b-in", Selector: "app == 'b'",
		Ingress: []policy.Rule{{Action: policy.Log, Protocol: "TCP"}, {Action: policy.Allow}}}))
	for i := range 5 {
		h.fromPodPkts(h.pA, tcp4(podA, uint16(40000+i), podB, 80, syn))
	}
	h.expect("logged SYNs", len(h.devB.Take()), 5)
	testutil.WaitFor(t, 30*time.Second, "five log records handled", func() bool {
		st := h.r.Stats().Policy
		return st.Logged+st.LogsDropped == 5
	})
	if st := h.r.Stats().Policy; st.Logged != 2 || st.LogsDropped != 3 {
		t.Fatalf("logged %d, dropped %d: want the burst of 2 written", st.Logged, st.LogsDropped)
	}
	e := logs.FilterMessage("policy log").All()
	if len(e) != 2 {
		t.Fatalf("%d records", len(e))
	}
	f := e[0].ContextMap()
	if f["endpoint"] != "ns/b" || f["direction"] != "Ingress" || f["action"] != "Allow" || f["policy"] != "b-in" ||
		f["dst"] != "10.244.1.3" || f["dstPort"] != uint16(80) {
		t.Fatalf("record %v", f)
	}
}
