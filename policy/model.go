package policy

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	networkingv1 "k8s.io/api/networking/v1"
)

// Action is what a rule does with a packet it matches. A Verdict's Action
// is only ever Allow or Deny.
type Action string

// Rule actions, spelled as projectcalico.org/v3 spells them.
const (
	Allow Action = "Allow"
	Deny  Action = "Deny"
	Log   Action = "Log"
	Pass  Action = "Pass"
)

// Direction is the side of an endpoint a packet crosses: Ingress into it,
// Egress out of it.
type Direction uint8

// Directions.
const (
	Ingress Direction = iota
	Egress
)

func (d Direction) String() string {
	if d == Egress {
		return "Egress"
	}
	return "Ingress"
}

// MarshalText spells a direction as Calico's types field does.
func (d Direction) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// UnmarshalText reads Ingress or Egress.
func (d *Direction) UnmarshalText(b []byte) error {
	switch string(b) {
	case "Ingress":
		*d = Ingress
	case "Egress":
		*d = Egress
	default:
		return fmt.Errorf("type %q: want Ingress or Egress", b)
	}
	return nil
}

// DefaultTier is the tier of policies that name none, and of every
// Kubernetes NetworkPolicy.
const DefaultTier = "default"

// DefaultTierOrder is the default tier's order when Inputs does not declare
// it, as Calico creates it.
const DefaultTierOrder = 1_000_000

// KubernetesPolicyOrder is the order Calico gives Kubernetes NetworkPolicies
// in the default tier: before Calico policies without an order, after those
// ordered below 1000.
const KubernetesPolicyOrder = 1000

// Inputs is everything a Set is compiled from: the cluster's endpoints and
// every policy resource. Compile does not keep references into it.
type Inputs struct {
	// Endpoints is the cluster-wide view: every workload any selector can
	// name. Only those marked Local get compiled rules.
	Endpoints             []Endpoint
	Tiers                 []Tier
	NetworkPolicies       []Policy // namespaced (Namespace set)
	GlobalNetworkPolicies []Policy // cluster-wide (Namespace empty)
	KubernetesPolicies    []*networkingv1.NetworkPolicy
	NetworkSets           []NetworkSet // namespaced (Namespace set)
	GlobalNetworkSets     []NetworkSet // cluster-wide (Namespace empty)
	Profiles              []Profile
}

// Endpoint is a workload (a pod) as policy sees it.
type Endpoint struct {
	Key                  string // unique, e.g. "<namespace>/<pod>"
	Namespace            string
	Labels               map[string]string
	NamespaceLabels      map[string]string
	ServiceAccount       string
	ServiceAccountLabels map[string]string
	IP                   netip.Addr // IPv4
	Ports                []NamedPort
	// Profiles names the profiles that apply after the tiers, in order.
	// With none, the endpoint gets Calico's per-namespace profile for
	// Kubernetes pods, which allows everything.
	Profiles []string
	// Local: this node enforces policy for the endpoint.
	Local bool
}

// NamedPort is a container port with a name, which rules can name.
type NamedPort struct {
	Name     string
	Protocol Protocol // TCP when empty
	Port     uint16
}

// Tier is an ordered group of policies. Tiers run lowest order first; a
// tier without an order runs after every tier with one.
type Tier struct {
	Name  string
	Order *float64
	// DefaultAction is what happens when policies of the tier select the
	// endpoint but no rule of theirs decides: Deny (the default) or Pass.
	DefaultAction Action
}

// Policy is a Calico NetworkPolicy (Namespace set) or GlobalNetworkPolicy
// (Namespace empty), with projectcalico.org/v3's spec fields.
type Policy struct {
	Name      string `json:"-"`
	Namespace string `json:"-"`
	Tier      string `json:"tier,omitempty"` // DefaultTier when empty
	// Order: lower runs first; nil runs after every policy with one.
	Order    *float64 `json:"order,omitempty"`
	Selector string   `json:"selector,omitempty"`
	// NamespaceSelector and ServiceAccountSelector further narrow which
	// endpoints a GlobalNetworkPolicy applies to (ServiceAccountSelector
	// narrows a NetworkPolicy too).
	NamespaceSelector      string `json:"namespaceSelector,omitempty"`
	ServiceAccountSelector string `json:"serviceAccountSelector,omitempty"`
	// Types says which directions the policy applies to. Empty: Ingress,
	// plus Egress when there are egress rules (Egress alone when there are
	// only egress rules), as Calico defaults it.
	Types   []Direction `json:"types,omitempty"`
	Ingress []Rule      `json:"ingress,omitempty"`
	Egress  []Rule      `json:"egress,omitempty"`
}

// Rule is one rule of a policy or profile.
type Rule struct {
	Action      Action     `json:"action"`
	Protocol    Protocol   `json:"protocol,omitempty"`
	NotProtocol Protocol   `json:"notProtocol,omitempty"`
	ICMP        *ICMPMatch `json:"icmp,omitempty"`
	NotICMP     *ICMPMatch `json:"notICMP,omitempty"`
	Source      Entity     `json:"source,omitzero"`
	Destination Entity     `json:"destination,omitzero"`
}

// ICMPMatch matches an ICMP type and, when Code is set, code.
type ICMPMatch struct {
	Type *uint8 `json:"type,omitempty"`
	Code *uint8 `json:"code,omitempty"`
}

// Entity is the source or destination side of a rule. Every field set must
// match.
type Entity struct {
	Nets              []string             `json:"nets,omitempty"`
	NotNets           []string             `json:"notNets,omitempty"`
	Selector          string               `json:"selector,omitempty"`
	NotSelector       string               `json:"notSelector,omitempty"`
	NamespaceSelector string               `json:"namespaceSelector,omitempty"`
	Ports             []Port               `json:"ports,omitempty"`
	NotPorts          []Port               `json:"notPorts,omitempty"`
	ServiceAccounts   *ServiceAccountMatch `json:"serviceAccounts,omitempty"`
}

