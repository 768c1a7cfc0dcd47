package router

import (
	"bytes"
	"encoding/binary"
	"slices"
	"testing"

	"github.com/tortie-net/tortie/encap"
	"github.com/tortie-net/tortie/header"
	"github.com/tortie-net/tortie/router/routertest"
)

// TestSuperframeWholeToTunnel: with a TunnelWriter attached, a pod's TCP
// superframe to a VXLAN node leaves whole through it, as one VXLAN packet
// behind a UDP tunnel virtio-net header that tells the kernel how to cut
// it: the outer headers to the node, from the source port the flow's
// other datagrams use, the inner packet as the pod sent it but for its
// TTL. Nothing is cut or sent through the UDP GSO senders.
func TestSuperframeWholeToTunnel(t *testing.T) {
	h, pC, _ := newNativeHarness(t)
	tun := &routertest.Tunnel{}
	h.r.AttachTunnel(tun)
	f := tcpSuper(remoteV, 3000, 1000, header.TCPFlagACK|header.TCPFlagPSH)
	h.fromOffload(podIngress(pC), f)
	frames, writes := tun.Take()
	if len(frames) != 1 || writes != 1 || len(h.gso.Take()) != 0 || len(h.u.Take()) != 0 {
		t.Fatalf("%d frames in %d writes to the tunnel (drops %v)", len(frames), writes, h.drops())
	}
	fr := frames[0]
	const eth, oip, udp, vx = 14, 20, 8, 8
	innerAt := eth + oip + udp + vx + eth // the inner IPv4 header, from the frame's start
	v := header.VirtioNetHdr(fr)
	if v.Flags() != header.VirtioNetHdrFNeedsCsum|header.VirtioNetHdrFUDPTunnelCsum ||
		v.GSOType() != header.VirtioGSOTCPv4|header.VirtioGSOUDPTunnelIPv4 || v.GSOSize() != 1000 ||
		v.HdrLen() != innerAt+40 || v.CsumStart() != innerAt+20 || v.CsumOffset() != 16 ||
		binary.LittleEndian.Uint16(fr[20:]) != eth+oip || binary.LittleEndian.Uint16(fr[22:]) != uint16(innerAt) ||
		!bytes.Equal(fr[10:20], make([]byte, 10)) {
		t.Fatalf("virtio-net header %x", fr[:header.VirtioNetHdrTunnelLen])
	}
	frame := fr[header.VirtioNetHdrTunnelLen:]
	if e := header.Ethernet(frame); e.Dst() != routertest.TunnelMAC || e.Type() != header.EtherTypeIPv4 {
		t.Fatalf("outer Ethernet header %x", frame[:eth])
	}
	outer, st := header.IPv4(frame[eth:]).Check()
	if st != header.IPv4OK || len(outer) != len(frame)-eth || outer.Src() != nodeA || outer.Dst() != nodeB ||
		outer.Protocol() != header.ProtocolUDP || !outer.DF() || outer.TTL() != header.IPv4DefaultTTL {
		t.Fatalf("outer IPv4 header %x (%v)", frame[eth:eth+oip], st)
	}
	inner := header.IPv4(frame[innerAt:])
	sent := header.IPv4(f[header.VirtioNetHdrLen+eth:])
	u := header.UDP(outer[oip:])
	wantPort := 40000 + uint16(uint32(encap.SourcePort(sent))%routertest.GSOSources)
	if u.SrcPort() != wantPort || u.DstPort() != header.VXLANPort || u.Length() != len(outer)-oip ||
		u.Checksum() != header.PartialChecksum(nodeA, nodeB, header.ProtocolUDP, u.Length()) {
		t.Fatalf("outer UDP header %x, want source port %d and the pseudo-header sum", outer[oip:oip+udp], wantPort)
	}
	if x := header.VXLAN(outer[oip+udp:]); x.VNI() != encap.VNI || x.Flags()&header.VXLANFlagI == 0 {
		t.Fatalf("VXLAN header %x", outer[oip+udp:oip+udp+vx])
	}
	if e := header.Ethernet(frame[innerAt-eth:]); e.Dst() != bVTEP || e.Src() != ourVTEP {
		t.Fatalf("inner Ethernet header %x", frame[innerAt-eth:innerAt])
	}
	if inner.TTL() != sent.TTL()-1 || !bytes.Equal(inner[20:], sent[20:]) || len(inner) != len(sent) {
		t.Fatalf("the superframe changed on its way (TTL %d, %d bytes)", inner.TTL(), len(inner))
	}
	if _, st := inner.Check(); st != header.IPv4OK {
		t.Fatalf("inner IPv4 header: %v", st)
	}
	if o := h.r.Stats().Offload; o.WholeToTunnel != 1 || o.TSOFrames != 0 {
		t.Fatalf("offload counters %+v", o)
	}

	// A plain segment of the flow and a superframe in one batch, either
	// way round: they leave in the order routed, whichever way each goes.
	ord := &routertest.Order{}
	h.gso.Order, tun.Order = ord, ord
	small := tcpSuper(remoteV, 500, 1000, header.TCPFlagACK)
	super := tcpSuper(remoteV, 3000, 1000, header.TCPFlagACK)
	h.fromOffload(podIngress(pC), small, super)
	if got := ord.Take(); !slices.Equal(got, []string{"gso", "tunnel"}) {
		t.Fatalf("a segment then a superframe left as %v (drops %v)", got, h.drops())
	}
	h.fromOffload(podIngress(pC), super, small)
	if got := ord.Take(); !slices.Equal(got, []string{"tunnel", "gso"}) {
		t.Fatalf("a superframe then a segment left as %v (drops %v)", got, h.drops())
	}
	tun.Take()
	h.gso.Take()

	// Segments that would not fit the tunnel, or a superframe whose
	// outer packet would be longer than IPv4 can say, are cut here.
	h.fromOffload(podIngress(pC), tcpSuper(remoteV, 3000, 1420, header.TCPFlagACK))
	h.fromOffload(podIngress(pC), tcpSuper(remoteV, header.IPv4MaxLen-40, 1000, header.TCPFlagACK))
	if frames, _ := tun.Take(); len(frames) != 0 {
		t.Fatalf("%d superframes the tunnel cannot carry went to it", len(frames))
	}
	if runs := h.gso.Take(); len(runs) == 0 {
		t.Fatal("the 64 KB superframe was not cut into UDP GSO runs")
	}
	h.u.Take()
}

