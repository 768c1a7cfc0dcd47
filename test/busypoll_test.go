package test

import (
	"strings"
	"testing"
	"time"

	"github.com/tortie-net/tortie/api"
	"github.com/tortie-net/tortie/lab"
)

// TestBusyPoll: with busyPoll set, each node's tortied forwards as before
// (every pod reaches every other and the nodes; a TCP transfer arrives
// whole), and its loops read some of a ping's packets while spinning
// rather than after a wake-up. The spin is the most busyPoll allows, 1 ms,
// against round trips of tens of µs here, so replies come within it.
func TestBusyPoll(t *testing.T) {
	l := up(t, lab.Options{Name: "tbp", Nodes: 2, Pods: 1, Mode: "vxlan", Static: true, BusyPoll: time.Millisecond})
	checkAll(t, l)
	transfer(t, l, "n1p1", "n2p1", false)
	busyPolls := func() uint64 {
		var sum uint64
		for _, n := range l.Nodes {
			s, err := api.NewClient(n.Socket).Counters()
			if err != nil {
				t.Fatal(err)
			}
			for _, lp := range s.Loops {
				sum += lp.BusyPolls
			}
		}
		return sum
	}
	before := busyPolls()
	// -w: wait for every reply (up to 10 s), not only about twice the
	// slowest round trip after the last request; on a loaded machine a
	// reply may come later than that.
	out := ping(t, l, "n1p1", l.Pod("n2p1").Address, "-c", "20", "-i", "0.01", "-w", "10")
	if !strings.Contains(out, " 0% packet loss") {
		t.Fatalf("ping n1p1 -> n2p1:\n%s", out)
	}
	if after := busyPolls(); after == before {
		t.Fatalf("20 pings: the loops' busy polls stayed at %d", after)
	} else {
		t.Logf("20 pings: %d busy polls", after-before)
	}
}
