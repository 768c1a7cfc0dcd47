package resources

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/tortie-net/tortie/selector"
)

// BGP kinds, in Calico's shape.
const (
	KindBGPConfiguration = "BGPConfiguration"
	KindBGPPeer          = "BGPPeer"
)

// BGP defaults, as Calico's.
const (
	DefaultASN            = 64512
	DefaultListenPort     = 179
	DefaultMaxRestartTime = 120 * time.Second
)

// BGPConfiguration holds cluster-wide BGP settings. The one named
// "default" applies to every node; "node.<name>" overrides it for one node
// (as in Calico).
type BGPConfiguration struct {
	APIVersion string               `json:"apiVersion"`
	Kind       string               `json:"kind"`
	Metadata   Meta                 `json:"metadata"`
	Spec       BGPConfigurationSpec `json:"spec"`
}

// BGPConfigurationSpec mirrors Calico's BGPConfiguration spec.
type BGPConfigurationSpec struct {
	LogSeverityScreen      string    `json:"logSeverityScreen,omitempty" check:"oneof=Trace|Debug|Info|Warning|Error|Fatal" tortie:"stored"`
	NodeToNodeMeshEnabled  *bool     `json:"nodeToNodeMeshEnabled,omitempty"`
	ASNumber               ASNumber  `json:"asNumber,omitempty"`
	ListenPort             int       `json:"listenPort,omitempty"`
	NodeMeshPassword       *Password `json:"nodeMeshPassword,omitempty"`
	NodeMeshMaxRestartTime *Duration `json:"nodeMeshMaxRestartTime,omitempty"`
	// Service address ranges every node advertises (IPv4; read from the
	// "default" resource only, as Calico does). Within them, a node also
	// advertises the /32s of the Services with externalTrafficPolicy
	// Local it has ready endpoints of (peering.ServiceRoutes).
	ServiceLoadBalancerIPs         []ServiceIPBlock      `json:"serviceLoadBalancerIPs,omitempty"`
	ServiceExternalIPs             []ServiceIPBlock      `json:"serviceExternalIPs,omitempty"`
	ServiceClusterIPs              []ServiceIPBlock      `json:"serviceClusterIPs,omitempty"`
	ServiceLoadBalancerAggregation string                `json:"serviceLoadBalancerAggregation,omitempty" check:"oneof=Enabled|Disabled" tortie:"stored"`
	Communities                    []Community           `json:"communities,omitempty"`
	PrefixAdvertisements           []PrefixAdvertisement `json:"prefixAdvertisements,omitempty"`
	BindMode                       string                `json:"bindMode,omitempty" check:"oneof=None|NodeIP"`
	IgnoredInterfaces              []string              `json:"ignoredInterfaces,omitempty" check:"ignoredInterface" tortie:"stored"`
	LocalWorkloadPeeringIPV4       string                `json:"localWorkloadPeeringIPV4,omitempty" check:"ipv4" tortie:"stored"`
	LocalWorkloadPeeringIPV6       string                `json:"localWorkloadPeeringIPV6,omitempty" check:"ipv6" tortie:"stored"`
	ProgramClusterRoutes           string                `json:"programClusterRoutes,omitempty" check:"oneof=Enabled|Disabled" tortie:"stored"`
	IPv4NormalRoutePriority        *int                  `json:"ipv4NormalRoutePriority,omitempty" check:"min=1,max=2147483646" tortie:"stored"`
	IPv6NormalRoutePriority        *int                  `json:"ipv6NormalRoutePriority,omitempty" check:"min=1,max=2147483646" tortie:"stored"`
}

// ServiceIPBlock is a CIDR of Service addresses to advertise.
type ServiceIPBlock struct {
	CIDR string `json:"cidr,omitempty" check:"net"`
}

// Prefix is the block's CIDR (an address alone is a /32 or /128), masked.
func (b ServiceIPBlock) Prefix() (netip.Prefix, error) {
	p, err := parseCIDROrIP(b.CIDR)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("service IP block %q: want a CIDR", b.CIDR)
	}
	return p.Masked(), nil
}

