package policy

import (
	"net/netip"
	"strings"
	"sync"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"
)

// The test cluster: two namespaces, four pods.
func cluster() []Endpoint {
	prod := map[string]string{"env": "prod"}
	dev := map[string]string{"env": "dev"}
	teamA := map[string]string{"team": "a"}
	teamB := map[string]string{"team": "b"}
	return []Endpoint{
		{Key: "prod/web", Namespace: "prod", NamespaceLabels: prod, Labels: map[string]string{"app": "web"},
			ServiceAccount: "web-sa", ServiceAccountLabels: teamA, IP: netip.MustParseAddr("10.0.0.1"), Local: true,
			Ports: []NamedPort{{Name: "http", Port: 8080}, {Name: "dns", Protocol: "UDP", Port: 53}}},
		{Key: "prod/db", Namespace: "prod", NamespaceLabels: prod, Labels: map[string]string{"app": "db"},
			ServiceAccount: "db-sa", ServiceAccountLabels: teamB, IP: netip.MustParseAddr("10.0.0.2"), Local: true,
			Ports: []NamedPort{{Name: "http", Protocol: "TCP", Port: 9090}}},
		{Key: "dev/web", Namespace: "dev", NamespaceLabels: dev, Labels: map[string]string{"app": "web"},
			ServiceAccount: "web-sa", ServiceAccountLabels: teamA, IP: netip.MustParseAddr("10.0.1.1"), Local: true},
		{Key: "dev/tool", Namespace: "dev", NamespaceLabels: dev, Labels: map[string]string{"app": "tool"},
			ServiceAccount: "default", IP: netip.MustParseAddr("10.0.1.2"), Local: true},
	}
}

var addrs = map[string]string{"prod/web": "10.0.0.1", "prod/db": "10.0.0.2", "dev/web": "10.0.1.1", "dev/tool": "10.0.1.2"}

// addr is an endpoint's address by key, or a literal address.
func addr(s string) uint32 {
	if a, ok := addrs[s]; ok {
		s = a
	}
	return ip4(netip.MustParseAddr(s))
}

func tcp(src, dst string, dport uint16) Packet {
	return Packet{Src: addr(src), Dst: addr(dst), SrcPort: 40000, DstPort: dport, Proto: 6}
}

func udp(src, dst string, dport uint16) Packet {
	return Packet{Src: addr(src), Dst: addr(dst), SrcPort: 40000, DstPort: dport, Proto: 17}
}

func icmp(src, dst string, typ, code uint8) Packet {
	return Packet{Src: addr(src), Dst: addr(dst), Proto: 1, ICMPType: typ, ICMPCode: code}
}

func f(x float64) *float64 { return &x }
func u8(x uint8) *uint8    { return &x }

func ports(t testing.TB, ss ...string) []Port {
	var out []Port
	for _, s := range ss {
		p, err := ParsePort(s)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, p)
	}
	return out
}

// check is one packet and the verdict it must get.
type check struct {
	ep     string // the local endpoint
	dir    Direction
	pkt    Packet
	action Action
	by     Decider
	tier   string
	policy string
	rule   int
	logged bool
}

func in(p Packet, to string, action Action, by Decider, tier, policy string, rule int) check {
	return check{ep: to, dir: Ingress, pkt: p, action: action, by: by, tier: tier, policy: policy, rule: rule}
}

func out(p Packet, from string, action Action, by Decider, tier, policy string, rule int) check {
	return check{ep: from, dir: Egress, pkt: p, action: action, by: by, tier: tier, policy: policy, rule: rule}
}

func runChecks(t *testing.T, s *Set, checks []check) {
	t.Helper()
	for i, c := range checks {
		ep, ok := s.Index(c.ep)
		if !ok {
			t.Fatalf("check %d: no local endpoint %q", i, c.ep)
		}
		v := s.Evaluate(ep, c.dir, &c.pkt)
		want := Verdict{Action: c.action, Decider: c.by, Tier: c.tier, Policy: c.policy, Rule: c.rule, Logged: c.logged, Counter: v.Counter}
		if ctr := s.Counters()[v.Counter]; ctr.Decider != v.Decider || ctr.Tier != v.Tier || ctr.Policy != v.Policy {
			t.Errorf("check %d: verdict %+v names counter %d, %+v", i, v, v.Counter, ctr)
		}
		if v != want {
			_, steps := s.Explain(ep, c.dir, &c.pkt)
			t.Errorf("check %d (%s %s %+v):\n got %+v\nwant %+v\ntrace: %+v", i, c.ep, c.dir, c.pkt, v, want, steps)
		}
		if ev, _ := s.Explain(ep, c.dir, &c.pkt); ev != v {
			t.Errorf("check %d: Explain %+v, Evaluate %+v", i, ev, v)
		}
	}
}

