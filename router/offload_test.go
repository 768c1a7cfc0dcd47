package router

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/tortie-net/tortie/encap"
	"github.com/tortie-net/tortie/fib"
	"github.com/tortie-net/tortie/header"
	"github.com/tortie-net/tortie/internal/testutil"
	"github.com/tortie-net/tortie/router/routertest"
)

var (
	podC = [4]byte{10, 244, 1, 4}
	macC = header.MAC{2, 0, 0, 0, 0, 0xc}
)

// withOffloadPort adds pod C, whose device carries virtio-net headers.
func withOffloadPort(t testing.TB, h *harness) (*Port, *routertest.Device) {
	return withOffloadDevice(t, h, routertest.NewDevice())
}

func withOffloadDevice(t testing.TB, h *harness, dev *routertest.Device) (*Port, *routertest.Device) {
	p, err := h.r.AddPort(PortConfig{Name: "c", Addr: netip.AddrFrom4(podC), MAC: macC, Offload: true}, dev)
	if err != nil {
		t.Fatal(err)
	}
	return p, dev
}

// tcpSuper builds a virtio-net header plus a TCP superframe from pod C, the
// way a pod's kernel hands one over: IP header complete, TCP checksum field
// holding only the pseudo-header sum, NEEDS_CSUM and GSO TCPv4.
func tcpSuper(dst [4]byte, payload, mss int, flags uint8) []byte {
	f := make([]byte, header.VirtioNetHdrLen+14+20+20+payload)
	frame := f[header.VirtioNetHdrLen:]
	header.Ethernet(frame).Encode(GatewayMAC, macC, header.EtherTypeIPv4)
	ip := header.IPv4(frame[14:])
	ip.Encode(&header.IPv4Fields{TotalLen: 40 + payload, ID: 100, FlagsFrag: header.IPv4FlagDF, TTL: 64, Protocol: header.ProtocolTCP, Src: podC, Dst: dst})
	tcp := header.TCP(ip[20:])
	binary.BigEndian.PutUint16(tcp[0:], 40000)
	binary.BigEndian.PutUint16(tcp[2:], 5201)
	tcp.SetSeq(1000)
	tcp[12] = 5 << 4
	tcp.SetFlags(flags)
	for i := 40; i < len(ip); i++ {
		ip[i] = byte(i * 7)
	}
	tcp.SetChecksum(header.PartialChecksum(podC, dst, header.ProtocolTCP, 20+payload))
	gso := uint8(header.VirtioGSOTCPv4)
	if payload <= mss {
		gso = header.VirtioGSONone
	}
	header.VirtioNetHdr(f).Encode(header.VirtioNetHdrFNeedsCsum, gso, 54, mss, 34, 16)
	return f
}

func tcpChecksumOK(ip header.IPv4) bool {
	return header.Checksum(ip.Payload(), header.PseudoHeaderSum(ip.Src(), ip.Dst(), header.ProtocolTCP, len(ip.Payload()))) == 0xffff
}

// fromOffload runs frames that came in on in (a pod port or the host), each
// behind its virtio-net header, through one batch.
func (h *harness) fromOffload(in ingress, frames ...[]byte) {
	h.w.begin()
	for i, f := range frames {
		b := h.w.bufs[i%len(h.w.bufs)]
		if len(b) < Headroom+len(f) {
			b = make([]byte, Headroom+len(f))
		}
		n := copy(b[Headroom:], f)
		h.w.fromOffload(in, b, Headroom, Headroom+n)
	}
	h.w.flush()
}

