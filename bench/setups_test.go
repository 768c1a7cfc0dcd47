package bench

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestLocalSetups: the local setups run the scale test and nothing else,
// the others everything but it; a second thread is compared with one, one
// queue per pod with two, one thread with the kernel.
func TestLocalSetups(t *testing.T) {
	for _, s := range Setups {
		if s.runs([]string{"scale"}) != s.Local || s.runs([]string{"tcp", "latency"}) == s.Local {
			t.Errorf("%s (local %v) runs the scale test %v, tcp and latency %v", s.Name, s.Local,
				s.runs([]string{"scale"}), s.runs([]string{"tcp", "latency"}))
		}
		if !s.runs(Tests) {
			t.Errorf("%s runs none of the default tests", s.Name)
		}
	}
	want := map[string]string{"kernel-local": "", "tortie-local-1": "kernel-local", "tortie-local-2": "tortie-local-1", "tortie-local-2-2q": "tortie-local-2",
		"tortie-vxlan-rt": "tortie-vxlan", "tortie-vxlan": "kernel-vxlan", "tortie-vxlan-poll": "tortie-vxlan", "tortie-native-poll": "tortie-native",
		"tortie-vxlan-2": "tortie-vxlan", "tortie-vxlan-poll-2": "tortie-vxlan-2", "tortie-vxlan-cut": "tortie-vxlan",
		"tortie-vxlan-goroutines": "tortie-vxlan", "tortie-native-goroutines": "tortie-native"}
	for _, s := range Setups {
		if ref, ok := want[s.Name]; ok && s.Reference() != ref {
			t.Errorf("%s is compared with %q, want %q", s.Name, s.Reference(), ref)
		}
	}
}

// TestReportWithScale: a report whose setups measured different tests
// renders a table row and a chart panel for the scale test, and the
// ratio of two threads to one.
func TestReportWithScale(t *testing.T) {
	ms := []Measurement{
		{Setup: "kernel-native", Metric: MetricTCP1, Median: 12},
		{Setup: "tortie-native", Metric: MetricTCP1, Median: 4},
		{Setup: "kernel-local", Metric: MetricScaleTCP, Median: 20},
		{Setup: "tortie-local-1", Metric: MetricScaleTCP, Median: 5},
		{Setup: "tortie-local-2", Metric: MetricScaleTCP, Median: 7.5},
	}
	r := &Report{CPUs: 2, Reps: 1, Measurements: ms, Ratios: ratios(ms, false)}
	var scaled bool
	for _, x := range r.Ratios {
		if x.Setup == "tortie-local-2" && x.Reference == "tortie-local-1" && x.Metric == MetricScaleTCP && x.Ratio == 1.5 {
			scaled = true
		}
	}
	if !scaled {
		t.Fatalf("no ratio of two threads to one: %+v", r.Ratios)
	}
	if md := r.Markdown(); !strings.Contains(md, "| TCP, two pairs on one node (Gbit/s) | – | – | 20.00 | 5.00 | 7.50 |") {
		t.Fatalf("table:\n%s", md)
	}
	dir := t.TempDir()
	if err := r.Write(dir); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(filepath.Join(dir, "chart.png")); err != nil || fi.Size() == 0 {
		t.Fatalf("chart: %v", err)
	}
}

// TestGroupSetups: the selected setups keep Setups' order, one lab each,
// but the datastore setups of a mode share one, wherever they were asked.
func TestGroupSetups(t *testing.T) {
	pick := func(names ...string) func(Setup) bool {
		return func(s Setup) bool { return slices.Contains(names, s.Name) }
	}
	var got []string
	for _, g := range groupSetups(pick("tortie-vxlan-policy", "kernel-vxlan", "tortie-vxlan-no-policy", "tortie-local-1")) {
		got = append(got, groupNames(g))
	}
	want := []string{"kernel-vxlan", "tortie-vxlan-no-policy, tortie-vxlan-policy", "tortie-local-1"}
	if !slices.Equal(got, want) {
		t.Fatalf("groups %q, want %q", got, want)
	}
	if g := groupSetups(pick("tortie-vxlan-policy")); len(g) != 1 || groupNames(g[0]) != "tortie-vxlan-policy" {
		t.Fatalf("policy setup alone: %v", g)
	}
}

