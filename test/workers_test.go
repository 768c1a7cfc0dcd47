package test

import (
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/tortie-net/tortie/lab"
)

// TestVXLANWorkers: nodes whose tortied runs two threads read VXLAN from
// two sockets sharing port 4789, each with a router worker of its own.
// Every pod reaches every other, and four TCP streams at once, whose
// datagrams the kernel spreads over both sockets by their outer ports,
// carry all their data in both directions (under the race detector, with
// both workers writing to the same pods).
func TestVXLANWorkers(t *testing.T) {
	l := up(t, lab.Options{Name: "tw", Nodes: 2, Pods: 2, Mode: "vxlan", Static: true, Threads: 2})
	for _, n := range l.Nodes {
		out, err := exec.Command("ip", "netns", "exec", n.Netns, "ss", "-Hlun", "sport", "= :4789").CombinedOutput()
		if err != nil {
			t.Fatalf("%s: ss: %v\n%s", n.Name, err, out)
		}
		if got := len(strings.Split(strings.TrimSpace(string(out)), "\n")); got != 2 {
			t.Fatalf("%s: %d sockets on UDP port 4789, want 2:\n%s", n.Name, got, out)
		}
	}
	checkAll(t, l)
	const n = 40 << 20
	for _, reverse := range []bool{false, true} {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		r, err := l.IperfWith(ctx, "n1p1", "n2p1", lab.IperfOptions{Bytes: n, Streams: 4, Reverse: reverse})
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		if r.Sent < n || r.Received < n/2 {
			t.Fatalf("reverse %v: sent %d, received %d of %d bytes", reverse, r.Sent, r.Received, n)
		}
		t.Logf("4 streams, reverse %v: %.2f Gbit/s, %d retransmits", reverse, r.BitsPerSecond/1e9, r.Retransmits)
	}
}
