package router

import (
	"fmt"
	"testing"

	"github.com/tortie-net/tortie/fib"
	"github.com/tortie-net/tortie/flow"
	"github.com/tortie-net/tortie/header"
	"github.com/tortie-net/tortie/policy"
)

func u32(a [4]byte) uint32 {
	return uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3])
}

// TestTraceAgrees: for a few policies and packets, Trace's answer is what
// the packet path does with the packet (sent through the harness
// afterwards), and each side's verdict is Set.Evaluate's.
func TestTraceAgrees(t *testing.T) {
	aOut := policy.Policy{Name: "a-out", Selector: "app == 'a'", Types: []policy.Direction{policy.Egress}, Egress: []policy.Rule{
		{Action: policy.Allow, Protocol: "TCP", Destination: policy.Entity{Ports: tcpPorts(80, 22)}},
	}}
	seen := map[string]int{}
	for _, mk := range []struct {
		name string
		set  func() *policy.Set
	}{
		{"nothing selects", func() *policy.Set { return compilePolicy(t) }},
		{"b isolated", func() *policy.Set { return bIsolated(t) }},
		{"a egress and b isolated", func() *policy.Set {
			return compilePolicy(t, aOut,
				policy.Policy{Name: "b-in", Selector: "app == 'b'", Types: []policy.Direction{policy.Ingress}, Ingress: []policy.Rule{
					{Action: policy.Deny, Protocol: "TCP", Destination: policy.Entity{Ports: tcpPorts(22)}},
					{Action: policy.Allow, Protocol: "TCP", Source: policy.Entity{Selector: "app == 'a'"}, Destination: policy.Entity{Ports: tcpPorts(80)}},
				}})
		}},
	} {
		for _, pk := range []struct {
			from     string
			src, dst [4]byte
			dport    uint16
		}{
			{"a", podA, podB, 80}, {"a", podA, podB, 22}, {"a", podA, podB, 443},
			{"b", podB, podA, 80}, {"a", podA, remoteV, 80}, {"a", podA, remoteV, 8080},
			{"vxlan", remoteV, podB, 80}, {"vxlan", remoteV, podB, 22},
		} {
			t.Run(fmt.Sprintf("%s/%v-%v:%d", mk.name, pk.src, pk.dst, pk.dport), func(t *testing.T) {
				h := newHarness(t)
				set := mk.set()
				h.setPolicy(set)
				k := flow.Key{Src: u32(pk.src), Dst: u32(pk.dst), SrcPort: 40000, DstPort: pk.dport, Proto: header.ProtocolTCP}
				tr := h.r.Trace(k, 0, 0)
				// Each evaluated side says what Evaluate says.
				pp := policy.Packet{Src: k.Src, Dst: k.Dst, SrcPort: k.SrcPort, DstPort: k.DstPort, Proto: k.Proto}
				for _, side := range []struct {
					ep  string
					dir policy.Direction
					tp  string
					act string
					ev  bool
				}{{tr.Egress.Endpoint, policy.Egress, "egress", tr.Egress.Action, tr.Egress.Evaluated}, {tr.Ingress.Endpoint, policy.Ingress, "ingress", tr.Ingress.Action, tr.Ingress.Evaluated}} {
					if !side.ev {
						continue
					}
					i, ok := set.Index(side.ep)
					if !ok {
						t.Fatalf("%s evaluated for unknown endpoint %q", side.tp, side.ep)
					}
					if v := set.Evaluate(i, side.dir, &pp); string(v.Action) != side.act {
						t.Errorf("%s: trace %s, Evaluate %s", side.tp, side.act, v.Action)
					}
				}
				// And the packet path does what the trace says.
				p := tcp4(pk.src, 40000, pk.dst, pk.dport, syn)
				var got int
				switch pk.from {
				case "a":
					h.fromPodPkts(h.pA, p)
				case "b":
					h.fromPodPkts(h.pB, p)
				default:
					h.fromVXLANPkt(p)
				}
				switch pk.dst {
				case podA:
					got = len(h.devA.Take())
				case podB:
					got = len(h.devB.Take())
				default:
					got = len(h.u.Take())
				}
				seen[tr.Verdict]++
				want := 0
				if tr.Verdict == "forward" {
					want = 1
				}
				if got != want {
					t.Fatalf("trace says %s (%s; egress %+v; ingress %+v), the packet path delivered %d", tr.Verdict, tr.Reason, tr.Egress, tr.Ingress, got)
				}
			})
		}
	}
	if seen["forward"] == 0 || seen["drop"] == 0 {
		t.Fatalf("verdicts %v: the cases should both forward and drop", seen)
	}
}

// TestTraceRoutes: the route and the policy notes of a few traces.
func TestTraceRoutes(t *testing.T) {
	h := newHarness(t)
	k := func(src, dst [4]byte) flow.Key {
		return flow.Key{Src: u32(src), Dst: u32(dst), SrcPort: 1, DstPort: 80, Proto: header.ProtocolTCP}
	}
	tr := h.r.Trace(k(podA, remoteI), 0, 0)
	if tr.Route == nil || tr.Route.Prefix != "10.244.3.0/26" || tr.Route.Kind != "remote" || tr.Route.Mode != "ipip" || tr.Verdict != "forward" {
		t.Fatalf("to the IPIP peer, no policy: %+v route %+v", tr, tr.Route)
	}
	if tr.Egress.Note != "no policy installed" {
		t.Errorf("egress note %q", tr.Egress.Note)
	}
	if tr := h.r.Trace(k(podA, [4]byte{192, 168, 9, 9}), 0, 0); tr.Route != nil || tr.Verdict != "drop" {
		t.Errorf("no route: %+v", tr)
	}
	if tr := h.r.Trace(k(podA, [4]byte{10, 244, 1, 9}), 0, 0); tr.Route == nil || tr.Route.Kind != fib.KindBlackhole.String() || tr.Verdict != "drop" {
		t.Errorf("blackhole: %+v", tr)
	}
	h.setPolicy(bIsolated(t))
	tr = h.r.Trace(k(podA, podB), 0, 0)
	if tr.Route == nil || tr.Route.Kind != "local" || tr.Route.Port != "b" || tr.From.Endpoint != "ns/a" || tr.To.Endpoint != "ns/b" {
		t.Fatalf("A to B: %+v route %+v", tr, tr.Route)
	}
	if tr.Egress.Evaluated || tr.Egress.Note != "not subject: no policy or profile decides for it" {
		t.Errorf("A's egress: %+v", tr.Egress)
	}
	if !tr.Ingress.Evaluated || tr.Ingress.Policy != "b-in" || tr.Ingress.Rule != 1 || tr.Ingress.Action != "Allow" || len(tr.Ingress.Steps) != 2 || tr.Ingress.Steps[0].Matched {
		t.Errorf("B's ingress: %+v", tr.Ingress)
	}
	// The node's own packet to B: allowed without evaluation.
	tr = h.r.Trace(k(nodeA, podB), 0, 0)
	if !tr.From.Node || tr.Verdict != "forward" || tr.Ingress.Evaluated {
		t.Errorf("node to B: %+v", tr)
	}
	// B's egress denies at the end of the tier; ingress is not reached.
	tr = h.r.Trace(k(podB, remoteV), 0, 0)
	if tr.Verdict != "drop" || tr.Egress.Decider != policy.ByTierEnd.String() || tr.Ingress.Evaluated || tr.Ingress.Note == "" {
		t.Errorf("B to remote: %+v", tr)
	}
}
