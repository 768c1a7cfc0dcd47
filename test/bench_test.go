package test

import (
	"context"
	"encoding/json"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tortie-net/tortie/bench"
	"github.com/tortie-net/tortie/internal/labtest"
	"github.com/tortie-net/tortie/internal/testutil"
)

// TestBenchHarness runs the benchmark end to end on a very short setting
// and checks only that it produces a well-formed result: JSON with every
// metric for both setups and the ratios, a Markdown table, a PNG chart.
// How fast anything is never decides this test.
func TestBenchHarness(t *testing.T) {
	testutil.RequireRoot(t)
	out := t.TempDir()
	rep, err := bench.Run(context.Background(), bench.Options{
		Setups: []string{"kernel-vxlan", "tortie-vxlan"}, Tests: []string{"pps", "tcp", "latency"},
		Duration: time.Second, Reps: 1, OutDir: out, Tortied: filepath.Join(labtest.BinDir, "tortied"), Log: t.Logf,
	})
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(out, "results.json"))
	if err != nil {
		t.Fatal(err)
	}
	var back bench.Report
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatalf("results.json: %v", err)
	}
	for _, setup := range []string{"kernel-vxlan", "tortie-vxlan"} {
		for _, metric := range []string{bench.MetricPPS, bench.MetricLoss, bench.MetricCPU, bench.MetricTCP1, bench.MetricTCP2, bench.MetricLatP50, bench.MetricPodMTU} {
			found := false
			for _, m := range back.Measurements {
				found = found || (m.Setup == setup && m.Metric == metric && len(m.Values) == 1)
			}
			if !found {
				t.Errorf("no %s for %s", metric, setup)
			}
		}
	}
	if len(rep.Ratios) == 0 {
		t.Error("no tortie/kernel ratios")
	}
	md, _ := os.ReadFile(filepath.Join(out, "results.md"))
	if !strings.Contains(string(md), "| tortie-vxlan / kernel-vxlan | pps_64B |") {
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
