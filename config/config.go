// Package config reads a tortied node configuration file (YAML or JSON) and
// turns it into validated, typed settings. Without a datastore, the file
// also carries the other nodes' pod blocks (the static route source).
package config

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/tortie-net/tortie/calico"
	"github.com/tortie-net/tortie/cpuset"
	"github.com/tortie-net/tortie/fib"
	"github.com/tortie-net/tortie/header"
)

// File is the on-disk shape.
type File struct {
	// NodeName names this node; the VXLAN VTEP MAC derives from it.
	NodeName string `json:"nodeName"`
	// Address is the node's underlay address with its subnet, e.g. 10.0.1.1/24.
	Address string `json:"address"`
	// Interface is the underlay NIC (default eth0).
	Interface string `json:"interface,omitempty"`
	// Encapsulation toward other nodes: native, ipip or vxlan.
	Encapsulation string `json:"encapsulation"`
	// CrossSubnet routes natively to nodes inside Address's subnet.
	CrossSubnet bool `json:"crossSubnet,omitempty"`
	// PodCIDR is this node's pod block (blackholed for unused addresses).
	PodCIDR string `json:"podCIDR"`
	// ClusterCIDRs are all pod ranges of the cluster, routed to the host TUN.
	ClusterCIDRs []string `json:"clusterCIDRs"`
	// TunnelAddress is this node's tunnel address (Calico's vxlan.calico /
	// tunl0 address), placed on the host TUN. Optional.
	TunnelAddress string `json:"tunnelAddress,omitempty"`
	// MTU of the underlay (0: read from Interface). Pods get it minus the overhead.
	UnderlayMTU int `json:"underlayMTU,omitempty"`
	// Socket is the root-only unix socket of the control API.
	Socket string `json:"socket,omitempty"`
	// MetricsAddress serves /metrics, /healthz and /readyz ("" = off).
	MetricsAddress string `json:"metricsAddress,omitempty"`
	// HostInterface names the host TUN (default tortie0).
	HostInterface string `json:"hostInterface,omitempty"`
	// Nodes are the other nodes and their pod blocks.
	Nodes []Node `json:"nodes,omitempty"`
	// LogLevel: debug, info, warn, error.
	LogLevel string `json:"logLevel,omitempty"`
	// Datastore, when set, makes IP pools, IPAM blocks and nodes in the
	// datastore (etcd or the Kubernetes API) the source of pod addresses
	// and routes; encapsulation then comes from each pool, and podCIDR,
	// clusterCIDRs and nodes are not used.
	Datastore *Datastore `json:"datastore,omitempty"`
	// Kubernetes, with a datastore, makes the Kubernetes API the source of
	// pods', namespaces' and service accounts' labels and of
	// NetworkPolicies, for network policy, and with routeSource bgp of the
	// Services and EndpointSlices whose addresses the node advertises.
	Kubernetes *Kubernetes `json:"kubernetes,omitempty"`
	// Labels of this node, for pools' nodeSelector.
	Labels map[string]string `json:"labels,omitempty"`
	// StateDir keeps the endpoint state file (default /var/lib/tortie).
	StateDir string `json:"stateDir,omitempty"`
	// PodOffload gives pod TAPs virtio-net headers with checksum and TCP
	// segmentation offload (default true): pods hand over 64 KB TCP
	// superframes that tortie segments itself.
	PodOffload *bool `json:"podOffload,omitempty"`
	// CPUs bounds the OS threads running Go code in tortied (GOMAXPROCS;
	// 0 = every CPU). Forwarding runs to completion on one read loop per
	// thread (see inputLoops), reading its share of the inputs (each pod,
	// the host, and each VXLAN socket: one per thread, up to 8, sharing
	// port 4789 by flow), so on a machine shared with the
	// pods' own work (or, in a lab, with other "nodes"), fewer threads
	// mean fewer cross-CPU wake-ups: measured here, TCP through a node
	// rose 30% with 1 on 2 CPUs.
	CPUs int `json:"cpus,omitempty"`
	// CPUSet pins every tortied thread to these CPUs, a Linux CPU list
	// such as "2" or "2-3" (default: no pinning). Without cpus, tortied
	// runs as many threads as the list names CPUs. A node that gives its
	// vRouter cores of its own keeps forwarding on warm caches, away from
	// the pods' work; in a Kubernetes pod the kubelet's static CPU manager
	// does the same through the cgroup's cpuset.
	CPUSet string `json:"cpuSet,omitempty"`
	// PodQueues is how many queues each pod's TAP gets (IFF_MULTI_QUEUE),
	// each read as an input of its own, so one pod's flows can be
	// forwarded on several cores, each flow on one queue (default 1: on
	// the 2-CPU machine of the benchmarks a second queue paid for one
	// pod's many streams, not for one, with two labs measured side by
	// side, and 1-3% in an interleaved benchmark run; see the README). Each queue's
	// reader keeps its own buffers (about 0.5 MB with offloads). A
	// persistent TAP keeps the queue kind it was made with until its pod
	// is re-created.
	PodQueues int `json:"podQueues,omitempty"`
	// RealtimePriority runs every tortied thread under the real-time
	// policy SCHED_FIFO at this priority, 1 to 99 (default 0: the normal
	// scheduler). The kernel's own forwarding runs in softirqs, which
	// preempt every task; a tortied sharing CPUs with pods waits for them
	// instead, and under load that wait is most of its latency (measured
	// here with VXLAN: p99 under load 2.3-2.8 ms, real-time 0.6 ms in two
	// repetitions of three of one run; see the README). Its threads sleep
	// when there is nothing to forward, so this costs nothing idle; while
	// it forwards, tasks on its CPUs wait for it, as they wait for
	// softirqs, and the kernel's real-time throttling
	// (kernel.sched_rt_runtime_us, 95% of each second by default) keeps
	// it from taking a CPU whole. It needs CAP_SYS_NICE and, where the
	// kernel has real-time group scheduling, real-time runtime in
	// tortied's cgroup: tortied does not start without them. Threads of
	// one real-time priority do not preempt each other, so tortied needs
	// a CPU for each of its threads: with cpuSet, cpus may not name more
	// threads than it has CPUs. The Go runtime's own threads (its
	// monitor, threads back from system calls) and the processes tortied
	// starts (nft) run real-time too; the runtime expects its threads to
	// take turns, so this is for a node that can give tortied CPUs it is
	// mostly alone on.
	RealtimePriority int `json:"realtimePriority,omitempty"`
	// InputLoops reads the inputs (pod TAPs, the host TUN, underlay
	// sockets) on one loop per thread (at most 8), each taking one batch of each
	// of its ready inputs in turn (default true). false gives each input a
	// goroutine of its own, woken by Go's poller: a quiet pod's packet then
	// waits until a busy input's reader finds its queue empty, up to Go's
	// scheduler's ~10 ms poll, which loops bound to one batch of each
	// other input; but a loop's wake-up goes through an epoll of its
	// inputs nested in Go's, which costs every hop 1-2 µs (measured here,
	// two labs side by side: p99 under load 3.5 -> 2.35 ms with VXLAN
	// and 1.91 -> 1.30 ms native with loops, idle p50 5-9 µs higher; see
	// the README).
	InputLoops *bool `json:"inputLoops,omitempty"`
	// BusyPoll is how long each input loop goes on asking its inputs for
	// packets, without sleeping, after it has read them dry, before it
	// sleeps until one turns readable: 0 (the default: it sleeps at once)
	// or a Go duration from "1us" to "1ms". A packet that comes meanwhile
	// is read without the loop being woken; the CPU spends up to that long
	// spinning after every burst (yielding to tasks that want it). It
	// trades CPU for latency, as the kernel's net.core.busy_poll does (see
	// "Busy polling" in the README's Benchmarks). It needs inputLoops and
	// cannot be combined with realtimePriority (a real-time loop would keep
	// a pod whose reply it waits for off its CPU). With more than one
	// thread (cpus above 1, or unset on a machine of several CPUs) every
	// loop spins, which made latency worse here: tortied warns.
	BusyPoll string `json:"busyPoll,omitempty"`
	// UnderlayGRO true has tortied turn on the underlay interface's
	// generic receive offload at start if it is off (as `ethtool -K
	// <interface> gro on`). Natively routed and IPIP TCP cross the wire
	// in segments and reach tortie as superframes only where the
	// receiving NIC coalesces them, as a NIC does by default; without
	// it tortie gets them one segment at a time. The setting stays after
	// tortied exits. On a VLAN or bond, what coalesces is the physical
	// NIC under it. Unset, tortied only logs the setting it found (a veth,
	// as in the lab, carries a sender's superframes whole without it).
	UnderlayGRO bool `json:"underlayGRO,omitempty"`
	// TunnelGSO has pods' TCP superframes to VXLAN nodes leave whole,
	// handed to the node's kernel through a TAP of their own (the host
	// interface's name with "-gso" added) for the kernel, or the
	// underlay's NIC, to cut into datagrams (UDP tunnel GSO, Linux
	// 6.17+), instead of being cut here. The kernel forwards them as
	// packets from this node's address, so its FORWARD chain sees them:
	// tortied puts a rule accepting them at the head of iptables' FORWARD
	// chain (nftables' "ip filter FORWARD", and iptables-legacy's where
	// that table exists) and keeps it there. Unset, tortied uses it where
	// the kernel takes the offload and no forward chain it cannot open
	// drops by policy, and cuts superframes itself elsewhere, saying why
	// in its log. true uses it wherever the kernel takes it (a chain it
	// could not open is logged as a warning); false never.
	TunnelGSO *bool `json:"tunnelGSO,omitempty"`
}

