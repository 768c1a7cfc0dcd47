package peering

import (
	"fmt"
	"net/netip"
	"testing"

	"github.com/tortie-net/tortie/bgp"
	"github.com/tortie-net/tortie/dsync"
	"github.com/tortie-net/tortie/ipam"
	"github.com/tortie-net/tortie/resources"
)

func node(name, addr string, labels map[string]string, cid string) *resources.Node {
	return &resources.Node{Metadata: resources.Meta{Name: name, Labels: labels},
		Spec: resources.NodeSpec{BGP: &resources.NodeBGPSpec{IPv4Address: netip.MustParsePrefix(addr), RouteReflectorClusterID: parseAddr(cid)}}}
}

func parseAddr(s string) netip.Addr {
	if s == "" {
		return netip.Addr{}
	}
	return netip.MustParseAddr(s)
}

func peers(p Plan) string {
	s := ""
	for _, x := range p.Peers {
		s += fmt.Sprintf("%s/%d/%s/passive=%v/rr=%v;", x.Address, x.ASN, x.Type, x.Passive, x.RRClient)
	}
	return s
}

func TestMesh(t *testing.T) {
	s := &dsync.Snapshot{Nodes: []*resources.Node{node("a", "10.0.1.1/24", nil, ""), node("b", "10.0.1.2/24", nil, ""), node("c", "10.0.1.3/24", nil, "")}}
	p, err := For("b", s)
	if err != nil {
		t.Fatal(err)
	}
	want := "10.0.1.1/64512/node-to-node mesh/passive=true/rr=false;10.0.1.3/64512/node-to-node mesh/passive=false/rr=false;"
	if got := peers(p); got != want {
		t.Fatalf("got %s\nwant %s", got, want)
	}
	if p.Local.ASN != 64512 || p.Local.ListenPort != 179 {
		t.Fatalf("local %+v", p.Local)
	}
	off := false
	s.BGPConfigs = []*resources.BGPConfiguration{{Metadata: resources.Meta{Name: "default"}, Spec: resources.BGPConfigurationSpec{NodeToNodeMeshEnabled: &off, ASNumber: 65000}}}
	if p, _ = For("b", s); len(p.Peers) != 0 || p.Local.ASN != 65000 {
		t.Fatalf("mesh off: %s %+v", peers(p), p.Local)
	}
}

// One BGPPeer (all() -> route-reflector == 'true') gives clients their RRs
// and RRs every node, RR to RR without client flag.
func TestRouteReflectors(t *testing.T) {
	rr := map[string]string{"route-reflector": "true"}
	off := false
	s := &dsync.Snapshot{
		Nodes: []*resources.Node{node("n1", "10.0.1.1/24", nil, ""), node("n2", "10.0.1.2/24", nil, ""),
			node("n4", "10.0.1.4/24", rr, "244.0.0.1"), node("n5", "10.0.1.5/24", rr, "244.0.0.1")},
		BGPConfigs: []*resources.BGPConfiguration{{Metadata: resources.Meta{Name: "default"}, Spec: resources.BGPConfigurationSpec{NodeToNodeMeshEnabled: &off}}},
		BGPPeers:   []*resources.BGPPeer{{Metadata: resources.Meta{Name: "to-rr"}, Spec: resources.BGPPeerSpec{NodeSelector: "all()", PeerSelector: "route-reflector == 'true'"}}},
	}
	p, _ := For("n1", s)
	if want := "10.0.1.4/64512/node specific/passive=false/rr=false;10.0.1.5/64512/node specific/passive=false/rr=false;"; peers(p) != want {
		t.Fatalf("client: %s", peers(p))
	}
	p, _ = For("n4", s)
	if want := "10.0.1.1/64512/node specific/passive=true/rr=true;10.0.1.2/64512/node specific/passive=true/rr=true;10.0.1.5/64512/node specific/passive=false/rr=false;"; peers(p) != want {
		t.Fatalf("reflector: %s", peers(p))
	}
	if p.Peers[0].ClusterID != "244.0.0.1" {
		t.Fatalf("cluster id %q", p.Peers[0].ClusterID)
	}
}

func TestExplicitPeers(t *testing.T) {
	s := &dsync.Snapshot{
		Nodes: []*resources.Node{node("a", "10.0.1.1/24", map[string]string{"rack": "r1"}, ""), node("b", "10.0.1.2/24", nil, "")},
		BGPPeers: []*resources.BGPPeer{
			{Metadata: resources.Meta{Name: "tor"}, Spec: resources.BGPPeerSpec{PeerIP: resources.PeerAddress{Addr: netip.MustParseAddr("10.0.1.254"), Port: 1179},
				ASNumber: 65001, NodeSelector: "rack == 'r1'", Password: &resources.Password{Value: "s3cret"}, MaxPrefixes: 100}},
			{Metadata: resources.Meta{Name: "core"}, Spec: resources.BGPPeerSpec{PeerIP: resources.PeerAddress{Addr: netip.MustParseAddr("192.0.2.1")}, ASNumber: 65002}},
			// IPv6 peers are kept but not acted on: the speaker is IPv4 only.
			{Metadata: resources.Meta{Name: "core6"}, Spec: resources.BGPPeerSpec{PeerIP: resources.PeerAddress{Addr: netip.MustParseAddr("2001:db8::1")}, ASNumber: 65002}},
		},
	}
	p, _ := For("a", s)
	want := "10.0.1.2/64512/node-to-node mesh/passive=false/rr=false;10.0.1.254/65001/node specific/passive=false/rr=false;192.0.2.1/65002/global/passive=false/rr=false;"
	if peers(p) != want {
		t.Fatalf("got %s", peers(p))
	}
	if p.Peers[1].Password != "s3cret" || p.Peers[1].MaxPrefixes != 100 || p.Peers[1].Port != 1179 || p.Peers[2].Port != 0 {
		t.Fatalf("tor peer %+v", p.Peers[1])
	}
	if p, _ = For("b", s); len(p.Peers) != 2 {
		t.Fatalf("b: %s", peers(p))
	}
	if p.Peers[0].Type != bgp.PeerMesh {
		t.Fatal("b's first peer should be the mesh")
	}
}

