// Package bench measures tortie against the Linux kernel's own dataplane on
// the same machine, in one run: the same two-node lab is built once with
// Calico-style kernel nodes (veth pods with proxy ARP, native routes or
// vxlan.calico) and once with tortie, with the same pods, generator and
// placement, and each is measured for 64-byte packets per second (trafgen),
// TCP throughput with 1 and 2 streams (iperf3), latency idle and under load
// (sockperf) and CPU per packet. Results are medians over repetitions, with
// the tortie/kernel ratio per metric; they are written as JSON, Markdown and
// a PNG chart. Benchmarks print figures; they never pass or fail.
package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/tortie-net/tortie/lab"
)

// Setups are the dataplanes a run can compare.
var Setups = []Setup{
	{Name: "kernel-native", Kernel: true, Mode: "native"},
	{Name: "kernel-vxlan", Kernel: true, Mode: "vxlan"},
	{Name: "tortie-native", Mode: "native"},
	{Name: "tortie-ipip", Mode: "ipip"},
	{Name: "tortie-vxlan", Mode: "vxlan"},
}

// Setup is one dataplane under test.
type Setup struct {
	Name   string `json:"name"`
	Kernel bool   `json:"kernel"`
	Mode   string `json:"mode"`
}

// Reference is the kernel setup a tortie setup is compared with.
func (s Setup) Reference() string {
	if s.Kernel {
		return ""
	}
	if s.Mode == "native" {
		return "kernel-native"
	}
	return "kernel-vxlan" // the kernel ipip module is not available here; VXLAN is the tunnel reference
}

// Metric names.
const (
	MetricPPS     = "pps_64B"
	MetricLoss    = "loss_pct"
	MetricCPU     = "cpu_ns_per_packet"
	MetricTCP1    = "tcp_1_stream_gbps"
	MetricTCP2    = "tcp_2_streams_gbps"
	MetricRetrans = "tcp_retransmits"
	MetricLatP50  = "latency_p50_us"
	MetricLatP99  = "latency_p99_us"
	MetricLoadP50 = "latency_loaded_p50_us"
	MetricLoadP99 = "latency_loaded_p99_us"
	MetricPodMTU  = "pod_mtu"
)

// Options choose what a run measures.
type Options struct {
	Setups    []string      // names from Setups (default: all)
	Tests     []string      // pps, tcp, latency (default: all)
	Duration  time.Duration // per measurement
	Reps      int
	FrameSize int // bytes on the wire for the pps test, without FCS (default 60: a 64-byte frame)
	OutDir    string
	Tortied   string
	Log       func(format string, a ...any)
}

// Measurement is one metric of one setup over all repetitions.
type Measurement struct {
	Setup  string    `json:"setup"`
	Metric string    `json:"metric"`
	Values []float64 `json:"values"`
	Median float64   `json:"median"`
}

// Ratio compares a tortie setup with its kernel reference on one metric.
type Ratio struct {
	Setup     string  `json:"setup"`
	Reference string  `json:"reference"`
	Metric    string  `json:"metric"`
	Ratio     float64 `json:"ratio"` // tortie / kernel
}

