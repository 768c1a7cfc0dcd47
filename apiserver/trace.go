package apiserver

import (
	"fmt"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/tortie-net/tortie/api"
	"github.com/tortie-net/tortie/fib"
	"github.com/tortie-net/tortie/flow"
	"github.com/tortie-net/tortie/header"
)

// Flow listing bounds: what GET /v1/flows returns without a limit, and at
// most (a copy of every entry of a large table is megabytes of JSON).
const (
	defaultFlowLimit = 1000
	maxFlowLimit     = 100000
)

// defaultSrcPort is a trace's source port when none is given: any
// ephemeral port; policy rarely looks at it.
const defaultSrcPort = 40000

func (s *Server) traceRoutes(mux *http.ServeMux) {
	mux.HandleFunc("POST /v1/trace", func(w http.ResponseWriter, r *http.Request) {
		var q api.TraceRequest
		if err := decode(r, &q); err != nil {
			reply(w, http.StatusBadRequest, api.Error{Error: "bad trace request: " + err.Error()})
			return
		}
		var eps []api.EndpointInfo
		if s.Endpoints != nil {
			eps = s.Endpoints.List()
		}
		t, err := s.trace(q, eps)
		if err != nil {
			reply(w, http.StatusBadRequest, api.Error{Error: err.Error()})
			return
		}
		reply(w, http.StatusOK, t)
	})
	mux.HandleFunc("GET /v1/flows", func(w http.ResponseWriter, r *http.Request) {
		limit := defaultFlowLimit
		if v := r.URL.Query().Get("limit"); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 || n > maxFlowLimit {
				reply(w, http.StatusBadRequest, api.Error{Error: fmt.Sprintf("bad limit %q: want 1 to %d", v, maxFlowLimit)})
				return
			}
			limit = n
		}
		reply(w, http.StatusOK, flows(s.Router.Flows(), limit))
	})
}

// trace resolves q's ends against the node's endpoints eps and asks the
// router.
func (s *Server) trace(q api.TraceRequest, eps []api.EndpointInfo) (api.Trace, error) {
	src, srcEP, err := resolve(q.From, eps)
	if err != nil {
		return api.Trace{}, fmt.Errorf("from: %w", err)
	}
	dst, dstEP, err := resolve(q.To, eps)
	if err != nil {
		return api.Trace{}, fmt.Errorf("to: %w", err)
	}
	k := flow.Key{Src: fib.AddrU32(src), Dst: fib.AddrU32(dst)}
	var typ, code uint8
	proto := strings.ToLower(q.Proto)
	switch proto {
	case "tcp", "udp":
		if q.Port == 0 {
			return api.Trace{}, fmt.Errorf("a %s trace needs a destination port", proto)
		}
		if q.ICMPType != nil || q.ICMPCode != 0 {
			return api.Trace{}, fmt.Errorf("ICMP type and code are for icmp traces")
		}
		k.Proto = header.ProtocolTCP
		if proto == "udp" {
			k.Proto = header.ProtocolUDP
		}
		k.SrcPort, k.DstPort = q.SrcPort, q.Port
		if k.SrcPort == 0 {
			k.SrcPort = defaultSrcPort
		}
	case "icmp":
		if q.Port != 0 || q.SrcPort != 0 {
			return api.Trace{}, fmt.Errorf("icmp has no ports")
		}
		k.Proto, typ, code = header.ProtocolICMP, header.ICMPEcho, q.ICMPCode
		if q.ICMPType != nil {
			typ = *q.ICMPType
		}
	default:
		return api.Trace{}, fmt.Errorf("unknown protocol %q (want tcp, udp or icmp)", q.Proto)
	}
	t := s.Router.Trace(k, typ, code)
	t.From.Address, t.To.Address = src.String(), dst.String()
	if t.From.Endpoint == "" {
		t.From.Endpoint = srcEP
	}
	if t.To.Endpoint == "" {
		t.To.Endpoint = dstEP
	}
	t.Proto, t.SrcPort, t.DstPort = proto, k.SrcPort, k.DstPort
	if k.Proto == header.ProtocolICMP {
		t.ICMPType, t.ICMPCode = typ, code
	}
	return t, nil
}

