// Package lab builds tortie labs on one machine: "nodes" and "pods" are
// network namespaces, the underlay is one or two bridged subnets joined by a
// router namespace (so CrossSubnet can be seen). A node runs tortied, or is a
// plain Linux node set up the way Calico sets up its kernel dataplane (veth
// pods with proxy ARP, vxlan.calico with static neighbour and FDB entries,
// or native routes), to prove interop and to serve as the benchmark's
// reference. Everything the lab creates carries its name as a prefix, so
// Down removes it even after a crash.
package lab

import (
	"context"
	"crypto/sha1"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/tortie-net/tortie/api"
	"github.com/tortie-net/tortie/calico"
	"github.com/tortie-net/tortie/config"
	"github.com/tortie-net/tortie/cpuset"
	"github.com/tortie-net/tortie/encap"
	"github.com/tortie-net/tortie/endpoint"
	"github.com/tortie-net/tortie/fib"
)

// OutsideAddr is a host outside the cluster (in the namespace <lab>-ext,
// behind the fabric router), for natOutgoing. The fabric router has no
// route to pod addresses, as a real upstream router would not.
const OutsideAddr = "203.0.113.10"

// StateRoot is where labs keep their state, configs, sockets and logs.
const StateRoot = "/run/tortie-lab"

// Options choose what Up builds.
type Options struct {
	Name        string // prefix of every namespace (short: netns names end up in ip output)
	Nodes       int
	Pods        int    // per node
	Mode        string // native, ipip, vxlan, ipip-crosssubnet, vxlan-crosssubnet
	Subnets     int    // 1 or 2; 0 = 2 for crosssubnet modes, else 1
	KernelNodes int    // the last KernelNodes nodes are Calico-style kernel nodes
	// KernelOffloads keeps the kernel nodes' underlay offloads in a lab
	// that mixes them with tortie nodes, as nodes in containers joined by
	// veths have them: their VXLAN then reaches tortie nodes in whole
	// superframes (UDP tunnel GSO), checksums unfinished. Without it their
	// underlay behaves like a wire (checksums completed, segments cut).
	KernelOffloads bool
	Tortied        string // tortied binary
	UnderlayMTU    int    // 0 = 1500
	LogLevel       string
	// Threads is each tortied's OS threads (its config's cpus): 0 or 1 is
	// one thread pinned to a CPU of its own where there are enough; more
	// run unpinned, with that many VXLAN sockets sharing port 4789.
	Threads int
	// PodQueues is each tortied's podQueues: queues per pod TAP (0: one).
	PodQueues int
	// RealtimePriority is each tortied's realtimePriority: its threads
	// under SCHED_FIFO at this priority (0: the normal scheduler).
	RealtimePriority int
	// GoroutineReaders sets each tortied's inputLoops to false: a
	// goroutine per input instead of a read loop per thread.
	GoroutineReaders bool
	// BusyPoll is each tortied's busyPoll: how long its input loops spin
	// before they sleep (0: not at all).
	BusyPoll time.Duration
	// TunnelGSO sets each tortied's tunnelGSO (nil: tortied's default):
	// pods' TCP superframes to VXLAN nodes leave whole, for the node's
	// kernel to cut.
	TunnelGSO *bool
	// TortiedUnderlayGRO sets each tortied's underlayGRO: tortied turns
	// on its node's underlay GRO itself. That alone does not make a veth
	// coalesce: UnderlayGRO has the lab do it with the fabric's help
	// (segments instead of superframes, and a flush timeout), for every
	// node.
	TortiedUnderlayGRO bool
	// UnderlayGRO makes every node's underlay interface coalesce what it
	// receives as a NIC's GRO does (a veth forwards packets one by one;
	// this turns on its NAPI GRO, holds a poll's packets a little for
	// the next, and has the fabric side hand it segments, not TSO
	// superframes it would pass through as they are).
	UnderlayGRO bool
	// Static gives every node its peers in its config file; otherwise the
	// cluster lives in an etcd embedded in n1's tortied, pods get addresses
	// from an IP pool, and are created through tortie-cni. Labs with kernel
	// nodes are static: those nodes are configured like Calico's, by hand.
	Static bool
	// CNIPlugin is the tortie-cni binary (default: next to Tortied).
	CNIPlugin string
	// BGP makes BGP the route source of the tortie nodes (datastore labs).
	BGP bool
	// BirdNodes: the last BirdNodes nodes run Calico's kernel dataplane
	// with BIRD 2 as their BGP speaker, configured as Calico configures a
	// mesh member; they join a BGP datastore lab (implies BGP).
	BirdNodes int
	// Manifest is applied right after the IP pool, before the other nodes
	// start (BGPConfiguration, BGPPeer, Node labels...).
	Manifest string
	// EtcdMembers > 0 runs an etcd cluster of that many members (Debian's
	// etcd-server binary) in the fabric namespace instead of the etcd
	// embedded in n1, so that members can be stopped and started.
	EtcdMembers int
	// EtcdTLS runs the lab's etcd (the member in n1 or the external
	// cluster) on TLS only, with client-certificate authentication on its
	// client and peer URLs; every node's tortied uses a client
	// certificate of the lab's CA (see EtcdClientFiles).
	EtcdTLS bool
	// Containerd runs a containerd of its own on every tortie node of a
	// datastore lab, in the node's network namespace, creating pod
	// networks through tortie-cni (see Containerd).
	Containerd bool
	// Images is an OCI image layout archive (images.Lab writes one)
	// imported into every node's containerd.
	Images string
	// DaemonSet leaves tortied to Kubernetes: the lab starts no tortied,
	// gives every node a file system view of its own (see NodePaths) with
	// a containerd in it and no CNI configuration, and
	// ControlPlane.DeployTortie later runs tortie from deploy/ as a
	// DaemonSet under the nodes' kubelets. It implies Containerd and an
	// external etcd (EtcdMembers, at least 1), which outlives tortied's
	// restarts; the IP pool and Manifest are applied by DeployTortie.
	DaemonSet bool
}

