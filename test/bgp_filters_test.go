package test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tortie-net/tortie/internal/testutil"
	"github.com/tortie-net/tortie/lab"
)

// toBird is a BGPPeer giving every tortie node a session with the BIRD
// node (it takes the place of the mesh session) through filters.
func toBird(filters ...string) string {
	m := `apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata:
  name: to-bird
spec:
  peerSelector: tortie.io/bird == 'true'
`
	if len(filters) > 0 {
		m += "  filters: [" + strings.Join(filters, ", ") + "]\n"
	}
	return m
}

// TestBirdFilters: a BGPFilter on the tortie nodes' sessions with a BIRD
// node works both ways, rules in order: on export n2's block is accepted
// by the first rule and n1's rejected by the second, so BIRD has the one
// and not the other; on import BIRD's block is rejected, so it leaves the
// tortie nodes' FIBs, while the mesh between the tortie nodes, which the
// filter is not on, carries everything. Taking the filter off the
// BGPPeer brings every route back without resetting the session.
func TestBirdFilters(t *testing.T) {
	l := up(t, lab.Options{Name: "tbf", Nodes: 3, Pods: 1, Mode: "native", BirdNodes: 1})
	n1, n2, n3 := l.Nodes[0], l.Nodes[1], l.Nodes[2]
	b1, b2 := blockOf(l.Pod("n1p1").Address), blockOf(l.Pod("n2p1").Address)
	atBird := func(block, via string) bool {
		out, _ := l.Birdc(n3, "show route "+block)
		return strings.Contains(out, "via "+via)
	}
	inFIB := func(n *lab.Node, prefix string) bool {
		_, ok := fibRoute(t, n, prefix)
		return ok
	}
	testutil.WaitFor(t, 40*time.Second, "every block everywhere", func() bool {
		return atBird(b1, "10.0.1.1") && atBird(b2, "10.0.1.2") && inFIB(n1, n3.PodCIDR) && inFIB(n2, n3.PodCIDR) &&
			inFIB(n1, b2) && inFIB(n2, b1)
	})

	filter := fmt.Sprintf(`apiVersion: projectcalico.org/v3
kind: BGPFilter
metadata:
  name: bird-filter
spec:
  exportV4:
    - action: Accept
      matchOperator: Equal
      cidr: %s
    - action: Reject
      matchOperator: In
      cidr: 10.244.0.0/16
  importV4:
    - action: Reject
      matchOperator: In
      cidr: %s
      prefixLength:
        min: 26
        max: 26
`, b2, lab.BirdPool)
	if err := l.Apply(filter + "---\n" + toBird("bird-filter")); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 40*time.Second, "the filtered session up", func() bool {
		p, ok := peerOf(t, n1, n3.Addr())
		p2, ok2 := peerOf(t, n2, n3.Addr())
		return ok && ok2 && p.State == "up" && p.Type == "global" && p2.State == "up" && p2.Type == "global"
	})
	testutil.WaitFor(t, 40*time.Second, "n1's block gone from BIRD, BIRD's from the FIBs", func() bool {
		return birdLacks(l, n3, b1) && !inFIB(n1, n3.PodCIDR) && !inFIB(n2, n3.PodCIDR)
	})
	if !atBird(b2, "10.0.1.2") {
		out, _ := l.Birdc(n3, "show route "+b2)
		t.Fatalf("n2's block, accepted by the first rule, is not at BIRD:\n%s", out)
	}
	if !inFIB(n1, b2) || !inFIB(n2, b1) {
		t.Fatal("the mesh between the tortie nodes lost a block: the filter is on the BIRD sessions only")
	}
	// BIRD's block was received, and refused by the filter.
	if p, _ := peerOf(t, n1, n3.Addr()); p.Received != 1 {
		t.Errorf("n1's session with BIRD: received %d routes, want BIRD's block", p.Received)
	}
	out, _ := l.Birdc(n3, "show route")
	t.Logf("BIRD with the filter:\n%s", out)

	// The filter off: everything back, on the same session.
	p, _ := peerOf(t, n1, n3.Addr())
	if err := l.Apply(toBird()); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 40*time.Second, "every block back", func() bool {
		return atBird(b1, "10.0.1.1") && atBird(b2, "10.0.1.2") && inFIB(n1, n3.PodCIDR) && inFIB(n2, n3.PodCIDR)
	})
	if q, _ := peerOf(t, n1, n3.Addr()); q.State != "up" || !q.Since.Equal(p.Since) {
		t.Errorf("n1's session with BIRD was reset when the filter went (up since %v, then %v, %s)", p.Since, q.Since, q.State)
	}
	checkAll(t, l)
}