// TestTunnelAllocatesNothing: a superframe sent whole through the
// TunnelWriter costs no allocation.
func TestTunnelAllocatesNothing(t *testing.T) {
	h, pC, _ := newNativeHarness(t)
	tun := &routertest.Tunnel{Discard: true}
	h.r.AttachTunnel(tun)
	f := tcpSuper(remoteV, 8000, 1400, header.TCPFlagACK)
	h.fromOffload(podIngress(pC), f)
	if n := testing.AllocsPerRun(100, func() { h.fromOffload(podIngress(pC), f) }); n != 0 {
		t.Fatalf("%v allocations per superframe", n)
	}
	if _, writes := tun.Take(); writes != 102 { // AllocsPerRun warms up with one more run
		t.Fatalf("%d writes to the tunnel, want 102", writes)
	}
}

// TestTunnelNeedsRoom: a superframe without room in front for the tunnel's
// headers is cut here, as without a TunnelWriter.
func TestTunnelNeedsRoom(t *testing.T) {
	h, pC, _ := newNativeHarness(t)
	tun := &routertest.Tunnel{}
	h.r.AttachTunnel(tun)
	f := tcpSuper(remoteV, 3000, 1000, header.TCPFlagACK)
	h.w.begin()
	b := make([]byte, Headroom+len(f))
	n := copy(b[Headroom-1:], f)
	h.w.fromOffload(podIngress(pC), b, Headroom-1, Headroom-1+n)
	h.w.flush()
	if frames, _ := tun.Take(); len(frames) != 0 || len(h.gso.Take()) != 1 {
		t.Fatalf("%d frames to the tunnel, want the superframe cut into one UDP GSO run (drops %v)", len(frames), h.drops())
	}
}

// TestUseTunnel: with the tunnel paused (the node's forward chains found
// closed to it) superframes are cut here; resumed, they go whole again.
func TestUseTunnel(t *testing.T) {
	h, pC, _ := newNativeHarness(t)
	tun := &routertest.Tunnel{}
	h.r.AttachTunnel(tun)
	f := tcpSuper(remoteV, 3000, 1000, header.TCPFlagACK)
	for _, on := range []bool{false, true, false} {
		h.r.UseTunnel(on)
		h.fromOffload(podIngress(pC), f)
		frames, _ := tun.Take()
		runs := h.gso.Take()
		if on && (len(frames) != 1 || len(runs) != 0) || !on && (len(frames) != 0 || len(runs) != 1) {
			t.Fatalf("tunnel in use %v: %d frames to the tunnel, %d UDP GSO runs (drops %v)", on, len(frames), len(runs), h.drops())
		}
	}
}
