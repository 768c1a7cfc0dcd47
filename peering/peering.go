// Package peering decides, from the cluster as the datastore describes it,
// which BGP sessions a node keeps and what it advertises, the way Calico's
// configuration of BIRD does: a node-to-node mesh over the registered nodes
// (the higher address waits passively), explicit BGPPeers toward routers
// outside the cluster, selector BGPPeers between nodes (symmetric, so one
// resource gives both ends), route reflection for nodes with a
// routeReflectorClusterID, the Service address ranges every node
// advertises, and the addresses of single Services it advertises besides
// (ServiceRoutes). It has no I/O.
package peering

import (
	"fmt"
	"net/netip"
	"sort"
	"strings"

	"github.com/tortie-net/tortie/bgp"
	"github.com/tortie-net/tortie/dsync"
	"github.com/tortie-net/tortie/ipam"
	"github.com/tortie-net/tortie/resources"
)

// Local is this node's own BGP settings.
type Local struct {
	ASN        uint32
	ListenPort int
	// ListenAddr is the address the speaker listens on: the node's with
	// the default BGPConfiguration's bindMode NodeIP, otherwise invalid
	// (every address, Calico's bindMode None).
	ListenAddr netip.Addr
	ClusterID  string // set when the node is a route reflector
}

// Plan is what a node should do.
type Plan struct {
	Local Local
	Peers []bgp.Peer
	// Advertise is the node's blocks and borrowed addresses, and the
	// Service address ranges.
	Advertise []netip.Prefix
	// Services are the Service address ranges of the default
	// BGPConfiguration: every node advertises them, and keeps its peers'
	// copies out of its FIB. ServiceRanges are the same by kind of
	// address, for ServiceRoutes.
	Services      []netip.Prefix
	ServiceRanges resources.ServiceRanges
	// Communities are attached to the advertised routes inside their
	// prefixes (prefixAdvertisements).
	Communities []bgp.PrefixCommunities
	Warnings    []string
}

func nodeASN(n *resources.Node, def uint32) uint32 {
	if n.Spec.BGP != nil && n.Spec.BGP.ASNumber != 0 {
		return uint32(n.Spec.BGP.ASNumber)
	}
	return def
}

func clusterID(n *resources.Node) string {
	if n.Spec.BGP == nil || !n.Spec.BGP.RouteReflectorClusterID.IsValid() {
		return ""
	}
	return n.Spec.BGP.RouteReflectorClusterID.String()
}