func compile(t *testing.T, in *Inputs) *Set {
	t.Helper()
	if in.Endpoints == nil {
		in.Endpoints = cluster()
	}
	s, err := Compile(in)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestNoPolicyAllows(t *testing.T) {
	s := compile(t, &Inputs{})
	runChecks(t, s, []check{
		in(tcp("dev/tool", "prod/db", 5432), "prod/db", Allow, ByDefault, "", "", -1),
		out(udp("prod/db", "8.8.8.8", 53), "prod/db", Allow, ByDefault, "", "", -1),
	})
}

func TestOrder(t *testing.T) {
	s := compile(t, &Inputs{GlobalNetworkPolicies: []Policy{
		{Name: "deny-all", Order: f(200), Selector: "all()", Ingress: []Rule{{Action: Deny}}},
		{Name: "allow-web", Order: f(100), Selector: "app == 'web'", Ingress: []Rule{
			{Action: Allow, Protocol: "TCP", Destination: Entity{Ports: ports(t, "8080")}}}},
		// No order: after every ordered policy, so never reached here.
		{Name: "allow-everything", Selector: "all()", Ingress: []Rule{{Action: Allow}}},
		// Same order as deny-all, earlier by name: it decides first.
		{Name: "a-allow-ssh", Order: f(200), Selector: "all()", Ingress: []Rule{
			{Action: Allow, Protocol: "TCP", Destination: Entity{Ports: ports(t, "22")}}}},
	}})
	runChecks(t, s, []check{
		in(tcp("dev/tool", "prod/web", 8080), "prod/web", Allow, ByRule, "default", "allow-web", 0),
		in(tcp("dev/tool", "prod/web", 8081), "prod/web", Deny, ByRule, "default", "deny-all", 0),
		in(tcp("dev/tool", "prod/db", 8080), "prod/db", Deny, ByRule, "default", "deny-all", 0),
		in(tcp("dev/tool", "prod/db", 22), "prod/db", Allow, ByRule, "default", "a-allow-ssh", 0),
		// Only ingress policies: egress is not isolated.
		out(tcp("prod/db", "dev/tool", 80), "prod/db", Allow, ByDefault, "", "", -1),
	})
}

func TestKubernetesPolicyOrder1000(t *testing.T) {
	tcpP := corev1.ProtocolTCP
	p80 := intstr.FromInt32(80)
	knp := &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: "prod", Name: "web-80"},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
			Ingress: []networkingv1.NetworkPolicyIngressRule{{
				Ports: []networkingv1.NetworkPolicyPort{{Protocol: &tcpP, Port: &p80}},
			}},
		},
	}
	s := compile(t, &Inputs{
		KubernetesPolicies: []*networkingv1.NetworkPolicy{knp},
		NetworkPolicies: []Policy{
			{Name: "before", Namespace: "prod", Order: f(999), Selector: "all()", Ingress: []Rule{
				{Action: Deny, Source: Entity{Selector: "app == 'tool'", NamespaceSelector: "all()"}}}},
			{Name: "after", Namespace: "prod", Order: f(1001), Selector: "all()", Ingress: []Rule{{Action: Allow}}},
		},
	})
	runChecks(t, s, []check{
		in(tcp("dev/tool", "prod/web", 80), "prod/web", Deny, ByRule, "default", "prod/before", 0),
		in(tcp("dev/web", "prod/web", 80), "prod/web", Allow, ByRule, "default", "prod/knp.default.web-80", 0),
		in(tcp("dev/web", "prod/web", 81), "prod/web", Allow, ByRule, "default", "prod/after", 0),
	})
}

func tiersInputs(t *testing.T, action Action) *Inputs {
	return &Inputs{
		Tiers: []Tier{{Name: "security", Order: f(100), DefaultAction: action}},
		GlobalNetworkPolicies: []Policy{{
			Name: "sec", Tier: "security", Selector: "projectcalico.org/namespace == 'prod'", Ingress: []Rule{
				{Action: Pass, Source: Entity{NamespaceSelector: "env == 'prod'"}},
				{Action: Deny, Source: Entity{Selector: "app == 'tool'"}},
			}}},
		NetworkPolicies: []Policy{{
			Name: "web-only", Namespace: "prod", Selector: "all()", Ingress: []Rule{
				{Action: Allow, Source: Entity{Selector: "app == 'web'", NamespaceSelector: "all()"}}}}},
	}
}

