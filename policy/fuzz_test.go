package policy

import (
	"fmt"
	"net/netip"
	"testing"

	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// bytes hands out fuzz input; past its end it gives zeros.
type bytes struct {
	b []byte
	i int
}

func (r *bytes) next() byte {
	if r.i >= len(r.b) {
		return 0
	}
	r.i++
	return r.b[r.i-1]
}

func (r *bytes) pick(ss []string) string { return ss[int(r.next())%len(ss)] }

var (
	fzSelectors = []string{"", "all()", "app == 'x'", "app != 'y'", "has(app)", "app in {'x', 'z'}", "!has(app) || app == 'z'",
		"projectcalico.org/namespace == 'a'", "team == 'one'", "env == 'p'", "app ==", "((("}
	fzNets     = []string{"10.0.0.0/24", "10.0.0.3", "0.0.0.0/0", "10.0.0.0/30", "2001:db8::/32", "192.0.2.0/24", "bad", "10.0.0.0/33"}
	fzProtos   = []string{"", "TCP", "UDP", "ICMP", "SCTP", "ICMPv6", "17", "300", "tcp"}
	fzPorts    = []string{"80", "8080", "1:1000", "http", "dns", "100:90", "-x"}
	fzActions  = []string{"Allow", "Deny", "Log", "Pass", "Bogus"}
	fzTiers    = []string{"", "t1", "t2", "missing"}
	fzTierActs = []string{"", "Deny", "Pass", "Allow"}
)

func (r *bytes) entity() Entity {
	var e Entity
	flags := r.next()
	if flags&1 != 0 {
		e.Nets = []string{r.pick(fzNets)}
	}
	if flags&2 != 0 {
		e.NotNets = []string{r.pick(fzNets)}
	}
	if flags&4 != 0 {
		e.Selector = r.pick(fzSelectors)
	}
	if flags&8 != 0 {
		e.NotSelector = r.pick(fzSelectors)
	}
	if flags&16 != 0 {
		e.NamespaceSelector = r.pick(fzSelectors)
	}
	if flags&32 != 0 {
		if p, err := ParsePort(r.pick(fzPorts)); err == nil {
			e.Ports = append(e.Ports, p)
		}
	}
	if flags&64 != 0 {
		if p, err := ParsePort(r.pick(fzPorts)); err == nil {
			e.NotPorts = append(e.NotPorts, p)
		}
	}
	if flags&128 != 0 {
		e.ServiceAccounts = &ServiceAccountMatch{Selector: r.pick(fzSelectors)}
		if r.next()&1 != 0 {
			e.ServiceAccounts.Names = []string{r.pick([]string{"s1", "s2"})}
		}
	}
	return e
}

func (r *bytes) rules() []Rule {
	var rs []Rule
	for range int(r.next() % 4) {
		ru := Rule{Action: Action(r.pick(fzActions)), Protocol: Protocol(r.pick(fzProtos))}
		if f := r.next(); f&1 != 0 {
			ru.NotProtocol = Protocol(r.pick(fzProtos))
		} else if f&2 != 0 {
			t := r.next()
			ru.ICMP = &ICMPMatch{Type: &t}
			if f&4 != 0 {
				c := r.next()
				ru.ICMP.Code = &c
			}
		} else if f&8 != 0 {
			t := r.next()
			ru.NotICMP = &ICMPMatch{Type: &t}
		}
		ru.Source, ru.Destination = r.entity(), r.entity()
		rs = append(rs, ru)
	}
	return rs
}

// fuzzInputs builds a small cluster and random-ish policies from data.
func fuzzInputs(data []byte) *Inputs {
	r := &bytes{b: data}
	in := &Inputs{}
	for i := range 1 + int(r.next()%6) {
		ns := r.pick([]string{"a", "b"})
		ep := Endpoint{Key: fmt.Sprintf("%s/p%d", ns, i), Namespace: ns, Local: r.next()%4 != 0,
			Labels:          map[string]string{"app": r.pick([]string{"x", "y", "z"})},
			NamespaceLabels: map[string]string{"env": r.pick([]string{"p", "q"})},
			ServiceAccount:  r.pick([]string{"s1", "s2"}), ServiceAccountLabels: map[string]string{"team": r.pick([]string{"one", "two"})},
			IP:    netip.AddrFrom4([4]byte{10, 0, 0, byte(i + 1)}),
			Ports: []NamedPort{{Name: r.pick([]string{"http", "dns"}), Protocol: Protocol(r.pick([]string{"", "TCP", "UDP"})), Port: uint16(r.next()) + 1}},
		}
		if r.next()%3 == 0 {
			ep.Profiles = []string{"prof"}
		}
		in.Endpoints = append(in.Endpoints, ep)
	}
	in.Profiles = []Profile{{Name: "prof", LabelsToApply: map[string]string{"app": "z"}, Ingress: r.rules(), Egress: r.rules()}}
	for _, name := range []string{"t1", "t2"} {
		if r.next()%2 == 0 {
			t := Tier{Name: name, DefaultAction: Action(r.pick(fzTierActs))}
			if o := r.next(); o%3 != 0 {
				v := float64(o)
				t.Order = &v
			}
			in.Tiers = append(in.Tiers, t)
		}
	}
	if r.next()%2 == 0 {
		in.GlobalNetworkSets = append(in.GlobalNetworkSets, NetworkSet{Name: "g", Labels: map[string]string{"app": "x"}, Nets: []string{r.pick(fzNets)}})
		in.NetworkSets = append(in.NetworkSets, NetworkSet{Name: "n", Namespace: "a", Labels: map[string]string{"app": "y"}, Nets: []string{r.pick(fzNets)}})
	}
	for i := range int(r.next() % 5) {
		p := Policy{Name: fmt.Sprintf("p%d", i), Tier: r.pick(fzTiers), Selector: r.pick(fzSelectors), Ingress: r.rules(), Egress: r.rules()}
		if o := r.next(); o%3 != 0 {
			v := float64(o % 8)
			p.Order = &v
		}
		switch t := r.next() % 4; t {
		case 1:
			p.Types = []Direction{Ingress}
		case 2:
			p.Types = []Direction{Egress}
		case 3:
			p.Types = []Direction{Ingress, Egress}
		}
		if r.next()%2 == 0 {
			p.Namespace = r.pick([]string{"a", "b"})
			in.NetworkPolicies = append(in.NetworkPolicies, p)
		} else {
			p.NamespaceSelector = r.pick(fzSelectors)
			p.ServiceAccountSelector = r.pick(fzSelectors)
			in.GlobalNetworkPolicies = append(in.GlobalNetworkPolicies, p)
		}
	}
	if r.next()%2 == 0 {
		port := intstr.FromInt32(int32(r.next()))
		if r.next()%2 == 0 {
			port = intstr.FromString("http")
		}
		peer := networkingv1.NetworkPolicyPeer{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": r.pick([]string{"x", "y"})}}}
		if r.next()%2 == 0 {
			peer = networkingv1.NetworkPolicyPeer{IPBlock: &networkingv1.IPBlock{CIDR: r.pick(fzNets), Except: []string{r.pick(fzNets)}}}
		}
		in.KubernetesPolicies = append(in.KubernetesPolicies, &networkingv1.NetworkPolicy{
			ObjectMeta: metav1.ObjectMeta{Namespace: "a", Name: "k"},
			Spec: networkingv1.NetworkPolicySpec{
				PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": r.pick([]string{"x", "y"})}},
				Ingress:     []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{peer}, Ports: []networkingv1.NetworkPolicyPort{{Port: &port}}}},
				Egress:      []networkingv1.NetworkPolicyEgressRule{{To: []networkingv1.NetworkPolicyPeer{peer}}},
			},
		})
	}
	return in
}

