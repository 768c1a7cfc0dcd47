// Command tortie-lab builds, checks and removes netns labs of tortie nodes
// and pods on one machine.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/tortie-net/tortie/lab"
	"github.com/tortie-net/tortie/lab/images"
)

// command is one tortie-lab command: its flags are defined on a flag set
// by setup, which returns what runs once they are parsed. Help is printed
// from the flag set, so it lists every flag there is.
type command struct {
	name, args, doc string
	setup           func(fs *flag.FlagSet, name *string) func() error
}

var commands = []command{
	{"up", "", "build a lab and start tortied on every node (with --k8s: a Kubernetes cluster running tortie)", func(fs *flag.FlagSet, name *string) func() error {
		o := lab.Options{}
		fs.IntVar(&o.Nodes, "nodes", 3, "number of nodes")
		fs.IntVar(&o.Pods, "pods", 2, "pods per node")
		fs.StringVar(&o.Mode, "mode", "vxlan", "native, ipip, vxlan, ipip-crosssubnet or vxlan-crosssubnet")
		fs.IntVar(&o.Subnets, "subnets", 0, "underlay subnets (1 or 2; default 2 for crosssubnet modes)")
		fs.IntVar(&o.KernelNodes, "kernel-nodes", 0, "make the last N nodes Calico-style kernel nodes")
		fs.IntVar(&o.Threads, "threads", 0, "OS threads per tortied (0 or 1: one, pinned to a CPU of its own; more: unpinned, with that many VXLAN sockets)")
		fs.IntVar(&o.PodQueues, "pod-queues", 0, "queues per pod TAP, each read on its own (0: one)")
		fs.IntVar(&o.RealtimePriority, "realtime", 0, "run every tortied's threads real-time, SCHED_FIFO at this priority (1-99; 0: the normal scheduler)")
		fs.BoolVar(&o.GoroutineReaders, "goroutine-readers", false, "give each input a goroutine of its own (inputLoops: false) instead of a read loop per thread")
		fs.Func("tunnel-gso", "each tortied's tunnelGSO, on or off (default: tortied's, on where the kernel takes UDP tunnel GSO): pods' TCP superframes to VXLAN nodes leave whole for the kernel to cut", func(s string) error {
			switch s {
			case "on", "true":
				o.TunnelGSO = new(true)
			case "off", "false":
				o.TunnelGSO = new(false)
			default:
				return fmt.Errorf("want on or off, not %q", s)
			}
			return nil
		})
		fs.DurationVar(&o.BusyPoll, "busy-poll", 0, "each tortied's busyPoll: how long its input loops spin for more packets before they sleep (e.g. 50us; at most 1ms)")
		fs.IntVar(&o.UnderlayMTU, "mtu", 1500, "underlay MTU")
		fs.BoolVar(&o.UnderlayGRO, "underlay-gro", false, "nodes' underlay interfaces coalesce what they receive (GRO), as a NIC does")
		fs.StringVar(&o.Tortied, "tortied", "", "tortied binary (default: next to tortie-lab)")
		fs.StringVar(&o.LogLevel, "log-level", "info", "tortied log level: debug, info, warn or error")
		fs.BoolVar(&o.Static, "static", false, "peers in each node's config file instead of a datastore, pool and CNI")
		fs.BoolVar(&o.BGP, "bgp", false, "nodes learn each other's blocks over BGP (embedded speaker, node-to-node mesh)")
		fs.IntVar(&o.BirdNodes, "bird-nodes", 0, "make the last N nodes Calico-style kernel nodes running BIRD 2 (native mode; implies --bgp)")
		fs.BoolVar(&o.EtcdTLS, "etcd-tls", false, "run the lab's etcd on TLS only, with client certificates of a lab CA")
		fs.BoolVar(&o.Containerd, "containerd", false, "run a containerd on every node, pods networked through tortie-cni (datastore labs)")
		fs.StringVar(&o.Images, "images", "", "OCI image archive to import into every node's containerd (tortie-lab images writes one)")
		var k k8sFlags
		k.define(fs)
		return func() error {
			o.Name = *name
			set := map[string]bool{}
			fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
			if err := k.apply(&o, set); err != nil {
				return err
			}
			if o.Tortied == "" {
				self, _ := os.Executable()
				o.Tortied = filepath.Join(filepath.Dir(self), "tortied")
			}
			if k.enabled {
				return upK8s(o, k, os.Stdout)
			}
			l, err := lab.Up(o)
			if err == nil {
				show(l)
			}
			return err
		}
	}},
	{"images", "", "build the lab's images (pause, echo) as an OCI archive for ctr import; run inside tortie's source tree", func(fs *flag.FlagSet, _ *string) func() error {
		out := fs.String("out", "tortie-images.tar", "archive to write")
		return func() error {
			work, err := os.MkdirTemp("", "tortie-images-")
			if err != nil {
				return err
			}
			defer os.RemoveAll(work)
			if err := images.Lab(context.Background(), ".", work, *out); err != nil {
				return err
			}
			fmt.Printf("%s: %s, %s\n", *out, images.Pause, images.Echo)
			return nil
		}
	}},
	{"check", "", "ping every pod from every pod, nodes to their pods and back", func(_ *flag.FlagSet, name *string) func() error {
		return func() error { return check(*name) }
	}},
	{"iperf", "FROM TO", "TCP throughput between two pods (iperf3)", func(fs *flag.FlagSet, name *string) func() error {
		secs := fs.Int("t", 3, "seconds")
		rev := fs.Bool("R", false, "reverse (TO sends to FROM)")
		cc := fs.String("congestion", "", "TCP congestion control of both ends (iperf3 -C, e.g. cubic or bbr; default: the pods', which is the machine's)")
		return func() error {
			if fs.NArg() != 2 {
				return errUsage
			}
			return iperf(*name, fs.Arg(0), fs.Arg(1), lab.IperfOptions{Duration: time.Duration(*secs) * time.Second, Reverse: *rev, Congestion: *cc})
		}
	}},
	{"exec", "TARGET -- CMD...", "run a command in a node (n1) or pod (n1p2)", func(fs *flag.FlagSet, name *string) func() error {
		return func() error {
			rest := fs.Args()
			if len(rest) > 0 && rest[0] == "--" {
				rest = rest[1:]
			}
			if len(rest) >= 2 && rest[1] == "--" {
				rest = append(rest[:1], rest[2:]...)
			}
			if len(rest) < 2 {
				return errUsage
			}
			return execIn(*name, rest[0], rest[1:])
		}
	}},
	{"kubectl", "[--] ARGS...", "run kubectl as the administrator of a --k8s lab's cluster", func(fs *flag.FlagSet, name *string) func() error {
		return func() error {
			args := fs.Args()
			if len(args) > 0 && args[0] == "--" {
				args = args[1:]
			}
			if len(args) == 0 {
				return errUsage
			}
			return kubectl(*name, args)
		}
	}},
	{"k8s-demo", "", "on a --k8s lab: echo pods on every node behind a Service, reached by name through CoreDNS from a pod", func(_ *flag.FlagSet, name *string) func() error {
		return func() error { return k8sDemo(*name, os.Stdout) }
	}},
	{"show", "", "print what the lab holds", func(_ *flag.FlagSet, name *string) func() error {
		return func() error {
			l, err := lab.Load(*name)
			if err == nil {
				show(l)
			}
			return err
		}
	}},
	{"down", "", "remove everything the lab created (also after a crash)", func(_ *flag.FlagSet, name *string) func() error {
		return func() error { return lab.Down(*name) }
	}},
}

