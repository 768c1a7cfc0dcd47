package router

import (
	"net/netip"

	"github.com/tortie-net/tortie/api"
	"github.com/tortie-net/tortie/fib"
	"github.com/tortie-net/tortie/flow"
	"github.com/tortie-net/tortie/policy"
)

// Trace says what the router would do with the first packet of flow k (and
// ICMP type and code) and why, without sending one: the destination's
// route, and network policy at the source's egress and the destination's
// ingress. It takes the packet path's decisions from the same functions
// (policyEnds, policyChecks, policyPacket) and policy's Explain, which
// decides as Evaluate does, on the state in force. Where the packet would
// come in from is inferred from its source address: a local pod's port, the
// node itself through the host, or another node. A flow already in the
// table is not consulted: the answer is for a new flow.
//
// Only fills the route, verdict and policy fields, and marks the ends that
// are the node's own addresses; the caller names the rest.
func (r *Router) Trace(k flow.Key, icmpType, icmpCode uint8) api.Trace {
	var t api.Trace
	tab := r.fib.Load()
	ports := *r.ports.Load()
	ps := r.pol.Load()
	t.From.Node, t.To.Node = r.isNode(k.Src), r.isNode(k.Dst)
	t.Egress.Rule, t.Ingress.Rule = -1, -1

	rt, ok := tab.Match(k.Dst)
	if !ok {
		t.Verdict, t.Reason = "drop", "no route to the destination"
		t.Egress.Note, t.Ingress.Note = "not evaluated: no route", "not evaluated: no route"
		return t
	}
	ar := r.apiRoute(rt, ports)
	t.Route = &ar
	nh := &rt.NextHop
	if nh.Kind != fib.KindLocal && nh.Kind != fib.KindRemote && nh.Kind != fib.KindHost {
		t.Verdict, t.Reason = "drop", "the route drops it ("+nh.Kind.String()+")"
		t.Egress.Note, t.Ingress.Note = "not evaluated: dropped by its route", "not evaluated: dropped by its route"
		return t
	}
	if ps == nil {
		t.Verdict, t.Reason = "forward", "no network policy installed"
		t.Egress.Note, t.Ingress.Note = "no policy installed", "no policy installed"
		return t
	}

	// Where the packet comes in: a local pod's port, the host, or the
	// network (another node's pod, through a tunnel or natively).
	o, from := fromTunnel, (*Port)(nil)
	if src, ok := tab.Match(k.Src); ok && src.NextHop.Kind == fib.KindLocal && src.NextHop.Port < uint32(len(ports)) {
		o, from = fromPod, ports[src.NextHop.Port]
	} else if t.From.Node {
		o = fromHost
	}
	src, dst, fromNode, _ := r.policyEnds(ps, tab, ports, o, from, k.Src, nh)
	egress, ingress := ps.policyChecks(k.Dst, src, dst, fromNode, nh.Kind == fib.KindHost)
	pk := policyPacket(k, icmpType, icmpCode)
	t.From.Endpoint = r.endpointKey(tab, ports, k.Src)
	t.To.Endpoint = r.endpointKey(tab, ports, k.Dst)

	t.Verdict, t.Reason = "forward", "allowed by policy"
	side := func(tp *api.TracePolicy, e *portPolicy, eval bool, dir policy.Direction, isLocal bool) bool {
		if e != nil {
			tp.Endpoint = ps.set.Key(int(e.ep))
		}
		switch {
		case eval:
		case fromNode:
			tp.Note = "not evaluated: from the node itself (allowed, as for kubelet's probes)"
			return true
		case !isLocal:
			tp.Note = "not evaluated: not a local pod"
			return true
		case dir == policy.Egress && e != nil && e.out:
			tp.Note = "not evaluated here: a Service address, judged once the host translated it"
			return true
		default:
			tp.Note = "not subject: no policy or profile decides for it"
			return true
		}
		v, steps := ps.set.Explain(int(e.ep), dir, &pk)
		tp.Evaluated = true
		tp.Action, tp.Decider, tp.Tier, tp.Policy, tp.Rule = string(v.Action), v.Decider.String(), v.Tier, v.Policy, v.Rule
		for _, s := range steps {
			tp.Steps = append(tp.Steps, api.TraceStep{Tier: s.Tier, Policy: s.Policy, Rule: s.Rule, Action: string(s.Action), Matched: s.Matched, Note: s.Note})
		}
		return v.Action == policy.Allow
	}
	if !side(&t.Egress, src, egress, policy.Egress, o == fromPod) {
		t.Verdict, t.Reason = "drop", "denied at the source's egress"
		t.Ingress.Note = "not evaluated: denied at egress first"
		return t
	}
	if !side(&t.Ingress, dst, ingress, policy.Ingress, nh.Kind == fib.KindLocal) {
		t.Verdict, t.Reason = "drop", "denied at the destination's ingress"
		return t
	}
	if !egress && !ingress {
		t.Reason = "no policy decides for either end"
		if fromNode {
			t.Reason = "from the node itself: allowed"
		}
	}
	return t
}

// endpointKey names the local pod at address a, if any.
func (r *Router) endpointKey(tab *fib.Table, ports []*Port, a uint32) string {
	nh := tab.Lookup(a)
	if nh == nil || nh.Kind != fib.KindLocal || nh.Port >= uint32(len(ports)) || ports[nh.Port] == nil {
		return ""
	}
	if k := ports[nh.Port].cfg.PolicyKey; k != "" {
		return k
	}
	return ports[nh.Port].cfg.Name
}

// apiRoute shows a FIB route as the API does.
func (r *Router) apiRoute(rt fib.Route, ports []*Port) api.Route {
	a := api.Route{Prefix: rt.Prefix.String(), Kind: rt.NextHop.Kind.String(), Source: rt.Source.String()}
	switch rt.NextHop.Kind {
	case fib.KindRemote:
		a.Mode, a.Node, a.NodeName = rt.NextHop.Mode.String(), netip.AddrFrom4(rt.NextHop.Node).String(), rt.NextHop.NodeName
	case fib.KindLocal:
		if rt.NextHop.Port < uint32(len(ports)) && ports[rt.NextHop.Port] != nil {
			a.Port = ports[rt.NextHop.Port].cfg.Name
		}
	}
	return a
}
