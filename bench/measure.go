package bench

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/tortie-net/tortie/lab"
)

func readCounter(ns, name string) (uint64, error) {
	out, err := exec.Command("ip", "netns", "exec", ns, "cat", "/sys/class/net/eth0/statistics/"+name).Output()
	if err != nil {
		return 0, fmt.Errorf("reading %s in %s: %w", name, ns, err)
	}
	return strconv.ParseUint(strings.TrimSpace(string(out)), 10, 64)
}

// busy returns the time all CPUs spent not idle, in USER_HZ ticks.
func busy() (uint64, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, err
	}
	f := strings.Fields(strings.SplitN(string(b), "\n", 2)[0])
	var total, idle uint64
	for i, s := range f[1:] {
		v, _ := strconv.ParseUint(s, 10, 64)
		total += v
		if i == 3 || i == 4 { // idle, iowait
			idle += v
		}
	}
	return total - idle, nil
}

// PPSResult is one packets-per-second measurement.
type PPSResult struct {
	Offered, Delivered float64 // per second
	LossPct            float64
	CPUNsPerPacket     float64
	// DeliveredBits is what arrived, in frame bits (with FCS) per second.
	DeliveredBits float64
	// SenderDropped is what the sending pod's interface dropped, per
	// second.
	SenderDropped float64
}

// PPS floods UDP frames of frameSize bytes (without FCS) from one pod to
// another with trafgen for d and counts what the receiving pod's interface
// got. The UDP source port varies per frame (over 65,536 values, to port
// 9), so flows spread as real traffic does.
func PPS(ctx context.Context, l *lab.Lab, from, to string, frameSize int, d time.Duration) (PPSResult, error) {
	return pps(ctx, l, from, to, []int{frameSize}, d, "9")
}

// PPSFrames is PPS with frames of several sizes, sent round robin in the
// order given (one round of IMIXFrames, for instance).
func PPSFrames(ctx context.Context, l *lab.Lab, from, to string, sizes []int, d time.Duration) (PPSResult, error) {
	return pps(ctx, l, from, to, sizes, d, "9")
}

// NewFlowsPPS is PPS with random source and destination ports: of the
// 2^32 port pairs a test sends only millions, so nearly every frame is a
// flow of its own, as a flood of new connections would be.
func NewFlowsPPS(ctx context.Context, l *lab.Lab, from, to string, frameSize int, d time.Duration) (PPSResult, error) {
	return pps(ctx, l, from, to, []int{frameSize}, d, "drnd()")
}

// flowCounters are the counters of a test's two pods: what the sending
// pod's interface sent and dropped, what the receiving pod's got.
type flowCounters struct{ tx, drop, rx, rxBytes uint64 }

func readFlow(src, dst *lab.Pod) (c flowCounters, err error) {
	if c.tx, err = readCounter(src.Netns, "tx_packets"); err != nil {
		return
	}
	if c.drop, err = readCounter(src.Netns, "tx_dropped"); err != nil {
		return
	}
	if c.rx, err = readCounter(dst.Netns, "rx_packets"); err != nil {
		return
	}
	c.rxBytes, err = readCounter(dst.Netns, "rx_bytes")
	return
}

// settleFlow lets what is in flight arrive: it polls until the
// receiver's count stops changing, then reads the counters.
func settleFlow(src, dst *lab.Pod) (flowCounters, error) {
	prev, _ := readCounter(dst.Netns, "rx_packets")
	for i := 0; i < 50; i++ {
		time.Sleep(20 * time.Millisecond)
		rx, _ := readCounter(dst.Netns, "rx_packets")
		if rx == prev {
			break
		}
		prev = rx
	}
	return readFlow(src, dst)
}

// flowRates turns two readings of the counters, elapsed apart, into rates.
func flowRates(c0, c1 flowCounters, elapsed time.Duration) PPSResult {
	secs := elapsed.Seconds()
	offered := float64((c1.tx - c0.tx) + (c1.drop - c0.drop))
	delivered := float64(c1.rx - c0.rx)
	r := PPSResult{Offered: offered / secs, Delivered: delivered / secs,
		DeliveredBits: 8 * (float64(c1.rxBytes-c0.rxBytes) + fcs*delivered) / secs,
		SenderDropped: float64(c1.drop-c0.drop) / secs}
	if offered > 0 {
		r.LossPct = max(0, 100*(1-delivered/offered)) // frames in flight at the start can make it a hair negative
	}
	return r
}