// errUsage: the arguments do not fit the command; its help follows.
var errUsage = errors.New("usage")

// flagSet returns c's flag set (with the common --name) and its run function.
func (c command) flagSet(out io.Writer) (*flag.FlagSet, func() error) {
	fs := flag.NewFlagSet(c.name, flag.ContinueOnError)
	fs.SetOutput(out)
	name := fs.String("name", "tl", "lab name (namespace prefix, at most 6 characters)")
	run := c.setup(fs, name)
	fs.Usage = func() {
		fmt.Fprintf(out, "usage: tortie-lab %s [flags]", c.name)
		if c.args != "" {
			fmt.Fprint(out, " "+c.args)
		}
		fmt.Fprintf(out, "\n\n%s\n\nflags:\n", c.doc)
		fs.PrintDefaults()
	}
	return fs, run
}

// usage lists the commands.
func usage(out io.Writer) {
	fmt.Fprint(out, "usage: tortie-lab COMMAND [flags]\n\ncommands:\n")
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	for _, c := range commands {
		fmt.Fprintf(tw, "  %s %s\t%s\n", c.name, c.args, c.doc)
	}
	tw.Flush()
	fmt.Fprint(out, "\n`tortie-lab COMMAND --help` lists the command's flags.\n")
}

func main() {
	closeInheritedOnExec()
	if len(os.Args) < 2 {
		usage(os.Stderr)
		os.Exit(2)
	}
	i := slices.IndexFunc(commands, func(c command) bool { return c.name == os.Args[1] })
	if i < 0 {
		if h := os.Args[1]; h == "-h" || h == "--help" || h == "help" {
			usage(os.Stdout)
			return
		}
		usage(os.Stderr)
		os.Exit(2)
	}
	fs, run := commands[i].flagSet(os.Stderr)
	if err := fs.Parse(os.Args[2:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		os.Exit(2) // the flag package printed the error and the help
	}
	if err := run(); err != nil {
		var code exitCode
		if errors.As(err, &code) {
			os.Exit(int(code)) // the program said why
		}
		if errors.Is(err, errUsage) {
			fs.Usage()
			os.Exit(2)
		}
		fmt.Fprintln(os.Stderr, "tortie-lab:", err)
		os.Exit(1)
	}
}

// closeInheritedOnExec marks the file descriptors this process was given
// above stderr close-on-exec. The daemons a lab starts (etcd, containerd,
// the control plane, kubelets) outlive tortie-lab, and would otherwise
// hold what it was given for as long as they run: the lock of
// `flock LOCK tortie-lab up`, which a later `flock LOCK tortie-lab down`
// would then wait for forever.
func closeInheritedOnExec() {
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return
	}
	for _, e := range entries {
		if fd, err := strconv.Atoi(e.Name()); err == nil && fd > 2 {
			syscall.CloseOnExec(fd)
		}
	}
}