// ServiceRanges are the IPv4 Service address ranges of a
// BGPConfiguration, by kind of address.
type ServiceRanges struct {
	ClusterIPs, ExternalIPs, LoadBalancerIPs []netip.Prefix
}

// ServiceRanges gives the IPv4 ranges of the cluster, external and
// LoadBalancer Service addresses to advertise; IPv6 ranges are left out
// (the speaker is IPv4 only) and reported when applied.
func (c *BGPConfiguration) ServiceRanges() ServiceRanges {
	if c == nil {
		return ServiceRanges{}
	}
	v4 := func(l []ServiceIPBlock) []netip.Prefix {
		var out []netip.Prefix
		for _, b := range l {
			if p, err := b.Prefix(); err == nil && p.Addr().Is4() {
				out = append(out, p)
			}
		}
		return out
	}
	return ServiceRanges{ClusterIPs: v4(c.Spec.ServiceClusterIPs), ExternalIPs: v4(c.Spec.ServiceExternalIPs),
		LoadBalancerIPs: v4(c.Spec.ServiceLoadBalancerIPs)}
}

// All lists the ranges: cluster, external, then LoadBalancer.
func (r ServiceRanges) All() []netip.Prefix {
	return slices.Concat(r.ClusterIPs, r.ExternalIPs, r.LoadBalancerIPs)
}

// ServicePrefixes are the IPv4 ranges of the cluster, external and
// LoadBalancer Service addresses to advertise, in that order; IPv6 ranges
// are left out (the speaker is IPv4 only) and reported when applied.
func (c *BGPConfiguration) ServicePrefixes() []netip.Prefix {
	return c.ServiceRanges().All()
}

// notActedOnValues: the speaker advertises IPv4 prefixes only.
func (c *BGPConfiguration) notActedOnValues() []string {
	var out []string
	for _, l := range []struct {
		name   string
		blocks []ServiceIPBlock
	}{{"serviceClusterIPs", c.Spec.ServiceClusterIPs}, {"serviceExternalIPs", c.Spec.ServiceExternalIPs}, {"serviceLoadBalancerIPs", c.Spec.ServiceLoadBalancerIPs}} {
		if slices.ContainsFunc(l.blocks, func(b ServiceIPBlock) bool { p, err := b.Prefix(); return err == nil && p.Addr().Is6() }) {
			out = append(out, "spec."+l.name+" IPv6")
		}
	}
	if slices.ContainsFunc(c.Spec.PrefixAdvertisements, func(pa PrefixAdvertisement) bool {
		p, err := parseCIDROrIP(pa.CIDR)
		return err == nil && p.Addr().Is6()
	}) {
		out = append(out, "spec.prefixAdvertisements IPv6")
	}
	return out
}

// Community names a BGP community value.
type Community struct {
	Name  string `json:"name,omitempty" check:"required,name"`
	Value string `json:"value,omitempty" check:"required,community"`
}

// PrefixAdvertisement gives the communities a CIDR is advertised with:
// values, or names from spec.communities.
type PrefixAdvertisement struct {
	CIDR        string   `json:"cidr,omitempty" check:"required,net"`
	Communities []string `json:"communities,omitempty" check:"required"`
}

// BGPPeer is an explicit peering: with a router outside the cluster
// (peerIP + asNumber) or with the nodes a peerSelector picks. node or
// nodeSelector say which of our nodes peer; neither means all of them (a
// "global" peer).
type BGPPeer struct {
	APIVersion string      `json:"apiVersion"`
	Kind       string      `json:"kind"`
	Metadata   Meta        `json:"metadata"`
	Spec       BGPPeerSpec `json:"spec"`
}

