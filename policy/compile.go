package policy

import (
	"cmp"
	"fmt"
	"math"
	"net/netip"
	"slices"

	"github.com/tortie-net/tortie/selector"
)

// Labels Calico adds to what selectors see.
const (
	labelNamespace      = "projectcalico.org/namespace"
	labelOrchestrator   = "projectcalico.org/orchestrator"
	labelServiceAccount = "projectcalico.org/serviceaccount"
	labelName           = "projectcalico.org/name"
)

// epInfo is an endpoint with the labels each kind of selector sees.
type epInfo struct {
	ep       *Endpoint
	ip       uint32
	labels   map[string]string // pod labels, profile labels, Calico's own
	nsLabels map[string]string // namespace labels and projectcalico.org/name
	saLabels map[string]string // service account labels and projectcalico.org/name
}

type setInfo struct {
	ns       string
	labels   map[string]string
	nsLabels map[string]string
	prefixes []netip.Prefix
}

// compiler holds what Compile resolves selectors against.
type compiler struct {
	eps      []epInfo
	sets     []setInfo // namespaced and global network sets
	profiles map[string]*Profile
}

// ipolicy is a policy of any kind after its rules are compiled.
type ipolicy struct {
	name    string // as Verdicts name it
	tier    string
	order   float64 // +Inf: none
	types   [2]bool
	applies func(e *epInfo) bool
	rules   [2][]rule
}

type itier struct {
	name   string
	order  float64
	action Action
}

// Compile validates inputs and compiles them into a Set. Any invalid
// resource is an error naming it; nothing is partly applied.
func Compile(in *Inputs) (*Set, error) {
	c := &compiler{profiles: map[string]*Profile{}}
	for i := range in.Profiles {
		p := &in.Profiles[i]
		if p.Name == "" {
			return nil, fmt.Errorf("profile %d: no name", i)
		}
		if _, dup := c.profiles[p.Name]; dup {
			return nil, fmt.Errorf("profile %q: defined twice", p.Name)
		}
		c.profiles[p.Name] = p
	}
	if err := c.addEndpoints(in.Endpoints); err != nil {
		return nil, err
	}
	if err := c.addSets(in); err != nil {
		return nil, err
	}
	tiers, err := compileTiers(in.Tiers)
	if err != nil {
		return nil, err
	}
	var pols []*ipolicy
	for i := range in.NetworkPolicies {
		p := &in.NetworkPolicies[i]
		if p.Namespace == "" {
			return nil, fmt.Errorf("NetworkPolicy %q: no namespace", p.Name)
		}
		ip, err := c.calicoPolicy(p)
		if err != nil {
			return nil, err
		}
		pols = append(pols, ip)
	}
	for i := range in.GlobalNetworkPolicies {
		p := &in.GlobalNetworkPolicies[i]
		if p.Namespace != "" {
			return nil, fmt.Errorf("GlobalNetworkPolicy %q: has a namespace (%q)", p.Name, p.Namespace)
		}
		ip, err := c.calicoPolicy(p)
		if err != nil {
			return nil, err
		}
		pols = append(pols, ip)
	}
	for i, kp := range in.KubernetesPolicies {
		if kp == nil {
			return nil, fmt.Errorf("kubernetes NetworkPolicy %d: nil", i)
		}
		ip, err := c.kubePolicy(kp)
		if err != nil {
			return nil, err
		}
		pols = append(pols, ip)
	}
	tierIdx := map[string]int{}
	for i, t := range tiers {
		tierIdx[t.name] = i
	}
	for _, p := range pols {
		if _, ok := tierIdx[p.tier]; !ok {
			return nil, fmt.Errorf("policy %q: tier %q does not exist", p.name, p.tier)
		}
	}
	// Within a tier: by order, then by name, as Calico sorts.
	slices.SortStableFunc(pols, func(a, b *ipolicy) int {
		if x := cmp.Compare(tierIdx[a.tier], tierIdx[b.tier]); x != 0 {
			return x
		}
		if x := cmp.Compare(a.order, b.order); x != 0 {
			return x
		}
		return cmp.Compare(a.name, b.name)
	})

	s := &Set{index: map[string]int{}, counters: []Counter{{Decider: ByDefault}}}
	ctrs := map[Counter]int32{s.counters[0]: 0}
	for i := range c.eps {
		e := &c.eps[i]
		if !e.ep.Local {
			continue
		}
		var progs [2][]rule
		for dir := Ingress; dir <= Egress; dir++ {
			prog, err := c.program(e, dir, tiers, pols)
			if err != nil {
				return nil, err
			}
			s.number(prog, ctrs)
			progs[dir] = prog
		}
		s.index[e.ep.Key] = len(s.keys)
		s.keys = append(s.keys, e.ep.Key)
		s.progs = append(s.progs, progs)
	}
	return s, nil
}

