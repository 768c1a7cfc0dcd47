package test

import (
	"context"
	"encoding/json"
	"fmt"
	"image/png"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tortie-net/tortie/bench"
	"github.com/tortie-net/tortie/internal/labtest"
	"github.com/tortie-net/tortie/internal/testutil"
	"github.com/tortie-net/tortie/lab"
)

// TestBenchHarness runs the benchmark end to end on a very short setting,
// interleaved, and checks only that it produces a well-formed result: JSON
// with every metric of both repetitions for both setups and the ratios, a
// Markdown table, a PNG chart; and that both labs were up before either
// was measured, the setups measured in turn in each repetition, and both
// labs gone afterwards. How fast anything is never decides this test.
func TestBenchHarness(t *testing.T) {
	testutil.RequireRoot(t)
	out := t.TempDir()
	var mu sync.Mutex
	var logged []string
	logf := func(format string, a ...any) {
		t.Logf(format, a...)
		mu.Lock()
		logged = append(logged, fmt.Sprintf(format, a...))
		mu.Unlock()
	}
	rep, err := bench.Run(context.Background(), bench.Options{
		Setups: []string{"kernel-vxlan", "tortie-vxlan"}, Tests: []string{"pps", "tcp", "latency"}, Interleave: true,
		Duration: time.Second, Reps: 2, OutDir: out, Tortied: filepath.Join(labtest.BinDir, "tortied"), Log: logf,
	})
	if err != nil {
		t.Fatal(err)
	}
	var order []string
	mu.Lock()
	for _, line := range logged {
		if strings.HasPrefix(line, "== ") {
			order = append(order, line)
		}
	}
	mu.Unlock()
	want := []string{"== up: kernel-vxlan (lab bn1)", "== up: tortie-vxlan (lab bn2)",
		"== repetition 1: kernel-vxlan", "== repetition 1: tortie-vxlan", "== repetition 2: kernel-vxlan", "== repetition 2: tortie-vxlan"}
	if !slices.Equal(order, want) {
		t.Errorf("run order:\n%s\nwant:\n%s", strings.Join(order, "\n"), strings.Join(want, "\n"))
	}
	labsGone(t, "bn1", "bn2")
	if !rep.Interleaved {
		t.Error("report does not say it was interleaved")
	}
	back := readResults(t, out)
	for _, setup := range []string{"kernel-vxlan", "tortie-vxlan"} {
		for _, metric := range []string{bench.MetricPPS, bench.MetricLoss, bench.MetricCPU, bench.MetricTCP1, bench.MetricTCP2, bench.MetricLatP50, bench.MetricPodMTU} {
			found := false
			for _, m := range back.Measurements {
				want := []int{1, 2} // each value's repetition
				if metric == bench.MetricPodMTU {
					want = nil // a property of the lab, measured once
				}
				found = found || (m.Setup == setup && m.Metric == metric && len(m.Values) == max(1, len(want)) && slices.Equal(m.Repetitions, want))
			}
			if !found {
				t.Errorf("no %s for %s in both repetitions", metric, setup)
			}
		}
	}
	if len(rep.Ratios) == 0 {
		t.Error("no tortie/kernel ratios")
	}
	md, _ := os.ReadFile(filepath.Join(out, "results.md"))
	if !strings.Contains(string(md), "| tortie-vxlan / kernel-vxlan | pps_64B |") || !strings.Contains(string(md), "setups interleaved") {
		t.Errorf("results.md lacks the ratio table:\n%s", md)
	}
	f, err := os.Open(filepath.Join(out, "chart.png"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil || img.Bounds().Dx() < 400 {
		t.Fatalf("chart.png: %v", err)
	}
}

// TestBenchStoppedPartWay stops an interleaved run as Ctrl-C does (its
// context cancelled) when the second repetition begins: Run returns the
// error, and the report it still writes holds the first repetition of both
// setups and says that it stopped; both labs are gone.
func TestBenchStoppedPartWay(t *testing.T) {
	testutil.RequireRoot(t)
	out := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	logf := func(format string, a ...any) {
		t.Logf(format, a...)
		if strings.HasPrefix(fmt.Sprintf(format, a...), "== repetition 2:") {
			cancel()
		}
	}
	rep, err := bench.Run(ctx, bench.Options{
		Setups: []string{"kernel-vxlan", "tortie-vxlan"}, Tests: []string{"tcp"}, Interleave: true,
		Duration: time.Second, Reps: 2, OutDir: out, Tortied: filepath.Join(labtest.BinDir, "tortied"), Log: logf,
	})
	if err == nil || !strings.Contains(err.Error(), "repetition 2 of kernel-vxlan") {
		t.Fatalf("Run: %v, want the error of repetition 2 of kernel-vxlan", err)
	}
	if rep == nil || rep.Stopped != err.Error() {
		t.Fatalf("report: %+v, want it stopped with %q", rep, err)
	}
	labsGone(t, "bn1", "bn2")
	back := readResults(t, out)
	if back.Stopped == "" {
		t.Error("results.json does not say the run stopped")
	}
	for _, setup := range []string{"kernel-vxlan", "tortie-vxlan"} {
		found := false
		for _, m := range back.Measurements {
			found = found || (m.Setup == setup && m.Metric == bench.MetricTCP1 && slices.Equal(m.Repetitions, []int{1}))
		}
		if !found {
			t.Errorf("no %s for %s of repetition 1 alone: %+v", bench.MetricTCP1, setup, back.Measurements)
		}
	}
	md, _ := os.ReadFile(filepath.Join(out, "results.md"))
	if !strings.Contains(string(md), "stopped part-way") {
		t.Errorf("results.md does not say the run stopped:\n%s", md)
	}
}

// TestBenchPolicyHarness runs the policy comparison end to end on a very
// short setting: the datastore lab measured without policies and with 20
// in force, twice, so that they are applied, removed and applied again
// (Run fails if a change is not in force on both nodes in time, or if
// policy denies benchmark packets); both are in the report with their
// ratio. How fast anything is never decides this test.
func TestBenchPolicyHarness(t *testing.T) {
	testutil.RequireRoot(t)
	out := t.TempDir()
	rep, err := bench.Run(context.Background(), bench.Options{
		Setups: []string{"tortie-vxlan-no-policy", "tortie-vxlan-policy"}, Tests: []string{"pps", "tcp"}, Policies: 20,
		Duration: time.Second, Reps: 2, OutDir: out, Tortied: filepath.Join(labtest.BinDir, "tortied"), Log: t.Logf,
	})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Policies != 20 {
		t.Errorf("report says %d policies, want 20", rep.Policies)
	}
	for _, setup := range []string{"tortie-vxlan-no-policy", "tortie-vxlan-policy"} {
		for _, metric := range []string{bench.MetricPPS, bench.MetricTCP1, bench.MetricTCP2} {
			found := false
			for _, m := range rep.Measurements {
				found = found || (m.Setup == setup && m.Metric == metric && len(m.Values) == 2)
			}
			if !found {
				t.Errorf("no %s for %s", metric, setup)
			}
		}
	}
	md, _ := os.ReadFile(filepath.Join(out, "results.md"))
	if !strings.Contains(string(md), "| tortie-vxlan-policy / tortie-vxlan-no-policy | pps_64B |") {
		t.Errorf("results.md lacks the policy ratio:\n%s", md)
	}
}

// labsGone fails the test for each of the labs that is still there.
func labsGone(t *testing.T, names ...string) {
	t.Helper()
	for _, name := range names {
		if _, err := os.Stat(lab.Dir(name)); !os.IsNotExist(err) {
			t.Errorf("lab %s is still there after the run (%v)", name, err)
		}
	}
}

// readResults reads the report a run wrote to its results.json in dir.
func readResults(t *testing.T, dir string) bench.Report {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "results.json"))
	if err != nil {
		t.Fatal(err)
	}
	var back bench.Report
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatalf("results.json: %v", err)
	}
	return back
}
