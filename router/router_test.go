package router

import (
	"encoding/binary"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"github.com/tortie-net/tortie/encap"
	"github.com/tortie-net/tortie/fib"
	"github.com/tortie-net/tortie/header"
	"github.com/tortie-net/tortie/internal/testutil"
	"github.com/tortie-net/tortie/router/routertest"
)

var (
	nodeA   = [4]byte{10, 0, 0, 1}
	nodeB   = [4]byte{10, 0, 0, 2} // VXLAN
	nodeC   = [4]byte{10, 0, 0, 3} // IPIP
	nodeD   = [4]byte{10, 0, 0, 4} // native
	podA    = [4]byte{10, 244, 1, 2}
	podB    = [4]byte{10, 244, 1, 3}
	remoteV = [4]byte{10, 244, 2, 5}
	remoteI = [4]byte{10, 244, 3, 5}
	remoteN = [4]byte{10, 244, 4, 5}
	ourVTEP = header.MAC{0x66, 1, 2, 3, 4, 5}
	bVTEP   = header.MAC{0x66, 9, 9, 9, 9, 9}
	macA    = header.MAC{2, 0, 0, 0, 0, 0xa}
	macB    = header.MAC{2, 0, 0, 0, 0, 0xb}
)

type harness struct {
	t          testing.TB
	r          *Router
	u          *routertest.Underlay
	gso        *routertest.GSO // nil: VXLAN leaves through u
	host       *routertest.Device
	devA, devB *routertest.Device
	pA, pB     *Port
	w          *worker
}

func newHarness(t testing.TB) *harness {
	t.Helper()
	return newHarnessWith(t, nil)
}

// newGSOHarness is newHarness with VXLAN sent as UDP GSO runs to h.gso.
func newGSOHarness(t testing.TB) *harness {
	t.Helper()
	return newHarnessWith(t, &routertest.GSO{})
}

func newHarnessWith(t testing.TB, gso *routertest.GSO) *harness {
	t.Helper()
	f := fib.New()
	pfx := func(s string) netip.Prefix { return netip.MustParsePrefix(s) }
	err := f.Update(func(tx fib.Tx) error {
		for _, r := range []fib.Route{
			{Prefix: pfx("10.244.1.0/26"), NextHop: fib.NextHop{Kind: fib.KindBlackhole}},
			{Prefix: pfx("10.244.2.0/26"), NextHop: fib.NextHop{Kind: fib.KindRemote, Node: nodeB, Mode: fib.ModeVXLAN, VTEPMAC: bVTEP}},
			{Prefix: pfx("10.244.3.0/26"), NextHop: fib.NextHop{Kind: fib.KindRemote, Node: nodeC, Mode: fib.ModeIPIP}},
			{Prefix: pfx("10.244.4.0/26"), NextHop: fib.NextHop{Kind: fib.KindRemote, Node: nodeD, Mode: fib.ModeNative}},
			{Prefix: pfx("10.0.0.0/24"), NextHop: fib.NextHop{Kind: fib.KindHost}},
		} {
			r.Source = fib.SourceStatic
			if err := tx.Set(r); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, u: &routertest.Underlay{}, gso: gso, host: routertest.NewDevice(), devA: routertest.NewDevice(), devB: routertest.NewDevice()}
	h.r = New(Config{NodeAddr: nodeA, VTEPMAC: ourVTEP, UnderlayMTU: 1500}, f, testUnderlay(h.u, gso))
	h.r.AttachHost(h.host)
	if h.pA, err = h.r.AddPort(PortConfig{Name: "a", Addr: netip.AddrFrom4(podA), MAC: macA, PolicyKey: "ns/a"}, h.devA); err != nil {
		t.Fatal(err)
	}
	if h.pB, err = h.r.AddPort(PortConfig{Name: "b", Addr: netip.AddrFrom4(podB), MAC: macB, PolicyKey: "ns/b"}, h.devB); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.r.Close() })
	h.w = h.r.newWorker(8, maxPacket)
	return h
}

// testUnderlay opens each worker's senders on the doubles u and, if set, gso.
func testUnderlay(u *routertest.Underlay, gso *routertest.GSO) Underlay {
	ul := Underlay{Sender: func() UnderlaySender { return u.NewSender() }}
	if gso != nil {
		ul.GSO = func() GSOSender { return gso.NewWriter() }
	}
	return ul
}

type pkt struct {
	src, dst [4]byte
	ttl      uint8
	proto    uint8
	flags    uint16
	payload  int
	opts     []byte
}

// ip builds a valid IPv4 packet.
func (p pkt) ip() []byte {
	if p.ttl == 0 {
		p.ttl = 64
	}
	if p.proto == 0 {
		p.proto = header.ProtocolUDP
	}
	hl := 20 + len(p.opts)
	b := make([]byte, hl+p.payload)
	for i := hl; i < len(b); i++ {
		b[i] = byte(i)
	}
	ip := header.IPv4(b)
	ip.Encode(&header.IPv4Fields{TotalLen: len(b), TTL: p.ttl, Protocol: p.proto, FlagsFrag: p.flags, Src: p.src, Dst: p.dst})
	if len(p.opts) > 0 {
		copy(b[20:], p.opts)
		b[0] = 0x40 | byte(hl/4)
		ip.ComputeChecksum()
	}
	return b
}