// Lab is what Up built; it is saved as JSON in the state directory.
type Lab struct {
	Name        string        `json:"name"`
	Mode        string        `json:"mode"`
	Encap       string        `json:"encap"`
	CrossSubnet bool          `json:"crossSubnet"`
	Subnets     int           `json:"subnets"`
	Fabric      string        `json:"fabric"`
	Datastore   bool          `json:"datastore"`
	BGP         bool          `json:"bgp,omitempty"`
	EtcdURL     string        `json:"etcdURL,omitempty"`
	Nodes       []*Node       `json:"nodes"`
	CNIPath     string        `json:"cniPath,omitempty"`
	Tortied     string        `json:"tortied"`
	LogLevel    string        `json:"logLevel,omitempty"`
	Etcd        []*EtcdMember `json:"etcd,omitempty"`
	EtcdTLS     bool          `json:"etcdTLS,omitempty"`
	DaemonSet   bool          `json:"daemonSet,omitempty"`
	// Threads is Options.Threads.
	Threads int `json:"threads,omitempty"`
	// PodQueues is Options.PodQueues.
	PodQueues int `json:"podQueues,omitempty"`
	// RealtimePriority is Options.RealtimePriority.
	RealtimePriority int `json:"realtimePriority,omitempty"`
	// GoroutineReaders is Options.GoroutineReaders.
	GoroutineReaders bool `json:"goroutineReaders,omitempty"`
	// BusyPoll is Options.BusyPoll.
	BusyPoll time.Duration `json:"busyPoll,omitempty"`
	// TunnelGSO is Options.TunnelGSO.
	TunnelGSO *bool `json:"tunnelGSO,omitempty"`
	// TortiedUnderlayGRO is Options.TortiedUnderlayGRO.
	TortiedUnderlayGRO bool `json:"tortiedUnderlayGRO,omitempty"`
	// Manifest is Options.Manifest, kept for DeployTortie.
	Manifest string `json:"manifest,omitempty"`
	// K8sBinDir holds the Kubernetes binaries of the lab's control plane
	// (set by StartControlPlane), kept so that kubectl can be run against
	// the lab later (KubectlCommand) without asking where they are.
	K8sBinDir string `json:"k8sBinDir,omitempty"`
}

// EtcdMember is one member of an external lab etcd cluster.
type EtcdMember struct {
	Name      string `json:"name"`
	ClientURL string `json:"clientURL"`
	PeerURL   string `json:"peerURL"`
	PID       int    `json:"pid,omitempty"`
}

// Node is one lab node.
type Node struct {
	Name       string `json:"name"`
	Netns      string `json:"netns"`
	Kernel     bool   `json:"kernel"`
	Bird       bool   `json:"bird,omitempty"`
	Address    string `json:"address"` // with prefix length
	PodCIDR    string `json:"podCIDR"`
	TunnelAddr string `json:"tunnelAddress"`
	Socket     string `json:"socket,omitempty"`
	Metrics    string `json:"metrics,omitempty"`
	PID        int    `json:"pid,omitempty"`
	Log        string `json:"log,omitempty"`
	Pods       []*Pod `json:"pods"`
	// Containerd is the node's container runtime (Options.Containerd).
	Containerd *Containerd `json:"containerd,omitempty"`
	// MountNS pins the node's own mount namespace (DaemonSet labs).
	MountNS string `json:"mountNS,omitempty"`
}

// Pod is one lab pod.
type Pod struct {
	Name string `json:"name"`
	// Namespace is the pod's Kubernetes namespace, which CNI ADD passes as
	// K8S_POD_NAMESPACE and its WorkloadEndpoint lives in (empty: default).
	Namespace   string `json:"namespace,omitempty"`
	Netns       string `json:"netns"`
	Address     string `json:"address"`
	Node        string `json:"node"`
	ContainerID string `json:"containerID,omitempty"`
}

