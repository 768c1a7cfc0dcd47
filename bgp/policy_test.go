package bgp

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	api "github.com/osrg/gobgp/v4/api"
	"github.com/osrg/gobgp/v4/pkg/apiutil"
	"github.com/osrg/gobgp/v4/pkg/packet/bgp"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/tortie-net/tortie/bgp/bgptest"
	"github.com/tortie-net/tortie/fib"
	"github.com/tortie-net/tortie/internal/testutil"
)

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }

// startAS starts a speaker at addr in AS asn, stopped when the test ends.
func startAS(t *testing.T, addr string, asn uint32) *node {
	t.Helper()
	a := netip.MustParseAddr(addr)
	n := &node{fib: fib.New(), addr: a, port: freePort(t, addr)}
	n.cfg = Config{RouterID: a, ASN: asn, ListenPort: n.port, ListenAddr: a, FIB: n.fib, Resolve: resolveNative,
		Log: zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)).Named(addr)}
	sp, err := Start(n.cfg)
	if err != nil {
		t.Fatal(err)
	}
	n.sp = sp
	t.Cleanup(func() { sp.Stop(false) })
	return n
}

// peerOf is the entry for a session toward n; passive says who waits.
func peerOf(n *node, passive bool) Peer {
	return Peer{Address: n.addr, ASN: n.cfg.ASN, Port: n.port, Type: PeerGlobal, Name: n.addr.String(), Passive: passive}
}

func setPeers(t *testing.T, n *node, peers ...Peer) {
	t.Helper()
	if err := n.sp.SetPeers(peers); err != nil {
		t.Fatal(err)
	}
}

func waitAllUp(t *testing.T, n *node, want int) {
	t.Helper()
	testutil.WaitFor(t, 20*time.Second, fmt.Sprintf("%d sessions up on %s", want, n.addr), func() bool {
		st, err := n.sp.Status()
		if err != nil || len(st) != want {
			return false
		}
		for _, p := range st {
			if p.State != "up" {
				return false
			}
		}
		return true
	})
}

// bgpRoutes lists the BGP prefixes of a FIB, sorted.
func bgpRoutes(f *fib.FIB) string {
	var out []string
	for _, r := range f.Load().Routes() {
		if r.Source == fib.SourceBGP {
			out = append(out, r.Prefix.String())
		}
	}
	slices.Sort(out)
	return strings.Join(out, " ")
}