func TestTSOSegmentation(t *testing.T) {
	h := newHarness(t)
	pC, _ := withOffloadPort(t, h)
	h.fromOffload(podIngress(pC), tcpSuper(remoteV, 3000, 1000, header.TCPFlagACK|header.TCPFlagPSH|header.TCPFlagCWR))
	sent := h.u.Take()
	if len(sent) != 3 {
		t.Fatalf("%d segments sent (drops %v)", len(sent), h.drops())
	}
	if o := h.r.Stats().Offload; o.TSOFrames != 1 || o.TSOSegments != 3 {
		t.Fatalf("offload counters %+v", o)
	}
	for i, s := range sent {
		validChecksum(t, s.Pkt)
		inner := header.IPv4(s.Pkt[encap.OverheadVXLAN:])
		validChecksum(t, inner)
		tcp := header.TCP(inner.Payload())
		if inner.TotalLen() != 1040 || inner.ID() != uint16(100+i) || inner.TTL() != 63 || tcp.Seq() != uint32(1000+1000*i) {
			t.Fatalf("segment %d: len %d id %d ttl %d seq %d", i, inner.TotalLen(), inner.ID(), inner.TTL(), tcp.Seq())
		}
		wantPSH, wantCWR := i == 2, i == 0
		if (tcp.Flags()&header.TCPFlagPSH != 0) != wantPSH || (tcp.Flags()&header.TCPFlagCWR != 0) != wantCWR {
			t.Fatalf("segment %d flags %#x", i, tcp.Flags())
		}
		if !tcpChecksumOK(inner) {
			t.Fatalf("segment %d: bad TCP checksum", i)
		}
	}
	// An uneven tail, and a superframe to a local plain port.
	h.fromOffload(podIngress(pC), tcpSuper(podB, 2500, 1000, header.TCPFlagACK))
	out := h.devB.Take()
	if len(out) != 3 || len(out[2]) != 14+40+500 {
		t.Fatalf("pod B got %d frames", len(out))
	}
	for _, f := range out {
		if !tcpChecksumOK(header.IPv4(f[14:])) {
			t.Fatal("bad TCP checksum on local delivery")
		}
	}
}

func TestPartialChecksumFinished(t *testing.T) {
	h := newHarness(t)
	pC, _ := withOffloadPort(t, h)
	h.fromOffload(podIngress(pC), tcpSuper(podB, 600, 1400, header.TCPFlagACK)) // fits: NEEDS_CSUM only
	out := h.devB.Take()
	if len(out) != 1 || !tcpChecksumOK(header.IPv4(out[0][14:])) {
		t.Fatalf("pod B got %d frames, checksum finished: %v", len(out), len(out) == 1 && tcpChecksumOK(header.IPv4(out[0][14:])))
	}
}

func TestOffloadPortWritesHeader(t *testing.T) {
	h := newHarness(t)
	_, devC := withOffloadPort(t, h)
	h.fromPodA(eth(header.EtherTypeIPv4, pkt{src: podA, dst: podC, payload: 20}.ip()))
	out := devC.Take()
	if len(out) != 1 || len(out[0]) != header.VirtioNetHdrLen+14+40 {
		t.Fatalf("offload port got %d frames", len(out))
	}
	for _, b := range out[0][:header.VirtioNetHdrLen] {
		if b != 0 {
			t.Fatalf("virtio header not zero: %x", out[0][:10])
		}
	}
	if header.Ethernet(out[0][10:]).Dst() != macC {
		t.Fatal("frame after the header is not for pod C")
	}
}

func TestBadOffload(t *testing.T) {
	for name, mutate := range map[string]func([]byte){
		"gso udp":               func(f []byte) { f[1] = header.VirtioGSOUDP },
		"checksum beyond frame": func(f []byte) { binary.LittleEndian.PutUint16(f[6:], 60000) },
		"gso without tcp":       func(f []byte) { f[10+14+9] = header.ProtocolUDP },
		"zero mss":              func(f []byte) { binary.LittleEndian.PutUint16(f[4:], 0) },
	} {
		t.Run(name, func(t *testing.T) {
			h := newHarness(t)
			pC, _ := withOffloadPort(t, h)
			f := tcpSuper(remoteV, 3000, 1000, header.TCPFlagACK)
			if name == "checksum beyond frame" {
				f = tcpSuper(remoteV, 100, 1000, header.TCPFlagACK)
			}
			mutate(f)
			h.fromOffload(podIngress(pC), f)
			if d := h.drops(); d["bad_offload"] != 1 || len(h.u.Take()) != 0 {
				t.Fatalf("drops %v", d)
			}
		})
	}
}

func TestSegmentationAllocatesNothing(t *testing.T) {
	h := newHarness(t)
	pC, _ := withOffloadPort(t, h)
	h.u.Discard = true
	f := tcpSuper(remoteV, 8000, 1400, header.TCPFlagACK)
	h.fromOffload(podIngress(pC), f) // first superframe allocates the segment buffers
	if n := testing.AllocsPerRun(100, func() { h.fromOffload(podIngress(pC), f) }); n != 0 {
		t.Fatalf("%v allocations per superframe", n)
	}
}