// Loops says whether inputs are read on loops (inputLoops, default true).
func (f *File) Loops() bool { return f.InputLoops == nil || *f.InputLoops }

// MaxRealtimePriority bounds realtimePriority (SCHED_FIFO's highest).
const MaxRealtimePriority = 99

// MaxBusyPoll bounds busyPoll.
const MaxBusyPoll = time.Millisecond

// MaxPodQueues bounds podQueues.
const MaxPodQueues = 8

// Queues is how many queues a pod's TAP gets: podQueues, else 1.
func (c *Config) Queues() int { return max(c.PodQueues, 1) }

// Threads is how many OS threads run tortied's Go code: cpus, else as many
// as cpuSet names, else 0 (Go's default: every CPU).
func (c *Config) Threads() int {
	if c.CPUs == 0 && c.Pin != nil {
		return c.Pin.Count()
	}
	return c.CPUs
}

// RunThreads is how many threads tortied runs Go code on, and so how
// many forward: Threads, or, unset, every one Go may use (GOMAXPROCS).
func (c *Config) RunThreads() int {
	if n := c.Threads(); n > 0 {
		return n
	}
	return max(runtime.GOMAXPROCS(0), 1)
}

// Offload reports whether pod TAPs get offloads.
func (f *File) Offload() bool { return f.PodOffload == nil || *f.PodOffload }