// Addr returns the node's underlay address without its prefix length.
func (n *Node) Addr() string { return strings.Split(n.Address, "/")[0] }

// Dir is the state directory of a lab.
func Dir(name string) string { return filepath.Join(StateRoot, name) }

func run(args ...string) error {
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// ns runs a command inside a namespace.
func ns(name string, args ...string) error {
	return run(append([]string{"ip", "netns", "exec", name}, args...)...)
}

func sysctl(nsName, key, value string) error {
	return ns(nsName, "sysctl", "-qw", key+"="+value)
}

// ParseMode splits a lab mode into encapsulation and CrossSubnet.
func ParseMode(mode string) (encapName string, cross bool, err error) {
	encapName, cross = strings.CutSuffix(mode, "-crosssubnet")
	if _, err := fib.ParseMode(encapName); err != nil {
		return "", false, err
	}
	if cross && encapName == "native" {
		return "", false, errors.New("native routing has no CrossSubnet variant")
	}
	return encapName, cross, nil
}

// Up builds a lab. On failure it tears down what it built.
func Up(o Options) (l *Lab, err error) {
	if o.Name == "" {
		o.Name = "tl"
	}
	if len(o.Name) > 6 {
		return nil, fmt.Errorf("lab name %q: at most 6 characters", o.Name)
	}
	if o.Nodes < 1 || o.Nodes > 50 || o.Pods < 0 || o.Pods > 50 {
		return nil, errors.New("nodes must be 1-50 and pods 0-50 per node")
	}
	enc, cross, err := ParseMode(o.Mode)
	if err != nil {
		return nil, err
	}
	if o.Subnets == 0 {
		o.Subnets = 1
		if cross {
			o.Subnets = 2
		}
	}
	if o.Subnets < 1 || o.Subnets > 2 {
		return nil, errors.New("subnets must be 1 or 2")
	}
	if enc == "native" && o.Subnets > 1 {
		return nil, errors.New("native routing needs the nodes on one subnet (layer-2 adjacency)")
	}
	if o.KernelNodes > 0 && enc == "ipip" {
		return nil, errors.New("kernel nodes cannot do IPIP here: the kernel ipip module is not available")
	}
	if o.UnderlayMTU == 0 {
		o.UnderlayMTU = 1500
	}
	if o.DaemonSet {
		if o.Static || o.KernelNodes > 0 || o.BirdNodes > 0 || o.Pods > 0 || o.EtcdTLS {
			return nil, errors.New("a DaemonSet lab is a datastore lab of tortie nodes only, without lab pods or etcd TLS")
		}
		o.Containerd = true
		o.EtcdMembers = max(o.EtcdMembers, 1)
	}
	if o.Containerd && (o.Static || o.KernelNodes > 0) {
		return nil, errors.New("containerd needs a datastore lab (not static, no kernel nodes): pods get addresses through tortie-cni")
	}
	if o.EtcdTLS && (o.Static || o.KernelNodes > 0) {
		return nil, errors.New("etcd TLS needs a datastore lab (not static, no kernel nodes)")
	}
	if _, err := os.Stat(Dir(o.Name)); err == nil {
		return nil, fmt.Errorf("lab %q exists: run down first", o.Name)
	}
	if err := os.MkdirAll(Dir(o.Name), 0o755); err != nil {
		return nil, err
	}
	if o.Containerd {
		if err := shareMounts(Dir(o.Name)); err != nil {
			_ = Down(o.Name)
			return nil, err
		}
	}
	if o.KernelNodes > 0 {
		o.Static = true
	}
	if o.BirdNodes > 0 {
		if o.Static || enc != "native" {
			return nil, errors.New("BIRD nodes join native-routed datastore labs")
		}
		o.BGP = true
	}
	l = &Lab{Name: o.Name, Mode: o.Mode, Encap: enc, CrossSubnet: cross, Subnets: o.Subnets, Fabric: o.Name + "-fab", Datastore: !o.Static,
		Tortied: o.Tortied, LogLevel: o.LogLevel, BGP: o.BGP && !o.Static, EtcdTLS: o.EtcdTLS,
		DaemonSet: o.DaemonSet, Manifest: o.Manifest, Threads: o.Threads, PodQueues: o.PodQueues,
		RealtimePriority: o.RealtimePriority, GoroutineReaders: o.GoroutineReaders, TortiedUnderlayGRO: o.TortiedUnderlayGRO,
		BusyPoll: o.BusyPoll, TunnelGSO: o.TunnelGSO}
	if l.Datastore {
		if err := l.prepareCNI(o); err != nil {
			return nil, err
		}
	}
	defer func() {
		if err != nil {
			_ = Down(o.Name)
		}
	}()
	for i := 1; i <= o.Nodes; i++ {
		s := (i - 1) % o.Subnets
		n := &Node{
			Name:    fmt.Sprintf("n%d", i),
			Netns:   fmt.Sprintf("%s-n%d", o.Name, i),
			Kernel:  i > o.Nodes-o.KernelNodes-o.BirdNodes,
			Bird:    i > o.Nodes-o.BirdNodes,
			Address: fmt.Sprintf("10.0.%d.%d/24", s+1, i),
		}
		if !l.Datastore {
			n.PodCIDR, n.TunnelAddr = fmt.Sprintf("10.244.%d.0/24", i), fmt.Sprintf("10.244.%d.1", i)
		}
		if n.Bird {
			n.PodCIDR = fmt.Sprintf("10.245.%d.0/26", i)
		}
		for j := 1; j <= o.Pods; j++ {
			p := &Pod{Name: fmt.Sprintf("n%dp%d", i, j), Netns: fmt.Sprintf("%s-n%dp%d", o.Name, i, j), Node: n.Name}
			if o.Static {
				p.Address = fmt.Sprintf("10.244.%d.%d", i, 9+j)
			}
			if n.Bird {
				p.Address = fmt.Sprintf("10.245.%d.%d", i, 9+j)
			}
			n.Pods = append(n.Pods, p)
		}
		l.Nodes = append(l.Nodes, n)
	}
	if err := l.save(); err != nil {
		return l, err
	}
	if err := l.buildFabric(o); err != nil {
		return l, err
	}
	if l.Datastore && o.EtcdTLS {
		if err := l.makePKI(); err != nil {
			return l, err
		}
	}
	if l.Datastore && o.EtcdMembers > 0 {
		if err := l.startEtcdCluster(o.EtcdMembers); err != nil {
			return l, err
		}
	} else if l.Datastore {
		l.EtcdURL = l.etcdScheme() + "://" + l.Nodes[0].Addr() + ":2379"
	}
	for i, n := range l.Nodes {
		if err := l.buildNode(o, n); err != nil {
			return l, fmt.Errorf("node %s: %w", n.Name, err)
		}
		if i == 0 && l.Datastore && !l.DaemonSet {
			manifests := []string{l.PoolManifest()}
			if o.BirdNodes > 0 {
				manifests = append(manifests, l.birdManifest())
			}
			if o.Manifest != "" {
				manifests = append(manifests, o.Manifest)
			}
			for _, m := range manifests {
				if err := l.Apply(m); err != nil {
					return l, err
				}
			}
		}
	}
	for _, n := range l.Nodes {
		if err := l.buildPods(o, n); err != nil {
			return l, fmt.Errorf("node %s: %w", n.Name, err)
		}
	}
	if o.Containerd {
		for _, n := range l.Nodes {
			if n.Kernel {
				continue
			}
			if err := l.startContainerd(o, n); err != nil {
				return l, fmt.Errorf("node %s: %w", n.Name, err)
			}
			if err := l.save(); err != nil {
				return l, err
			}
		}
	}
	return l, l.save()
}

func (l *Lab) save() error {
	b, err := json.MarshalIndent(l, "", "  ")
	if err != nil {
		return err
	}
	tmp := filepath.Join(Dir(l.Name), "state.json.tmp")
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(Dir(l.Name), "state.json"))
}

