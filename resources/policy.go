package resources

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/tortie-net/tortie/datastore"
	"github.com/tortie-net/tortie/policy"
)

// Policy kinds and workload endpoints, in Calico's shape.
const (
	KindNetworkPolicy       = "NetworkPolicy"
	KindGlobalNetworkPolicy = "GlobalNetworkPolicy"
	KindTier                = "Tier"
	KindNetworkSet          = "NetworkSet"
	KindGlobalNetworkSet    = "GlobalNetworkSet"
	KindProfile             = "Profile"
	KindWorkloadEndpoint    = "WorkloadEndpoint"
)

// CalicoPrefix is where Calico's etcd datastore keeps projectcalico.org/v3
// resources: <CalicoPrefix><plural>/<name>, or
// <CalicoPrefix><plural>/<namespace>/<name> for a namespaced kind. Policy
// resources and workload endpoints are stored there, as Calico stores
// them, so that tools reading Calico's layout find them.
const CalicoPrefix = "/calico/resources/v3/projectcalico.org/"

// DefaultNamespace is the namespace of a namespaced resource that names
// none, as calicoctl defaults it.
const DefaultNamespace = "default"

// NamespacedMeta is the metadata of a namespaced resource.
type NamespacedMeta struct {
	Name        string            `json:"name"`
	Namespace   string            `json:"namespace,omitempty"`
	Labels      map[string]string `json:"labels,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

// NetworkPolicy is a Calico NetworkPolicy: it applies to the endpoints of
// its namespace its selector picks.
type NetworkPolicy struct {
	APIVersion string         `json:"apiVersion"`
	Kind       string         `json:"kind"`
	Metadata   NamespacedMeta `json:"metadata"`
	Spec       policy.Policy  `json:"spec"`
}

// GlobalNetworkPolicy is a Calico GlobalNetworkPolicy: it applies to
// endpoints of every namespace.
type GlobalNetworkPolicy struct {
	APIVersion string        `json:"apiVersion"`
	Kind       string        `json:"kind"`
	Metadata   Meta          `json:"metadata"`
	Spec       policy.Policy `json:"spec"`
}

// Tier orders a group of policies.
type Tier struct {
	APIVersion string   `json:"apiVersion"`
	Kind       string   `json:"kind"`
	Metadata   Meta     `json:"metadata"`
	Spec       TierSpec `json:"spec"`
}

// TierSpec mirrors Calico's Tier spec.
type TierSpec struct {
	Order         *float64      `json:"order,omitempty"`
	DefaultAction policy.Action `json:"defaultAction,omitempty"`
}

// NetworkSet is a labelled set of CIDRs of one namespace that rule
// selectors can match.
type NetworkSet struct {
	APIVersion string         `json:"apiVersion"`
	Kind       string         `json:"kind"`
	Metadata   NamespacedMeta `json:"metadata"`
	Spec       NetworkSetSpec `json:"spec"`
}

// GlobalNetworkSet is a labelled set of CIDRs any rule selector can match.
type GlobalNetworkSet struct {
	APIVersion string         `json:"apiVersion"`
	Kind       string         `json:"kind"`
	Metadata   Meta           `json:"metadata"`
	Spec       NetworkSetSpec `json:"spec"`
}

// NetworkSetSpec mirrors Calico's (Global)NetworkSet spec.
type NetworkSetSpec struct {
	Nets []string `json:"nets,omitempty"`
}

// Profile holds rules that apply to endpoints naming it after the tiers,
// and labels those endpoints inherit (Calico's kns.<namespace> profiles
// carry a namespace's labels so).
type Profile struct {
	APIVersion string      `json:"apiVersion"`
	Kind       string      `json:"kind"`
	Metadata   Meta        `json:"metadata"`
	Spec       ProfileSpec `json:"spec"`
}

// ProfileSpec mirrors Calico's Profile spec.
type ProfileSpec struct {
	Ingress       []policy.Rule     `json:"ingress,omitempty"`
	Egress        []policy.Rule     `json:"egress,omitempty"`
	LabelsToApply map[string]string `json:"labelsToApply,omitempty"`
}

// NamespaceProfilePrefix starts the name of the profile Calico keeps per
// Kubernetes namespace ("kns.<namespace>"), whose labelsToApply are the
// namespace's labels.
const NamespaceProfilePrefix = "kns."

// The labels Calico puts on a Kubernetes pod's workload endpoint.
const (
	LabelNamespace    = "projectcalico.org/namespace"
	LabelOrchestrator = "projectcalico.org/orchestrator"
	LabelSAName       = "projectcalico.org/serviceaccount"
	OrchestratorK8s   = "k8s"
)

// WorkloadEndpoint is a pod's interface as Calico records it: its node,
// pod, addresses, profiles and (in metadata.labels) the pod's labels.
type WorkloadEndpoint struct {
	APIVersion string               `json:"apiVersion"`
	Kind       string               `json:"kind"`
	Metadata   NamespacedMeta       `json:"metadata"`
	Spec       WorkloadEndpointSpec `json:"spec"`
}

// WorkloadEndpointSpec mirrors the parts of Calico's spec policy uses.
type WorkloadEndpointSpec struct {
	Orchestrator       string         `json:"orchestrator,omitempty"`
	Workload           string         `json:"workload,omitempty"`
	Node               string         `json:"node"`
	ContainerID        string         `json:"containerID,omitempty"`
	Pod                string         `json:"pod,omitempty"`
	Endpoint           string         `json:"endpoint,omitempty"`
	ServiceAccountName string         `json:"serviceAccountName,omitempty"`
	IPNetworks         []string       `json:"ipNetworks,omitempty"`
	Profiles           []string       `json:"profiles,omitempty"`
	InterfaceName      string         `json:"interfaceName,omitempty"`
	MAC                string         `json:"mac,omitempty"`
	Ports              []EndpointPort `json:"ports,omitempty"`
}

// EndpointPort is a named container port rules can name.
type EndpointPort struct {
	Name     string          `json:"name"`
	Protocol policy.Protocol `json:"protocol,omitempty"`
	Port     uint16          `json:"port"`
}

// PolicyKey is the key the policy engine and the router name the
// endpoint's pod by: "<namespace>/<pod>".
func (w *WorkloadEndpoint) PolicyKey() string {
	pod := w.Spec.Pod
	if pod == "" {
		pod = w.Spec.Workload
	}
	return w.Metadata.Namespace + "/" + pod
}

// Addr is the endpoint's first IPv4 address (invalid when it has none).
func (w *WorkloadEndpoint) Addr() netip.Addr {
	for _, n := range w.Spec.IPNetworks {
		if p, err := parseNet(n); err == nil && p.Addr().Is4() {
			return p.Addr()
		}
	}
	return netip.Addr{}
}

func parseNet(s string) (netip.Prefix, error) {
	if p, err := netip.ParsePrefix(s); err == nil {
		return p, nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is not a CIDR or an address", s)
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// checkNamespaced checks a namespaced resource's name and namespace, and
// defaults the namespace.
func checkNamespaced(md *NamespacedMeta) []error {
	var errs []error
	if err := checkName(md.Name); err != nil {
		errs = append(errs, err)
	}
	if md.Namespace == "" {
		md.Namespace = DefaultNamespace
	}
	if !dnsLabel(md.Namespace) {
		errs = append(errs, fmt.Errorf("metadata.namespace %q: want a DNS label (lower-case letters, digits and '-', at most 63)", md.Namespace))
	}
	return append(errs, checkLabels(md.Labels)...)
}

func dnsLabel(s string) bool {
	return len(s) <= 63 && !strings.Contains(s, ".") && dnsSubdomain(s)
}

func checkLabels(labels map[string]string) []error {
	var errs []error
	for k := range labels {
		if k == "" || strings.ContainsAny(k, " \t\n'\"") {
			errs = append(errs, fmt.Errorf("metadata.labels: bad key %q", k))
		}
	}
	return errs
}

// checkPolicy compiles p on its own, so that a policy is refused for
// exactly what the engine would refuse (selectors, nets, ports, protocols,
// actions, ICMP, types).
func checkPolicy(p policy.Policy) error {
	in := &policy.Inputs{}
	if p.Tier != "" && p.Tier != policy.DefaultTier {
		in.Tiers = []policy.Tier{{Name: p.Tier}}
	}
	if p.Namespace != "" {
		in.NetworkPolicies = []policy.Policy{p}
	} else {
		in.GlobalNetworkPolicies = []policy.Policy{p}
	}
	_, err := policy.Compile(in)
	return err
}

// Policy is the spec as the policy engine takes it.
func (p *NetworkPolicy) Policy() policy.Policy {
	out := p.Spec
	out.Name, out.Namespace = p.Metadata.Name, p.Metadata.Namespace
	return out
}

// Policy is the spec as the policy engine takes it.
func (p *GlobalNetworkPolicy) Policy() policy.Policy {
	out := p.Spec
	out.Name, out.Namespace = p.Metadata.Name, ""
	return out
}

// Validate checks a NetworkPolicy and defaults its namespace.
func (p *NetworkPolicy) Validate() error {
	errs := checkNamespaced(&p.Metadata)
	if len(errs) == 0 {
		if err := checkPolicy(p.Policy()); err != nil {
			errs = append(errs, fmt.Errorf("spec: %w", err))
		}
	}
	return wrap(KindNetworkPolicy, p.Metadata.Name, errs)
}

// Validate checks a GlobalNetworkPolicy.
func (p *GlobalNetworkPolicy) Validate() error {
	var errs []error
	if err := checkName(p.Metadata.Name); err != nil {
		errs = append(errs, err)
	}
	errs = append(errs, checkLabels(p.Metadata.Labels)...)
	if len(errs) == 0 {
		if err := checkPolicy(p.Policy()); err != nil {
			errs = append(errs, fmt.Errorf("spec: %w", err))
		}
	}
	return wrap(KindGlobalNetworkPolicy, p.Metadata.Name, errs)
}

// Tier is the tier as the policy engine takes it.
func (t *Tier) Tier() policy.Tier {
	return policy.Tier{Name: t.Metadata.Name, Order: t.Spec.Order, DefaultAction: t.Spec.DefaultAction}
}

// Validate checks a tier.
func (t *Tier) Validate() error {
	var errs []error
	if err := checkName(t.Metadata.Name); err != nil {
		errs = append(errs, err)
	} else if _, err := policy.Compile(&policy.Inputs{Tiers: []policy.Tier{t.Tier()}}); err != nil {
		errs = append(errs, fmt.Errorf("spec: %w", err))
	}
	return wrap(KindTier, t.Metadata.Name, errs)
}

func checkNets(nets []string) []error {
	var errs []error
	for _, n := range nets {
		if _, err := parseNet(n); err != nil {
			errs = append(errs, fmt.Errorf("spec.nets: %v", err))
		}
	}
	return errs
}

// Set is the network set as the policy engine takes it.
func (s *NetworkSet) Set() policy.NetworkSet {
	return policy.NetworkSet{Name: s.Metadata.Name, Namespace: s.Metadata.Namespace, Labels: s.Metadata.Labels, Nets: s.Spec.Nets}
}

// Set is the network set as the policy engine takes it.
func (s *GlobalNetworkSet) Set() policy.NetworkSet {
	return policy.NetworkSet{Name: s.Metadata.Name, Labels: s.Metadata.Labels, Nets: s.Spec.Nets}
}

// Validate checks a NetworkSet and defaults its namespace.
func (s *NetworkSet) Validate() error {
	errs := checkNamespaced(&s.Metadata)
	errs = append(errs, checkNets(s.Spec.Nets)...)
	return wrap(KindNetworkSet, s.Metadata.Name, errs)
}

// Validate checks a GlobalNetworkSet.
func (s *GlobalNetworkSet) Validate() error {
	var errs []error
	if err := checkName(s.Metadata.Name); err != nil {
		errs = append(errs, err)
	}
	errs = append(errs, checkLabels(s.Metadata.Labels)...)
	errs = append(errs, checkNets(s.Spec.Nets)...)
	return wrap(KindGlobalNetworkSet, s.Metadata.Name, errs)
}

// Profile is the profile as the policy engine takes it.
func (p *Profile) Profile() policy.Profile {
	return policy.Profile{Name: p.Metadata.Name, LabelsToApply: p.Spec.LabelsToApply, Ingress: p.Spec.Ingress, Egress: p.Spec.Egress}
}

// Validate checks a profile: its rules are compiled for an endpoint that
// names it, as the engine compiles them.
func (p *Profile) Validate() error {
	var errs []error
	if err := checkName(p.Metadata.Name); err != nil {
		errs = append(errs, err)
	} else {
		ep := policy.Endpoint{Key: "check/check", Namespace: "check", IP: netip.MustParseAddr("192.0.2.1"), Profiles: []string{p.Metadata.Name}, Local: true}
		if _, err := policy.Compile(&policy.Inputs{Endpoints: []policy.Endpoint{ep}, Profiles: []policy.Profile{p.Profile()}}); err != nil {
			errs = append(errs, fmt.Errorf("spec: %w", err))
		}
	}
	for k := range p.Spec.LabelsToApply {
		if k == "" || strings.ContainsAny(k, " \t\n'\"") {
			errs = append(errs, fmt.Errorf("spec.labelsToApply: bad key %q", k))
		}
	}
	return wrap(KindProfile, p.Metadata.Name, errs)
}

// Validate checks a workload endpoint and defaults its namespace.
func (w *WorkloadEndpoint) Validate() error {
	errs := checkNamespaced(&w.Metadata)
	if w.Spec.Node == "" {
		errs = append(errs, fmt.Errorf("spec.node is required"))
	}
	if w.Spec.Pod == "" && w.Spec.Workload == "" {
		errs = append(errs, fmt.Errorf("spec.pod (or spec.workload) is required"))
	}
	for _, n := range w.Spec.IPNetworks {
		if _, err := parseNet(n); err != nil {
			errs = append(errs, fmt.Errorf("spec.ipNetworks: %v", err))
		}
	}
	for i, pt := range w.Spec.Ports {
		if _, err := policy.ParsePort(pt.Name); err != nil || pt.Name == "" || pt.Name[0] >= '0' && pt.Name[0] <= '9' {
			errs = append(errs, fmt.Errorf("spec.ports[%d]: name %q: want a port name", i, pt.Name))
		}
		if pt.Protocol != "" {
			if _, err := pt.Protocol.Number(); err != nil {
				errs = append(errs, fmt.Errorf("spec.ports[%d]: %v", i, err))
			}
		}
	}
	return wrap(KindWorkloadEndpoint, w.Metadata.Name, errs)
}

// Endpoint is the endpoint as the policy engine sees it, given the
// namespace's labels and whether this node enforces its policy.
func (w *WorkloadEndpoint) Endpoint(nsLabels map[string]string, local bool) policy.Endpoint {
	e := policy.Endpoint{Key: w.PolicyKey(), Namespace: w.Metadata.Namespace, Labels: w.Metadata.Labels, NamespaceLabels: nsLabels,
		ServiceAccount: w.Spec.ServiceAccountName, IP: w.Addr(), Profiles: w.Spec.Profiles, Local: local}
	for _, p := range w.Spec.Ports {
		e.Ports = append(e.Ports, policy.NamedPort{Name: p.Name, Protocol: p.Protocol, Port: p.Port})
	}
	return e
}

func globalKey(dir, name string) string { return CalicoPrefix + dir + "/" + name }
func nsKey(dir string, md NamespacedMeta) string {
	return CalicoPrefix + dir + "/" + md.Namespace + "/" + md.Name
}

func (p *NetworkPolicy) key() string { return nsKey("networkpolicies", p.Metadata) }
func (p *GlobalNetworkPolicy) key() string {
	return globalKey("globalnetworkpolicies", p.Metadata.Name)
}
func (t *Tier) key() string             { return globalKey("tiers", t.Metadata.Name) }
func (s *NetworkSet) key() string       { return nsKey("networksets", s.Metadata) }
func (s *GlobalNetworkSet) key() string { return globalKey("globalnetworksets", s.Metadata.Name) }
func (p *Profile) key() string          { return globalKey("profiles", p.Metadata.Name) }
func (w *WorkloadEndpoint) key() string { return nsKey("workloadendpoints", w.Metadata) }

func (p *NetworkPolicy) setVersion() { p.APIVersion, p.Kind = CalicoAPIVersion, KindNetworkPolicy }
func (p *GlobalNetworkPolicy) setVersion() {
	p.APIVersion, p.Kind = CalicoAPIVersion, KindGlobalNetworkPolicy
}
func (t *Tier) setVersion()       { t.APIVersion, t.Kind = CalicoAPIVersion, KindTier }
func (s *NetworkSet) setVersion() { s.APIVersion, s.Kind = CalicoAPIVersion, KindNetworkSet }
func (s *GlobalNetworkSet) setVersion() {
	s.APIVersion, s.Kind = CalicoAPIVersion, KindGlobalNetworkSet
}
func (p *Profile) setVersion() { p.APIVersion, p.Kind = CalicoAPIVersion, KindProfile }
func (w *WorkloadEndpoint) setVersion() {
	w.APIVersion, w.Kind = CalicoAPIVersion, KindWorkloadEndpoint
}

// calicoDirs maps the kinds stored under CalicoPrefix to their
// directories; namespaced says which have a namespace level.
var (
	calicoDirs = map[string]string{
		KindNetworkPolicy: "networkpolicies", KindGlobalNetworkPolicy: "globalnetworkpolicies", KindTier: "tiers",
		KindNetworkSet: "networksets", KindGlobalNetworkSet: "globalnetworksets", KindProfile: "profiles",
		KindWorkloadEndpoint: "workloadendpoints",
	}
	namespaced = map[string]bool{KindNetworkPolicy: true, KindNetworkSet: true, KindWorkloadEndpoint: true}
)

// kindPrefix is the datastore directory of kind's records ("" for an
// unknown kind).
func kindPrefix(kind string) string {
	if d, ok := calicoDirs[kind]; ok {
		return CalicoPrefix + d + "/"
	}
	if d, ok := kindDirs[kind]; ok {
		return Prefix + d + "/"
	}
	return ""
}

// Namespaced says whether resources of kind live in a namespace (and are
// named "<namespace>/<name>" to Delete).
func Namespaced(kind string) bool { return namespaced[kind] }

// PolicyResources is every stored policy resource and workload endpoint.
type PolicyResources struct {
	NetworkPolicies       []*NetworkPolicy
	GlobalNetworkPolicies []*GlobalNetworkPolicy
	Tiers                 []*Tier
	NetworkSets           []*NetworkSet
	GlobalNetworkSets     []*GlobalNetworkSet
	Profiles              []*Profile
	WorkloadEndpoints     []*WorkloadEndpoint
	// Rev is the store revision the first list read at: a watch from it
	// misses nothing that changed afterwards.
	Rev int64
}

// PolicyResourcesAt lists every policy resource and workload endpoint,
// skipping (and reporting) invalid records.
func (c Client) PolicyResourcesAt(ctx context.Context) (*PolicyResources, error) {
	var r PolicyResources
	var err error
	if r.NetworkPolicies, r.Rev, err = list[NetworkPolicy](ctx, c, KindNetworkPolicy); err != nil {
		return nil, err
	}
	if r.GlobalNetworkPolicies, _, err = list[GlobalNetworkPolicy](ctx, c, KindGlobalNetworkPolicy); err != nil {
		return nil, err
	}
	if r.Tiers, _, err = list[Tier](ctx, c, KindTier); err != nil {
		return nil, err
	}
	if r.NetworkSets, _, err = list[NetworkSet](ctx, c, KindNetworkSet); err != nil {
		return nil, err
	}
	if r.GlobalNetworkSets, _, err = list[GlobalNetworkSet](ctx, c, KindGlobalNetworkSet); err != nil {
		return nil, err
	}
	if r.Profiles, _, err = list[Profile](ctx, c, KindProfile); err != nil {
		return nil, err
	}
	if r.WorkloadEndpoints, _, err = list[WorkloadEndpoint](ctx, c, KindWorkloadEndpoint); err != nil {
		return nil, err
	}
	return &r, nil
}

// List lists the resources of kind, as their Go types.
func (c Client) List(ctx context.Context, kind string) (any, error) {
	var out any
	var err error
	switch kind {
	case KindIPPool:
		out, _, err = list[IPPool](ctx, c, kind)
	case KindNode:
		out, _, err = list[Node](ctx, c, kind)
	case KindBGPConfiguration:
		out, _, err = list[BGPConfiguration](ctx, c, kind)
	case KindBGPPeer:
		out, _, err = list[BGPPeer](ctx, c, kind)
	case KindBGPFilter:
		out, _, err = list[BGPFilter](ctx, c, kind)
	case KindIPReservation:
		out, _, err = list[IPReservation](ctx, c, kind)
	case KindFelixConfiguration:
		out, _, err = list[FelixConfiguration](ctx, c, kind)
	case KindClusterInformation:
		out, _, err = list[ClusterInformation](ctx, c, kind)
	case KindNetworkPolicy:
		out, _, err = list[NetworkPolicy](ctx, c, kind)
	case KindGlobalNetworkPolicy:
		out, _, err = list[GlobalNetworkPolicy](ctx, c, kind)
	case KindTier:
		out, _, err = list[Tier](ctx, c, kind)
	case KindNetworkSet:
		out, _, err = list[NetworkSet](ctx, c, kind)
	case KindGlobalNetworkSet:
		out, _, err = list[GlobalNetworkSet](ctx, c, kind)
	case KindProfile:
		out, _, err = list[Profile](ctx, c, kind)
	case KindWorkloadEndpoint:
		out, _, err = list[WorkloadEndpoint](ctx, c, kind)
	default:
		err = fmt.Errorf("unknown kind %q", kind)
	}
	if err != nil {
		return nil, err
	}
	return out, nil
}

// WorkloadEndpoint reads one workload endpoint (nil, nil when there is
// none).
func (c Client) WorkloadEndpoint(ctx context.Context, namespace, name string) (*WorkloadEndpoint, error) {
	md := NamespacedMeta{Name: name, Namespace: namespace}
	kv, err := c.S.Get(ctx, nsKey("workloadendpoints", md))
	if errors.Is(err, datastore.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return decodeStored[WorkloadEndpoint](kv)
}

// LabelWorkloadEndpoint sets and removes labels of the workload endpoint
// "<namespace>/<name>" (a name alone is in the default namespace), as
// kubectl label does for a pod: pods get their labels so when there is no
// Kubernetes API to take them from. The write is compare-and-swap, so a
// concurrent rewrite of the record (the pod's next ADD) is not lost.
func (c Client) LabelWorkloadEndpoint(ctx context.Context, name string, set map[string]string, remove []string) (*WorkloadEndpoint, error) {
	ns, n, ok := strings.Cut(name, "/")
	if !ok {
		ns, n = DefaultNamespace, name
	}
	for k := range set {
		if k == "" || strings.ContainsAny(k, " \t\n'\"=") {
			return nil, fmt.Errorf("label key %q: want a key without spaces, quotes or '='", k)
		}
	}
	for attempt := 0; attempt < 10; attempt++ {
		kv, err := c.S.Get(ctx, nsKey("workloadendpoints", NamespacedMeta{Name: n, Namespace: ns}))
		if errors.Is(err, datastore.ErrNotFound) {
			return nil, fmt.Errorf("WorkloadEndpoint %s/%s does not exist", ns, n)
		}
		if err != nil {
			return nil, err
		}
		w, err := decodeStored[WorkloadEndpoint](kv)
		if err != nil {
			return nil, fmt.Errorf("WorkloadEndpoint %s/%s: stored record is invalid: %v", ns, n, err)
		}
		labels := map[string]string{}
		for k, v := range w.Metadata.Labels {
			labels[k] = v
		}
		for _, k := range remove {
			delete(labels, k)
		}
		for k, v := range set {
			labels[k] = v
		}
		w.Metadata.Labels = labels
		if err := w.Validate(); err != nil {
			return nil, err
		}
		b, err := json.Marshal(w)
		if err != nil {
			return nil, err
		}
		if _, err := c.S.Update(ctx, kv.Key, b, kv.Rev); err == nil {
			return w, nil
		} else if !errors.Is(err, datastore.ErrConflict) {
			return nil, err
		}
	}
	return nil, fmt.Errorf("WorkloadEndpoint %s/%s: changed by others while being labelled; try again", ns, n)
}

// DeleteWorkloadEndpoint removes the workload endpoint namespace/name if
// it still belongs to containerID (or names no container): a record a
// newer sandbox of the pod has rewritten is left alone. The delete is
// compare-and-swap on the revision read. A record that does not exist is
// no error.
func (c Client) DeleteWorkloadEndpoint(ctx context.Context, namespace, name, containerID string) error {
	kv, err := c.S.Get(ctx, nsKey("workloadendpoints", NamespacedMeta{Name: name, Namespace: namespace}))
	if errors.Is(err, datastore.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	// An invalid record is removed too: it is this pod's name, and no one
	// can use it.
	if w, derr := decodeStored[WorkloadEndpoint](kv); derr == nil && w.Spec.ContainerID != "" && w.Spec.ContainerID != containerID {
		return nil
	}
	err = c.S.Delete(ctx, kv.Key, kv.Rev)
	if errors.Is(err, datastore.ErrNotFound) || errors.Is(err, datastore.ErrConflict) {
		// Gone already, or rewritten meanwhile (by the pod's next ADD).
		return nil
	}
	return err
}

// checkTiers refuses a policy in a tier that neither exists nor is applied
// with it, as Calico does: the policy would never run, and would stop the
// node's policy from compiling.
func (c Client) checkTiers(ctx context.Context, objs []Object) error {
	need := map[string]string{} // tier -> a policy in it
	have := map[string]bool{policy.DefaultTier: true}
	for _, o := range objs {
		var tier, name string
		switch p := o.(type) {
		case *NetworkPolicy:
			tier, name = p.Spec.Tier, p.Metadata.Namespace+"/"+p.Metadata.Name
		case *GlobalNetworkPolicy:
			tier, name = p.Spec.Tier, p.Metadata.Name
		case *Tier:
			have[p.Metadata.Name] = true
		}
		if tier != "" {
			need[tier] = name
		}
	}
	missing := false
	for t := range need {
		missing = missing || !have[t]
	}
	if !missing {
		return nil
	}
	tiers, _, err := list[Tier](ctx, c, KindTier)
	if err != nil {
		return err
	}
	for _, t := range tiers {
		have[t.Metadata.Name] = true
	}
	for t, p := range need {
		if !have[t] {
			return fmt.Errorf("policy %q: tier %q does not exist (apply the Tier first, or with it)", p, t)
		}
	}
	return nil
}