// Datastore says where cluster state lives.
type Datastore struct {
	// Type is the datastore, as Calico's DATASTORE_TYPE spells it: etcdv3
	// (default), or kubernetes for Calico's custom resources
	// (crd.projectcalico.org/v1, installed from deploy/crds.yaml) in the
	// Kubernetes API, which then needs no etcd of its own.
	Type string `json:"type,omitempty"`
	// Kubeconfig, with type kubernetes, is the kubeconfig file of the API
	// server holding the datastore; empty: kubernetes.kubeconfig if that is
	// set, else the in-cluster configuration of a pod.
	Kubeconfig string `json:"kubeconfig,omitempty"`
	// EtcdEndpoints of an etcd cluster (e.g. https://10.0.1.1:2379).
	EtcdEndpoints []string `json:"etcdEndpoints,omitempty"`
	// EtcdCACertFile, EtcdCertFile and EtcdKeyFile are the PEM files of
	// this node's TLS client of etcd, as Calico names them: the authority
	// that signed the members' certificates, and this node's client
	// certificate and key (both or neither) for members that require
	// client certificates. They need https endpoints.
	EtcdCACertFile string `json:"etcdCACertFile,omitempty"`
	EtcdCertFile   string `json:"etcdCertFile,omitempty"`
	EtcdKeyFile    string `json:"etcdKeyFile,omitempty"`
	// Embedded runs a single-member etcd inside this tortied.
	Embedded *EmbeddedEtcd `json:"embedded,omitempty"`
	// RouteSource says where other nodes' routes come from: "datastore"
	// (default; derived from IPAM blocks, for clusters without BGP such as
	// VXLAN-only ones) or "bgp" (an embedded BGP speaker, configured by the
	// BGPConfiguration and BGPPeer resources, as Calico's BIRD).
	RouteSource string `json:"routeSource,omitempty"`
	// BGPMaxPrefixes is the prefix limit of BGP peers that set none
	// (default 20000).
	BGPMaxPrefixes uint32 `json:"bgpMaxPrefixes,omitempty"`
}