func eth(typ uint16, payload []byte) []byte {
	f := make([]byte, 14+len(payload))
	header.Ethernet(f).Encode(GatewayMAC, macA, typ)
	copy(f[14:], payload)
	return f
}

// run processes frames as if read from pod A in one batch.
func (h *harness) fromPodA(frames ...[]byte) {
	h.w.begin()
	for i, f := range frames {
		n := copy(h.w.bufs[i%len(h.w.bufs)][Headroom:], f)
		h.w.fromPod(h.pA, h.w.bufs[i%len(h.w.bufs)], Headroom, Headroom+n)
	}
	h.w.flush()
}

func (h *harness) drops() map[string]uint64 {
	out := map[string]uint64{}
	for k, v := range h.r.Stats().Drops {
		if v != 0 {
			out[k] = v
		}
	}
	return out
}

func decode(t testing.TB, b []byte, first gopacket.LayerType) gopacket.Packet {
	t.Helper()
	p := gopacket.NewPacket(b, first, gopacket.Default)
	if el := p.ErrorLayer(); el != nil {
		t.Fatalf("gopacket cannot decode %x: %v", b, el.Error())
	}
	return p
}

func validChecksum(t testing.TB, ip []byte) {
	t.Helper()
	if _, st := header.IPv4(ip).Check(); st != header.IPv4OK {
		t.Fatalf("emitted IPv4 header invalid (status %d): %x", st, ip[:20])
	}
}

// icmpTo checks that the single frame written to pod A is an ICMP error of
// the given type and code, and returns its next-hop MTU field.
func (h *harness) icmpToA(typ, code uint8) uint16 {
	h.t.Helper()
	out := h.devA.Take()
	if len(out) != 1 {
		h.t.Fatalf("want one ICMP frame to pod A, got %d", len(out))
	}
	p := decode(h.t, out[0], layers.LayerTypeEthernet)
	ic, _ := p.Layer(layers.LayerTypeICMPv4).(*layers.ICMPv4)
	ip4, _ := p.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
	if ic == nil || ip4 == nil {
		h.t.Fatalf("not ICMP: %v", p)
	}
	if ic.TypeCode.Type() != typ || ic.TypeCode.Code() != code {
		h.t.Fatalf("ICMP %v, want type %d code %d", ic.TypeCode, typ, code)
	}
	if ip4.SrcIP.String() != "10.0.0.1" || ip4.DstIP.String() != "10.244.1.2" {
		h.t.Fatalf("ICMP %v -> %v", ip4.SrcIP, ip4.DstIP)
	}
	validChecksum(h.t, out[0][14:])
	if header.Checksum(out[0][34:], 0) != 0xffff {
		h.t.Fatal("bad ICMP checksum")
	}
	return binary.BigEndian.Uint16(out[0][34+6:])
}

