package router

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/tortie-net/tortie/header"
	"github.com/tortie-net/tortie/router/routertest"
)

// ipipCoalesced is what a raw IPIP socket reads when the underlay's kernel
// coalesced TCP segments from node C's pod remoteI to dst: the outer
// header and the inner packet with their lengths rewritten, the inner TCP
// checksum field holding the pseudo-header sum.
func ipipCoalesced(dst [4]byte, payload int) []byte {
	inner := hostSuper(dst, payload, 1000, header.TCPFlagACK)[header.VirtioNetHdrLen:]
	setSource(header.IPv4(inner), remoteI)
	return ipipOuter(inner)
}

// ipipSegment is one ordinary segment in IPIP, its checksum complete.
func ipipSegment(dst [4]byte, payload int) []byte {
	b := ipipCoalesced(dst, payload)
	ip := header.IPv4(b[20:])
	tcp := header.TCP(ip[20:])
	tcp.SetChecksum(0)
	tcp.SetChecksum(^header.Checksum(tcp, header.PseudoHeaderSum(ip.Src(), ip.Dst(), header.ProtocolTCP, len(tcp))))
	return b
}

func ipipOuter(inner []byte) []byte {
	o := make([]byte, 20+len(inner))
	header.IPv4(o).Encode(&header.IPv4Fields{TotalLen: len(o), TTL: 64, Protocol: header.ProtocolIPIP,
		FlagsFrag: header.IPv4FlagDF, Src: nodeC, Dst: nodeA})
	copy(o[20:], inner)
	return o
}

// fromIPIP runs IPIP packets read from the underlay through one batch.
func (h *harness) fromIPIP(pkts ...[]byte) {
	h.w.begin()
	for i, p := range pkts {
		b := h.w.bufs[i%len(h.w.bufs)]
		n := copy(b[Headroom:], p)
		h.w.fromIPIP(b, Headroom, Headroom+n)
	}
	h.w.flush()
}

// TestIPIPCoalescedWholeToPod: a TCP superframe the underlay coalesced
// reaches a pod on an offload port whole, its TTL decremented once,
// behind a GSO header whose segment size is the largest the IPIP tunnel
// carries, in order with the segments around it; a pod on a plain port
// gets it cut into segments with their checksums complete.
func TestIPIPCoalescedWholeToPod(t *testing.T) {
	h, pC, _ := newNativeHarness(t)
	dev := pC.dev.(*routertest.Device)
	super := ipipCoalesced(podC, 5000)
	h.fromIPIP(ipipSegment(podC, 100), super, ipipSegment(podC, 100))
	const mss = 1500 - 20 - 20 - 20 // underlay MTU, outer IPv4, inner IPv4 and TCP headers
	out := dev.Take()
	ip := wholeAmidSegments(t, h, out, mss)
	want := header.IPv4(bytes.Clone(super[20:]))
	if ip.TTL() != want.TTL()-1 {
		t.Fatalf("TTL %d, want %d", ip.TTL(), want.TTL()-1)
	}
	if ip.Checksum() == want.Checksum() || !bytes.Equal(ip[20:], want[20:]) {
		t.Fatalf("the superframe changed on its way, or its IPv4 checksum did not")
	}
	// What the pod's kernel does with NEEDS_CSUM gives a valid segment.
	v := header.VirtioNetHdr(out[1])
	if !finishChecksum(out[1][header.VirtioNetHdrLen:], header.EthernetLen, v.CsumStart(), v.CsumOffset()) || !tcpChecksumOK(ip) {
		t.Fatal("the TCP checksum cannot be finished")
	}
	if o := h.r.Stats().Offload; o.FromUnderlay != 1 || o.WholeToPods != 1 || o.TSOFrames != 0 {
		t.Fatalf("offload counters %+v", o)
	}

	h.fromIPIP(ipipCoalesced(podB, 5000))
	segs := h.devB.Take()
	if len(segs) != 4 {
		t.Fatalf("a superframe for a plain pod became %d frames, want 4 (drops %v)", len(segs), h.drops())
	}
	var payload int
	for _, f := range segs {
		ip := header.IPv4(f[header.EthernetLen:])
		if len(ip) > 1480 || !tcpChecksumOK(ip) || ip.TTL() != 63 {
			t.Fatalf("segment of %d bytes, TTL %d, checksum ok %v", len(ip), ip.TTL(), tcpChecksumOK(ip))
		}
		payload += len(ip) - 40
	}
	if payload != 5000 {
		t.Fatalf("segments carry %d bytes, want 5000", payload)
	}
	if o := h.r.Stats().Offload; o.FromUnderlay != 2 || o.TSOFrames != 1 {
		t.Fatalf("offload counters %+v", o)
	}
	if d := h.drops(); len(d) != 0 {
		t.Fatalf("drops %v", d)
	}
}