// Report is the whole run.
type Report struct {
	Date         time.Time     `json:"date"`
	CPUs         int           `json:"cpus"`
	Kernel       string        `json:"kernel"`
	Duration     string        `json:"duration"`
	Reps         int           `json:"reps"`
	FrameSize    int           `json:"frameSize"`
	Notes        []string      `json:"notes"`
	Measurements []Measurement `json:"measurements"`
	Ratios       []Ratio       `json:"ratios"`
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// Run builds each setup in turn, measures it, and writes the report.
func Run(ctx context.Context, o Options) (*Report, error) {
	if o.Reps < 1 {
		o.Reps = 1
	}
	if o.Duration <= 0 {
		o.Duration = 5 * time.Second
	}
	if o.FrameSize == 0 {
		o.FrameSize = 60
	}
	if o.Log == nil {
		o.Log = func(string, ...any) {}
	}
	if len(o.Tests) == 0 {
		o.Tests = []string{"pps", "tcp", "latency"}
	}
	kernel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	rep := &Report{Date: time.Now().UTC(), CPUs: runtime.NumCPU(), Kernel: strings.TrimSpace(string(kernel)),
		Duration: o.Duration.String(), Reps: o.Reps, FrameSize: o.FrameSize + 4,
		Notes: []string{
			"two nodes, one pod each (two for the 2-stream test), one generator; all on this machine",
			"each tortie node's tortied runs one Go thread pinned to a CPU of its own (node 1 on the first CPU, node 2 on the next), as a node would give its vRouter a core; pods, generators and the kernel path are not pinned",
			"with the kernel, the generator's own sends carry the forwarding (veth, VXLAN and the peer's receive run in its context), so the offered load is what one CPU forwards; into a TAP, sends only queue",
			"veth offloads are the kernel's defaults (TSO, GSO, checksum offload on); tortie's pod TAPs have checksum and TSO offload (virtio-net headers): tortie segments pods' TCP superframes and coalesces segments toward pods",
			"the generator floods without backpressure: tortie's loss is frames dropped at the sending pod's TAP queue, and its CPU per packet includes the generator's work on frames that were dropped",
			"pps counts frames delivered to the receiving pod's interface; loss is 1 - delivered/offered",
			"CPU per packet = busy time of all CPUs during the pps test / packets delivered",
			"tortie-ipip is compared with kernel-vxlan: the kernel ipip module is not available here",
		}}
	for _, s := range Setups {
		if len(o.Setups) > 0 && !slices.Contains(o.Setups, s.Name) {
			continue
		}
		o.Log("== %s", s.Name)
		ms, err := measureSetup(ctx, o, s)
		if err != nil {
			return rep, fmt.Errorf("%s: %w", s.Name, err)
		}
		rep.Measurements = append(rep.Measurements, ms...)
	}
	rep.Ratios = ratios(rep.Measurements)
	if o.OutDir != "" {
		if err := rep.Write(o.OutDir); err != nil {
			return rep, err
		}
	}
	return rep, nil
}

func ratios(ms []Measurement) []Ratio {
	get := func(setup, metric string) (float64, bool) {
		for _, m := range ms {
			if m.Setup == setup && m.Metric == metric {
				return m.Median, true
			}
		}
		return 0, false
	}
	var out []Ratio
	for _, s := range Setups {
		ref := s.Reference()
		if ref == "" {
			continue
		}
		for _, metric := range []string{MetricPPS, MetricTCP1, MetricTCP2, MetricLatP50, MetricLatP99, MetricCPU} {
			t, ok1 := get(s.Name, metric)
			k, ok2 := get(ref, metric)
			if ok1 && ok2 && k > 0 {
				out = append(out, Ratio{Setup: s.Name, Reference: ref, Metric: metric, Ratio: t / k})
			}
		}
	}
	return out
}

// measureSetup builds the lab for one setup and runs every test Reps times.
func measureSetup(ctx context.Context, o Options, s Setup) ([]Measurement, error) {
	name := "bn"
	opts := lab.Options{Name: name, Nodes: 2, Pods: 2, Mode: s.Mode, Static: true, Tortied: o.Tortied, LogLevel: "warn"}
	if s.Kernel {
		opts.KernelNodes = 2
	}
	_ = lab.Down(name)
	l, err := lab.Up(opts)
	if err != nil {
		return nil, err
	}
	defer lab.Down(name)
	vals := map[string][]float64{}
	add := func(metric string, v float64) { vals[metric] = append(vals[metric], v) }
	add(MetricPodMTU, float64(l.PodMTU(1500)))
	for rep := 0; rep < o.Reps; rep++ {
		if slices.Contains(o.Tests, "pps") {
			r, err := PPS(ctx, l, "n1p1", "n2p1", o.FrameSize, o.Duration)
			if err != nil {
				return nil, err
			}
			o.Log("  pps: %.0f delivered/s, loss %.1f%%, %.0f ns CPU per packet", r.Delivered, r.LossPct, r.CPUNsPerPacket)
			add(MetricPPS, r.Delivered)
			add(MetricLoss, r.LossPct)
			add(MetricCPU, r.CPUNsPerPacket)
		}
		if slices.Contains(o.Tests, "tcp") {
			for _, streams := range []int{1, 2} {
				r, err := TCP(ctx, l, streams, o.Duration)
				if err != nil {
					return nil, err
				}
				o.Log("  tcp %d stream(s): %.2f Gbit/s, %d retransmits", streams, r.BitsPerSecond/1e9, r.Retransmits)
				if streams == 1 {
					add(MetricTCP1, r.BitsPerSecond/1e9)
					add(MetricRetrans, float64(r.Retransmits))
				} else {
					add(MetricTCP2, r.BitsPerSecond/1e9)
				}
			}
		}
		if slices.Contains(o.Tests, "latency") {
			for _, loaded := range []bool{false, true} {
				p50, p99, err := Latency(ctx, l, o.Duration, loaded)
				if err != nil {
					// Too few replies for percentiles (heavy loss under
					// load) is a result, not a failure: leave it blank.
					o.Log("  latency (load %v): not measured: %v", loaded, firstLine(err.Error()))
					continue
				}
				o.Log("  latency (load %v): p50 %.1f us, p99 %.1f us", loaded, p50, p99)
				if loaded {
					add(MetricLoadP50, p50)
					add(MetricLoadP99, p99)
				} else {
					add(MetricLatP50, p50)
					add(MetricLatP99, p99)
				}
			}
		}
	}
	var out []Measurement
	for metric, v := range vals {
		out = append(out, Measurement{Setup: s.Name, Metric: metric, Values: v, Median: median(v)})
	}
	slices.SortFunc(out, func(a, b Measurement) int { return strings.Compare(a.Metric, b.Metric) })
	return out, nil
}

// Write saves results.json, results.md and chart.png in dir.
func (r *Report) Write(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "results.json"), b, 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "results.md"), []byte(r.Markdown()), 0o644); err != nil {
		return err
	}
	return r.Chart(filepath.Join(dir, "chart.png"))
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

// Load reads a saved results.json.
func Load(path string) (*Report, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var r Report
	return &r, json.Unmarshal(b, &r)
}