func TestFaultTable(t *testing.T) {
	big := pkt{src: podA, dst: remoteV, payload: 1440, flags: header.IPv4FlagDF}.ip() // 1460 > 1450
	cases := []struct {
		name  string
		frame []byte
		drop  string
	}{
		{"frame shorter than 14", make([]byte, 10), "too_short"},
		{"ipv4 shorter than 20", eth(header.EtherTypeIPv4, make([]byte, 19)), "too_short"},
		{"ihl < 5", eth(header.EtherTypeIPv4, func() []byte {
			b := pkt{src: podA, dst: podB}.ip()
			b[0] = 0x44
			header.IPv4(b[:16]).SetChecksum(0)
			return b
		}()), "malformed"},
		{"total length > read", eth(header.EtherTypeIPv4, pkt{src: podA, dst: podB, payload: 10}.ip()[:25]), "malformed"},
		{"bad checksum", eth(header.EtherTypeIPv4, func() []byte { b := pkt{src: podA, dst: podB}.ip(); b[10]++; return b }()), "bad_checksum"},
		{"ip version 6 in ipv4 frame", eth(header.EtherTypeIPv4, func() []byte { b := pkt{src: podA, dst: podB}.ip(); b[0] = 0x65; return b }()), "bad_version"},
		{"ipv6 ethertype", eth(header.EtherTypeIPv6, make([]byte, 40)), "ipv6"},
		{"unknown ethertype", eth(0x88cc, make([]byte, 40)), "unsupported_ethertype"},
		{"spoofed source", eth(header.EtherTypeIPv4, pkt{src: podB, dst: remoteV}.ip()), "spoofed_source"},
		{"loopback destination", eth(header.EtherTypeIPv4, pkt{src: podA, dst: [4]byte{127, 0, 0, 1}}.ip()), "martian"},
		{"link-local destination", eth(header.EtherTypeIPv4, pkt{src: podA, dst: [4]byte{169, 254, 1, 1}}.ip()), "martian"},
		{"multicast destination", eth(header.EtherTypeIPv4, pkt{src: podA, dst: [4]byte{224, 0, 0, 5}}.ip()), "not_unicast"},
		{"pod sends ipip", eth(header.EtherTypeIPv4, pkt{src: podA, dst: nodeB, proto: header.ProtocolIPIP, payload: 20}.ip()), "pod_encap"},
		{"pod sends vxlan", eth(header.EtherTypeIPv4, func() []byte {
			b := pkt{src: podA, dst: nodeB, payload: 30}.ip()
			header.UDP(b[20:]).Encode(1234, 4789, 30, 0)
			return b
		}()), "pod_encap"},
		{"malformed option", eth(header.EtherTypeIPv4, pkt{src: podA, dst: podB, opts: []byte{7, 9, 0, 0}}.ip()), "malformed"},
		{"own block, no pod", eth(header.EtherTypeIPv4, pkt{src: podA, dst: [4]byte{10, 244, 1, 9}}.ip()), "blackhole"},
		{"arp for someone else", eth(header.EtherTypeARP, func() []byte {
			a := make(header.ARP, 28)
			a.EncodeRequest(macA, podA, podB)
			return a
		}()), "arp_ignored"},
		{"arp truncated", eth(header.EtherTypeARP, make([]byte, 20)), "malformed"},
		{"no route", eth(header.EtherTypeIPv4, pkt{src: podA, dst: [4]byte{8, 8, 8, 8}}.ip()), "no_route"},
		{"ttl 1", eth(header.EtherTypeIPv4, pkt{src: podA, dst: podB, ttl: 1}.ip()), "ttl_exceeded"},
		{"df too big for vxlan", eth(header.EtherTypeIPv4, big), "frag_needed"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := newHarness(t)
			h.fromPodA(c.frame)
			got := h.drops()
			if len(got) != 1 || got[c.drop] != 1 {
				t.Fatalf("drops %v, want exactly %s=1", got, c.drop)
			}
			if n := len(h.devB.Take()) + len(h.u.Take()); n != 0 {
				t.Fatalf("%d packets forwarded", n)
			}
			switch c.drop {
			case "no_route":
				h.icmpToA(header.ICMPDestUnreach, header.ICMPCodeNetUnreach)
			case "ttl_exceeded":
				h.icmpToA(header.ICMPTimeExceeded, 0)
			case "frag_needed":
				if mtu := h.icmpToA(header.ICMPDestUnreach, header.ICMPCodeFragNeeded); mtu != 1450 {
					t.Fatalf("frag needed MTU %d, want 1450", mtu)
				}
			default:
				if out := h.devA.Take(); len(out) != 0 {
					t.Fatalf("unexpected reply to pod A: %x", out)
				}
			}
		})
	}
}

func TestLocalDelivery(t *testing.T) {
	h := newHarness(t)
	in := pkt{src: podA, dst: podB, proto: 253, payload: 30}.ip() // unknown protocol: layer 3 only
	h.fromPodA(append(eth(header.EtherTypeIPv4, in), 0, 0, 0, 0)) // with L2 padding
	out := h.devB.Take()
	if len(out) != 1 || len(out[0]) != 14+len(in) {
		t.Fatalf("pod B got %d frames (len %v)", len(out), out)
	}
	e := header.Ethernet(out[0])
	if e.Dst() != macB || e.Src() != GatewayMAC || header.IPv4(out[0][14:]).TTL() != 63 {
		t.Fatalf("bad frame %x", out[0][:24])
	}
	validChecksum(t, out[0][14:])
	// Options are honoured and kept.
	h.fromPodA(eth(header.EtherTypeIPv4, pkt{src: podA, dst: podB, opts: []byte{1, 1, 1, 0}}.ip()))
	if out := h.devB.Take(); len(out) != 1 || header.IPv4(out[0][14:]).HeaderLen() != 24 {
		t.Fatalf("packet with options not forwarded intact")
	}
	if d := h.drops(); len(d) != 0 {
		t.Fatalf("drops %v", d)
	}
	s := h.r.Stats()
	for _, p := range s.Ports {
		if p.Name == "b" && (p.TxPackets != 2 || p.TxBytes == 0) {
			t.Fatalf("port b counters %+v", p)
		}
	}
}

func TestARPGateway(t *testing.T) {
	h := newHarness(t)
	a := make(header.ARP, 28)
	a.EncodeRequest(macA, podA, Gateway)
	req := eth(header.EtherTypeARP, a)
	header.Ethernet(req).SetDst(header.BroadcastMAC)
	h.fromPodA(req)
	out := h.devA.Take()
	if len(out) != 1 {
		t.Fatalf("want one ARP reply, got %d", len(out))
	}
	p := decode(t, out[0], layers.LayerTypeEthernet)
	arp := p.Layer(layers.LayerTypeARP).(*layers.ARP)
	if arp.Operation != layers.ARPReply || header.MAC(arp.SourceHwAddress) != GatewayMAC ||
		[4]byte(arp.SourceProtAddress) != Gateway || [4]byte(arp.DstProtAddress) != podA ||
		header.Ethernet(out[0]).Dst() != macA {
		t.Fatalf("bad reply %+v", arp)
	}
	// A storm is answered up to the burst, then counted.
	frames := make([][]byte, 0, 100)
	for i := 0; i < 100; i++ {
		frames = append(frames, req)
	}
	for _, f := range frames {
		h.fromPodA(f)
	}
	replies := len(h.devA.Take())
	if replies >= 100 || h.r.Drops(DropARPRateLimited) == 0 || uint64(replies)+h.r.Drops(DropARPRateLimited) != 100 {
		t.Fatalf("%d replies, %d rate-limited", replies, h.r.Drops(DropARPRateLimited))
	}
}

