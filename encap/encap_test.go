package encap

import (
	"testing"

	"github.com/tortie-net/tortie/header"
)

func TestVXLANRoundTrip(t *testing.T) {
	tun := VXLANTunnel{VNI: VNI, SrcMAC: mac('a'), SrcAddr: [4]byte{10, 0, 0, 1}}
	buf := make([]byte, 64+40)
	in := header.IPv4(buf[64:])
	in.Encode(&header.IPv4Fields{TotalLen: 40, TTL: 9, Protocol: 6, Src: [4]byte{1, 2, 3, 4}, Dst: [4]byte{5, 6, 7, 8}})
	o := tun.Put(buf, 64, 104, mac('b'), [4]byte{10, 0, 0, 2})
	if o != 64-OverheadVXLAN {
		t.Fatalf("outer at %d", o)
	}
	outer, st := header.IPv4(buf[o:]).Check()
	if st != header.IPv4OK || outer.Protocol() != 17 || len(outer) != 40+OverheadVXLAN {
		t.Fatalf("outer status %d", st)
	}
	rx := VXLANTunnel{VNI: VNI, SrcMAC: mac('b')}
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
	tun := VXLANTunnel{VNI: VNI, SrcMAC: mac('x')}
	f.Fuzz(func(t *testing.T, b []byte) {
		if off, ok := tun.Decap(b); ok && off > len(b) {
			t.Fatal("inner offset beyond payload")
		}
	})
}

func BenchmarkPutVXLAN(b *testing.B) {
	tun := VXLANTunnel{VNI: VNI, SrcMAC: mac('a'), SrcAddr: [4]byte{10, 0, 0, 1}}
	buf := make([]byte, 64+64)
	header.IPv4(buf[64:]).Encode(&header.IPv4Fields{TotalLen: 64, TTL: 9, Protocol: 17, Src: [4]byte{1, 2, 3, 4}, Dst: [4]byte{5, 6, 7, 8}})
	dst := mac('b')
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

// mac is a VTEP MAC for tests, distinct per letter.
func mac(c byte) header.MAC { return header.MAC{0x66, c, 0, 0, 0, 1} }
