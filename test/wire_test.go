package test

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tortie-net/tortie/api"
	"github.com/tortie-net/tortie/header"
	"github.com/tortie-net/tortie/internal/testutil"
	"github.com/tortie-net/tortie/lab"
	"github.com/tortie-net/tortie/nsutil"
)

// capture runs tshark in the fabric namespace on br0 until it has count
// packets matching filter, while traffic() runs; it returns the pcap path.
func capture(t *testing.T, l *lab.Lab, filter string, count int, traffic func()) string {
	t.Helper()
	pcap := filepath.Join(t.TempDir(), "cap.pcap")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", l.Fabric, "tshark", "-i", "br0", "-f", filter,
		"-c", strconv.Itoa(count), "-w", pcap)
	stderr, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	started := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stderr)
		once := false
		for sc.Scan() {
			if !once && strings.Contains(sc.Text(), "Capturing on") {
				close(started)
				once = true
			}
		}
	}()
	select {
	case <-started:
	case <-ctx.Done():
		t.Fatal("tshark did not start capturing")
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	for {
		traffic()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("tshark: %v", err)
			}
			return pcap
		case <-ctx.Done():
			t.Fatal("capture did not fill")
		default:
		}
	}
}

// tsharkFields decodes a capture with checksum validation on and returns one
// line of fields per packet.
func tsharkFields(t *testing.T, pcap string, fields ...string) [][]string {
	t.Helper()
	args := []string{"-r", pcap, "-o", "ip.check_checksum:TRUE", "-T", "fields", "-E", "separator=|"}
	for _, f := range fields {
		args = append(args, "-e", f)
	}
	out, err := exec.Command("tshark", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("tshark -r: %v\n%s", err, out)
	}
	var rows [][]string
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if line != "" && !strings.HasPrefix(line, "Running as user") {
			rows = append(rows, strings.Split(line, "|"))
		}
	}
	return rows
}

func ping(t *testing.T, l *lab.Lab, from, to string, extra ...string) string {
	ns, err := l.Target(from)
	if err != nil {
		t.Fatal(err)
	}
	args := append([]string{"netns", "exec", ns, "ping", "-n", "-c", "2", "-i", "0.1", "-W", "1"}, extra...)
	out, _ := exec.Command("ip", append(args, to)...).CombinedOutput()
	return string(out)
}

// TestTsharkDecodesUnderlay: an independent decoder finds valid VXLAN (VNI
// 4096) and IPIP on the underlay, with good outer and inner checksums.
func TestTsharkDecodesUnderlay(t *testing.T) {
	testutil.RequireRoot(t)
	t.Run("vxlan", func(t *testing.T) {
		l := up(t, lab.Options{Name: "tw1", Nodes: 2, Pods: 1, Mode: "vxlan"})
		pcap := capture(t, l, "udp dst port 4789", 4, func() { ping(t, l, "n1p1", l.Pod("n2p1").Address) })
		rows := tsharkFields(t, pcap, "vxlan.vni", "ip.checksum.status", "ip.src", "eth.dst", "icmp.checksum.status")
		if len(rows) < 4 {
			t.Fatalf("decoded %d packets", len(rows))
		}
		for _, r := range rows {
			// ip.* fields list the outer header, then the inner one.
			if r[0] != "4096" || r[1] != "1,1" || !strings.HasPrefix(r[2], "10.0.1.") || r[4] != "1" {
				t.Errorf("bad VXLAN frame: vni=%s ip checksums=%s src=%s icmp checksum=%s", r[0], r[1], r[2], r[4])
			}
			if !strings.Contains(r[3], "66:") {
				t.Errorf("inner destination MAC is not a Calico VTEP MAC: %s", r[3])
			}
		}
	})
	t.Run("ipip", func(t *testing.T) {
		l := up(t, lab.Options{Name: "tw2", Nodes: 2, Pods: 1, Mode: "ipip"})
		pcap := capture(t, l, "ip proto 4", 4, func() { ping(t, l, "n1p1", l.Pod("n2p1").Address) })
		rows := tsharkFields(t, pcap, "ip.proto", "ip.checksum.status", "ip.src", "icmp.checksum.status")
		if len(rows) < 4 {
			t.Fatalf("decoded %d packets", len(rows))
		}
		for _, r := range rows {
			if r[0] != "4,1" || r[1] != "1,1" || r[3] != "1" {
				t.Errorf("bad IPIP packet: proto=%s ip checksums=%s icmp checksum=%s", r[0], r[1], r[3])
			}
		}
	})
}

