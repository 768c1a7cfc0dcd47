// Package bench measures tortie against the Linux kernel's own dataplane on
// the same machine, in one run: the same two-node lab is built once with
// Calico-style kernel nodes (veth pods with proxy ARP, native routes or
// vxlan.calico) and once with tortie, with the same pods, generator and
// placement, and each is measured for 64-byte packets per second (trafgen),
// TCP throughput with 1 and 2 streams (iperf3), latency idle and under load
// (sockperf) and CPU per packet. It also measures what network policy
// costs: a datastore lab measured with and without PolicyManifest's
// policies in force, in turn. Results are medians over repetitions, with
// the ratio per metric to the reference (tortie to the kernel, policies to
// none); they are written as JSON, Markdown and a PNG chart. Benchmarks
// print figures; they never pass or fail.
package bench

import (
	"cmp"
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
	{Name: "tortie-vxlan-no-policy", Mode: "vxlan", Datastore: true},
	{Name: "tortie-vxlan-policy", Mode: "vxlan", Datastore: true, Policies: true},
}

// Setup is one dataplane under test.
type Setup struct {
	Name   string `json:"name"`
	Kernel bool   `json:"kernel"`
	Mode   string `json:"mode"`
	// Datastore builds a datastore lab (etcd, pods through CNI with their
	// WorkloadEndpoints), where network policy can be applied; the
	// datastore setups of one mode share one lab and are measured in
	// turn within each repetition.
	Datastore bool `json:"datastore,omitempty"`
	// Policies puts Options.Policies policies in force (PolicyManifest)
	// while the setup is measured.
	Policies bool `json:"policies,omitempty"`
}

// Reference is the setup another is compared with: for one with policies,
// the same lab without them; for tortie, the kernel.
func (s Setup) Reference() string {
	if s.Kernel {
		return ""
	}
	if s.Policies {
		return "tortie-" + s.Mode + "-no-policy"
	}
	if s.Mode == "native" {
		return "kernel-native"
	}
	return "kernel-vxlan" // the kernel ipip module is not available here; VXLAN is the tunnel reference
}

// Metric names.
const (
	MetricPPS = "pps_64B"
	// MetricNewFlowPPS is measured for the datastore setups only: what
	// policy costs most is judging a flow's first packet.
	MetricNewFlowPPS = "new_flows_pps_64B"
	MetricLoss       = "loss_pct"
	MetricCPU        = "cpu_ns_per_packet"
	MetricTCP1       = "tcp_1_stream_gbps"
	MetricTCP2       = "tcp_2_streams_gbps"
	MetricRetrans    = "tcp_retransmits"
	MetricLatP50     = "latency_p50_us"
	MetricLatP99     = "latency_p99_us"
	MetricLoadP50    = "latency_loaded_p50_us"
	MetricLoadP99    = "latency_loaded_p99_us"
	MetricPodMTU     = "pod_mtu"
)