// Kubernetes says how to reach the Kubernetes API.
type Kubernetes struct {
	// Kubeconfig is a kubeconfig file; empty: the in-cluster
	// configuration of a pod (its service account's token, and the API
	// server's address from KUBERNETES_SERVICE_HOST), as calico-node uses.
	Kubeconfig string `json:"kubeconfig,omitempty"`
	// ServiceClusterIPRanges are the cluster's Service ranges
	// (kube-apiserver's --service-cluster-ip-range). A pod's packets to
	// them are judged by egress policy after kube-proxy has translated
	// them, on the backend's address, as Calico judges them; without them,
	// egress rules see the cluster IP. IPv6 ranges are accepted and not
	// used yet.
	ServiceClusterIPRanges []string `json:"serviceClusterIPRanges,omitempty"`
}

// Datastore types.
const (
	DatastoreEtcd       = "etcdv3"
	DatastoreKubernetes = "kubernetes"
)

// Route sources.
const (
	RouteSourceDatastore = "datastore"
	RouteSourceBGP       = "bgp"
)

// EmbeddedEtcd configures the in-process etcd member.
type EmbeddedEtcd struct {
	DataDir string `json:"dataDir"`
	// ClientURL and PeerURL are where the member serves clients and
	// peers; https URLs need certFile, keyFile and trustedCAFile, and then
	// every client and peer must present a certificate of that CA.
	ClientURL string `json:"clientURL"`
	PeerURL   string `json:"peerURL"`
	// CertFile and KeyFile are the member's certificate (with the URLs'
	// addresses among its names, and the server and client extended key
	// usages) and key; TrustedCAFile is the CA clients' and peers'
	// certificates must be signed by (etcd's --cert-file, --key-file and
	// --trusted-ca-file, with --client-cert-auth).
	CertFile      string `json:"certFile,omitempty"`
	KeyFile       string `json:"keyFile,omitempty"`
	TrustedCAFile string `json:"trustedCAFile,omitempty"`
	// AutoCompactionMode is "periodic" (default) or "revision", and
	// AutoCompactionRetention the history kept: a duration such as "1h"
	// (the default) in periodic mode, a number of revisions in revision
	// mode; "0" keeps every revision (the database then grows forever).
	AutoCompactionMode      string `json:"autoCompactionMode,omitempty"`
	AutoCompactionRetention string `json:"autoCompactionRetention,omitempty"`
	// DefragInterval is how often the member defragments its database
	// when compaction has left at least half of it free (default "1h";
	// "0": never).
	DefragInterval string `json:"defragInterval,omitempty"`
	// QuotaBackendBytes is the size at which etcd refuses writes
	// (default 0: etcd's 2 GiB).
	QuotaBackendBytes int64 `json:"quotaBackendBytes,omitempty"`
}

// Node is another node of the cluster.
type Node struct {
	Name          string `json:"name"`
	Address       string `json:"address"`
	PodCIDR       string `json:"podCIDR"`
	TunnelAddress string `json:"tunnelAddress,omitempty"`
}