// FuzzFromPodOffload: any virtio-net header and frame: no panic, and the
// segments that leave are no larger than the tunnel allows.
func FuzzFromPodOffload(f *testing.F) {
	f.Add(tcpSuper(remoteV, 3000, 1000, header.TCPFlagACK))
	f.Add(tcpSuper(podB, 100, 1400, header.TCPFlagACK))
	h := newHarness(&testing.T{})
	pC, _ := withOffloadPort(&testing.T{}, h)
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) > 65000 {
			return
		}
		h.fromOffload(podIngress(pC), b)
		for _, s := range h.u.Take() {
			if len(s.Pkt) > 1500 {
				t.Fatalf("%d-byte packet on a 1500 underlay", len(s.Pkt))
			}
		}
		h.devA.Take()
		h.devB.Take()
		h.host.Take()
	})
}

// seg is one TCP segment from a remote pod to pod C, as decapsulated.
func seg(seq uint32, payload int, flags uint8, sport uint16) []byte {
	ip := make([]byte, 20+32+payload)
	header.IPv4(ip).Encode(&header.IPv4Fields{TotalLen: len(ip), TTL: 64, Protocol: header.ProtocolTCP, FlagsFrag: header.IPv4FlagDF, Src: remoteV, Dst: podC})
	tcp := header.TCP(ip[20:])
	binary.BigEndian.PutUint16(tcp[0:], sport)
	binary.BigEndian.PutUint16(tcp[2:], 5201)
	tcp.SetSeq(seq)
	binary.BigEndian.PutUint32(tcp[8:], 777)
	tcp[12] = 8 << 4 // 32-byte header: timestamps
	copy(tcp[20:], []byte{1, 1, 8, 10, 0, 0, 0, 9, 0, 0, 0, 7})
	tcp.SetFlags(flags)
	for i := 52; i < len(ip); i++ {
		ip[i] = byte(seq) + byte(i)
	}
	tcp.SetChecksum(0)
	tcp.SetChecksum(^header.Checksum(tcp, header.PseudoHeaderSum(remoteV, podC, 6, len(tcp))))
	return vxlanPayload(ourVTEP, 4096, ip)
}

// TestGROCoalescesOneFlow: consecutive segments of one flow reach the pod
// as one superframe, gathered from where they lie or copied together.
func TestGROCoalescesOneFlow(t *testing.T) {
	for _, gather := range []bool{true, false} {
		t.Run(map[bool]string{true: "gathered", false: "copied"}[gather], func(t *testing.T) {
			h := newHarness(t)
			dev := routertest.NewDevice()
			dev.NoVec = !gather
			_, devC := withOffloadDevice(t, h, dev)
			ack, push := uint8(header.TCPFlagACK), uint8(header.TCPFlagACK|header.TCPFlagPSH)
			batch := [][]byte{
				seg(1000, 1000, ack, 1), seg(2000, 1000, ack, 1), seg(3000, 500, push, 1), // one superframe
				seg(9000, 1000, ack, 1), // a gap: on its own
				seg(5000, 100, ack, 2),  // another flow
			}
			h.w.begin()
			for i, p := range batch {
				n := copy(h.w.bufs[i][Headroom:], p)
				h.w.fromVXLAN(nodeB, h.w.bufs[i], Headroom, Headroom+n)
			}
			h.w.flush()
			out := devC.Take()
			if len(out) != 3 {
				t.Fatalf("pod C got %d writes, want 3 (drops %v)", len(out), h.drops())
			}
			v := header.VirtioNetHdr(out[0])
			ip := header.IPv4(out[0][header.VirtioNetHdrLen+14:])
			if v.GSOType() != header.VirtioGSOTCPv4 || v.GSOSize() != 1000 || !v.NeedsCsum() || v.CsumStart() != 34 || v.CsumOffset() != 16 ||
				v.HdrLen() != 14+20+32 || ip.TotalLen() != 20+32+2500 || ip.TTL() != 63 {
				t.Fatalf("superframe header %x, ip length %d", out[0][:10], ip.TotalLen())
			}
			validChecksum(t, ip)
			tcp := header.TCP(ip.Payload())
			if tcp.Seq() != 1000 || tcp.Flags() != push {
				t.Fatalf("superframe seq %d flags %#x", tcp.Seq(), tcp.Flags())
			}
			// The payload is the three segments' data in order.
			want := append(append(append([]byte{}, seg(1000, 1000, ack, 1)[22+52:]...), seg(2000, 1000, ack, 1)[22+52:]...), seg(3000, 500, push, 1)[22+52:]...)
			if string(tcp[32:]) != string(want) {
				t.Fatal("coalesced payload differs")
			}
			// Checksum as the receiving stack will finish it: field holds the
			// pseudo-header sum, the rest is summed over the segment.
			if header.Checksum(tcp, 0) == 0 {
				t.Fatal("implausible partial checksum")
			}
			for _, f := range out[1:] {
				if header.VirtioNetHdr(f).GSOType() != header.VirtioGSONone {
					t.Fatal("a lone segment was written with a GSO header")
				}
			}
			if o := h.r.Stats().Offload; o.GROFrames != 1 || o.GROSegments != 3 {
				t.Fatalf("offload counters %+v", o)
			}
			if s := h.r.Stats(); s.Ports[len(s.Ports)-1].TxPackets != 5 {
				t.Fatalf("tx counted %d packets, want 5 segments", s.Ports[len(s.Ports)-1].TxPackets)
			}
		})
	}
}

