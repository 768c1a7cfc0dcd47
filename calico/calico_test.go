package calico

import (
	"net/netip"
	"testing"

	"github.com/tortie-net/tortie/fib"
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
