package apiserver

import (
	"context"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tortie-net/tortie/api"
	"github.com/tortie-net/tortie/fib"
	"github.com/tortie-net/tortie/flow"
	"github.com/tortie-net/tortie/header"
	"github.com/tortie-net/tortie/policy"
	"github.com/tortie-net/tortie/router"
	"github.com/tortie-net/tortie/router/routertest"
)

var (
	podA = netip.MustParseAddr("10.244.1.2")
	podB = netip.MustParseAddr("10.244.1.3")
)

// testRouter is a router with pods ns/a and ns/b, a VXLAN peer's block and
// a policy under which B takes TCP 80 from A only.
func testRouter(t *testing.T) *router.Router {
	t.Helper()
	f := fib.New()
	err := f.Update(func(tx fib.Tx) error {
		return tx.Set(fib.Route{Prefix: netip.MustParsePrefix("10.244.2.0/26"), Source: fib.SourceStatic,
			NextHop: fib.NextHop{Kind: fib.KindRemote, Node: [4]byte{10, 0, 0, 2}, Mode: fib.ModeVXLAN, NodeName: "node-b"}})
	})
	if err != nil {
		t.Fatal(err)
	}
	u := &routertest.Underlay{}
	r := router.New(router.Config{NodeAddr: [4]byte{10, 0, 0, 1}, UnderlayMTU: 1500}, f,
		router.Underlay{Sender: func() router.UnderlaySender { return u.NewSender() }})
	t.Cleanup(func() { r.Close() })
	for _, p := range []struct {
		name string
		a    netip.Addr
	}{{"a", podA}, {"b", podB}} {
		if _, err := r.AddPort(router.PortConfig{Name: "tap-" + p.name, Addr: p.a, MAC: header.MAC{2, 0, 0, 0, 0, p.a.As4()[3]}, PolicyKey: "ns/" + p.name}, routertest.NewDevice()); err != nil {
			t.Fatal(err)
		}
	}
	ep := func(name string, a netip.Addr) policy.Endpoint {
		return policy.Endpoint{Key: "ns/" + name, Namespace: "ns", Labels: map[string]string{"app": name}, IP: a, Local: true}
	}
	set, err := policy.Compile(&policy.Inputs{Endpoints: []policy.Endpoint{ep("a", podA), ep("b", podB)}, GlobalNetworkPolicies: []policy.Policy{
		{Name: "b-in", Selector: "app == 'b'", Types: []policy.Direction{policy.Ingress}, Ingress: []policy.Rule{
			{Action: policy.Allow, Protocol: "TCP", Source: policy.Entity{Selector: "app == 'a'"}, Destination: policy.Entity{Ports: []policy.Port{{Min: 80, Max: 80}}}},
		}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.SetPolicy(router.Policy{Set: set}); err != nil {
		t.Fatal(err)
	}
	return r
}

func serveRouter(t *testing.T, r *router.Router) *api.Client {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "api.sock")
	l, err := Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	srv := Serve(ctx, l, (&Server{Router: r}).Handler())
	t.Cleanup(func() { cancel(); srv.Close() })
	return api.NewClient(sock)
}

func TestTraceAPI(t *testing.T) {
	r := testRouter(t)
	c := serveRouter(t, r)
	tr, err := c.Trace(api.TraceRequest{From: "10.244.1.2", To: "10.244.1.3", Proto: "tcp", Port: 80})
	if err != nil {
		t.Fatal(err)
	}
	if tr.Verdict != "forward" || tr.Route == nil || tr.Route.Kind != "local" || tr.Route.Port != "tap-b" ||
		tr.To.Endpoint != "ns/b" || !tr.Ingress.Evaluated || tr.Ingress.Policy != "b-in" || tr.Ingress.Action != "Allow" ||
		tr.SrcPort != defaultSrcPort || tr.DstPort != 80 || tr.Proto != "tcp" {
		t.Fatalf("A to B:80: %+v", tr)
	}
	if tr.Egress.Evaluated || !strings.HasPrefix(tr.Egress.Note, "not subject") {
		t.Errorf("A's egress: %+v", tr.Egress)
	}
	tr, err = c.Trace(api.TraceRequest{From: "10.244.2.9", To: "10.244.1.3", Proto: "udp", Port: 80})
	if err != nil {
		t.Fatal(err)
	}
	if tr.Verdict != "drop" || tr.Ingress.Decider != policy.ByTierEnd.String() || len(tr.Ingress.Steps) != 2 {
		t.Errorf("remote to B over UDP: %+v", tr)
	}
	tr, err = c.Trace(api.TraceRequest{From: "10.244.1.3", To: "10.244.2.9", Proto: "icmp"})
	if err != nil {
		t.Fatal(err)
	}
	if tr.Verdict != "forward" || tr.Route == nil || tr.Route.Mode != "vxlan" || tr.Route.NodeName != "node-b" || tr.ICMPType != header.ICMPEcho {
		t.Errorf("B to remote, ICMP: %+v", tr)
	}
	for _, bad := range []api.TraceRequest{
		{From: "10.244.1.2", To: "10.244.1.3", Proto: "tcp"},
		{From: "10.244.1.2", To: "10.244.1.3", Proto: "sctp", Port: 1},
		{From: "10.244.1.2", To: "10.244.1.3", Proto: "icmp", Port: 1},
		{From: "nope", To: "10.244.1.3", Proto: "tcp", Port: 1},
		{From: "10.244.1.2", To: "fe80::1", Proto: "tcp", Port: 1},
	} {
		if _, err := c.Trace(bad); err == nil {
			t.Errorf("trace %+v: no error", bad)
		}
	}
}

func TestResolve(t *testing.T) {
	eps := []api.EndpointInfo{
		{EndpointSpec: api.EndpointSpec{Name: "node-k8s-web-eth0", Address: podA, PodNamespace: "ns", PodName: "web"}},
		{EndpointSpec: api.EndpointSpec{Name: "node-k8s-web-eth0", Address: podB, PodNamespace: "other", PodName: "web"}},
		{EndpointSpec: api.EndpointSpec{Name: "lab1", Address: netip.MustParseAddr("10.244.1.4")}},
	}
	for _, c := range []struct {
		in, addr, key string
	}{
		{"10.9.8.7", "10.9.8.7", ""},
		{"ns/node-k8s-web-eth0", "10.244.1.2", "ns/node-k8s-web-eth0"},
		{"other/web", "10.244.1.3", "other/node-k8s-web-eth0"},
		{"lab1", "10.244.1.4", "lab1"},
	} {
		a, k, err := resolve(c.in, eps)
		if err != nil || a.String() != c.addr || k != c.key {
			t.Errorf("resolve(%q) = %v, %q, %v; want %s, %q", c.in, a, k, err, c.addr, c.key)
		}
	}
	for _, in := range []string{"", "web", "node-k8s-web-eth0", "ns/nope", "::1"} {
		if _, _, err := resolve(in, eps); err == nil {
			t.Errorf("resolve(%q): no error", in)
		}
	}
}

func TestFlowsAPI(t *testing.T) {
	r := testRouter(t)
	c := serveRouter(t, r)
	now := flow.Now()
	tab := r.Flows()
	k := flow.Key{Src: fib.AddrU32(podA), Dst: fib.AddrU32(podB), SrcPort: 40000, DstPort: 80, Proto: header.ProtocolTCP}
	tab.Track(k, flow.ViaHost, flow.TCPSyn, now)
	tab.SetVerdict(k, flow.Verdict{Flags: flow.PolicyAllowed, Gen: 1}, flow.TCPSyn, now)
	tab.Track(flow.Key{Src: fib.AddrU32(podB), Dst: fib.AddrU32(podA), Proto: 47}, 0, 0, now)
	fs, err := c.Flows(0)
	if err != nil {
		t.Fatal(err)
	}
	if len(fs.Flows) != 2 || fs.More || fs.Capacity != tab.Capacity() {
		t.Fatalf("flows %+v", fs)
	}
	for _, f := range fs.Flows {
		switch f.Proto {
		case "tcp":
			if f.Src != "10.244.1.2" || f.DstPort != 80 || f.State != "new" || strings.Join(f.Flags, ",") != "viaHost,policyAllowed" || f.PolicyGen != 1 || f.ExpiresIn <= 0 {
				t.Errorf("TCP flow %+v", f)
			}
		case "47":
			if f.SrcPort != 0 || len(f.Flags) != 0 {
				t.Errorf("GRE flow %+v", f)
			}
		default:
			t.Errorf("unexpected flow %+v", f)
		}
	}
	if fs, err := c.Flows(1); err != nil || len(fs.Flows) != 1 || !fs.More {
		t.Errorf("Flows(1) = %+v, %v; want one and more", fs, err)
	}
	if _, err := c.Flows(maxFlowLimit + 1); err == nil {
		t.Error("a limit over the maximum: no error")
	}
}
