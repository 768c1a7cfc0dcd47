package lab

import (
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// TestPodCongestionFallback: a congestion control the machine does not
// let a network namespace make its default (one available but not in
// net.ipv4.tcp_allowed_congestion_control) leaves the namespace's default
// at reno, which every namespace may choose; restore puts back what was
// there, also after a second namespace's failure.
func TestPodCongestionFallback(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for network namespaces")
	}
	fields := func(path string) []string {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		return strings.Fields(string(b))
	}
	allowed := fields("/proc/sys/net/ipv4/tcp_allowed_congestion_control")
	var cc string
	for _, a := range fields("/proc/sys/net/ipv4/tcp_available_congestion_control") {
		if !slices.Contains(allowed, a) {
			cc = a
			break
		}
	}
	if cc == "" {
		t.Skip("every congestion control this machine has is allowed to namespaces: none to fall back from")
	}
	name := fmt.Sprintf("tcc%d", os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v\n%s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
	read := func() string {
		out, err := exec.Command("ip", "netns", "exec", name, "sysctl", "-n", congestionKey).Output()
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(string(out))
	}
	// Start from a default that is neither reno nor cc, where one is
	// allowed, so that both the change and the restore show.
	for _, a := range allowed {
		if a != "reno" && sysctl(name, congestionKey, a) == nil {
			break
		}
	}
	was := read()
	restore, err := podCongestion([]string{name}, cc)
	if err != nil {
		t.Fatal(err)
	}
	if got := read(); got != "reno" {
		t.Errorf("asked for %s, not allowed to namespaces (allowed: %v): the default is %s, want reno", cc, allowed, got)
	}
	if err := restore(); err != nil {
		t.Fatal(err)
	}
	if got := read(); got != was {
		t.Errorf("after restore the default is %s, want %s", got, was)
	}

	// A namespace that does not exist fails the call; the one changed
	// before it is still put back.
	restore, err = podCongestion([]string{name, name + "-none"}, cc)
	if err == nil {
		t.Fatal("a missing namespace did not fail")
	}
	if err := restore(); err != nil {
		t.Fatal(err)
	}
	if got := read(); got != was {
		t.Errorf("after a failed call and restore the default is %s, want %s", got, was)
	}
}