// BGPPeerSpec mirrors Calico's, plus maxPrefixes (a limit Calico leaves to
// BIRD's configuration).
type BGPPeerSpec struct {
	Node                     string      `json:"node,omitempty" check:"name"`
	NodeSelector             string      `json:"nodeSelector,omitempty" check:"selector"`
	PeerIP                   PeerAddress `json:"peerIP,omitzero"`
	ASNumber                 ASNumber    `json:"asNumber,omitempty"`
	LocalASNumber            *ASNumber   `json:"localASNumber,omitempty" tortie:"stored"`
	PeerSelector             string      `json:"peerSelector,omitempty" check:"selector"`
	KeepOriginalNextHop      bool        `json:"keepOriginalNextHop,omitempty"`
	NextHopMode              string      `json:"nextHopMode,omitempty" check:"oneof=Auto|Self|Keep"`
	Password                 *Password   `json:"password,omitempty"`
	SourceAddress            string      `json:"sourceAddress,omitempty" check:"oneof=UseNodeIP|None"`
	MaxRestartTime           *Duration   `json:"maxRestartTime,omitempty"`
	KeepaliveTime            *Duration   `json:"keepaliveTime,omitempty"`
	NumAllowedLocalASNumbers *int32      `json:"numAllowedLocalASNumbers,omitempty"`
	// TTLSecurity is the number of hops the peer may be away (GTSM,
	// RFC 5082): packets must arrive with TTL >= 256 - ttlSecurity.
	TTLSecurity           int      `json:"ttlSecurity,omitempty"`
	ReachableBy           string   `json:"reachableBy,omitempty" check:"ip" tortie:"stored"`
	Filters               []string `json:"filters,omitempty" check:"name"`
	LocalWorkloadSelector string   `json:"localWorkloadSelector,omitempty" check:"selector" tortie:"stored"`
	ReversePeering        string   `json:"reversePeering,omitempty" check:"oneof=Auto|Manual" tortie:"stored"`
	// MaxPrefixes cuts the session when the peer sends more (0: the
	// node's default limit).
	MaxPrefixes uint32 `json:"maxPrefixes,omitempty"`
}

// PeerAddress is a BGP peer's address and, optionally, port: "10.0.0.1",
// "10.0.0.1:1179" or "[fd00::1]:1179".
type PeerAddress struct {
	Addr netip.Addr
	Port uint16 // 0: the port BGP listens on (179, or the peer node's)
}

// IsValid reports whether an address is set.
func (a PeerAddress) IsValid() bool { return a.Addr.IsValid() }

func (a PeerAddress) String() string {
	if a.Port == 0 {
		return a.Addr.String()
	}
	return netip.AddrPortFrom(a.Addr, a.Port).String()
}

// MarshalText writes the address, with the port when there is one.
func (a PeerAddress) MarshalText() ([]byte, error) {
	if !a.Addr.IsValid() {
		return []byte{}, nil
	}
	return []byte(a.String()), nil
}

// UnmarshalText reads an address, IPv4:port or [IPv6]:port.
func (a *PeerAddress) UnmarshalText(b []byte) error {
	s := string(b)
	if s == "" {
		*a = PeerAddress{}
		return nil
	}
	if ip, err := netip.ParseAddr(s); err == nil && ip.Zone() == "" {
		*a = PeerAddress{Addr: ip.Unmap()}
		return nil
	}
	ap, err := netip.ParseAddrPort(s)
	if err != nil || ap.Port() == 0 || ap.Addr().Zone() != "" {
		return fmt.Errorf("%q: want an IP address, IPv4:port or [IPv6]:port (port 1 to 65535)", s)
	}
	*a = PeerAddress{Addr: ap.Addr().Unmap(), Port: ap.Port()}
	return nil
}

// Password is a BGP MD5 password. Calico reads it from a Kubernetes
// secret (secretKeyRef), which tortie keeps but cannot read yet; tortie
// also takes it inline (a string, or {value: ...}).
type Password struct {
	Value        string        `json:"value,omitempty"`
	SecretKeyRef *SecretKeyRef `json:"secretKeyRef,omitempty" tortie:"stored"`
}

// SecretKeyRef names a key of a Kubernetes secret.
type SecretKeyRef struct {
	Name     string `json:"name"`
	Key      string `json:"key"`
	Optional *bool  `json:"optional,omitempty"`
}

