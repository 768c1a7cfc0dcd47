package router

import (
	"bytes"
	"net/netip"
	"testing"

	"github.com/tortie-net/tortie/header"
	"github.com/tortie-net/tortie/router/routertest"
)

var hostDst = [4]byte{10, 0, 0, 9} // in the harness's host route

// newNativeHarness is newGSOHarness whose host takes packets behind
// virtio-net headers of the router's own (an OffloadWriter), as tortied's
// TUN does, with pod C on an offload port.
func newNativeHarness(t testing.TB) (*harness, *Port, *routertest.OffloadHost) {
	h := newGSOHarness(t)
	host := routertest.NewOffloadHost()
	h.r.AttachHost(host)
	pC, _ := withOffloadPort(t, h)
	return h, pC, host
}

// TestSuperframeWholeToHost: a pod's superframe for a natively routed node
// or for the node itself goes to the host whole, behind a GSO header that
// describes it from its IPv4 header on, its TTL left for the kernel to
// decrement; for a tunnelled node it is still cut here.
func TestSuperframeWholeToHost(t *testing.T) {
	h, pC, host := newNativeHarness(t)
	for _, dst := range [][4]byte{remoteN, hostDst} {
		f := tcpSuper(dst, 3000, 1000, header.TCPFlagACK|header.TCPFlagPSH)
		h.fromOffload(podIngress(pC), f)
		out := host.Take()
		if len(out) != 1 || len(h.u.Take()) != 0 || len(h.gso.Take()) != 0 {
			t.Fatalf("to %v: %d packets to the host (drops %v)", dst, len(out), h.drops())
		}
		v := header.VirtioNetHdr(out[0])
		if v.Flags() != header.VirtioNetHdrFNeedsCsum || v.GSOType() != header.VirtioGSOTCPv4 || v.GSOSize() != 1000 ||
			v.HdrLen() != 40 || v.CsumStart() != 20 || v.CsumOffset() != 16 {
			t.Fatalf("to %v: header flags %#x gso %d size %d hdr %d csum %d+%d", dst,
				v.Flags(), v.GSOType(), v.GSOSize(), v.HdrLen(), v.CsumStart(), v.CsumOffset())
		}
		ip := header.IPv4(out[0][header.VirtioNetHdrLen:])
		if !bytes.Equal(ip, f[header.VirtioNetHdrLen+header.EthernetLen:]) {
			t.Fatalf("to %v: the superframe changed on its way (TTL %d, length %d)", dst, ip.TTL(), len(ip))
		}
	}
	if o := h.r.Stats().Offload; o.WholeToHost != 2 || o.TSOFrames != 0 {
		t.Fatalf("offload counters %+v", o)
	}

	h.fromOffload(podIngress(pC), tcpSuper(remoteV, 3000, 1000, header.TCPFlagACK))
	if len(h.gso.Take()) != 1 || len(host.Take()) != 0 {
		t.Fatal("a superframe for a VXLAN node was not cut into one UDP GSO run")
	}
	h.fromOffload(podIngress(pC), tcpSuper(podB, 3000, 1000, header.TCPFlagACK))
	if n := len(h.devB.Take()); n != 3 || len(host.Take()) != 0 {
		t.Fatalf("a superframe for a local plain pod became %d frames", n)
	}
}

// TestSuperframeCutWhenNotWhole: a superframe the kernel could not take as
// it is (no partial checksum, or one that does not point at the TCP
// checksum) is cut here, and its segments still reach the host in order.
func TestSuperframeCutWhenNotWhole(t *testing.T) {
	h, pC, host := newNativeHarness(t)
	for _, spoil := range []func(header.VirtioNetHdr){
		func(v header.VirtioNetHdr) { v[0] = 0 },  // no NEEDS_CSUM
		func(v header.VirtioNetHdr) { v[8] = 10 }, // checksum offset of UDP
		func(v header.VirtioNetHdr) { v[6] = 30 }, // checksum from inside the IPv4 header
	} {
		f := tcpSuper(remoteN, 3000, 1000, header.TCPFlagACK)
		spoil(header.VirtioNetHdr(f))
		h.fromOffload(podIngress(pC), f)
		out := host.Take()
		if len(out) != 3 {
			t.Fatalf("%d packets to the host, want 3 segments (drops %v)", len(out), h.drops())
		}
		for i, p := range out {
			v := header.VirtioNetHdr(p)
			ip := header.IPv4(p[header.VirtioNetHdrLen:])
			if v.Flags() != 0 || v.GSOType() != header.VirtioGSONone || ip.TotalLen() != 1040 ||
				header.TCP(ip.Payload()).Seq() != uint32(1000+1000*i) {
				t.Fatalf("segment %d: header %x, length %d", i, p[:header.VirtioNetHdrLen], ip.TotalLen())
			}
		}
	}
	if o := h.r.Stats().Offload; o.WholeToHost != 0 {
		t.Fatalf("offload counters %+v", o)
	}
}