// TestIPIPSegmentsNotCoalesced: ordinary segments, even larger than the
// tunnel's MTU (reassembled from fragments), are no superframes, and one
// whose checksum is wrong reaches the pod as it came, for its kernel to
// drop, never passed on as a superframe with a checksum to finish.
func TestIPIPSegmentsNotCoalesced(t *testing.T) {
	h, pC, _ := newNativeHarness(t)
	dev := pC.dev.(*routertest.Device)
	bad := ipipSegment(podC, 1000)
	bad[len(bad)-1]++
	h.fromIPIP(ipipSegment(podC, 1000), ipipSegment(podC, 3000), bad)
	out := dev.Take()
	if len(out) != 3 {
		t.Fatalf("pod C got %d frames, want 3 (drops %v)", len(out), h.drops())
	}
	for i, f := range out {
		v := header.VirtioNetHdr(f)
		if v.GSOType() != header.VirtioGSONone || v.NeedsCsum() {
			t.Fatalf("frame %d went as a superframe: %x", i, f[:header.VirtioNetHdrLen])
		}
		if ok := tcpChecksumOK(header.IPv4(f[header.VirtioNetHdrLen+header.EthernetLen:])); ok != (i < 2) {
			t.Fatalf("frame %d: TCP checksum valid %v", i, ok)
		}
	}
	if o := h.r.Stats().Offload; o.FromUnderlay != 0 {
		t.Fatalf("offload counters %+v", o)
	}
}

func TestIPIPCoalescedAllocatesNothing(t *testing.T) {
	h, pC, _ := newNativeHarness(t)
	pC.dev.(*routertest.Device).Discard = true
	super := ipipCoalesced(podC, 60000)
	h.fromIPIP(super)
	if n := testing.AllocsPerRun(100, func() { h.fromIPIP(super) }); n != 0 {
		t.Fatalf("%v allocations per superframe", n)
	}
	if o := h.r.Stats().Offload; o.WholeToPods < 101 {
		t.Fatalf("%d superframes passed whole, want at least 101", o.WholeToPods)
	}
}

// FuzzIPIPCoalesced: any inner packet from a known node, its TCP checksum
// field (where it has one) set to what a coalesced superframe holds: no
// panic, whatever reaches the offload pod whole is a sound TCPv4
// superframe, and nothing decapsulated goes back out to the underlay.
func FuzzIPIPCoalesced(f *testing.F) {
	f.Add(ipipCoalesced(podC, 5000)[20:])
	f.Add(ipipCoalesced(podB, 3000)[20:])
	f.Add(ipipCoalesced(hostDst, 3000)[20:])
	h, pC, host := newNativeHarness(&testing.T{})
	dev := pC.dev.(*routertest.Device)
	f.Fuzz(func(t *testing.T, inner []byte) {
		if len(inner) > 65000 {
			return
		}
		ip := header.IPv4(inner)
		if len(ip) >= header.IPv4MinLen {
			hl := ip.HeaderLen()
			if hl >= header.IPv4MinLen && hl+header.TCPMinLen <= len(ip) {
				header.TCP(ip[hl:]).SetChecksum(header.PartialChecksum(ip.Src(), ip.Dst(), header.ProtocolTCP, len(ip)-hl))
			}
		}
		h.fromIPIP(ipipOuter(inner))
		checkPodSuperframes(t, dev.Take())
		for _, s := range h.u.Take() {
			// Only our own ICMP errors (e.g. time exceeded) may go back out.
			if in := header.IPv4(s.Pkt[20:]); in.Protocol() != header.ProtocolICMP || in.Src() != nodeA {
				t.Fatalf("decapsulated packet relayed to the underlay: %x", s.Pkt)
			}
		}
		if len(h.gso.Take()) != 0 {
			t.Fatal("decapsulated packet relayed to the underlay as VXLAN")
		}
		host.Take()
		h.devA.Take()
		h.devB.Take()
	})
}

