// Package bench measures tortie against the Linux kernel's own dataplane on
// the same machine, in one run: the same two-node lab is built once with
// Calico-style kernel nodes (veth pods with proxy ARP, native routes or
// vxlan.calico) and once with tortie, with the same pods, generator and
// placement, and each is measured for 64-byte packets per second in an
// unpaced flood (trafgen), the highest rate of 64-byte and of IMIX frames
// forwarded with under 0.1% loss (SearchZeroLoss over paced trials), TCP
// throughput with 1 and 2 streams (iperf3) and its CPU cost per Gbit,
// latency idle and under load (sockperf) and CPU per packet. It also measures what network policy
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
	"errors"
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
	// IPIP whose receiving underlay coalesces as a NIC's GRO does (a
	// veth does not unless told to): what a real node's NIC does for it.
	{Name: "tortie-ipip-gro", Mode: "ipip", UnderlayGRO: true},
	{Name: "tortie-vxlan", Mode: "vxlan"},
	// VXLAN whose pods' TCP superframes tortied cuts itself (tunnelGSO:
	// false), where tortie-vxlan leaves them whole for the kernel to cut.
	{Name: "tortie-vxlan-cut", Mode: "vxlan", TunnelGSO: new(false)},
	// VXLAN with each tortied's threads real-time (realtimePriority 1),
	// preempting the pods as the kernel's softirqs do.
	{Name: "tortie-vxlan-rt", Mode: "vxlan", Realtime: 1},
	// A goroutine per input (inputLoops: false) instead of a read loop
	// per thread, against the loops of tortie-native and tortie-vxlan.
	{Name: "tortie-native-goroutines", Mode: "native", GoroutineReaders: true},
	{Name: "tortie-vxlan-goroutines", Mode: "vxlan", GoroutineReaders: true},
	// Native and VXLAN whose input loops spin for 50 µs before they
	// sleep (busyPoll), so a reply that comes meanwhile is read without
	// a wake-up (each tortied runs one Go thread).
	{Name: "tortie-native-poll", Mode: "native", BusyPoll: 50 * time.Microsecond},
	{Name: "tortie-vxlan-poll", Mode: "vxlan", BusyPoll: 50 * time.Microsecond},
	// VXLAN on two unpinned Go threads per tortied (two read loops), with
	// and without the spin: whether busy polling still pays when a packet
	// may wake a second thread.
	{Name: "tortie-vxlan-2", Mode: "vxlan", Threads: 2},
	{Name: "tortie-vxlan-poll-2", Mode: "vxlan", Threads: 2, BusyPoll: 50 * time.Microsecond},
	{Name: "tortie-vxlan-no-policy", Mode: "vxlan", Datastore: true},
	{Name: "tortie-vxlan-policy", Mode: "vxlan", Datastore: true, Policies: true},
	// One node, four pods, two TCP pairs at once and one pair with four
	// streams (the scale test): the kernel, and tortied on one thread and
	// on two, with one queue in every pod's TAP (the default) and with two.
	{Name: "kernel-local", Kernel: true, Mode: "native", Local: true},
	{Name: "tortie-local-1", Mode: "native", Local: true, Threads: 1},
	{Name: "tortie-local-2", Mode: "native", Local: true, Threads: 2},
	{Name: "tortie-local-2-2q", Mode: "native", Local: true, Threads: 2, PodQueues: 2},
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
	// Local builds one node with four pods, measured by the scale test
	// only (every other test crosses two nodes).
	Local bool `json:"local,omitempty"`
	// Threads is the lab's Threads for tortied: 1 pinned to a CPU, more
	// unpinned.
	Threads int `json:"threads,omitempty"`
	// PodQueues is the lab's PodQueues: queues per pod TAP (0: one).
	PodQueues int `json:"podQueues,omitempty"`
	// UnderlayGRO is the lab's UnderlayGRO: the nodes' underlay veths
	// coalesce what they receive, as a NIC does.
	UnderlayGRO bool `json:"underlayGRO,omitempty"`
	// Realtime is the lab's RealtimePriority (0: the normal scheduler).
	Realtime int `json:"realtime,omitempty"`
	// GoroutineReaders is the lab's GoroutineReaders: a goroutine per
	// input instead of a read loop per thread.
	GoroutineReaders bool `json:"goroutineReaders,omitempty"`
	// BusyPoll is the lab's BusyPoll: how long tortied's loops spin
	// before they sleep (0: not at all).
	BusyPoll time.Duration `json:"busyPoll,omitempty"`
	// TunnelGSO is the lab's TunnelGSO (nil: tortied's default, whole
	// where the kernel takes the offload; false: cut by tortied).
	TunnelGSO *bool `json:"tunnelGSO,omitempty"`
	// Baseline runs Options.Baseline's tortied: it is the setup named
	// without BaselineSuffix, with another build (see withBaselines).
	Baseline bool `json:"baseline,omitempty"`
}

// BaselineSuffix ends the name of a setup run with the baseline build.
const BaselineSuffix = "-baseline"

// tortiedOf is the tortied binary the nodes of setup s run.
func (o Options) tortiedOf(s Setup) string {
	if s.Baseline {
		return o.Baseline
	}
	return o.Tortied
}

// shortPath is a binary's directory and name, for notes.
func shortPath(p string) string {
	return filepath.Join(filepath.Base(filepath.Dir(p)), filepath.Base(p))
}

// withBaselines follows each group of tortie setups with the same group
// run with the baseline build, its setups named with BaselineSuffix:
// interleaved, each is measured right after the one it differs from in
// the build alone. Kernel setups have no build and no copy.
func withBaselines(groups [][]Setup) [][]Setup {
	var out [][]Setup
	for _, g := range groups {
		out = append(out, g)
		if g[0].Kernel {
			continue
		}
		b := slices.Clone(g)
		for i := range b {
			b[i].Name += BaselineSuffix
			b[i].Baseline = true
		}
		out = append(out, b)
	}
	return out
}