// TestPathMTU: the underlay MTU drops at run time; tortied takes the new
// MTU from the kernel's report before any packet is refused; the pod's DF
// packets that no longer fit get "fragmentation needed" with the new
// tunnel MTU (1400 - 50), and smaller ones keep flowing; with the MTU back,
// full-size packets pass again.
func TestPathMTU(t *testing.T) {
	l := up(t, lab.Options{Name: "tp1", Nodes: 2, Pods: 1, Mode: "vxlan"})
	full := func() {
		t.Helper()
		if out := ping(t, l, "n1p1", l.Pod("n2p1").Address, "-M", "do", "-s", "1422"); !strings.Contains(out, " 0% packet loss") {
			t.Fatalf("a full-size 1450-byte DF packet should pass:\n%s", out)
		}
	}
	pathMTU := func(want int) {
		t.Helper()
		testutil.WaitFor(t, 10*time.Second, fmt.Sprintf("n1's path MTU %d", want), func() bool {
			st, err := api.NewClient(l.Nodes[0].Socket).Status()
			return err == nil && st.PathMTU == want
		})
	}
	full()
	testutil.Run(t, "ip", "-n", l.Nodes[0].Netns, "link", "set", "eth0", "mtu", "1400")
	pathMTU(1400)
	out := ping(t, l, "n1p1", l.Pod("n2p1").Address, "-M", "do", "-s", "1400")
	if !strings.Contains(out, "mtu = 1350") && !strings.Contains(out, "mtu=1350") {
		t.Fatalf("want frag needed with MTU 1350:\n%s", out)
	}
	if d := counters(t, l.Nodes[0]); d["mtu_exceeded"] == 0 && d["frag_needed"] == 0 {
		t.Fatalf("no drop counted: %v", d)
	}
	if out := ping(t, l, "n1p1", l.Pod("n2p1").Address, "-M", "do", "-s", "1300"); !strings.Contains(out, " 0% packet loss") {
		t.Fatalf("packets that fit must keep flowing:\n%s", out)
	}
	testutil.Run(t, "ip", "-n", l.Nodes[0].Netns, "link", "set", "eth0", "mtu", "1500")
	pathMTU(1500)
	// The pod's kernel remembers the smaller path MTU for a while; a new
	// destination address is not needed: its cache entry is flushed.
	testutil.Run(t, "ip", "-n", l.Pod("n1p1").Netns, "route", "flush", "cache")
	full()
}

// TestLiveFaults: a pod spoofing its source and VXLAN from an address that
// is not a node are dropped and counted by the running daemon.
func TestLiveFaults(t *testing.T) {
	l := up(t, lab.Options{Name: "tf1", Nodes: 2, Pods: 1, Mode: "vxlan"})
	n1 := l.Nodes[0]
	pod, _ := l.Target("n1p1")
	testutil.Run(t, "ip", "-n", pod, "addr", "add", "10.244.1.99/32", "dev", "eth0")
	ping(t, l, "n1p1", l.Pod("n2p1").Address, "-I", "10.244.1.99")
	testutil.WaitFor(t, 5*time.Second, "spoofed_source counted", func() bool { return counters(t, n1)["spoofed_source"] >= 1 })

	// The fabric router is on the underlay but is not a node.
	vx := make([]byte, 8+14+20)
	header.VXLAN(vx).Encode(4096)
	err := nsutil.Do(testutil.NetnsPath(l.Fabric), func() error {
		c, err := net.Dial("udp4", n1.Addr()+":4789")
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = c.Write(vx)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 5*time.Second, "unknown_node counted", func() bool { return counters(t, n1)["unknown_node"] >= 1 })
}