// UnmarshalJSON accepts "secret", {"value": "secret"} or
// {"secretKeyRef": {"name": ..., "key": ...}}.
func (p *Password) UnmarshalJSON(b []byte) error {
	if err := json.Unmarshal(b, &p.Value); err == nil {
		return nil
	}
	const want = "want a string, {value: ...} or {secretKeyRef: {name: ..., key: ...}}"
	var o struct {
		Value        *string `json:"value"`
		SecretKeyRef *struct {
			Name     *string `json:"name"`
			Key      *string `json:"key"`
			Optional *bool   `json:"optional"`
		} `json:"secretKeyRef"`
	}
	if err := exactKeys(b, "value", "secretKeyRef"); err != nil {
		return fmt.Errorf("%s: %v", want, err)
	}
	if err := json.Unmarshal(b, &o); err != nil {
		return fmt.Errorf("%s (%s)", want, cleanError(err))
	}
	if o.SecretKeyRef != nil {
		var raw struct {
			Ref json.RawMessage `json:"secretKeyRef"`
		}
		_ = json.Unmarshal(b, &raw)
		if err := exactKeys(raw.Ref, "name", "key", "optional"); err != nil {
			return fmt.Errorf("secretKeyRef: %v", err)
		}
	}
	switch {
	case (o.Value == nil) == (o.SecretKeyRef == nil):
		return errors.New(want + ": exactly one of them")
	case o.Value != nil:
		*p = Password{Value: *o.Value}
	default:
		r := o.SecretKeyRef
		if r.Name == nil || *r.Name == "" || r.Key == nil || *r.Key == "" {
			return errors.New("secretKeyRef: want the secret's name and key")
		}
		*p = Password{SecretKeyRef: &SecretKeyRef{Name: *r.Name, Key: *r.Key, Optional: r.Optional}}
	}
	return nil
}

// exactKeys refuses a JSON object with keys other than these, matched
// exactly (Go's decoder would take any case).
func exactKeys(b []byte, keys ...string) error {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		return fmt.Errorf("want a mapping, got %s", describeJSON(b))
	}
	for k := range m {
		if !slices.Contains(keys, k) {
			return fmt.Errorf("%s: unknown field (want %s)", k, orList(keys))
		}
	}
	return nil
}

// MarshalJSON writes {"value": ...} or {"secretKeyRef": ...}.
func (p Password) MarshalJSON() ([]byte, error) {
	if p.SecretKeyRef != nil {
		return json.Marshal(struct {
			SecretKeyRef *SecretKeyRef `json:"secretKeyRef"`
		}{p.SecretKeyRef})
	}
	return json.Marshal(struct {
		Value string `json:"value"`
	}{p.Value})
}

// Duration is a Go duration string ("120s", "2m") in manifests.
type Duration struct{ time.Duration }

// UnmarshalJSON parses "120s".
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("want a duration such as \"120s\"")
	}
	v, err := time.ParseDuration(s)
	if err != nil || v < 0 {
		return fmt.Errorf("duration %q: want a duration such as \"120s\"", s)
	}
	d.Duration = v
	return nil
}

// MarshalJSON writes "120s".
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(d.String()) }

// MeshEnabled says whether the node-to-node mesh is on (default true).
func (c *BGPConfiguration) MeshEnabled() bool {
	return c == nil || c.Spec.NodeToNodeMeshEnabled == nil || *c.Spec.NodeToNodeMeshEnabled
}

// ASN is the cluster's default AS number.
func (c *BGPConfiguration) ASN() uint32 {
	if c == nil || c.Spec.ASNumber == 0 {
		return DefaultASN
	}
	return uint32(c.Spec.ASNumber)
}

// Port is the BGP listen port.
func (c *BGPConfiguration) Port() int {
	if c == nil || c.Spec.ListenPort == 0 {
		return DefaultListenPort
	}
	return c.Spec.ListenPort
}

// MeshRestartTime is the graceful-restart time of mesh sessions.
func (c *BGPConfiguration) MeshRestartTime() time.Duration {
	if c == nil || c.Spec.NodeMeshMaxRestartTime == nil {
		return DefaultMaxRestartTime
	}
	return c.Spec.NodeMeshMaxRestartTime.Duration
}

// MeshPassword is the mesh's MD5 password ("" = none).
func (c *BGPConfiguration) MeshPassword() string {
	if c == nil || c.Spec.NodeMeshPassword == nil {
		return ""
	}
	return c.Spec.NodeMeshPassword.Value
}