// TestGROVerifiesChecksums: a superframe is written CHECKSUM_PARTIAL,
// which the pod's kernel does not verify, so a segment from another node
// with a wrong TCP checksum (a kernel VXLAN peer sends no outer UDP
// checksum) never joins one: it is written alone, for the pod to drop.
func TestGROVerifiesChecksums(t *testing.T) {
	ack, push := uint8(header.TCPFlagACK), uint8(header.TCPFlagACK|header.TCPFlagPSH)
	corrupt := func(b []byte) []byte { b[len(b)-1] ^= 0x40; return b }
	for _, c := range []struct {
		name  string
		batch [][]byte
		gso   []int // segments per write: 1 is a plain frame
	}{
		{"middle", [][]byte{seg(1000, 1000, ack, 1), corrupt(seg(2000, 1000, ack, 1)), seg(3000, 1000, ack, 1), seg(4000, 500, push, 1)}, []int{1, 1, 2}},
		{"first", [][]byte{corrupt(seg(1000, 1000, ack, 1)), seg(2000, 1000, ack, 1), seg(3000, 500, push, 1)}, []int{1, 2}},
		{"last", [][]byte{seg(1000, 1000, ack, 1), seg(2000, 1000, ack, 1), corrupt(seg(3000, 500, push, 1))}, []int{2, 1}},
	} {
		t.Run(c.name, func(t *testing.T) {
			h := newHarness(t)
			_, devC := withOffloadPort(t, h)
			h.w.begin()
			for i, p := range c.batch {
				n := copy(h.w.bufs[i][Headroom:], p)
				h.w.fromVXLAN(nodeB, h.w.bufs[i], Headroom, Headroom+n)
			}
			h.w.flush()
			out := devC.Take()
			var got []int
			for _, f := range out {
				v := header.VirtioNetHdr(f)
				if v.GSOType() == header.VirtioGSONone {
					if v.NeedsCsum() {
						t.Fatal("a lone segment was written CHECKSUM_PARTIAL")
					}
					got = append(got, 1)
					continue
				}
				ip := header.IPv4(f[header.VirtioNetHdrLen+14:])
				got = append(got, (ip.TotalLen()-52+999)/1000)
			}
			if fmt.Sprint(got) != fmt.Sprint(c.gso) {
				t.Fatalf("writes of %v segments, want %v", got, c.gso)
			}
			if o := h.r.Stats().Offload; o.GROBadChecksums != 1 || o.GROFrames != 1 {
				t.Fatalf("offload counters %+v", o)
			}
		})
	}
}

// TestGSORuns: the segments of a superframe to one VXLAN peer leave in one
// UDP GSO send; a different size or peer starts a new run.
func TestGSORuns(t *testing.T) {
	h := newGSOHarness(t)
	pC, _ := withOffloadPort(t, h)
	h.fromOffload(podIngress(pC), tcpSuper(remoteV, 2500, 1000, header.TCPFlagACK))
	h.fromPodA(eth(header.EtherTypeIPv4, pkt{src: podA, dst: remoteV, payload: 10}.ip()))
	sends := h.gso.Take()
	if len(sends) != 2 {
		t.Fatalf("%d sends: %+v", len(sends), sends)
	}
	seg := header.VXLANLen + header.EthernetLen + 20 + 20 + 1000
	if s := sends[0]; s.Seg != seg || len(s.Data) != 2*seg+seg-500 || s.Dst != nodeB {
		t.Fatalf("first run %+v, want 3 datagrams of %d (last 500 shorter) to n2", s, seg)
	}
	if len(h.u.Take()) != 0 {
		t.Fatal("VXLAN also went through the raw socket")
	}
}