func TestTiersPass(t *testing.T) {
	s := compile(t, tiersInputs(t, ""))
	runChecks(t, s, []check{
		in(tcp("dev/tool", "prod/web", 80), "prod/web", Deny, ByRule, "security", "sec", 1),
		// Passed to the default tier, where web-only allows only app=web.
		in(tcp("prod/web", "prod/db", 80), "prod/db", Allow, ByRule, "default", "prod/web-only", 0),
		in(tcp("prod/db", "prod/web", 80), "prod/web", Deny, ByTierEnd, "default", "", -1),
		// Neither passed nor denied: the security tier's end denies.
		in(tcp("dev/web", "prod/web", 80), "prod/web", Deny, ByTierEnd, "security", "", -1),
		// dev is not selected by the security tier nor the default tier.
		in(tcp("prod/db", "dev/web", 80), "dev/web", Allow, ByDefault, "", "", -1),
	})
	// A tier whose default action is Pass hands over what it did not decide.
	s = compile(t, tiersInputs(t, Pass))
	runChecks(t, s, []check{
		in(tcp("dev/web", "prod/web", 80), "prod/web", Allow, ByRule, "default", "prod/web-only", 0),
		in(tcp("dev/tool", "prod/web", 80), "prod/web", Deny, ByRule, "security", "sec", 1),
	})
}

func TestPassToProfiles(t *testing.T) {
	eps := cluster()
	eps[0].Profiles = []string{"kns.prod"}
	s := compile(t, &Inputs{
		Endpoints: eps,
		Profiles: []Profile{{Name: "kns.prod", Ingress: []Rule{
			{Action: Deny, Protocol: "UDP"},
			{Action: Allow, Protocol: "TCP"},
		}}},
		GlobalNetworkPolicies: []Policy{{Name: "pass-all", Selector: "all()", Ingress: []Rule{{Action: Pass}}}},
	})
	runChecks(t, s, []check{
		// Pass in the last tier: the profiles decide.
		in(tcp("dev/tool", "prod/web", 80), "prod/web", Allow, ByProfile, "", "kns.prod", 1),
		in(udp("dev/tool", "prod/web", 53), "prod/web", Deny, ByProfile, "", "kns.prod", 0),
		in(icmp("dev/tool", "prod/web", 8, 0), "prod/web", Deny, ByProfileEnd, "", "", -1),
		// No profile: the default allow.
		in(udp("dev/tool", "prod/db", 53), "prod/db", Allow, ByDefault, "", "", -1),
		// No policy for egress: the profile's (empty) egress rules deny.
		out(udp("prod/web", "dev/tool", 53), "prod/web", Deny, ByProfileEnd, "", "", -1),
	})
}

func TestProfileLabels(t *testing.T) {
	eps := cluster()
	eps[3].Profiles = []string{"tagged"}
	s := compile(t, &Inputs{
		Endpoints: eps,
		Profiles:  []Profile{{Name: "tagged", LabelsToApply: map[string]string{"tier": "frontend"}, Ingress: []Rule{{Action: Allow}}}},
		GlobalNetworkPolicies: []Policy{{Name: "from-frontend", Selector: "app == 'db'", Ingress: []Rule{
			{Action: Allow, Source: Entity{Selector: "tier == 'frontend'"}}}}},
	})
	runChecks(t, s, []check{
		in(tcp("dev/tool", "prod/db", 1), "prod/db", Allow, ByRule, "default", "from-frontend", 0),
		in(tcp("dev/web", "prod/db", 1), "prod/db", Deny, ByTierEnd, "default", "", -1),
	})
}

func TestNetsNotNets(t *testing.T) {
	s := compile(t, &Inputs{GlobalNetworkPolicies: []Policy{{Name: "nets", Selector: "app == 'db'",
		Ingress: []Rule{{Action: Allow, Source: Entity{Nets: []string{"10.0.0.0/16", "2001:db8::/32"}, NotNets: []string{"10.0.1.0/24"}}}},
		Egress: []Rule{
			{Action: Deny, Destination: Entity{NotNets: []string{"10.0.0.0/8"}}},
			{Action: Allow, Destination: Entity{Nets: []string{"10.0.1.2"}}},
			{Action: Allow, Destination: Entity{Nets: []string{"2001:db8::/32"}}}, // IPv6 only: never for IPv4
		}}}})
	runChecks(t, s, []check{
		in(tcp("prod/web", "prod/db", 5432), "prod/db", Allow, ByRule, "default", "nets", 0),
		in(tcp("dev/tool", "prod/db", 5432), "prod/db", Deny, ByTierEnd, "default", "", -1),
		in(tcp("10.0.255.9", "prod/db", 5432), "prod/db", Allow, ByRule, "default", "nets", 0),
		in(tcp("10.1.0.1", "prod/db", 5432), "prod/db", Deny, ByTierEnd, "default", "", -1),
		out(tcp("prod/db", "192.0.2.1", 443), "prod/db", Deny, ByRule, "default", "nets", 0),
		out(tcp("prod/db", "dev/tool", 443), "prod/db", Allow, ByRule, "default", "nets", 1),
		out(tcp("prod/db", "dev/web", 443), "prod/db", Deny, ByTierEnd, "default", "", -1),
	})
}