func show(l *lab.Lab) {
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	defer tw.Flush()
	fmt.Fprintf(tw, "lab %s: mode %s, %d subnet(s), fabric namespace %s\n", l.Name, l.Mode, l.Subnets, l.Fabric)
	if l.Datastore {
		where := "embedded in n1's tortied"
		if len(l.Etcd) > 0 {
			where = fmt.Sprintf("cluster of %d members in the fabric", len(l.Etcd))
		}
		fmt.Fprintf(tw, "datastore: etcd %s at %s; pods attached through tortie-cni (network %s)\n", where, l.EtcdURL, lab.NetworkName)
		if f := l.EtcdClientFiles(); f.Cert != "" {
			fmt.Fprintf(tw, "etcd TLS only: CA %s, client certificate %s, key %s\n", f.CA, f.Cert, f.Key)
		}
	} else {
		fmt.Fprintln(tw, "static: each node's config file lists its peers")
	}
	fmt.Fprintln(tw)
	fmt.Fprintln(tw, "NODE\tDATAPLANE\tUNDERLAY\tPOD CIDR\tTUNNEL ADDR\tNAMESPACE\tSOCKET")
	for _, n := range l.Nodes {
		dp := "tortie"
		if l.DaemonSet {
			dp = "tortie (DaemonSet)"
		}
		if n.Kernel {
			dp = "kernel (Calico-style)"
		}
		block, tunnel := n.PodCIDR, n.TunnelAddr
		if l.Datastore {
			block, tunnel = "IPAM blocks", "from IPAM"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", n.Name, dp, n.Address, block, tunnel, n.Netns, n.Socket)
	}
	for _, n := range l.Nodes {
		if c := n.Containerd; c != nil {
			fmt.Fprintf(tw, "%s: containerd %s (ctr --address %s --namespace %s; crictl --runtime-endpoint unix://%s)\n",
				n.Name, c.Dir, c.Socket, lab.CRINamespace, c.Socket)
		}
	}
	if l.K8sBinDir != "" {
		fmt.Fprintf(tw, "kubernetes: API server https://%s:6443 in %s, admin kubeconfig %s (tortie-lab kubectl --name %s -- ARGS)\n",
			lab.APIServerAddr, l.Fabric, l.AdminKubeconfig(), l.Name)
	}
	if l.DaemonSet {
		return // its pods are Kubernetes' own: tortie-lab kubectl -- get pods -A -o wide
	}
	fmt.Fprintln(tw, "\nPOD\tNODE\tADDRESS\tNAMESPACE")
	for _, p := range l.Pods() {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", p.Name, p.Node, p.Address, p.Netns)
	}
}

func check(name string) error {
	l, err := lab.Load(name)
	if err != nil {
		return err
	}
	start := time.Now()
	ps := l.Check(context.Background())
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "FROM\tTO\tADDRESS\tTTL\tRESULT")
	for _, p := range ps {
		res := "ok"
		if !p.OK {
			res = "FAIL"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\n", p.From, p.To, p.ToAddr, p.TTL, res)
	}
	tw.Flush()
	failed := lab.Failed(ps)
	fmt.Printf("\n%d/%d probes passed in %v\n", len(ps)-len(failed), len(ps), time.Since(start).Round(time.Millisecond))
	for _, p := range failed {
		fmt.Printf("\n--- %s -> %s (%s):\n%s\n", p.From, p.To, p.ToAddr, p.Output)
	}
	if len(failed) > 0 {
		return fmt.Errorf("%d probes failed", len(failed))
	}
	return nil
}

func iperf(name, from, to string, o lab.IperfOptions) error {
	l, err := lab.Load(name)
	if err != nil {
		return err
	}
	// Interrupted, the test still puts back what it changed (the pods'
	// congestion control).
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	r, err := l.IperfWith(ctx, from, to, o)
	if err != nil {
		return err
	}
	dir := from + " -> " + to
	if o.Reverse {
		dir = to + " -> " + from
	}
	cc := r.Congestion
	if cc == "" {
		cc = "congestion control not reported"
	}
	fmt.Printf("iperf3 TCP %s (%s): %.2f Gbit/s, %d retransmits, %d MB\n", dir, cc, r.BitsPerSecond/1e9, r.Retransmits, r.Received>>20)
	return nil
}

func execIn(name, target string, argv []string) error {
	l, err := lab.Load(name)
	if err != nil {
		return err
	}
	ns, err := l.Target(target)
	if err != nil {
		return err
	}
	return passThrough(append([]string{"ip", "netns", "exec", ns}, argv...))
}