// TestGSORunOneSource: datagrams of flows to one VXLAN peer, however
// interleaved, share a run only when they leave from the same source (the
// socket, and so the source port, their hash picks): each flow always
// leaves from its own source, and interleaved flows still leave in one
// run per source.
func TestGSORunOneSource(t *testing.T) {
	h := newGSOHarness(t)
	flow := func(port uint16) []byte {
		ip := pkt{src: podA, dst: remoteV, payload: 100}.ip()
		binary.BigEndian.PutUint16(ip[20:], port)
		return eth(header.EtherTypeIPv4, ip)
	}
	src := func(f []byte) int { return int(uint32(encap.SourcePort(header.IPv4(f[14:]))) % routertest.GSOSources) }
	// Two flows of different sources, and a third of the first's.
	x := flow(1000)
	var y, z []byte
	for p := uint16(1001); y == nil || z == nil; p++ {
		switch f := flow(p); {
		case y == nil && src(f) != src(x):
			y = f
		case z == nil && src(f) == src(x):
			z = f
		}
	}
	h.fromPodA(x, y, z, y, x)
	sends := h.gso.Take()
	if len(sends) != 2 {
		t.Fatalf("%d runs, want one per source: %+v", len(sends), sends)
	}
	counts := map[int]int{}
	for _, s := range sends {
		n := len(s.Data) / s.Seg
		for d := 0; d < len(s.Data); d += s.Seg {
			inner := s.Data[d+header.VXLANLen+header.EthernetLen:]
			if got := int(uint32(encap.SourcePort(header.IPv4(inner))) % routertest.GSOSources); got != int(s.Hash%routertest.GSOSources) {
				t.Fatalf("a datagram of source %d in a run of source %d", got, s.Hash%routertest.GSOSources)
			}
		}
		counts[int(s.Hash%routertest.GSOSources)] += n
	}
	if counts[src(x)] != 3 || counts[src(y)] != 2 {
		t.Fatalf("datagrams per source %v, want 3 of %d and 2 of %d", counts, src(x), src(y))
	}
}

// TestGROMessageSplit: a receive message holding three datagrams (UDP
// GRO) is handled as three VXLAN packets, and they reach pod C as one
// coalesced superframe.
func TestGROMessageSplit(t *testing.T) {
	h := newHarness(t)
	_, devC := withOffloadPort(t, h)
	rx := routertest.NewReceiver(fib.ModeVXLAN)
	h.r.AttachUnderlay(rx)
	a, b, c := seg(1000, 1000, header.TCPFlagACK, 1), seg(2000, 1000, header.TCPFlagACK, 1), seg(3000, 1000, header.TCPFlagACK, 1)
	rx.InjectGRO(nodeB, append(append(append([]byte{}, a...), b...), c...), len(a))
	var out [][]byte
	testutil.WaitFor(t, 30*time.Second, "a write to pod C", func() bool { out = devC.Take(); return len(out) > 0 })
	if len(out) != 1 || header.VirtioNetHdr(out[0]).GSOType() != header.VirtioGSOTCPv4 {
		t.Fatalf("pod C got %d writes (drops %v)", len(out), h.drops())
	}
	if ip := header.IPv4(out[0][header.VirtioNetHdrLen+14:]); ip.TotalLen() != 52+3000 {
		t.Fatalf("superframe of %d bytes", ip.TotalLen())
	}
}

// TestGROMessageChecksums: the datagrams of a UDP GRO message came under
// UDP checksums the kernel verified (UnderlayReceiver), so their segments
// join a superframe without a second pass over them, even one whose TCP
// checksum is wrong (as a sender could make, under a right UDP checksum);
// the same segments in single datagrams, which may have come without a
// UDP checksum, are verified, and the bad one is written alone.
func TestGROMessageChecksums(t *testing.T) {
	for _, c := range []struct {
		name   string
		gro    bool
		writes int
		bad    uint64
	}{{"gro", true, 1, 0}, {"single", false, 3, 1}} {
		t.Run(c.name, func(t *testing.T) {
			h := newHarness(t)
			_, devC := withOffloadPort(t, h)
			rx := routertest.NewReceiver(fib.ModeVXLAN)
			a, b, d := seg(1000, 1000, header.TCPFlagACK, 1), seg(2000, 1000, header.TCPFlagACK, 1), seg(3000, 1000, header.TCPFlagACK, 1)
			b[len(b)-1] ^= 0x40
			// Queued before the reader starts, so that the single
			// datagrams are read in one batch, as the GRO message is.
			if c.gro {
				rx.InjectGRO(nodeB, append(append(append([]byte{}, a...), b...), d...), len(a))
			} else {
				for _, p := range [][]byte{a, b, d} {
					rx.InjectFrom(nodeB, p)
				}
			}
			h.r.AttachUnderlay(rx)
			out := takeSegments(t, devC, 3, func(f []byte) int {
				return max(1, (header.IPv4(f[header.VirtioNetHdrLen+14:]).TotalLen()-52)/1000)
			})
			if len(out) != c.writes {
				t.Fatalf("pod C got %d writes, want %d (drops %v)", len(out), c.writes, h.drops())
			}
			if o := h.r.Stats().Offload; o.GROBadChecksums != c.bad {
				t.Fatalf("%d bad checksums counted, want %d", o.GROBadChecksums, c.bad)
			}
		})
	}
}