func TestNamedPortsAndRanges(t *testing.T) {
	s := compile(t, &Inputs{GlobalNetworkPolicies: []Policy{
		{Name: "http-in", Selector: "app in {'web', 'db'}", Ingress: []Rule{
			{Action: Allow, Protocol: "TCP", Destination: Entity{Ports: ports(t, "http")}},
			{Action: Allow, Protocol: "UDP", Destination: Entity{Ports: ports(t, "dns", "7000:7010"), NotPorts: ports(t, "7005")}},
		}},
		{Name: "http-out", Selector: "app == 'tool'", Egress: []Rule{
			{Action: Allow, Protocol: "TCP", Destination: Entity{Selector: "app == 'db'", Ports: ports(t, "http")}},
			{Action: Allow, Protocol: "TCP", Source: Entity{Ports: ports(t, "40000:40010")}, Destination: Entity{Ports: ports(t, "443")}},
		}},
	}})
	runChecks(t, s, []check{
		in(tcp("dev/tool", "prod/web", 8080), "prod/web", Allow, ByRule, "default", "http-in", 0),
		// 9090 is db's http, not web's.
		in(tcp("dev/tool", "prod/web", 9090), "prod/web", Deny, ByTierEnd, "default", "", -1),
		in(tcp("dev/tool", "prod/db", 9090), "prod/db", Allow, ByRule, "default", "http-in", 0),
		// http is TCP: UDP 8080 does not match it.
		in(udp("dev/tool", "prod/web", 8080), "prod/web", Deny, ByTierEnd, "default", "", -1),
		in(udp("dev/tool", "prod/web", 53), "prod/web", Allow, ByRule, "default", "http-in", 1),
		in(udp("dev/tool", "prod/db", 53), "prod/db", Deny, ByTierEnd, "default", "", -1),
		in(udp("dev/tool", "prod/db", 7004), "prod/db", Allow, ByRule, "default", "http-in", 1),
		in(udp("dev/tool", "prod/db", 7005), "prod/db", Deny, ByTierEnd, "default", "", -1),
		out(tcp("dev/tool", "prod/db", 9090), "dev/tool", Allow, ByRule, "default", "http-out", 0),
		out(tcp("dev/tool", "prod/web", 8080), "dev/tool", Deny, ByTierEnd, "default", "", -1),
		out(tcp("dev/tool", "192.0.2.1", 443), "dev/tool", Allow, ByRule, "default", "http-out", 1),
	})
}

func TestICMP(t *testing.T) {
	s := compile(t, &Inputs{GlobalNetworkPolicies: []Policy{{Name: "icmp", Selector: "all()", Ingress: []Rule{
		{Action: Allow, Protocol: "ICMP", ICMP: &ICMPMatch{Type: u8(8), Code: u8(0)}},
		{Action: Deny, Protocol: "ICMP", NotICMP: &ICMPMatch{Type: u8(3)}},
		{Action: Allow, Protocol: "ICMP", ICMP: &ICMPMatch{Type: u8(3)}},
		{Action: Deny, Protocol: "ICMPv6"}, // never for IPv4
		{Action: Allow, Protocol: "1"},
	}}}})
	runChecks(t, s, []check{
		in(icmp("dev/tool", "prod/web", 8, 0), "prod/web", Allow, ByRule, "default", "icmp", 0),
		in(icmp("dev/tool", "prod/web", 8, 1), "prod/web", Deny, ByRule, "default", "icmp", 1),
		in(icmp("dev/tool", "prod/web", 0, 0), "prod/web", Deny, ByRule, "default", "icmp", 1),
		in(icmp("dev/tool", "prod/web", 3, 4), "prod/web", Allow, ByRule, "default", "icmp", 2),
		in(tcp("dev/tool", "prod/web", 80), "prod/web", Deny, ByTierEnd, "default", "", -1),
	})
}

func TestServiceAccounts(t *testing.T) {
	s := compile(t, &Inputs{GlobalNetworkPolicies: []Policy{
		{Name: "sa", Selector: "app == 'db'", Ingress: []Rule{
			{Action: Allow, Source: Entity{ServiceAccounts: &ServiceAccountMatch{Names: []string{"web-sa"}}}},
			{Action: Allow, Protocol: "UDP", Source: Entity{ServiceAccounts: &ServiceAccountMatch{Selector: "team == 'b'"}}},
		}},
		// Applies only to endpoints whose service account has team=a.
		{Name: "team-a", ServiceAccountSelector: "team == 'a'", Egress: []Rule{{Action: Deny, Protocol: "UDP"}}},
	}})
	runChecks(t, s, []check{
		in(tcp("prod/web", "prod/db", 5432), "prod/db", Allow, ByRule, "default", "sa", 0),
		in(tcp("dev/web", "prod/db", 5432), "prod/db", Allow, ByRule, "default", "sa", 0),
		in(tcp("dev/tool", "prod/db", 5432), "prod/db", Deny, ByTierEnd, "default", "", -1),
		in(udp("prod/db", "prod/db", 53), "prod/db", Allow, ByRule, "default", "sa", 1),
		out(udp("prod/web", "1.1.1.1", 53), "prod/web", Deny, ByRule, "default", "team-a", 0),
		out(udp("prod/db", "1.1.1.1", 53), "prod/db", Allow, ByDefault, "", "", -1),
	})
}