// number gives every deciding entry of prog its Verdict.Counter, adding
// what is new to s.counters.
func (s *Set) number(prog []rule, ctrs map[Counter]int32) {
	for k := range prog {
		r := &prog[k]
		var c Counter
		switch r.kind {
		case kRule:
			c = Counter{Decider: r.decider, Tier: r.tier, Policy: r.policy}
		case kTierEnd:
			c = Counter{Decider: ByTierEnd, Tier: r.tier}
		case kProfileEnd:
			c = Counter{Decider: ByProfileEnd}
		default:
			c = Counter{Decider: ByDefault}
		}
		id, ok := ctrs[c]
		if !ok {
			id = int32(len(s.counters))
			ctrs[c] = id
			s.counters = append(s.counters, c)
		}
		r.counter = id
	}
}

// program lays out one endpoint's rules for one direction: each tier with
// a policy that applies, its policies in order then the tier's end; then
// the profiles and their end, or the default allow.
func (c *compiler) program(e *epInfo, dir Direction, tiers []itier, pols []*ipolicy) ([]rule, error) {
	var prog []rule
	var passFix []int // entries whose next is the start of what follows their tier
	j := 0
	for _, t := range tiers {
		start := len(prog)
		for ; j < len(pols) && pols[j].tier == t.name; j++ {
			p := pols[j]
			if !p.types[dir] || !p.applies(e) {
				continue
			}
			for _, r := range p.rules[dir] {
				if r.action == Pass {
					passFix = append(passFix, len(prog))
				}
				prog = append(prog, r)
			}
		}
		if len(prog) == start && !c.tierApplies(e, dir, t, pols) {
			continue
		}
		end := rule{kind: kTierEnd, action: t.action, tier: t.name, index: -1}
		if t.action == Pass {
			passFix = append(passFix, len(prog))
		}
		prog = append(prog, end)
		for _, k := range passFix {
			prog[k].next = int32(len(prog))
		}
		passFix = passFix[:0]
	}
	if len(e.ep.Profiles) == 0 {
		return append(prog, rule{kind: kDefaultAllow, action: Allow, index: -1}), nil
	}
	for _, name := range e.ep.Profiles {
		p := c.profiles[name]
		rules := p.Ingress
		if dir == Egress {
			rules = p.Egress
		}
		for i := range rules {
			r, err := c.calicoRule(&rules[i], "", true)
			if err != nil {
				return nil, fmt.Errorf("profile %q %s rule %d: %w", name, dir, i, err)
			}
			r.decider, r.index, r.policy = ByProfile, i, name
			if r.action == Pass {
				passFix = append(passFix, len(prog))
			}
			prog = append(prog, r)
		}
	}
	for _, k := range passFix {
		prog[k].next = int32(len(prog))
	}
	return append(prog, rule{kind: kProfileEnd, action: Deny, index: -1}), nil
}

// tierApplies says whether some policy of the tier selects the endpoint
// in dir even though it contributed no rule (a policy with no rules in that
// direction still isolates it).
func (c *compiler) tierApplies(e *epInfo, dir Direction, t itier, pols []*ipolicy) bool {
	for _, p := range pols {
		if p.tier == t.name && p.types[dir] && p.applies(e) {
			return true
		}
	}
	return false
}

