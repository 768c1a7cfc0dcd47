package header

import (
	"encoding/binary"
	"math/rand/v2"
	"testing"
)

// naiveChecksum is RFC 1071 word by word, the reference for Checksum.
func naiveChecksum(b []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum>>16 != 0 {
		sum = (sum & 0xffff) + sum>>16
	}
	return uint16(sum)
}

// naiveWith adds an initial partial sum, as Checksum does.
func naiveWith(b []byte, initial uint32) uint16 {
	sum := uint64(naiveChecksum(b)) + uint64(initial)
	for sum>>16 != 0 {
		sum = (sum & 0xffff) + sum>>16
	}
	return uint16(sum)
}

func TestChecksumMatchesNaive(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for n := 0; n < 2100; n++ {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		if n%3 == 0 { // carry-heavy data
			for i := range b {
				b[i] = 0xff - byte(r.Uint32()&1)
			}
		}
		initial := []uint32{0, 0xffff, r.Uint32() & 0x3ffff, 0xfffffff}[n%4]
		if got, want := Checksum(b, initial), naiveWith(b, initial); got != want {
			t.Fatalf("len %d initial %#x: Checksum=%#x naive=%#x", n, initial, got, want)
		}
	}
}

func FuzzChecksum(f *testing.F) {
	f.Add([]byte{0xff, 0xff, 0xff}, uint32(0xffff))
	f.Add(make([]byte, 65), uint32(1))
	f.Fuzz(func(t *testing.T, b []byte, initial uint32) {
		initial &= 0xfffffff // callers pass partial sums, far from overflow
		if got, want := Checksum(b, initial), naiveWith(b, initial); got != want {
			t.Fatalf("len %d initial %#x: Checksum=%#x naive=%#x", len(b), initial, got, want)
		}
	})
}

func BenchmarkChecksum(b *testing.B) {
	buf := make([]byte, 1400)
	for i := range buf {
		buf[i] = byte(i * 7)
	}
	b.SetBytes(int64(len(buf)))
	for b.Loop() {
		Checksum(buf, 0)
	}
}

func testPacket(ttl uint8) IPv4 {
	p := make(IPv4, 40)
	p.Encode(&IPv4Fields{TotalLen: 40, TTL: ttl, Protocol: ProtocolUDP, FlagsFrag: IPv4FlagDF,
		Src: [4]byte{10, 0, 0, 1}, Dst: [4]byte{10, 0, 0, 2}})
	return p
}

func TestDecTTLIncrementalChecksum(t *testing.T) {
	for ttl := 2; ttl < 256; ttl++ {
		p := testPacket(uint8(ttl))
		p.DecTTL()
		got := p.Checksum()
		p.ComputeChecksum()
		if got != p.Checksum() || p.TTL() != uint8(ttl-1) {
			t.Fatalf("ttl %d: incremental %#x, full %#x", ttl, got, p.Checksum())
		}
		if _, st := p.Check(); st != IPv4OK {
			t.Fatalf("ttl %d: status %d after DecTTL", ttl, st)
		}
	}
}

func TestIPv4Check(t *testing.T) {
	good := testPacket(64)
	padded := append(append(IPv4{}, good...), 0, 0, 0, 0)
	if v, st := padded.Check(); st != IPv4OK || len(v) != 40 {
		t.Fatalf("padding: status %d len %d", st, len(v))
	}
	mut := func(f func(p IPv4)) IPv4 { p := append(IPv4{}, good...); f(p); return p }
	cases := []struct {
		name string
		p    IPv4
		want IPv4Status
	}{
		{"short", good[:19], IPv4TooShort},
		{"v6", mut(func(p IPv4) { p[0] = 0x65 }), IPv4BadVersion},
		{"ihl4", mut(func(p IPv4) { p[0] = 0x44; p.ComputeChecksum() }), IPv4Malformed},
		{"ihl>tl", mut(func(p IPv4) { p.SetTotalLen(20); p[0] = 0x46 }), IPv4Malformed},
		{"tl>len", mut(func(p IPv4) { p.SetTotalLen(41); p.ComputeChecksum() }), IPv4Malformed},
		{"csum", mut(func(p IPv4) { p[8]++ }), IPv4BadChecksum},
		{"bad option len", mut(func(p IPv4) { p[0] = 0x46; p[20], p[21] = 7, 9; p.ComputeChecksum() }), IPv4Malformed},
		{"nop+end options", mut(func(p IPv4) { p[0] = 0x46; p[20], p[21] = 1, 0; p.ComputeChecksum() }), IPv4OK},
		{"record route", mut(func(p IPv4) { p[0] = 0x47; p[20], p[21], p[22] = 7, 7, 4; p.ComputeChecksum() }), IPv4OK},
	}
	for _, c := range cases {
		if _, st := c.p.Check(); st != c.want {
			t.Errorf("%s: status %d, want %d", c.name, st, c.want)
		}
	}
}