func TestNetworkSets(t *testing.T) {
	s := compile(t, &Inputs{
		GlobalNetworkSets: []NetworkSet{{Name: "ext", Labels: map[string]string{"role": "ext"}, Nets: []string{"192.0.2.0/24", "2001:db8::/32"}}},
		NetworkSets:       []NetworkSet{{Name: "partners", Namespace: "prod", Labels: map[string]string{"role": "partner"}, Nets: []string{"198.51.100.0/24"}}},
		GlobalNetworkPolicies: []Policy{{Name: "from-ext", Selector: "app == 'web'", Ingress: []Rule{
			{Action: Allow, Source: Entity{Selector: "role == 'ext'"}}}}},
		NetworkPolicies: []Policy{
			{Name: "partners", Namespace: "prod", Order: f(1), Selector: "app == 'web'", Ingress: []Rule{
				{Action: Allow, Protocol: "TCP", Source: Entity{Selector: "role == 'partner'"}}}},
			// The same selector in another namespace names no set.
			{Name: "partners", Namespace: "dev", Order: f(1), Selector: "app == 'web'", Ingress: []Rule{
				{Action: Allow, Protocol: "TCP", Source: Entity{Selector: "role == 'partner'"}}}},
		},
	})
	runChecks(t, s, []check{
		in(tcp("192.0.2.7", "prod/web", 80), "prod/web", Allow, ByRule, "default", "from-ext", 0),
		in(tcp("192.0.3.7", "prod/web", 80), "prod/web", Deny, ByTierEnd, "default", "", -1),
		in(tcp("198.51.100.9", "prod/web", 80), "prod/web", Allow, ByRule, "default", "prod/partners", 0),
		in(tcp("198.51.100.9", "dev/web", 80), "dev/web", Deny, ByTierEnd, "default", "", -1),
	})
}

func TestSelectorsAndNamespaces(t *testing.T) {
	s := compile(t, &Inputs{NetworkPolicies: []Policy{{Name: "p", Namespace: "prod", Selector: "app == 'db'",
		Ingress: []Rule{
			// Own namespace only: dev/web is not app=web of prod.
			{Action: Allow, Protocol: "TCP", Source: Entity{Selector: "app == 'web'"}},
			{Action: Allow, Protocol: "UDP", Source: Entity{NamespaceSelector: "env == 'dev'", NotSelector: "app == 'tool'"}},
			{Action: Allow, Protocol: "ICMP", Source: Entity{NamespaceSelector: "projectcalico.org/name == 'dev'", Selector: "app == 'tool'"}},
		}}}})
	runChecks(t, s, []check{
		in(tcp("prod/web", "prod/db", 1), "prod/db", Allow, ByRule, "default", "prod/p", 0),
		in(tcp("dev/web", "prod/db", 1), "prod/db", Deny, ByTierEnd, "default", "", -1),
		in(udp("dev/web", "prod/db", 1), "prod/db", Allow, ByRule, "default", "prod/p", 1),
		in(udp("dev/tool", "prod/db", 1), "prod/db", Deny, ByTierEnd, "default", "", -1),
		in(udp("prod/web", "prod/db", 1), "prod/db", Deny, ByTierEnd, "default", "", -1),
		in(icmp("dev/tool", "prod/db", 8, 0), "prod/db", Allow, ByRule, "default", "prod/p", 2),
		// The policy selects prod/db only.
		in(udp("dev/tool", "prod/web", 1), "prod/web", Allow, ByDefault, "", "", -1),
	})
}

func TestProtocolLogAndTypes(t *testing.T) {
	s := compile(t, &Inputs{GlobalNetworkPolicies: []Policy{
		{Name: "p", Selector: "app == 'web'", Types: []Direction{Ingress, Egress}, Ingress: []Rule{
			{Action: Log},
			{Action: Deny, NotProtocol: "TCP"},
			{Action: Allow, Protocol: "6"},
		}},
	}})
	c := in(tcp("dev/tool", "prod/web", 80), "prod/web", Allow, ByRule, "default", "p", 2)
	c.logged = true
	d := in(udp("dev/tool", "prod/web", 80), "prod/web", Deny, ByRule, "default", "p", 1)
	d.logged = true
	runChecks(t, s, []check{c, d,
		// Types has Egress with no egress rules: egress is isolated.
		out(tcp("prod/web", "dev/tool", 80), "prod/web", Deny, ByTierEnd, "default", "", -1),
	})
}