func TestEncapsulation(t *testing.T) {
	h := newHarness(t)
	h.fromPodA(
		eth(header.EtherTypeIPv4, pkt{src: podA, dst: remoteV, payload: 100, proto: header.ProtocolICMP}.ip()),
		eth(header.EtherTypeIPv4, pkt{src: podA, dst: remoteI, payload: 100, flags: header.IPv4FlagDF}.ip()),
		eth(header.EtherTypeIPv4, pkt{src: podA, dst: remoteN, payload: 100}.ip()),
	)
	sent := h.u.Take()
	if len(sent) != 3 {
		t.Fatalf("sent %d", len(sent))
	}
	// VXLAN, decoded independently.
	p := decode(t, sent[0].Pkt, layers.LayerTypeIPv4)
	vx, _ := p.Layer(layers.LayerTypeVXLAN).(*layers.VXLAN)
	udp, _ := p.Layer(layers.LayerTypeUDP).(*layers.UDP)
	if vx == nil || udp == nil || vx.VNI != 4096 || !vx.ValidIDFlag || udp.DstPort != 4789 || udp.SrcPort < 32768 || udp.SrcPort > 60999 {
		t.Fatalf("bad vxlan %v", p)
	}
	if sent[0].Dst != nodeB {
		t.Fatalf("vxlan dst %v", sent[0].Dst)
	}
	validChecksum(t, sent[0].Pkt)
	inner := sent[0].Pkt[encap.OverheadVXLAN:]
	ie := header.Ethernet(sent[0].Pkt[encap.OverheadVXLAN-14:])
	if ie.Dst() != bVTEP || ie.Src() != ourVTEP || header.IPv4(inner).TTL() != 63 {
		t.Fatalf("inner eth %x", ie[:14])
	}
	validChecksum(t, inner)
	// IPIP: protocol 4, DF copied.
	o := header.IPv4(sent[1].Pkt)
	if o.Protocol() != 4 || o.Src() != nodeA || o.Dst() != nodeC || !o.DF() || sent[1].Dst != nodeC {
		t.Fatalf("bad ipip outer %x", sent[1].Pkt[:20])
	}
	validChecksum(t, sent[1].Pkt)
	validChecksum(t, sent[1].Pkt[20:])
	decode(t, sent[1].Pkt, layers.LayerTypeIPv4)
	// Native: the packet itself, to its own destination.
	if sent[2].Dst != remoteN || header.IPv4(sent[2].Pkt).TTL() != 63 || len(sent[2].Pkt) != 120 {
		t.Fatalf("bad native %x", sent[2].Pkt[:20])
	}
	// Flow entropy: different flows, different source ports (usually).
	ports := map[uint16]bool{}
	for i := 0; i < 16; i++ {
		b := pkt{src: podA, dst: [4]byte{10, 244, 2, byte(i)}, payload: 8}.ip()
		ports[encap.SourcePort(b)] = true
	}
	if len(ports) < 8 {
		t.Fatalf("source ports barely vary: %v", ports)
	}
}

func TestFragmentWithoutDF(t *testing.T) {
	h := newHarness(t)
	orig := pkt{src: podA, dst: remoteV, payload: 3000}.ip()
	h.fromPodA(eth(header.EtherTypeIPv4, orig))
	sent := h.u.Take()
	if len(sent) != 3 {
		t.Fatalf("want 3 fragments, got %d (drops %v)", len(sent), h.drops())
	}
	var got []byte
	for i, s := range sent {
		if len(s.Pkt) > 1500 {
			t.Fatalf("fragment %d is %d bytes on the wire", i, len(s.Pkt))
		}
		f := header.IPv4(s.Pkt[encap.OverheadVXLAN:])
		validChecksum(t, f)
		if f.FragOffset() != len(got) || f.MF() != (i < 2) {
			t.Fatalf("fragment %d: offset %d MF %v", i, f.FragOffset(), f.MF())
		}
		got = append(got, f.Payload()...)
	}
	if string(got) != string(orig[20:]) {
		t.Fatal("fragments do not reassemble to the original payload")
	}
}

