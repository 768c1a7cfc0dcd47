package peering

import (
	"fmt"
	"net/netip"
	"strings"
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
	p, err := For("b", s, "eth0")
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
	if p, _ = For("b", s, "eth0"); len(p.Peers) != 0 || p.Local.ASN != 65000 {
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
	p, _ := For("n1", s, "eth0")
	if want := "10.0.1.4/64512/node specific/passive=false/rr=false;10.0.1.5/64512/node specific/passive=false/rr=false;"; peers(p) != want {
		t.Fatalf("client: %s", peers(p))
	}
	p, _ = For("n4", s, "eth0")
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
	p, _ := For("a", s, "eth0")
	want := "10.0.1.2/64512/node-to-node mesh/passive=false/rr=false;10.0.1.254/65001/node specific/passive=false/rr=false;192.0.2.1/65002/global/passive=false/rr=false;"
	if peers(p) != want {
		t.Fatalf("got %s", peers(p))
	}
	if p.Peers[1].Password != "s3cret" || p.Peers[1].MaxPrefixes != 100 || p.Peers[1].Port != 1179 || p.Peers[2].Port != 0 {
		t.Fatalf("tor peer %+v", p.Peers[1])
	}
	if p, _ = For("b", s, "eth0"); len(p.Peers) != 2 {
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
		p, err := For(n, s, "eth0")
		if err != nil {
			t.Fatal(err)
		}
		if got := fmt.Sprint(p.Services); got != want {
			t.Errorf("%s: services %s, want %s", n, got, want)
		}
		if r := p.ServiceRanges; fmt.Sprint(r.ClusterIPs, r.ExternalIPs, r.LoadBalancerIPs) !=
			"[10.96.0.0/12] [203.0.113.0/24 198.51.100.7/32] [192.210.0.0/20]" {
			t.Errorf("%s: service ranges %+v", n, r)
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
	if p, _ := For("b", s, "eth0"); len(p.Services) != 0 || len(p.Advertise) != 0 {
		t.Fatalf("services from a node's resource: %v %v", p.Services, p.Advertise)
	}
}

func ptr[T any](v T) *T { return &v }

// A BGPPeer's filters become the speaker's rules, in the peer's order,
// settled for the session: peer type, interface, unknown filters and
// rules tortie cannot evaluate.
func TestFilterRules(t *testing.T) {
	tor := netip.MustParseAddr("10.0.1.254")
	s := &dsync.Snapshot{
		Nodes: []*resources.Node{node("a", "10.0.1.1/24", nil, "")},
		BGPFilters: []*resources.BGPFilter{
			{Metadata: resources.Meta{Name: "f1"}, Spec: resources.BGPFilterSpec{
				ExportV4: []resources.BGPFilterRule{
					{Action: "Accept", MatchOperator: "In", CIDR: "77.0.0.0/16", Source: "RemotePeers"},
					{Action: "Reject", Interface: "*.calico"},
					{Action: "Reject", Interface: "eth*"},
					{Action: "Reject", MatchOperator: "Equal", CIDR: "10.244.1.0/26"},
					{Action: "Accept", MatchOperator: "NotEqual", CIDR: "10.244.0.0/16", PrefixLength: &resources.BGPFilterPrefixLength{Min: ptr[int32](24)}},
					{Action: "Reject", PeerType: "iBGP"},
					{Action: "Accept", PeerType: "eBGP", Operations: []resources.BGPFilterOperation{{AddCommunity: &resources.BGPFilterAddCommunity{Value: "65000:100"}},
						{PrependASPath: &resources.BGPFilterPrependASPath{Prefix: []resources.ASNumber{64512}}}}},
					{Action: "Reject", Priority: ptr(512)},
				},
				ImportV4: []resources.BGPFilterRule{
					{Action: "Accept", MatchOperator: "In", CIDR: "55.0.0.0/16", PrefixLength: &resources.BGPFilterPrefixLength{Min: ptr[int32](30)}},
					{Action: "Reject", MatchOperator: "NotIn", CIDR: "44.0.0.0/16", Source: "RemotePeers"},
					{Action: "Accept", Communities: &resources.BGPFilterCommunities{Values: []string{"65000:100"}}, ASPathPrefix: []resources.ASNumber{65001, 65002}},
					{Action: "Reject", MatchOperator: "In", CIDR: "10.0.0.0/24", PrefixLength: &resources.BGPFilterPrefixLength{Max: ptr[int32](16)}},
					{Action: "Reject", MatchOperator: "NotIn", CIDR: "10.0.0.0/24", PrefixLength: &resources.BGPFilterPrefixLength{Max: ptr[int32](16)}},
				},
				ExportV6: []resources.BGPFilterRule{{Action: "Reject"}},
			}},
			{Metadata: resources.Meta{Name: "f2"}, Spec: resources.BGPFilterSpec{ImportV4: []resources.BGPFilterRule{{Action: "Reject"}}}},
		},
		BGPPeers: []*resources.BGPPeer{{Metadata: resources.Meta{Name: "tor"}, Spec: resources.BGPPeerSpec{
			PeerIP: resources.PeerAddress{Addr: tor}, ASNumber: 65001, Filters: []string{"f1", "missing", "f2"}}}},
	}
	p, err := For("a", s, "eth0")
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Peers) != 1 {
		t.Fatalf("peers %s", peers(p))
	}
	fmtRules := func(rs []bgp.Rule) string {
		var out []string
		for _, r := range rs {
			out = append(out, r.String())
		}
		return fmt.Sprint(out)
	}
	wantExport := "[accept in 77.0.0.0/16{16,32} learnt reject learnt reject in 10.244.1.0/26{26,26} accept accept adding [65000:100]]"
	if got := fmtRules(p.Peers[0].Export); got != wantExport {
		t.Errorf("export rules\n got %s\nwant %s", got, wantExport)
	}
	wantImport := "[accept in 55.0.0.0/16{30,32} reject not in 44.0.0.0/16{16,32} accept with 65000:100 from [65001 65002] reject reject]"
	if got := fmtRules(p.Peers[0].Import); got != wantImport {
		t.Errorf("import rules\n got %s\nwant %s", got, wantImport)
	}
	warnings := fmt.Sprint(p.Warnings)
	for _, w := range []string{"BGPFilter missing does not exist", "exportV4[7]: not applied", "exportV4[6].operations[1]: not applied"} {
		if !strings.Contains(warnings, w) {
			t.Errorf("no warning %q in %s", w, warnings)
		}
	}
	if strings.Count(warnings, "missing does not exist") != 1 {
		t.Errorf("the missing filter is reported more than once: %s", warnings)
	}
	// The same peer in our own AS is iBGP: the iBGP rule applies, not
	// the eBGP one. (The NotEqual rule, whose CIDR is shorter than its
	// prefix lengths, matches every route.)
	s.BGPPeers[0].Spec.ASNumber = 64512
	p, _ = For("a", s, "eth0")
	if got := fmtRules(p.Peers[0].Export); got != "[accept in 77.0.0.0/16{16,32} learnt reject learnt reject in 10.244.1.0/26{26,26} accept reject]" {
		t.Errorf("iBGP export rules %s", got)
	}
	// On another interface the eth* rule matches nothing.
	p, _ = For("a", s, "ens3")
	if got := fmtRules(p.Peers[0].Export); got != "[accept in 77.0.0.0/16{16,32} learnt reject in 10.244.1.0/26{26,26} accept reject]" {
		t.Errorf("export rules on ens3 %s", got)
	}
}

// keepOriginalNextHop (eBGP only), nextHopMode, sourceAddress,
// numAllowedLocalASNumbers and bindMode reach the speaker.
func TestPeerSessionFields(t *testing.T) {
	s := &dsync.Snapshot{
		Nodes: []*resources.Node{node("a", "10.0.1.1/24", nil, "")},
		BGPPeers: []*resources.BGPPeer{
			{Metadata: resources.Meta{Name: "ebgp"}, Spec: resources.BGPPeerSpec{PeerIP: resources.PeerAddress{Addr: netip.MustParseAddr("10.0.1.250")},
				ASNumber: 65001, KeepOriginalNextHop: true, SourceAddress: "None", NumAllowedLocalASNumbers: ptr[int32](2)}},
			{Metadata: resources.Meta{Name: "ibgp"}, Spec: resources.BGPPeerSpec{PeerIP: resources.PeerAddress{Addr: netip.MustParseAddr("10.0.1.251")},
				ASNumber: 64512, KeepOriginalNextHop: true, SourceAddress: "UseNodeIP"}},
			{Metadata: resources.Meta{Name: "self"}, Spec: resources.BGPPeerSpec{PeerIP: resources.PeerAddress{Addr: netip.MustParseAddr("10.0.1.252")},
				ASNumber: 64512, NextHopMode: "Self", NumAllowedLocalASNumbers: ptr[int32](1000)}},
			{Metadata: resources.Meta{Name: "keep"}, Spec: resources.BGPPeerSpec{PeerIP: resources.PeerAddress{Addr: netip.MustParseAddr("10.0.1.253")},
				ASNumber: 64512, NextHopMode: "Keep"}},
		},
	}
	p, err := For("a", s, "eth0")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, x := range p.Peers {
		got = append(got, fmt.Sprintf("%s/%s/any=%v/own=%d", x.Address, x.NextHop, x.AnySource, x.AllowOwnAS))
	}
	want := "[10.0.1.250/Keep/any=true/own=2 10.0.1.251/Auto/any=false/own=0 10.0.1.252/Self/any=false/own=255 10.0.1.253/Keep/any=false/own=0]"
	if fmt.Sprint(got) != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
	if p.Local.ListenAddr.IsValid() {
		t.Errorf("bindMode unset listens on %s, want every address", p.Local.ListenAddr)
	}
	s.BGPConfigs = []*resources.BGPConfiguration{{Metadata: resources.Meta{Name: "default"}, Spec: resources.BGPConfigurationSpec{BindMode: "NodeIP"}}}
	if p, _ = For("a", s, "eth0"); p.Local.ListenAddr.String() != "10.0.1.1" {
		t.Errorf("bindMode NodeIP listens on %s", p.Local.ListenAddr)
	}
	s.BGPConfigs[0].Spec.BindMode = "None"
	if p, _ = For("a", s, "eth0"); p.Local.ListenAddr.IsValid() {
		t.Errorf("bindMode None listens on %s", p.Local.ListenAddr)
	}
}

// prefixAdvertisements: a node's own resource replaces the default's;
// names come from either resource's communities.
func TestCommunities(t *testing.T) {
	s := &dsync.Snapshot{
		Nodes: []*resources.Node{node("a", "10.0.1.1/24", nil, ""), node("b", "10.0.1.2/24", nil, "")},
		BGPConfigs: []*resources.BGPConfiguration{
			{Metadata: resources.Meta{Name: "default"}, Spec: resources.BGPConfigurationSpec{
				Communities: []resources.Community{{Name: "large", Value: "63400:300:100"}},
				PrefixAdvertisements: []resources.PrefixAdvertisement{
					{CIDR: "10.96.0.0/12", Communities: []string{"large", "63400:120"}},
					{CIDR: "fd00::/64", Communities: []string{"63400:120"}},
					{CIDR: "10.244.1.7", Communities: []string{"1:2"}},
				}}},
			{Metadata: resources.Meta{Name: "node.b"}, Spec: resources.BGPConfigurationSpec{
				Communities:          []resources.Community{{Name: "mine", Value: "65000:7"}},
				PrefixAdvertisements: []resources.PrefixAdvertisement{{CIDR: "10.244.2.0/26", Communities: []string{"mine", "large"}}}}},
		},
	}
	show := func(n string) string {
		p, err := For(n, s, "eth0")
		if err != nil {
			t.Fatal(err)
		}
		return fmt.Sprint(p.Communities)
	}
	if got := show("a"); got != "[{10.96.0.0/12 [63400:300:100 63400:120]} {10.244.1.7/32 [1:2]}]" {
		t.Errorf("a: %s", got)
	}
	if got := show("b"); got != "[{10.244.2.0/26 [65000:7 63400:300:100]}]" {
		t.Errorf("b: %s", got)
	}
}