func TestKubernetesPolicies(t *testing.T) {
	tcpP, udpP, sctpP := corev1.ProtocolTCP, corev1.ProtocolUDP, corev1.ProtocolSCTP
	p80, pHTTP, p1000 := intstr.FromInt32(80), intstr.FromString("http"), intstr.FromInt32(1000)
	end := int32(2000)
	knps := []*networkingv1.NetworkPolicy{
		{ObjectMeta: metav1.ObjectMeta{Namespace: "prod", Name: "db"}, Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "db"}},
			Ingress: []networkingv1.NetworkPolicyIngressRule{
				// pod AND namespace selector: web pods of dev.
				{From: []networkingv1.NetworkPolicyPeer{{
					PodSelector:       &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
					NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"env": "dev"}},
				}}, Ports: []networkingv1.NetworkPolicyPort{{Port: &p80}}},
				{From: []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: "192.168.0.0/16", Except: []string{"192.168.1.0/24"}}}},
					Ports: []networkingv1.NetworkPolicyPort{{Protocol: &udpP, Port: &p1000, EndPort: &end}, {Protocol: &sctpP}}},
				// Named port of the destination pod.
				{Ports: []networkingv1.NetworkPolicyPort{{Protocol: &tcpP, Port: &pHTTP}}},
			},
			// policyTypes empty with egress rules: Ingress and Egress.
			Egress: []networkingv1.NetworkPolicyEgressRule{{To: []networkingv1.NetworkPolicyPeer{
				{PodSelector: &metav1.LabelSelector{}}}}},
		}},
	}
	s := compile(t, &Inputs{KubernetesPolicies: knps})
	const knp = "prod/knp.default.db"
	runChecks(t, s, []check{
		in(tcp("dev/web", "prod/db", 80), "prod/db", Allow, ByRule, "default", knp, 0),
		in(udp("dev/web", "prod/db", 80), "prod/db", Deny, ByTierEnd, "default", "", -1),
		in(tcp("prod/web", "prod/db", 80), "prod/db", Deny, ByTierEnd, "default", "", -1),
		in(tcp("dev/tool", "prod/db", 80), "prod/db", Deny, ByTierEnd, "default", "", -1),
		in(udp("192.168.7.7", "prod/db", 1500), "prod/db", Allow, ByRule, "default", knp, 1),
		in(udp("192.168.1.7", "prod/db", 1500), "prod/db", Deny, ByTierEnd, "default", "", -1),
		in(udp("192.168.7.7", "prod/db", 2001), "prod/db", Deny, ByTierEnd, "default", "", -1),
		in(Packet{Src: addr("192.168.7.7"), Dst: addr("prod/db"), Proto: 132, DstPort: 9}, "prod/db", Allow, ByRule, "default", knp, 1),
		in(tcp("dev/tool", "prod/db", 9090), "prod/db", Allow, ByRule, "default", knp, 2),
		out(tcp("prod/db", "prod/web", 1), "prod/db", Allow, ByRule, "default", knp, 0),
		out(tcp("prod/db", "dev/web", 1), "prod/db", Deny, ByTierEnd, "default", "", -1),
		// prod/web is selected by nothing.
		in(tcp("dev/tool", "prod/web", 1), "prod/web", Allow, ByDefault, "", "", -1),
	})
}