// Load reads a running lab's state.
func Load(name string) (*Lab, error) {
	b, err := os.ReadFile(filepath.Join(Dir(name), "state.json"))
	if err != nil {
		return nil, fmt.Errorf("lab %q is not up: %w", name, err)
	}
	var l Lab
	return &l, json.Unmarshal(b, &l)
}

// coalesceUnderlay has node n's underlay veth (eth0, whose fabric side is
// port) coalesce TCP segments as a NIC's GRO does; see
// Options.UnderlayGRO. A veth's peer uses GRO only for packets from a
// device without TSO, and flushes after every poll, which a packet at a
// time never fills, unless told to hold them (gro_flush_timeout, ns).
func (l *Lab) coalesceUnderlay(n *Node, port string) error {
	if err := run("ip", "netns", "exec", n.Netns, "ethtool", "-K", "eth0", "gro", "on"); err != nil {
		return err
	}
	if err := run("ip", "netns", "exec", l.Fabric, "ethtool", "-K", port, "tso", "off"); err != nil {
		return err
	}
	return run("ip", "netns", "exec", n.Netns, "sh", "-c", "echo 50000 > /sys/class/net/eth0/gro_flush_timeout")
}

// buildFabric makes the router namespace with one bridge per subnet.
func (l *Lab) buildFabric(o Options) error {
	f := l.Fabric
	steps := [][]string{{"ip", "netns", "add", f}, {"ip", "-n", f, "link", "set", "lo", "up"}}
	// The outside world: a host beyond the fabric router, at OutsideAddr.
	ext := l.Name + "-ext"
	steps = append(steps,
		[]string{"ip", "netns", "add", ext},
		[]string{"ip", "-n", ext, "link", "set", "lo", "up"},
		[]string{"ip", "link", "add", "up0", "netns", f, "type", "veth", "peer", "name", "eth0", "netns", ext},
		[]string{"ip", "-n", f, "addr", "add", "203.0.113.1/24", "dev", "up0"},
		[]string{"ip", "-n", f, "link", "set", "up0", "up"},
		[]string{"ip", "-n", ext, "addr", "add", OutsideAddr + "/24", "dev", "eth0"},
		[]string{"ip", "-n", ext, "link", "set", "eth0", "up"},
		[]string{"ip", "-n", ext, "route", "add", "default", "via", "203.0.113.1"})
	for s := 0; s < l.Subnets; s++ {
		br := fmt.Sprintf("br%d", s)
		steps = append(steps,
			[]string{"ip", "-n", f, "link", "add", br, "type", "bridge"},
			[]string{"ip", "-n", f, "link", "set", br, "mtu", fmt.Sprint(o.UnderlayMTU), "up"},
			[]string{"ip", "-n", f, "addr", "add", fmt.Sprintf("10.0.%d.254/24", s+1), "dev", br})
	}
	for _, s := range steps {
		if err := run(s...); err != nil {
			return err
		}
	}
	// The fabric stands for switches, which do not run the host's
	// firewall on what they bridge. With br_netfilter loaded (Kubernetes
	// nodes load it), this kernel would run iptables on every frame the
	// fabric bridges: about a tenth of the CPU of an IPIP sender, whose
	// segments cross the fabric one frame each.
	if err := ns(f, "sh", "-c", "test ! -d /proc/sys/net/bridge || sysctl -qw "+
		"net.bridge.bridge-nf-call-iptables=0 net.bridge.bridge-nf-call-ip6tables=0 net.bridge.bridge-nf-call-arptables=0"); err != nil {
		return err
	}
	return sysctl(f, "net.ipv4.ip_forward", "1")
}