func TestPathMTULearnt(t *testing.T) {
	h := newHarness(t)
	h.u.SetMTU(1400) // the underlay shrank under us
	h.fromPodA(eth(header.EtherTypeIPv4, pkt{src: podA, dst: remoteV, payload: 1400, flags: header.IPv4FlagDF}.ip()))
	if h.r.PathMTU() != 1400 || h.r.Drops(DropMTUExceeded) != 1 {
		t.Fatalf("path MTU %d, drops %v", h.r.PathMTU(), h.drops())
	}
	if mtu := h.icmpToA(header.ICMPDestUnreach, header.ICMPCodeFragNeeded); mtu != 1350 {
		t.Fatalf("ICMP MTU %d, want 1350", mtu)
	}
	// The next big packet is refused up front, a small one goes through.
	h.fromPodA(eth(header.EtherTypeIPv4, pkt{src: podA, dst: remoteV, payload: 1400, flags: header.IPv4FlagDF}.ip()),
		eth(header.EtherTypeIPv4, pkt{src: podA, dst: remoteV, payload: 1000, flags: header.IPv4FlagDF}.ip()))
	if h.r.Drops(DropFragNeeded) != 1 || len(h.u.Take()) != 1 {
		t.Fatalf("after learning: drops %v", h.drops())
	}
}

// TestUnderlayMTUChanged: the path MTU follows the underlay's reported
// MTU both ways, never above the configured one, and a too-big DF packet
// is then refused up front, nothing sent or dropped as refused.
func TestUnderlayMTUChanged(t *testing.T) {
	h := newHarness(t)
	for _, c := range []struct{ mtu, want int }{{1400, 1400}, {9000, 1500}, {1300, 1300}, {40, 1300}, {1500, 1500}, {1400, 1400}} {
		h.r.UnderlayMTUChanged(c.mtu)
		if got := h.r.PathMTU(); got != c.want {
			t.Fatalf("after MTU %d: path MTU %d, want %d", c.mtu, got, c.want)
		}
	}
	h.fromPodA(eth(header.EtherTypeIPv4, pkt{src: podA, dst: remoteV, payload: 1400, flags: header.IPv4FlagDF}.ip()))
	if mtu := h.icmpToA(header.ICMPDestUnreach, header.ICMPCodeFragNeeded); mtu != 1350 || h.r.Drops(DropMTUExceeded) != 0 || len(h.u.Take()) != 0 {
		t.Fatalf("ICMP MTU %d (want 1350), drops %v", mtu, h.drops())
	}
}

// TestUnderlayFull: a send that finds the underlay's send buffer full
// loses what did not fit, counted as tx_full (not tx_error) after that one
// refused send (not a send per packet left), and the worker goes on: a pod
// on this node is still reached, and once there is room the underlay
// carries again. Both ways out: raw sends (IPIP here) and UDP GSO runs
// (VXLAN).
func TestUnderlayFull(t *testing.T) {
	batch := func(dst [4]byte, n int) [][]byte {
		var frames [][]byte
		for i := 0; i < n; i++ {
			frames = append(frames, eth(header.EtherTypeIPv4, pkt{src: podA, dst: dst, payload: 100}.ip()))
		}
		return frames
	}
	check := func(h *harness, sent, refused func() int, wantSent, wantFull, wantRefused int) {
		t.Helper()
		if got := sent(); got != wantSent || h.r.Drops(DropTxFull) != uint64(wantFull) || h.r.Drops(DropTxError) != 0 {
			t.Fatalf("%d sent (want %d), drops %v (want %d tx_full)", got, wantSent, h.drops(), wantFull)
		}
		if got := refused(); got != wantRefused {
			t.Fatalf("%d sends refused for want of room, want %d", got, wantRefused)
		}
		h.fromPodA(eth(header.EtherTypeIPv4, pkt{src: podA, dst: podB}.ip()))
		if n := len(h.devB.Take()); n != 1 {
			t.Fatalf("pod B got %d frames with the underlay full, want 1", n)
		}
	}

	h := newHarness(t)
	wire, refused := func() int { return len(h.u.Take()) }, h.u.Refusals
	h.u.SetRoom(3)
	h.fromPodA(batch(remoteI, 8)...)
	check(h, wire, refused, 3, 5, 1)
	h.fromPodA(batch(remoteI, 8)...)
	check(h, wire, refused, 0, 13, 2)
	h.u.SetRoom(-1)
	h.fromPodA(batch(remoteI, 8)...)
	check(h, wire, refused, 8, 13, 2)

	h = newGSOHarness(t)
	wire, refused = func() int { return len(h.gso.Take()) }, h.gso.Refusals
	h.gso.SetRoom(0)
	h.fromPodA(batch(remoteV, 8)...) // one run of eight datagrams
	check(h, wire, refused, 0, 8, 1)
	h.gso.SetRoom(-1)
	h.fromPodA(batch(remoteV, 8)...)
	check(h, wire, refused, 1, 8, 1)
}