// BenchmarkSuperframeVXLAN: one 64 KB TCP superframe from a pod, segmented
// into MSS-sized segments, each encapsulated in VXLAN and queued as one UDP
// GSO run (the in-memory underlay discards it).
func BenchmarkSuperframeVXLAN(b *testing.B) {
	h := newHarness(b)
	pC, _ := withOffloadPort(b, h)
	h.u.Discard = true
	f := tcpSuper(remoteV, 64000, 1398, header.TCPFlagACK)
	h.fromOffload(podIngress(pC), f)
	b.SetBytes(64000)
	b.ReportAllocs()
	for b.Loop() {
		h.fromOffload(podIngress(pC), f)
	}
}

// TestPlainFramesBatched: small UDP datagrams of one GRO receive message,
// lying back to back in one buffer, reach an offload pod in one batched
// write, each intact behind an all-zero virtio-net header (no header was
// written over the tail of the datagram before).
func TestPlainFramesBatched(t *testing.T) {
	h := newHarness(t)
	pC, devC := withOffloadPort(t, h)
	rx := routertest.NewReceiver(fib.ModeVXLAN)
	h.r.AttachUnderlay(rx)
	const n = 5
	var msg []byte
	var want [][]byte
	for i := 0; i < n; i++ {
		ip := pkt{src: remoteV, dst: podC, payload: 18}.ip()
		ip[len(ip)-1] = byte(0xa0 + i) // the tail a header in front of the next would hit
		header.IPv4(ip).ComputeChecksum()
		d := vxlanPayload(ourVTEP, 4096, ip)
		msg = append(msg, d...)
		want = append(want, d[8:])
	}
	rx.InjectGRO(nodeB, msg, len(msg)/n)
	var out [][]byte
	testutil.WaitFor(t, 30*time.Second, "writes to pod C", func() bool { out = append(out, devC.Take()...); return len(out) >= n })
	if calls := devC.PlainWrites(); calls != 1 {
		t.Errorf("%d plain writes for one receive message, want 1", calls)
	}
	for i, f := range out {
		if !bytes.Equal(f[:header.VirtioNetHdrLen], make([]byte, header.VirtioNetHdrLen)) {
			t.Errorf("frame %d: virtio-net header % x", i, f[:header.VirtioNetHdrLen])
		}
		got := f[header.VirtioNetHdrLen:]
		l4 := header.EthernetLen + header.IPv4MinLen // the router rewrites MACs and TTL only
		if len(got) != len(want[i]) || !bytes.Equal(got[l4:], want[i][l4:]) {
			t.Errorf("frame %d changed on the way:\n got % x\nwant % x", i, got, want[i])
		}
	}
	if pC.TxPackets.Load() != n {
		t.Errorf("tx packets %d, want %d", pC.TxPackets.Load(), n)
	}
}

