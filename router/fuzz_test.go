package router

import (
	"testing"
	"time"

	"github.com/tortie-net/tortie/encap"
	"github.com/tortie-net/tortie/header"
	"github.com/tortie-net/tortie/internal/testutil"
)

// outputs counts everything the harness's doubles received and checks the
// invariants every forwarded packet must hold: no larger than the input plus
// the biggest encapsulation, valid IPv4 checksums, a TTL that never grew.
func (h *harness) checkOutputs(t *testing.T, inLen int, inTTL int) int {
	n := 0
	for _, f := range append(h.devA.Take(), h.devB.Take()...) {
		n++
		if len(f) > inLen+encap.OverheadVXLAN+header.EthernetLen && len(f) > 576+14 {
			t.Fatalf("output %d bytes from %d input", len(f), inLen)
		}
	}
	for _, s := range h.u.Take() {
		n++
		if len(s.Pkt) > inLen+encap.OverheadVXLAN {
			t.Fatalf("underlay output %d bytes from %d input", len(s.Pkt), inLen)
		}
		validChecksum(t, s.Pkt)
	}
	for _, p := range h.host.Take() {
		n++
		if inTTL >= 0 && int(header.IPv4(p).TTL()) > inTTL {
			t.Fatalf("TTL grew")
		}
	}
	return n
}

func (h *harness) totalDrops() uint64 {
	var n uint64
	for _, v := range h.r.Stats().Drops {
		n += v
	}
	return n
}

func seedFrames(f *testing.F) {
	f.Add(eth(header.EtherTypeIPv4, pkt{src: podA, dst: podB}.ip()))
	f.Add(eth(header.EtherTypeIPv4, pkt{src: podA, dst: remoteV, payload: 3000}.ip()))
	f.Add(eth(header.EtherTypeIPv4, pkt{src: podA, dst: remoteI, payload: 1480, flags: header.IPv4FlagDF}.ip()))
	f.Add(eth(header.EtherTypeIPv4, pkt{src: podA, dst: podB, opts: []byte{0x83, 7, 4, 0, 0, 0, 0, 0}}.ip()))
	f.Add(eth(header.EtherTypeARP, make([]byte, 28)))
}

// FuzzFromPod: arbitrary frames from a pod never panic, and each one is
// either forwarded or counted as a drop.
func FuzzFromPod(f *testing.F) {
	seedFrames(f)
	h := newHarness(&testing.T{})
	f.Fuzz(func(t *testing.T, frame []byte) {
		if len(frame) > 9000 {
			return
		}
		before := h.totalDrops()
		h.fromPodA(frame)
		ttl := -1
		if len(frame) > 22 {
			ttl = int(frame[22])
		}
		if h.checkOutputs(t, len(frame), ttl) == 0 && h.totalDrops() == before {
			t.Fatalf("frame neither forwarded nor counted: %x", frame)
		}
	})
}

// FuzzFromUnderlay feeds arbitrary VXLAN payloads and IPIP packets from a
// known node.
func FuzzFromUnderlay(f *testing.F) {
	f.Add(false, vxlanPayload(ourVTEP, 4096, pkt{src: remoteV, dst: podA}.ip()))
	f.Add(true, func() []byte {
		in := pkt{src: remoteI, dst: podB}.ip()
		o := make([]byte, 20+len(in))
		header.IPv4(o).Encode(&header.IPv4Fields{TotalLen: len(o), TTL: 64, Protocol: 4, Src: nodeC, Dst: nodeA})
		copy(o[20:], in)
		return o
	}())
	h := newHarness(&testing.T{})
	f.Fuzz(func(t *testing.T, ipip bool, b []byte) {
		if len(b) > 9000 {
			return
		}
		before := h.totalDrops()
		h.w.begin()
		n := copy(h.w.bufs[0][Headroom:], b)
		if ipip {
			h.w.fromIPIP(h.w.bufs[0], Headroom, Headroom+n)
		} else {
			h.w.fromVXLAN(nodeB, h.w.bufs[0], Headroom, Headroom+n)
		}
		h.w.flush()
		for _, s := range h.u.Take() {
			// Only our own ICMP errors (e.g. time exceeded) may go back out.
			in := header.IPv4(s.Pkt[20:])
			if s.Pkt[9] == header.ProtocolUDP {
				in = header.IPv4(s.Pkt[encap.OverheadVXLAN:])
			}
			if in.Protocol() != header.ProtocolICMP || in.Src() != nodeA {
				t.Fatalf("decapsulated packet relayed to the underlay: %x", s.Pkt)
			}
		}
		if h.checkOutputs(t, len(b), -1) == 0 && h.totalDrops() == before {
			t.Fatalf("input neither delivered nor counted: %x", b)
		}
	})
}

// BenchmarkPodToVXLAN measures the per-packet path: parse and validate a
// pod frame, FIB lookup, TTL decrement, VXLAN encapsulation, queueing.
func BenchmarkPerPacket(b *testing.B) {
	for _, c := range []struct {
		name string
		dst  [4]byte
	}{{"vxlan", remoteV}, {"ipip", remoteI}, {"native", remoteN}, {"local", podB}} {
		b.Run(c.name, func(b *testing.B) {
			h := newHarness(&testing.T{})
			h.u.Discard, h.devB.Discard = true, true
			frame := eth(header.EtherTypeIPv4, pkt{src: podA, dst: c.dst, payload: 44, proto: header.ProtocolUDP}.ip())
			w := h.w
			w.begin()
			b.ReportAllocs()
			b.SetBytes(int64(len(frame)))
			for i := 0; i < b.N; i++ {
				buf := w.bufs[i&7]
				n := copy(buf[Headroom:], frame)
				w.fromPod(h.pA, buf, Headroom, Headroom+n)
				if i&7 == 7 {
					// Drop the queue without the sender's cost: only the
					// per-packet work is measured here.
					w.under.reset()
				}
			}
		})
	}
}

// BenchmarkARPReply: a gateway ARP request turned into its reply and
// written back (rate limiter set out of the way).
func BenchmarkARPReply(b *testing.B) {
	h := newHarness(&testing.T{})
	h.devA.Discard = true
	h.w.arp = newBucket(1e12, 1e12)
	a := make(header.ARP, 28)
	a.EncodeRequest(macA, podA, Gateway)
	req := eth(header.EtherTypeARP, a)
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		n := copy(h.w.bufs[0][Headroom:], req)
		h.w.fromPod(h.pA, h.w.bufs[0], Headroom, Headroom+n)
	}
}

// BenchmarkRouterCore runs the real reader goroutine of a pod port over an
// in-memory device: batches of 16 frames to a VXLAN peer, through read,
// route, encapsulate and one underlay send per batch.
func BenchmarkRouterCore(b *testing.B) {
	h := newHarness(&testing.T{})
	h.u.Discard = true
	frame := eth(header.EtherTypeIPv4, pkt{src: podA, dst: remoteV, payload: 22, proto: header.ProtocolUDP}.ip())
	b.ReportAllocs()
	b.SetBytes(int64(len(frame)))
	for i := 0; i < b.N; i++ {
		h.devA.Inject(frame)
	}
	testutil.WaitFor(b, time.Minute, "every frame read", func() bool { return h.r.Stats().Ports[0].RxPackets >= uint64(b.N) })
}