// Config is a validated File.
type Config struct {
	File
	Addr       netip.Prefix
	Mode       fib.Mode
	PodCIDR    netip.Prefix
	Cluster    []netip.Prefix
	TunnelAddr netip.Addr
	VTEPMAC    header.MAC
	Peers      []Peer
	Warnings   []string
	// Pin is the parsed CPUSet, nil when tortied is not pinned.
	Pin *cpuset.Set
	// DefragInterval is the embedded member's parsed defragInterval:
	// 0 for the default, negative for never.
	DefragInterval time.Duration
	// ServiceNets are kubernetes.serviceClusterIPRanges' IPv4 ranges.
	ServiceNets []netip.Prefix
	// BusyPoll is the parsed busyPoll (0: the loops do not spin).
	BusyPoll time.Duration
}

// Peer is a validated Node with the mode chosen for it.
type Peer struct {
	Name       string
	Addr       netip.Addr
	PodCIDR    netip.Prefix
	TunnelAddr netip.Addr
	Mode       fib.Mode
	VTEPMAC    header.MAC
}

// Load reads and validates a file. ${VAR} and $VAR in it are replaced by
// the environment's values first, so that one file serves every node of a
// DaemonSet (nodeName: ${NODENAME}, from the downward API, as calico-node
// takes its node name); "$$" stands for a literal "$".
func Load(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return Parse([]byte(ExpandEnv(string(b), os.Getenv)))
}

// ExpandEnv replaces ${VAR} and $VAR in s by get(VAR), and "$$" by "$".
func ExpandEnv(s string, get func(string) string) string {
	return os.Expand(s, func(v string) string {
		if v == "$" {
			return "$"
		}
		return get(v)
	})
}

// Parse validates YAML or JSON bytes.
func Parse(b []byte) (*Config, error) {
	var f File
	if err := yaml.UnmarshalStrict(b, &f); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return f.Validate()
}

