package peering

import (
	"net/netip"
	"slices"

	"github.com/tortie-net/tortie/kubeview"
	"github.com/tortie-net/tortie/resources"
)

// ServiceRoutes are the /32s node me advertises for single Services,
// besides the ranges every node advertises, as Calico's BGP daemon does:
//
//   - a Service with externalTrafficPolicy Local is advertised by the nodes
//     where it has a ready endpoint (an IPv4 one: the /32s are IPv4), so
//     that traffic to it reaches only nodes that can deliver it without a
//     second hop, keeping the client's address;
//   - a Service with externalTrafficPolicy Cluster is advertised by every
//     node when it is a LoadBalancer one with an address (spec.loadBalancerIP
//     or status.loadBalancer.ingress) that a single-address (/32) entry of
//     serviceLoadBalancerIPs names, or when one of its external IPs is
//     named by a /32 entry of serviceExternalIPs.
//
// What is advertised of such a Service is its IPv4 cluster IP when it lies
// in serviceClusterIPs, its external IPs in serviceExternalIPs and its
// LoadBalancer ingress IPs in serviceLoadBalancerIPs: an address outside
// the ranges is never advertised (so every /32 also lies in a range whose
// peers' copies the node keeps out of its FIB). Only ClusterIP, NodePort
// and LoadBalancer Services with a cluster IP count: not headless or
// ExternalName ones. internalTrafficPolicy plays no part, as in Calico:
// traffic from inside the cluster does not come over BGP.
//
// The result is sorted and without duplicates; svcs nil gives none.
func ServiceRoutes(me string, ranges resources.ServiceRanges, svcs *kubeview.Services) []netip.Prefix {
	if svcs == nil {
		return nil
	}
	// The nodes with a ready IPv4 endpoint, by Service key.
	local := map[string]bool{}
	for _, s := range svcs.Slices {
		if s.Service == "" || s.AddressType != "IPv4" {
			continue
		}
		for _, e := range s.Endpoints {
			if e.Ready && e.Node == me {
				local[s.Namespace+"/"+s.Service] = true
			}
		}
	}
	var out []netip.Prefix
	for _, s := range svcs.Services {
		if !advertises(s, ranges, local[s.Key()]) {
			continue
		}
		add := func(addrs []netip.Addr, in []netip.Prefix) {
			for _, a := range addrs {
				if a.Is4() && contains(in, a) {
					out = append(out, netip.PrefixFrom(a, 32))
				}
			}
		}
		add(s.ClusterIPs, ranges.ClusterIPs)
		add(s.ExternalIPs, ranges.ExternalIPs)
		add(s.IngressIPs, ranges.LoadBalancerIPs)
	}
	slices.SortFunc(out, func(a, b netip.Prefix) int { return a.Addr().Compare(b.Addr()) })
	return slices.Compact(out)
}

// advertises says whether the node advertises Service s's addresses;
// hasLocal says it has a ready endpoint of s.
func advertises(s *kubeview.Service, ranges resources.ServiceRanges, hasLocal bool) bool {
	switch s.Type {
	case "ClusterIP", "NodePort", "LoadBalancer", "":
	default:
		return false
	}
	if len(s.ClusterIPs) == 0 {
		return false // headless
	}
	switch s.ExternalTrafficPolicy {
	case "Local":
		return hasLocal
	case "Cluster", "":
		if s.Type == "LoadBalancer" {
			lb := s.IngressIPs
			if s.LoadBalancerIP.IsValid() {
				lb = append([]netip.Addr{s.LoadBalancerIP}, lb...)
			}
			if slices.ContainsFunc(lb, func(a netip.Addr) bool { return single(ranges.LoadBalancerIPs, a) }) {
				return true
			}
		}
		return slices.ContainsFunc(s.ExternalIPs, func(a netip.Addr) bool { return single(ranges.ExternalIPs, a) })
	}
	return false
}

// contains says whether one of ranges holds a.
func contains(ranges []netip.Prefix, a netip.Addr) bool {
	return slices.ContainsFunc(ranges, func(r netip.Prefix) bool { return r.Contains(a) })
}

// single says whether ranges names a alone (a /32 entry).
func single(ranges []netip.Prefix, a netip.Addr) bool {
	return a.Is4() && slices.Contains(ranges, netip.PrefixFrom(a, 32))
}