func TestAdvertised(t *testing.T) {
	s := &dsync.Snapshot{
		Pools: []*resources.IPPool{{Spec: resources.IPPoolSpec{CIDR: netip.MustParsePrefix("10.244.0.0/16")}}, {Spec: resources.IPPoolSpec{CIDR: netip.MustParsePrefix("10.250.0.0/16"), DisableBGPExport: true}}},
		Blocks: []*ipam.Block{
			{CIDR: netip.MustParsePrefix("10.244.1.0/26"), Affinity: "host:a", Allocs: make([]ipam.Alloc, 64)},
			{CIDR: netip.MustParsePrefix("10.244.2.0/26"), Affinity: "host:b", Allocs: make([]ipam.Alloc, 64)},
			{CIDR: netip.MustParsePrefix("10.250.1.0/26"), Affinity: "host:a", Allocs: make([]ipam.Alloc, 64)},
		},
	}
	s.Blocks[1].Allocs[5] = ipam.Alloc{Handle: "net.c1", Node: "a"}
	s.Blocks[1].Allocs[6] = ipam.Alloc{Handle: ipam.TunnelHandlePrefix + "a", Node: "a"}
	got := fmt.Sprint(Advertised("a", s))
	if want := "[10.244.1.0/26 10.244.2.5/32]"; got != want {
		t.Fatalf("got %s want %s", got, want)
	}
	_ = netip.Prefix{}
}

// The default BGPConfiguration's Service ranges are advertised by every
// node beside its blocks; IPv6 ranges and a node's own resource are not
// read for them, as Calico reads them from "default" alone.
func TestServiceRanges(t *testing.T) {
	blocks := func(cidrs ...string) []resources.ServiceIPBlock {
		var out []resources.ServiceIPBlock
		for _, c := range cidrs {
			out = append(out, resources.ServiceIPBlock{CIDR: c})
		}
		return out
	}
	s := &dsync.Snapshot{
		Nodes:  []*resources.Node{node("a", "10.0.1.1/24", nil, ""), node("b", "10.0.1.2/24", nil, "")},
		Pools:  []*resources.IPPool{{Spec: resources.IPPoolSpec{CIDR: netip.MustParsePrefix("10.244.0.0/16")}}},
		Blocks: []*ipam.Block{{CIDR: netip.MustParsePrefix("10.244.1.0/26"), Affinity: "host:a", Allocs: make([]ipam.Alloc, 64)}},
		BGPConfigs: []*resources.BGPConfiguration{
			{Metadata: resources.Meta{Name: "default"}, Spec: resources.BGPConfigurationSpec{
				ServiceClusterIPs:      blocks("10.96.0.0/12", "fd00:96::/112"),
				ServiceExternalIPs:     blocks("203.0.113.0/24", "198.51.100.7"),
				ServiceLoadBalancerIPs: blocks("192.210.0.0/20")}},
			{Metadata: resources.Meta{Name: "node.b"}, Spec: resources.BGPConfigurationSpec{ServiceClusterIPs: blocks("10.100.0.0/16")}},
		},
	}
	want := "[10.96.0.0/12 203.0.113.0/24 198.51.100.7/32 192.210.0.0/20]"
	for _, n := range []string{"a", "b"} {
		p, err := For(n, s)
		if err != nil {
			t.Fatal(err)
		}
		if got := fmt.Sprint(p.Services); got != want {
			t.Errorf("%s: services %s, want %s", n, got, want)
		}
		adv := fmt.Sprint(p.Advertise)
		if n == "a" && adv != "[10.244.1.0/26 10.96.0.0/12 203.0.113.0/24 198.51.100.7/32 192.210.0.0/20]" {
			t.Errorf("a advertises %s", adv)
		}
		if n == "b" && adv != want {
			t.Errorf("b advertises %s", adv)
		}
	}
	// Without a default resource nothing is advertised for Services, even
	// with a node's own.
	s.BGPConfigs = s.BGPConfigs[1:]
	if p, _ := For("b", s); len(p.Services) != 0 || len(p.Advertise) != 0 {
		t.Fatalf("services from a node's resource: %v %v", p.Services, p.Advertise)
	}
}