// TestGSORunInPlace: a 64 KB superframe to a VXLAN peer is cut into
// segments that lie back to back and leave from where they were cut (no
// gathering copy), and every datagram of the runs is a whole VXLAN packet:
// VNI, inner IPv4 and TCP checksums, consecutive sequence numbers.
func TestGSORunInPlace(t *testing.T) {
	h := newGSOHarness(t)
	pC, _ := withOffloadPort(t, h)
	const payload, mss = 64000, 1398
	h.fromOffload(podIngress(pC), tcpSuper(remoteV, payload, mss, header.TCPFlagACK|header.TCPFlagPSH))
	for _, g := range h.w.gso.lane {
		if g.buf != nil {
			t.Error("the run was copied into the gathering buffer")
		}
	}
	next, total := uint32(0), 0
	sends := h.gso.Take()
	for _, s := range sends {
		if s.Dst != nodeB {
			t.Fatalf("run to %v", s.Dst)
		}
		for d := 0; d < len(s.Data); d += s.Seg {
			v := s.Data[d:min(d+s.Seg, len(s.Data))]
			if vni := header.VXLAN(v).VNI(); vni != 4096 {
				t.Fatalf("datagram at %d: VNI %d", total, vni)
			}
			ip := header.IPv4(v[header.VXLANLen+header.EthernetLen:])
			if _, st := ip.Check(); st != header.IPv4OK || !tcpChecksumOK(ip[:ip.TotalLen()]) {
				t.Fatalf("datagram at %d: IPv4 %v, TCP checksum ok %v", total, st, tcpChecksumOK(ip[:ip.TotalLen()]))
			}
			tcp := header.TCP(ip[header.IPv4MinLen:ip.TotalLen()])
			if seq := tcp.Seq() - 1000; seq != next {
				t.Fatalf("segment with relative seq %d where %d was due", seq, next)
			}
			n := len(tcp) - tcp.HeaderLen()
			next += uint32(n)
			total += n
		}
	}
	if total != payload {
		t.Fatalf("%d payload bytes in %d runs, want %d", total, len(sends), payload)
	}
}

// A superframe of SuperframeSegments segments, as the pod's TAP is told to
// hand over at most, leaves in exactly one UDP GSO send.
func TestSuperframeFitsOneSend(t *testing.T) {
	h := newGSOHarness(t)
	pC, _ := withOffloadPort(t, h)
	const mss = 1398 // pod MTU 1450 with TCP timestamps
	n := SuperframeSegments(1450)
	if n != 44 {
		t.Fatalf("SuperframeSegments(1450) = %d, want 44", n)
	}
	h.fromOffload(podIngress(pC), tcpSuper(remoteV, n*mss, mss, header.TCPFlagACK))
	if sends := h.gso.Take(); len(sends) != 1 || len(sends[0].Data) != n*sends[0].Seg {
		t.Fatalf("%d sends for one superframe of %d segments", len(sends), n)
	}
}

// hostSuper is tcpSuper as the host TUN hands it over: a virtio-net header
// and the IPv4 packet, no Ethernet header.
func hostSuper(dst [4]byte, payload, mss int, flags uint8) []byte {
	f := tcpSuper(dst, payload, mss, flags)
	v := header.VirtioNetHdr(f)
	out := append(f[:header.VirtioNetHdrLen:header.VirtioNetHdrLen], f[header.VirtioNetHdrLen+header.EthernetLen:]...)
	header.VirtioNetHdr(out).Encode(header.VirtioNetHdrFNeedsCsum, v.GSOType(), 40, mss, 20, 16)
	return out
}

// TestHostSuperframes: the host's TCP superframes and partial checksums
// are finished as a pod's are, with the host's rules (no TTL decrement),
// whether they go to a local pod or out as an in-place UDP GSO run.
func TestHostSuperframes(t *testing.T) {
	h := newGSOHarness(t)
	h.fromOffload(hostIngress, hostSuper(podB, 2500, 1000, header.TCPFlagACK|header.TCPFlagPSH))
	out := h.devB.Take()
	if len(out) != 3 || len(out[2]) != 14+40+500 {
		t.Fatalf("pod B got %d frames (drops %v)", len(out), h.drops())
	}
	for i, f := range out {
		ip := header.IPv4(f[14:])
		if !tcpChecksumOK(ip) || ip.TTL() != 64 || ip.ID() != uint16(100+i) {
			t.Fatalf("segment %d: checksum ok %v, TTL %d, ID %d", i, tcpChecksumOK(ip), ip.TTL(), ip.ID())
		}
	}
	h.fromOffload(hostIngress, hostSuper(podB, 600, 1400, header.TCPFlagACK))
	if out := h.devB.Take(); len(out) != 1 || !tcpChecksumOK(header.IPv4(out[0][14:])) {
		t.Fatalf("partial checksum: pod B got %d frames", len(out))
	}

	const payload, mss = 40 * 1398, 1398
	h.fromOffload(hostIngress, hostSuper(remoteV, payload, mss, header.TCPFlagACK))
	for _, g := range h.w.gso.lane {
		if g.buf != nil {
			t.Error("the run was copied into the gathering buffer")
		}
	}
	sends := h.gso.Take()
	if len(sends) != 1 || len(sends[0].Data) != 40*sends[0].Seg {
		t.Fatalf("%d sends for one superframe of 40 segments", len(sends))
	}
	s := sends[0]
	for d := 0; d < len(s.Data); d += s.Seg {
		v := s.Data[d : d+s.Seg]
		if header.VXLAN(v).VNI() != 4096 || header.Ethernet(v[header.VXLANLen:]).Type() != header.EtherTypeIPv4 {
			t.Fatalf("datagram at %d: bad VXLAN or inner Ethernet header", d)
		}
		if ip := header.IPv4(v[header.VXLANLen+header.EthernetLen:]); !tcpChecksumOK(ip[:ip.TotalLen()]) {
			t.Fatalf("datagram at %d: bad TCP checksum", d)
		}
	}

	before := h.drops()["bad_offload"]
	bad := hostSuper(podB, 2500, 1000, header.TCPFlagACK)
	bad[1] = 5 // GSO UDP: not ours to cut
	h.fromOffload(hostIngress, bad)
	if got := h.drops()["bad_offload"]; got != before+1 {
		t.Fatalf("bad_offload %d, want %d", got, before+1)
	}
}

