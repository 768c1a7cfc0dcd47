// Package testutil holds helpers shared by tortie's tests: skipping tests
// that need root, throwaway network namespaces, a queue's counters as tc
// reports them, and polling with a deadline instead of sleeping.
package testutil

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// RequireRoot skips t unless it runs as root (network namespaces, TAP
// devices and raw sockets need it).
func RequireRoot(tb testing.TB) {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Skip("needs root (network namespaces, TAP devices, raw sockets)")
	}
}

// Run runs a command and fails the test with its output on error.
func Run(tb testing.TB, name string, args ...string) string {
	tb.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		tb.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

var nsSeq atomic.Int32

// Netns creates a named network namespace with loopback up and removes it
// when the test ends. It returns the name; the path is /var/run/netns/<name>.
func Netns(tb testing.TB) string {
	tb.Helper()
	RequireRoot(tb)
	name := fmt.Sprintf("tt-%d-%d", os.Getpid(), nsSeq.Add(1))
	Run(tb, "ip", "netns", "add", name)
	tb.Cleanup(func() { _ = exec.Command("ip", "netns", "del", name).Run() })
	Run(tb, "ip", "-n", name, "link", "set", "lo", "up")
	return name
}

// NetnsPath is where ip-netns keeps a named namespace.
func NetnsPath(name string) string { return "/var/run/netns/" + name }

// WaitFor polls cond every few milliseconds until it holds or the timeout
// passes, then fails the test with what.
func WaitFor(tb testing.TB, timeout time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Readable polls fd for reading for up to timeout (0: without waiting) and
// reports whether it is readable.
func Readable(tb testing.TB, fd int, timeout time.Duration) bool {
	tb.Helper()
	pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	for {
		n, err := unix.Poll(pfd, int(timeout/time.Millisecond))
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			tb.Fatal(err)
		}
		return n == 1 && pfd[0].Revents&unix.POLLIN != 0
	}
}

// Qdisc is what `tc -s qdisc` reports of an interface's root queue.
type Qdisc struct {
	Root    bool `json:"root"`
	Packets int  `json:"packets"` // sent on
	Drops   int  `json:"drops"`
	Backlog int  `json:"backlog"` // bytes waiting
	Qlen    int  `json:"qlen"`    // packets waiting
}

// QdiscStats reads the root qdisc of interface dev in network namespace
// ns, through `tc -s -j qdisc show`.
func QdiscStats(tb testing.TB, ns, dev string) Qdisc {
	tb.Helper()
	cmd := exec.Command("ip", "netns", "exec", ns, "tc", "-s", "-j", "qdisc", "show", "dev", dev)
	var stderr strings.Builder
	cmd.Stderr = &stderr // kept apart: a warning there must not spoil the JSON
	out, err := cmd.Output()
	if err != nil {
		tb.Fatalf("tc -s -j qdisc show dev %s: %v\n%s", dev, err, stderr.String())
	}
	var qs []Qdisc
	if err := json.Unmarshal(out, &qs); err != nil {
		tb.Fatalf("tc -s -j qdisc show dev %s: %v\n%s", dev, err, out)
	}
	for _, q := range qs {
		if q.Root {
			return q
		}
	}
	tb.Fatalf("tc: %s has no root qdisc\n%s", dev, out)
	return Qdisc{}
}
