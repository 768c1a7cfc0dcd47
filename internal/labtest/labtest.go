// Package labtest is what the root integration test packages share: the
// binaries they build once (tortied under the race detector), and a lab
// that is removed when its test ends and whose tortied logs fail the test
// on any data race, and TCP transfers between its pods whose every byte
// the receivers check (SendAll).
package labtest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tortie-net/tortie/internal/testutil"
	"github.com/tortie-net/tortie/lab"
)

// Main builds the binaries into a temporary directory (when run as root),
// BinDir, runs the tests and exits; root is the module's root relative to
// the test package. It returns only through os.Exit.
func Main(m *testing.M, root string) {
	if os.Geteuid() != 0 {
		os.Exit(m.Run())
	}
	dir, err := os.MkdirTemp("", "tortie-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if err := build(dir, root); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	BinDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// BinDir holds tortied, tortiectl, tortie-lab, tortie-cni and cnitool
// while tests run (set by Main).
var BinDir string

func build(dir, root string) error {
	// tortied runs under the race detector in every lab: a data race on its
	// packet path is reported in the node's log (and does not stop it:
	// halt_on_error=0), and Up fails the test for it.
	os.Setenv("GORACE", "halt_on_error=0")
	for _, args := range [][]string{
		{"build", "-race", "-o", dir + "/", "./cmd/tortied"},
		{"build", "-o", dir + "/", "./cmd/tortiectl", "./cmd/tortie-lab", "./cmd/tortie-cni"},
	} {
		cmd := exec.Command("go", args...)
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("building binaries: %v\n%s", err, out)
		}
	}
	// cnitool, the CNI project's own client, pinned to the library version.
	install := exec.Command("go", "install", "github.com/containernetworking/cni/cnitool@v1.3.1")
	install.Dir = root
	install.Env = append(os.Environ(), "GOBIN="+dir)
	if out, err := install.CombinedOutput(); err != nil {
		return fmt.Errorf("installing cnitool: %v\n%s", err, out)
	}
	return nil
}

// Up builds a lab with the binaries of Main and removes it when the test
// ends, even if it fails. A data race in any node's tortied fails the test.
func Up(t *testing.T, o lab.Options) *lab.Lab {
	t.Helper()
	testutil.RequireRoot(t)
	o.Tortied = filepath.Join(BinDir, "tortied")
	if o.LogLevel == "" {
		o.LogLevel = "warn"
	}
	_ = lab.Down(o.Name) // leftovers of an earlier crash
	l, err := lab.Up(o)
	t.Cleanup(func() {
		if l != nil {
			for _, n := range l.Nodes {
				if n.Log == "" {
					continue // a kernel node: no tortied
				}
				b, err := os.ReadFile(n.Log)
				if err != nil {
					continue
				}
				if r := RaceReports(string(b)); r != "" {
					t.Errorf("data race in tortied on %s:\n%s", n.Name, r)
				}
				if t.Failed() && len(b) > 0 {
					t.Logf("%s log:\n%s", n.Name, TailLines(string(b), 30))
				}
			}
		}
		if err := lab.Down(o.Name); err != nil {
			t.Errorf("lab down: %v", err)
		}
	})
	if err != nil {
		t.Fatalf("lab up: %v", err)
	}
	return l
}

// RaceReports returns the race detector's reports in a tortied log (at
// most the first three, whole), or "" if there are none.
func RaceReports(log string) string {
	const start, end = "WARNING: DATA RACE", "=================="
	var out []string
	for len(out) < 3 {
		i := strings.Index(log, start)
		if i < 0 {
			break
		}
		log = log[i:]
		j := strings.Index(log, end)
		if j < 0 {
			j = len(log)
		}
		out = append(out, log[:j])
		log = log[j:]
	}
	return strings.Join(out, "\n")
}

// TailLines returns the last n lines of s.
func TailLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