// TestBaselines: with a baseline build, each tortie group is followed by
// its copy under the baseline's names (a datastore group whole), kernel
// setups are not copied, and a setup is compared with its baseline as
// well as with its reference; the table shows the baseline beside it.
func TestBaselines(t *testing.T) {
	pick := func(names ...string) func(Setup) bool {
		return func(s Setup) bool { return slices.Contains(names, s.Name) }
	}
	var got []string
	for _, g := range withBaselines(groupSetups(pick("kernel-vxlan", "tortie-vxlan", "tortie-vxlan-no-policy", "tortie-vxlan-policy"))) {
		got = append(got, groupNames(g))
		for _, s := range g {
			if s.Baseline != strings.HasSuffix(s.Name, BaselineSuffix) {
				t.Errorf("%s: Baseline %v", s.Name, s.Baseline)
			}
		}
	}
	want := []string{"kernel-vxlan", "tortie-vxlan", "tortie-vxlan-baseline",
		"tortie-vxlan-no-policy, tortie-vxlan-policy", "tortie-vxlan-no-policy-baseline, tortie-vxlan-policy-baseline"}
	if !slices.Equal(got, want) {
		t.Fatalf("groups %q, want %q", got, want)
	}
	r := &Report{Interleaved: true, Measurements: []Measurement{
		{Setup: "kernel-vxlan", Metric: MetricTCP1, Values: []float64{20, 20}, Repetitions: []int{1, 2}, Median: 20},
		{Setup: "tortie-vxlan", Metric: MetricTCP1, Values: []float64{12, 15}, Repetitions: []int{1, 2}, Median: 13.5},
		{Setup: "tortie-vxlan-baseline", Metric: MetricTCP1, Values: []float64{10, 10}, Repetitions: []int{1, 2}, Median: 10},
	}}
	r.Ratios = ratios(r.Measurements, true)
	var pairs []string
	for _, x := range r.Ratios {
		pairs = append(pairs, fmt.Sprintf("%s/%s %.2f %.2f", x.Setup, x.Reference, x.Ratio, x.Paired))
	}
	if want := []string{"tortie-vxlan/kernel-vxlan 0.68 0.68", "tortie-vxlan/tortie-vxlan-baseline 1.35 1.35"}; !slices.Equal(pairs, want) {
		t.Fatalf("ratios %q, want %q", pairs, want)
	}
	if got := r.setups(); !slices.Equal(got, []string{"kernel-vxlan", "tortie-vxlan", "tortie-vxlan-baseline"}) {
		t.Fatalf("table columns %q", got)
	}
}

// TestPairedRatios: an interleaved report pairs a setup's and its
// reference's values of the same repetition; where one lacks a
// repetition, the others still pair; values without their repetitions
// are not paired by position; the table shows both ratios.
func TestPairedRatios(t *testing.T) {
	ms := []Measurement{
		// Ratio of medians 9/20; each repetition's own 0.6, 0.45, 0.5.
		{Setup: "kernel-vxlan", Metric: MetricTCP1, Values: []float64{10, 20, 30}, Repetitions: []int{1, 2, 3}, Median: 20},
		{Setup: "tortie-vxlan", Metric: MetricTCP1, Values: []float64{6, 9, 15}, Repetitions: []int{1, 2, 3}, Median: 9},
		// The reference lacks repetition 3, the setup repetition 1: only
		// repetition 2 pairs (50/20), where pairing by position would
		// give 40/10 and 50/20.
		{Setup: "kernel-vxlan", Metric: MetricLatP50, Values: []float64{10, 20}, Repetitions: []int{1, 2}, Median: 15},
		{Setup: "tortie-vxlan", Metric: MetricLatP50, Values: []float64{50, 40}, Repetitions: []int{2, 3}, Median: 45},
		// Saved without repetitions.
		{Setup: "kernel-vxlan", Metric: MetricTCP2, Values: []float64{10, 20}, Median: 15},
		{Setup: "tortie-vxlan", Metric: MetricTCP2, Values: []float64{5, 10}, Median: 7.5},
	}
	r := &Report{CPUs: 2, Reps: 3, Interleaved: true, Measurements: ms, Ratios: ratios(ms, true)}
	got := map[string]Ratio{}
	for _, x := range r.Ratios {
		got[x.Metric] = x
	}
	if x := got[MetricTCP1]; x.Ratio != 0.45 || x.Paired != 0.5 {
		t.Errorf("tcp: %+v", x)
	}
	if x := got[MetricLatP50]; x.Ratio != 3 || x.Paired != 2.5 {
		t.Errorf("latency, repetitions missing on both sides: %+v", x)
	}
	if x := got[MetricTCP2]; x.Ratio != 0.5 || x.Paired != 0 {
		t.Errorf("values without repetitions: %+v", x)
	}
	md := r.Markdown()
	for _, want := range []string{"| tortie-vxlan / kernel-vxlan | tcp_1_stream_gbps | 0.45× | 0.50× |",
		"| tortie-vxlan / kernel-vxlan | tcp_2_streams_gbps | 0.50× | – |", "setups interleaved"} {
		if !strings.Contains(md, want) {
			t.Errorf("table lacks %q:\n%s", want, md)
		}
	}
	if x := ratios(ms, false); x[0].Paired != 0 {
		t.Errorf("paired ratio without interleaving: %+v", x[0])
	}
	zero := []Measurement{
		{Setup: "kernel-vxlan", Metric: MetricTCP1, Values: []float64{0, 2}, Repetitions: []int{1, 2}},
		{Setup: "tortie-vxlan", Metric: MetricTCP1, Values: []float64{1, 2}, Repetitions: []int{1, 2}},
	}
	if p := pairedRatio(&zero[1], &zero[0]); p != 0 {
		t.Errorf("paired ratio over a zero reference: %v", p)
	}
}

// TestReportCongestion: the report says which congestion control its TCP
// tests ran under, and a report from before the option (none recorded)
// says they ran under the pods' default.
func TestReportCongestion(t *testing.T) {
	for cc, want := range map[string]string{
		"cubic": "TCP tests under cubic congestion control",
		"":      "TCP tests under the pods' default congestion control",
	} {
		r := &Report{CPUs: 2, Reps: 1, Congestion: cc}
		if md := r.Markdown(); !strings.Contains(md, want) {
			t.Errorf("congestion %q: no %q in\n%s", cc, want, md)
		}
	}
}