func (l *Lab) buildNode(o Options, n *Node) error {
	s := n.subnet()
	port := "p" + n.Name
	steps := [][]string{
		{"ip", "netns", "add", n.Netns},
		{"ip", "-n", n.Netns, "link", "set", "lo", "up"},
		{"ip", "link", "add", port, "netns", l.Fabric, "mtu", fmt.Sprint(o.UnderlayMTU), "type", "veth", "peer", "name", "eth0", "netns", n.Netns, "mtu", fmt.Sprint(o.UnderlayMTU)},
		{"ip", "-n", l.Fabric, "link", "set", port, "master", fmt.Sprintf("br%d", s), "up"},
		{"ip", "-n", n.Netns, "addr", "add", n.Address, "dev", "eth0"},
		{"ip", "-n", n.Netns, "link", "set", "eth0", "up"},
	}
	// Every node has a default route, as real ones do (proxy ARP on a
	// kernel node answers only for addresses it can route).
	steps = append(steps, []string{"ip", "-n", n.Netns, "route", "add", "default", "via", fmt.Sprintf("10.0.%d.254", s+1)})
	for _, st := range steps {
		if err := run(st...); err != nil {
			return err
		}
	}
	if err := sysctl(n.Netns, "net.ipv4.ip_forward", "1"); err != nil {
		return err
	}
	if o.UnderlayGRO {
		if err := l.coalesceUnderlay(n, port); err != nil {
			return err
		}
	}
	if n.Kernel {
		// A real NIC completes checksums before the wire; a veth hands the
		// skb over still "checksum pending", and a packet the kernel's
		// VXLAN encapsulated would reach a tortie node's UDP socket with
		// its inner TCP checksum unfinished. In a lab that mixes kernel
		// and tortie nodes, the kernel nodes' underlay veth behaves like a
		// wire (TX checksum offload off); all-kernel labs keep the defaults.
		if o.KernelNodes+o.BirdNodes < o.Nodes && !o.KernelOffloads {
			if err := run("ip", "netns", "exec", n.Netns, "ethtool", "-K", "eth0", "tx", "off"); err != nil {
				return err
			}
		}
		if n.Bird {
			return l.buildBirdNode(n)
		}
		return l.buildKernelNode(o, n)
	}
	if l.DaemonSet {
		// tortied comes later, from the DaemonSet, with deploy/'s
		// configuration: its socket in the node's /run/tortie.
		n.Socket = l.HostPath(n, "/run/tortie/tortied.sock")
		n.Metrics = "127.0.0.1:9091"
		return l.makeNodeView(n)
	}
	return l.startTortied(o, n)
}

func (n *Node) subnet() int {
	p := netip.MustParsePrefix(n.Address)
	return int(p.Addr().As4()[2]) - 1
}

// peers lists every other node as tortied's config file names them.
func (l *Lab) peers(self *Node) []config.Node {
	var out []config.Node
	for _, m := range l.Nodes {
		if m != self {
			out = append(out, config.Node{Name: m.Name, Address: m.Addr(), PodCIDR: m.PodCIDR, TunnelAddress: m.TunnelAddr})
		}
	}
	return out
}