// runs reports whether the setup has any of tests to run: the scale test
// for a local setup, any other for the rest.
func (s Setup) runs(tests []string) bool {
	return slices.ContainsFunc(tests, func(t string) bool { return (t == "scale") == s.Local })
}

// Reference is the setup another is compared with: for one with policies,
// the same lab without them; for tortie, the kernel.
func (s Setup) Reference() string {
	if s.Kernel {
		return ""
	}
	if s.Local {
		if s.PodQueues > 1 && s.Threads > 1 {
			return "tortie-local-2" // what the queues add
		}
		if s.Threads > 1 {
			return "tortie-local-1" // what a second thread adds
		}
		return "kernel-local"
	}
	if s.Policies {
		return "tortie-" + s.Mode + "-no-policy"
	}
	if s.Threads > 1 && s.BusyPoll > 0 {
		return "tortie-" + s.Mode + "-2" // what spinning changes on two threads
	}
	if s.Realtime > 0 || s.GoroutineReaders || s.BusyPoll > 0 || s.Threads > 1 || s.TunnelGSO != nil {
		return "tortie-" + s.Mode // what real-time threads, goroutines instead of loops, spinning, a second thread or the kernel's segmentation change
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

	// The zero-loss searches (SearchZeroLoss): the highest offered rate
	// forwarded with under ZeroLossPct lost, the loss of that trial, and
	// how many trials the search ran.
	MetricPPSZeroLoss       = "pps_64B_zero_loss"
	MetricPPSZeroLossLoss   = "pps_64B_zero_loss_loss_pct"
	MetricPPSZeroLossTrials = "pps_64B_zero_loss_trials"
	// The simple IMIX (IMIXFrames): unpaced flood, then zero-loss
	// search; Gbit/s count frame bits with FCS, as delivered.
	MetricIMIXPPS            = "pps_imix"
	MetricIMIXGbps           = "gbps_imix"
	MetricIMIXLoss           = "loss_imix_pct"
	MetricIMIXZeroLoss       = "pps_imix_zero_loss"
	MetricIMIXGbpsZeroLoss   = "gbps_imix_zero_loss"
	MetricIMIXZeroLossLoss   = "pps_imix_zero_loss_loss_pct"
	MetricIMIXZeroLossTrials = "pps_imix_zero_loss_trials"
	// CPU seconds per Gbit moved during the TCP tests: each node's
	// tortied (all threads, user and system), and the whole machine.
	MetricTCP1CPUNode1   = "tcp_1_stream_cpu_s_per_gbit_node1"
	MetricTCP1CPUNode2   = "tcp_1_stream_cpu_s_per_gbit_node2"
	MetricTCP1CPUMachine = "tcp_1_stream_cpu_s_per_gbit_machine"
	MetricTCP2CPUNode1   = "tcp_2_streams_cpu_s_per_gbit_node1"
	MetricTCP2CPUNode2   = "tcp_2_streams_cpu_s_per_gbit_node2"
	MetricTCP2CPUMachine = "tcp_2_streams_cpu_s_per_gbit_machine"
	// The scale test (local setups): two TCP pairs on one node at once,
	// their sum, and CPU per Gbit of the node's tortied and the machine.
	MetricScaleTCP        = "tcp_2_pairs_one_node_gbps"
	MetricScaleCPUNode    = "tcp_2_pairs_cpu_s_per_gbit_node1"
	MetricScaleCPUMachine = "tcp_2_pairs_cpu_s_per_gbit_machine"
	// ... and one pair with four streams: one sending pod's flows, which
	// one TAP queue reads on one core and several queues on several.
	MetricScaleOnePair = "tcp_1_pair_4_streams_one_node_gbps"
)

// Tests are the tests a run can pick (Options.Tests), in the order run.
var Tests = []string{"pps", "zeroloss", "imix", "tcp", "latency", "scale"}

// Options choose what a run measures.
type Options struct {
	Setups   []string      // names from Setups (default: all)
	Tests    []string      // from Tests (default: all)
	Duration time.Duration // per measurement
	Reps     int
	// TrialDuration is the length of each trial of a zero-loss search
	// (default 2s); SearchSteps the trials of a search at most (default
	// 7).
	TrialDuration time.Duration
	SearchSteps   int
	FrameSize     int // bytes on the wire for the pps test, without FCS (default 60: a 64-byte frame)
	Policies      int // policies in force for the policy setups (default 100)
	OutDir        string
	Tortied       string
	Log           func(format string, a ...any)
	// Baseline is another tortied binary (an earlier build, say): each
	// tortie setup is also measured with it, as the setup's name with
	// BaselineSuffix, interleaved (Baseline implies Interleave), and
	// compared with it. Empty: none.
	Baseline string
	// Interleave brings every setup's lab up at once and measures the
	// setups in turn within each repetition, instead of one setup's
	// repetitions after another's: on a machine whose speed drifts over
	// minutes, a setup and its reference are then measured close
	// together.
	Interleave bool
	// Congestion is the TCP congestion control of every TCP test (both
	// ends, iperf3 -C); empty: the pods' default, which a network
	// namespace takes from the machine's. The tools set it to cubic,
	// Linux's default and a Kubernetes node's unless its operator chose
	// otherwise: the rate of a BBR sender, which paces at the bandwidth it
	// has measured, depends on the path's delay and its variation, not
	// only on what the path can carry (see the README's Benchmarks).
	Congestion string
}

// Measurement is one metric of one setup over all repetitions.
type Measurement struct {
	Setup  string    `json:"setup"`
	Metric string    `json:"metric"`
	Values []float64 `json:"values"`
	// Repetitions says which repetition (from 1) each value is from: a
	// test that failed in one leaves no value for it.
	Repetitions []int   `json:"repetitions,omitempty"`
	Median      float64 `json:"median"`
}

// Ratio compares a setup with its reference (Setup.Reference) on one metric.
type Ratio struct {
	Setup     string  `json:"setup"`
	Reference string  `json:"reference"`
	Metric    string  `json:"metric"`
	Ratio     float64 `json:"ratio"` // setup / reference
	// Paired, for an interleaved run (Report.Interleaved), is the median
	// of the ratios within each repetition, where a setup and its
	// reference were measured minutes apart: the machine's drift between
	// repetitions cancels out of it. 0 when not every repetition has both.
	Paired float64 `json:"paired,omitempty"`
}

// Report is the whole run.
type Report struct {
	Date      time.Time `json:"date"`
	CPUs      int       `json:"cpus"`
	Kernel    string    `json:"kernel"`
	Duration  string    `json:"duration"`
	Reps      int       `json:"reps"`
	FrameSize int       `json:"frameSize"`
	// TrialDuration and SearchSteps are those of the zero-loss searches,
	// when the run had them.
	TrialDuration string `json:"trialDuration,omitempty"`
	SearchSteps   int    `json:"searchSteps,omitempty"`
	Policies      int    `json:"policies,omitempty"`
	// Interleaved: the setups' labs were up at once, measured in turn
	// within each repetition (Options.Interleave).
	Interleaved bool `json:"interleaved,omitempty"`
	// Congestion is the TCP tests' congestion control (Options.Congestion;
	// empty: the pods' default).
	Congestion string `json:"congestion,omitempty"`
	// Baseline is Options.Baseline as it was given, when the run
	// compared builds.
	Baseline string `json:"baseline,omitempty"`
	// Stopped is why the run ended before every repetition of every setup
	// was measured (empty when it did not): the report then holds what was
	// measured until then.
	Stopped      string        `json:"stopped,omitempty"`
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
		o.Tests = Tests
	}
	for _, t := range o.Tests {
		if !slices.Contains(Tests, t) {
			return nil, fmt.Errorf("no test %q (tests: %s)", t, strings.Join(Tests, ", "))
		}
	}
	if o.TrialDuration <= 0 {
		o.TrialDuration = 2 * time.Second
	}
	if o.SearchSteps < 1 {
		o.SearchSteps = 7
	}
	if o.Policies <= 0 {
		o.Policies = 100
	}
	for _, name := range o.Setups {
		if !slices.ContainsFunc(Setups, func(s Setup) bool { return s.Name == name }) {
			return nil, fmt.Errorf("no setup %q", name)
		}
	}
	selected := func(s Setup) bool {
		return (len(o.Setups) == 0 || slices.Contains(o.Setups, s.Name)) && s.runs(o.Tests)
	}
	kernel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	rep := &Report{Date: time.Now().UTC(), CPUs: runtime.NumCPU(), Kernel: strings.TrimSpace(string(kernel)),
		Duration: o.Duration.String(), Reps: o.Reps, FrameSize: o.FrameSize + 4, Congestion: o.Congestion,
		Notes: []string{
			"two nodes, one pod each (two for the 2-stream test), one generator; all on this machine",
			"each tortie node's tortied runs one Go thread pinned to a CPU of its own (node 1 on the first CPU, node 2 on the next), as a node would give its vRouter a core; pods, generators and the kernel path are not pinned; tortie-vxlan-2, tortie-vxlan-poll-2, tortie-local-2 and tortie-local-2-2q run two Go threads (two read loops) per tortied, unpinned",
			"with the kernel, the generator's own sends carry the forwarding (veth, VXLAN and the peer's receive run in its context), so the offered load is what one CPU forwards; into a TAP, sends only queue",
			"veth offloads are the kernel's defaults (TSO, GSO, checksum offload on); tortie's pod TAPs have checksum and TSO offload (virtio-net headers): tortie segments pods' TCP superframes and coalesces segments toward pods",
			"the unpaced flood (trafgen, no pacing) has no backpressure: tortie's loss is frames dropped at the sending pod's TAP queue, and its CPU per packet includes the generator's work on frames that were dropped",
			"unpaced pps counts frames delivered to the receiving pod's interface; loss is 1 - delivered/offered",
			"CPU per packet = busy time of all CPUs during the unpaced 64-byte flood / packets delivered",
			"tortie-ipip is compared with kernel-vxlan: the kernel ipip module is not available here",
			"tortie-ipip-gro is tortie-ipip with the nodes' underlay veths coalescing what they receive as a NIC's GRO does (tortie-lab --underlay-gro): a veth does not by default, a real NIC does",
			"tortie-vxlan's pods' TCP superframes to the other node leave whole through the node's kernel, which cuts them (tunnelGSO's default where the kernel takes UDP tunnel GSO, Linux 6.17+): the lab's veths carry them whole, as they carry the kernel path's; tortie-vxlan-cut is tortie-vxlan with tortied cutting them itself (tunnelGSO: false, tortie-lab --tunnel-gso off)",
			"tortie-vxlan-rt is tortie-vxlan with every thread of each tortied under SCHED_FIFO at priority 1 (realtimePriority: 1, tortie-lab --realtime 1): it preempts the pods and generators on its CPU as the kernel's softirqs do",
			"tortie-native-goroutines and tortie-vxlan-goroutines read each input on a goroutine of its own (inputLoops: false, tortie-lab --goroutine-readers), where the other tortie setups read them on one loop per thread",
			"tortie-native-poll and tortie-vxlan-poll are tortie-native and tortie-vxlan whose input loops spin for 50 µs, yielding the CPU between asks, before they sleep (busyPoll: 50us, tortie-lab --busy-poll 50us): a packet that comes meanwhile is read without a wake-up",
		}}
	if slices.Contains(o.Tests, "zeroloss") || slices.Contains(o.Tests, "imix") {
		rep.TrialDuration, rep.SearchSteps = o.TrialDuration.String(), o.SearchSteps
		rep.Notes = append(rep.Notes,
			fmt.Sprintf("zero loss (RFC 2544 style): the highest offered rate forwarded with under %g%% lost, found with at most %d paced trials of %v: "+
				"the first at the rate the unpaced flood delivered; while trials pass, twice the rate (up to the flood's offered rate, or twice the first rate if that is more); "+
				"after one fails, halfway between the highest rate that passed and the lowest that failed; the figure is the highest offered rate of the trials that lost under %g%%, "+
				"its loss and the number of trials are reported with it; 0 if none did", ZeroLossPct, o.SearchSteps, o.TrialDuration, ZeroLossPct),
			fmt.Sprintf("the paced trials do not use trafgen, whose --rate sends each second's frames back to back and then sleeps, and whose --gap sleeps after every frame (gaps of 20, 5 and 1 µs gave 14k, 15k and 57k frames/s here): "+
				"tortie-bench's own pacer sends from a packet socket in the sending pod, every %v what is due at the rate asked, in bursts of at most %d frames after a stall; "+
				"where the generator reaches under %.0f%% of the rate asked, the machine cannot carry that rate (with the kernel the sender's own system calls carry the forwarding, so that is where its limit shows): "+
				"the search goes lower, as after a loss, and the trial counts at the rate it reached if it lost under the threshold",
				pacerQuantum, pacerMaxBurst, 100*MinOfferedShare))
	}
	if slices.Contains(o.Tests, "imix") {
		rep.Notes = append(rep.Notes, "IMIX is the simple IMIX, 7:4:1 of 64-, 594- and 1518-byte frames interleaved frame by frame (trafgen sends a configuration's packets round robin; so does the pacer); "+
			"the 1518-byte frame is cut to the pod's MTU (1468 bytes with VXLAN's MTU of 1450, 1498 with IPIP's 1480); Gbit/s count delivered frame bits with FCS, without preamble and gap")
	}
	if slices.Contains(o.Tests, "scale") {
		rep.Notes = append(rep.Notes, "the scale test (the local setups): one node with four pods, two iperf3 pairs at once (p1 to p2, p3 to p4, one stream each), "+
			"their Gbit/s summed and CPU per Gbit measured as for TCP, then one pair with four streams (p1 to p2); kernel-local is a Calico-style kernel node, tortie-local-1 a tortied on one thread pinned to a CPU, "+
			"tortie-local-2 one on two threads, unpinned, compared with tortie-local-1: what a second core adds when the node has one to give (here the pods' iperf3 share the same two CPUs); "+
			"tortie-local-2-2q is tortie-local-2 with two queues in each pod's TAP, each read on its own, compared with tortie-local-2: what the queues add for one pod's flows")
	}
	if slices.Contains(o.Tests, "tcp") {
		rep.Notes = append(rep.Notes, "TCP CPU per Gbit = CPU seconds used / Gbit the receiving pod's interface received (frames with their headers), over a window inside each iperf3 test "+
			"(from 1s after its start to 0.5s before its end; a quarter and an eighth of the test when it is shorter), which leaves out starting iperf3; equally, CPUs kept busy per Gbit/s; "+
			"per node for tortie: the node's tortied process, all threads, user and system time (/proc/<pid>/stat), which includes the kernel work its system calls do, such as the pods' TCP receive run in its TAP writes; "+
			"the kernel's forwarding runs in softirqs and in the pods' own system calls, which belong to no node, so kernel setups have the machine-wide figure only: "+
			"busy time of all CPUs, which counts iperf3 and everything else running on this shared machine")
	}
	groups := groupSetups(selected)
	if o.Baseline != "" {
		groups = withBaselines(groups)
		o.Interleave = true
		rep.Baseline = o.Baseline
		if abs, err := filepath.Abs(o.Baseline); err == nil {
			o.Baseline = abs // the labs start it from elsewhere
		}
		rep.Notes = append(rep.Notes, fmt.Sprintf("a setup named with %q is the setup named without it, run with another tortied build (%s; the others ran %s), "+
			"measured right after it in each repetition: the paired ratio of the two is the build's change on this machine with its drift taken out",
			BaselineSuffix, rep.Baseline, shortPath(o.Tortied)))
	}
	for _, g := range groups {
		for _, x := range g {
			if x.Policies {
				rep.Policies = o.Policies
			}
		}
	}
	// Labs a killed run left behind.
	for i := range 2 * len(Setups) { // with baselines, up to two labs a setup
		_ = lab.Down(fmt.Sprintf("bn%d", i+1))
	}
	// Interleaved, every group's lab is up at once; else one after another.
	batches := [][][]Setup{groups}
	if o.Interleave {
		rep.Interleaved = true
		rep.Notes = append(rep.Notes, "interleaved: every setup's lab was up at once (an idle tortied used about 0.4% of a CPU here), and each repetition measured the setups in turn, "+
			"so a setup and its reference were measured minutes apart, not a whole setup's run apart: this machine's speed drifts over minutes; "+
			"the median of paired ratios is the median of each repetition's own ratio of a setup to its reference, from which that drift cancels out")
	} else {
		batches = nil
		for _, g := range groups {
			batches = append(batches, [][]Setup{g})
		}
	}
	// A run that fails part-way still reports what it measured: the
	// repetitions done are often an hour's work.
	var runErr error
	for _, b := range batches {
		if runErr = measureTogether(ctx, o, b, rep); runErr != nil {
			rep.Stopped = runErr.Error()
			break
		}
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
	rep.Ratios = ratios(rep.Measurements, rep.Interleaved)
	if one, ok1 := rep.value("tortie-local-1", MetricScaleTCP); ok1 {
		if two, ok2 := rep.value("tortie-local-2", MetricScaleTCP); ok2 {
			rep.Notes = append(rep.Notes, fmt.Sprintf("scale: a second tortied thread took two TCP pairs on one node from %.2f to %.2f Gbit/s, %+.2f Gbit/s for the added core", one, two, two-one))
		}
	}
	if one, ok1 := rep.value("tortie-local-2", MetricScaleOnePair); ok1 {
		if two, ok2 := rep.value("tortie-local-2-2q", MetricScaleOnePair); ok2 {
			rep.Notes = append(rep.Notes, fmt.Sprintf("scale: on two threads, two queues per pod TAP took one pod pair's four streams from %.2f (one queue) to %.2f Gbit/s, %+.2f Gbit/s", one, two, two-one))
		}
	}
	if o.OutDir != "" {
		if err := rep.Write(o.OutDir); err != nil {
			return rep, errors.Join(runErr, fmt.Errorf("%w to %s: %w", ErrNotWritten, o.OutDir, err))
		}
	}
	return rep, runErr
}

// ErrNotWritten is in the error of a Run whose report could not be saved.
var ErrNotWritten = errors.New("report not written")

// ratios compares each setup with its reference on the main metrics;
// paired adds the median of the per-repetition ratios.
func ratios(ms []Measurement, paired bool) []Ratio {
	find := func(setup, metric string) *Measurement {
		for i := range ms {
			if ms[i].Setup == setup && ms[i].Metric == metric {
				return &ms[i]
			}
		}
		return nil
	}
	get := func(setup, metric string) (float64, bool) {
		if m := find(setup, metric); m != nil {
			return m.Median, true
		}
		return 0, false
	}
	var out []Ratio
	compare := func(setup, ref string) {
		for _, metric := range []string{MetricPPS, MetricPPSZeroLoss, MetricIMIXZeroLoss, MetricIMIXGbpsZeroLoss, MetricNewFlowPPS,
			MetricTCP1, MetricTCP2, MetricTCP1CPUMachine, MetricLatP50, MetricLatP99, MetricLoadP99, MetricCPU, MetricScaleTCP, MetricScaleCPUMachine, MetricScaleOnePair} {
			t, ok1 := get(setup, metric)
			k, ok2 := get(ref, metric)
			if ok1 && ok2 && k > 0 {
				r := Ratio{Setup: setup, Reference: ref, Metric: metric, Ratio: t / k}
				if paired {
					r.Paired = pairedRatio(find(setup, metric), find(ref, metric))
				}
				out = append(out, r)
			}
		}
	}
	for _, s := range Setups {
		if ref := s.Reference(); ref != "" {
			compare(s.Name, ref)
		}
		compare(s.Name, s.Name+BaselineSuffix) // nothing unless a baseline ran
	}
	return out
}

// pairedRatio is the median, over the repetitions both a and b have a
// value for, of a's value over b's; 0 when they share none or b's value
// in one is not positive.
func pairedRatio(a, b *Measurement) float64 {
	ra, rb := a.repetitions(), b.repetitions()
	var r []float64
	for i, n := range ra {
		j := slices.Index(rb, n)
		if j < 0 {
			continue
		}
		if !(b.Values[j] > 0) {
			return 0
		}
		r = append(r, a.Values[i]/b.Values[j])
	}
	if len(r) == 0 {
		return 0
	}
	return median(r)
}

// repetitions is Repetitions when it names one for every value; nil
// otherwise (a report saved before Repetitions existed), so that values
// are never paired by position.
func (m *Measurement) repetitions() []int {
	if len(m.Repetitions) != len(m.Values) {
		return nil
	}
	return m.Repetitions
}

// groupSetups returns the selected setups in Setups' order, one group
// each, but the datastore setups of one mode, which share a lab, in one.
func groupSetups(selected func(Setup) bool) [][]Setup {
	var groups [][]Setup
	done := map[string]bool{}
	for i, s := range Setups {
		if !selected(s) || done[s.Name] {
			continue
		}
		group := []Setup{s}
		if s.Datastore {
			for _, x := range Setups[i+1:] {
				if x.Datastore && x.Mode == s.Mode && selected(x) {
					group = append(group, x)
				}
			}
		}
		for _, x := range group {
			done[x.Name] = true
		}
		groups = append(groups, group)
	}
	return groups
}

func groupNames(group []Setup) string {
	var names []string
	for _, x := range group {
		names = append(names, x.Name)
	}
	return strings.Join(names, ", ")
}

// measureTogether builds the labs of groups at once (bn1, bn2, ...) and,
// in each repetition, measures the groups in turn; it takes the labs down
// when it returns, and adds to rep what was measured, also when it fails
// part-way.
func measureTogether(ctx context.Context, o Options, groups [][]Setup, rep *Report) error {
	var labs []*groupLab
	defer func() {
		for _, g := range labs {
			rep.Measurements = append(rep.Measurements, g.results()...)
			rep.Notes = append(rep.Notes, g.notes...)
			g.down()
		}
	}()
	for i, group := range groups {
		name := fmt.Sprintf("bn%d", i+1)
		o.Log("== up: %s (lab %s)", groupNames(group), name)
		g, err := upGroup(o, group, name)
		if err != nil {
			return fmt.Errorf("%s: %w", groupNames(group), err)
		}
		labs = append(labs, g)
	}
	for r := 0; r < o.Reps; r++ {
		for _, g := range labs {
			o.Log("== repetition %d: %s", r+1, groupNames(g.group))
			if err := g.measure(ctx, o, r); err != nil {
				return fmt.Errorf("repetition %d of %s: %w", r+1, groupNames(g.group), err)
			}
		}
	}
	return nil
}

// groupLab is the lab of a group of setups (one setup, or the datastore
// setups of one mode) and what was measured on it so far. It is used by
// one goroutine.
type groupLab struct {
	group   []Setup
	lab     *lab.Lab
	ms      map[string]map[string]*Measurement // setup -> metric -> values so far
	applied bool                               // policies in force
	notes   []string
}

// upGroup builds the lab, named name, for the setups of a group.
func upGroup(o Options, group []Setup, name string) (*groupLab, error) {
	s := group[0]
	// A baseline's labs take the CNI plugin of the build under test,
	// which the baseline's directory need not hold.
	cni := filepath.Join(filepath.Dir(o.Tortied), "tortie-cni")
	opts := lab.Options{Name: name, Nodes: 2, Pods: 2, Mode: s.Mode, Static: !s.Datastore, Tortied: o.tortiedOf(s), CNIPlugin: cni, LogLevel: "warn", Threads: s.Threads,
		PodQueues: s.PodQueues, UnderlayGRO: s.UnderlayGRO, RealtimePriority: s.Realtime, GoroutineReaders: s.GoroutineReaders,
		BusyPoll: s.BusyPoll, TunnelGSO: s.TunnelGSO}
	if s.Local {
		opts.Nodes, opts.Pods = 1, 4
	}
	if s.Kernel {
		opts.KernelNodes = opts.Nodes
	}
	_ = lab.Down(name)
	l, err := lab.Up(opts)
	if err != nil {
		return nil, err
	}
	g := &groupLab{group: group, lab: l, ms: map[string]map[string]*Measurement{}}
	if s.Datastore {
		if err := labelPods(l); err != nil {
			g.down()
			return nil, err
		}
	}
	for _, x := range group {
		// The pod MTU is the lab's, measured once, of no repetition.
		g.ms[x.Name] = map[string]*Measurement{MetricPodMTU: {Setup: x.Name, Metric: MetricPodMTU, Values: []float64{float64(l.PodMTU(1500))}}}
	}
	return g, nil
}

func (g *groupLab) down() { _ = lab.Down(g.lab.Name) }

// measure runs repetition rep (from 0) of every test on the lab, the
// group's setups in turn, with policies in force for those that have
// them.
func (g *groupLab) measure(ctx context.Context, o Options, rep int) error {
	l := g.lab
	for _, x := range g.group {
		switch {
		case x.Policies && !g.applied:
			start := time.Now()
			if err := applyPolicies(l, o.Policies); err != nil {
				return err
			}
			g.applied = true
			o.Log("  %d policies in force on both nodes after %v", o.Policies, time.Since(start).Round(time.Millisecond))
		case !x.Policies && g.applied:
			if err := removePolicies(l, o.Policies); err != nil {
				return err
			}
			g.applied = false
		}
		if len(g.group) > 1 {
			o.Log("  %s:", x.Name)
		}
		add := func(metric string, v float64) {
			m := g.ms[x.Name][metric]
			if m == nil {
				m = &Measurement{Setup: x.Name, Metric: metric}
				g.ms[x.Name][metric] = m
			}
			m.Values, m.Repetitions = append(m.Values, v), append(m.Repetitions, rep+1)
		}
		before, _ := policyWork(l)
		note := func(n string) { g.notes = append(g.notes, fmt.Sprintf("%s, repetition %d: %s", x.Name, rep+1, n)) }
		run := runTests
		if x.Local {
			run = runScale
		}
		ox := o
		ox.Tortied = o.tortiedOf(x) // the binary its nodes run
		if err := run(ctx, ox, l, x.Datastore, add, note); err != nil {
			return err
		}
		if x.Datastore {
			// What policy did meanwhile on the receiving node: flows
			// judged, packets denied (none, or the policies are wrong).
			after, err := policyWork(l)
			if err != nil {
				return err
			}
			o.Log("  node 2: %d flows inserted, %d packets denied by policy", after.Flows.Inserts-before.Flows.Inserts,
				after.Drops["policy_denied"]-before.Drops["policy_denied"])
			if after.Drops["policy_denied"] != before.Drops["policy_denied"] {
				return fmt.Errorf("%s: policy denied benchmark packets on node 2", x.Name)
			}
		}
	}
	return nil
}

// results are the group's measurements, sorted by setup and metric.
func (g *groupLab) results() []Measurement {
	var out []Measurement
	for _, x := range g.group {
		for _, m := range g.ms[x.Name] {
			m.Median = median(m.Values)
			out = append(out, *m)
		}
	}
	slices.SortFunc(out, func(a, b Measurement) int {
		return cmp.Or(strings.Compare(a.Setup, b.Setup), strings.Compare(a.Metric, b.Metric))
	})
	return out
}

// runTests runs one repetition of every test of o on the lab, passing
// each figure to add and what limited a result to note; newFlows adds
// the pps test of new flows.
func runTests(ctx context.Context, o Options, l *lab.Lab, newFlows bool, add func(metric string, v float64), note func(string)) error {
	run := func(t string) bool { return slices.Contains(o.Tests, t) }
	if run("pps") || run("zeroloss") {
		r, err := PPS(ctx, l, "n1p1", "n2p1", o.FrameSize, o.Duration)
		if err != nil {
			return err
		}
		o.Log("  pps, unpaced: %.0f delivered/s of %.0f offered, loss %.1f%%, %.0f ns CPU per packet", r.Delivered, r.Offered, r.LossPct, r.CPUNsPerPacket)
		add(MetricPPS, r.Delivered)
		add(MetricLoss, r.LossPct)
		add(MetricCPU, r.CPUNsPerPacket)
		if newFlows && run("pps") {
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
		if run("zeroloss") {
			start := time.Now()
			res, err := zeroLoss(ctx, o, l, []int{o.FrameSize}, r)
			if err != nil {
				return fmt.Errorf("zero-loss search, %d-byte frames: %w", o.FrameSize+fcs, err)
			}
			add(MetricPPSZeroLoss, res.Rate)
			add(MetricPPSZeroLossLoss, res.Best.LossPct)
			add(MetricPPSZeroLossTrials, float64(len(res.Trials)))
			o.Log("  zero-loss search took %v", time.Since(start).Round(time.Second))
			if res.Note != "" {
				note(fmt.Sprintf("%d-byte zero-loss search: %s", o.FrameSize+fcs, res.Note))
			}
		}
	}
	if run("imix") {
		start := time.Now()
		sizes, err := IMIXFrames(l.PodMTU(1500))
		if err != nil {
			return err
		}
		r, err := PPSFrames(ctx, l, "n1p1", "n2p1", sizes, o.Duration)
		if err != nil {
			return err
		}
		o.Log("  imix, unpaced: %.0f delivered/s (%.2f Gbit/s) of %.0f offered, loss %.1f%%", r.Delivered, r.DeliveredBits/1e9, r.Offered, r.LossPct)
		add(MetricIMIXPPS, r.Delivered)
		add(MetricIMIXGbps, r.DeliveredBits/1e9)
		add(MetricIMIXLoss, r.LossPct)
		res, err := zeroLoss(ctx, o, l, sizes, r)
		if err != nil {
			return fmt.Errorf("zero-loss search, IMIX: %w", err)
		}
		add(MetricIMIXZeroLoss, res.Rate)
		add(MetricIMIXGbpsZeroLoss, res.Best.DeliveredBits/1e9)
		add(MetricIMIXZeroLossLoss, res.Best.LossPct)
		add(MetricIMIXZeroLossTrials, float64(len(res.Trials)))
		o.Log("  imix flood and search took %v", time.Since(start).Round(time.Second))
		if res.Note != "" {
			note("IMIX zero-loss search: " + res.Note)
		}
	}
	if run("tcp") {
		meter := nodeCPUMeter(l, o.Tortied, o.Log)
		for _, streams := range []int{1, 2} {
			r, cpu, err := tcpWithCPU(ctx, l, streams, o.Duration, o.Congestion, meter)
			if err != nil {
				return err
			}
			nodes, machine := cpu.nodes, cpu.machine
			o.Log("  tcp %d stream(s): %.2f Gbit/s, %d retransmits; CPU s per Gbit: nodes %.2f, machine %.2f",
				streams, r.BitsPerSecond/1e9, r.Retransmits, nodes, machine)
			cpuMetrics := []string{MetricTCP1CPUNode1, MetricTCP1CPUNode2, MetricTCP1CPUMachine}
			if streams == 1 {
				add(MetricTCP1, r.BitsPerSecond/1e9)
				add(MetricRetrans, float64(r.Retransmits))
			} else {
				add(MetricTCP2, r.BitsPerSecond/1e9)
				cpuMetrics = []string{MetricTCP2CPUNode1, MetricTCP2CPUNode2, MetricTCP2CPUMachine}
			}
			if nodes != nil {
				for i, v := range nodes[:min(2, len(nodes))] {
					if v >= 0 {
						add(cpuMetrics[i], v)
					}
				}
				add(cpuMetrics[2], machine)
			}
		}
	}
	if run("latency") {
		for _, loaded := range []bool{false, true} {
			p50, p99, err := Latency(ctx, l, o.Duration, loaded, o.Congestion)
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

// runScale runs one repetition of the scale test on a one-node lab: two
// TCP pairs at once, n1p1 to n1p2 and n1p3 to n1p4, then one pair with
// four streams, n1p1 to n1p2.
func runScale(ctx context.Context, o Options, l *lab.Lab, _ bool, add func(metric string, v float64), _ func(string)) error {
	if !slices.Contains(o.Tests, "scale") {
		return nil
	}
	var receivers []*lab.Pod
	for _, name := range []string{"n1p2", "n1p4"} {
		p := l.Pod(name)
		if p == nil {
			return fmt.Errorf("no pod %s", name)
		}
		receivers = append(receivers, p)
	}
	r, cpu, err := windowCPU(ctx, func() (lab.IperfResult, error) { return TwoPairs(ctx, l, o.Duration, o.Congestion) }, receivers, o.Duration, nodeCPUMeter(l, o.Tortied, o.Log))
	if err != nil {
		return err
	}
	o.Log("  two TCP pairs on one node: %.2f Gbit/s, %d retransmits; CPU s per Gbit: node %.2f, machine %.2f",
		r.BitsPerSecond/1e9, r.Retransmits, cpu.nodes, cpu.machine)
	add(MetricScaleTCP, r.BitsPerSecond/1e9)
	if cpu.nodes != nil {
		if cpu.nodes[0] >= 0 {
			add(MetricScaleCPUNode, cpu.nodes[0])
		}
		add(MetricScaleCPUMachine, cpu.machine)
	}
	one, err := l.IperfWith(ctx, "n1p1", "n1p2", lab.IperfOptions{Duration: o.Duration, Streams: 4, Congestion: o.Congestion})
	if err != nil {
		return fmt.Errorf("one pair, four streams: %w", err)
	}
	o.Log("  one TCP pair, four streams, on one node: %.2f Gbit/s, %d retransmits", one.BitsPerSecond/1e9, one.Retransmits)
	add(MetricScaleOnePair, one.BitsPerSecond/1e9)
	return nil
}

// zeroLoss searches for the highest rate the lab forwards from n1p1 to
// n2p1 with under ZeroLossPct lost, for frames of sizes (one round, sent
// round robin), starting from what the unpaced flood delivered.
func zeroLoss(ctx context.Context, o Options, l *lab.Lab, sizes []int, unpaced PPSResult) (SearchResult, error) {
	trial, closePacer, err := PacedTrials(l, "n1p1", "n2p1", sizes, o.TrialDuration)
	if err != nil {
		return SearchResult{}, err
	}
	defer closePacer()
	logged := func(ctx context.Context, rate float64) (Trial, error) {
		t, err := trial(ctx, rate)
		if err == nil {
			o.Log("    trial at %.0f/s: offered %.0f/s, delivered %.0f/s, loss %.3f%% (dropped by the sending pod's interface: %.0f/s)",
				rate, t.Offered, t.Delivered, t.LossPct, t.SenderDropped)
		}
		return t, err
	}
	start := unpaced.Delivered
	if !(start > 0) {
		start = 1000 // nothing arrived unpaced: the search still finds whether a trickle does
	}
	// Up to what the flood offered, and at least twice the start: with
	// the kernel, the flood offers only what its own sends forward, which
	// is the generator's limit, not necessarily the path's.
	res, err := SearchZeroLoss(ctx, logged, SearchOptions{Start: start, Max: max(unpaced.Offered, 2*start), Steps: o.SearchSteps})
	if err != nil {
		return res, err
	}
	o.Log("  zero loss: %.0f/s (loss %.3f%%, %d trials) %s", res.Rate, res.Best.LossPct, len(res.Trials), res.Note)
	return res, nil
}

// tcpCPU is the CPU cost of a TCP test: CPU seconds per Gbit received,
// per node (-1 where not measured) and for the whole machine; nodes is
// nil when the window saw no traffic.
type tcpCPU struct {
	nodes   []float64
	machine float64
}

// tcpWithCPU runs TCP (under congestion control cc) and meanwhile
// measures its CPU cost over a window inside the transfer (from a quarter
// of d, at most 1s, to an eighth of d, at most 0.5s, before its end), so
// that starting iperf3, which costs CPU and moves nothing, is left out.
// What moved in the window is what the receiving pod's interface received
// (frames with their headers).
func tcpWithCPU(ctx context.Context, l *lab.Lab, streams int, d time.Duration, cc string, meter cpuMeter) (lab.IperfResult, tcpCPU, error) {
	dst := l.Pod("n2p1")
	if dst == nil {
		return lab.IperfResult{}, tcpCPU{}, fmt.Errorf("no pod n2p1")
	}
	return windowCPU(ctx, func() (lab.IperfResult, error) { return TCP(ctx, l, streams, d, cc) }, []*lab.Pod{dst}, d, meter)
}

// windowCPU runs test, a TCP test of length d, and measures its CPU cost
// as tcpWithCPU does, counting what the receivers' interfaces received.
func windowCPU(ctx context.Context, test func() (lab.IperfResult, error), receivers []*lab.Pod, d time.Duration, meter cpuMeter) (lab.IperfResult, tcpCPU, error) {
	type result struct {
		r   lab.IperfResult
		err error
	}
	done := make(chan result, 1)
	go func() {
		r, err := test()
		done <- result{r, err}
	}()
	received := func() (uint64, error) {
		var sum uint64
		for _, p := range receivers {
			n, err := readCounter(p.Netns, "rx_bytes")
			if err != nil {
				return 0, err
			}
			sum += n
		}
		return sum, nil
	}
	from, to := min(time.Second, d/4), d-min(500*time.Millisecond, d/8)
	var cpu tcpCPU
	var before cpuReading
	var rx0 uint64
	var err0 error
	timer := time.NewTimer(from)
	defer timer.Stop()
	for step := 0; ; step++ {
		select {
		case res := <-done:
			if step < 2 {
				cpu = tcpCPU{} // ended before the window closed: not measured
			}
			return res.r, cpu, res.err
		case <-timer.C:
		}
		switch step {
		case 0:
			before = meter.read()
			rx0, err0 = received()
			timer.Reset(to - from)
		case 1:
			after := meter.read()
			rx1, err := received()
			if err0 == nil && err == nil {
				cpu.nodes, cpu.machine = meter.cpuPerGbit(before, after, 8*float64(rx1-rx0))
			}
		}
	}
}

// nodeCPUMeter measures each node's tortied, the binary tortied;
// kernel nodes have none.
func nodeCPUMeter(l *lab.Lab, tortied string, log func(string, ...any)) cpuMeter {
	var m cpuMeter
	want := filepath.Base(tortied)
	if len(want) > 15 {
		want = want[:15] // a process's name as the kernel keeps it
	}
	for _, n := range l.Nodes {
		pid := 0
		if !n.Kernel && n.PID > 0 {
			if name := procName(n.PID); name == want {
				pid = n.PID
			} else {
				log("  node %s: process %d is %q, not %s: its CPU is not measured", n.Name, n.PID, name, want)
			}
		}
		m.pids = append(m.pids, pid)
	}
	return m
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

// Load reads a saved results.json. Its ratios are derived again from its
// measurements, so that a report saved before a kind of ratio existed
// renders with it.
func Load(path string) (*Report, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var r Report
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, err
	}
	r.Ratios = ratios(r.Measurements, r.Interleaved)
	return &r, nil
}
