package test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/tortie-net/tortie/internal/testutil"
	"github.com/tortie-net/tortie/lab"
)

// TestUnderlayFull: node 1's underlay link stops sending (tbf at 8 bit/s,
// room for 100 MB queued), and pod n1p1 floods a pod on node 2 with UDP
// until node 1's tortied counts tx_full drops: its underlay socket's send
// buffer is full. Node 1's pods still reach each other, both ways, while
// the link stays stopped. (A send that waited for room would hold up the
// thread that met the full buffer, and every input it serves with it:
// the flooding pod's, and so its pings, first.) In both tunnel modes:
// IPIP leaves through the raw socket's sendmmsg, VXLAN through UDP GSO.
func TestUnderlayFull(t *testing.T) {
	for i, mode := range []string{"vxlan", "ipip"} {
		t.Run(mode, func(t *testing.T) {
			l := up(t, lab.Options{Name: fmt.Sprintf("uf%d", i), Nodes: 2, Pods: 2, Mode: mode, Static: true})
			n1 := l.Nodes[0]
			src, local, far := n1.Pods[0], n1.Pods[1], l.Nodes[1].Pods[0]
			ping := func(from, to *lab.Pod) {
				t.Helper()
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				defer cancel()
				p := &lab.Probe{From: from.Name, To: to.Name, FromNetns: from.Netns, ToAddr: to.Address, WantTTL: 63}
				p.Ping(ctx)
				if !p.OK {
					t.Fatalf("%s -> %s with node 1's underlay full:\n%s", from.Name, to.Name, p.Output)
				}
			}
			ping(src, local)
			testutil.Run(t, "ip", "netns", "exec", n1.Netns, "tc", "qdisc", "add", "dev", "eth0", "root",
				"tbf", "rate", "8bit", "burst", "1600", "limit", "100000000")
			c := udpFrom(t, src, far.Address+":9")
			payload := make([]byte, 1400)
			rounds := 0
			testutil.WaitFor(t, time.Minute, "tx_full drops at node 1", func() bool {
				rounds++
				for range 1000 {
					_, _ = c.Write(payload) // nothing answers; a refusal cannot come back
				}
				return counters(t, n1)["tx_full"] > 0
			})
			ping(src, local)
			ping(local, src)
			d := counters(t, n1)
			t.Logf("node 1: tx_full %d, tx_error %d after %d rounds", d["tx_full"], d["tx_error"], rounds)
			if d["tx_error"] != 0 {
				t.Errorf("node 1 counted %d tx_error: a full buffer is tx_full", d["tx_error"])
			}
		})
	}
}
