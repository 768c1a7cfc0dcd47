// Package resources defines tortie's cluster resources in Calico's shape
// (apiVersion, kind, metadata, spec), so operators can apply the IPPool and
// Node manifests they already have, validates them, and reads and writes
// them in the datastore. Manifests may say apiVersion projectcalico.org/v3
// or tortie.io/v1.
package resources

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sort"
	"strings"

	"sigs.k8s.io/yaml"

	"github.com/tortie-net/tortie/datastore"
	"github.com/tortie-net/tortie/selector"
)

// APIVersion is what tortie writes; CalicoAPIVersion is also accepted.
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
	Name   string            `json:"name"`
	Labels map[string]string `json:"labels,omitempty"`
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
	NodeSelector     string       `json:"nodeSelector,omitempty"`
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
}

// NodeSpec mirrors the parts of Calico's Node spec tortie uses.
type NodeSpec struct {
	BGP                 *NodeBGPSpec `json:"bgp,omitempty"`
	IPv4VXLANTunnelAddr netip.Addr   `json:"ipv4VXLANTunnelAddr,omitzero"`
	VXLANTunnelMACAddr  MAC          `json:"vxlanTunnelMACAddr,omitzero"`
}

// NodeBGPSpec holds the node's underlay address (with its subnet: the
// CrossSubnet rule uses it) and BGP settings. The addresses are written as
// text, as in Calico ("10.0.1.1/24").
type NodeBGPSpec struct {
	IPv4Address             netip.Prefix `json:"ipv4Address"`
	IPv4IPIPTunnelAddr      netip.Addr   `json:"ipv4IPIPTunnelAddr,omitzero"`
	ASNumber                uint32       `json:"asNumber,omitempty"`
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

// Validate checks a pool on its own and fills defaults (blockSize 26,
// modes Never).
func (p *IPPool) Validate() error {
	var errs []error
	bad := func(f string, a ...any) { errs = append(errs, fmt.Errorf(f, a...)) }
	if err := checkName(p.Metadata.Name); err != nil {
		bad("%v", err)
	}
	pfx := p.Spec.CIDR
	switch {
	case !pfx.IsValid():
		bad("spec.cidr is required (an IPv4 CIDR such as 10.244.0.0/16)")
	case !pfx.Addr().Is4():
		bad("spec.cidr %s: only IPv4 pools are supported", pfx)
	case pfx.Masked() != pfx:
		bad("spec.cidr %s has host bits set (did you mean %s?)", pfx, pfx.Masked())
	}
	if p.Spec.BlockSize == 0 {
		p.Spec.BlockSize = 26
	}
	if p.Spec.BlockSize < 20 || p.Spec.BlockSize > 32 {
		bad("spec.blockSize %d out of range 20-32", p.Spec.BlockSize)
	} else if pfx.IsValid() && p.Spec.BlockSize < pfx.Bits() {
		bad("spec.blockSize %d is larger than the pool %s", p.Spec.BlockSize, pfx)
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
	if _, err := selector.Parse(p.Spec.NodeSelector); err != nil {
		bad("spec.nodeSelector: %v", err)
	}
	return wrap(KindIPPool, p.Metadata.Name, errs)
}

// Validate checks a node.
func (n *Node) Validate() error {
	var errs []error
	if err := checkName(n.Metadata.Name); err != nil {
		errs = append(errs, err)
	}
	if a, err := n.Address(); err != nil || !a.Addr().Is4() {
		errs = append(errs, fmt.Errorf("spec.bgp.ipv4Address: want an IPv4 address with its prefix length, e.g. 10.0.1.1/24"))
	}
	if b := n.Spec.BGP; b != nil {
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
	return wrap(KindNode, n.Metadata.Name, errs)
}

func checkName(n string) error {
	if n == "" || len(n) > 253 || strings.ContainsAny(n, "/ \t\n") {
		return fmt.Errorf("metadata.name %q: want a non-empty name without slashes or spaces", n)
	}
	return nil
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
}

func (p *IPPool) key() string { return Prefix + "ippools/" + p.Metadata.Name }
func (n *Node) key() string   { return Prefix + "nodes/" + n.Metadata.Name }

// Decode reads one or more YAML (or JSON) documents separated by "---".
func Decode(r io.Reader) ([]Object, error) {
	b, err := io.ReadAll(io.LimitReader(r, 16<<20))
	if err != nil {
		return nil, err
	}
	var out []Object
	for i, doc := range bytes.Split(append([]byte("\n"), b...), []byte("\n---")) {
		if len(bytes.TrimSpace(doc)) == 0 {
			continue
		}
		var tm struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
		}
		if err := yaml.Unmarshal(doc, &tm); err != nil {
			return nil, fmt.Errorf("document %d: %w", i+1, err)
		}
		if tm.APIVersion != APIVersion && tm.APIVersion != CalicoAPIVersion {
			return nil, fmt.Errorf("document %d: apiVersion %q: want %s or %s", i+1, tm.APIVersion, APIVersion, CalicoAPIVersion)
		}
		var o Object
		switch tm.Kind {
		case KindIPPool:
			o = &IPPool{}
		case KindNode:
			o = &Node{}
		case KindBGPConfiguration:
			o = &BGPConfiguration{}
		case KindBGPPeer:
			o = &BGPPeer{}
		default:
			return nil, fmt.Errorf("document %d: unknown kind %q (want IPPool, Node, BGPConfiguration or BGPPeer)", i+1, tm.Kind)
		}
		if err := yaml.UnmarshalStrict(doc, o); err != nil {
			return nil, fmt.Errorf("document %d (%s): %w", i+1, tm.Kind, err)
		}
		out = append(out, o)
	}
	if len(out) == 0 {
		return nil, errors.New("no resources in input")
	}
	return out, nil
}

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
		o.(interface{ setVersion() }).setVersion()
		if p, ok := o.(*IPPool); ok {
			pools = append(pools, p)
		}
	}
	if len(pools) > 0 {
		existing, err := c.Pools(ctx)
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

func (p *IPPool) setVersion() { p.APIVersion, p.Kind = APIVersion, KindIPPool }
func (n *Node) setVersion()   { n.APIVersion, n.Kind = APIVersion, KindNode }

type object[T any] interface {
	*T
	Object
}

// kindDirs maps kinds to the datastore directories they are stored in.
var kindDirs = map[string]string{KindIPPool: "ippools", KindNode: "nodes", KindBGPConfiguration: "bgpconfigurations", KindBGPPeer: "bgppeers"}

// decodeStored parses and validates a stored record of kind T, which must
// be stored under its own name: every field is typed once, here.
func decodeStored[T any, P object[T]](kv datastore.KV) (P, error) {
	p := P(new(T))
	if err := json.Unmarshal(kv.Value, p); err != nil {
		return nil, err
	}
	if err := p.Validate(); err != nil {
		return nil, err
	}
	if k := p.key(); k != kv.Key {
		return nil, fmt.Errorf("record named for %s is stored under another key", k)
	}
	return p, nil
}

// DecodeStored decodes the stored record kv of kind (IPPool, Node,
// BGPConfiguration or BGPPeer): a valid object or an error, never both.
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
	default:
		err = fmt.Errorf("unknown kind %q", kind)
	}
	if err != nil {
		return nil, err
	}
	return o, nil
}

func list[T any, P object[T]](ctx context.Context, c Client, kind string) ([]P, int64, error) {
	prefix := Prefix + kindDirs[kind] + "/"
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

// PoolsAt lists every IPPool and the store revision it read at: a watch
// from that revision misses nothing that changed afterwards.
func (c Client) PoolsAt(ctx context.Context) ([]*IPPool, int64, error) {
	return list[IPPool](ctx, c, KindIPPool)
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
	k := kindDirs[kind]
	if k == "" {
		return fmt.Errorf("unknown kind %q", kind)
	}
	return c.S.Delete(ctx, Prefix+k+"/"+name, 0)
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
	}
	return "", fmt.Errorf("unknown resource kind %q (want ippools, nodes, bgpconfigurations or bgppeers)", s)
}
