package test

import (
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/tortie-net/tortie/lab"
)

// TestIperfCongestion: a lab's TCP tests run under the congestion control
// they ask for (the benchmark's --congestion), and otherwise under the
// pods' default; the pods' default, changed for the test, is put back.
func TestIperfCongestion(t *testing.T) {
	l := up(t, lab.Options{Name: "tcc", Nodes: 2, Pods: 1, Mode: "vxlan", Static: true})
	defaults := func() map[string]string {
		t.Helper()
		m := map[string]string{}
		for _, p := range l.Pods() {
			out, err := exec.Command("ip", "netns", "exec", p.Netns, "sysctl", "-n", "net.ipv4.tcp_congestion_control").Output()
			if err != nil {
				t.Fatal(err)
			}
			m[p.Name] = strings.TrimSpace(string(out))
		}
		return m
	}
	before := defaults()
	podDefault := before["n1p1"]
	// reno is always built in and is no distribution's default: a run
	// that ignored the option would report the pods' default.
	want := "reno"
	if podDefault == want {
		want = "cubic"
	}
	// The last test's two ends share a namespace: it is set and put back
	// once.
	for _, c := range []struct{ cc, to string }{{want, "n2p1"}, {"", "n2p1"}, {want, "n1p1"}} {
		cc := c.cc
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		r, err := l.IperfWith(ctx, "n1p1", c.to, lab.IperfOptions{Bytes: 1 << 20, Congestion: cc})
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		exp := cc
		if cc == "" {
			exp = podDefault
		}
		if r.Congestion != exp {
			t.Errorf("asked for %q: the sender ran %q, want %q", cc, r.Congestion, exp)
		}
	}
	for name, got := range defaults() {
		if got != before[name] {
			t.Errorf("pod %s's default congestion control is %q after the tests, want %q as before", name, got, before[name])
		}
	}
}