// FuzzFromHostOffload: any virtio-net header and packet from the host: no
// panic, and each is forwarded or counted.
func FuzzFromHostOffload(f *testing.F) {
	f.Add(hostSuper(remoteV, 3000, 1000, header.TCPFlagACK))
	f.Add(hostSuper(podB, 100, 1400, header.TCPFlagACK))
	h := newGSOHarness(&testing.T{})
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) > 65000 {
			return
		}
		before := h.totalDrops()
		h.fromOffload(hostIngress, b)
		out := len(h.u.Take()) + len(h.devA.Take()) + len(h.devB.Take()) + len(h.host.Take())
		if out == 0 && h.totalDrops() == before && len(h.gso.Take()) == 0 {
			t.Fatalf("packet neither forwarded nor counted: %x", b)
		}
	})
}

// TestGROMessagePartialSegment: in a UDP GRO message, a segment whose TCP
// checksum field holds the pseudo-header sum (left to finish by its
// sender, or a real checksum that happens to equal it) has no room in
// front of it for a virtio-net header: it is finished where it lies and
// joins the others, and the segment before it is not overwritten.
func TestGROMessagePartialSegment(t *testing.T) {
	h, pC, _ := newNativeHarness(t) // a host that takes superframes: they may go to pods whole
	devC := pC.dev.(*routertest.Device)
	rx := routertest.NewReceiver(fib.ModeVXLAN)
	a, b, c := seg(1000, 1000, header.TCPFlagACK, 1), seg(2000, 1000, header.TCPFlagACK, 1), seg(3000, 1000, header.TCPFlagACK, 1)
	ic := header.IPv4(c[22:])
	header.TCP(ic[20:]).SetChecksum(header.PartialChecksum(ic.Src(), ic.Dst(), header.ProtocolTCP, len(ic)-20))
	rx.InjectGRO(nodeB, append(append(append([]byte{}, a...), b...), c...), len(a))
	h.r.AttachUnderlay(rx)
	out := takeSegments(t, devC, 3000, func(f []byte) int { return header.IPv4(f[header.VirtioNetHdrLen+14:]).TotalLen() - 52 })
	var payload []byte
	for _, f := range out {
		v := header.VirtioNetHdr(f)
		ip := header.IPv4(f[header.VirtioNetHdrLen+14:])
		if v.NeedsCsum() && !finishChecksum(f[header.VirtioNetHdrLen:], header.EthernetLen, v.CsumStart(), v.CsumOffset()) {
			t.Fatal("a checksum cannot be finished")
		}
		if !tcpChecksumOK(ip) {
			t.Fatalf("a frame of %d bytes to pod C has a bad TCP checksum", len(ip))
		}
		payload = append(payload, ip[52:]...)
	}
	var want []byte
	for _, s := range [][]byte{a, b, c} {
		want = append(want, s[22+52:]...)
	}
	if !bytes.Equal(payload, want) {
		t.Fatalf("pod C got %d bytes of payload that differ from the %d sent", len(payload), len(want))
	}
}

// takeSegments takes what dev is written until the frames add up to
// want, as count counts each (segments, or payload bytes).
func takeSegments(t *testing.T, dev *routertest.Device, want int, count func(f []byte) int) [][]byte {
	t.Helper()
	var out [][]byte
	testutil.WaitFor(t, 30*time.Second, "writes to pod C", func() bool {
		out = append(out, dev.Take()...)
		n := 0
		for _, f := range out {
			n += count(f)
		}
		return n >= want
	})
	return out
}
