// Package test holds tortie's integration tests: real network namespaces,
// TAP and TUN devices, raw sockets, the Linux kernel's own VXLAN as an
// interop peer and tshark as an independent decoder. They need root and the
// tools `make test` installs (iproute2, iputils-ping, iperf3, tshark, ethtool).
package test

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tortie-net/tortie/api"
	"github.com/tortie-net/tortie/fwdchain"
	"github.com/tortie-net/tortie/internal/labtest"
	"github.com/tortie-net/tortie/internal/nsdial"
	"github.com/tortie-net/tortie/internal/testutil"
	"github.com/tortie-net/tortie/lab"
	"github.com/tortie-net/tortie/nsutil"
)

func TestMain(m *testing.M) { labtest.Main(m, "..") }

// up builds a lab and removes it when the test ends, even if it fails.
func up(t *testing.T, o lab.Options) *lab.Lab {
	t.Helper()
	return labtest.Up(t, o)
}

func checkAll(t *testing.T, l *lab.Lab) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	ps := l.Check(ctx)
	for _, p := range lab.Failed(ps) {
		t.Errorf("%s -> %s (%s) failed (ttl %d, want %d):\n%s", p.From, p.To, p.ToAddr, p.TTL, p.WantTTL, p.Output)
	}
	if len(ps) == 0 {
		t.Fatal("empty matrix")
	}
}

// transfer moves 20 MiB over TCP from one pod to another, or back over
// the connection from opened when reverse (as iperf3 -R), and checks all of
// it arrived as sent.
func transfer(t *testing.T, l *lab.Lab, from, to string, reverse bool) {
	t.Helper()
	rate := labtest.SendAll(t, l.Pod(from), l.Pod(to), 1, 20<<20, reverse)
	t.Logf("TCP %s -> %s reverse=%v: %.2f Gbit/s", from, to, reverse, rate/1e9)
}

// fabricUnfiltered checks that the lab's fabric bridges frames as a
// switch does, without passing them through the machine's iptables where
// br_netfilter is loaded (which would charge every frame of a per-segment
// tunnel such as IPIP for it).
func fabricUnfiltered(t *testing.T, l *lab.Lab) {
	t.Helper()
	out := testutil.Run(t, "ip", "netns", "exec", l.Fabric, "sh", "-c",
		"test ! -d /proc/sys/net/bridge || sysctl -n net.bridge.bridge-nf-call-iptables net.bridge.bridge-nf-call-ip6tables net.bridge.bridge-nf-call-arptables")
	for _, v := range strings.Fields(out) {
		if v != "0" {
			t.Fatalf("the fabric's bridges call the firewall on what they bridge:\n%s", out)
		}
	}
}

func counters(t *testing.T, n *lab.Node) map[string]uint64 {
	t.Helper()
	s, err := api.NewClient(n.Socket).Counters()
	if err != nil {
		t.Fatal(err)
	}
	return s.Drops
}

// TestStaticModes: the static route source (peers in the config file) in
// the two tunnel modes; and, in the second, tortied reading each input on
// a goroutine of its own (inputLoops: false) rather than on read loops.
func TestStaticModes(t *testing.T) {
	for i, c := range []struct {
		name, mode string
		readers    bool
	}{{"ipip", "ipip", false}, {"vxlan-crosssubnet", "vxlan-crosssubnet", false}, {"goroutine-readers", "vxlan-crosssubnet", true}} {
		t.Run(c.name, func(t *testing.T) {
			o := lab.Options{Name: fmt.Sprintf("ts%d", i), Nodes: 3, Pods: 1, Mode: c.mode, Static: true,
				GoroutineReaders: c.readers}
			if c.readers {
				// And tortied cutting pods' superframes to VXLAN nodes
				// itself, where the kernel would cut them by default.
				o.TunnelGSO = new(false)
			}
			l := up(t, o)
			// Go's poller holds one epoll; a read loop (one thread:
			// one loop) holds another, watching the host TUN, the pod's
			// TAP and the underlay socket.
			ep := epolls(t, l.Nodes[0].PID)
			switch {
			case c.readers && len(ep) != 1:
				t.Fatalf("n1's tortied holds %d epolls, want 1 (Go's poller's)", len(ep))
			case !c.readers && (len(ep) != 2 || slices.Min(ep) != 3):
				t.Fatalf("n1's tortied holds epolls watching %v descriptors, want Go's poller's and a loop's of 3", ep)
			}
			checkAll(t, l)
			fabricUnfiltered(t, l)
			transfer(t, l, "n1p1", "n2p1", false)
			if s, err := api.NewClient(l.Nodes[0].Socket).Counters(); err != nil || c.readers && s.Offload.WholeToTunnel != 0 {
				t.Fatalf("tunnelGSO off, yet superframes went whole to the tunnel: %+v, %v", s.Offload, err)
			}
			st, err := api.NewClient(l.Nodes[0].Socket).Status()
			switch {
			case err != nil:
				t.Fatal(err)
			case c.mode == "ipip" && st.TunnelGSO != "",
				c.readers && st.TunnelGSO != "off (tunnelGSO: false)",
				c.mode != "ipip" && !c.readers && !strings.HasPrefix(st.TunnelGSO, "on: "):
				t.Fatalf("status says tunnel GSO %q", st.TunnelGSO)
			}
		})
	}
}

