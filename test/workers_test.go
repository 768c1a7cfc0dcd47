package test

import (
	"context"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tortie-net/tortie/api"
	"github.com/tortie-net/tortie/internal/labtest"
	"github.com/tortie-net/tortie/internal/testutil"
	"github.com/tortie-net/tortie/lab"
)

// TestVXLANWorkers: nodes whose tortied runs two threads read VXLAN from
// two sockets sharing port 4789, each with a router worker of its own.
// Every pod reaches every other, and four TCP streams at once, whose
// datagrams the kernel spreads over both sockets by their outer ports,
// carry all their data in both directions (under the race detector, with
// both workers writing to the same pods); on the underlay, each flow's
// datagrams have one source port. Each pod's TAP has two queues, each read
// by its own reader: sixteen streams from one pod, which its kernel
// spreads over both queues, carry all their data.
func TestVXLANWorkers(t *testing.T) {
	l := up(t, lab.Options{Name: "tw", Nodes: 2, Pods: 2, Mode: "vxlan", Static: true, Threads: 2, PodQueues: 2})
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
		rate := labtest.SendAll(t, l.Pod("n1p1"), l.Pod("n2p1"), 4, n, reverse)
		t.Logf("4 streams, reverse %v: %.2f Gbit/s", reverse, rate/1e9)
	}
	podQueues(t, l)
	// Each flow's datagrams leave from one source port (the receiving
	// node's kernel keys its choice of socket on it), as tshark sees them
	// on the underlay: with UDP segmentation off on n1's underlay
	// interface, its kernel cuts each GSO run before the wire, so that
	// every datagram shows its own inner TCP header.
	testutil.Run(t, "ip", "netns", "exec", l.Nodes[0].Netns, "ethtool", "-K", "eth0", "tx-udp-segmentation", "off")
	pcap := capture(t, l, "udp dst port 4789", 400, func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if _, err := l.IperfWith(ctx, "n1p1", "n2p1", lab.IperfOptions{Bytes: 4 << 20, Streams: 4}); err != nil {
			t.Fatal(err)
		}
	})
	ports := map[string]map[string]bool{} // inner TCP ports -> outer UDP source ports
	for _, f := range tsharkFields(t, pcap, "ip.src", "udp.srcport", "tcp.srcport", "tcp.dstport") {
		if len(f) != 4 || f[2] == "" {
			continue // not TCP inside
		}
		flow := f[0] + " " + f[2] + ">" + f[3]
		if ports[flow] == nil {
			ports[flow] = map[string]bool{}
		}
		ports[flow][f[1]] = true
	}
	if len(ports) < 4 {
		t.Fatalf("%d TCP flows in the capture, want at least 4", len(ports))
	}
	for flow, ps := range ports {
		if len(ps) != 1 {
			t.Errorf("flow %s left from %d source ports: %v", flow, len(ps), ps)
		}
	}
}

// podQueues checks that n1p1's TAP has two queues, and that sixteen TCP
// streams from it, which its kernel hands to both queues (its mq qdisc
// counts what each queue sent), arrive whole: a queue tortied did not read
// would hold its flows' data back.
func podQueues(t *testing.T, l *lab.Lab) {
	t.Helper()
	pod := l.Pod("n1p1")
	link := testutil.Run(t, "ip", "-n", pod.Netns, "-d", "link", "show", "eth0")
	if !strings.Contains(link, "multi_queue numqueues 2 ") {
		t.Fatalf("n1p1's eth0 is not a TAP with two queues:\n%s", link)
	}
	// tortied says so too.
	eps, err := api.NewClient(l.Nodes[0].Socket).Endpoints()
	if err != nil || len(eps) == 0 {
		t.Fatalf("n1's endpoints: %v, %v", eps, err)
	}
	for _, e := range eps {
		if e.Queues != 2 {
			t.Fatalf("endpoint %s has %d queues, want 2", e.Name, e.Queues)
		}
	}
	out := testutil.Run(t, filepath.Join(labtest.BinDir, "tortiectl"), "--socket", l.Nodes[0].Socket, "endpoints")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	col := slices.Index(strings.Fields(lines[0]), "QUEUES")
	for _, line := range lines[1:] {
		if f := strings.Fields(line); col < 0 || col >= len(f) || f[col] != "2" {
			t.Fatalf("tortiectl endpoints does not show two queues:\n%s", out)
		}
	}
	if len(lines) != 1+len(eps) {
		t.Fatalf("tortiectl endpoints shows %d rows for %d endpoints:\n%s", len(lines)-1, len(eps), out)
	}
	const n = 32 << 20
	rate := labtest.SendAll(t, pod, l.Pod("n2p1"), 16, n, false)
	sent := queueBytes(t, testutil.Run(t, "ip", "netns", "exec", pod.Netns, "tc", "-s", "qdisc", "show", "dev", "eth0"))
	if len(sent) != 2 || sent[":1"] < n/64 || sent[":2"] < n/64 {
		t.Fatalf("bytes each queue of n1p1's eth0 sent: %v, want both queues busy", sent)
	}
	t.Logf("16 streams: %.2f Gbit/s; bytes per TAP queue: %v", rate/1e9, sent)
}

// queueBytes reads, from tc -s qdisc output of an mq qdisc, the bytes each
// child (queue, by its parent handle ":1", ":2", ...) sent.
func queueBytes(t *testing.T, out string) map[string]uint64 {
	t.Helper()
	sent := map[string]uint64{}
	parent := ""
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) > 0 && f[0] == "qdisc":
			parent = ""
			if i := slices.Index(f, "parent"); i >= 0 && i+1 < len(f) {
				parent = f[i+1]
			}
		case len(f) >= 2 && f[0] == "Sent" && parent != "":
			v, err := strconv.ParseUint(f[1], 10, 64)
			if err != nil {
				t.Fatalf("tc output %q: %v", line, err)
			}
			sent[parent] = v
		}
	}
	return sent
}
