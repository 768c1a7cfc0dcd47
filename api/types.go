package api

import (
	"net/netip"
	"time"
)

// Error is the body of every failed request. Code is a CNI error code when
// the request was a CNI command.
type Error struct {
	Error string `json:"error"`
	Code  uint   `json:"code,omitempty"`
}

// Route is a FIB route as the API shows it.
type Route struct {
	Prefix   string `json:"prefix"`
	Kind     string `json:"kind"`
	Source   string `json:"source"`
	Mode     string `json:"mode,omitempty"`
	Node     string `json:"node,omitempty"`
	NodeName string `json:"nodeName,omitempty"`
	Port     string `json:"port,omitempty"`
}

// Status summarises the node.
type Status struct {
	Node        string `json:"node"`
	Address     string `json:"address"`
	Mode        string `json:"mode"`
	CrossSubnet bool   `json:"crossSubnet"`
	PodMTU      int    `json:"podMTU"`
	PathMTU     int    `json:"pathMTU"`
	FIBRoutes   int    `json:"fibRoutes"`
	Endpoints   int    `json:"endpoints"`
	VTEPMAC     string `json:"vtepMAC"`
	Ready       bool   `json:"ready"`
	// TunnelGSO says whether pods' TCP superframes to VXLAN nodes leave
	// whole for the kernel to cut, and if not why ("" without VXLAN).
	TunnelGSO string `json:"tunnelGSO,omitempty"`
}

// EndpointSpec asks for a pod endpoint: a TAP named IfName in the pod's
// network namespace, routed for Address. It is also the record the daemon
// keeps in its state file.
type EndpointSpec struct {
	Name       string     `json:"name"`
	Netns      string     `json:"netns"`
	Address    netip.Addr `json:"address"`
	IfName     string     `json:"ifName,omitempty"` // default eth0
	MTU        int        `json:"mtu,omitempty"`    // default: the node's pod MTU
	AllowSpoof bool       `json:"allowSpoof,omitempty"`
	// What the CNI plugin knows about the attachment.
	ContainerID  string `json:"containerID,omitempty"`
	Network      string `json:"network,omitempty"`
	Handle       string `json:"handle,omitempty"`
	PodNamespace string `json:"podNamespace,omitempty"`
	PodName      string `json:"podName,omitempty"`
}

// Key identifies the endpoint on its node: its name, qualified by the pod's
// namespace when it has one ("namespace/name"). A Kubernetes pod's endpoint
// is named as Calico names its WorkloadEndpoint, and those names are unique
// only within a namespace: two pods of one name in two namespaces on the
// same node have endpoints of the same Name.
func (s EndpointSpec) Key() string {
	if s.PodNamespace == "" {
		return s.Name
	}
	return s.PodNamespace + "/" + s.Name
}

// EndpointInfo describes an attached endpoint.
type EndpointInfo struct {
	EndpointSpec
	MAC  string `json:"mac"`
	MTU  int    `json:"mtu"`
	Port uint32 `json:"port"`
	// Queues is how many queues the pod's TAP has, each read on its own
	// (a persistent TAP keeps the count it was made with; see podQueues).
	Queues int `json:"queues"`
}

// PortStats are one port's packet and byte counters.
type PortStats struct {
	Name                                   string
	RxPackets, RxBytes, TxPackets, TxBytes uint64
}

// OffloadStats say how much segmentation and coalescing the router did.
type OffloadStats struct {
	TSOFrames, TSOSegments, GROFrames, GROSegments uint64
	// GROBadChecksums counts segments from other nodes or the host whose
	// TCP checksum was wrong: never joined into a superframe (which the
	// pod would not verify), written alone for the pod to drop.
	GROBadChecksums uint64
	// WholeToHost counts superframes from pods passed to the host whole,
	// behind a virtio-net header for the kernel to segment: natively
	// routed ones, and ones for the node itself (not in TSOFrames).
	// WholeToPods counts superframes written to pods whole, without
	// being cut and coalesced again: the host's (natively routed traffic
	// the underlay coalesced, the node's own), other local pods', and
	// IPIP the underlay coalesced.
	WholeToHost, WholeToPods uint64
	// WholeToTunnel counts pods' superframes to VXLAN nodes handed to
	// the node's kernel whole, for it (or the underlay's NIC) to cut
	// into datagrams (UDP tunnel GSO; not in TSOFrames).
	WholeToTunnel uint64
	// FromUnderlay counts TCP superframes that came through the underlay
	// whole: IPIP that the underlay's kernel coalesced (GRO on the NIC),
	// and VXLAN from a sender that segments late (UDP tunnel GSO) over a
	// wire that carried it whole; each is then written to its pod whole
	// (and counted in WholeToPods) or cut (in TSOFrames).
	FromUnderlay uint64
}