func TestARPReply(t *testing.T) {
	a := make(ARP, ARPLen)
	pod := MAC{2, 0, 0, 0, 0, 1}
	a.EncodeRequest(pod, [4]byte{10, 1, 1, 1}, [4]byte{169, 254, 1, 1})
	if !a.IsValid() || a.Op() != ARPRequest {
		t.Fatal("request not valid")
	}
	gw := MAC{0xee, 0xee, 0xee, 0xee, 0xee, 0xee}
	a.TurnIntoReply(gw, [4]byte{169, 254, 1, 1})
	if a.Op() != ARPReply || a.SHA() != gw || a.THA() != pod || a.TPA() != [4]byte{10, 1, 1, 1} || a.SPA() != [4]byte{169, 254, 1, 1} {
		t.Fatalf("bad reply %x", []byte(a))
	}
}

func TestViewsDoNotAllocate(t *testing.T) {
	p := testPacket(64)
	if n := testing.AllocsPerRun(100, func() {
		v, _ := p.Check()
		v.DecTTL()
		v[8]++
		v.ComputeChecksum()
	}); n != 0 {
		t.Fatalf("%v allocs", n)
	}
}

// FuzzIPv4Check: Check never panics, and what it accepts is self-consistent.
func FuzzIPv4Check(f *testing.F) {
	f.Add([]byte(testPacket(64)))
	f.Add([]byte{0x45, 0, 0, 20})
	f.Fuzz(func(t *testing.T, b []byte) {
		v, st := IPv4(b).Check()
		if st != IPv4OK {
			return
		}
		if len(v) > len(b) || v.HeaderLen() < IPv4MinLen || v.HeaderLen() > len(v) || v.TotalLen() != len(v) {
			t.Fatalf("accepted inconsistent header %x", b)
		}
		if v.TTL() > 0 {
			v.DecTTL()
			if _, st := v.Check(); st != IPv4OK {
				t.Fatalf("DecTTL broke checksum of %x", b)
			}
		}
	})
}

func FuzzARP(f *testing.F) {
	a := make(ARP, ARPLen)
	a.EncodeRequest(MAC{2}, [4]byte{1}, [4]byte{2})
	f.Add([]byte(a))
	f.Fuzz(func(t *testing.T, b []byte) {
		if ARP(b).IsValid() {
			ARP(b).TurnIntoReply(MAC{}, [4]byte{})
		}
	})
}

func BenchmarkIPv4Check(b *testing.B) {
	p := testPacket(64)
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if _, st := p.Check(); st != IPv4OK {
			b.Fatal(st)
		}
	}
}

// TestHeaderSum: the IPv4 header sum agrees with Checksum for every header
// length IPv4 allows, on random and carry-heavy headers.
func TestHeaderSum(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 5))
	for i := range 5000 {
		h := make([]byte, 4*(5+i%11))
		for j := range h {
			h[j] = byte(r.Uint32())
			if i%4 == 0 {
				h[j] = 0xff
			}
		}
		if got, want := headerSum(h), Checksum(h, 0); got != want {
			t.Fatalf("% x: headerSum=%#x Checksum=%#x", h, got, want)
		}
	}
}

// TestPartialChecksum: a TCP segment whose checksum field holds the
// partial checksum, finished as a NIC finishes one (the sum from the TCP
// header on, complemented), verifies; and the partial checksum is the
// folded pseudo-header sum a naive fold gives.
func TestPartialChecksum(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 9))
	for i := range 2000 {
		src := [4]byte{byte(r.Uint32()), byte(r.Uint32()), byte(r.Uint32()), byte(r.Uint32())}
		dst := [4]byte{byte(r.Uint32()), 0xff, byte(i), byte(r.Uint32())}
		seg := make([]byte, 20+i%1500)
		for j := range seg {
			seg[j] = byte(r.Uint32())
		}
		p := PartialChecksum(src, dst, ProtocolTCP, len(seg))
		sum := PseudoHeaderSum(src, dst, ProtocolTCP, len(seg))
		for sum>>16 != 0 {
			sum = sum&0xffff + sum>>16
		}
		if uint32(p) != sum {
			t.Fatalf("partial checksum %#x, folded pseudo-header sum %#x", p, sum)
		}
		tcp := TCP(seg)
		tcp.SetChecksum(p)
		tcp.SetChecksum(^Checksum(seg, 0))
		if Checksum(seg, PseudoHeaderSum(src, dst, ProtocolTCP, len(seg))) != 0xffff {
			t.Fatalf("segment %d: finished checksum does not verify", i)
		}
	}
}