// ServiceAccountMatch selects endpoints by service account: by name (any
// of Names) and by the account's labels (Selector); both when both are set.
type ServiceAccountMatch struct {
	Names    []string `json:"names,omitempty"`
	Selector string   `json:"selector,omitempty"`
}

// NetworkSet is a labelled set of CIDRs that rule selectors can match: a
// NetworkSet (Namespace set) or GlobalNetworkSet (Namespace empty).
type NetworkSet struct {
	Name      string
	Namespace string
	Labels    map[string]string
	Nets      []string
}

// Profile holds rules that apply after the tiers (when no policy selects
// the endpoint in that direction, or the last tier passed), and labels that
// endpoints naming it inherit.
type Profile struct {
	Name          string
	LabelsToApply map[string]string
	Ingress       []Rule
	Egress        []Rule
}

// Protocol is a protocol name (TCP, UDP, ICMP, ICMPv6, SCTP, UDPLite, any
// case) or number 1-255. Empty matches any protocol.
type Protocol string

var protoNumbers = map[string]uint8{"tcp": 6, "udp": 17, "icmp": 1, "icmpv6": 58, "sctp": 132, "udplite": 136}

// Number is the IP protocol number.
func (p Protocol) Number() (uint8, error) {
	if n, ok := protoNumbers[strings.ToLower(string(p))]; ok {
		return n, nil
	}
	n, err := strconv.ParseUint(string(p), 10, 8)
	if err != nil || n == 0 {
		return 0, fmt.Errorf("protocol %q: want TCP, UDP, ICMP, ICMPv6, SCTP, UDPLite or 1-255", string(p))
	}
	return uint8(n), nil
}

// UnmarshalJSON accepts a name or a number.
func (p *Protocol) UnmarshalJSON(b []byte) error {
	var n uint8
	if err := json.Unmarshal(b, &n); err == nil {
		*p = Protocol(strconv.Itoa(int(n)))
		return nil
	}
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("protocol: want a name or a number: %s", b)
	}
	*p = Protocol(s)
	return nil
}

// Port is a port number, a range "min:max", or a named port.
type Port struct {
	Min, Max uint16
	Name     string
}

// ParsePort reads "80", "8000:8080" or a port name.
func ParsePort(s string) (Port, error) {
	if s == "" {
		return Port{}, fmt.Errorf("empty port")
	}
	if lo, hi, ok := strings.Cut(s, ":"); ok {
		a, err1 := strconv.ParseUint(lo, 10, 16)
		b, err2 := strconv.ParseUint(hi, 10, 16)
		if err1 != nil || err2 != nil || a > b {
			return Port{}, fmt.Errorf("port range %q: want min:max with 0 <= min <= max <= 65535", s)
		}
		return Port{Min: uint16(a), Max: uint16(b)}, nil
	}
	if s[0] >= '0' && s[0] <= '9' {
		n, err := strconv.ParseUint(s, 10, 16)
		if err != nil {
			return Port{}, fmt.Errorf("port %q: want 0-65535", s)
		}
		return Port{Min: uint16(n), Max: uint16(n)}, nil
	}
	if !validPortName(s) {
		return Port{}, fmt.Errorf("port %q: not a number, a min:max range or a port name (IANA service name: up to 15 of a-z, 0-9 and -, with a letter)", s)
	}
	return Port{Name: s}, nil
}

// validPortName checks a name as Kubernetes checks container port names.
func validPortName(s string) bool {
	if len(s) > 15 || s[0] == '-' || s[len(s)-1] == '-' || strings.Contains(s, "--") {
		return false
	}
	letter := false
	for _, c := range s {
		switch {
		case c >= 'a' && c <= 'z':
			letter = true
		case c >= '0' && c <= '9', c == '-':
		default:
			return false
		}
	}
	return letter
}

// UnmarshalJSON accepts a number or a string ParsePort reads.
func (p *Port) UnmarshalJSON(b []byte) error {
	var n uint16
	if err := json.Unmarshal(b, &n); err == nil {
		*p = Port{Min: n, Max: n}
		return nil
	}
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("port: want a number or a string: %s", b)
	}
	v, err := ParsePort(s)
	if err != nil {
		return err
	}
	*p = v
	return nil
}

func (p Port) String() string {
	switch {
	case p.Name != "":
		return p.Name
	case p.Min == p.Max:
		return strconv.Itoa(int(p.Min))
	}
	return fmt.Sprintf("%d:%d", p.Min, p.Max)
}

// MarshalJSON writes a number as a number and a name as a string, as
// Calico's manifests spell protocols.
func (p Protocol) MarshalJSON() ([]byte, error) {
	if n, err := strconv.ParseUint(string(p), 10, 8); err == nil {
		return []byte(strconv.FormatUint(n, 10)), nil
	}
	return json.Marshal(string(p))
}

// MarshalJSON writes a single port as a number, a range or a name as a
// string, so that what is written reads back as the same Port.
func (p Port) MarshalJSON() ([]byte, error) {
	if p.Name == "" && p.Min == p.Max {
		return []byte(strconv.Itoa(int(p.Min))), nil
	}
	return json.Marshal(p.String())
}

// IsZero says whether the entity matches everything (no field set), so
// that an empty source or destination is left out when written.
func (e Entity) IsZero() bool {
	return len(e.Nets) == 0 && len(e.NotNets) == 0 && e.Selector == "" && e.NotSelector == "" && e.NamespaceSelector == "" &&
		len(e.Ports) == 0 && len(e.NotPorts) == 0 && e.ServiceAccounts == nil
}