func compileTiers(ts []Tier) ([]itier, error) {
	var out []itier
	seen := map[string]bool{}
	for _, t := range ts {
		if t.Name == "" {
			return nil, fmt.Errorf("tier with no name")
		}
		if seen[t.Name] {
			return nil, fmt.Errorf("tier %q: defined twice", t.Name)
		}
		seen[t.Name] = true
		it := itier{name: t.Name, order: math.Inf(1), action: t.DefaultAction}
		if t.Order != nil {
			if math.IsNaN(*t.Order) {
				return nil, fmt.Errorf("tier %q: order is NaN", t.Name)
			}
			it.order = *t.Order
		}
		switch it.action {
		case "":
			it.action = Deny
		case Deny, Pass:
		default:
			return nil, fmt.Errorf("tier %q: defaultAction %q: want Deny or Pass", t.Name, t.DefaultAction)
		}
		out = append(out, it)
	}
	if !seen[DefaultTier] {
		out = append(out, itier{name: DefaultTier, order: DefaultTierOrder, action: Deny})
	}
	slices.SortFunc(out, func(a, b itier) int {
		if x := cmp.Compare(a.order, b.order); x != 0 {
			return x
		}
		return cmp.Compare(a.name, b.name)
	})
	return out, nil
}

func (c *compiler) addEndpoints(eps []Endpoint) error {
	seen := map[string]bool{}
	for i := range eps {
		ep := &eps[i]
		if ep.Key == "" {
			return fmt.Errorf("endpoint %d: no key", i)
		}
		if seen[ep.Key] {
			return fmt.Errorf("endpoint %q: listed twice", ep.Key)
		}
		seen[ep.Key] = true
		if !ep.IP.Is4() {
			return fmt.Errorf("endpoint %q: address %v is not IPv4", ep.Key, ep.IP)
		}
		for _, np := range ep.Ports {
			if np.Protocol != "" {
				if _, err := np.Protocol.Number(); err != nil {
					return fmt.Errorf("endpoint %q: port %q: %w", ep.Key, np.Name, err)
				}
			}
		}
		labels := map[string]string{}
		for _, name := range ep.Profiles {
			p, ok := c.profiles[name]
			if !ok {
				return fmt.Errorf("endpoint %q: profile %q does not exist", ep.Key, name)
			}
			for k, v := range p.LabelsToApply {
				labels[k] = v
			}
		}
		for k, v := range ep.Labels {
			labels[k] = v
		}
		labels[labelNamespace] = ep.Namespace
		labels[labelOrchestrator] = "k8s"
		if ep.ServiceAccount != "" {
			labels[labelServiceAccount] = ep.ServiceAccount
		}
		c.eps = append(c.eps, epInfo{
			ep:       ep,
			ip:       ip4(ep.IP),
			labels:   labels,
			nsLabels: namespaceLabels(ep.NamespaceLabels, ep.Namespace),
			saLabels: withName(ep.ServiceAccountLabels, ep.ServiceAccount),
		})
	}
	return nil
}

// namespaceLabels adds the labels every namespace has: the API server's
// kubernetes.io/metadata.name and Calico's projectcalico.org/name.
func namespaceLabels(m map[string]string, name string) map[string]string {
	out := withName(m, name)
	out[labelMetadataName] = name
	return out
}

func withName(m map[string]string, name string) map[string]string {
	out := make(map[string]string, len(m)+1)
	for k, v := range m {
		out[k] = v
	}
	out[labelName] = name
	return out
}

