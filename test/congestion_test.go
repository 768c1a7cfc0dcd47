package test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/tortie-net/tortie/internal/testutil"
	"github.com/tortie-net/tortie/lab"
)

// TestUnderlayFull: node 1's underlay link nearly stops sending (tbf at
// 8 kbit/s, room for 100 MB queued), and pod n1p1 floods a pod on node 2
// with UDP until the link's queue stops growing: tortied's underlay socket
// buffer is full (it holds about 10 MB of packets). Node 1's other two
// pods still reach each other, both ways, while the flood goes on, and
// tortied counts what it could not send as tx_full. (A send that waited
// for room would hold up the thread that met the full buffer, and every
// input it serves with it; a lab node has one.) The flooding pod itself is
// left out of the pings: its own frames queue behind the flood in its
// TAP, and lose there. In both tunnel modes: IPIP leaves through the raw
// socket's sendmmsg, VXLAN through UDP GSO.
func TestUnderlayFull(t *testing.T) {
	for i, mode := range []string{"vxlan", "ipip"} {
		t.Run(mode, func(t *testing.T) {
			l := up(t, lab.Options{Name: fmt.Sprintf("uf%d", i), Nodes: 2, Pods: 3, Mode: mode, Static: true})
			n1 := l.Nodes[0]
			src, a, b, far := n1.Pods[0], n1.Pods[1], n1.Pods[2], l.Nodes[1].Pods[0]
			ping := func(from, to *lab.Pod, ttl int) {
				t.Helper()
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				defer cancel()
				p := &lab.Probe{From: from.Name, To: to.Name, FromNetns: from.Netns, ToAddr: to.Address, WantTTL: ttl}
				p.Ping(ctx)
				if !p.OK {
					t.Fatalf("%s -> %s:\n%s", from.Name, to.Name, p.Output)
				}
			}
			// The path works; the neighbours node 1 found are pinned, so
			// that no ARP probe has to cross the stopped link (one stuck
			// behind the queue would have the kernel drop the flood
			// before it reaches the socket).
			ping(src, far, 62)
			var neigh []struct {
				Dst    string `json:"dst"`
				LLAddr string `json:"lladdr"`
			}
			if err := json.Unmarshal([]byte(testutil.Run(t, "ip", "-n", n1.Netns, "-j", "neigh", "show", "dev", "eth0")), &neigh); err != nil {
				t.Fatal(err)
			}
			for _, e := range neigh {
				if e.LLAddr != "" {
					testutil.Run(t, "ip", "-n", n1.Netns, "neigh", "replace", e.Dst, "lladdr", e.LLAddr, "dev", "eth0", "nud", "permanent")
				}
			}
			testutil.Run(t, "ip", "netns", "exec", n1.Netns, "tc", "qdisc", "add", "dev", "eth0", "root",
				"tbf", "rate", "8kbit", "burst", "1600", "limit", "100000000")
			c := udpFrom(t, src, far.Address+":9")
			payload := make([]byte, 1400)
			flood := func() {
				_ = c.SetWriteDeadline(time.Now().Add(time.Second)) // the pod's socket never holds the test up
				for range 1000 {
					_, _ = c.Write(payload) // errors (a refusal from node 2, a full socket) do not matter
				}
			}
			// Full: the queue holds over a megabyte (the socket buffer,
			// underlay's socketBuffer, holds several) and three rounds of
			// a thousand datagrams in a row did not add to it.
			last, still := -1, 0
			testutil.WaitFor(t, time.Minute, "node 1's underlay queue to stop growing", func() bool {
				flood()
				b := testutil.QdiscStats(t, n1.Netns, "eth0").Backlog
				if b > 1<<20 && b <= last {
					still++
				} else {
					still = 0
				}
				last = b
				return still == 3
			})
			// The pings go while the flood goes on.
			stop, flooded := make(chan struct{}), make(chan struct{})
			go func() {
				defer close(flooded)
				for {
					select {
					case <-stop:
						return
					default:
						flood()
					}
				}
			}()
			ping(a, b, 63)
			ping(b, a, 63)
			close(stop)
			<-flooded
			testutil.WaitFor(t, time.Minute, "tx_full drops at node 1", func() bool {
				flood()
				return counters(t, n1)["tx_full"] > 0
			})
			d := counters(t, n1)
			t.Logf("node 1: underlay queue %d bytes, tx_full %d, tx_error %d", last, d["tx_full"], d["tx_error"])
			if d["tx_error"] != 0 {
				t.Errorf("node 1 counted %d tx_error: a full buffer is tx_full", d["tx_error"])
			}
		})
	}
}