// Validate checks a BGPConfiguration.
func (c *BGPConfiguration) Validate() error {
	var errs []error
	bad := func(f string, a ...any) { errs = append(errs, fmt.Errorf(f, a...)) }
	if err := checkResourceName(c.Metadata.Name); err != nil {
		errs = append(errs, err)
	}
	s := &c.Spec
	if p := s.ListenPort; p < 0 || p > 65535 {
		bad("spec.listenPort %d out of range 1-65535", p)
	}
	if d := s.NodeMeshMaxRestartTime; d != nil && d.Duration > 4095*time.Second {
		bad("spec.nodeMeshMaxRestartTime %s: at most 4095s (the field BGP carries it in)", d)
	}
	errs = append(errs, checkFields(s, "spec")...)
	if off := s.NodeToNodeMeshEnabled != nil && !*s.NodeToNodeMeshEnabled; off {
		if s.NodeMeshPassword != nil {
			bad("spec.nodeMeshPassword cannot be set when spec.nodeToNodeMeshEnabled is false")
		}
		if s.NodeMeshMaxRestartTime != nil {
			bad("spec.nodeMeshMaxRestartTime cannot be set when spec.nodeToNodeMeshEnabled is false")
		}
	}
	if len(s.Communities) > 0 && len(s.PrefixAdvertisements) == 0 {
		bad("spec.communities are defined but not used in spec.prefixAdvertisements")
	}
	for i, pa := range s.PrefixAdvertisements {
		for j, v := range pa.Communities {
			defined := slices.ContainsFunc(s.Communities, func(c Community) bool { return c.Name == v })
			if !defined && !validCommunity(v) {
				bad("spec.prefixAdvertisements[%d].communities[%d] %q: neither a community value (aa:nn or aa:nn:mm) nor a name from spec.communities", i, j, v)
			}
		}
	}
	return wrap(KindBGPConfiguration, c.Metadata.Name, errs)
}

// Validate checks a BGPPeer as Calico does, and that a peerIP comes with
// the peer's asNumber (tortie does not guess it).
func (p *BGPPeer) Validate() error {
	var errs []error
	bad := func(f string, a ...any) { errs = append(errs, fmt.Errorf(f, a...)) }
	if err := checkResourceName(p.Metadata.Name); err != nil {
		bad("%v", err)
	}
	s := &p.Spec
	errs = append(errs, checkFields(s, "spec")...)
	if s.Node != "" && s.NodeSelector != "" {
		bad("spec.node and spec.nodeSelector cannot both be set")
	}
	if s.PeerIP.IsValid() && s.PeerSelector != "" {
		bad("spec.peerIP and spec.peerSelector cannot both be set")
	}
	if s.ASNumber != 0 && s.PeerSelector != "" {
		bad("spec.asNumber must be empty when spec.peerSelector is set (each selected node's own AS number is used)")
	}
	if s.LocalWorkloadSelector != "" {
		if s.PeerIP.IsValid() {
			bad("spec.peerIP must be empty when spec.localWorkloadSelector is set")
		}
		if s.PeerSelector != "" {
			bad("spec.peerSelector must be empty when spec.localWorkloadSelector is set")
		}
		if s.ASNumber == 0 {
			bad("spec.asNumber is required when spec.localWorkloadSelector is set")
		}
	}
	if s.PeerIP.IsValid() && s.ASNumber == 0 {
		bad("spec.asNumber is required with spec.peerIP")
	}
	if s.ReachableBy != "" {
		if r, err := netip.ParseAddr(s.ReachableBy); err == nil {
			switch {
			case !s.PeerIP.IsValid():
				bad("spec.reachableBy must be empty when spec.peerIP is empty")
			case r.Is4() != s.PeerIP.Addr.Is4():
				bad("spec.reachableBy %s and spec.peerIP %s are of different IP families", r, s.PeerIP.Addr)
			}
		}
	}
	if s.KeepOriginalNextHop && s.NextHopMode != "" {
		bad("spec.keepOriginalNextHop is deprecated and cannot be true when spec.nextHopMode is set")
	}
	if s.TTLSecurity < 0 || s.TTLSecurity > 255 {
		bad("spec.ttlSecurity %d out of range 0-255", s.TTLSecurity)
	}
	if d := s.MaxRestartTime; d != nil && d.Duration > 4095*time.Second {
		bad("spec.maxRestartTime %s: at most 4095s", d)
	}
	if d := s.KeepaliveTime; d != nil && d.Duration != 0 && d.Duration < time.Second {
		bad("spec.keepaliveTime %s: at least 1s", d)
	}
	return wrap(KindBGPPeer, p.Metadata.Name, errs)
}