// nodeCPU is the CPU for the i-th node's tortied: the CPUs this process
// may use, taken in turn.
func nodeCPU(i int) string {
	set, err := cpuset.Current(0)
	if err != nil || set.Count() == 0 {
		return ""
	}
	cpus := set.CPUs()
	return strconv.Itoa(cpus[max(i, 0)%len(cpus)])
}

func (l *Lab) startTortied(o Options, n *Node) error {
	dir := Dir(l.Name)
	n.Socket = filepath.Join(dir, n.Name+".sock")
	n.Log = filepath.Join(dir, n.Name+".log")
	n.Metrics = "127.0.0.1:9091"
	cfg := config.File{
		NodeName: n.Name, Address: n.Address, Interface: "eth0", Encapsulation: l.Encap, CrossSubnet: l.CrossSubnet,
		PodCIDR: n.PodCIDR, ClusterCIDRs: []string{"10.244.0.0/16"}, TunnelAddress: n.TunnelAddr,
		Socket: n.Socket, MetricsAddress: n.Metrics, Nodes: l.peers(n), LogLevel: o.LogLevel,
		StateDir: filepath.Join(dir, n.Name+"-state"),
		// Every node of a lab shares this machine's CPUs with the others
		// and with the pods: one thread each, as a node's share, pinned to
		// a CPU of its own where there are enough, as a node would give
		// its vRouter a core (unless the lab asks for more threads).
		CPUs:   1,
		CPUSet: nodeCPU(slices.Index(l.Nodes, n)),
	}
	if l.Threads > 1 {
		cfg.CPUs, cfg.CPUSet = l.Threads, ""
	}
	cfg.PodQueues, cfg.RealtimePriority, cfg.UnderlayGRO = l.PodQueues, l.RealtimePriority, l.TortiedUnderlayGRO
	cfg.TunnelGSO = l.TunnelGSO
	if l.GoroutineReaders {
		no := false
		cfg.InputLoops = &no
	}
	if l.BusyPoll > 0 {
		cfg.BusyPoll = l.BusyPoll.String()
	}
	if l.Datastore {
		cfg.PodCIDR, cfg.ClusterCIDRs, cfg.TunnelAddress, cfg.Nodes, cfg.Encapsulation, cfg.CrossSubnet = "", nil, "", nil, "", false
		cfg.Datastore = l.etcdDatastore(n)
	}
	if err := l.WriteNodeConfig(n, cfg); err != nil {
		return err
	}
	return l.launch(n)
}

// etcdDatastore is node n's datastore section on the lab's etcd: the
// external members, or the member embedded in n1.
func (l *Lab) etcdDatastore(n *Node) *config.Datastore {
	d := &config.Datastore{EtcdEndpoints: []string{l.EtcdURL}}
	if l.EtcdTLS {
		f := l.etcdFiles(n.Name)
		d.EtcdCACertFile, d.EtcdCertFile, d.EtcdKeyFile = f.CA, f.Cert, f.Key
	}
	if l.BGP {
		d.RouteSource = config.RouteSourceBGP
	}
	if len(l.Etcd) > 0 {
		d.EtcdEndpoints = nil
		for _, m := range l.Etcd {
			d.EtcdEndpoints = append(d.EtcdEndpoints, m.ClientURL)
		}
	} else if n == l.Nodes[0] {
		d.Embedded = &config.EmbeddedEtcd{DataDir: filepath.Join(Dir(l.Name), "etcd"), ClientURL: l.EtcdURL,
			PeerURL: l.etcdScheme() + "://" + n.Addr() + ":2380"}
		if l.EtcdTLS {
			f := l.etcdFiles(etcdMemberCert)
			d.Embedded.CertFile, d.Embedded.KeyFile, d.Embedded.TrustedCAFile = f.Cert, f.Key, f.CA
		}
	}
	return d
}

// nodeConfigPath is where node n's tortied configuration is.
func (l *Lab) nodeConfigPath(n *Node) string { return filepath.Join(Dir(l.Name), n.Name+".yaml") }

// NodeConfig reads the tortied configuration the lab wrote for node n.
func (l *Lab) NodeConfig(n *Node) (config.File, error) {
	var f config.File
	b, err := os.ReadFile(l.nodeConfigPath(n))
	if err != nil {
		return f, err
	}
	return f, yaml.UnmarshalStrict(b, &f)
}

// WriteNodeConfig replaces node n's tortied configuration; tortied reads
// it when it next starts (Start, Restart).
func (l *Lab) WriteNodeConfig(n *Node, f config.File) error {
	b, err := yaml.Marshal(f)
	if err != nil {
		return err
	}
	// As tortied will read it: a file it refuses fails here, clearly,
	// rather than as a node that does not come up.
	if _, err := config.Parse(b); err != nil {
		return fmt.Errorf("lab: node %s: %w", n.Name, err)
	}
	return os.WriteFile(l.nodeConfigPath(n), b, 0o644)
}