// FlowStats are the flow table's counters: entries in use and the most it
// holds, flows added, evicted before expiring, refused (their bucket held
// only established flows) and expired slots reused, and the replies sent
// back through the host (flows the node translated).
type FlowStats struct {
	Entries, Capacity                     int
	Inserts, Evictions, Refusals, Expired uint64
	RepliesViaHost                        uint64
}

// PolicyStats are network policy's counters in the router: the generation
// of the policy state in force (0: none installed), how many local
// endpoints some policy or profile decides for, packets denied per
// endpoint and per deciding policy (both summed over every policy state
// installed so far), and Log rule records written and dropped (over the
// rate, or the queue full).
type PolicyStats struct {
	Generation          uint64
	Subject             int
	DeniedByEndpoint    []EndpointDenied
	DeniedByPolicy      []PolicyDenied
	Logged, LogsDropped uint64
}

// EndpointDenied counts the packets policy denied crossing one local
// endpoint (its policy key).
type EndpointDenied struct {
	Endpoint string
	Packets  uint64
}

// PolicyDenied counts the packets one decider denied: a policy or profile
// rule, the end of a tier, or the end of the profiles (Decider says which,
// as the policy package spells it).
type PolicyDenied struct {
	Decider, Tier, Policy string
	Packets               uint64
}

// Counters is a snapshot of the router's counters: drops by reason, ports,
// the host, input loops, offload work, the flow table, network policy, the
// FIB's size and the path MTU.
type Counters struct {
	Offload OffloadStats
	Flows   FlowStats
	Policy  PolicyStats
	Drops   map[string]uint64
	Ports   []PortStats
	Host    PortStats
	// Loops are the input loops' counters, one per loop (none with
	// inputLoops: false).
	Loops   []LoopStats
	FIBSize int
	PathMTU int
}

// LoopStats count one input loop's work. A loop wakes (Wakeups) when one of
// its inputs turns readable while it waits (now and then a wake-up finds
// nothing), and then takes turns (Turns) until its inputs are read dry:
// each turn reads one batch from each input the loop found ready (Reads
// counts them, a read that found the input empty included). A turn after
// which an input's batch came back full (FullTurns) is followed at once by
// another: a loop whose turns are mostly full is busy all the time, and a
// packet arriving on it waits for one batch of each busy input. A loop
// that busy-polls (busyPoll) asks its inputs for a while after they ran
// dry before it waits: BusyPolls counts the times that found one ready,
// so the loop took another turn without being woken.
type LoopStats struct {
	Inputs                                      int
	Wakeups, Turns, Reads, FullTurns, BusyPolls uint64
}

// PeerStatus is one BGP session as `tortiectl node status` shows it.
type PeerStatus struct {
	Address  string    `json:"peerAddress"`
	Type     string    `json:"peerType"`
	Name     string    `json:"name,omitempty"`
	ASN      uint32    `json:"asNumber"`
	State    string    `json:"state"` // up, start, down (as BIRD says)
	Since    time.Time `json:"since,omitzero"`
	Info     string    `json:"info"`
	Received uint64    `json:"prefixesReceived"`
	Accepted uint64    `json:"prefixesAccepted"`
	RRClient bool      `json:"routeReflectorClient,omitempty"`
}

// BGPCounters count the speaker's work between its best-path events and
// the FIB.
type BGPCounters struct {
	BestPathEvents uint64 `json:"bestPathEvents"`
	Drains         uint64 `json:"drains"`
	Installed      uint64 `json:"installed"`
	Unresolved     uint64 `json:"unresolved"`
	OverLimit      uint64 `json:"overLimit"`
	StaleSwept     uint64 `json:"staleSwept"`
}

// BGPStatus is what `tortiectl node status` shows.
type BGPStatus struct {
	Running    bool         `json:"running"`
	ASN        uint32       `json:"asNumber,omitempty"`
	RouterID   string       `json:"routerID,omitempty"`
	ClusterID  string       `json:"routeReflectorClusterID,omitempty"`
	Restarting bool         `json:"restarting,omitempty"`
	Peers      []PeerStatus `json:"peers"`
	Advertised []string     `json:"advertised"`
	Counters   BGPCounters  `json:"counters"`
}

// IPAMAlloc is one address of an IPAM block.
type IPAMAlloc struct {
	Handle   string `json:"handle,omitempty"`
	Node     string `json:"node,omitempty"`     // the node the address serves
	Released int64  `json:"released,omitempty"` // unix ms of the last release
}

// IPAMBlock is an IPAM block as stored (Calico's shape).
type IPAMBlock struct {
	CIDR     string      `json:"cidr"`
	Affinity string      `json:"affinity,omitempty"` // "host:<node>"
	Allocs   []IPAMAlloc `json:"allocations"`
}

// IPAMHandle indexes the addresses of one owner (a pod, a tunnel).
type IPAMHandle struct {
	ID    string            `json:"id"`
	Node  string            `json:"node"`
	IPs   []string          `json:"ips"`
	Attrs map[string]string `json:"attrs,omitempty"`
}