// Options choose what a run measures.
type Options struct {
	Setups    []string      // names from Setups (default: all)
	Tests     []string      // pps, tcp, latency (default: all)
	Duration  time.Duration // per measurement
	Reps      int
	FrameSize int // bytes on the wire for the pps test, without FCS (default 60: a 64-byte frame)
	Policies  int // policies in force for the policy setups (default 100)
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

// Ratio compares a setup with its reference (Setup.Reference) on one metric.
type Ratio struct {
	Setup     string  `json:"setup"`
	Reference string  `json:"reference"`
	Metric    string  `json:"metric"`
	Ratio     float64 `json:"ratio"` // setup / reference
}

// Report is the whole run.
type Report struct {
	Date         time.Time     `json:"date"`
	CPUs         int           `json:"cpus"`
	Kernel       string        `json:"kernel"`
	Duration     string        `json:"duration"`
	Reps         int           `json:"reps"`
	FrameSize    int           `json:"frameSize"`
	Policies     int           `json:"policies,omitempty"`
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
	if o.Policies <= 0 {
		o.Policies = 100
	}
	for _, name := range o.Setups {
		if !slices.ContainsFunc(Setups, func(s Setup) bool { return s.Name == name }) {
			return nil, fmt.Errorf("no setup %q", name)
		}
	}
	selected := func(s Setup) bool { return len(o.Setups) == 0 || slices.Contains(o.Setups, s.Name) }
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
	done := map[string]bool{}
	for i, s := range Setups {
		if !selected(s) || done[s.Name] {
			continue
		}
		// The datastore setups of a mode share a lab.
		group := []Setup{s}
		if s.Datastore {
			for _, x := range Setups[i+1:] {
				if x.Datastore && x.Mode == s.Mode && selected(x) {
					group = append(group, x)
				}
			}
		}
		var names []string
		for _, x := range group {
			done[x.Name] = true
			names = append(names, x.Name)
			if x.Policies {
				rep.Policies = o.Policies
			}
		}
		o.Log("== %s", strings.Join(names, ", "))
		ms, err := measureSetups(ctx, o, group)
		if err != nil {
			return rep, fmt.Errorf("%s: %w", strings.Join(names, ", "), err)
		}
		rep.Measurements = append(rep.Measurements, ms...)
	}
	if rep.Policies > 0 {
		rep.Notes = append(rep.Notes, fmt.Sprintf("tortie-vxlan-policy is the lab of tortie-vxlan-no-policy (a datastore lab: etcd, pods through CNI) "+
			"with %d policies in force (bench.PolicyManifest: a platform tier, namespaced policies selecting the senders' egress "+
			"and the receivers' ingress, and last the one that allows the traffic), measured in turn with it in each repetition; "+
			"the pps test's frames take 65,536 source ports, so its first 65,536 flows are judged at both ends and the rest ride "+
			"them; in the new-flow pps test (these setups only) source and destination ports are random, so nearly every frame "+
			"is a new flow, judged at both ends, in a flow table that is full (65,536 entries) and evicts; a TCP stream or a latency "+
			"test is one flow judged once; without policies the pods are still subject to their namespace's profile (Allow), "+
			"so flows are tracked and judged by one rule: tortie-vxlan, a lab without a datastore, has no policy at all", o.Policies))
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
		for _, metric := range []string{MetricPPS, MetricNewFlowPPS, MetricTCP1, MetricTCP2, MetricLatP50, MetricLatP99, MetricCPU} {
			t, ok1 := get(s.Name, metric)
			k, ok2 := get(ref, metric)
			if ok1 && ok2 && k > 0 {
				out = append(out, Ratio{Setup: s.Name, Reference: ref, Metric: metric, Ratio: t / k})
			}
		}
	}
	return out
}

// measureSetups builds one lab for the setups of a group (one setup, or
// the datastore setups of one mode) and runs every test Reps times, the
// setups in turn within each repetition, with policies in force for
// those that have them.
func measureSetups(ctx context.Context, o Options, group []Setup) (_ []Measurement, err error) {
	s := group[0]
	name := "bn"
	opts := lab.Options{Name: name, Nodes: 2, Pods: 2, Mode: s.Mode, Static: !s.Datastore, Tortied: o.Tortied, LogLevel: "warn"}
	if s.Kernel {
		opts.KernelNodes = 2
	}
	_ = lab.Down(name)
	l, err := lab.Up(opts)
	if err != nil {
		return nil, err
	}
	defer lab.Down(name)
	if s.Datastore {
		if err := labelPods(l); err != nil {
			return nil, err
		}
	}
	vals := map[string]map[string][]float64{} // setup -> metric -> values
	for _, x := range group {
		vals[x.Name] = map[string][]float64{MetricPodMTU: {float64(l.PodMTU(1500))}}
	}
	applied := false
	for rep := 0; rep < o.Reps; rep++ {
		for _, x := range group {
			switch {
			case x.Policies && !applied:
				start := time.Now()
				if err := applyPolicies(l, o.Policies); err != nil {
					return nil, err
				}
				applied = true
				o.Log("  %d policies in force on both nodes after %v", o.Policies, time.Since(start).Round(time.Millisecond))
			case !x.Policies && applied:
				if err := removePolicies(l, o.Policies); err != nil {
					return nil, err
				}
				applied = false
			}
			if len(group) > 1 {
				o.Log("  %s:", x.Name)
			}
			add := func(metric string, v float64) { vals[x.Name][metric] = append(vals[x.Name][metric], v) }
			before, _ := policyWork(l)
			if err := runTests(ctx, o, l, x.Datastore, add); err != nil {
				return nil, err
			}
			if x.Datastore {
				// What policy did meanwhile on the receiving node: flows
				// judged, packets denied (none, or the policies are wrong).
				after, err := policyWork(l)
				if err != nil {
					return nil, err
				}
				o.Log("  node 2: %d flows inserted, %d packets denied by policy", after.Flows.Inserts-before.Flows.Inserts,
					after.Drops["policy_denied"]-before.Drops["policy_denied"])
				if after.Drops["policy_denied"] != before.Drops["policy_denied"] {
					return nil, fmt.Errorf("%s: policy denied benchmark packets on node 2", x.Name)
				}
			}
		}
	}
	var out []Measurement
	for _, x := range group {
		for metric, v := range vals[x.Name] {
			out = append(out, Measurement{Setup: x.Name, Metric: metric, Values: v, Median: median(v)})
		}
	}
	slices.SortFunc(out, func(a, b Measurement) int {
		return cmp.Or(strings.Compare(a.Setup, b.Setup), strings.Compare(a.Metric, b.Metric))
	})
	return out, nil
}

// runTests runs one repetition of every test of o on the lab, passing
// each figure to add; newFlows adds the pps test of new flows.
func runTests(ctx context.Context, o Options, l *lab.Lab, newFlows bool, add func(metric string, v float64)) error {
	if slices.Contains(o.Tests, "pps") {
		r, err := PPS(ctx, l, "n1p1", "n2p1", o.FrameSize, o.Duration)
		if err != nil {
			return err
		}
		o.Log("  pps: %.0f delivered/s, loss %.1f%%, %.0f ns CPU per packet", r.Delivered, r.LossPct, r.CPUNsPerPacket)
		add(MetricPPS, r.Delivered)
		add(MetricLoss, r.LossPct)
		add(MetricCPU, r.CPUNsPerPacket)
		if newFlows {
			before, _ := policyWork(l)
			r, err := NewFlowsPPS(ctx, l, "n1p1", "n2p1", o.FrameSize, o.Duration)
			if err != nil {
				return err
			}
			after, _ := policyWork(l)
			o.Log("  pps, each frame a new flow: %.0f delivered/s, loss %.1f%%; node 2 inserted %d flows, evicted %d",
				r.Delivered, r.LossPct, after.Flows.Inserts-before.Flows.Inserts, after.Flows.Evictions-before.Flows.Evictions)
			add(MetricNewFlowPPS, r.Delivered)
		}
	}
	if slices.Contains(o.Tests, "tcp") {
		for _, streams := range []int{1, 2} {
			r, err := TCP(ctx, l, streams, o.Duration)
			if err != nil {
				return err
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
	return nil
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
