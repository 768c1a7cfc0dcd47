package test

import (
	"testing"

	"github.com/tortie-net/tortie/api"
	"github.com/tortie-net/tortie/internal/labtest"
	"github.com/tortie-net/tortie/lab"
)

// TestIPIPUnderlayGRO: on nodes whose underlay interface coalesces what it
// receives, as a NIC's GRO does (Linux coalesces TCP inside IPIP without
// an ipip module), tortie's raw IPIP socket reads TCP superframes whose
// checksums the kernel verified and left partial. TCP across nodes
// carries all its data both ways (before they were taken for ordinary
// packets and the pods dropped them: the connection stalled), and the
// receiving node counts the superframes it took whole.
func TestIPIPUnderlayGRO(t *testing.T) {
	l := up(t, lab.Options{Name: "tg", Nodes: 2, Pods: 1, Mode: "ipip", Static: true, UnderlayGRO: true})
	checkAll(t, l)
	const n = 40 << 20
	for _, reverse := range []bool{false, true} {
		rx := l.Nodes[1]
		if reverse {
			rx = l.Nodes[0]
		}
		before := fromUnderlay(t, rx)
		rate := labtest.SendAll(t, l.Pod("n1p1"), l.Pod("n2p1"), 1, n, reverse)
		got := fromUnderlay(t, rx) - before
		if got == 0 {
			t.Fatalf("reverse %v: %s took no superframe from the underlay", reverse, rx.Name)
		}
		if d := counters(t, rx)["bad_offload"]; d != 0 {
			t.Fatalf("reverse %v: %s dropped %d superframes as bad", reverse, rx.Name, d)
		}
		t.Logf("reverse %v: %.2f Gbit/s, %d superframes from %s's underlay",
			reverse, rate/1e9, got, rx.Name)
	}
}

func fromUnderlay(t *testing.T, n *lab.Node) uint64 {
	t.Helper()
	s, err := api.NewClient(n.Socket).Counters()
	if err != nil {
		t.Fatal(err)
	}
	return s.Offload.FromUnderlay
}