// launch starts tortied on a node from its config file and waits until it
// is ready.
func (l *Lab) launch(n *Node) error {
	dir := Dir(l.Name)
	cfgPath := filepath.Join(dir, n.Name+".yaml")
	logf, err := os.OpenFile(n.Log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command("ip", "netns", "exec", n.Netns, l.Tortied, "--config", cfgPath)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start tortied: %w", err)
	}
	n.PID = cmd.Process.Pid
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	c := api.NewClient(n.Socket)
	deadline := time.Now().Add(30 * time.Second)
	for {
		if st, err := c.Status(); err == nil && st.Ready {
			return nil
		}
		select {
		case err := <-exited:
			logTail, _ := os.ReadFile(n.Log)
			return fmt.Errorf("tortied exited (%v):\n%s", err, logTail)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			logTail, _ := os.ReadFile(n.Log)
			return fmt.Errorf("tortied on %s not ready within 30s:\n%s", n.Name, logTail)
		}
	}
}

// buildKernelNode sets a node up as Calico's kernel dataplane does.
func (l *Lab) buildKernelNode(o Options, n *Node) error {
	me := netip.MustParsePrefix(n.Address)
	var steps [][]string
	if l.Encap == "vxlan" {
		steps = append(steps,
			[]string{"ip", "-n", n.Netns, "link", "add", "vxlan.calico", "type", "vxlan", "id", fmt.Sprint(encap.VNI),
				"dstport", "4789", "local", n.Addr(), "dev", "eth0", "nolearning"},
			[]string{"ip", "-n", n.Netns, "link", "set", "vxlan.calico", "address", calico.VTEPMAC(n.Name).String(),
				"mtu", fmt.Sprint(o.UnderlayMTU - encap.OverheadVXLAN), "up"},
			[]string{"ip", "-n", n.Netns, "addr", "add", n.TunnelAddr + "/32", "dev", "vxlan.calico"})
	}
	steps = append(steps, []string{"ip", "-n", n.Netns, "route", "add", "blackhole", n.PodCIDR})
	mode, _ := fib.ParseMode(l.Encap)
	for _, m := range l.Nodes {
		if m == n {
			continue
		}
		switch calico.ModeFor(mode, l.CrossSubnet, me, netip.MustParseAddr(m.Addr())) {
		case fib.ModeVXLAN:
			vtep := calico.VTEPMAC(m.Name).String()
			steps = append(steps,
				[]string{"ip", "-n", n.Netns, "neigh", "replace", m.TunnelAddr, "lladdr", vtep, "dev", "vxlan.calico", "nud", "permanent"},
				[]string{"bridge", "-n", n.Netns, "fdb", "append", vtep, "dst", m.Addr(), "dev", "vxlan.calico"},
				[]string{"ip", "-n", n.Netns, "route", "add", m.PodCIDR, "via", m.TunnelAddr, "dev", "vxlan.calico", "onlink"})
		default:
			steps = append(steps, []string{"ip", "-n", n.Netns, "route", "add", m.PodCIDR, "via", m.Addr(), "dev", "eth0", "onlink"})
		}
	}
	for _, st := range steps {
		if err := run(st...); err != nil {
			return err
		}
	}
	return nil
}

// Restart stops tortied on a node (SIGKILL when kill is set, as in a crash;
// SIGTERM otherwise), waits for it to exit, and starts it again.
func (l *Lab) Restart(n *Node, kill bool) error {
	if err := l.Stop(n, kill); err != nil {
		return err
	}
	return l.Start(n)
}

// Start starts tortied on a node whose tortied is stopped (Stop), from
// its configuration file, and waits until it is ready: its pods are
// restored from its state file.
func (l *Lab) Start(n *Node) error {
	if err := l.launch(n); err != nil {
		return err
	}
	return l.save()
}