// fuzzPackets are packets between the fuzz cluster's addresses and one
// outside, in the protocols rules name.
func fuzzPackets(seed byte) []Packet {
	var out []Packet
	for _, proto := range []uint8{6, 17, 1, 132, 47} {
		for s := range 4 {
			for d := range 4 {
				p := Packet{Src: 0x0a000000 + uint32(s), Dst: 0x0a000000 + uint32(d), Proto: proto,
					SrcPort: 40000, DstPort: []uint16{80, 8080, 53, uint16(seed) + 1}[(s+d)%4], ICMPType: seed % 16, ICMPCode: seed % 3}
				if s == 0 {
					p.Src = 0xc0000201 // 192.0.2.1
				}
				out = append(out, p)
			}
		}
	}
	return out
}

// FuzzCompile compiles random-ish inputs: Compile must return a Set or an
// error, never panic; verdicts must be the same from a second compilation
// of the same inputs and from Explain.
func FuzzCompile(f *testing.F) {
	for _, s := range []string{"", "\x05\x00\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a", "\xff\xfe\xfd\xfc\xfb\xfa\xf9\xf8\xf7\xf6\xf5\xf4\xf3\xf2",
		"\x03\x01\x02\x00\x01\x00\x02\x01\x01\x00\x00\x03\x02\x00\x01\x04\x07\x03\x00\x22\x10\x04\x05\x00\x00\x01\x02\x02"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		s1, err1 := Compile(fuzzInputs(data))
		s2, err2 := Compile(fuzzInputs(data))
		if (err1 == nil) != (err2 == nil) {
			t.Fatalf("compiled once (%v) but not twice (%v)", err1, err2)
		}
		if err1 != nil {
			return
		}
		if s1.Len() != s2.Len() {
			t.Fatalf("%d endpoints, then %d", s1.Len(), s2.Len())
		}
		var seed byte
		if len(data) > 0 {
			seed = data[len(data)-1]
		}
		pkts := fuzzPackets(seed)
		for ep := range s1.Len() {
			for dir := Ingress; dir <= Egress; dir++ {
				for i := range pkts {
					v1 := s1.Evaluate(ep, dir, &pkts[i])
					v2 := s2.Evaluate(ep, dir, &pkts[i])
					v3, steps := s1.Explain(ep, dir, &pkts[i])
					if v1 != v2 || v1 != v3 {
						t.Fatalf("endpoint %s %s %+v: %+v, recompiled %+v, explained %+v", s1.Key(ep), dir, pkts[i], v1, v2, v3)
					}
					if v1.Action != Allow && v1.Action != Deny {
						t.Fatalf("verdict action %q", v1.Action)
					}
					if len(steps) == 0 {
						t.Fatalf("no steps explained")
					}
				}
			}
		}
	})
}

// TestFuzzInputsReachBoth checks that the fuzz decoder makes inputs that
// compile as well as inputs that are refused, so FuzzCompile exercises
// evaluation and validation both.
func TestFuzzInputsReachBoth(t *testing.T) {
	ok, bad := 0, 0
	for i := range 300 {
		data := make([]byte, 64)
		for j := range data {
			data[j] = byte(i*31 + j*j*7 + i*j)
		}
		if s, err := Compile(fuzzInputs(data)); err != nil {
			bad++
		} else if s.Len() > 0 {
			ok++
		}
	}
	if ok == 0 || bad == 0 {
		t.Errorf("%d inputs compiled with local endpoints, %d refused: want both", ok, bad)
	}
	t.Logf("%d compiled, %d refused", ok, bad)
}