// pps runs a pps test whose frames go to UDP port dport (a trafgen value).
func pps(ctx context.Context, l *lab.Lab, from, to string, sizes []int, d time.Duration, dport string) (PPSResult, error) {
	src, dst := l.Pod(from), l.Pod(to)
	if src == nil || dst == nil {
		return PPSResult{}, fmt.Errorf("no pods %s and %s", from, to)
	}
	srcAddr, err1 := netip.ParseAddr(src.Address)
	dstAddr, err2 := netip.ParseAddr(dst.Address)
	if err := errors.Join(err1, err2); err != nil {
		return PPSResult{}, err
	}
	macOut, err := exec.Command("ip", "netns", "exec", src.Netns, "cat", "/sys/class/net/eth0/address").Output()
	if err != nil {
		return PPSResult{}, err
	}
	conf, err := trafgenConfig(strings.TrimSpace(string(macOut)), srcAddr, dstAddr, dport, sizes)
	if err != nil {
		return PPSResult{}, err
	}
	f, err := os.CreateTemp("", "trafgen-*.cfg")
	if err != nil {
		return PPSResult{}, err
	}
	defer os.Remove(f.Name())
	if _, err := f.WriteString(conf); err != nil {
		return PPSResult{}, err
	}
	f.Close()
	c0, err := readFlow(src, dst)
	if err != nil {
		return PPSResult{}, err
	}
	b0, _ := busy()
	// trafgen signals its whole process group when it stops: give it its
	// own, and stop it the way it expects, with SIGINT.
	gen := exec.Command("ip", "netns", "exec", src.Netns, "trafgen", "--dev", "eth0", "--conf", f.Name(), "--cpus", "1", "-q")
	var genOut strings.Builder
	gen.Stdout, gen.Stderr = &genOut, &genOut
	gen.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	start := time.Now()
	if err := gen.Start(); err != nil {
		return PPSResult{}, fmt.Errorf("trafgen: %w", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- gen.Wait() }()
	select {
	case err := <-exited:
		return PPSResult{}, fmt.Errorf("trafgen stopped early: %v: %s", err, genOut.String())
	case <-ctx.Done():
	case <-time.After(d):
	}
	_ = syscall.Kill(-gen.Process.Pid, syscall.SIGINT)
	select {
	case <-exited:
	case <-time.After(5 * time.Second):
		_ = syscall.Kill(-gen.Process.Pid, syscall.SIGKILL)
		<-exited
	}
	elapsed := time.Since(start)
	if ctx.Err() != nil {
		return PPSResult{}, ctx.Err()
	}
	b1, _ := busy()
	c1, err := settleFlow(src, dst)
	if err != nil {
		return PPSResult{}, err
	}
	r := flowRates(c0, c1, elapsed)
	if delivered := float64(c1.rx - c0.rx); delivered > 0 {
		r.CPUNsPerPacket = float64(b1-b0) * 1e7 / delivered // USER_HZ is 100: one tick is 10 ms
	}
	return r, nil
}

// PacedTrials opens a pacer on pod from's interface that sends one round
// of sizes (frame sizes without FCS), round robin, to pod to, and returns
// a TrialFunc for SearchZeroLoss whose trials last d each, and a function
// that closes the pacer.
func PacedTrials(l *lab.Lab, from, to string, sizes []int, d time.Duration) (TrialFunc, func() error, error) {
	src, dst := l.Pod(from), l.Pod(to)
	if src == nil || dst == nil {
		return nil, nil, fmt.Errorf("no pods %s and %s", from, to)
	}
	srcAddr, err1 := netip.ParseAddr(src.Address)
	dstAddr, err2 := netip.ParseAddr(dst.Address)
	if err := errors.Join(err1, err2); err != nil {
		return nil, nil, err
	}
	p, err := newPacer(filepath.Join("/var/run/netns", src.Netns), "eth0", sizes,
		netip.AddrPortFrom(srcAddr, 1024), netip.AddrPortFrom(dstAddr, 9))
	if err != nil {
		return nil, nil, err
	}
	trial := func(ctx context.Context, rate float64) (Trial, error) {
		c0, err := readFlow(src, dst)
		if err != nil {
			return Trial{}, err
		}
		start := time.Now()
		if _, _, err := p.Run(ctx, rate, d); err != nil {
			return Trial{}, err
		}
		elapsed := time.Since(start)
		if err := ctx.Err(); err != nil {
			return Trial{}, err
		}
		c1, err := settleFlow(src, dst)
		if err != nil {
			return Trial{}, err
		}
		r := flowRates(c0, c1, elapsed)
		return Trial{Target: rate, Offered: r.Offered, Delivered: r.Delivered, LossPct: r.LossPct,
			DeliveredBits: r.DeliveredBits, SenderDropped: r.SenderDropped}, nil
	}
	return trial, p.Close, nil
}

// TCP runs iperf3 from n1p1 to n2p1 with 1 or 2 streams, under
// congestion control cc (empty: the pods' default).
func TCP(ctx context.Context, l *lab.Lab, streams int, d time.Duration, cc string) (lab.IperfResult, error) {
	return l.IperfWith(ctx, "n1p1", "n2p1", lab.IperfOptions{Duration: d, Streams: streams, Congestion: cc})
}

// TwoPairs runs two iperf3 tests at once on a one-node lab, n1p1 to n1p2
// and n1p3 to n1p4, one stream each, and returns their sum.
func TwoPairs(ctx context.Context, l *lab.Lab, d time.Duration, cc string) (lab.IperfResult, error) {
	type result struct {
		r   lab.IperfResult
		err error
	}
	pairs := [][2]string{{"n1p1", "n1p2"}, {"n1p3", "n1p4"}}
	done := make(chan result, len(pairs))
	for i, p := range pairs {
		go func() {
			r, err := l.IperfWith(ctx, p[0], p[1], lab.IperfOptions{Duration: d, Port: 5201 + i, Congestion: cc})
			if err != nil {
				err = fmt.Errorf("%s to %s: %w", p[0], p[1], err)
			}
			done <- result{r, err}
		}()
	}
	var sum lab.IperfResult
	var errs []error
	for range pairs {
		res := <-done
		errs = append(errs, res.err)
		sum.BitsPerSecond += res.r.BitsPerSecond
		sum.Retransmits += res.r.Retransmits
		sum.Sent += res.r.Sent
		sum.Received += res.r.Received
	}
	return sum, errors.Join(errs...)
}

var pctRe = regexp.MustCompile(`percentile (\d+\.\d+) =\s+([\d.]+)`)

// Latency measures one-way UDP latency (half the round trip) between n1p1
// and n2p1 with sockperf ping-pong; with loaded set, a TCP stream between
// the other two pods runs meanwhile, under congestion control cc. It
// returns p50 and p99 in µs.
func Latency(ctx context.Context, l *lab.Lab, d time.Duration, loaded bool, cc string) (p50, p99 float64, err error) {
	dst := l.Pod("n2p1")
	srv := exec.CommandContext(ctx, "ip", "netns", "exec", dst.Netns, "sockperf", "server", "-i", dst.Address, "-p", "11111")
	if err := srv.Start(); err != nil {
		return 0, 0, fmt.Errorf("sockperf server: %w", err)
	}
	defer func() { _ = srv.Process.Kill(); _ = srv.Wait() }()
	deadline := time.Now().Add(5 * time.Second)
	for {
		ss, _ := exec.Command("ip", "netns", "exec", dst.Netns, "ss", "-Hlun", "sport", "= :11111").Output()
		if strings.Contains(string(ss), ":11111") {
			break
		}
		if time.Now().After(deadline) {
			return 0, 0, fmt.Errorf("sockperf server did not listen")
		}
		time.Sleep(10 * time.Millisecond)
	}
	loadDone := make(chan error, 1)
	if loaded {
		go func() {
			_, err := l.IperfWith(ctx, "n1p2", "n2p2", lab.IperfOptions{Duration: d + 2*time.Second, Port: 5202, Congestion: cc})
			loadDone <- err
		}()
		// Give the stream a moment to reach full speed before measuring.
		time.Sleep(time.Second)
	}
	src := l.Pod("n1p1")
	out, err := exec.CommandContext(ctx, "ip", "netns", "exec", src.Netns, "sockperf", "ping-pong", "-i", dst.Address, "-p", "11111",
		"-t", strconv.Itoa(max(1, int(d.Seconds())))).CombinedOutput()
	if loaded {
		if lerr := <-loadDone; lerr != nil && err == nil {
			err = fmt.Errorf("load stream: %w", lerr)
		}
	}
	if err != nil {
		return 0, 0, fmt.Errorf("sockperf: %v: %s", err, out)
	}
	for _, m := range pctRe.FindAllStringSubmatch(string(out), -1) {
		v, _ := strconv.ParseFloat(m[2], 64)
		switch m[1] {
		case "50.000":
			p50 = v
		case "99.000":
			p99 = v
		}
	}
	if p50 == 0 {
		return 0, 0, fmt.Errorf("no percentiles in sockperf output: %s", out)
	}
	return p50, p99, nil
}