func TestICMPRules(t *testing.T) {
	h := newHarness(t)
	// No error about an ICMP error.
	icmpErr := pkt{src: podA, dst: podB, ttl: 1, proto: header.ProtocolICMP, payload: 36}.ip()
	icmpErr[20] = header.ICMPDestUnreach
	h.fromPodA(eth(header.EtherTypeIPv4, icmpErr))
	// No error about a non-first fragment.
	h.fromPodA(eth(header.EtherTypeIPv4, pkt{src: podA, dst: podB, ttl: 1, flags: 10}.ip()))
	if out := h.devA.Take(); len(out) != 0 || h.r.Drops(DropTTLExceeded) != 2 {
		t.Fatalf("ICMP sent where RFC 1812 forbids: %d frames, drops %v", len(out), h.drops())
	}
	// A flood is limited by the bucket (burst 50).
	for i := 0; i < 200; i++ {
		h.fromPodA(eth(header.EtherTypeIPv4, pkt{src: podA, dst: podB, ttl: 1}.ip()))
	}
	n := len(h.devA.Take())
	if n < 50 || n >= 200 || h.r.Drops(DropICMPRateLimited) != uint64(200-n) {
		t.Fatalf("%d ICMP errors sent, %d limited", n, h.r.Drops(DropICMPRateLimited))
	}
}

func vxlanPayload(dstMAC header.MAC, vni uint32, inner []byte) []byte {
	b := make([]byte, 8+14+len(inner))
	header.VXLAN(b).Encode(vni)
	header.Ethernet(b[8:]).Encode(dstMAC, bVTEP, header.EtherTypeIPv4)
	copy(b[22:], inner)
	return b
}

func TestUnderlayIngress(t *testing.T) {
	good := pkt{src: remoteV, dst: podA}.ip()
	cases := []struct {
		name    string
		src     [4]byte
		payload []byte
		drop    string
	}{
		{"good", nodeB, vxlanPayload(ourVTEP, 4096, good), ""},
		{"unknown node", [4]byte{10, 0, 0, 99}, vxlanPayload(ourVTEP, 4096, good), "unknown_node"},
		{"wrong vni", nodeB, vxlanPayload(ourVTEP, 1, good), "decap_failed"},
		{"I flag clear", nodeB, func() []byte { b := vxlanPayload(ourVTEP, 4096, good); b[0] = 0; return b }(), "decap_failed"},
		{"wrong inner mac", nodeB, vxlanPayload(bVTEP, 4096, good), "decap_failed"},
		{"inner too short", nodeB, vxlanPayload(ourVTEP, 4096, nil)[:20], "decap_failed"},
		{"not for a local pod", nodeB, vxlanPayload(ourVTEP, 4096, pkt{src: remoteV, dst: remoteI}.ip()), "decap_not_local"},
		{"not for the host either", nodeB, vxlanPayload(ourVTEP, 4096, pkt{src: remoteV, dst: nodeA}.ip()), "decap_not_local"},
		{"inner bad checksum", nodeB, func() []byte { b := vxlanPayload(ourVTEP, 4096, good); b[22+10]++; return b }(), "bad_checksum"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := newHarness(t)
			h.w.begin()
			n := copy(h.w.bufs[0][Headroom:], c.payload)
			h.w.fromVXLAN(c.src, h.w.bufs[0], Headroom, Headroom+n)
			h.w.flush()
			out := h.devA.Take()
			if c.drop == "" {
				if len(out) != 1 || header.IPv4(out[0][14:]).TTL() != 63 || header.Ethernet(out[0]).Dst() != macA {
					t.Fatalf("not delivered: %d frames, drops %v", len(out), h.drops())
				}
				return
			}
			if d := h.drops(); len(d) != 1 || d[c.drop] != 1 || len(out) != 0 || len(h.u.Take()) != 0 {
				t.Fatalf("drops %v (want %s), %d delivered", d, c.drop, len(out))
			}
		})
	}
	t.Run("ipip", func(t *testing.T) {
		h := newHarness(t)
		outer := make([]byte, 20+len(good))
		header.IPv4(outer).Encode(&header.IPv4Fields{TotalLen: len(outer), TTL: 64, Protocol: 4, Src: nodeC, Dst: nodeA})
		copy(outer[20:], good)
		h.w.begin()
		n := copy(h.w.bufs[0][Headroom:], outer)
		h.w.fromIPIP(h.w.bufs[0], Headroom, Headroom+n)
		outer[12] = 99 // from a stranger
		header.IPv4(outer).ComputeChecksum()
		n = copy(h.w.bufs[1][Headroom:], outer)
		h.w.fromIPIP(h.w.bufs[1], Headroom, Headroom+n)
		h.w.flush()
		if len(h.devA.Take()) != 1 || h.r.Drops(DropUnknownNode) != 1 {
			t.Fatalf("ipip ingress: drops %v", h.drops())
		}
	})
}