// communitiesAt lists the communities of n's first path to prefix, sorted (""
// when it has none, "-" when it has no path).
func communitiesAt(t *testing.T, n *node, prefix string) string {
	t.Helper()
	out := "-"
	err := n.sp.srv.ListPath(apiutil.ListPathRequest{TableType: api.TableType_TABLE_TYPE_GLOBAL, Family: bgp.RF_IPv4_UC,
		Prefixes: []*apiutil.LookupPrefix{{Prefix: prefix}}}, func(_ bgp.NLRI, paths []*apiutil.Path) {
		if len(paths) > 0 {
			var cs []string
			for _, a := range paths[0].Attrs {
				switch a := a.(type) {
				case *bgp.PathAttributeCommunities:
					for _, v := range a.Value {
						cs = append(cs, fmt.Sprintf("%d:%d", v>>16, v&0xffff))
					}
				case *bgp.PathAttributeLargeCommunities:
					for _, v := range a.Values {
						cs = append(cs, fmt.Sprintf("%d:%d:%d", v.ASN, v.LocalData1, v.LocalData2))
					}
				}
			}
			slices.Sort(cs)
			out = strings.Join(cs, " ")
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// Filters apply per peer, both ways, in order, first match deciding,
// unmatched routes going through; changing them keeps the session and
// re-sends the routes.
func TestFilters(t *testing.T) {
	a, b := pair(t, "", false, nil)
	if err := a.sp.Advertise([]netip.Prefix{pfx("10.244.1.0/26"), pfx("10.244.2.0/26"), pfx("10.244.3.7/32"), pfx("10.96.0.0/12"),
		pfx("10.97.0.0/24")}); err != nil {
		t.Fatal(err)
	}
	waitUp(t, b)
	testutil.WaitFor(t, converge, "every route at b", func() bool {
		return bgpRoutes(b.fib) == "10.244.1.0/26 10.244.2.0/26 10.244.3.7/32 10.96.0.0/12 10.97.0.0/24"
	})
	st, _ := b.sp.Status()
	since := st[0].Since

	// a exports 10.244.2.0/26 (accepted first) and nothing else of
	// 10.244.0.0/16; b refuses 10.96.0.0/12 exactly, not what is inside
	// it.
	toB := meshPeer(b, false)
	toB.Export = []Rule{{Prefix: pfx("10.244.2.0/26"), MinLen: 26, MaxLen: 26, Accept: true},
		{Prefix: pfx("10.244.0.0/16"), MinLen: 16, MaxLen: 32}}
	setPeers(t, a, toB)
	toA := meshPeer(a, true)
	toA.Import = []Rule{{Prefix: pfx("10.96.0.0/12"), MinLen: 12, MaxLen: 12}}
	setPeers(t, b, toA)
	testutil.WaitFor(t, converge, "filtered routes at b", func() bool {
		return bgpRoutes(b.fib) == "10.244.2.0/26 10.97.0.0/24"
	})
	// NotIn: b takes only what is inside 10.244.0.0/16, prefix lengths 26
	// to 32 (10.97.0.0/24 goes).
	toA.Import = []Rule{{Prefix: pfx("10.244.0.0/16"), MinLen: 26, MaxLen: 32, Invert: true}}
	setPeers(t, b, toA)
	testutil.WaitFor(t, converge, "b keeps only 10.244.0.0/16 /26 to /32", func() bool {
		return bgpRoutes(b.fib) == "10.244.2.0/26"
	})
	// Filters gone: everything back.
	setPeers(t, a, meshPeer(b, false))
	setPeers(t, b, meshPeer(a, true))
	testutil.WaitFor(t, converge, "every route back at b", func() bool {
		return bgpRoutes(b.fib) == "10.244.1.0/26 10.244.2.0/26 10.244.3.7/32 10.96.0.0/12 10.97.0.0/24"
	})
	st, _ = b.sp.Status()
	if len(st) != 1 || st[0].State != "up" || !st[0].Since.Equal(since) {
		t.Fatalf("the session was reset by filter changes: %+v (up since %v before)", st, since)
	}
}

// trio: a and b in AS 64512 (iBGP), b and c in another AS (eBGP);
// tweak adjusts b's entry for c.
func trio(t *testing.T, tweak func(toC *Peer)) (a, b, c *node) {
	t.Helper()
	a, b, c = startAS(t, "127.0.0.1", 64512), startAS(t, "127.0.0.2", 64512), startAS(t, "127.0.0.3", 65001)
	setPeers(t, a, peerOf(b, false))
	toC := peerOf(c, false)
	if tweak != nil {
		tweak(&toC)
	}
	setPeers(t, b, peerOf(a, true), toC)
	setPeers(t, c, peerOf(b, true))
	return a, b, c
}

// An export rule for learnt routes matches what b passes on from a, not
// what b originates.
func TestFilterLearntRoutes(t *testing.T) {
	a, b, c := trio(t, func(toC *Peer) { toC.Export = []Rule{{Learnt: true}} })
	if err := a.sp.Advertise([]netip.Prefix{pfx("10.244.1.0/26")}); err != nil {
		t.Fatal(err)
	}
	if err := b.sp.Advertise([]netip.Prefix{pfx("10.244.2.0/26")}); err != nil {
		t.Fatal(err)
	}
	waitAllUp(t, b, 2)
	testutil.WaitFor(t, converge, "a's route at b, b's at c", func() bool {
		_, ok := bgpRoute(b.fib, "10.244.1.0/26")
		return ok && bgpRoutes(c.fib) == "10.244.2.0/26"
	})
	if got := bgpRoutes(c.fib); got != "10.244.2.0/26" {
		t.Fatalf("c has %s: b passed a's route on", got)
	}
	// Without the rule, c gets a's route too.
	setPeers(t, b, peerOf(a, true), peerOf(c, false))
	testutil.WaitFor(t, converge, "a's route at c", func() bool {
		return bgpRoutes(c.fib) == "10.244.1.0/26 10.244.2.0/26"
	})
}

// Next hop Keep gives an eBGP peer the learnt route's own next hop; Auto
// gives it ours.
func TestNextHopKeep(t *testing.T) {
	a, b, c := trio(t, nil)
	if err := a.sp.Advertise([]netip.Prefix{pfx("10.244.1.0/26")}); err != nil {
		t.Fatal(err)
	}
	waitAllUp(t, b, 2)
	nextHop := func() netip.Addr {
		r, ok := bgpRoute(c.fib, "10.244.1.0/26")
		if !ok {
			return netip.Addr{}
		}
		return netip.AddrFrom4(r.NextHop.Node)
	}
	testutil.WaitFor(t, converge, "a's route at c via b", func() bool { return nextHop() == b.addr })
	toC := peerOf(c, false)
	toC.NextHop = NextHopKeep
	setPeers(t, b, peerOf(a, true), toC)
	testutil.WaitFor(t, converge, "a's route at c via a", func() bool { return nextHop() == a.addr })
}

// A route whose AS path holds our own AS number is dropped (BGP's loop
// prevention) unless the peer's entry allows it that many times. The peer
// is driven by hand: GoBGP would not send such a route.
func TestAllowOwnAS(t *testing.T) {
	b := startAS(t, "127.0.0.2", 64512)
	peer := netip.MustParseAddr("127.0.0.3")
	toPeer := Peer{Address: peer, ASN: 65001, Type: PeerGlobal, Passive: true}
	send := func() {
		var s *bgptest.Session
		testutil.WaitFor(t, 20*time.Second, "session with the speaker", func() bool {
			d := net.Dialer{LocalAddr: &net.TCPAddr{IP: peer.AsSlice()}, Timeout: time.Second}
			c, err := d.Dial("tcp", netip.AddrPortFrom(b.addr, uint16(b.port)).String())
			if err != nil {
				return false
			}
			if s, err = bgptest.Establish(c, 65001, peer); err != nil {
				c.Close()
				return false
			}
			return true
		})
		t.Cleanup(func() { s.C.Close() })
		for p, path := range map[string][]uint32{"192.0.2.0/24": {65001}, "10.244.1.0/26": {65001, 64512}, "10.244.2.0/26": {65001, 64512, 65002, 64512}} {
			if o := s.Send(bgptest.UpdateWithPath(pfx(p), peer, path), 100*time.Millisecond); !o.Alive {
				t.Fatalf("sending %s: %s", p, o)
			}
		}
	}
	setPeers(t, b, toPeer)
	send()
	testutil.WaitFor(t, converge, "192.0.2.0/24 at b", func() bool { return bgpRoutes(b.fib) != "" })
	testutil.WaitFor(t, converge, "three paths received", func() bool {
		st, err := b.sp.Status()
		return err == nil && len(st) == 1 && st[0].Received == 3
	})
	if got := bgpRoutes(b.fib); got != "192.0.2.0/24" {
		t.Fatalf("b took a route with its own AS in the path: %s", got)
	}
	toPeer.AllowOwnAS = 1
	setPeers(t, b, toPeer) // a new session
	send()
	testutil.WaitFor(t, converge, "the path with our AS once at b", func() bool {
		return bgpRoutes(b.fib) == "10.244.1.0/26 192.0.2.0/24"
	})
	toPeer.AllowOwnAS = 2
	setPeers(t, b, toPeer)
	send()
	testutil.WaitFor(t, converge, "the path with our AS twice at b", func() bool {
		return bgpRoutes(b.fib) == "10.244.1.0/26 10.244.2.0/26 192.0.2.0/24"
	})
}

// Rules match on a community and on the start of the AS path, and an
// accepting rule adds communities. b (AS 64512) sits between c (65001)
// and d (65002); d's routes reach c through b.
func TestFilterCommunityASPath(t *testing.T) {
	b, c, d := startAS(t, "127.0.0.2", 64512), startAS(t, "127.0.0.3", 65001), startAS(t, "127.0.0.4", 65002)
	tagged, _ := ParseCommunity("65002:7")
	std, _ := ParseCommunity("64512:1")
	large, _ := ParseCommunity("64512:2:3")
	toD := peerOf(d, false)
	toD.Import = []Rule{{Community: &tagged, Accept: true, AddCommunities: []Community{std, large}}, {ASPathPrefix: []uint32{65002}}}
	toC := peerOf(c, false)
	toC.Export = []Rule{{ASPathPrefix: []uint32{65002}}}
	setPeers(t, b, toC, toD)
	setPeers(t, c, peerOf(b, true))
	setPeers(t, d, peerOf(b, true))
	if err := d.sp.SetCommunities([]PrefixCommunities{{Prefix: pfx("198.51.100.0/25"), Communities: []Community{tagged}}}); err != nil {
		t.Fatal(err)
	}
	if err := d.sp.Advertise([]netip.Prefix{pfx("198.51.100.0/25"), pfx("198.51.100.128/25")}); err != nil {
		t.Fatal(err)
	}
	if err := b.sp.Advertise([]netip.Prefix{pfx("10.244.1.0/26")}); err != nil {
		t.Fatal(err)
	}
	waitAllUp(t, b, 2)
	testutil.WaitFor(t, converge, "the tagged route at b, b's own at c", func() bool {
		return bgpRoutes(b.fib) == "198.51.100.0/25" && bgpRoutes(c.fib) == "10.244.1.0/26"
	})
	testutil.WaitFor(t, converge, "d's two paths received at b", func() bool {
		st, err := b.sp.Status()
		return err == nil && len(st) == 2 && st[1].Address == d.addr.String() && st[1].Received == 2
	})
	if got := communitiesAt(t, b, "198.51.100.0/25"); got != "64512:1 64512:2:3 65002:7" {
		t.Errorf("the accepted route carries %q at b", got)
	}
	if got := communitiesAt(t, b, "198.51.100.128/25"); got != "-" {
		t.Errorf("the untagged route from AS 65002 is at b with %q", got)
	}
	if got := bgpRoutes(c.fib); got != "10.244.1.0/26" {
		t.Errorf("c has %s: b passed on a route from AS 65002", got)
	}
	// Without the export rule, c gets d's route through b.
	setPeers(t, b, peerOf(c, false), toD)
	testutil.WaitFor(t, converge, "d's route at c", func() bool {
		return bgpRoutes(c.fib) == "10.244.1.0/26 198.51.100.0/25"
	})
}

// Communities go with the advertised routes inside their prefix, and
// change without a session reset.
func TestCommunities(t *testing.T) {
	a, b := pair(t, "", false, nil)
	std, _ := ParseCommunity("65001:100")
	large, _ := ParseCommunity("65001:200:300")
	if err := a.sp.SetCommunities([]PrefixCommunities{{Prefix: pfx("10.96.0.0/12"), Communities: []Community{std, large}}}); err != nil {
		t.Fatal(err)
	}
	if err := a.sp.Advertise([]netip.Prefix{pfx("10.96.0.0/12"), pfx("10.100.1.0/24"), pfx("10.244.1.0/26")}); err != nil {
		t.Fatal(err)
	}
	waitUp(t, b)
	testutil.WaitFor(t, converge, "routes at b", func() bool {
		return bgpRoutes(b.fib) == "10.100.1.0/24 10.244.1.0/26 10.96.0.0/12"
	})
	for p, want := range map[string]string{"10.96.0.0/12": "65001:100 65001:200:300", "10.100.1.0/24": "65001:100 65001:200:300", "10.244.1.0/26": ""} {
		if got := communitiesAt(t, b, p); got != want {
			t.Errorf("%s at b carries communities %q, want %q", p, got, want)
		}
	}
	if err := a.sp.SetCommunities(nil); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, converge, "communities gone at b", func() bool { return communitiesAt(t, b, "10.96.0.0/12") == "" })
}

func TestParseCommunity(t *testing.T) {
	for s, want := range map[string]string{"65001:100": "65001:100", "0:0": "0:0", "4294967295:1:2": "4294967295:1:2"} {
		c, err := ParseCommunity(s)
		if err != nil || c.String() != want {
			t.Errorf("%s: %v %v", s, c, err)
		}
	}
	for _, s := range []string{"", "65536:1", "1", "1:2:3:4", "a:b", "1:-2", "4294967296:1:1"} {
		if c, err := ParseCommunity(s); err == nil {
			t.Errorf("%q parsed as %v", s, c)
		}
	}
}

// Rules GoBGP cannot take are left out with a warning, never sent.
func TestPoliciesLeaveOutInvalidRules(t *testing.T) {
	peer := Peer{Address: netip.MustParseAddr("10.0.1.2"), Export: []Rule{
		{Prefix: pfx("fd00::/64"), MinLen: 64, MaxLen: 64},
		{Prefix: pfx("10.0.0.0/8"), MinLen: 24, MaxLen: 16},
		{Prefix: pfx("10.0.0.0/8"), MinLen: 4, MaxLen: 16},
		{Prefix: pfx("10.0.0.0/8"), MinLen: 8, MaxLen: 33},
		{Prefix: pfx("10.0.0.0/8"), MinLen: 8, MaxLen: 32, Accept: true},
	}}
	req, warnings := policies(64512, []Peer{peer}, []PrefixCommunities{{Prefix: pfx("fd00::/64"), Communities: []Community{{A: 1, B: 2}}}})
	if len(warnings) != 4 {
		t.Errorf("warnings %q", warnings)
	}
	var names []string
	for _, p := range req.Policies {
		for _, s := range p.Statements {
			names = append(names, s.Name)
		}
	}
	if fmt.Sprint(names) != "[export-10.0.1.2-4]" {
		t.Fatalf("statements %v", names)
	}
}