// notActedOnValues: tortie's speaker peers over IPv4 only.
func (p *BGPPeer) notActedOnValues() []string {
	if a := p.Spec.PeerIP.Addr; a.IsValid() && !a.Is4() {
		return []string{"spec.peerIP IPv6"}
	}
	return nil
}

// Global reports whether the peer applies to every node.
func (p *BGPPeer) Global() bool { return p.Spec.Node == "" && p.Spec.NodeSelector == "" }

// AppliesTo reports whether node n takes part in this peering as the
// local side.
func (p *BGPPeer) AppliesTo(n *Node) bool {
	switch {
	case p.Spec.Node != "":
		return p.Spec.Node == n.Metadata.Name
	case p.Spec.NodeSelector != "":
		s, err := selector.Parse(p.Spec.NodeSelector)
		return err == nil && s.Matches(n.Metadata.Labels)
	}
	return true
}

// Selects reports whether node n is a peer this BGPPeer picks.
func (p *BGPPeer) Selects(n *Node) bool {
	if p.Spec.PeerSelector == "" {
		return false
	}
	s, err := selector.Parse(p.Spec.PeerSelector)
	return err == nil && s.Matches(n.Metadata.Labels)
}

func (c *BGPConfiguration) key() string { return Prefix + "bgpconfigurations/" + c.Metadata.Name }
func (p *BGPPeer) key() string          { return Prefix + "bgppeers/" + p.Metadata.Name }
func (c *BGPConfiguration) setVersion() {
	c.APIVersion, c.Kind = CalicoAPIVersion, KindBGPConfiguration
}
func (p *BGPPeer) setVersion() { p.APIVersion, p.Kind = CalicoAPIVersion, KindBGPPeer }

// BGPConfigurations lists every BGPConfiguration.
func (c Client) BGPConfigurations(ctx context.Context) ([]*BGPConfiguration, error) {
	out, _, err := list[BGPConfiguration](ctx, c, KindBGPConfiguration)
	return out, err
}

// BGPPeers lists every BGPPeer.
func (c Client) BGPPeers(ctx context.Context) ([]*BGPPeer, error) {
	out, _, err := list[BGPPeer](ctx, c, KindBGPPeer)
	return out, err
}

// DefaultBGPConfiguration is the resource named "default" (nil when there
// is none): Calico reads the Service address ranges and the bind mode from
// it alone, whatever a node's own resource says.
func DefaultBGPConfiguration(all []*BGPConfiguration) *BGPConfiguration {
	for _, c := range all {
		if c.Metadata.Name == "default" {
			return c
		}
	}
	return nil
}

// EffectiveBGPConfiguration picks node's settings: "node.<name>" fields
// over "default" ones (nil when neither exists: Calico's defaults apply).
func EffectiveBGPConfiguration(all []*BGPConfiguration, node string) *BGPConfiguration {
	var def, mine *BGPConfiguration
	for _, c := range all {
		switch c.Metadata.Name {
		case "default":
			def = c
		case "node." + node:
			mine = c
		}
	}
	if mine == nil {
		return def
	}
	if def == nil {
		return mine
	}
	merged := *def
	s := mine.Spec
	if s.ASNumber != 0 {
		merged.Spec.ASNumber = s.ASNumber
	}
	if s.ListenPort != 0 {
		merged.Spec.ListenPort = s.ListenPort
	}
	if s.NodeMeshPassword != nil {
		merged.Spec.NodeMeshPassword = s.NodeMeshPassword
	}
	if s.NodeMeshMaxRestartTime != nil {
		merged.Spec.NodeMeshMaxRestartTime = s.NodeMeshMaxRestartTime
	}
	return &merged
}