func (c *compiler) addSets(in *Inputs) error {
	nsLabels := map[string]map[string]string{}
	for i := range c.eps {
		nsLabels[c.eps[i].ep.Namespace] = c.eps[i].nsLabels
	}
	add := func(kind string, ns NetworkSet) error {
		si := setInfo{ns: ns.Namespace, labels: map[string]string{}}
		for k, v := range ns.Labels {
			si.labels[k] = v
		}
		if ns.Namespace != "" {
			si.labels[labelNamespace] = ns.Namespace
			si.nsLabels = nsLabels[ns.Namespace]
			if si.nsLabels == nil {
				si.nsLabels = namespaceLabels(nil, ns.Namespace)
			}
		}
		for _, n := range ns.Nets {
			p, err := parseNet(n)
			if err != nil {
				return fmt.Errorf("%s %q: %w", kind, ns.Name, err)
			}
			if p.Addr().Is4() {
				si.prefixes = append(si.prefixes, p)
			}
		}
		c.sets = append(c.sets, si)
		return nil
	}
	for _, ns := range in.NetworkSets {
		if ns.Namespace == "" {
			return fmt.Errorf("NetworkSet %q: no namespace", ns.Name)
		}
		if err := add("NetworkSet", ns); err != nil {
			return err
		}
	}
	for _, ns := range in.GlobalNetworkSets {
		if ns.Namespace != "" {
			return fmt.Errorf("GlobalNetworkSet %q: has a namespace", ns.Name)
		}
		if err := add("GlobalNetworkSet", ns); err != nil {
			return err
		}
	}
	return nil
}

