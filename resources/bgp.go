package resources

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
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

// BGPConfigurationSpec mirrors the parts of Calico's spec tortie uses.
type BGPConfigurationSpec struct {
	ASNumber               uint32    `json:"asNumber,omitempty"`
	NodeToNodeMeshEnabled  *bool     `json:"nodeToNodeMeshEnabled,omitempty"`
	ListenPort             int       `json:"listenPort,omitempty"`
	NodeMeshPassword       *Password `json:"nodeMeshPassword,omitempty"`
	NodeMeshMaxRestartTime *Duration `json:"nodeMeshMaxRestartTime,omitempty"`
	// LogSeverityScreen is accepted for compatibility with Calico manifests.
	LogSeverityScreen string `json:"logSeverityScreen,omitempty"`
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
	Node           string     `json:"node,omitempty"`
	NodeSelector   string     `json:"nodeSelector,omitempty"`
	PeerIP         netip.Addr `json:"peerIP,omitzero"`
	ASNumber       uint32     `json:"asNumber,omitempty"`
	PeerSelector   string     `json:"peerSelector,omitempty"`
	Password       *Password  `json:"password,omitempty"`
	MaxRestartTime *Duration  `json:"maxRestartTime,omitempty"`
	KeepaliveTime  *Duration  `json:"keepaliveTime,omitempty"`
	// TTLSecurity is the number of hops the peer may be away (GTSM,
	// RFC 5082): packets must arrive with TTL >= 256 - ttlSecurity.
	TTLSecurity int `json:"ttlSecurity,omitempty"`
	// MaxPrefixes cuts the session when the peer sends more (0: the
	// node's default limit).
	MaxPrefixes uint32 `json:"maxPrefixes,omitempty"`
}

// Password is a BGP MD5 password. Calico reads it from a Kubernetes
// secret (secretKeyRef); tortie has no secrets store and takes it inline
// (a string, or {value: ...}).
type Password struct{ Value string }

// UnmarshalJSON accepts "secret" or {"value": "secret"} and refuses a
// secretKeyRef with a message saying what to do instead.
func (p *Password) UnmarshalJSON(b []byte) error {
	if err := json.Unmarshal(b, &p.Value); err == nil {
		return nil
	}
	var o struct {
		Value        *string         `json:"value"`
		SecretKeyRef json.RawMessage `json:"secretKeyRef"`
	}
	if err := json.Unmarshal(b, &o); err != nil {
		return fmt.Errorf("password: want a string or {value: ...}")
	}
	if o.SecretKeyRef != nil {
		return errors.New("password.secretKeyRef: tortie has no Kubernetes secrets; give the password inline as password: {value: ...}")
	}
	if o.Value == nil {
		return errors.New("password: want {value: ...}")
	}
	p.Value = *o.Value
	return nil
}

// MarshalJSON writes {"value": ...}.
func (p Password) MarshalJSON() ([]byte, error) {
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
	return c.Spec.ASNumber
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
	if err := checkName(c.Metadata.Name); err != nil {
		errs = append(errs, err)
	}
	if p := c.Spec.ListenPort; p < 0 || p > 65535 {
		errs = append(errs, fmt.Errorf("spec.listenPort %d out of range 1-65535", p))
	}
	if d := c.Spec.NodeMeshMaxRestartTime; d != nil && d.Duration > 4095*time.Second {
		errs = append(errs, fmt.Errorf("spec.nodeMeshMaxRestartTime %s: at most 4095s (the field BGP carries it in)", d))
	}
	return wrap(KindBGPConfiguration, c.Metadata.Name, errs)
}

// Validate checks a BGPPeer.
func (p *BGPPeer) Validate() error {
	var errs []error
	bad := func(f string, a ...any) { errs = append(errs, fmt.Errorf(f, a...)) }
	if err := checkName(p.Metadata.Name); err != nil {
		bad("%v", err)
	}
	s := &p.Spec
	if s.Node != "" && s.NodeSelector != "" {
		bad("spec.node and spec.nodeSelector cannot both be set")
	}
	if _, err := selector.Parse(s.NodeSelector); err != nil {
		bad("spec.nodeSelector: %v", err)
	}
	switch {
	case s.PeerIP.IsValid() && s.PeerSelector != "":
		bad("spec.peerIP and spec.peerSelector cannot both be set")
	case !s.PeerIP.IsValid() && s.PeerSelector == "":
		bad("spec.peerIP (with asNumber) or spec.peerSelector is required")
	case s.PeerIP.IsValid():
		if !s.PeerIP.Is4() {
			bad("spec.peerIP %s is not an IPv4 address", s.PeerIP)
		}
		if s.ASNumber == 0 {
			bad("spec.asNumber is required with spec.peerIP")
		}
	default:
		if _, err := selector.Parse(s.PeerSelector); err != nil {
			bad("spec.peerSelector: %v", err)
		}
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
