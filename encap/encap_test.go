package encap

import (
	"net/netip"
	"testing"

	"github.com/tortie-net/tortie/fib"
	"github.com/tortie-net/tortie/header"
)

func TestVTEPMACMatchesCalico(t *testing.T) {
	// 0x66 + sha1("node1")[0:5], computed independently.
	if got := VTEPMAC("node1").String(); got != "66:f9:37:c3:7e:94" {
		t.Fatalf("VTEPMAC(node1) = %s", got)
	}
	if VTEPMAC("a") == VTEPMAC("b") {
		t.Fatal("different nodes, same MAC")
	}
}

func TestCrossSubnet(t *testing.T) {
	ours := netip.MustParsePrefix("10.0.1.5/24")
	same, other := netip.MustParseAddr("10.0.1.9"), netip.MustParseAddr("10.0.2.9")
	cases := []struct {
		pool  fib.Mode
		cross bool
		peer  netip.Addr
		want  fib.Mode
	}{
		{fib.ModeVXLAN, true, same, fib.ModeNative},
		{fib.ModeVXLAN, true, other, fib.ModeVXLAN},
		{fib.ModeIPIP, true, same, fib.ModeNative},
		{fib.ModeIPIP, false, same, fib.ModeIPIP},
		{fib.ModeNative, true, other, fib.ModeNative},
	}
	for _, c := range cases {
		if got := ModeFor(c.pool, c.cross, ours, c.peer); got != c.want {
			t.Errorf("ModeFor(%v, %v, %v) = %v, want %v", c.pool, c.cross, c.peer, got, c.want)
		}
	}
	if ModeFor(fib.ModeVXLAN, true, netip.MustParsePrefix("10.0.1.5/32"), same) != fib.ModeVXLAN ||
		CrossSubnetWarning(netip.MustParsePrefix("10.0.1.5/32")) == "" {
		t.Fatal("a /32 node address must tunnel to everyone, with a warning")
	}
	if PodMTU(1500, fib.ModeIPIP) != 1480 || PodMTU(1500, fib.ModeVXLAN) != 1450 || PodMTU(1500, fib.ModeNative) != 1500 {
		t.Fatal("pod MTUs")
	}
}

func TestVXLANRoundTrip(t *testing.T) {
	tun := VXLANTunnel{VNI: VNI, SrcMAC: VTEPMAC("a"), SrcAddr: [4]byte{10, 0, 0, 1}}
	buf := make([]byte, 64+40)
	in := header.IPv4(buf[64:])
	in.Encode(&header.IPv4Fields{TotalLen: 40, TTL: 9, Protocol: 6, Src: [4]byte{1, 2, 3, 4}, Dst: [4]byte{5, 6, 7, 8}})
	o := tun.Put(buf, 64, 104, VTEPMAC("b"), [4]byte{10, 0, 0, 2})
	if o != 64-OverheadVXLAN {
		t.Fatalf("outer at %d", o)
	}
	outer, st := header.IPv4(buf[o:]).Check()
	if st != header.IPv4OK || outer.Protocol() != 17 || len(outer) != 40+OverheadVXLAN {
		t.Fatalf("outer status %d", st)
	}
	rx := VXLANTunnel{VNI: VNI, SrcMAC: VTEPMAC("b")}
	off, ok := rx.Decap(buf[o+28:])
	if !ok || off != 22 {
		t.Fatal("receiver refused its own frame")
	}
	if _, ok := tun.Decap(buf[o+28:]); ok {
		t.Fatal("accepted a frame for another VTEP")
	}
}

func FuzzDecap(f *testing.F) {
	f.Add([]byte{8, 0, 0, 0, 0, 16, 0, 0})
	tun := VXLANTunnel{VNI: VNI, SrcMAC: VTEPMAC("x")}
	f.Fuzz(func(t *testing.T, b []byte) {
		if off, ok := tun.Decap(b); ok && off > len(b) {
			t.Fatal("inner offset beyond payload")
		}
	})
}

func BenchmarkPutVXLAN(b *testing.B) {
	tun := VXLANTunnel{VNI: VNI, SrcMAC: VTEPMAC("a"), SrcAddr: [4]byte{10, 0, 0, 1}}
	buf := make([]byte, 64+64)
	header.IPv4(buf[64:]).Encode(&header.IPv4Fields{TotalLen: 64, TTL: 9, Protocol: 17, Src: [4]byte{1, 2, 3, 4}, Dst: [4]byte{5, 6, 7, 8}})
	dst := VTEPMAC("b")
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		tun.Put(buf, 64, 128, dst, [4]byte{10, 0, 0, 2})
	}
}

func BenchmarkPutIPIP(b *testing.B) {
	buf := make([]byte, 64+64)
	header.IPv4(buf[64:]).Encode(&header.IPv4Fields{TotalLen: 64, TTL: 9, Protocol: 17, Src: [4]byte{1, 2, 3, 4}, Dst: [4]byte{5, 6, 7, 8}})
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		PutIPIP(buf, 64, 128, [4]byte{10, 0, 0, 1}, [4]byte{10, 0, 0, 2})
	}
}
