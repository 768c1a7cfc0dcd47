package lab

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Probe is one reachability test of the matrix.
type Probe struct {
	From, To  string // names
	FromNetns string
	ToAddr    string
	WantTTL   int // 0: any
	OK        bool
	TTL       int
	Output    string
}

var ttlRe = regexp.MustCompile(`ttl=(\d+)`)

// Matrix lists every probe Check runs: every pod to every other pod (TTL 63
// on one node, 62 across nodes: one routed hop per node), each node to its
// pods, and each pod to its node.
func (l *Lab) Matrix() []*Probe {
	var ps []*Probe
	for _, src := range l.Pods() {
		for _, dst := range l.Pods() {
			if src == dst {
				continue
			}
			want := 62
			if src.Node == dst.Node {
				want = 63
			}
			ps = append(ps, &Probe{From: src.Name, To: dst.Name, FromNetns: src.Netns, ToAddr: dst.Address, WantTTL: want})
		}
	}
	for _, n := range l.Nodes {
		for _, p := range n.Pods {
			ps = append(ps,
				&Probe{From: n.Name, To: p.Name, FromNetns: n.Netns, ToAddr: p.Address},
				&Probe{From: p.Name, To: n.Name, FromNetns: p.Netns, ToAddr: n.Addr()})
		}
	}
	return ps
}

// CheckAmong runs the probes whose both ends are on the given nodes.
func (l *Lab) CheckAmong(ctx context.Context, nodes []string) []*Probe {
	on := map[string]bool{}
	for _, n := range nodes {
		on[n] = true
		if nd := l.Node(n); nd != nil {
			for _, p := range nd.Pods {
				on[p.Name] = true
			}
		}
	}
	var keep []*Probe
	for _, p := range l.Matrix() {
		if on[p.From] && on[p.To] {
			keep = append(keep, p)
		}
	}
	return l.run(ctx, keep)
}

// Ping runs one probe (up to 3 echo requests; one answer is enough).
func (p *Probe) Ping(ctx context.Context) {
	out, err := exec.CommandContext(ctx, "ip", "netns", "exec", p.FromNetns,
		"ping", "-n", "-c", "3", "-i", "0.2", "-W", "2", "-w", "4", p.ToAddr).CombinedOutput()
	p.Output = string(out)
	m := ttlRe.FindStringSubmatch(p.Output)
	if m != nil {
		p.TTL, _ = strconv.Atoi(m[1])
	}
	// One echo reply is enough: the first request may wait on ARP.
	p.OK = m != nil
	if err != nil && m == nil {
		p.Output += "\n" + err.Error()
	}
	if p.OK && p.WantTTL != 0 && p.TTL != p.WantTTL {
		p.OK = false
		p.Output += fmt.Sprintf("\nTTL %d, want %d", p.TTL, p.WantTTL)
	}
}

// Check runs the whole matrix, a few probes at a time, and returns the
// probes with their verdicts.
func (l *Lab) Check(ctx context.Context) []*Probe { return l.run(ctx, l.Matrix()) }

func (l *Lab) run(ctx context.Context, ps []*Probe) []*Probe {
	sem := make(chan struct{}, 8)
	var wg sync.WaitGroup
	for _, p := range ps {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			p.Ping(ctx)
		}()
	}
	wg.Wait()
	return ps
}

// Failed filters the probes that did not pass.
func Failed(ps []*Probe) []*Probe {
	var out []*Probe
	for _, p := range ps {
		if !p.OK {
			out = append(out, p)
		}
	}
	return out
}

// IperfResult is the part of iperf3's JSON report the lab prints.
type IperfResult struct {
	BitsPerSecond float64 // as measured by the receiver
	Retransmits   int
	Sent          int64  // bytes the sender wrote
	Received      int64  // bytes the receiver had counted when the test ended
	Congestion    string // the sender's TCP congestion control, as iperf3 reports it
}

// IperfOptions shape an iperf3 run.
type IperfOptions struct {
	Duration time.Duration // test length (ignored when Bytes > 0)
	Bytes    int64         // send exactly this much
	Reverse  bool          // TO sends to FROM
	Streams  int           // parallel streams (default 1)
	Port     int           // server port (default 5201)
	// Congestion is the TCP congestion control both ends' sockets use
	// (iperf3 -C: "cubic", "bbr", ...); empty: the pods' default, which
	// a network namespace takes from the machine's. For the test, both
	// pods' default is set to it where the kernel lets a namespace choose
	// it, and to reno otherwise (then each socket switches to it), so that
	// no socket starts under a default it did not ask for (one started
	// under BBR keeps BBR's pacing after a switch); the pods' defaults are
	// put back afterwards. Concurrent calls with Congestion set must not
	// share a pod: each saves and restores the pods' default.
	Congestion string
}

// Iperf runs a TCP iperf3 test from one pod to another for the given time
// (or bytes when n > 0), in reverse when reverse is set.
func (l *Lab) Iperf(ctx context.Context, from, to string, d time.Duration, n int64, reverse bool) (IperfResult, error) {
	return l.IperfWith(ctx, from, to, IperfOptions{Duration: d, Bytes: n, Reverse: reverse})
}