// TestHostOrderKept: packets for the host that leave by its two writers
// (plain ones for the TUN library's Write, superframes and natively routed
// ones behind their own headers) reach it in the order they were routed.
func TestHostOrderKept(t *testing.T) {
	h, pC, host := newNativeHarness(t)
	small := func(dst [4]byte) []byte { return tcpSuper(dst, 100, 1000, header.TCPFlagACK) }
	h.fromOffload(podIngress(pC), small(hostDst), tcpSuper(remoteN, 3000, 1000, header.TCPFlagACK), small(hostDst), small(remoteN), small(hostDst))
	out := host.Take()
	want := []struct {
		dst [4]byte
		gso uint8
	}{{hostDst, 0}, {remoteN, header.VirtioGSOTCPv4}, {hostDst, 0}, {remoteN, 0}, {hostDst, 0}}
	if len(out) != len(want) {
		t.Fatalf("%d packets to the host, want %d (drops %v)", len(out), len(want), h.drops())
	}
	for i, p := range out {
		ip := header.IPv4(p[header.VirtioNetHdrLen:])
		if ip.Dst() != want[i].dst || header.VirtioNetHdr(p).GSOType() != want[i].gso {
			t.Fatalf("packet %d: to %v with GSO type %d, want %v, %d", i, ip.Dst(), header.VirtioNetHdr(p).GSOType(), want[i].dst, want[i].gso)
		}
		if want[i].gso == 0 && (ip.TTL() != 64 || !tcpChecksumOK(ip)) {
			t.Fatalf("packet %d: TTL %d, TCP checksum ok %v", i, ip.TTL(), tcpChecksumOK(ip))
		}
	}
	if host.OffloadWrites() != 2 {
		t.Fatalf("%d offload writes, want 2 (one for each run)", host.OffloadWrites())
	}
}

// TestNativeFromPlainPort: a plain pod's natively routed packets go to
// the host too, behind all-zero headers, with their TTL left to the
// kernel; the ICMP errors the router itself raises still leave by the
// underlay.
func TestNativeFromPlainPort(t *testing.T) {
	h, _, host := newNativeHarness(t)
	h.fromPodA(eth(header.EtherTypeIPv4, pkt{src: podA, dst: remoteN, payload: 100}.ip()))
	out := host.Take()
	if len(out) != 1 || len(h.u.Take()) != 0 {
		t.Fatalf("%d packets to the host (drops %v)", len(out), h.drops())
	}
	if v := header.VirtioNetHdr(out[0]); v.Flags() != 0 || v.GSOType() != 0 {
		t.Fatalf("header %x", out[0][:header.VirtioNetHdrLen])
	}
	if ip := header.IPv4(out[0][header.VirtioNetHdrLen:]); ip.TTL() != 64 || ip.Dst() != remoteN {
		t.Fatalf("TTL %d to %v", ip.TTL(), ip.Dst())
	}
}

func TestWholeSuperframeAllocatesNothing(t *testing.T) {
	h, pC, host := newNativeHarness(t)
	host.Discard = true
	f := tcpSuper(remoteN, 60000, 1448, header.TCPFlagACK)
	h.fromOffload(podIngress(pC), f)
	if n := testing.AllocsPerRun(100, func() { h.fromOffload(podIngress(pC), f) }); n != 0 {
		t.Fatalf("%v allocations per superframe", n)
	}
	if o := h.r.Stats().Offload; o.WholeToHost < 101 {
		t.Fatalf("%d superframes passed whole, want at least 101", o.WholeToHost)
	}
}