// epolls returns, for each epoll descriptor process pid holds, how many
// descriptors it watches.
func epolls(t *testing.T, pid int) []int {
	t.Helper()
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []int
	for _, e := range ents {
		if link, err := os.Readlink(dir + "/" + e.Name()); err == nil && link == "anon_inode:[eventpoll]" {
			info, err := os.ReadFile(fmt.Sprintf("/proc/%d/fdinfo/%s", pid, e.Name()))
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, strings.Count(string(info), "tfd:"))
		}
	}
	return out
}

// TestModes: every mode, every pod to every pod (TTL 63 same node, 62
// across), nodes to their pods and back, and TCP in both directions on one
// node and across nodes (across the router namespace for CrossSubnet).
func TestModes(t *testing.T) {
	for i, mode := range []string{"native", "ipip", "vxlan", "ipip-crosssubnet", "vxlan-crosssubnet"} {
		t.Run(mode, func(t *testing.T) {
			l := up(t, lab.Options{Name: fmt.Sprintf("tm%d", i), Nodes: 3, Pods: 2, Mode: mode})
			checkAll(t, l)
			transfer(t, l, "n1p1", "n1p2", false) // same node
			transfer(t, l, "n1p1", "n1p2", true)
			transfer(t, l, "n1p1", "n2p1", false) // across (other subnet for CrossSubnet)
			transfer(t, l, "n1p1", "n2p1", true)
			if l.CrossSubnet {
				transfer(t, l, "n1p1", "n3p1", false) // same subnet: native
			}
			// Routes chosen per the CrossSubnet rule are visible in the FIB.
			rs, err := api.NewClient(l.Nodes[0].Socket).Routes()
			if err != nil {
				t.Fatal(err)
			}
			want := map[string]string{"n2": l.Encap, "n3": l.Encap}
			if l.CrossSubnet {
				want["n3"] = "native" // n3 shares n1's subnet
			}
			seen := 0
			for _, r := range rs {
				if w, ok := want[r.NodeName]; ok && r.Kind == "remote" {
					seen++
					if r.Mode != w {
						t.Errorf("route %s via %s: mode %s, want %s", r.Prefix, r.NodeName, r.Mode, w)
					}
				}
			}
			if seen < 2 {
				t.Errorf("n1 routes to %d remote blocks, want at least 2: %+v", seen, rs)
			}
		})
	}
}

// TestKernelInterop: one node is tortie, the other a plain Linux node set
// up as Calico sets up its kernel dataplane (vxlan.calico VNI 4096 with
// permanent neighbour and FDB entries, or native routes; veth pods with
// proxy ARP behind 169.254.1.1). In "vxlan-offloads" the kernel node's
// underlay veth keeps its offloads, as a node in a container has them:
// its VXLAN reaches tortie in whole TCP superframes with checksums left
// partial, which tortie must write to its pod whole or finish.
func TestKernelInterop(t *testing.T) {
	for i, mode := range []string{"vxlan", "native", "vxlan-crosssubnet", "vxlan-offloads"} {
		t.Run(mode, func(t *testing.T) {
			o := lab.Options{Name: fmt.Sprintf("tk%d", i), Nodes: 2, Pods: 2, KernelNodes: 1, Mode: mode}
			if mode == "vxlan-offloads" {
				o.Mode, o.KernelOffloads = "vxlan", true
			}
			l := up(t, o)
			if !l.Nodes[1].Kernel {
				t.Fatal("n2 should be a kernel node")
			}
			checkAll(t, l)
			transfer(t, l, "n1p1", "n2p1", false)
			transfer(t, l, "n1p1", "n2p1", true)
			if o.KernelOffloads {
				s, err := api.NewClient(l.Nodes[0].Socket).Counters()
				if err != nil {
					t.Fatal(err)
				}
				if s.Offload.FromUnderlay == 0 {
					t.Fatalf("no superframe came whole from the kernel node: %+v", s.Offload)
				}
				t.Logf("superframes from the kernel node whole: %d", s.Offload.FromUnderlay)
				// UDP from the kernel's pod comes with its checksum
				// left to finish, too.
				udpExchange(t, l.Pod("n2p1"), l.Pod("n1p1"))
			}
		})
	}
}