// Stop ends tortied on a node and waits until the process is gone.
func (l *Lab) Stop(n *Node, kill bool) error {
	sig := syscall.SIGTERM
	if kill {
		sig = syscall.SIGKILL
	}
	if err := syscall.Kill(n.PID, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		return err
	}
	deadline := time.Now().Add(15 * time.Second)
	for syscall.Kill(n.PID, 0) == nil {
		if time.Now().After(deadline) {
			return fmt.Errorf("tortied on %s did not exit", n.Name)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return nil
}

// PodMTU is the MTU the lab's pods get.
func (l *Lab) PodMTU(underlay int) int {
	m, _ := fib.ParseMode(l.Encap)
	return calico.PodMTU(underlay, m)
}

// CaliName is Calico's host-side interface name for a pod: "cali" and the
// first 11 hex digits of sha1("<namespace>.<pod>").
func CaliName(namespace, pod string) string {
	sum := sha1.Sum([]byte(namespace + "." + pod))
	return "cali" + hex.EncodeToString(sum[:])[:11]
}

func (l *Lab) buildPods(o Options, n *Node) error {
	for _, p := range n.Pods {
		if err := run("ip", "netns", "add", p.Netns); err != nil {
			return err
		}
		if err := run("ip", "-n", p.Netns, "link", "set", "lo", "up"); err != nil {
			return err
		}
		if n.Kernel {
			if n.Bird {
				if err := run("ip", "-n", n.Netns, "route", "replace", "blackhole", n.PodCIDR); err != nil {
					return err
				}
			}
			if err := l.kernelPod(o, n, p); err != nil {
				return fmt.Errorf("pod %s: %w", p.Name, err)
			}
			continue
		}
		if l.Datastore {
			if err := l.AddPodCNI(context.Background(), n, p); err != nil {
				return fmt.Errorf("pod %s: %w", p.Name, err)
			}
			continue
		}
		_, err := api.NewClient(n.Socket).AddEndpoint(endpoint.Spec{
			Name: p.Name, Netns: "/var/run/netns/" + p.Netns, Address: netip.MustParseAddr(p.Address)})
		if err != nil {
			return fmt.Errorf("pod %s: %w", p.Name, err)
		}
	}
	return nil
}

// kernelPod plumbs a pod the way Calico's CNI does on a kernel node.
func (l *Lab) kernelPod(o Options, n *Node, p *Pod) error {
	host := CaliName(p.PodNamespace(), p.Name)
	mtu := fmt.Sprint(l.PodMTU(o.UnderlayMTU))
	for _, st := range [][]string{
		{"ip", "-n", n.Netns, "link", "add", host, "mtu", mtu, "type", "veth", "peer", "name", "eth0", "netns", p.Netns, "mtu", mtu},
		{"ip", "-n", n.Netns, "link", "set", host, "address", "ee:ee:ee:ee:ee:ee", "up"},
		{"ip", "netns", "exec", n.Netns, "sysctl", "-qw", "net.ipv4.conf." + host + ".proxy_arp=1"},
		{"ip", "netns", "exec", n.Netns, "sysctl", "-qw", "net.ipv4.neigh." + host + ".proxy_delay=0"},
		{"ip", "-n", n.Netns, "route", "add", p.Address + "/32", "dev", host, "scope", "link"},
		{"ip", "-n", p.Netns, "addr", "add", p.Address + "/32", "dev", "eth0"},
		{"ip", "-n", p.Netns, "link", "set", "eth0", "up"},
		{"ip", "-n", p.Netns, "route", "add", "169.254.1.1", "dev", "eth0", "scope", "link"},
		{"ip", "-n", p.Netns, "route", "add", "default", "via", "169.254.1.1", "dev", "eth0"},
	} {
		if err := run(st...); err != nil {
			return err
		}
	}
	return nil
}

// Down removes a lab: it stops every process in the lab's namespaces and
// its containerds' pods, deletes the namespaces (found by prefix, so it
// works without state after a crash), unmounts what containerd and runc
// left mounted under the state directory, and removes the directory.
func Down(name string) error {
	if name == "" {
		return errors.New("lab name required")
	}
	entries, _ := os.ReadDir("/var/run/netns")
	errs := stopContainerds(name)
	var names []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), name+"-") {
			names = append(names, e.Name())
		}
	}
	for _, n := range names {
		out, _ := exec.Command("ip", "netns", "pids", n).Output()
		for _, f := range strings.Fields(string(out)) {
			var pid int
			if _, err := fmt.Sscan(f, &pid); err == nil && pid > 1 {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}
	for _, n := range names {
		if err := run("ip", "netns", "del", n); err != nil {
			errs = append(errs, err)
		}
	}
	if left := unmountUnder(Dir(name)); len(left) > 0 {
		// Removing the directory now would reach into what is still mounted.
		return errors.Join(append(errs, left...)...)
	}
	if err := os.RemoveAll(Dir(name)); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Target finds the namespace of a node or pod by name.
func (l *Lab) Target(name string) (string, error) {
	if name == "fabric" || name == "fab" {
		return l.Fabric, nil
	}
	if name == "outside" || name == "ext" {
		return l.Name + "-ext", nil
	}
	for _, n := range l.Nodes {
		if n.Name == name {
			return n.Netns, nil
		}
		for _, p := range n.Pods {
			if p.Name == name {
				return p.Netns, nil
			}
		}
	}
	return "", fmt.Errorf("no node or pod %q in lab %s", name, l.Name)
}

// Pods lists every pod of the lab.
func (l *Lab) Pods() []*Pod {
	var out []*Pod
	for _, n := range l.Nodes {
		out = append(out, n.Pods...)
	}
	return out
}

// Pod finds a pod by name.
func (l *Lab) Pod(name string) *Pod {
	for _, p := range l.Pods() {
		if p.Name == name {
			return p
		}
	}
	return nil
}

// Node finds a node by name.
func (l *Lab) Node(name string) *Node {
	for _, n := range l.Nodes {
		if n.Name == name {
			return n
		}
	}
	return nil
}