// FuzzWholeToHost: any virtio-net header and frame from a pod, with a host
// that takes superframes whole: no panic, and whatever reaches the host
// whole is a TCPv4 superframe whose header lengths fit inside it.
func FuzzWholeToHost(f *testing.F) {
	f.Add(tcpSuper(remoteN, 3000, 1000, header.TCPFlagACK))
	f.Add(tcpSuper(hostDst, 100, 1400, header.TCPFlagACK))
	h, pC, host := newNativeHarness(&testing.T{})
	dev := pC.dev.(*routertest.Device)
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) > 65000 {
			return
		}
		h.fromOffload(podIngress(pC), b)
		for _, p := range host.Take() {
			if len(p) < header.VirtioNetHdrLen+header.IPv4MinLen {
				t.Fatalf("%d-byte packet to the host", len(p))
			}
			v := header.VirtioNetHdr(p)
			ip := header.IPv4(p[header.VirtioNetHdrLen:])
			if v.GSOType() == header.VirtioGSONone {
				continue
			}
			if v.GSOType()&^header.VirtioGSOECN != header.VirtioGSOTCPv4 || ip.Protocol() != header.ProtocolTCP ||
				v.GSOSize() == 0 || v.HdrLen() > len(ip) || v.CsumStart()+v.CsumOffset()+2 > len(ip) || ip.TotalLen() != len(ip) {
				t.Fatalf("superframe to the host with header %x and %d bytes", p[:header.VirtioNetHdrLen], len(ip))
			}
		}
		checkPodSuperframes(t, dev.Take()) // pod C's own, hairpinned
		h.u.Take()
		h.gso.Take()
		h.devA.Take()
		h.devB.Take()
	})
}

// fromRemoteN is hostSuper to pod C with the source of a natively routed
// remote pod, as the host hands over what its underlay received.
func fromRemoteN(payload, mss int, flags uint8) []byte {
	f := hostSuper(podC, payload, mss, flags)
	setSource(header.IPv4(f[header.VirtioNetHdrLen:]), remoteN)
	return f
}

// setSource gives a TCP superframe (IPv4 header of 20 bytes) another
// source, its IPv4 checksum and partial TCP checksum made again.
func setSource(ip header.IPv4, src [4]byte) {
	copy(ip[12:16], src[:])
	ip.ComputeChecksum()
	header.TCP(ip[20:]).SetChecksum(header.PartialChecksum(src, ip.Dst(), header.ProtocolTCP, len(ip)-20))
}

// TestHostSuperframeWholeToPod: a superframe from the host for a pod on an
// offload port is written to it whole, behind a GSO header that describes
// it from its Ethernet header on, in order with the frames around it; for
// a plain port it is still cut.
func TestHostSuperframeWholeToPod(t *testing.T) {
	h, pC, _ := newNativeHarness(t)
	dev := pC.dev.(*routertest.Device)
	super := fromRemoteN(3000, 1000, header.TCPFlagACK)
	small := fromRemoteN(100, 1000, header.TCPFlagACK|header.TCPFlagPSH)
	h.fromOffload(hostIngress, small, super, small)
	ip := wholeAmidSegments(t, h, dev.Take(), 1000)
	if !bytes.Equal(ip, super[header.VirtioNetHdrLen:]) {
		t.Fatalf("the superframe changed on its way (TTL %d, length %d)", ip.TTL(), len(ip))
	}
	if o := h.r.Stats().Offload; o.WholeToPods != 1 || o.TSOFrames != 0 {
		t.Fatalf("offload counters %+v", o)
	}

	h.fromOffload(hostIngress, hostSuper(podB, 3000, 1000, header.TCPFlagACK))
	if n := len(h.devB.Take()); n != 3 {
		t.Fatalf("a host superframe for a plain pod became %d frames, want 3", n)
	}
}

