// Package resources defines tortie's cluster resources in Calico's shape
// (apiVersion, kind, metadata, spec), so operators can apply the IPPool and
// Node manifests they already have, validates them, and reads and writes
// them in the datastore. Manifests may say apiVersion projectcalico.org/v3,
// crd.projectcalico.org/v1 (Calico's CRDs) or tortie.io/v1; resources are
// stored and shown as projectcalico.org/v3, so what `get` prints applies
// back unchanged.
package resources

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sort"
	"strings"

	"github.com/tortie-net/tortie/datastore"
	"github.com/tortie-net/tortie/selector"
)

// APIVersion is tortie's own apiVersion, accepted on input;
// CalicoAPIVersion is what resources are stored and shown with.
const (
	APIVersion       = "tortie.io/v1"
	CalicoAPIVersion = "projectcalico.org/v3"
	Prefix           = "/tortie/v1/"
)

// Kinds tortie knows.
const (
	KindIPPool = "IPPool"
	KindNode   = "Node"
)

// Meta is the metadata every resource has.
type Meta struct {
	Name        string            `json:"name"`
	Labels      map[string]string `json:"labels,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

// Encapsulation modes of a pool, as Calico spells them.
const (
	ModeNever       = "Never"
	ModeAlways      = "Always"
	ModeCrossSubnet = "CrossSubnet"
)

// IPPool is a range pods get addresses from.
type IPPool struct {
	APIVersion string     `json:"apiVersion"`
	Kind       string     `json:"kind"`
	Metadata   Meta       `json:"metadata"`
	Spec       IPPoolSpec `json:"spec"`
}

// IPPoolSpec mirrors Calico's IPPool spec.
type IPPoolSpec struct {
	CIDR             netip.Prefix `json:"cidr"`
	BlockSize        int          `json:"blockSize,omitempty"`
	IPIPMode         string       `json:"ipipMode,omitempty"`
	VXLANMode        string       `json:"vxlanMode,omitempty"`
	NATOutgoing      bool         `json:"natOutgoing,omitempty"`
	Disabled         bool         `json:"disabled,omitempty"`
	DisableBGPExport bool         `json:"disableBGPExport,omitempty"`
	NodeSelector     string       `json:"nodeSelector,omitempty" check:"selector"`
	// NamespaceSelector picks the namespaces whose pods the pool serves in
	// Calico; tortie's IPAM is not told a pod's namespace labels.
	NamespaceSelector string `json:"namespaceSelector,omitempty" check:"selector" tortie:"stored"`
	// AllowedUses says what the pool's addresses are for: Workload (pods),
	// Tunnel (a node's tunnel address), LoadBalancer (Services; alone).
	// Default both Workload and Tunnel.
	AllowedUses []string `json:"allowedUses,omitempty" check:"oneof=Workload|Tunnel|LoadBalancer"`
	// AssignmentMode Manual keeps the pool out of automatic assignment: only
	// a request naming it gets addresses from it. Default Automatic.
	AssignmentMode string `json:"assignmentMode,omitempty" check:"oneof=Automatic|Manual"`
}

// Uses of a pool's addresses, and assignment modes, as Calico spells them.
const (
	UseWorkload     = "Workload"
	UseTunnel       = "Tunnel"
	UseLoadBalancer = "LoadBalancer"
	Automatic       = "Automatic"
	Manual          = "Manual"
)

// Allows reports whether the pool's addresses may be used for use
// (UseWorkload, UseTunnel): not given means both.
func (p *IPPool) Allows(use string) bool {
	return len(p.Spec.AllowedUses) == 0 && use != UseLoadBalancer || slices.Contains(p.Spec.AllowedUses, use)
}

// Manual reports whether the pool is used only when a request names it.
func (p *IPPool) Manual() bool { return p.Spec.AssignmentMode == Manual }

// notActedOnValues: IPv6 pools and LoadBalancer pools are kept, and
// never used by tortie's IPAM.
func (p *IPPool) notActedOnValues() []string {
	var out []string
	if p.Spec.CIDR.IsValid() && p.Spec.CIDR.Addr().Is6() {
		out = append(out, "spec.cidr IPv6")
	}
	if slices.Contains(p.Spec.AllowedUses, UseLoadBalancer) {
		out = append(out, "spec.allowedUses LoadBalancer")
	}
	return out
}

// Prefix returns the pool's CIDR (valid after Validate).
func (p *IPPool) Prefix() netip.Prefix { return p.Spec.CIDR }

// Selects reports whether the pool serves a node with these labels.
func (p *IPPool) Selects(labels map[string]string) bool {
	s, err := selector.Parse(p.Spec.NodeSelector)
	return err == nil && s.Matches(labels)
}

// Node is a cluster node.
type Node struct {
	APIVersion string   `json:"apiVersion"`
	Kind       string   `json:"kind"`
	Metadata   Meta     `json:"metadata"`
	Spec       NodeSpec `json:"spec"`
	// Status is what Calico's node agent reports (WireGuard keys, the
	// Kubernetes node's pod CIDRs); kept as given.
	Status NodeStatus `json:"status,omitzero" tortie:"stored"`
}

// NodeSpec mirrors Calico's Node spec. tortie registers its nodes itself
// (address, tunnel addresses, VTEP MAC); what an operator sets beside
// those survives re-registration.
type NodeSpec struct {
	BGP                  *NodeBGPSpec    `json:"bgp,omitempty"`
	IPv4VXLANTunnelAddr  netip.Addr      `json:"ipv4VXLANTunnelAddr,omitzero"`
	VXLANTunnelMACAddr   MAC             `json:"vxlanTunnelMACAddr,omitzero"`
	IPv6VXLANTunnelAddr  string          `json:"ipv6VXLANTunnelAddr,omitempty" check:"ipv6" tortie:"stored"`
	VXLANTunnelMACAddrV6 MAC             `json:"vxlanTunnelMACAddrV6,omitzero" tortie:"stored"`
	OrchRefs             []OrchRef       `json:"orchRefs,omitempty" tortie:"stored"`
	Wireguard            *NodeWireguard  `json:"wireguard,omitempty" tortie:"stored"`
	Addresses            []NodeAddress   `json:"addresses,omitempty" tortie:"stored"`
	Interfaces           []NodeInterface `json:"interfaces,omitempty" tortie:"stored"`
}

// OrchRef ties a node to its name in an orchestrator (k8s).
type OrchRef struct {
	NodeName     string `json:"nodeName,omitempty"`
	Orchestrator string `json:"orchestrator"`
}

// NodeWireguard holds the addresses of a node's WireGuard interfaces.
type NodeWireguard struct {
	InterfaceIPv4Address string `json:"interfaceIPv4Address,omitempty" check:"ipv4"`
	InterfaceIPv6Address string `json:"interfaceIPv6Address,omitempty" check:"ipv6"`
}

// NodeAddress is an address a node is reached at, with its kind.
type NodeAddress struct {
	Address string `json:"address" check:"required,cidr"`
	Type    string `json:"type,omitempty" check:"oneof=CalicoNodeIP|InternalIP|ExternalIP"`
}

// NodeInterface is one of a node's interfaces and its addresses.
type NodeInterface struct {
	Name      string   `json:"name,omitempty"`
	Addresses []string `json:"addresses,omitempty" check:"cidr"`
}

// NodeStatus is the status Calico's node agent writes.
type NodeStatus struct {
	WireguardPublicKey   string   `json:"wireguardPublicKey,omitempty" check:"wireguardKey"`
	WireguardPublicKeyV6 string   `json:"wireguardPublicKeyV6,omitempty" check:"wireguardKey"`
	PodCIDRs             []string `json:"podCIDRs,omitempty" check:"cidr"`
}

// NodeBGPSpec holds the node's underlay address (with its subnet: the
// CrossSubnet rule uses it) and BGP settings. The addresses are written as
// text, as in Calico ("10.0.1.1/24").
type NodeBGPSpec struct {
	IPv4Address             netip.Prefix `json:"ipv4Address,omitzero"`
	IPv6Address             string       `json:"ipv6Address,omitempty" check:"cidrv6" tortie:"stored"`
	IPv4IPIPTunnelAddr      netip.Addr   `json:"ipv4IPIPTunnelAddr,omitzero"`
	ASNumber                ASNumber     `json:"asNumber,omitempty"`
	RouteReflectorClusterID netip.Addr   `json:"routeReflectorClusterID,omitzero"`
}

// MAC is a hardware address written as text ("66:f9:37:c3:7e:94"); the
// zero MAC is written as nothing.
type MAC [6]byte

// String formats the address as six colon-separated hex bytes.
func (m MAC) String() string {
	return fmt.Sprintf("%02x:%02x:%02x:%02x:%02x:%02x", m[0], m[1], m[2], m[3], m[4], m[5])
}

// MarshalText writes the address, or nothing for the zero MAC.
func (m MAC) MarshalText() ([]byte, error) {
	if m == (MAC{}) {
		return []byte{}, nil
	}
	return []byte(m.String()), nil
}

// UnmarshalText reads six colon-separated hex bytes ("" is the zero MAC).
func (m *MAC) UnmarshalText(b []byte) error {
	if len(b) == 0 {
		*m = MAC{}
		return nil
	}
	hw, err := net.ParseMAC(string(b))
	if err != nil || len(hw) != 6 {
		return fmt.Errorf("%q is not a MAC address such as 66:f9:37:c3:7e:94", b)
	}
	copy(m[:], hw)
	return nil
}

// Address returns the node's underlay address with its prefix length.
func (n *Node) Address() (netip.Prefix, error) {
	if n.Spec.BGP == nil || !n.Spec.BGP.IPv4Address.IsValid() {
		return netip.Prefix{}, fmt.Errorf("node %s has no spec.bgp.ipv4Address", n.Metadata.Name)
	}
	return n.Spec.BGP.IPv4Address, nil
}

func checkMode(field, m string) error {
	switch m {
	case "", ModeNever, ModeAlways, ModeCrossSubnet:
		return nil
	}
	return fmt.Errorf("%s %q: want Never, Always or CrossSubnet", field, m)
}

// Validate checks a pool on its own and fills defaults (blockSize 26 for
// IPv4 and 122 for IPv6, modes Never, allowedUses Workload and Tunnel,
// assignmentMode Automatic), as Calico does.
func (p *IPPool) Validate() error {
	var errs []error
	bad := func(f string, a ...any) { errs = append(errs, fmt.Errorf(f, a...)) }
	if err := checkResourceName(p.Metadata.Name); err != nil {
		bad("%v", err)
	}
	pfx := p.Spec.CIDR
	v6 := pfx.IsValid() && pfx.Addr().Is6()
	switch {
	case !pfx.IsValid():
		bad("spec.cidr is required (an IPv4 CIDR such as 10.244.0.0/16)")
	case pfx.Addr().Is4In6() || pfx.Addr().Zone() != "":
		bad("spec.cidr %s is not an IPv4 or IPv6 CIDR", pfx)
	case pfx.Masked() != pfx:
		bad("spec.cidr %s is not strictly masked: it has host bits set (did you mean %s?)", pfx, pfx.Masked())
	default:
		if err := checkPoolRange(pfx); err != nil {
			bad("%v", err)
		}
	}
	if p.Spec.BlockSize == 0 {
		p.Spec.BlockSize = 26
		if v6 {
			p.Spec.BlockSize = 122
		}
	}
	switch {
	case !v6 && (p.Spec.BlockSize < 20 || p.Spec.BlockSize > 32):
		bad("spec.blockSize %d out of range 20-32 (IPv4 block size must be between 20 and 32)", p.Spec.BlockSize)
	case v6 && (p.Spec.BlockSize < 116 || p.Spec.BlockSize > 128):
		bad("spec.blockSize %d out of range 116-128 (IPv6 block size must be between 116 and 128)", p.Spec.BlockSize)
	case pfx.IsValid() && p.Spec.BlockSize < pfx.Bits() && !p.Spec.Disabled:
		// As in Calico, a disabled pool may be smaller than a block: no
		// block is ever taken from it.
		bad("spec.blockSize %d is larger than the pool %s: the pool must be at least one block", p.Spec.BlockSize, pfx)
	}
	if p.Spec.IPIPMode == "" {
		p.Spec.IPIPMode = ModeNever
	}
	if p.Spec.VXLANMode == "" {
		p.Spec.VXLANMode = ModeNever
	}
	for f, m := range map[string]string{"spec.ipipMode": p.Spec.IPIPMode, "spec.vxlanMode": p.Spec.VXLANMode} {
		if err := checkMode(f, m); err != nil {
			bad("%v", err)
		}
	}
	if p.Spec.IPIPMode != ModeNever && p.Spec.VXLANMode != ModeNever {
		bad("spec.ipipMode and spec.vxlanMode cannot both be enabled on one pool")
	}
	if v6 && p.Spec.IPIPMode != ModeNever {
		bad("spec.ipipMode %s: IPIP is not supported on an IPv6 pool", p.Spec.IPIPMode)
	}
	if len(p.Spec.AllowedUses) == 0 {
		p.Spec.AllowedUses = []string{UseWorkload, UseTunnel}
	}
	if p.Spec.AssignmentMode == "" {
		p.Spec.AssignmentMode = Automatic
	}
	errs = append(errs, checkFields(&p.Spec, "spec")...)
	lb := slices.Contains(p.Spec.AllowedUses, UseLoadBalancer)
	switch {
	case lb && (slices.Contains(p.Spec.AllowedUses, UseWorkload) || slices.Contains(p.Spec.AllowedUses, UseTunnel)):
		bad("spec.allowedUses: LoadBalancer cannot be combined with Workload or Tunnel")
	case lb && (p.Spec.IPIPMode != ModeNever || p.Spec.VXLANMode != ModeNever):
		bad("spec.allowedUses: a LoadBalancer pool cannot have IPIP or VXLAN enabled")
	case lb && p.Spec.DisableBGPExport:
		bad("spec.disableBGPExport: a LoadBalancer pool cannot disable BGP export")
	case lb && p.Spec.NodeSelector != "" && p.Spec.NodeSelector != "all()":
		bad("spec.nodeSelector %q: a LoadBalancer pool must select all() nodes", p.Spec.NodeSelector)
	}
	if slices.Contains(p.Spec.AllowedUses, UseTunnel) && p.Spec.NamespaceSelector != "" {
		bad("spec.namespaceSelector: a pool for Tunnel addresses cannot have a namespaceSelector (tunnel addresses are not a namespace's)")
	}
	for f, sel := range map[string]string{"spec.nodeSelector": p.Spec.NodeSelector, "spec.namespaceSelector": p.Spec.NamespaceSelector} {
		if strings.Contains(sel, "global(") {
			bad("%s %q: global() is not valid in an IPPool selector; use all()", f, sel)
		}
	}
	sortErrors(errs)
	return wrap(KindIPPool, p.Metadata.Name, errs)
}

// sortErrors orders errors by text, so that checks run over maps report
// in a stable order.
func sortErrors(errs []error) {
	sort.SliceStable(errs, func(i, j int) bool { return errs[i].Error() < errs[j].Error() })
}

// Address ranges no pool may overlap.
var (
	linkLocal   = netip.MustParsePrefix("169.254.0.0/16")
	linkLocalV6 = netip.MustParsePrefix("fe80::/10")
	loopback    = netip.MustParsePrefix("127.0.0.0/8")
	loopbackV6  = netip.MustParsePrefix("::1/128")
	multicast   = netip.MustParsePrefix("224.0.0.0/4")
	multicastV6 = netip.MustParsePrefix("ff00::/8")
	// PodGateway is the address pods route through (their default
	// gateway, answered by the router): it is never a pod's.
	PodGateway = netip.MustParseAddr("169.254.1.1")
)

// checkPoolRange refuses pools whose addresses cannot be pods'. Calico
// refuses link-local pools; loopback and multicast addresses are refused
// too, as no packet to or from them is ever routed to a pod.
func checkPoolRange(pfx netip.Prefix) error {
	switch {
	case pfx.Contains(PodGateway):
		return fmt.Errorf("spec.cidr %s overlaps with the IPv4 link-local range %s and holds %s, the pods' default gateway", pfx, linkLocal, PodGateway)
	case pfx.Overlaps(linkLocal):
		return fmt.Errorf("spec.cidr %s overlaps with the IPv4 link-local range %s", pfx, linkLocal)
	case pfx.Overlaps(linkLocalV6):
		return fmt.Errorf("spec.cidr %s overlaps with the IPv6 link-local range %s", pfx, linkLocalV6)
	case pfx.Overlaps(loopback):
		return fmt.Errorf("spec.cidr %s overlaps with the IPv4 loopback range %s", pfx, loopback)
	case pfx.Overlaps(loopbackV6):
		return fmt.Errorf("spec.cidr %s holds the IPv6 loopback address %s", pfx, loopbackV6.Addr())
	case pfx.Overlaps(multicast):
		return fmt.Errorf("spec.cidr %s overlaps with the IPv4 multicast range %s", pfx, multicast)
	case pfx.Overlaps(multicastV6):
		return fmt.Errorf("spec.cidr %s overlaps with the IPv6 multicast range %s", pfx, multicastV6)
	}
	return nil
}

// Validate checks a node.
func (n *Node) Validate() error {
	var errs []error
	if err := checkName(n.Metadata.Name); err != nil {
		errs = append(errs, err)
	}
	// A node without an IPv4 address is valid (Calico's nodes for policy
	// only have none); no route leads to it, and the routes of its blocks
	// are reported as such.
	if b := n.Spec.BGP; b != nil {
		if *b == (NodeBGPSpec{}) {
			errs = append(errs, fmt.Errorf("spec.bgp is empty: give its ipv4Address (e.g. 10.0.1.1/24) or leave it out"))
		}
		if a := b.IPv4Address; a.IsValid() && !a.Addr().Is4() {
			errs = append(errs, fmt.Errorf("spec.bgp.ipv4Address %s: want an IPv4 address with its prefix length, e.g. 10.0.1.1/24", a))
		}
		if a := b.RouteReflectorClusterID; a.IsValid() && !a.Is4() {
			errs = append(errs, fmt.Errorf("spec.bgp.routeReflectorClusterID %s: want an IPv4 address such as 244.0.0.1", a))
		}
		if a := b.IPv4IPIPTunnelAddr; a.IsValid() && !a.Is4() {
			errs = append(errs, fmt.Errorf("spec.bgp.ipv4IPIPTunnelAddr %s is not an IPv4 address", a))
		}
	}
	for k := range n.Metadata.Labels {
		if k == "" || strings.ContainsAny(k, " \t\n'\"") {
			errs = append(errs, fmt.Errorf("metadata.labels: bad key %q", k))
		}
	}
	if a := n.Spec.IPv4VXLANTunnelAddr; a.IsValid() && !a.Is4() {
		errs = append(errs, fmt.Errorf("spec.ipv4VXLANTunnelAddr %s is not an IPv4 address", a))
	}
	errs = append(errs, checkFields(&n.Spec, "spec")...)
	errs = append(errs, checkFields(&n.Status, "status")...)
	for i, r := range n.Spec.OrchRefs {
		if r.Orchestrator == "" {
			errs = append(errs, fmt.Errorf("spec.orchRefs[%d].orchestrator is required", i))
		}
	}
	return wrap(KindNode, n.Metadata.Name, errs)
}

func checkName(n string) error {
	if n == "" || len(n) > 253 || strings.ContainsAny(n, "/ \t\n") {
		return fmt.Errorf("metadata.name %q: want a non-empty name without slashes or spaces", n)
	}
	return nil
}

// checkResourceName checks a name as Calico checks the names of its
// resources: a DNS subdomain.
func checkResourceName(n string) error {
	if err := checkName(n); err != nil {
		return err
	}
	if !dnsSubdomain(n) {
		return fmt.Errorf("metadata.name %q: want lower-case letters, digits, '-' and '.', starting and ending with a letter or digit (as Calico and Kubernetes name resources)", n)
	}
	return nil
}

// dnsSubdomain reports whether n is a DNS subdomain name (RFC 1123), what
// Calico requires of resource names and Kubernetes of CRD object names.
func dnsSubdomain(n string) bool {
	if n == "" || len(n) > 253 {
		return false
	}
	for label := range strings.SplitSeq(n, ".") {
		if label == "" || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, c := range label {
			if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '-' {
				return false
			}
		}
	}
	return true
}

func wrap(kind, name string, errs []error) error {
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%s %q: %w", kind, name, err)
	}
	return nil
}

// Overlap reports pools whose CIDRs overlap.
func Overlap(pools []*IPPool) error {
	for i, a := range pools {
		for _, b := range pools[i+1:] {
			if a.Metadata.Name != b.Metadata.Name && a.Prefix().Overlaps(b.Prefix()) {
				return fmt.Errorf("IPPool %q (%s) overlaps IPPool %q (%s)", a.Metadata.Name, a.Spec.CIDR, b.Metadata.Name, b.Spec.CIDR)
			}
		}
	}
	return nil
}

// Object is any resource.
type Object interface {
	Validate() error
	key() string
	// setVersion sets the apiVersion and kind resources are stored and
	// shown with.
	setVersion()
}

func (p *IPPool) key() string { return Prefix + "ippools/" + p.Metadata.Name }
func (n *Node) key() string   { return Prefix + "nodes/" + n.Metadata.Name }

// Client reads and writes resources in a datastore. Stored records that
// do not decode or validate are skipped and reported to Invalid (nil: not
// reported): one bad record never hides the others.
type Client struct {
	S       datastore.Store
	Invalid *Invalid
}

// Apply validates every object, checks the pools against each other and
// against those stored, and only then writes them all: invalid input
// writes nothing.
func (c Client) Apply(ctx context.Context, objs []Object) error {
	var pools []*IPPool
	for _, o := range objs {
		if err := o.Validate(); err != nil {
			return err
		}
		o.setVersion()
		if p, ok := o.(*IPPool); ok {
			pools = append(pools, p)
		}
	}
	if err := c.checkTiers(ctx, objs); err != nil {
		return err
	}
	if len(pools) > 0 {
		existing, _, err := list[IPPool](ctx, c, KindIPPool)
		if err != nil {
			return err
		}
		all := append([]*IPPool(nil), pools...)
		for _, e := range existing {
			replaced := false
			for _, p := range pools {
				if p.Metadata.Name == e.Metadata.Name {
					replaced = true
					if p.Spec.CIDR != e.Spec.CIDR || p.Spec.BlockSize != e.Spec.BlockSize {
						return fmt.Errorf("IPPool %q: cidr and blockSize cannot change (delete and recreate the pool)", p.Metadata.Name)
					}
				}
			}
			if !replaced {
				all = append(all, e)
			}
		}
		if err := Overlap(all); err != nil {
			return err
		}
	}
	for _, o := range objs {
		b, err := json.Marshal(o)
		if err != nil {
			return err
		}
		if _, err := c.S.Put(ctx, o.key(), b); err != nil {
			return err
		}
	}
	return nil
}

func (p *IPPool) setVersion() { p.APIVersion, p.Kind = CalicoAPIVersion, KindIPPool }
func (n *Node) setVersion()   { n.APIVersion, n.Kind = CalicoAPIVersion, KindNode }

type object[T any] interface {
	*T
	Object
}

// kindDirs maps kinds to the datastore directories they are stored in.
var kindDirs = map[string]string{
	KindIPPool: "ippools", KindNode: "nodes", KindBGPConfiguration: "bgpconfigurations", KindBGPPeer: "bgppeers",
	KindBGPFilter: "bgpfilters", KindIPReservation: "ipreservations", KindFelixConfiguration: "felixconfigurations",
	KindClusterInformation: "clusterinformations",
}

// decodeStored parses and validates a stored record of kind T, which must
// be stored under its own name: every field is typed once, here.
func decodeStored[T any, P object[T]](kv datastore.KV) (P, error) {
	p := P(new(T))
	if crd, err := isCRDRecord(kv.Value); err != nil {
		return nil, err
	} else if crd {
		o, err := decodeCRDRecord(kv.Value)
		if err != nil {
			return nil, err
		}
		q, ok := o.(P)
		if !ok {
			return nil, fmt.Errorf("a record of another kind (%T) is stored here", o)
		}
		p = q
	} else if err := json.Unmarshal(kv.Value, p); err != nil {
		return nil, err
	}
	if err := p.Validate(); err != nil {
		return nil, err
	}
	if k := p.key(); k != kv.Key {
		return nil, fmt.Errorf("record named for %s is stored under another key", k)
	}
	// Records written before resources were stored as
	// projectcalico.org/v3 say tortie.io/v1: show them as v3 too.
	p.setVersion()
	return p, nil
}

// DecodeStored decodes the stored record kv of kind (any of Kinds): a valid object or an error, never both.
func DecodeStored(kind string, kv datastore.KV) (Object, error) {
	var o Object
	var err error
	switch kind {
	case KindIPPool:
		o, err = decodeStored[IPPool](kv)
	case KindNode:
		o, err = decodeStored[Node](kv)
	case KindBGPConfiguration:
		o, err = decodeStored[BGPConfiguration](kv)
	case KindBGPPeer:
		o, err = decodeStored[BGPPeer](kv)
	case KindBGPFilter:
		o, err = decodeStored[BGPFilter](kv)
	case KindIPReservation:
		o, err = decodeStored[IPReservation](kv)
	case KindFelixConfiguration:
		o, err = decodeStored[FelixConfiguration](kv)
	case KindClusterInformation:
		o, err = decodeStored[ClusterInformation](kv)
	case KindNetworkPolicy:
		o, err = decodeStored[NetworkPolicy](kv)
	case KindGlobalNetworkPolicy:
		o, err = decodeStored[GlobalNetworkPolicy](kv)
	case KindTier:
		o, err = decodeStored[Tier](kv)
	case KindNetworkSet:
		o, err = decodeStored[NetworkSet](kv)
	case KindGlobalNetworkSet:
		o, err = decodeStored[GlobalNetworkSet](kv)
	case KindProfile:
		o, err = decodeStored[Profile](kv)
	case KindWorkloadEndpoint:
		o, err = decodeStored[WorkloadEndpoint](kv)
	default:
		err = fmt.Errorf("unknown kind %q", kind)
	}
	if err != nil {
		return nil, err
	}
	return o, nil
}

func list[T any, P object[T]](ctx context.Context, c Client, kind string) ([]P, int64, error) {
	prefix := kindPrefix(kind)
	kvs, rev, err := c.S.List(ctx, prefix)
	if err != nil {
		return nil, 0, err
	}
	sort.Slice(kvs, func(i, j int) bool { return kvs[i].Key < kvs[j].Key })
	out := make([]P, 0, len(kvs))
	var bad []InvalidRecord
	for _, kv := range kvs {
		v, err := decodeStored[T, P](kv)
		if err != nil {
			bad = append(bad, InvalidRecord{Key: kv.Key, Kind: kind, Error: err.Error(), Rev: kv.Rev})
			continue
		}
		out = append(out, v)
	}
	c.Invalid.Replace(prefix, bad)
	return out, rev, nil
}

// Pools lists every IPPool.
func (c Client) Pools(ctx context.Context) ([]*IPPool, error) {
	pools, _, err := c.PoolsAt(ctx)
	return pools, err
}

// PoolsAt lists every IPv4 IPPool, the pools tortie acts on (IPv6 pools
// are kept and shown, and used by nothing yet), and the store revision it
// read at: a watch from that revision misses nothing that changed
// afterwards.
func (c Client) PoolsAt(ctx context.Context) ([]*IPPool, int64, error) {
	all, rev, err := list[IPPool](ctx, c, KindIPPool)
	if err != nil {
		return nil, 0, err
	}
	v4 := all[:0]
	for _, p := range all {
		if p.Spec.CIDR.Addr().Is4() {
			v4 = append(v4, p)
		}
	}
	return v4, rev, nil
}

// Nodes lists every Node.
func (c Client) Nodes(ctx context.Context) ([]*Node, error) {
	nodes, _, err := list[Node](ctx, c, KindNode)
	return nodes, err
}

// PutNode writes a node (a node registering itself).
func (c Client) PutNode(ctx context.Context, n *Node) error { return c.Apply(ctx, []Object{n}) }

// Delete removes a resource of kind by name.
func (c Client) Delete(ctx context.Context, kind, name string) error {
	prefix := kindPrefix(kind)
	if prefix == "" {
		return fmt.Errorf("unknown kind %q", kind)
	}
	ns, n, hasNS := strings.Cut(name, "/")
	switch {
	case Namespaced(kind) && !hasNS:
		// As calicoctl, a namespaced resource named without its
		// namespace is in the default one.
		name = DefaultNamespace + "/" + name
	case Namespaced(kind) && (ns == "" || n == "" || strings.Contains(n, "/")):
		return fmt.Errorf("%s %q: want NAMESPACE/NAME", kind, name)
	case !Namespaced(kind) && hasNS:
		return fmt.Errorf("%s %q: a %s has no namespace; want NAME", kind, name, kind)
	}
	if name == "" {
		return fmt.Errorf("%s: no name", kind)
	}
	return c.S.Delete(ctx, prefix+name, 0)
}

// KindOf maps the names people type to kinds.
func KindOf(s string) (string, error) {
	switch strings.ToLower(s) {
	case "ippool", "ippools", "pool", "pools":
		return KindIPPool, nil
	case "node", "nodes":
		return KindNode, nil
	case "bgpconfiguration", "bgpconfigurations", "bgpconfig":
		return KindBGPConfiguration, nil
	case "bgppeer", "bgppeers":
		return KindBGPPeer, nil
	case "bgpfilter", "bgpfilters":
		return KindBGPFilter, nil
	case "ipreservation", "ipreservations":
		return KindIPReservation, nil
	case "felixconfiguration", "felixconfigurations", "felixconfig", "felixconfigs":
		return KindFelixConfiguration, nil
	case "clusterinformation", "clusterinformations", "clusterinfo":
		return KindClusterInformation, nil
	case "networkpolicy", "networkpolicies", "netpol", "cnp":
		return KindNetworkPolicy, nil
	case "globalnetworkpolicy", "globalnetworkpolicies", "gnp":
		return KindGlobalNetworkPolicy, nil
	case "tier", "tiers":
		return KindTier, nil
	case "networkset", "networksets", "netset":
		return KindNetworkSet, nil
	case "globalnetworkset", "globalnetworksets", "gns":
		return KindGlobalNetworkSet, nil
	case "profile", "profiles", "pro":
		return KindProfile, nil
	case "workloadendpoint", "workloadendpoints", "wep", "weps":
		return KindWorkloadEndpoint, nil
	}
	return "", fmt.Errorf("unknown resource kind %q (want ippools, nodes, bgpconfigurations, bgppeers, bgpfilters, ipreservations, felixconfigurations, clusterinformations, networkpolicies, globalnetworkpolicies, tiers, networksets, globalnetworksets, profiles or workloadendpoints)", s)
}
