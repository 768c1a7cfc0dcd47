package peering

import (
	"net/netip"
	"reflect"
	"testing"

	"github.com/tortie-net/tortie/kubeview"
	"github.com/tortie-net/tortie/resources"
)

func addrs(l ...string) []netip.Addr {
	var out []netip.Addr
	for _, s := range l {
		out = append(out, netip.MustParseAddr(s))
	}
	return out
}

func prefixes(l ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range l {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}

// web is a LoadBalancer Service with externalTrafficPolicy Local and an
// address of each kind inside the ranges of svcRanges and one outside.
func web() *kubeview.Service {
	return &kubeview.Service{Namespace: "x", Name: "web", Type: "LoadBalancer", ExternalTrafficPolicy: "Local",
		ClusterIPs:  addrs("10.96.0.20", "fd00::20"),
		ExternalIPs: addrs("192.0.2.10", "198.51.100.7"),
		IngressIPs:  addrs("198.18.0.10", "198.19.0.5")}
}

var svcRanges = resources.ServiceRanges{ClusterIPs: prefixes("10.96.0.0/12"), ExternalIPs: prefixes("192.0.2.0/24"),
	LoadBalancerIPs: prefixes("198.18.0.0/24")}

func webSlice(name string, eps ...kubeview.Endpoint) *kubeview.EndpointSlice {
	return &kubeview.EndpointSlice{Namespace: "x", Name: name, Service: "web", AddressType: "IPv4", Endpoints: eps}
}

func TestServiceRoutes(t *testing.T) {
	all := []string{"10.96.0.20/32", "192.0.2.10/32", "198.18.0.10/32"}
	ready := func(node string) kubeview.Endpoint { return kubeview.Endpoint{Node: node, Ready: true} }
	notReady := func(node string) kubeview.Endpoint { return kubeview.Endpoint{Node: node} }
	with := func(change func(s *kubeview.Service)) *kubeview.Service {
		s := web()
		change(s)
		return s
	}
	for _, c := range []struct {
		name   string
		ranges *resources.ServiceRanges // nil: svcRanges
		svcs   []*kubeview.Service
		slices []*kubeview.EndpointSlice
		want   []string
	}{
		{name: "local: ready endpoint here", svcs: []*kubeview.Service{web()},
			slices: []*kubeview.EndpointSlice{webSlice("a", ready("n1"), notReady("n2"))}, want: all},
		{name: "local: ready endpoint elsewhere only", svcs: []*kubeview.Service{web()},
			slices: []*kubeview.EndpointSlice{webSlice("a", ready("n2"), notReady("n1"))}},
		{name: "local: endpoint here not ready", svcs: []*kubeview.Service{web()},
			slices: []*kubeview.EndpointSlice{webSlice("a", notReady("n1"))}},
		{name: "local: no slices", svcs: []*kubeview.Service{web()}},
		{name: "local: ready endpoint here in the second slice", svcs: []*kubeview.Service{web()},
			slices: []*kubeview.EndpointSlice{webSlice("a", ready("n2"), notReady("n1")), webSlice("b", ready("n3"), ready("n1"))},
			want:   all},
		{name: "local: an endpoint without a node", svcs: []*kubeview.Service{web()},
			slices: []*kubeview.EndpointSlice{webSlice("a", ready(""))}},
		{name: "local: an IPv6 slice here gives no IPv4 route", svcs: []*kubeview.Service{web()},
			slices: []*kubeview.EndpointSlice{{Namespace: "x", Name: "a6", Service: "web", AddressType: "IPv6",
				Endpoints: []kubeview.Endpoint{ready("n1")}}}},
		{name: "local: slices of another Service, and of one of the same name elsewhere", svcs: []*kubeview.Service{web()},
			slices: []*kubeview.EndpointSlice{
				{Namespace: "x", Name: "o", Service: "other", AddressType: "IPv4", Endpoints: []kubeview.Endpoint{ready("n1")}},
				{Namespace: "y", Name: "w", Service: "web", AddressType: "IPv4", Endpoints: []kubeview.Endpoint{ready("n1")}},
				{Namespace: "x", Name: "unlabelled", AddressType: "IPv4", Endpoints: []kubeview.Endpoint{ready("n1")}},
			}},
		{name: "service deleted: its slices advertise nothing",
			slices: []*kubeview.EndpointSlice{webSlice("a", ready("n1"))}},
		{name: "cluster policy: the ranges cover it",
			svcs:   []*kubeview.Service{with(func(s *kubeview.Service) { s.ExternalTrafficPolicy = "Cluster" })},
			slices: []*kubeview.EndpointSlice{webSlice("a", ready("n1"))}},
		{name: "cluster policy, LoadBalancer address named alone: every node",
			ranges: &resources.ServiceRanges{ClusterIPs: svcRanges.ClusterIPs, ExternalIPs: svcRanges.ExternalIPs,
				LoadBalancerIPs: prefixes("198.18.0.10/32")},
			svcs: []*kubeview.Service{with(func(s *kubeview.Service) { s.ExternalTrafficPolicy = "Cluster" })},
			want: all},
		{name: "cluster policy, spec.loadBalancerIP named alone: every node",
			ranges: &resources.ServiceRanges{LoadBalancerIPs: prefixes("198.18.0.10/32", "198.18.0.0/24")},
			svcs: []*kubeview.Service{with(func(s *kubeview.Service) {
				s.ExternalTrafficPolicy, s.LoadBalancerIP, s.IngressIPs = "", netip.MustParseAddr("198.18.0.10"), addrs("198.18.0.11")
			})},
			want: []string{"198.18.0.11/32"}},
		{name: "cluster policy, a single-address LoadBalancer range on a NodePort Service",
			ranges: &resources.ServiceRanges{LoadBalancerIPs: prefixes("198.18.0.10/32")},
			svcs:   []*kubeview.Service{with(func(s *kubeview.Service) { s.ExternalTrafficPolicy, s.Type = "Cluster", "NodePort" })}},
		{name: "cluster policy, external IP named alone: every node",
			ranges: &resources.ServiceRanges{ClusterIPs: svcRanges.ClusterIPs, ExternalIPs: prefixes("192.0.2.10/32")},
			svcs: []*kubeview.Service{with(func(s *kubeview.Service) {
				s.ExternalTrafficPolicy, s.Type, s.IngressIPs = "Cluster", "ClusterIP", nil
			})},
			want: []string{"10.96.0.20/32", "192.0.2.10/32"}},
		{name: "no ranges: nothing", ranges: &resources.ServiceRanges{}, svcs: []*kubeview.Service{web()},
			slices: []*kubeview.EndpointSlice{webSlice("a", ready("n1"))}},
		{name: "only the LoadBalancer range",
			ranges: &resources.ServiceRanges{LoadBalancerIPs: svcRanges.LoadBalancerIPs}, svcs: []*kubeview.Service{web()},
			slices: []*kubeview.EndpointSlice{webSlice("a", ready("n1"))}, want: []string{"198.18.0.10/32"}},
		{name: "headless", svcs: []*kubeview.Service{with(func(s *kubeview.Service) { s.ClusterIPs = nil })},
			slices: []*kubeview.EndpointSlice{webSlice("a", ready("n1"))}},
		{name: "ExternalName", svcs: []*kubeview.Service{with(func(s *kubeview.Service) { s.Type = "ExternalName" })},
			slices: []*kubeview.EndpointSlice{webSlice("a", ready("n1"))}},
		{name: "internalTrafficPolicy Local alone advertises nothing",
			svcs: []*kubeview.Service{with(func(s *kubeview.Service) {
				s.ExternalTrafficPolicy, s.InternalTrafficPolicy, s.Type, s.ExternalIPs, s.IngressIPs = "", "Local", "ClusterIP", nil, nil
			})},
			slices: []*kubeview.EndpointSlice{webSlice("a", ready("n1"))}},
		{name: "an address twice, and in two Services, once",
			svcs: []*kubeview.Service{
				with(func(s *kubeview.Service) { s.ExternalIPs = addrs("192.0.2.10", "192.0.2.10") }),
				{Namespace: "x", Name: "z", Type: "ClusterIP", ExternalTrafficPolicy: "Local", ClusterIPs: addrs("10.96.0.30"),
					ExternalIPs: addrs("192.0.2.10")},
			},
			slices: []*kubeview.EndpointSlice{webSlice("a", ready("n1")),
				{Namespace: "x", Name: "z", Service: "z", AddressType: "IPv4", Endpoints: []kubeview.Endpoint{ready("n1")}}},
			want: []string{"10.96.0.20/32", "10.96.0.30/32", "192.0.2.10/32", "198.18.0.10/32"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			ranges := svcRanges
			if c.ranges != nil {
				ranges = *c.ranges
			}
			svcs := &kubeview.Services{Services: c.svcs, Slices: c.slices}
			got := ServiceRoutes("n1", ranges, svcs)
			if want := prefixes(c.want...); !reflect.DeepEqual(got, want) {
				t.Errorf("routes of n1 = %v, want %v", got, want)
			}
		})
	}
	if got := ServiceRoutes("n1", svcRanges, nil); got != nil {
		t.Errorf("no Services known: %v", got)
	}
}