func TestWholeToPodAllocatesNothing(t *testing.T) {
	h, pC, _ := newNativeHarness(t)
	pC.dev.(*routertest.Device).Discard = true
	f := fromRemoteN(60000, 1448, header.TCPFlagACK)
	h.fromOffload(hostIngress, f)
	if n := testing.AllocsPerRun(100, func() { h.fromOffload(hostIngress, f) }); n != 0 {
		t.Fatalf("%v allocations per superframe", n)
	}
	if o := h.r.Stats().Offload; o.WholeToPods < 101 {
		t.Fatalf("%d superframes passed whole, want at least 101", o.WholeToPods)
	}
}

// FuzzWholeToPod: any virtio-net header and packet from the host, with an
// offload pod to take superframes whole: no panic, and whatever reaches
// the pod whole is a TCPv4 superframe whose header lengths fit inside it.
func FuzzWholeToPod(f *testing.F) {
	f.Add(fromRemoteN(3000, 1000, header.TCPFlagACK))
	f.Add(fromRemoteN(100, 1400, header.TCPFlagACK))
	h, pC, host := newNativeHarness(&testing.T{})
	dev := pC.dev.(*routertest.Device)
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) > 65000 {
			return
		}
		h.fromOffload(hostIngress, b)
		checkPodSuperframes(t, dev.Take())
		host.Take()
		checkPodSuperframes(t, dev.Take()) // pod C's own, hairpinned
		h.u.Take()
		h.gso.Take()
		h.devA.Take()
		h.devB.Take()
	})
}

// wholeAmidSegments checks what pod C got for a 100-byte segment, a
// superframe and another such segment: three frames in that order, the
// segments plain and valid, the superframe behind a GSO header for
// segments of mss bytes that describes it from its Ethernet header on
// (addressed to pod C). It returns the superframe's IPv4 packet.
func wholeAmidSegments(t *testing.T, h *harness, out [][]byte, mss int) header.IPv4 {
	t.Helper()
	if len(out) != 3 {
		t.Fatalf("pod C got %d frames, want 3 (drops %v)", len(out), h.drops())
	}
	for i, f := range out {
		v := header.VirtioNetHdr(f)
		ip := header.IPv4(f[header.VirtioNetHdrLen+header.EthernetLen:])
		if i != 1 {
			if v.GSOType() != header.VirtioGSONone || ip.TotalLen() != 140 || !tcpChecksumOK(ip) {
				t.Fatalf("frame %d: header %x, length %d", i, f[:header.VirtioNetHdrLen], ip.TotalLen())
			}
		}
	}
	f := out[1]
	if v := header.VirtioNetHdr(f); v.Flags() != header.VirtioNetHdrFNeedsCsum || v.GSOType() != header.VirtioGSOTCPv4 ||
		v.GSOSize() != mss || v.HdrLen() != 54 || v.CsumStart() != 34 || v.CsumOffset() != 16 {
		t.Fatalf("superframe header %x", f[:header.VirtioNetHdrLen])
	}
	if eth := header.Ethernet(f[header.VirtioNetHdrLen:]); eth.Dst() != macC || eth.Src() != GatewayMAC {
		t.Fatalf("Ethernet header %x", f[header.VirtioNetHdrLen:header.VirtioNetHdrLen+header.EthernetLen])
	}
	return header.IPv4(f[header.VirtioNetHdrLen+header.EthernetLen:])
}

// checkPodSuperframes fails t unless every superframe among the frames
// written to an offload pod is a TCPv4 one whose header lengths fit
// inside it.
func checkPodSuperframes(t *testing.T, frames [][]byte) {
	t.Helper()
	for _, p := range frames {
		if len(p) < header.VirtioNetHdrLen+header.EthernetLen+header.IPv4MinLen {
			continue // an ARP-sized or ICMP frame; not a superframe
		}
		v := header.VirtioNetHdr(p)
		if v.GSOType() == header.VirtioGSONone {
			continue
		}
		ip := header.IPv4(p[header.VirtioNetHdrLen+header.EthernetLen:])
		if v.GSOType()&^header.VirtioGSOECN != header.VirtioGSOTCPv4 || ip.Protocol() != header.ProtocolTCP || v.GSOSize() == 0 ||
			v.HdrLen() > len(p)-header.VirtioNetHdrLen || v.CsumStart()+v.CsumOffset()+2 > len(p)-header.VirtioNetHdrLen ||
			ip.TotalLen() != len(ip) {
			t.Fatalf("superframe to the pod with header %x and %d bytes", p[:header.VirtioNetHdrLen], len(p))
		}
	}
}

