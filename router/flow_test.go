package router

import (
	"encoding/binary"
	"testing"

	"github.com/tortie-net/tortie/header"
)

// udp4 builds an IPv4 UDP packet between two address:port pairs.
func udp4(src [4]byte, sport uint16, dst [4]byte, dport uint16) []byte {
	b := pkt{src: src, dst: dst, proto: header.ProtocolUDP, payload: 16}.ip()
	binary.BigEndian.PutUint16(b[20:], sport)
	binary.BigEndian.PutUint16(b[22:], dport)
	return b
}

func (h *harness) fromHostPkts(pkts ...[]byte) {
	h.w.begin()
	for i, p := range pkts {
		n := copy(h.w.bufs[i][Headroom:], p)
		h.w.fromHost(h.w.bufs[i], Headroom, Headroom+n)
	}
	h.w.flush()
}

func (h *harness) fromVXLANPkt(p []byte) {
	h.w.begin()
	n := copy(h.w.bufs[0][Headroom:], vxlanPayload(ourVTEP, 4096, p))
	h.w.fromVXLAN(nodeB, h.w.bufs[0], Headroom, Headroom+n)
	h.w.flush()
}

// TestServiceRepliesViaHost: a flow the host forwarded (after a Service's
// DNAT) from a pod to a pod, local or remote, has its replies, their
// fragments and ICMP errors about it sent to the host, not to the client;
// other traffic between the same pods, and flows from the node's own
// address, are untouched.
func TestServiceRepliesViaHost(t *testing.T) {
	h := newHarness(t)
	// podA -> (ClusterIP, DNATed by the host) -> podB:8080, and -> remoteV:8080.
	h.fromHostPkts(udp4(podA, 40000, podB, 8080), udp4(podA, 40001, remoteV, 8080))
	if len(h.devB.Take()) != 1 || len(h.u.Take()) != 1 {
		t.Fatalf("the translated requests were not delivered: drops %v", h.drops())
	}
	// The local backend's reply goes to the host, TTL decremented as a routed hop.
	h.w.begin()
	f := eth(header.EtherTypeIPv4, udp4(podB, 8080, podA, 40000))
	header.Ethernet(f).Encode(GatewayMAC, macB, header.EtherTypeIPv4)
	n := copy(h.w.bufs[0][Headroom:], f)
	h.w.fromPod(h.pB, h.w.bufs[0], Headroom, Headroom+n)
	h.w.flush()
	if out := h.host.Take(); len(out) != 1 || header.IPv4(out[0]).TTL() != 63 || header.IPv4(out[0]).Src() != podB {
		t.Fatalf("local backend's reply: host got %d packets, pod A %d", len(out), len(h.devA.Take()))
	}
	if len(h.devA.Take()) != 0 {
		t.Fatal("the reply also reached the client")
	}
	// The remote backend's reply, decapsulated: to the host too.
	h.fromVXLANPkt(udp4(remoteV, 8080, podA, 40001))
	if out := h.host.Take(); len(out) != 1 || len(h.devA.Take()) != 0 {
		t.Fatalf("remote backend's reply not sent to the host: drops %v", h.drops())
	}
	// A fragment of a reply (no ports): by addresses, to the host.
	h.fromVXLANPkt(pkt{src: remoteV, dst: podA, proto: header.ProtocolUDP, flags: 100, payload: 32}.ip())
	if len(h.host.Take()) != 1 {
		t.Fatalf("reply fragment not sent to the host: drops %v", h.drops())
	}
	// An ICMP port unreachable from the remote backend about the request.
	req := udp4(podA, 40001, remoteV, 8080)
	icmp := pkt{src: remoteV, dst: podA, proto: header.ProtocolICMP, payload: 8 + 28}.ip()
	copy(icmp[28:], req[:28])
	header.ICMP(icmp[20:]).EncodeError(header.ICMPDestUnreach, 3, 0)
	h.fromVXLANPkt(icmp)
	if len(h.host.Take()) != 1 {
		t.Fatalf("ICMP error about the flow not sent to the host: drops %v", h.drops())
	}
	// Another flow between the same pods, never translated: straight to pod A.
	h.fromVXLANPkt(udp4(remoteV, 9999, podA, 40001))
	if len(h.devA.Take()) != 1 || len(h.host.Take()) != 0 {
		t.Fatalf("an untranslated flow went through the host: drops %v", h.drops())
	}
	// The node's own traffic to a pod starts no flow: the pod's answer,
	// addressed to the node, takes the ordinary way (the host).
	h.fromHostPkts(udp4(nodeA, 5000, remoteV, 53))
	h.u.Take()
	// Nor does a pod of a natively routed block, whose traffic comes
	// through the kernel untranslated: the reply goes straight back.
	h.fromHostPkts(udp4(remoteN, 6000, podA, 7000))
	h.devA.Take()
	h.fromPodA(eth(header.EtherTypeIPv4, udp4(podA, 7000, remoteN, 6000)))
	if len(h.u.Take()) != 1 || len(h.host.Take()) != 0 {
		t.Fatalf("reply to a native source went through the host: drops %v", h.drops())
	}
	if s := h.r.Stats().Flows; s.Inserts != 4 || s.RepliesViaHost != 4 {
		t.Fatalf("flow stats %+v, want 4 inserts (2 flows, each by ports and by addresses), 4 replies via host", s)
	}
}

// TestFlowPathAllocatesNothing: tracking from the host and looking up
// replies from a tunnel allocate nothing per packet.
func TestFlowPathAllocatesNothing(t *testing.T) {
	h := newHarness(t)
	h.host.Discard, h.devA.Discard, h.devB.Discard, h.u.Discard = true, true, true, true
	req := udp4(podA, 40000, remoteV, 8080)
	rep := vxlanPayload(ourVTEP, 4096, udp4(remoteV, 8080, podA, 40000))
	if n := testing.AllocsPerRun(1000, func() {
		h.w.begin()
		n := copy(h.w.bufs[0][Headroom:], req)
		h.w.fromHost(h.w.bufs[0], Headroom, Headroom+n)
		n = copy(h.w.bufs[1][Headroom:], rep)
		h.w.fromVXLAN(nodeB, h.w.bufs[1], Headroom, Headroom+n)
		h.w.flush()
	}); n != 0 {
		t.Fatalf("%v allocations per request and reply", n)
	}
	if h.r.Stats().Flows.RepliesViaHost == 0 {
		t.Fatal("no reply went via the host")
	}
}