// Validate checks every field and derives the typed settings.
func (f File) Validate() (*Config, error) {
	c := &Config{File: f}
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf("config: "+format, a...)) }
	if c.NodeName == "" {
		bad("nodeName is required")
	}
	if c.Interface == "" {
		c.Interface = "eth0"
	}
	if c.HostInterface == "" {
		c.HostInterface = "tortie0"
	}
	if c.Socket == "" {
		c.Socket = "/run/tortie/tortied.sock"
	}
	var err error
	if c.Addr, err = netip.ParsePrefix(f.Address); err != nil || !c.Addr.Addr().Is4() {
		bad("address %q: want an IPv4 address with its prefix length, e.g. 10.0.1.1/24", f.Address)
	}
	if c.StateDir == "" {
		c.StateDir = "/var/lib/tortie"
	}
	if c.CPUs < 0 {
		bad("cpus %d: want 0 (every CPU) or more", c.CPUs)
	}
	if c.PodQueues < 0 || c.PodQueues > MaxPodQueues {
		bad("podQueues %d: want 0 (one) to %d", c.PodQueues, MaxPodQueues)
	}
	if c.RealtimePriority < 0 || c.RealtimePriority > MaxRealtimePriority {
		bad("realtimePriority %d: want 0 (the normal scheduler) or 1 to %d (SCHED_FIFO)", c.RealtimePriority, MaxRealtimePriority)
	}
	if f.CPUSet != "" {
		if set, err := cpuset.Parse(f.CPUSet); err != nil {
			bad("cpuSet: %v", err)
		} else {
			c.Pin = &set
		}
	}
	if c.RealtimePriority > 0 && c.Pin != nil && c.Threads() > c.Pin.Count() {
		// Real-time threads of one priority never preempt each other: a
		// runtime thread waiting for a CPU that another spins on would
		// wait for good.
		bad("realtimePriority: cpus %d is more than the %d CPUs of cpuSet %s; real-time threads need a CPU each", c.Threads(), c.Pin.Count(), c.Pin)
	}
	if f.BusyPoll != "" {
		switch d, err := time.ParseDuration(f.BusyPoll); {
		case err != nil || d < 0 || d > 0 && d < time.Microsecond || d > MaxBusyPoll:
			bad("busyPoll %q: want 0 or a duration from 1us to %v, such as 50us", f.BusyPoll, MaxBusyPoll)
		case d > 0 && !f.Loops():
			bad("busyPoll: only input loops spin; it needs inputLoops")
		case d > 0 && c.RealtimePriority > 0:
			bad("busyPoll with realtimePriority: a real-time loop spinning for a reply would keep the pod that sends it off its CPU")
		default:
			c.BusyPoll = d
			if n := c.RunThreads(); d > 0 && n > 1 {
				// Not refused: a node with CPUs to spare may want it.
				threads := fmt.Sprintf("%d threads", n)
				if c.Threads() == 0 {
					threads = fmt.Sprintf("a thread per CPU (cpus unset: %d)", n)
				}
				c.Warnings = append(c.Warnings, fmt.Sprintf("busyPoll with %s: each thread's input loop spins after its own bursts, "+
					"and on a 2-CPU machine two spinning loops per tortied made latency worse than none (see the README's \"Busy polling\"); "+
					"cpus: 1 keeps one loop", threads))
			}
		}
	}
	c.VTEPMAC = calico.VTEPMAC(c.NodeName)
	if c.Mode, err = fib.ParseMode(f.Encapsulation); err != nil {
		bad("%v", err)
	}
	if k := f.Kubernetes; k != nil {
		if f.Datastore == nil {
			bad("kubernetes: network policy needs a datastore (set datastore too)")
		}
		for _, r := range k.ServiceClusterIPRanges {
			p, err := netip.ParsePrefix(r)
			switch {
			case err != nil:
				bad("kubernetes.serviceClusterIPRanges: %q is not a CIDR", r)
			case p.Addr().Is4():
				c.ServiceNets = append(c.ServiceNets, p.Masked())
			default:
				c.Warnings = append(c.Warnings, fmt.Sprintf("kubernetes.serviceClusterIPRanges: %s is IPv6, which tortie does not carry yet; ignored", r))
			}
		}
	}
	if d := f.Datastore; d != nil {
		switch d.Type {
		case "", DatastoreEtcd:
			c.Datastore.Type = DatastoreEtcd
			if d.Kubeconfig != "" {
				bad("datastore.kubeconfig is for type kubernetes (type is %s)", DatastoreEtcd)
			}
			if len(d.EtcdEndpoints) == 0 && d.Embedded == nil {
				bad("datastore: set etcdEndpoints, embedded, or both")
			}
			if e := d.Embedded; e != nil {
				if e.DataDir == "" || e.ClientURL == "" || e.PeerURL == "" {
					bad("datastore.embedded: dataDir, clientURL and peerURL are required")
				}
				c.DefragInterval = validateEmbedded(e, d, bad)
			}
			validateClientTLS(d, bad)
		case DatastoreKubernetes:
			if etcd := etcdSettings(d); len(etcd) > 0 {
				bad("datastore: type kubernetes keeps cluster state in the Kubernetes API, not etcd: remove %s", strings.Join(etcd, ", "))
			}
			if d.Kubeconfig == "" && f.Kubernetes != nil {
				c.Datastore.Kubeconfig = f.Kubernetes.Kubeconfig
			}
		default:
			bad("datastore.type %q: want %s or %s", d.Type, DatastoreEtcd, DatastoreKubernetes)
		}
		if f.PodCIDR != "" || len(f.Nodes) > 0 {
			bad("podCIDR and nodes are static settings: with a datastore, IP pools and IPAM provide them")
		}
		switch d.RouteSource {
		case "":
			c.Datastore.RouteSource = RouteSourceDatastore
		case RouteSourceDatastore, RouteSourceBGP:
		default:
			bad("datastore.routeSource %q: want datastore or bgp", d.RouteSource)
		}
		if err := errors.Join(errs...); err != nil {
			return nil, err
		}
		return c, nil
	}
	if c.PodCIDR, err = netip.ParsePrefix(f.PodCIDR); err != nil || !c.PodCIDR.Addr().Is4() {
		bad("podCIDR %q: want an IPv4 prefix", f.PodCIDR)
	}
	for _, s := range f.ClusterCIDRs {
		p, err := netip.ParsePrefix(s)
		if err != nil || !p.Addr().Is4() {
			bad("clusterCIDRs: %q is not an IPv4 prefix", s)
			continue
		}
		c.Cluster = append(c.Cluster, p.Masked())
	}
	if len(c.Cluster) == 0 && c.PodCIDR.IsValid() {
		c.Cluster = []netip.Prefix{c.PodCIDR.Masked()}
	}
	if f.TunnelAddress != "" {
		if c.TunnelAddr, err = netip.ParseAddr(f.TunnelAddress); err != nil || !c.TunnelAddr.Is4() {
			bad("tunnelAddress %q is not an IPv4 address", f.TunnelAddress)
		}
	}
	if f.UnderlayMTU != 0 && (f.UnderlayMTU < 576 || f.UnderlayMTU > 65535) {
		bad("underlayMTU %d out of range 576-65535", f.UnderlayMTU)
	}
	if c.CrossSubnet {
		if w := calico.CrossSubnetWarning(c.Addr); w != "" {
			c.Warnings = append(c.Warnings, w)
		}
	}
	for i, n := range f.Nodes {
		p := Peer{Name: n.Name, VTEPMAC: calico.VTEPMAC(n.Name)}
		if n.Name == "" || n.Name == c.NodeName {
			bad("nodes[%d]: name %q must be set and differ from nodeName", i, n.Name)
		}
		if p.Addr, err = netip.ParseAddr(n.Address); err != nil || !p.Addr.Is4() {
			bad("nodes[%d] (%s): address %q is not an IPv4 address", i, n.Name, n.Address)
		}
		if p.PodCIDR, err = netip.ParsePrefix(n.PodCIDR); err != nil || !p.PodCIDR.Addr().Is4() {
			bad("nodes[%d] (%s): podCIDR %q is not an IPv4 prefix", i, n.Name, n.PodCIDR)
		}
		if n.TunnelAddress != "" {
			if p.TunnelAddr, err = netip.ParseAddr(n.TunnelAddress); err != nil {
				bad("nodes[%d] (%s): tunnelAddress %q", i, n.Name, n.TunnelAddress)
			}
		}
		p.Mode = calico.ModeFor(c.Mode, c.CrossSubnet, c.Addr, p.Addr)
		c.Peers = append(c.Peers, p)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return c, nil
}