func TestHostPath(t *testing.T) {
	h := newHarness(t)
	// Pod to node: handed to the host unchanged (the host stack routes it on).
	h.fromPodA(eth(header.EtherTypeIPv4, pkt{src: podA, dst: nodeA}.ip()))
	// Host to pod: no TTL decrement, the kernel already routed it.
	h.w.begin()
	n := copy(h.w.bufs[0][Headroom:], pkt{src: nodeA, dst: podB}.ip())
	h.w.fromHost(h.w.bufs[0], Headroom, Headroom+n)
	n = copy(h.w.bufs[1][Headroom:], pkt{src: nodeA, dst: [4]byte{10, 0, 0, 7}}.ip())
	h.w.fromHost(h.w.bufs[1], Headroom, Headroom+n)
	h.w.flush()
	if out := h.host.Take(); len(out) != 1 || header.IPv4(out[0]).TTL() != 64 {
		t.Fatalf("host got %d packets", len(out))
	}
	if out := h.devB.Take(); len(out) != 1 || header.IPv4(out[0][14:]).TTL() != 64 {
		t.Fatalf("pod B got %d frames", len(out))
	}
	if h.r.Drops(DropHostLoop) != 1 {
		t.Fatalf("drops %v", h.drops())
	}
}

// TestReaders runs the real reader goroutines over the in-memory devices.
func TestReaders(t *testing.T) {
	h := newHarness(t)
	rx := routertest.NewReceiver(fib.ModeVXLAN)
	h.r.AttachUnderlay(rx)
	h.devA.Inject(eth(header.EtherTypeIPv4, pkt{src: podA, dst: podB}.ip()))
	rx.InjectFrom(nodeB, vxlanPayload(ourVTEP, 4096, pkt{src: remoteV, dst: podB}.ip()))
	h.host.Inject(pkt{src: nodeA, dst: podB}.ip())
	got := 0
	testutil.WaitFor(t, 30*time.Second, "three frames at pod B", func() bool { got += len(h.devB.Take()); return got >= 3 })
	if got != 3 {
		t.Fatalf("pod B received %d of 3", got)
	}
	if err := h.r.RemovePort(h.pB); err != nil {
		t.Fatal(err)
	}
	if nh := h.r.FIB().Load().Lookup(fib.AddrU32(netip.AddrFrom4(podB))); nh == nil || nh.Kind != fib.KindBlackhole {
		t.Fatalf("pod route not withdrawn: %+v", nh)
	}
}

// TestMultiQueuePort: a port whose device has several queues is read on
// every queue, each by its own reader (the double panics if two goroutines
// read one queue), and removing it stops them all.
func TestMultiQueuePort(t *testing.T) {
	h := newHarness(t)
	mq := routertest.NewMultiQueue(3)
	podM := [4]byte{10, 244, 1, 9}
	pM, err := h.r.AddPort(PortConfig{Name: "m", Addr: netip.AddrFrom4(podM), MAC: header.MAC{2, 0, 0, 0, 0, 0xc}}, mq)
	if err != nil {
		t.Fatal(err)
	}
	const each = 50
	for range each {
		for q := range mq.Queues() {
			mq.InjectQueue(q, eth(header.EtherTypeIPv4, pkt{src: podM, dst: podB, proto: 253, payload: 10 + q}.ip()))
		}
	}
	perQueue := map[int]int{} // by payload length: which queue the packet came in on
	testutil.WaitFor(t, 30*time.Second, "every queue's packets at pod B", func() bool {
		for _, f := range h.devB.Take() {
			perQueue[int(header.IPv4(f[14:]).TotalLen())-20-10]++
		}
		return len(perQueue) == mq.Queues() && perQueue[0]+perQueue[1]+perQueue[2] == each*mq.Queues()
	})
	if s := pM.RxPackets.Load(); s != each*uint64(mq.Queues()) {
		t.Fatalf("port counted %d packets received, want %d", s, each*mq.Queues())
	}
	if d := h.drops(); len(d) != 0 {
		t.Fatalf("drops %v", d)
	}
	// RemovePort returns once every queue's reader has stopped.
	removed := make(chan error, 1)
	go func() { removed <- h.r.RemovePort(pM) }()
	select {
	case err := <-removed:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("RemovePort did not return: a queue's reader kept running")
	}
}

func TestPerPacketPathAllocatesNothing(t *testing.T) {
	h := newHarness(t)
	h.u.Discard, h.devB.Discard, h.devA.Discard, h.host.Discard = true, true, true, true
	frames := [][]byte{
		eth(header.EtherTypeIPv4, pkt{src: podA, dst: remoteV, payload: 64, proto: header.ProtocolTCP}.ip()),
		eth(header.EtherTypeIPv4, pkt{src: podA, dst: remoteI, payload: 64}.ip()),
		eth(header.EtherTypeIPv4, pkt{src: podA, dst: podB, payload: 64}.ip()),
		eth(header.EtherTypeIPv4, pkt{src: podA, dst: nodeA, payload: 64}.ip()),
		eth(header.EtherTypeIPv4, pkt{src: podA, dst: podB, ttl: 1}.ip()), // ICMP error path
	}
	h.fromPodA(frames...) // the ICMP error path allocates nothing either, but warm every branch first
	n := testing.AllocsPerRun(200, func() { h.fromPodA(frames...) })
	if n != 0 {
		t.Fatalf("%v allocations per batch", n)
	}
	if h.r.Drops(DropTTLExceeded) == 0 {
		t.Fatal("ICMP path not exercised")
	}
}