// udpExchange sends datagrams from pod from to a socket in pod to until
// one arrives whole, and fails after a deadline.
func udpExchange(t *testing.T, from, to *lab.Pod) {
	t.Helper()
	var ln net.PacketConn
	if err := nsutil.Do(testutil.NetnsPath(to.Netns), func() (err error) { ln, err = net.ListenPacket("udp4", ":7100"); return err }); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var c net.Conn
	dst := strings.Split(to.Address, "/")[0] + ":7100"
	if err := nsutil.Do(testutil.NetnsPath(from.Netns), func() (err error) { c, err = net.Dial("udp4", dst); return err }); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	msg := []byte(strings.Repeat("udp from "+from.Name+" ", 40))
	buf := make([]byte, 2048)
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if _, err := c.Write(msg); err != nil {
			t.Fatal(err)
		}
		ln.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		n, _, err := ln.ReadFrom(buf)
		if err == nil && string(buf[:n]) == string(msg) {
			return
		}
	}
	t.Fatalf("no UDP datagram from %s reached %s intact", from.Name, to.Name)
}

// TestTunnelGSO: by default (tunnelGSO unset) a pod's TCP superframes to
// a VXLAN node leave whole through the node's kernel (UDP tunnel GSO):
// between tortie nodes the veths carry them whole and the receiving
// tortie writes them to its pod whole; to a Calico-style kernel node its
// kernel takes them; and where the underlay cannot segment tunnels (a NIC
// without the offload, here a veth told so) the sending kernel cuts them
// in software, with inner TCP and outer UDP checksums the receiving
// tortie and kernel accept. The nodes' FORWARD chains drop by policy, as
// Docker leaves them, set after tortied started: tortied puts its rule
// for the tunnel TAP at the chain's head, and the kernel forwards the
// superframes through it.
func TestTunnelGSO(t *testing.T) {
	l := up(t, lab.Options{Name: "tgs", Nodes: 3, Pods: 1, KernelNodes: 1, Mode: "vxlan"})
	for _, n := range l.Nodes[:2] {
		testutil.Run(t, "ip", "netns", "exec", n.Netns, "iptables", "-P", "FORWARD", "DROP")
		testutil.Run(t, "ip", "netns", "exec", n.Netns, "iptables", "-A", "FORWARD", "-j", "DROP")
	}
	// ruleBytes reads the bytes tortied's rule passed, and whether it is
	// the chain's first: "-A FORWARD -i tortie0-gso -m comment --comment
	// "..." -c <packets> <bytes> -j ACCEPT".
	ruleBytes := func(n *lab.Node) (uint64, bool) {
		t.Helper()
		out := testutil.Run(t, "ip", "netns", "exec", n.Netns, "iptables", "-S", "FORWARD", "-v")
		for _, line := range strings.Split(out, "\n") {
			if _, counters, ok := strings.Cut(line, " -c "); ok && strings.HasPrefix(line, "-A FORWARD") {
				var p, b uint64
				_, err := fmt.Sscanf(counters, "%d %d", &p, &b)
				return b, err == nil && strings.Contains(line, "-i tortie0-gso ") && strings.Contains(line, fwdchain.Comment)
			}
		}
		return 0, false
	}
	// tortied looks every 10 s (forwardReassert); polled more gently than
	// WaitFor would, each look being two processes.
	deadline := time.Now().Add(time.Minute)
	for _, n := range l.Nodes[:2] {
		for _, first := ruleBytes(n); !first; _, first = ruleBytes(n) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: tortied's rule is not at the head of the FORWARD chain:\n%s", n.Name,
					testutil.Run(t, "ip", "netns", "exec", n.Netns, "iptables", "-S", "FORWARD"))
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	checkAll(t, l)
	offload := func(n *lab.Node) api.OffloadStats {
		t.Helper()
		s, err := api.NewClient(n.Socket).Counters()
		if err != nil {
			t.Fatal(err)
		}
		return s.Offload
	}
	transfer(t, l, "n1p1", "n2p1", false)
	transfer(t, l, "n1p1", "n2p1", true)
	s1, s2 := offload(l.Nodes[0]), offload(l.Nodes[1])
	if s1.WholeToTunnel == 0 || s2.WholeToTunnel == 0 || s2.FromUnderlay == 0 || s1.FromUnderlay == 0 {
		t.Fatalf("superframes did not cross whole: n1 %+v, n2 %+v", s1, s2)
	}
	for _, n := range l.Nodes[:2] {
		if b, _ := ruleBytes(n); b == 0 {
			t.Fatalf("%s: nothing passed tortied's FORWARD rule", n.Name)
		}
		if st, err := api.NewClient(n.Socket).Status(); err != nil || !strings.HasPrefix(st.TunnelGSO, "on: ") {
			t.Fatalf("%s: status says tunnel GSO %q (%v)", n.Name, st.TunnelGSO, err)
		}
	}
	transfer(t, l, "n1p1", "n3p1", false)
	transfer(t, l, "n1p1", "n3p1", true)
	// /metrics says it too.
	resp, err := nsdial.HTTPClient(testutil.NetnsPath(l.Nodes[0].Netns), 10*time.Second).Get("http://" + l.Nodes[0].Metrics + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	const series = `tortie_offload_total{kind="whole",unit="to_tunnel"} `
	if err != nil || !strings.Contains(string(body), series) || strings.Contains(string(body), series+"0\n") {
		t.Errorf("/metrics lacks a nonzero %s(%v)", series, err)
	}

	// A firewall's own chain that drops every forwarded packet appears on
	// n1: within a look or two its tortied stops using the tunnel and cuts
	// superframes itself, so bulk TCP goes on; once the chain goes, the
	// tunnel is used again.
	status := func(n *lab.Node) string {
		st, err := api.NewClient(n.Socket).Status()
		if err != nil {
			t.Fatal(err)
		}
		return st.TunnelGSO
	}
	waitStatus := func(n *lab.Node, prefix string) {
		t.Helper()
		testutil.WaitFor(t, time.Minute, fmt.Sprintf("%s's status to say tunnel GSO %q...", n.Name, prefix),
			func() bool { return strings.HasPrefix(status(n), prefix) })
	}
	testutil.Run(t, "ip", "netns", "exec", l.Nodes[0].Netns, "nft", "add table inet fw")
	testutil.Run(t, "ip", "netns", "exec", l.Nodes[0].Netns, "nft", "add chain inet fw fw_forward { type filter hook forward priority 0; policy drop; }")
	waitStatus(l.Nodes[0], "off for now")
	before, bad := offload(l.Nodes[0]).WholeToTunnel, uint64(0)
	transfer(t, l, "n1p1", "n2p1", false)
	if s1 := offload(l.Nodes[0]); s1.WholeToTunnel != before {
		t.Fatalf("paused, yet %d superframes went to the tunnel", s1.WholeToTunnel-before)
	}
	testutil.Run(t, "ip", "netns", "exec", l.Nodes[0].Netns, "nft", "delete table inet fw")
	waitStatus(l.Nodes[0], "on: ")
	transfer(t, l, "n1p1", "n2p1", false)
	if s1 := offload(l.Nodes[0]); s1.WholeToTunnel == before {
		t.Fatal("resumed, yet no superframe went to the tunnel")
	}

	// The sending node's underlay without tunnel segmentation or
	// checksum offload: its kernel cuts each superframe and computes
	// every checksum; the receiving tortie verifies the segments it
	// joins.
	testutil.Run(t, "ip", "netns", "exec", l.Nodes[0].Netns, "ethtool", "-K", "eth0", "tx", "off",
		"tx-udp_tnl-segmentation", "off", "tx-udp_tnl-csum-segmentation", "off")
	before, bad = offload(l.Nodes[0]).WholeToTunnel, offload(l.Nodes[1]).GROBadChecksums
	transfer(t, l, "n1p1", "n2p1", false)
	transfer(t, l, "n1p1", "n3p1", false)
	if s1, s2 := offload(l.Nodes[0]), offload(l.Nodes[1]); s1.WholeToTunnel == before || s2.GROBadChecksums != bad {
		t.Fatalf("cut by the kernel: %d superframes sent whole (%d before), %d bad checksums at n2 (%d before)",
			s1.WholeToTunnel, before, s2.GROBadChecksums, bad)
	}
}