// etcdSettings names the etcd settings d has, which a Kubernetes
// datastore must not: a node given both would leave an operator unsure
// which one holds the cluster's state.
func etcdSettings(d *Datastore) []string {
	var set []string
	for _, s := range []struct {
		name string
		on   bool
	}{
		{"etcdEndpoints", len(d.EtcdEndpoints) > 0}, {"embedded", d.Embedded != nil},
		{"etcdCACertFile", d.EtcdCACertFile != ""}, {"etcdCertFile", d.EtcdCertFile != ""}, {"etcdKeyFile", d.EtcdKeyFile != ""},
	} {
		if s.on {
			set = append(set, s.name)
		}
	}
	return set
}

// validateEmbedded checks the embedded member's TLS and housekeeping and
// returns its parsed defragmentation interval.
func validateEmbedded(e *EmbeddedEtcd, d *Datastore, bad func(string, ...any)) time.Duration {
	tlsURLs := 0
	for _, u := range []string{e.ClientURL, e.PeerURL} {
		switch {
		case strings.HasPrefix(u, "https://"):
			tlsURLs++
		case u != "" && !strings.HasPrefix(u, "http://"):
			bad("datastore.embedded: URL %q: want http:// or https://", u)
		}
	}
	files := e.CertFile != "" || e.KeyFile != "" || e.TrustedCAFile != ""
	switch {
	case tlsURLs > 0 && (e.CertFile == "" || e.KeyFile == "" || e.TrustedCAFile == ""):
		bad("datastore.embedded: https URLs need certFile, keyFile and trustedCAFile (clients and peers must present a certificate of that CA)")
	case tlsURLs == 0 && files:
		bad("datastore.embedded: certFile, keyFile and trustedCAFile need https clientURL and peerURL")
	case tlsURLs == 1:
		bad("datastore.embedded: clientURL and peerURL must both be http or both https")
	}
	if strings.HasPrefix(e.ClientURL, "https://") && (d.EtcdCertFile == "" || d.EtcdKeyFile == "") {
		bad("datastore: the embedded member requires client certificates: set etcdCertFile and etcdKeyFile (and etcdCACertFile)")
	}
	switch e.AutoCompactionMode {
	case "", "periodic":
		if r := e.AutoCompactionRetention; r != "" {
			if _, err := strconv.Atoi(r); err != nil {
				if d, err := time.ParseDuration(r); err != nil || d < 0 {
					bad("datastore.embedded.autoCompactionRetention %q: want a duration such as 1h (periodic mode)", r)
				}
			}
		}
	case "revision":
		if n, err := strconv.ParseInt(e.AutoCompactionRetention, 10, 64); err != nil || n < 0 {
			bad("datastore.embedded.autoCompactionRetention %q: want a number of revisions (revision mode)", e.AutoCompactionRetention)
		}
	default:
		bad("datastore.embedded.autoCompactionMode %q: want periodic or revision", e.AutoCompactionMode)
	}
	if e.QuotaBackendBytes < 0 {
		bad("datastore.embedded.quotaBackendBytes %d: want 0 (etcd's default) or more", e.QuotaBackendBytes)
	}
	switch e.DefragInterval {
	case "":
		return 0
	case "0":
		return -1
	}
	iv, err := time.ParseDuration(e.DefragInterval)
	if err != nil || iv <= 0 {
		bad("datastore.embedded.defragInterval %q: want a duration such as 1h, or 0 for never", e.DefragInterval)
	}
	return iv
}