// TestWorkersSendAtOnce has three workers (pods A and B, the host) send to
// IPIP and VXLAN peers at the same time, through the real reader
// goroutines. Each worker owns its underlay sender: the doubles panic if
// two are inside one sender at once, and every packet must reach the wire
// exactly once.
func TestWorkersSendAtOnce(t *testing.T) {
	for _, gso := range []bool{false, true} {
		t.Run(map[bool]string{false: "raw", true: "gso"}[gso], func(t *testing.T) {
			var g *routertest.GSO
			if gso {
				g = &routertest.GSO{}
			}
			h := newHarnessWith(t, g)
			const each = 2000
			inputs := []struct {
				src [4]byte
				put func([]byte)
			}{
				{podA, func(p []byte) { h.devA.Inject(eth(header.EtherTypeIPv4, p)) }},
				{podB, func(p []byte) { h.devB.Inject(eth(header.EtherTypeIPv4, p)) }},
				{nodeA, h.host.Inject},
			}
			var ready sync.WaitGroup
			start := make(chan struct{})
			for in, x := range inputs {
				ready.Add(1)
				go func() {
					defer ready.Done()
					<-start
					for i := 0; i < each; i++ {
						dst := remoteI
						if i%2 == 1 {
							dst = remoteV
						}
						p := pkt{src: x.src, dst: dst, payload: 8}.ip()
						binary.BigEndian.PutUint32(p[20:], uint32(in*each+i))
						x.put(p)
					}
				}()
			}
			close(start)
			ready.Wait()

			seen := make([]int, len(inputs)*each)
			got := 0
			count := func(inner []byte) {
				ip := header.IPv4(inner)
				if id := binary.BigEndian.Uint32(ip[ip.HeaderLen():]); int(id) < len(seen) {
					seen[id]++
					got++
				}
			}
			testutil.WaitFor(t, 10*time.Second, "every packet on the wire", func() bool {
				for _, s := range h.u.Take() {
					switch header.IPv4(s.Pkt).Protocol() {
					case header.ProtocolIPIP:
						count(s.Pkt[20:])
					case header.ProtocolUDP:
						count(s.Pkt[20+8+8+14:])
					}
				}
				if g != nil {
					for _, s := range g.Take() {
						for d := 0; d < len(s.Data); d += s.Seg {
							count(s.Data[d+8+14 : min(d+s.Seg, len(s.Data))])
						}
					}
				}
				return got >= len(seen)
			})
			for id, n := range seen {
				if n != 1 {
					t.Fatalf("packet %d sent %d times (drops %v)", id, n, h.drops())
				}
			}
		})
	}
}

// TestFIBMemo: lookups remembered in a batch (fibMemo) answer for that
// batch only: packets to two destinations in one batch each take their
// own route, and a route or a node changed between batches is seen by
// the next.
func TestFIBMemo(t *testing.T) {
	h := newHarness(t)
	ipipDst := [4]byte{10, 244, 3, 5}
	h.fromPodA(eth(header.EtherTypeIPv4, pkt{src: podA, dst: remoteV, payload: 10}.ip()),
		eth(header.EtherTypeIPv4, pkt{src: podA, dst: ipipDst, payload: 10}.ip()),
		eth(header.EtherTypeIPv4, pkt{src: podA, dst: remoteV, payload: 10}.ip()))
	to := func() map[[4]byte]int {
		m := map[[4]byte]int{}
		for _, s := range h.u.Take() {
			m[s.Dst]++
		}
		return m
	}
	if m := to(); m[nodeB] != 2 || m[nodeC] != 1 || len(m) != 2 {
		t.Fatalf("one batch: packets by node %v; want 2 to n2 and 1 to n3 (drops %v)", m, h.drops())
	}
	h.fromVXLANPkt(pkt{src: remoteV, dst: podA, payload: 10}.ip())
	if got := len(h.devA.Take()); got != 1 {
		t.Fatalf("VXLAN from n2: %d delivered, want 1 (drops %v)", got, h.drops())
	}
	// remoteV's block moves to node C over IPIP; node B is gone.
	err := h.r.FIB().Update(func(tx fib.Tx) error {
		return tx.Set(fib.Route{Prefix: netip.MustParsePrefix("10.244.2.0/26"), Source: fib.SourceStatic,
			NextHop: fib.NextHop{Kind: fib.KindRemote, Node: nodeC, Mode: fib.ModeIPIP}})
	})
	if err != nil {
		t.Fatal(err)
	}
	h.fromPodA(eth(header.EtherTypeIPv4, pkt{src: podA, dst: remoteV, payload: 10}.ip()))
	if m := to(); m[nodeC] != 1 || len(m) != 1 {
		t.Fatalf("after the change: packets by node %v; want one to n3", m)
	}
	h.fromVXLANPkt(pkt{src: remoteV, dst: podA, payload: 10}.ip())
	if got := len(h.devA.Take()); got != 0 || h.r.Drops(DropUnknownNode) != 1 {
		t.Fatalf("VXLAN from n2, no longer a node: %d delivered, unknown_node %d; want 0 and 1", got, h.r.Drops(DropUnknownNode))
	}
}