func TestCompileErrors(t *testing.T) {
	bad := map[string]*Inputs{
		"action":        {GlobalNetworkPolicies: []Policy{{Name: "p", Ingress: []Rule{{Action: "Drop"}}}}},
		"selector":      {GlobalNetworkPolicies: []Policy{{Name: "p", Selector: "app =="}}},
		"net":           {GlobalNetworkPolicies: []Policy{{Name: "p", Ingress: []Rule{{Action: Allow, Source: Entity{Nets: []string{"10.0.0.0/33"}}}}}}},
		"ports w/o tcp": {GlobalNetworkPolicies: []Policy{{Name: "p", Ingress: []Rule{{Action: Allow, Destination: Entity{Ports: []Port{{Min: 80, Max: 80}}}}}}}},
		"icmp w/o icmp": {GlobalNetworkPolicies: []Policy{{Name: "p", Ingress: []Rule{{Action: Allow, Protocol: "TCP", ICMP: &ICMPMatch{Type: u8(8)}}}}}},
		"code w/o type": {GlobalNetworkPolicies: []Policy{{Name: "p", Ingress: []Rule{{Action: Allow, Protocol: "ICMP", ICMP: &ICMPMatch{Code: u8(0)}}}}}},
		"protocol":      {GlobalNetworkPolicies: []Policy{{Name: "p", Ingress: []Rule{{Action: Allow, Protocol: "TCPP"}}}}},
		"tier":          {GlobalNetworkPolicies: []Policy{{Name: "p", Tier: "nope"}}},
		"tier action":   {Tiers: []Tier{{Name: "t", DefaultAction: Allow}}},
		"ns on global":  {GlobalNetworkPolicies: []Policy{{Name: "p", Namespace: "x"}}},
		"no ns":         {NetworkPolicies: []Policy{{Name: "p"}}},
		"profile":       {Endpoints: []Endpoint{{Key: "a", IP: netip.MustParseAddr("10.0.0.1"), Profiles: []string{"nope"}}}},
		"ipv6 endpoint": {Endpoints: []Endpoint{{Key: "a", IP: netip.MustParseAddr("::1")}}},
		"dup endpoint":  {Endpoints: []Endpoint{{Key: "a", IP: netip.MustParseAddr("10.0.0.1")}, {Key: "a", IP: netip.MustParseAddr("10.0.0.2")}}},
		"range":         {GlobalNetworkPolicies: []Policy{{Name: "p", Ingress: []Rule{{Action: Allow, Protocol: "TCP", Destination: Entity{Ports: []Port{{Min: 90, Max: 80}}}}}}}},
		"knp endport": {KubernetesPolicies: []*networkingv1.NetworkPolicy{{ObjectMeta: metav1.ObjectMeta{Namespace: "x", Name: "p"},
			Spec: networkingv1.NetworkPolicySpec{Ingress: []networkingv1.NetworkPolicyIngressRule{{Ports: []networkingv1.NetworkPolicyPort{
				{Port: ptr(intstr.FromString("http")), EndPort: ptr(int32(90))}}}}}}}},
		"knp selector": {KubernetesPolicies: []*networkingv1.NetworkPolicy{{ObjectMeta: metav1.ObjectMeta{Namespace: "x", Name: "p"},
			Spec: networkingv1.NetworkPolicySpec{PodSelector: metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "a", Operator: "Bogus"}}}}}}},
		"knp empty peer": {KubernetesPolicies: []*networkingv1.NetworkPolicy{{ObjectMeta: metav1.ObjectMeta{Namespace: "x", Name: "p"},
			Spec: networkingv1.NetworkPolicySpec{Ingress: []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{}}}}}}}},
	}
	for name, in := range bad {
		if _, err := Compile(in); err == nil {
			t.Errorf("%s: compiled", name)
		} else if strings.TrimSpace(err.Error()) == "" {
			t.Errorf("%s: empty error", name)
		}
	}
}

func ptr[T any](v T) *T { return &v }

func TestParsePort(t *testing.T) {
	for s, want := range map[string]Port{"80": {Min: 80, Max: 80}, "1:65535": {Min: 1, Max: 65535}, "http": {Name: "http"}} {
		p, err := ParsePort(s)
		if err != nil || p != want || p.String() != s {
			t.Errorf("ParsePort(%q) = %+v, %v", s, p, err)
		}
	}
	for _, s := range []string{"", "70000", "9:1", "1:x", "-1"} {
		if _, err := ParsePort(s); err == nil {
			t.Errorf("ParsePort(%q) accepted", s)
		}
	}
}

func TestAddrSet(t *testing.T) {
	var b setBuilder
	for _, p := range []string{"10.0.0.0/24", "10.0.1.0/24", "10.0.0.128/25", "192.168.0.1/32", "255.255.255.0/24", "0.0.0.0/32"} {
		b.addPrefix(netip.MustParsePrefix(p))
	}
	s := b.build()
	if len(s) != 4 { // 0.0.0.0, 10.0.0.0-10.0.1.255 merged, 192.168.0.1, 255.255.255.x
		t.Errorf("spans %v", s)
	}
	for a, want := range map[string]bool{"10.0.0.0": true, "10.0.1.255": true, "10.0.2.0": false, "192.168.0.1": true,
		"192.168.0.2": false, "255.255.255.255": true, "0.0.0.0": true, "0.0.0.1": false, "9.255.255.255": false} {
		if got := s.has(addr(a)); got != want {
			t.Errorf("has(%s) = %v", a, got)
		}
	}
}

func TestEvaluateDoesNotAllocate(t *testing.T) {
	s := compile(t, tiersInputs(t, ""))
	ep, _ := s.Index("prod/web")
	pkts := []Packet{tcp("dev/tool", "prod/web", 80), tcp("prod/db", "prod/web", 80), tcp("dev/web", "prod/web", 80)}
	allocs := testing.AllocsPerRun(100, func() {
		for i := range pkts {
			s.Evaluate(ep, Ingress, &pkts[i])
		}
	})
	if allocs != 0 {
		t.Errorf("Evaluate allocates %v times per run", allocs)
	}
}