// resolve reads an end of a trace: an IPv4 address, or a pod by its
// endpoint's key ("namespace/endpoint name"), by "namespace/pod name", or
// by endpoint or pod name alone when only one endpoint has it. It returns
// the address and the endpoint's key ("" for an address).
func resolve(name string, eps []api.EndpointInfo) (netip.Addr, string, error) {
	if name == "" {
		return netip.Addr{}, "", fmt.Errorf("no pod or address given")
	}
	if a, err := netip.ParseAddr(name); err == nil {
		if !a.Is4() {
			return netip.Addr{}, "", fmt.Errorf("%s is not an IPv4 address", name)
		}
		return a, "", nil
	}
	for _, match := range []func(e *api.EndpointInfo) bool{
		func(e *api.EndpointInfo) bool { return e.Key() == name },
		func(e *api.EndpointInfo) bool { return e.PodName != "" && e.PodNamespace+"/"+e.PodName == name },
		func(e *api.EndpointInfo) bool { return e.Name == name },
		func(e *api.EndpointInfo) bool { return e.PodName == name },
	} {
		var found []*api.EndpointInfo
		for i := range eps {
			if match(&eps[i]) {
				found = append(found, &eps[i])
			}
		}
		switch len(found) {
		case 0:
			continue
		case 1:
			return found[0].Address, found[0].Key(), nil
		}
		keys := make([]string, len(found))
		for i, e := range found {
			keys[i] = e.Key()
		}
		return netip.Addr{}, "", fmt.Errorf("%q names %d endpoints (%s): give namespace/name", name, len(found), strings.Join(keys, ", "))
	}
	return netip.Addr{}, "", fmt.Errorf("%q is neither an IPv4 address nor a pod on this node", name)
}

// flows copies at most limit flows of t.
func flows(t *flow.Table, limit int) api.Flows {
	now := flow.Now()
	es, more := t.Snapshot(limit, now)
	out := api.Flows{Flows: make([]api.Flow, 0, len(es)), More: more, Capacity: t.Capacity()}
	for _, e := range es {
		f := api.Flow{
			Proto: protoName(e.Key.Proto), Src: addr(e.Key.Src).String(), Dst: addr(e.Key.Dst).String(),
			State: e.State, Flags: []string{}, ExpiresIn: time.Duration(e.Expires - now),
		}
		if e.Key.Proto == header.ProtocolTCP || e.Key.Proto == header.ProtocolUDP || e.Key.Proto == header.ProtocolICMP {
			f.SrcPort, f.DstPort = e.Key.SrcPort, e.Key.DstPort
		}
		if e.Flags&flow.ViaHost != 0 {
			f.Flags = append(f.Flags, "viaHost")
		}
		if e.Flags&flow.PolicyAllowed != 0 {
			f.Flags = append(f.Flags, "policyAllowed")
		}
		if e.Flags&flow.PolicyDenied != 0 {
			f.Flags = append(f.Flags, "policyDenied")
		}
		if e.Verdict.Flags != 0 {
			f.PolicyGen = e.Verdict.Gen
		}
		out.Flows = append(out.Flows, f)
	}
	return out
}

func protoName(p uint8) string {
	switch p {
	case header.ProtocolTCP:
		return "tcp"
	case header.ProtocolUDP:
		return "udp"
	case header.ProtocolICMP:
		return "icmp"
	}
	return strconv.Itoa(int(p))
}

func addr(a uint32) netip.Addr {
	return netip.AddrFrom4([4]byte{byte(a >> 24), byte(a >> 16), byte(a >> 8), byte(a)})
}
