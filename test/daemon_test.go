package test

import (
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tortie-net/tortie/api"
	"github.com/tortie-net/tortie/cpuset"
	"github.com/tortie-net/tortie/endpoint"
	"github.com/tortie-net/tortie/internal/labtest"
	"github.com/tortie-net/tortie/internal/nsdial"
	"github.com/tortie-net/tortie/internal/testutil"
	"github.com/tortie-net/tortie/lab"
)

// TestOperatorViews: tortiectl and /metrics show what the daemon does.
func TestOperatorViews(t *testing.T) {
	l := up(t, lab.Options{Name: "to1", Nodes: 2, Pods: 2, Mode: "ipip", Static: true, TortiedUnderlayGRO: true, LogLevel: "info"})
	n1 := l.Nodes[0]
	ping(t, l, "n1p1", l.Pod("n2p1").Address)
	// underlayGRO: true: each tortied turned on its node's underlay GRO,
	// off on a fresh veth, and says so.
	for _, n := range l.Nodes {
		out, err := exec.Command("ip", "netns", "exec", n.Netns, "ethtool", "-k", "eth0").CombinedOutput()
		if err != nil || !strings.Contains(string(out), "generic-receive-offload: on") {
			t.Errorf("%s: underlay GRO not on (%v):\n%s", n.Name, err, out)
		}
		if b, err := os.ReadFile(n.Log); err != nil || !strings.Contains(string(b), `"underlay GRO turned on"`) {
			t.Errorf("%s: tortied's log does not say it turned the underlay's GRO on (%v)", n.Name, err)
		}
	}
	// The pod's TAP hands over superframes that fit one UDP GSO send.
	if out, _ := exec.Command("ip", "-d", "-n", l.Pod("n1p1").Netns, "link", "show", "eth0").CombinedOutput(); !strings.Contains(string(out), "gso_max_segs 43 ") {
		t.Errorf("pod eth0 (MTU 1480) should have gso_max_segs 43:\n%s", out)
	}
	// Each node's tortied runs, every thread of it, on a CPU of its own.
	mine, err := cpuset.Current(0)
	if err != nil {
		t.Fatal(err)
	}
	for i, n := range l.Nodes {
		want := mine.CPUs()[i%mine.Count()]
		tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*", n.PID))
		for _, task := range tasks {
			tid, _ := strconv.Atoi(filepath.Base(task))
			got, err := cpuset.Current(tid)
			if err != nil && !errors.Is(err, syscall.ESRCH) {
				t.Fatal(err)
			}
			if err == nil && got.String() != strconv.Itoa(want) {
				t.Errorf("%s: thread %d of tortied runs on CPUs %s, want %d", n.Name, tid, got, want)
			}
		}
		if len(tasks) == 0 {
			t.Errorf("%s: no threads of tortied (pid %d)", n.Name, n.PID)
		}
	}
	ctl := func(args ...string) string {
		out, err := exec.Command(filepath.Join(labtest.BinDir, "tortiectl"), append([]string{"--socket", n1.Socket}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("tortiectl %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	for args, want := range map[string][]string{
		"status":    {"tortie process is running.", "ipip", "1480", "READY"},
		"endpoints": {"n1p1", "10.244.1.10", "n1p2"},
		"routes":    {"10.244.2.0/24", "remote", "10.0.1.2 (n2)", "ipip", "10.244.1.0/24", "blackhole", "10.244.1.10/32", "local"},
		// One loop (one thread) reads the host TUN, both pods' TAPs and
		// the IPIP socket.
		"counters": {"n1p1", "host", "INPUT LOOP", "FULL TURNS", "BUSY POLLS"},
	} {
		out := ctl(args)
		for _, w := range want {
			if !strings.Contains(out, w) {
				t.Errorf("tortiectl %s lacks %q:\n%s", args, w, out)
			}
		}
	}
	if out := ctl("-o", "json", "routes"); !strings.HasPrefix(strings.TrimSpace(out), "[") {
		t.Errorf("json output: %s", out)
	}

	// The metrics port is on the node's loopback: connect from inside.
	resp, err := nsdial.HTTPClient(testutil.NetnsPath(n1.Netns), 10*time.Second).Get("http://" + n1.Metrics + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	body := string(b)
	for _, w := range []string{`tortie_port_rx_packets_total{port="n1p1"}`, `tortie_port_tx_packets_total{port="host"}`,
		`tortie_router_drops_total{reason="spoofed_source"} 0`, `tortie_fib_routes 6`, `tortie_underlay_path_mtu_bytes 1500`,
		`tortie_input_loop_inputs{loop="0"} 4`, `tortie_input_loop_reads_total{loop="0"}`} {
		if !strings.Contains(body, w) {
			t.Errorf("/metrics lacks %s", w)
		}
	}
}

// TestEndpointAPI: bad requests get errors that say what is wrong, and
// nothing is left half-made.
func TestEndpointAPI(t *testing.T) {
	l := up(t, lab.Options{Name: "te1", Nodes: 1, Pods: 1, Mode: "vxlan", Static: true})
	c := api.NewClient(l.Nodes[0].Socket)
	pod := testutil.Netns(t)
	cases := []struct {
		spec endpoint.Spec
		want string
	}{
		{endpoint.Spec{Name: "x", Netns: "/var/run/netns/does-not-exist", Address: netip.MustParseAddr("10.244.1.50")}, "network namespace"},
		{endpoint.Spec{Name: "n1p1", Netns: testutil.NetnsPath(pod), Address: netip.MustParseAddr("10.244.1.51")}, "exists"},
		{endpoint.Spec{Name: "y", Netns: testutil.NetnsPath(pod), Address: netip.MustParseAddr("10.244.1.10")}, "used by n1p1"},
		{endpoint.Spec{Name: "z", Netns: testutil.NetnsPath(pod)}, "not IPv4"},
		{endpoint.Spec{Name: "w", Netns: testutil.NetnsPath(pod), Address: netip.MustParseAddr("10.244.1.52"), IfName: "a-very-long-interface-name"}, "longer than 15"},
	}
	for _, tc := range cases {
		if _, err := c.AddEndpoint(tc.spec); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("add %+v: %v, want error with %q", tc.spec, err, tc.want)
		}
	}
	eps, err := c.Endpoints()
	if err != nil || len(eps) != 1 {
		t.Fatalf("after failed adds: %d endpoints, %v", len(eps), err)
	}
	if out, _ := exec.Command("ip", "-n", pod, "link", "show", "eth0").CombinedOutput(); !strings.Contains(string(out), "does not exist") {
		t.Errorf("a failed add left an interface behind: %s", out)
	}
	// Delete is idempotent, and a deleted pod's interface is gone.
	for i := 0; i < 2; i++ {
		if err := c.DeleteEndpoint("n1p1"); err != nil {
			t.Fatal(err)
		}
	}
	p1, _ := l.Target("n1p1")
	if out, _ := exec.Command("ip", "-n", p1, "link", "show", "eth0").CombinedOutput(); !strings.Contains(string(out), "does not exist") {
		t.Errorf("deleted pod still has eth0: %s", out)
	}
	if err := c.DeleteEndpoint("never-existed"); err != nil {
		t.Fatal(err)
	}
}

// TestDownAfterCrash: tortied killed and the lab state lost; down still
// removes every namespace and process of the lab.
func TestDownAfterCrash(t *testing.T) {
	l := up(t, lab.Options{Name: "tc1", Nodes: 2, Pods: 1, Mode: "vxlan"})
	for _, n := range l.Nodes {
		_ = syscall.Kill(n.PID, syscall.SIGKILL)
	}
	if err := os.RemoveAll(lab.Dir(l.Name)); err != nil {
		t.Fatal(err)
	}
	if err := lab.Down(l.Name); err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir("/var/run/netns")
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), l.Name+"-") {
			t.Errorf("namespace %s survived down", e.Name())
		}
	}
	testutil.WaitFor(t, 5*time.Second, "tortied processes gone", func() bool {
		for _, n := range l.Nodes {
			if err := syscall.Kill(n.PID, 0); !errors.Is(err, syscall.ESRCH) {
				return false
			}
		}
		return true
	})
}