var (
	podD = [4]byte{10, 244, 1, 5}
	macD = header.MAC{2, 0, 0, 0, 0, 0xd}
)

// withPodD adds pod D, a second pod on an offload port.
func withPodD(t testing.TB, h *harness) *routertest.Device {
	dev := routertest.NewDevice()
	if _, err := h.r.AddPort(PortConfig{Name: "d", Addr: netip.AddrFrom4(podD), MAC: macD, Offload: true}, dev); err != nil {
		t.Fatal(err)
	}
	return dev
}

// TestPodSuperframeWholeToLocalPod: a pod's superframe for another pod of
// the node on an offload port is written to it whole, its TTL decremented
// once, behind a GSO header that describes it from its Ethernet header on,
// in order with the frames around it; nothing of it reaches the host or
// the underlay.
func TestPodSuperframeWholeToLocalPod(t *testing.T) {
	h, pC, host := newNativeHarness(t)
	devD := withPodD(t, h)
	small := tcpSuper(podD, 100, 1000, header.TCPFlagACK|header.TCPFlagPSH)
	super := tcpSuper(podD, 3000, 1000, header.TCPFlagACK)
	h.fromOffload(podIngress(pC), small, super, small)
	out := devD.Take()
	if len(out) != 3 || len(host.Take()) != 0 || len(h.u.Take()) != 0 || len(h.gso.Take()) != 0 {
		t.Fatalf("pod D got %d frames, want 3 (drops %v)", len(out), h.drops())
	}
	for i, f := range out {
		v := header.VirtioNetHdr(f)
		ip := header.IPv4(f[header.VirtioNetHdrLen+header.EthernetLen:])
		if eth := header.Ethernet(f[header.VirtioNetHdrLen:]); eth.Dst() != macD || eth.Src() != GatewayMAC {
			t.Fatalf("frame %d: Ethernet header %x", i, f[header.VirtioNetHdrLen:header.VirtioNetHdrLen+header.EthernetLen])
		}
		if ip.TTL() != 63 {
			t.Fatalf("frame %d: TTL %d", i, ip.TTL())
		}
		validChecksum(t, ip)
		if i != 1 {
			if v.GSOType() != header.VirtioGSONone || ip.TotalLen() != 140 {
				t.Fatalf("frame %d: header %x, length %d", i, f[:header.VirtioNetHdrLen], ip.TotalLen())
			}
			continue
		}
		if v.Flags() != header.VirtioNetHdrFNeedsCsum || v.GSOType() != header.VirtioGSOTCPv4 || v.GSOSize() != 1000 ||
			v.HdrLen() != 54 || v.CsumStart() != 34 || v.CsumOffset() != 16 {
			t.Fatalf("superframe header %x", f[:header.VirtioNetHdrLen])
		}
		if sent := super[header.VirtioNetHdrLen+header.EthernetLen:]; ip.TotalLen() != len(sent) || !bytes.Equal(ip[20:], sent[20:]) {
			t.Fatalf("the superframe changed on its way (length %d)", ip.TotalLen())
		}
	}
	if o := h.r.Stats().Offload; o.WholeToPods != 1 || o.TSOFrames != 0 || o.WholeToHost != 0 {
		t.Fatalf("offload counters %+v", o)
	}
	checkPodSuperframes(t, out)
}

func TestWholeToLocalPodAllocatesNothing(t *testing.T) {
	h, pC, _ := newNativeHarness(t)
	devD := withPodD(t, h)
	devD.Discard = true
	f := tcpSuper(podD, 60000, 1448, header.TCPFlagACK)
	h.fromOffload(podIngress(pC), f)
	if n := testing.AllocsPerRun(100, func() { h.fromOffload(podIngress(pC), f) }); n != 0 {
		t.Fatalf("%v allocations per superframe", n)
	}
	if o := h.r.Stats().Offload; o.WholeToPods < 101 {
		t.Fatalf("%d superframes passed whole, want at least 101", o.WholeToPods)
	}
}