// For computes node me's plan; nic is the node's underlay interface,
// through which it reaches its peers (BGPFilter rules naming an interface
// match the routes learnt through it).
func For(me string, s *dsync.Snapshot, nic string) (Plan, error) {
	self := s.Node(me)
	if self == nil {
		return Plan{}, fmt.Errorf("node %q is not registered", me)
	}
	myAddr, err := self.Address()
	if err != nil {
		return Plan{}, err
	}
	cfg := resources.EffectiveBGPConfiguration(s.BGPConfigs, me)
	def := cfg.ASN()
	plan := Plan{Local: Local{ASN: nodeASN(self, def), ListenPort: cfg.Port(), ClusterID: clusterID(self)}}
	global := resources.DefaultBGPConfiguration(s.BGPConfigs)
	if global != nil && global.Spec.BindMode == "NodeIP" {
		plan.Local.ListenAddr = myAddr.Addr()
	}
	filters := map[string]*resources.BGPFilter{}
	for _, f := range s.BGPFilters {
		filters[f.Metadata.Name] = f
	}
	seen := map[netip.Addr]bool{}
	add := func(p bgp.Peer) {
		if p.Address == myAddr.Addr() || seen[p.Address] {
			return
		}
		seen[p.Address] = true
		plan.Peers = append(plan.Peers, p)
	}
	// A session with another node: passive on the higher address, route
	// reflection when we reflect and the other is not in our cluster.
	nodePeer := func(n *resources.Node, typ bgp.PeerType, name string) (bgp.Peer, bool) {
		a, err := n.Address()
		if err != nil {
			plan.Warnings = append(plan.Warnings, fmt.Sprintf("node %s: %v", n.Metadata.Name, err))
			return bgp.Peer{}, false
		}
		p := bgp.Peer{Address: a.Addr(), ASN: nodeASN(n, def), Port: cfg.Port(), Type: typ, Name: name,
			Passive: myAddr.Addr().Compare(a.Addr()) > 0}
		if cid := plan.Local.ClusterID; cid != "" && clusterID(n) != cid {
			p.RRClient, p.ClusterID = true, cid
		}
		return p, true
	}
	// Explicit peers first: they win over the mesh for the same address.
	for _, bp := range s.BGPPeers {
		typ := bgp.PeerNodeSpecific
		if bp.Global() {
			typ = bgp.PeerGlobal
		}
		// common sets what a BGPPeer says of its sessions, once p's
		// address and AS number are known.
		common := func(p *bgp.Peer) {
			sp := &bp.Spec
			if sp.Password != nil {
				p.Password = sp.Password.Value
			}
			if d := sp.MaxRestartTime; d != nil {
				p.RestartTime = d.Duration
			}
			if d := sp.KeepaliveTime; d != nil {
				p.Keepalive = d.Duration
			}
			p.TTLSecurity = sp.TTLSecurity
			p.MaxPrefixes = sp.MaxPrefixes
			p.AnySource = sp.SourceAddress == "None"
			if n := sp.NumAllowedLocalASNumbers; n != nil && *n > 0 {
				p.AllowOwnAS = uint8(min(*n, 255))
			}
			ebgp := p.ASN != plan.Local.ASN
			switch {
			case sp.NextHopMode == "Self":
				p.NextHop = bgp.NextHopSelf
			case sp.NextHopMode == "Keep":
				p.NextHop = bgp.NextHopKeep
			case sp.KeepOriginalNextHop && ebgp:
				// Calico keeps the next hop for eBGP peers only.
				p.NextHop = bgp.NextHopKeep
			}
			warn := func(w string) {
				plan.Warnings = append(plan.Warnings, fmt.Sprintf("BGPPeer %s toward %s: %s", bp.Metadata.Name, p.Address, w))
			}
			p.Import = peerRules(sp.Filters, filters, false, ebgp, nic, warn)
			p.Export = peerRules(sp.Filters, filters, true, ebgp, nic, warn)
		}
		if bp.Spec.PeerIP.IsValid() {
			// The speaker peers over IPv4 only; an IPv6 peer is kept (and
			// reported when applied) but not acted on.
			if !bp.AppliesTo(self) || !bp.Spec.PeerIP.Addr.Is4() {
				continue
			}
			p := bgp.Peer{Address: bp.Spec.PeerIP.Addr, Port: int(bp.Spec.PeerIP.Port), ASN: uint32(bp.Spec.ASNumber),
				Type: typ, Name: bp.Metadata.Name}
			common(&p)
			add(p)
			continue
		}
		for _, n := range s.Nodes {
			if n == self {
				continue
			}
			if !(bp.AppliesTo(self) && bp.Selects(n)) && !(bp.AppliesTo(n) && bp.Selects(self)) {
				continue
			}
			if p, ok := nodePeer(n, typ, n.Metadata.Name); ok {
				common(&p)
				add(p)
			}
		}
	}
	// The mesh, skipped on route reflectors and toward them.
	if cfg.MeshEnabled() && plan.Local.ClusterID == "" {
		for _, n := range s.Nodes {
			if n == self || clusterID(n) != "" {
				continue
			}
			if p, ok := nodePeer(n, bgp.PeerMesh, n.Metadata.Name); ok {
				p.Password = cfg.MeshPassword()
				p.RestartTime = cfg.MeshRestartTime()
				add(p)
			}
		}
	}
	sort.Slice(plan.Peers, func(i, j int) bool { return plan.Peers[i].Address.Less(plan.Peers[j].Address) })
	plan.ServiceRanges = global.ServiceRanges()
	plan.Services = plan.ServiceRanges.All()
	plan.Advertise = append(Advertised(me, s), plan.Services...)
	plan.Communities = communities(me, s.BGPConfigs, func(w string) { plan.Warnings = append(plan.Warnings, w) })
	return plan, nil
}

// Advertised is what node me announces: the blocks it holds (affinity) and
// the addresses it borrowed from other nodes' blocks as /32s, in pools that
// allow BGP export; never host or tunnel addresses outside pools.
func Advertised(me string, s *dsync.Snapshot) []netip.Prefix {
	var out []netip.Prefix
	export := func(p netip.Prefix) bool {
		pool := s.PoolOf(p)
		return pool != nil && !pool.Spec.DisableBGPExport
	}
	for _, b := range s.Blocks {
		owner := b.AffinityNode()
		if owner == me && export(b.Prefix()) {
			out = append(out, b.Prefix())
		}
		for i, a := range b.Allocs {
			if a.Handle != "" && a.Node == me && owner != me && !strings.HasPrefix(a.Handle, ipam.TunnelHandlePrefix) {
				p := netip.PrefixFrom(b.Addr(i), 32)
				if export(p) {
					out = append(out, p)
				}
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].String() < out[j].String() })
	return out
}
