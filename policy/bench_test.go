package policy

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"testing"
)

// benchInputs is n rules ahead of the one that allows the benchmark's
// packet, in ten policies of one tier: a first packet walks all of them.
// The rules mix what is compiled (address ranges from selectors and nets,
// port ranges, named ports) over a cluster of 200 endpoints.
func benchInputs(n int) *Inputs {
	in := &Inputs{}
	for i := range 200 {
		in.Endpoints = append(in.Endpoints, Endpoint{
			Key: fmt.Sprintf("ns%d/p%d", i%10, i), Namespace: fmt.Sprintf("ns%d", i%10),
			Labels: map[string]string{"app": fmt.Sprintf("app%d", i%20)}, IP: netip.AddrFrom4([4]byte{10, 0, byte(i / 250), byte(i%250 + 1)}),
			Ports: []NamedPort{{Name: "http", Port: uint16(8000 + i%10)}}, Local: i == 0,
		})
	}
	per := n / 10
	for p := range 10 {
		pol := Policy{Name: fmt.Sprintf("p%02d", p), Order: f(float64(p)), Selector: "all()"}
		for r := range per {
			var rule Rule
			switch r % 3 {
			case 0:
				rule = Rule{Action: Deny, Protocol: "TCP", Source: Entity{Selector: fmt.Sprintf("app == 'app%d'", 1+r%19)},
					Destination: Entity{Ports: []Port{{Min: 22, Max: 22}}}}
			case 1:
				rule = Rule{Action: Allow, Protocol: "UDP", Source: Entity{Nets: []string{fmt.Sprintf("172.%d.%d.0/24", 16+r%16, r%256)}}}
			default:
				rule = Rule{Action: Allow, Protocol: "TCP", Destination: Entity{Ports: []Port{{Name: "http"}}, NotNets: []string{"10.0.0.0/8"}}}
			}
			pol.Ingress = append(pol.Ingress, rule)
		}
		in.GlobalNetworkPolicies = append(in.GlobalNetworkPolicies, pol)
	}
	in.GlobalNetworkPolicies = append(in.GlobalNetworkPolicies, Policy{Name: "z-last", Order: f(100), Selector: "all()",
		Ingress: []Rule{{Action: Allow, Protocol: "TCP", Source: Entity{Selector: "app == 'app0'"}, Destination: Entity{Ports: []Port{{Min: 80, Max: 80}}}}}})
	return in
}

func BenchmarkEvaluate(b *testing.B) {
	for _, n := range []int{10, 100, 1000} {
		b.Run(fmt.Sprintf("rules=%d", n), func(b *testing.B) {
			s, err := Compile(benchInputs(n))
			if err != nil {
				b.Fatal(err)
			}
			// From ns0/p20 (app0) to the local ns0/p0, TCP 80.
			p := Packet{Src: 0x0a000015, Dst: 0x0a000001, SrcPort: 40000, DstPort: 80, Proto: 6}
			if v := s.Evaluate(0, Ingress, &p); v.Policy != "z-last" || v.Action != Allow {
				b.Fatalf("verdict %+v", v)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				s.Evaluate(0, Ingress, &p)
			}
		})
	}
}

// TestExplainAgrees checks Explain against Evaluate on random packets over
// the benchmark's rules, and that its last step is the deciding one.
func TestExplainAgrees(t *testing.T) {
	s, err := Compile(benchInputs(100))
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for range 2000 {
		p := Packet{Src: 0x0a000000 | rng.Uint32N(256), Dst: 0x0a000001, SrcPort: uint16(rng.Uint32()), DstPort: []uint16{22, 80, 8000, 8005, 9}[rng.IntN(5)],
			Proto: []uint8{1, 6, 17}[rng.IntN(3)]}
		if rng.IntN(4) == 0 {
			p.Src = 0xac000000 | rng.Uint32N(1<<20) // 172.x
		}
		dir := Direction(rng.IntN(2))
		v := s.Evaluate(0, dir, &p)
		ev, steps := s.Explain(0, dir, &p)
		if v != ev {
			t.Fatalf("%+v: Evaluate %+v, Explain %+v", p, v, ev)
		}
		last := steps[len(steps)-1]
		if !last.Matched || last.Policy != v.Policy || last.Rule != v.Rule {
			t.Fatalf("%+v: verdict %+v, last step %+v", p, v, last)
		}
	}
}