// IperfWith runs iperf3 with the given options.
func (l *Lab) IperfWith(ctx context.Context, from, to string, o IperfOptions) (_ IperfResult, err error) {
	if o.Port == 0 {
		o.Port = 5201
	}
	port := strconv.Itoa(o.Port)
	src, err := l.Target(from)
	if err != nil {
		return IperfResult{}, err
	}
	dstNS, err := l.Target(to)
	if err != nil {
		return IperfResult{}, err
	}
	var dstAddr string
	for _, p := range l.Pods() {
		if p.Name == to {
			dstAddr = p.Address
		}
	}
	if dstAddr == "" {
		return IperfResult{}, fmt.Errorf("%s is not a pod", to)
	}
	if _, err := exec.LookPath("iperf3"); err != nil {
		return IperfResult{}, errors.New("iperf3 not installed (make deps installs it)")
	}
	if o.Congestion != "" {
		restore, cerr := podCongestion([]string{src, dstNS}, o.Congestion)
		defer func() {
			if rerr := restore(); rerr != nil && err == nil {
				err = fmt.Errorf("putting the pods' congestion control back: %w", rerr)
			}
		}()
		if cerr != nil {
			return IperfResult{}, cerr
		}
	}
	srv := exec.CommandContext(ctx, "ip", "netns", "exec", dstNS, "iperf3", "-s", "-1", "-B", dstAddr, "-p", port)
	if err := srv.Start(); err != nil {
		return IperfResult{}, err
	}
	defer func() { _ = srv.Process.Kill(); _ = srv.Wait() }()
	args := []string{"netns", "exec", src, "iperf3", "-c", dstAddr, "-p", port, "-J", "--connect-timeout", "3000"}
	if o.Bytes > 0 {
		args = append(args, "-n", strconv.FormatInt(o.Bytes, 10))
	} else {
		args = append(args, "-t", strconv.Itoa(max(1, int(o.Duration.Seconds()))))
	}
	if o.Reverse {
		args = append(args, "-R")
	}
	if o.Streams > 1 {
		args = append(args, "-P", strconv.Itoa(o.Streams))
	}
	if o.Congestion != "" {
		args = append(args, "-C", o.Congestion)
	}
	// Poll until the server listens, then run the client once.
	deadline := time.Now().Add(5 * time.Second)
	for {
		ss, _ := exec.CommandContext(ctx, "ip", "netns", "exec", dstNS, "ss", "-Hltn", "sport", "= :"+port).Output()
		if strings.Contains(string(ss), ":"+port) {
			break
		}
		if time.Now().After(deadline) {
			return IperfResult{}, fmt.Errorf("iperf3 server in %s did not listen within 5s", to)
		}
		time.Sleep(10 * time.Millisecond)
	}
	out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput()
	var rep struct {
		End struct {
			SumSent struct {
				Bytes         int64   `json:"bytes"`
				BitsPerSecond float64 `json:"bits_per_second"`
				Retransmits   int     `json:"retransmits"`
			} `json:"sum_sent"`
			SumReceived struct {
				Bytes         int64   `json:"bytes"`
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
			SenderCongestion string `json:"sender_tcp_congestion"`
		} `json:"end"`
		Error string `json:"error"`
	}
	if jerr := json.Unmarshal(out, &rep); jerr != nil || rep.Error != "" || err != nil {
		return IperfResult{}, fmt.Errorf("iperf3 %s -> %s: %v %s: %s", from, to, err, rep.Error, tail(string(out), 400))
	}
	return IperfResult{BitsPerSecond: rep.End.SumReceived.BitsPerSecond, Retransmits: rep.End.SumSent.Retransmits,
		Sent: rep.End.SumSent.Bytes, Received: rep.End.SumReceived.Bytes, Congestion: rep.End.SenderCongestion}, nil
}

// congestionKey is the sysctl of a network namespace's default TCP
// congestion control.
const congestionKey = "net.ipv4.tcp_congestion_control"

// podCongestion sets each namespace's default congestion control to cc,
// or to reno where the kernel does not let a namespace choose cc (only
// the machine's allowed ones, net.ipv4.tcp_allowed_congestion_control),
// and returns what puts the defaults back (a namespace named twice is
// set and restored once).
func podCongestion(namespaces []string, cc string) (restore func() error, err error) {
	was := map[string]string{} // each namespace's default before
	restore = func() error {
		var errs []error
		for name, v := range was {
			errs = append(errs, sysctl(name, congestionKey, v))
		}
		return errors.Join(errs...)
	}
	for _, name := range namespaces {
		if _, ok := was[name]; ok {
			continue
		}
		out, err := exec.Command("ip", "netns", "exec", name, "sysctl", "-n", congestionKey).Output()
		if err != nil {
			return restore, fmt.Errorf("%s in %s: %w", congestionKey, name, err)
		}
		was[name] = strings.TrimSpace(string(out))
		if sysctl(name, congestionKey, cc) != nil {
			if err := sysctl(name, congestionKey, "reno"); err != nil {
				return restore, fmt.Errorf("%s in %s: %w", congestionKey, name, err)
			}
		}
	}
	return restore, nil
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}