// parseNet reads a CIDR or a bare address (a /32 or /128).
func parseNet(s string) (netip.Prefix, error) {
	if p, err := netip.ParsePrefix(s); err == nil {
		return p, nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("net %q: not a CIDR or address", s)
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

func parseSel(s string) (*selector.Selector, error) {
	if s == "" {
		return nil, nil
	}
	return selector.Parse(s)
}

// calicoPolicy compiles a Calico NetworkPolicy or GlobalNetworkPolicy.
func (c *compiler) calicoPolicy(p *Policy) (*ipolicy, error) {
	name := p.Name
	if p.Namespace != "" {
		name = p.Namespace + "/" + p.Name
	}
	if p.Name == "" {
		return nil, fmt.Errorf("policy in namespace %q: no name", p.Namespace)
	}
	fail := func(err error) (*ipolicy, error) { return nil, fmt.Errorf("policy %q: %w", name, err) }
	ip := &ipolicy{name: name, tier: p.Tier, order: math.Inf(1)}
	if ip.tier == "" {
		ip.tier = DefaultTier
	}
	if p.Order != nil {
		if math.IsNaN(*p.Order) {
			return fail(fmt.Errorf("order is NaN"))
		}
		ip.order = *p.Order
	}
	if len(p.Types) == 0 {
		ip.types[Ingress] = len(p.Ingress) > 0 || len(p.Egress) == 0
		ip.types[Egress] = len(p.Egress) > 0
	}
	for _, t := range p.Types {
		if t > Egress {
			return fail(fmt.Errorf("type %d: want Ingress or Egress", t))
		}
		ip.types[t] = true
	}
	sel, err := parseSel(p.Selector)
	if err != nil {
		return fail(err)
	}
	nsSel, err := parseSel(p.NamespaceSelector)
	if err != nil {
		return fail(err)
	}
	if nsSel != nil && p.Namespace != "" {
		return fail(fmt.Errorf("namespaceSelector is for GlobalNetworkPolicy only"))
	}
	saSel, err := parseSel(p.ServiceAccountSelector)
	if err != nil {
		return fail(err)
	}
	ns := p.Namespace
	ip.applies = func(e *epInfo) bool {
		return (ns == "" || e.ep.Namespace == ns) && sel.Matches(e.labels) &&
			nsSel.Matches(e.nsLabels) && saSel.Matches(e.saLabels)
	}
	for dir, rules := range [2][]Rule{p.Ingress, p.Egress} {
		for i := range rules {
			r, err := c.calicoRule(&rules[i], ns, ns == "")
			if err != nil {
				return fail(fmt.Errorf("%s rule %d: %w", Direction(dir), i, err))
			}
			r.decider, r.index, r.tier, r.policy = ByRule, i, ip.tier, name
			ip.rules[dir] = append(ip.rules[dir], r)
		}
	}
	return ip, nil
}

// calicoRule compiles a rule of a policy in namespace ns ("" for global
// policies and profiles, whose selectors see every namespace).
func (c *compiler) calicoRule(r *Rule, ns string, global bool) (rule, error) {
	out := rule{kind: kRule, action: r.Action, proto: -1, noProto: -1}
	switch r.Action {
	case Allow, Deny, Log, Pass:
	default:
		return out, fmt.Errorf("action %q: want Allow, Deny, Log or Pass", r.Action)
	}
	var proto uint8
	if r.Protocol != "" {
		n, err := r.Protocol.Number()
		if err != nil {
			return out, err
		}
		proto, out.proto = n, int16(n)
		if n == 58 {
			out.never = true // ICMPv6 never matches IPv4
		}
	}
	if r.NotProtocol != "" {
		n, err := r.NotProtocol.Number()
		if err != nil {
			return out, fmt.Errorf("notProtocol: %w", err)
		}
		out.noProto = int16(n)
	}
	for _, im := range []struct {
		m   *ICMPMatch
		dst *icmpMatch
		nm  string
	}{{r.ICMP, &out.icmp, "icmp"}, {r.NotICMP, &out.notICMP, "notICMP"}} {
		if im.m == nil {
			continue
		}
		if proto != 1 && proto != 58 {
			return out, fmt.Errorf("%s needs protocol ICMP or ICMPv6", im.nm)
		}
		if im.m.Type == nil {
			if im.m.Code != nil {
				return out, fmt.Errorf("%s: code without type", im.nm)
			}
			continue
		}
		*im.dst = icmpMatch{set: true, typ: *im.m.Type, code: -1}
		if im.m.Code != nil {
			im.dst.code = int16(*im.m.Code)
		}
	}
	for _, side := range []struct {
		e   *Entity
		m   *match
		nm  string
		src bool
	}{{&r.Source, &out.src, "source", true}, {&r.Destination, &out.dst, "destination", false}} {
		never, err := c.calicoEntity(side.e, side.m, ns, global, proto)
		if err != nil {
			return out, fmt.Errorf("%s: %w", side.nm, err)
		}
		out.never = out.never || never
	}
	return out, nil
}

// calicoEntity compiles one side of a rule; never is true when it cannot
// match an IPv4 packet.
func (c *compiler) calicoEntity(e *Entity, m *match, ns string, global bool, proto uint8) (never bool, err error) {
	if len(e.Nets) > 0 {
		v4, err := prefixes(e.Nets)
		if err != nil {
			return false, err
		}
		if len(v4) == 0 {
			never = true // only IPv6 nets
		}
		m.flags |= hasNets
		m.nets = buildPrefixes(v4)
	}
	if len(e.NotNets) > 0 {
		v4, err := prefixes(e.NotNets)
		if err != nil {
			return false, err
		}
		m.flags |= hasNotNets
		m.notNets = buildPrefixes(v4)
	}
	sel, err := parseSel(e.Selector)
	if err != nil {
		return false, err
	}
	notSel, err := parseSel(e.NotSelector)
	if err != nil {
		return false, err
	}
	nsSel, err := parseSel(e.NamespaceSelector)
	if err != nil {
		return false, err
	}
	var saNames map[string]bool
	var saSel *selector.Selector
	if sa := e.ServiceAccounts; sa != nil {
		saSel, err = parseSel(sa.Selector)
		if err != nil {
			return false, fmt.Errorf("serviceAccounts: %w", err)
		}
		if len(sa.Names) > 0 {
			saNames = map[string]bool{}
			for _, n := range sa.Names {
				saNames[n] = true
			}
		}
	}
	constrained := sel != nil || nsSel != nil || e.ServiceAccounts != nil
	// Which endpoints and network sets a label selector (sel or notSel)
	// names from this rule: in a namespaced policy, those of its own
	// namespace unless a namespaceSelector says which; network sets never
	// have service accounts.
	epIn := func(s *selector.Selector, x *epInfo) bool {
		if nsSel != nil {
			if !nsSel.Matches(x.nsLabels) {
				return false
			}
		} else if !global && x.ep.Namespace != ns {
			return false
		}
		if saNames != nil && !saNames[x.ep.ServiceAccount] {
			return false
		}
		if e.ServiceAccounts != nil && !saSel.Matches(x.saLabels) {
			return false
		}
		return s.Matches(x.labels)
	}
	setIn := func(s *selector.Selector, x *setInfo) bool {
		if s == nil || e.ServiceAccounts != nil {
			return false // a network set is selected by label only
		}
		switch {
		case nsSel != nil:
			if x.ns == "" || !nsSel.Matches(x.nsLabels) {
				return false
			}
		case global:
		default:
			if x.ns != ns {
				return false
			}
		}
		return s.Matches(x.labels)
	}
	resolve := func(s *selector.Selector) addrSet {
		var b setBuilder
		for i := range c.eps {
			if epIn(s, &c.eps[i]) {
				b.addIP(c.eps[i].ip)
			}
		}
		for i := range c.sets {
			if setIn(s, &c.sets[i]) {
				for _, p := range c.sets[i].prefixes {
					b.addPrefix(p)
				}
			}
		}
		return b.build()
	}
	if constrained {
		m.flags |= hasSel
		m.sel = resolve(sel)
	}
	if notSel != nil {
		m.flags |= hasNotSel
		// notSelector names the endpoints it selects, scoped as selector is.
		m.notSel = resolve(notSel)
	}
	// Named ports resolve against the endpoints this side selects, or every
	// endpoint when it selects none in particular.
	named := func(x *epInfo) bool { return !constrained || epIn(sel, x) }
	if len(e.Ports) > 0 {
		if err := c.ports(e.Ports, &m.ports, proto, named); err != nil {
			return false, err
		}
		m.flags |= hasPorts
	}
	if len(e.NotPorts) > 0 {
		if err := c.ports(e.NotPorts, &m.notPorts, proto, named); err != nil {
			return false, fmt.Errorf("notPorts: %w", err)
		}
		m.flags |= hasNotPorts
	}
	return never, nil
}

// ports compiles a port list for protocol proto; named ports become keys
// of the endpoints in scope that define them for proto.
func (c *compiler) ports(ps []Port, out *portSet, proto uint8, inScope func(*epInfo) bool) error {
	switch proto {
	case 6, 17, 132, 136:
	default:
		return fmt.Errorf("ports need protocol TCP, UDP, SCTP or UDPLite")
	}
	for _, p := range ps {
		if p.Name == "" {
			if p.Min > p.Max {
				return fmt.Errorf("port range %d:%d: min above max", p.Min, p.Max)
			}
			out.ranges = append(out.ranges, portRange{p.Min, p.Max})
			continue
		}
		for i := range c.eps {
			x := &c.eps[i]
			for _, np := range x.ep.Ports {
				if np.Name != p.Name || namedProto(np) != proto || !inScope(x) {
					continue
				}
				out.named = append(out.named, namedKey(x.ip, proto, np.Port))
			}
		}
	}
	slices.Sort(out.named)
	out.named = slices.Compact(out.named)
	return nil
}

func namedProto(np NamedPort) uint8 {
	if np.Protocol == "" {
		return 6
	}
	n, _ := np.Protocol.Number() // validated by addEndpoints
	return n
}

func prefixes(nets []string) ([]netip.Prefix, error) {
	var v4 []netip.Prefix
	for _, n := range nets {
		p, err := parseNet(n)
		if err != nil {
			return nil, err
		}
		if p.Addr().Is4() {
			v4 = append(v4, p)
		}
	}
	return v4, nil
}

func buildPrefixes(ps []netip.Prefix) addrSet {
	var b setBuilder
	for _, p := range ps {
		b.addPrefix(p)
	}
	return b.build()
}