// ApplyResult is what POST /v1/apply?warnings=1 returns: how many
// resources were applied, and one line for each field they set that
// tortie keeps but does not act on yet ("accepted; tortie does not act on
// FelixConfiguration.spec.bpfEnabled yet"). Without ?warnings=1 the reply
// is {"applied": N} alone, what clients written before warnings existed
// decode.
type ApplyResult struct {
	Applied  int      `json:"applied"`
	Warnings []string `json:"warnings,omitempty"`
}

// IPAMView is what GET /v1/ipam returns.
type IPAMView struct {
	Blocks  []IPAMBlock  `json:"blocks"`
	Handles []IPAMHandle `json:"handles"`
}

// InvalidRecord is a datastore record tortied skips because it does not
// decode or validate.
type InvalidRecord struct {
	Key      string `json:"key"`
	Kind     string `json:"kind"`
	Error    string `json:"error"`
	Revision int64  `json:"revision"`
}

// TraceRequest asks tortied what it would do with a packet, without
// sending one. From and To name a pod (its endpoint's key,
// "namespace/name", or its endpoint name when that is unique) or give an
// IPv4 address.
type TraceRequest struct {
	From    string `json:"from"`
	To      string `json:"to"`
	Proto   string `json:"proto"`             // tcp, udp or icmp
	Port    uint16 `json:"port,omitempty"`    // destination port (tcp, udp)
	SrcPort uint16 `json:"srcPort,omitempty"` // source port (tcp, udp); default 40000
	// ICMPType and ICMPCode (icmp); the type defaults to echo request.
	ICMPType *uint8 `json:"icmpType,omitempty"`
	ICMPCode uint8  `json:"icmpCode,omitempty"`
}

// TraceEnd is one end of a traced packet.
type TraceEnd struct {
	Address  string `json:"address"`
	Endpoint string `json:"endpoint,omitempty"` // the local pod's endpoint key
	Node     bool   `json:"node,omitempty"`     // one of the node's own addresses
}

// Trace is what tortied would do with a packet and why.
type Trace struct {
	From     TraceEnd `json:"from"`
	To       TraceEnd `json:"to"`
	Proto    string   `json:"proto"`
	SrcPort  uint16   `json:"srcPort,omitempty"`
	DstPort  uint16   `json:"dstPort,omitempty"`
	ICMPType uint8    `json:"icmpType,omitempty"`
	ICMPCode uint8    `json:"icmpCode,omitempty"`
	// Route is the FIB's longest match for the destination (nil: none).
	Route *Route `json:"route,omitempty"`
	// Verdict is "forward" or "drop"; Reason says why.
	Verdict string `json:"verdict"`
	Reason  string `json:"reason"`
	// Egress and Ingress are policy at the source and at the destination.
	Egress  TracePolicy `json:"egress"`
	Ingress TracePolicy `json:"ingress"`
}

// TracePolicy is network policy's decision on one side of a trace.
type TracePolicy struct {
	Endpoint string `json:"endpoint,omitempty"`
	// Evaluated says policy decided here; when false, Note says why not
	// ("not subject", "not a local pod", ...).
	Evaluated bool        `json:"evaluated"`
	Note      string      `json:"note,omitempty"`
	Action    string      `json:"action,omitempty"`
	Decider   string      `json:"decider,omitempty"`
	Tier      string      `json:"tier,omitempty"`
	Policy    string      `json:"policy,omitempty"`
	Rule      int         `json:"rule"`
	Steps     []TraceStep `json:"steps,omitempty"`
}

// TraceStep is one rule, tier end or profile end evaluation considered.
type TraceStep struct {
	Tier    string `json:"tier,omitempty"`
	Policy  string `json:"policy,omitempty"`
	Rule    int    `json:"rule"` // -1: the end of a tier or of the profiles
	Action  string `json:"action,omitempty"`
	Matched bool   `json:"matched"`
	Note    string `json:"note,omitempty"`
}

// Flow is one entry of the flow table.
type Flow struct {
	Proto   string   `json:"proto"`
	Src     string   `json:"src"`
	Dst     string   `json:"dst"`
	SrcPort uint16   `json:"srcPort,omitempty"`
	DstPort uint16   `json:"dstPort,omitempty"`
	State   string   `json:"state"`
	Flags   []string `json:"flags"` // viaHost, policyAllowed, policyDenied
	// PolicyGen is the policy generation of the verdict (0: none).
	PolicyGen uint32 `json:"policyGen,omitempty"`
	// ExpiresIn is the time left before the flow expires.
	ExpiresIn time.Duration `json:"expiresIn"`
}

// Flows is a bounded copy of the flow table.
type Flows struct {
	Flows []Flow `json:"flows"`
	// More says live flows were left out for the limit.
	More     bool `json:"more"`
	Capacity int  `json:"capacity"`
}
