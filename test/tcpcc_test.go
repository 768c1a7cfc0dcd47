package test

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/tortie-net/tortie/lab"
)

// TestIperfCongestion: a lab's TCP tests run under the congestion control
// they ask for (the benchmark's --congestion), and otherwise under the
// pods' default, which a network namespace takes from the machine's; the
// pods' default, changed for the test, is put back.
func TestIperfCongestion(t *testing.T) {
	def, err := os.ReadFile("/proc/sys/net/ipv4/tcp_congestion_control")
	if err != nil {
		t.Fatal(err)
	}
	machine := strings.TrimSpace(string(def))
	// reno is always built in and is no distribution's default: a run
	// that ignored the option would report the machine's.
	want := "reno"
	if machine == want {
		want = "cubic"
	}
	l := up(t, lab.Options{Name: "tcc", Nodes: 2, Pods: 1, Mode: "vxlan", Static: true})
	for _, cc := range []string{want, ""} {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		r, err := l.IperfWith(ctx, "n1p1", "n2p1", lab.IperfOptions{Bytes: 1 << 20, Congestion: cc})
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		exp := cc
		if cc == "" {
			exp = machine
		}
		if r.Congestion != exp {
			t.Errorf("asked for %q: the sender ran %q, want %q", cc, r.Congestion, exp)
		}
	}
	for _, p := range l.Pods() {
		out, err := exec.Command("ip", "netns", "exec", p.Netns, "sysctl", "-n", "net.ipv4.tcp_congestion_control").Output()
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.TrimSpace(string(out)); got != machine {
			t.Errorf("pod %s's default congestion control is %q after the tests, want the machine's %q", p.Name, got, machine)
		}
	}
}