// TestIPIPCoalescedReplyViaHost: a superframe the underlay coalesced that
// answers a flow the node translated (a Service's DNAT, the request
// handed to us by the host) goes back to the host whole, for the kernel
// to reverse the translation, not to the pod.
func TestIPIPCoalescedReplyViaHost(t *testing.T) {
	h, pC, host := newNativeHarness(t)
	dev := pC.dev.(*routertest.Device)
	// The request, as the host forwards it after DNAT: pod C's port 5201
	// to remoteI's 40000 (the reverse of ipipCoalesced's reply).
	req := pkt{src: podC, dst: remoteI, proto: header.ProtocolTCP, payload: 20}.ip()
	binary.BigEndian.PutUint16(req[20:], 5201)
	binary.BigEndian.PutUint16(req[22:], 40000)
	req[32] = 5 << 4
	req[33] = header.TCPFlagSYN
	h.fromHostPkts(req)
	if len(h.u.Take()) != 1 {
		t.Fatalf("the request did not leave: drops %v", h.drops())
	}
	h.fromIPIP(ipipCoalesced(podC, 5000))
	out := host.Take()
	if len(out) != 1 || len(dev.Take()) != 0 {
		t.Fatalf("host got %d packets (drops %v)", len(out), h.drops())
	}
	v := header.VirtioNetHdr(out[0])
	if v.GSOType() != header.VirtioGSOTCPv4 || !v.NeedsCsum() || v.CsumStart() != 20 {
		t.Fatalf("reply to the host with header %x", out[0][:header.VirtioNetHdrLen])
	}
	if ip := header.IPv4(out[0][header.VirtioNetHdrLen:]); len(ip) != 5040 || ip.Src() != remoteI || ip.TTL() != 63 {
		t.Fatalf("reply of %d bytes from %v, TTL %d", len(ip), ip.Src(), ip.TTL())
	}
	if o := h.r.Stats().Offload; o.FromUnderlay != 1 || o.WholeToHost != 1 {
		t.Fatalf("offload counters %+v", o)
	}
}

// vxlanWhole is the inner packet of a VXLAN datagram from node B whose
// sender segments late (UDP tunnel GSO), as a veth, or a NIC with tunnel
// segmentation offload, delivers it: a TCP superframe from remoteV to dst
// whole, its lengths covering all of it, its TCP checksum field holding
// the pseudo-header sum.
func vxlanWhole(dst [4]byte, payload int) []byte {
	inner := hostSuper(dst, payload, 1000, header.TCPFlagACK)[header.VirtioNetHdrLen:]
	setSource(header.IPv4(inner), remoteV)
	return inner
}

// vxlanSegment is one ordinary segment from remoteV, its checksum complete.
func vxlanSegment(dst [4]byte, payload int) []byte {
	ip := header.IPv4(vxlanWhole(dst, payload))
	tcp := header.TCP(ip[20:])
	tcp.SetChecksum(0)
	tcp.SetChecksum(^header.Checksum(tcp, header.PseudoHeaderSum(ip.Src(), ip.Dst(), header.ProtocolTCP, len(tcp))))
	return ip
}