// validateClientTLS checks the node's etcd client files against the
// endpoints it will use.
func validateClientTLS(d *Datastore, bad func(string, ...any)) {
	if (d.EtcdCertFile == "") != (d.EtcdKeyFile == "") {
		bad("datastore: set both etcdCertFile and etcdKeyFile, or neither")
	}
	endpoints := d.EtcdEndpoints
	if len(endpoints) == 0 && d.Embedded != nil {
		endpoints = []string{d.Embedded.ClientURL}
	}
	var https, plain int
	for _, ep := range endpoints {
		if strings.HasPrefix(ep, "https://") {
			https++
		} else {
			plain++
		}
	}
	if https > 0 && plain > 0 {
		bad("datastore.etcdEndpoints: all https or none")
	}
	if https == 0 && (d.EtcdCACertFile != "" || d.EtcdCertFile != "" || d.EtcdKeyFile != "") {
		bad("datastore: etcdCACertFile, etcdCertFile and etcdKeyFile need https etcd endpoints")
	}
}

// Routes returns the FIB routes the file implies: the default to the host
// and, without a datastore, our block blackholed, our tunnel address to the
// host, and each peer's block (and tunnel address) via that peer.
func (c *Config) Routes() []fib.Route {
	def := fib.Route{Prefix: netip.MustParsePrefix("0.0.0.0/0"), NextHop: fib.NextHop{Kind: fib.KindHost}, Source: fib.SourceHost}
	if c.Datastore != nil {
		return []fib.Route{def} // blocks, tunnel addresses and peers come from the datastore
	}
	rs := []fib.Route{def, {Prefix: c.PodCIDR.Masked(), NextHop: fib.NextHop{Kind: fib.KindBlackhole}, Source: fib.SourceHost}}
	if c.TunnelAddr.IsValid() {
		rs = append(rs, fib.Route{Prefix: netip.PrefixFrom(c.TunnelAddr, 32), NextHop: fib.NextHop{Kind: fib.KindHost}, Source: fib.SourceHost})
	}
	for _, p := range c.Peers {
		nh := fib.NextHop{Kind: fib.KindRemote, Node: p.Addr.As4(), Mode: p.Mode, VTEPMAC: p.VTEPMAC, NodeName: p.Name}
		rs = append(rs, fib.Route{Prefix: p.PodCIDR.Masked(), NextHop: nh, Source: fib.SourceStatic})
		if p.TunnelAddr.IsValid() && !p.PodCIDR.Contains(p.TunnelAddr) {
			rs = append(rs, fib.Route{Prefix: netip.PrefixFrom(p.TunnelAddr, 32), NextHop: nh, Source: fib.SourceStatic})
		}
	}
	return rs
}

// PodMTU is the MTU pods get on an underlay of underlayMTU.
func (c *Config) PodMTU(underlayMTU int) int {
	return calico.PodMTU(underlayMTU, c.Mode)
}