func TestConcurrentReaders(t *testing.T) {
	s := compile(t, tiersInputs(t, ""))
	ep, _ := s.Index("prod/web")
	p := tcp("dev/tool", "prod/web", 80)
	want := s.Evaluate(ep, Ingress, &p)
	var wg sync.WaitGroup
	errs := make(chan Verdict, 8)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			q := p
			for range 1000 {
				if v := s.Evaluate(ep, Ingress, &q); v != want {
					errs <- v
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for v := range errs {
		t.Errorf("concurrent verdict %+v, want %+v", v, want)
	}
}

func TestEvaluateOutOfRange(t *testing.T) {
	s := compile(t, &Inputs{})
	p := tcp("dev/tool", "prod/web", 80)
	if v := s.Evaluate(99, Ingress, &p); v.Action != Deny {
		t.Errorf("unknown endpoint: %+v", v)
	}
	if v := s.Evaluate(0, Direction(7), &p); v.Action != Deny {
		t.Errorf("unknown direction: %+v", v)
	}
}

// A Calico spec in YAML decodes into Policy as projectcalico.org/v3 spells
// its fields.
func TestDecodeCalicoSpec(t *testing.T) {
	const spec = `
order: 10
selector: app == 'db'
types: [Ingress, Egress]
ingress:
- action: Allow
  protocol: TCP
  source:
    namespaceSelector: env == 'dev'
    notNets: [10.0.1.2/32]
  destination:
    ports: [http, 5432, "7000:7010"]
- action: Allow
  protocol: ICMP
  icmp: {type: 8, code: 0}
- action: Deny
  protocol: 17
egress:
- action: Pass
`
	var p Policy
	if err := yaml.UnmarshalStrict([]byte(spec), &p); err != nil {
		t.Fatal(err)
	}
	p.Name = "yaml"
	s := compile(t, &Inputs{GlobalNetworkPolicies: []Policy{p}})
	runChecks(t, s, []check{
		in(tcp("dev/web", "prod/db", 9090), "prod/db", Allow, ByRule, "default", "yaml", 0),
		in(tcp("dev/web", "prod/db", 7010), "prod/db", Allow, ByRule, "default", "yaml", 0),
		in(tcp("dev/tool", "prod/db", 5432), "prod/db", Deny, ByTierEnd, "default", "", -1),
		in(icmp("dev/tool", "prod/db", 8, 0), "prod/db", Allow, ByRule, "default", "yaml", 1),
		in(udp("dev/tool", "prod/db", 53), "prod/db", Deny, ByRule, "default", "yaml", 2),
		out(udp("prod/db", "dev/tool", 53), "prod/db", Allow, ByDefault, "", "", -1),
	})
	if err := yaml.Unmarshal([]byte("types: [Sideways]"), &p); err == nil {
		t.Error("types: [Sideways] accepted")
	}
	if err := yaml.Unmarshal([]byte("ingress: [{destination: {ports: ['9:1']}}]"), &p); err == nil {
		t.Error("port 9:1 accepted")
	}
}

// TestSubjectAndCounters: Subject says which endpoints and directions some
// policy or profile decides, and Counters names one entry per policy, tier
// end and the default, shared by every endpoint.
func TestSubjectAndCounters(t *testing.T) {
	s := compile(t, &Inputs{
		GlobalNetworkPolicies: []Policy{{Name: "web-in", Selector: "app == 'web'", Ingress: []Rule{{Action: Deny, Protocol: "UDP"}}}},
		Profiles:              []Profile{{Name: "p", Egress: []Rule{{Action: Allow}}}},
		Endpoints: append(cluster(), Endpoint{Key: "dev/prof", Namespace: "dev", IP: netip.MustParseAddr("10.0.1.3"),
			Profiles: []string{"p"}, Local: true}),
	})
	for _, c := range []struct {
		ep      string
		in, out bool
	}{{"prod/web", true, false}, {"dev/web", true, false}, {"prod/db", false, false}, {"dev/prof", true, true}} {
		ep, _ := s.Index(c.ep)
		if s.Subject(ep, Ingress) != c.in || s.Subject(ep, Egress) != c.out {
			t.Errorf("%s: subject ingress %v egress %v, want %v %v", c.ep, s.Subject(ep, Ingress), s.Subject(ep, Egress), c.in, c.out)
		}
	}
	if s.Subject(-1, Ingress) || s.Subject(s.Len(), Egress) {
		t.Error("an endpoint out of range is subject")
	}
	want := map[Counter]bool{{Decider: ByDefault}: true, {Decider: ByRule, Tier: DefaultTier, Policy: "web-in"}: true,
		{Decider: ByTierEnd, Tier: DefaultTier}: true, {Decider: ByProfile, Policy: "p"}: true, {Decider: ByProfileEnd}: true}
	got := s.Counters()
	if len(got) != len(want) || got[0] != (Counter{Decider: ByDefault}) {
		t.Fatalf("counters %+v, want the %d of %v with the default first", got, len(want), want)
	}
	for _, c := range got {
		if !want[c] {
			t.Errorf("unexpected counter %+v", c)
		}
	}
	web, _ := s.Index("prod/web")
	dev, _ := s.Index("dev/web")
	p := udp("dev/tool", "prod/web", 53)
	v1, v2 := s.Evaluate(web, Ingress, &p), s.Evaluate(dev, Ingress, &p)
	if v1.Action != Deny || v1.Counter != v2.Counter || got[v1.Counter].Policy != "web-in" {
		t.Fatalf("verdicts %+v and %+v: want the same web-in counter", v1, v2)
	}
}
