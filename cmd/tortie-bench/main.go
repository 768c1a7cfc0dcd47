// Command tortie-bench builds the same two-node topology with the Linux
// kernel's dataplane and with tortie, measures both in one run (unpaced
// floods, zero-loss rates of 64-byte frames and of IMIX, TCP with its CPU
// cost per Gbit, latency), as well as tortie with --policies network
// policies in force against none, and writes results.json, results.md and
// chart.png.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/tortie-net/tortie/bench"
)

func main() {
	var o bench.Options
	var names []string
	for _, s := range bench.Setups {
		names = append(names, s.Name)
	}
	setups := flag.String("setups", "", "comma-separated setups (default all): "+strings.Join(names, ", "))
	tests := flag.String("tests", strings.Join(bench.Tests, ","), "comma-separated tests: pps (unpaced 64-byte flood), "+
		"zeroloss (highest 64-byte rate under 0.1% loss), imix (IMIX flood and its zero-loss search), tcp, latency, "+
		"scale (two TCP pairs at once on one node, then one pair with four streams: the local setups run it and nothing else)")
	flag.DurationVar(&o.Duration, "duration", 5*time.Second, "length of each measurement")
	flag.DurationVar(&o.TrialDuration, "trial-duration", 2*time.Second, "length of each trial of a zero-loss search")
	flag.IntVar(&o.SearchSteps, "search-steps", 7, "trials of a zero-loss search, at most")
	flag.IntVar(&o.Reps, "reps", 3, "repetitions (medians are reported)")
	flag.IntVar(&o.FrameSize, "frame-size", 60, "frame size for the pps test, without the 4-byte FCS")
	flag.IntVar(&o.Policies, "policies", 100, "policies in force for tortie-vxlan-policy (measured against tortie-vxlan-no-policy)")
	flag.StringVar(&o.OutDir, "out", "bench/out", "output directory")
	flag.StringVar(&o.Tortied, "tortied", "", "tortied binary (default: next to tortie-bench)")
	flag.StringVar(&o.Baseline, "baseline", "", "another tortied binary (an earlier build) to measure every tortie setup with too, "+
		"as <setup>"+bench.BaselineSuffix+", interleaved, and compare with (implies --interleave)")
	flag.BoolVar(&o.Interleave, "interleave", false, "bring every setup's lab up at once and measure the setups in turn in each repetition "+
		"(a setup and its reference measured close together, on a machine whose speed drifts), instead of each setup's repetitions in a row")
	flag.StringVar(&o.Congestion, "congestion", "cubic", "TCP congestion control of every TCP test, both ends (iperf3 -C); empty: the pods' default, "+
		"which a network namespace takes from the machine's")
	render := flag.String("render", "", "only re-render results.md and chart.png from this results.json into --out")
	flag.Parse()
	if *render != "" {
		rep, err := bench.Load(*render)
		if err == nil {
			err = rep.Write(o.OutDir)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "tortie-bench:", err)
			os.Exit(1)
		}
		fmt.Print(rep.Markdown())
		return
	}
	if *setups != "" {
		o.Setups = strings.Split(*setups, ",")
	}
	o.Tests = strings.Split(*tests, ",")
	if o.Tortied == "" {
		self, _ := os.Executable()
		o.Tortied = filepath.Join(filepath.Dir(self), "tortied")
	}
	if o.Baseline != "" {
		if _, err := os.Stat(o.Baseline); err != nil {
			fmt.Fprintln(os.Stderr, "tortie-bench: --baseline:", err)
			os.Exit(2)
		}
	}
	o.Log = func(format string, a ...any) { fmt.Fprintf(os.Stderr, format+"\n", a...) }
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	rep, err := bench.Run(ctx, o)
	if rep != nil {
		// Also a run stopped part-way, or one whose files could not be
		// written: what it measured is not lost.
		fmt.Print(rep.Markdown())
		if !errors.Is(err, bench.ErrNotWritten) {
			fmt.Printf("\nwritten to %s/{results.json,results.md,chart.png}\n", o.OutDir)
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "tortie-bench:", err)
		os.Exit(1)
	}
}