// TestVXLANSuperframeWholeToPod: a VXLAN datagram that carries a whole TCP
// superframe is taken as IPIP's coalesced ones are: written to a pod on an
// offload port whole, behind a GSO header whose segment size is the
// largest the VXLAN tunnel carries, in order with the segments around it;
// cut into segments with their checksums complete for a plain pod. A
// lone segment whose checksum was left partial is finished, not passed on
// unfinished.
func TestVXLANSuperframeWholeToPod(t *testing.T) {
	h, pC, _ := newNativeHarness(t)
	dev := pC.dev.(*routertest.Device)
	super := vxlanWhole(podC, 5000)
	for _, p := range [][]byte{vxlanSegment(podC, 100), super, vxlanSegment(podC, 100)} {
		h.fromVXLANPkt(p)
	}
	const mss = 1500 - 50 - 20 - 20 // underlay MTU, VXLAN's overhead, inner IPv4 and TCP headers
	out := dev.Take()
	ip := wholeAmidSegments(t, h, out, mss)
	if ip.TTL() != header.IPv4(super).TTL()-1 || !bytes.Equal(ip[20:], super[20:]) {
		t.Fatalf("the superframe changed on its way (TTL %d)", ip.TTL())
	}
	v := header.VirtioNetHdr(out[1])
	if !finishChecksum(out[1][header.VirtioNetHdrLen:], header.EthernetLen, v.CsumStart(), v.CsumOffset()) || !tcpChecksumOK(ip) {
		t.Fatal("the TCP checksum cannot be finished")
	}
	if o := h.r.Stats().Offload; o.FromUnderlay != 1 || o.WholeToPods != 1 || o.TSOFrames != 0 {
		t.Fatalf("offload counters %+v", o)
	}

	h.fromVXLANPkt(vxlanWhole(podB, 5000))
	segs := h.devB.Take()
	var payload int
	for _, f := range segs {
		ip := header.IPv4(f[header.EthernetLen:])
		if len(ip) > 1450 || !tcpChecksumOK(ip) || ip.TTL() != 63 {
			t.Fatalf("segment of %d bytes, TTL %d, checksum ok %v", len(ip), ip.TTL(), tcpChecksumOK(ip))
		}
		payload += len(ip) - 40
	}
	if len(segs) != 4 || payload != 5000 {
		t.Fatalf("a superframe for a plain pod became %d frames of %d bytes, want 4 of 5000 (drops %v)", len(segs), payload, h.drops())
	}

	// A segment the sender's kernel left "checksum partial", as a veth
	// carries it: pod B, which verifies nothing it is not told to, gets
	// it with its checksum finished.
	h.fromVXLANPkt(vxlanWhole(podB, 300))
	if segs := h.devB.Take(); len(segs) != 1 || !tcpChecksumOK(header.IPv4(segs[0][header.EthernetLen:])) {
		t.Fatalf("pod B got %d frames for a partial segment, or its checksum unfinished", len(segs))
	}
	if o := h.r.Stats().Offload; o.FromUnderlay != 3 {
		t.Fatalf("offload counters %+v", o)
	}
	if d := h.drops(); len(d) != 0 {
		t.Fatalf("drops %v", d)
	}
}

// TestVXLANPartialUDPFinished: a UDP datagram whose sender's kernel left
// its checksum to finish (a veth carries it so) reaches the pod with its
// checksum complete; one with a complete checksum, or none, is untouched.
func TestVXLANPartialUDPFinished(t *testing.T) {
	h := newHarness(t)
	udp := func(csum func(ip header.IPv4) uint16) []byte {
		ip := header.IPv4(pkt{src: remoteV, dst: podB, payload: 8 + 301}.ip())
		u := header.UDP(ip[20:])
		u.Encode(5353, 53, len(ip)-20, 0)
		u.Encode(5353, 53, len(ip)-20, csum(ip))
		return ip
	}
	full := func(ip header.IPv4) uint16 {
		return ^header.Checksum(ip[20:], header.PseudoHeaderSum(ip.Src(), ip.Dst(), header.ProtocolUDP, len(ip)-20))
	}
	partial := func(ip header.IPv4) uint16 {
		return header.PartialChecksum(ip.Src(), ip.Dst(), header.ProtocolUDP, len(ip)-20)
	}
	none := func(header.IPv4) uint16 { return 0 }
	for _, c := range []struct {
		name string
		csum func(header.IPv4) uint16
		want func(header.IPv4) uint16
	}{{"partial", partial, full}, {"full", full, full}, {"none", none, none}} {
		in := udp(c.csum)
		h.fromVXLANPkt(in)
		out := h.devB.Take()
		if len(out) != 1 {
			t.Fatalf("%s: pod B got %d frames (drops %v)", c.name, len(out), h.drops())
		}
		ip := header.IPv4(out[0][header.EthernetLen:])
		ref := header.IPv4(bytes.Clone(in))
		header.UDP(ref[20:]).Encode(5353, 53, len(ref)-20, 0)
		if got, want := header.UDP(ip[20:]).Checksum(), c.want(ref); got != want || !bytes.Equal(ip[28:], in[28:]) {
			t.Fatalf("%s: UDP checksum %#04x, want %#04x", c.name, got, want)
		}
	}
}
