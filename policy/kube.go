package policy

import (
	"fmt"
	"net/netip"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// labelMetadataName is the label the API server gives every namespace.
const labelMetadataName = "kubernetes.io/metadata.name"

// kubePolicy compiles a Kubernetes NetworkPolicy as Calico places it: an
// Allow-only policy named knp.default.<name> in the default tier at order
// 1000, so that the end of the tier denies what no selecting policy
// allows (the union of their rules), and pods no policy selects are not
// isolated.
func (c *compiler) kubePolicy(np *networkingv1.NetworkPolicy) (*ipolicy, error) {
	ns := np.Namespace
	name := ns + "/knp.default." + np.Name
	fail := func(err error) (*ipolicy, error) {
		return nil, fmt.Errorf("kubernetes NetworkPolicy %s/%s: %w", ns, np.Name, err)
	}
	if ns == "" || np.Name == "" {
		return fail(fmt.Errorf("needs a namespace and a name"))
	}
	podSel, err := kubeSel(&np.Spec.PodSelector)
	if err != nil {
		return fail(fmt.Errorf("podSelector: %w", err))
	}
	ip := &ipolicy{name: name, tier: DefaultTier, order: KubernetesPolicyOrder}
	// policyTypes as the API server defaults it.
	if len(np.Spec.PolicyTypes) == 0 {
		ip.types[Ingress] = true
		ip.types[Egress] = len(np.Spec.Egress) > 0
	}
	for _, t := range np.Spec.PolicyTypes {
		switch t {
		case networkingv1.PolicyTypeIngress:
			ip.types[Ingress] = true
		case networkingv1.PolicyTypeEgress:
			ip.types[Egress] = true
		default:
			return fail(fmt.Errorf("policyType %q: want Ingress or Egress", t))
		}
	}
	ip.applies = func(e *epInfo) bool {
		return e.ep.Namespace == ns && podSel.Matches(labels.Set(e.ep.Labels))
	}
	for i, r := range np.Spec.Ingress {
		rules, err := c.kubeRule(ns, r.From, r.Ports, Ingress)
		if err != nil {
			return fail(fmt.Errorf("ingress rule %d: %w", i, err))
		}
		for _, x := range rules {
			x.index, x.tier, x.policy = i, ip.tier, name
			ip.rules[Ingress] = append(ip.rules[Ingress], x)
		}
	}
	for i, r := range np.Spec.Egress {
		rules, err := c.kubeRule(ns, r.To, r.Ports, Egress)
		if err != nil {
			return fail(fmt.Errorf("egress rule %d: %w", i, err))
		}
		for _, x := range rules {
			x.index, x.tier, x.policy = i, ip.tier, name
			ip.rules[Egress] = append(ip.rules[Egress], x)
		}
	}
	return ip, nil
}

func kubeSel(ls *metav1.LabelSelector) (labels.Selector, error) {
	if ls == nil {
		return nil, nil
	}
	return metav1.LabelSelectorAsSelector(ls)
}

// portGroup is the ports of one protocol in a Kubernetes rule.
type portGroup struct {
	proto uint8
	all   bool // a port with no number: every port of proto
	ports []Port
}

// kubeRule turns one Kubernetes rule into Allow rules, one per peer and
// protocol: a peer matches the remote side, ports the destination.
func (c *compiler) kubeRule(ns string, peers []networkingv1.NetworkPolicyPeer, ports []networkingv1.NetworkPolicyPort, dir Direction) ([]rule, error) {
	var groups []*portGroup
	for i, p := range ports {
		proto := uint8(6)
		if p.Protocol != nil {
			switch *p.Protocol {
			case corev1.ProtocolTCP:
			case corev1.ProtocolUDP:
				proto = 17
			case corev1.ProtocolSCTP:
				proto = 132
			default:
				return nil, fmt.Errorf("port %d: protocol %q: want TCP, UDP or SCTP", i, *p.Protocol)
			}
		}
		var g *portGroup
		for _, x := range groups {
			if x.proto == proto {
				g = x
			}
		}
		if g == nil {
			g = &portGroup{proto: proto}
			groups = append(groups, g)
		}
		if p.Port == nil {
			if p.EndPort != nil {
				return nil, fmt.Errorf("port %d: endPort without port", i)
			}
			g.all = true
			continue
		}
		if p.Port.Type == intstr.String {
			if p.EndPort != nil {
				return nil, fmt.Errorf("port %d: endPort with named port %q", i, p.Port.StrVal)
			}
			if p.Port.StrVal == "" {
				return nil, fmt.Errorf("port %d: empty name", i)
			}
			g.ports = append(g.ports, Port{Name: p.Port.StrVal})
			continue
		}
		lo, hi := p.Port.IntVal, p.Port.IntVal
		if p.EndPort != nil {
			hi = *p.EndPort
		}
		if lo < 1 || hi > 65535 || lo > hi {
			return nil, fmt.Errorf("port %d: %d..%d: want 1 <= port <= endPort <= 65535", i, lo, hi)
		}
		g.ports = append(g.ports, Port{Min: uint16(lo), Max: uint16(hi)})
	}
	if len(groups) == 0 {
		groups = []*portGroup{{all: true}} // any protocol, any port
	}
	anyPeer := len(peers) == 0
	if anyPeer {
		peers = []networkingv1.NetworkPolicyPeer{{}}
	}
	var out []rule
	for pi := range peers {
		peer := &peers[pi]
		var remote match
		never := false
		// Named ports resolve against the destination: in scope are the
		// endpoints the peer selects (egress) or any endpoint (the local
		// one, for ingress; or an ipBlock peer).
		inScope := func(*epInfo) bool { return true }
		switch {
		case peer.IPBlock != nil:
			if peer.PodSelector != nil || peer.NamespaceSelector != nil {
				return nil, fmt.Errorf("peer %d: ipBlock with a selector", pi)
			}
			cidr, err := parseNet(peer.IPBlock.CIDR)
			if err != nil {
				return nil, fmt.Errorf("peer %d: ipBlock: %w", pi, err)
			}
			if !cidr.Addr().Is4() {
				never = true
			} else {
				remote.flags |= hasNets
				remote.nets = buildPrefixes([]netip.Prefix{cidr})
			}
			if len(peer.IPBlock.Except) > 0 {
				ex, err := prefixes(peer.IPBlock.Except)
				if err != nil {
					return nil, fmt.Errorf("peer %d: ipBlock except: %w", pi, err)
				}
				remote.flags |= hasNotNets
				remote.notNets = buildPrefixes(ex)
			}
		case peer.PodSelector != nil || peer.NamespaceSelector != nil:
			podSel, err := kubeSel(peer.PodSelector)
			if err != nil {
				return nil, fmt.Errorf("peer %d: podSelector: %w", pi, err)
			}
			nsSel, err := kubeSel(peer.NamespaceSelector)
			if err != nil {
				return nil, fmt.Errorf("peer %d: namespaceSelector: %w", pi, err)
			}
			in := func(x *epInfo) bool {
				if nsSel != nil {
					if !nsSel.Matches(labels.Set(x.nsLabels)) {
						return false
					}
				} else if x.ep.Namespace != ns {
					return false
				}
				return podSel == nil || podSel.Matches(labels.Set(x.ep.Labels))
			}
			var b setBuilder
			for i := range c.eps {
				if in(&c.eps[i]) {
					b.addIP(c.eps[i].ip)
				}
			}
			remote.flags |= hasSel
			remote.sel = b.build()
			if dir == Egress {
				inScope = in
			}
		default:
			if !anyPeer {
				return nil, fmt.Errorf("peer %d: empty (needs podSelector, namespaceSelector or ipBlock)", pi)
			}
		}
		for _, g := range groups {
			r := rule{kind: kRule, action: Allow, decider: ByRule, proto: -1, noProto: -1, never: never}
			if g.proto != 0 {
				r.proto = int16(g.proto)
			}
			var dst match
			if !g.all && len(g.ports) > 0 {
				if err := c.ports(g.ports, &dst.ports, g.proto, inScope); err != nil {
					return nil, err
				}
				dst.flags |= hasPorts
			}
			if dir == Ingress {
				r.src = remote
				r.dst = dst
			} else {
				dst.flags |= remote.flags
				dst.nets, dst.notNets, dst.sel = remote.nets, remote.notNets, remote.sel
				r.dst = dst
			}
			out = append(out, r)
		}
	}
	return out, nil
}
