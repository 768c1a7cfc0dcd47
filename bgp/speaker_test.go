package bgp

import (
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/tortie-net/tortie/bgp/bgptest"
	"github.com/tortie-net/tortie/fib"
	"github.com/tortie-net/tortie/internal/testutil"
)

// converge bounds how long a test waits for sessions and routes to settle:
// a deadline, not a figure under test; generous for a loaded machine
// running the race detector (10 s once ran out there).
const converge = 30 * time.Second

// skipUnderRace skips a test that provokes GoBGP's own data race between its
// event watcher and a peer going down (upstream osrg/gobgp#2705): cut
// sessions by prefix limit, malformed messages or TTL checks. Such tests run
// without the race detector; the rest of the package runs with it.
func skipUnderRace(t testing.TB) {
	t.Helper()
	if raceEnabled {
		t.Skip("provokes GoBGP's data race osrg/gobgp#2705; run without -race")
	}
}

func freePort(t testing.TB, addr string) int {
	l, err := net.Listen("tcp", addr+":0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

type node struct {
	sp   *Speaker
	fib  *fib.FIB
	addr netip.Addr
	port int
	cfg  Config
}

func resolveNative(_ netip.Prefix, nh netip.Addr) (fib.NextHop, bool) {
	return fib.NextHop{Kind: fib.KindRemote, Node: nh.As4(), Mode: fib.ModeNative}, true
}

func start(t testing.TB, addr string, port int, state string) *node {
	t.Helper()
	return startWith(t, addr, port, state, zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)).Named(addr))
}

func startWith(t testing.TB, addr string, port int, state string, log *zap.Logger) *node {
	t.Helper()
	a := netip.MustParseAddr(addr)
	n := &node{fib: fib.New(), addr: a, port: port}
	n.cfg = Config{RouterID: a, ASN: 64512, ListenPort: port, ListenAddr: a, StateFile: state, FIB: n.fib,
		Resolve: resolveNative, Log: log}
	sp, err := Start(n.cfg)
	if err != nil {
		t.Fatal(err)
	}
	n.sp = sp
	return n
}

func meshPeer(to *node, passive bool) Peer {
	return Peer{Address: to.addr, ASN: 64512, Port: to.port, Type: PeerMesh, Name: to.addr.String(), Passive: passive}
}

// pair starts speakers a (127.0.0.1) and b (127.0.0.2, with restart state
// file stateB) peered with each other; a waits for b's connection when
// aPassive. tweak, if set, adjusts a's peer entry for b and b's for a.
// Both stop when the test ends (a Stop the test made first wins).
func pair(t *testing.T, stateB string, aPassive bool, tweak func(toB, toA *Peer)) (a, b *node) {
	t.Helper()
	a = start(t, "127.0.0.1", freePort(t, "127.0.0.1"), "")
	t.Cleanup(func() { a.sp.Stop(false) })
	b = start(t, "127.0.0.2", freePort(t, "127.0.0.2"), stateB)
	t.Cleanup(func() { b.sp.Stop(false) })
	toB, toA := meshPeer(b, aPassive), meshPeer(a, !aPassive)
	if tweak != nil {
		tweak(&toB, &toA)
	}
	if err := a.sp.SetPeers([]Peer{toB}); err != nil {
		t.Fatal(err)
	}
	if err := b.sp.SetPeers([]Peer{toA}); err != nil {
		t.Fatal(err)
	}
	return a, b
}

func bgpRoute(f *fib.FIB, p string) (fib.Route, bool) {
	for _, r := range f.Load().Routes() {
		if r.Prefix.String() == p && r.Source == fib.SourceBGP {
			return r, true
		}
	}
	return fib.Route{}, false
}

func waitUp(t *testing.T, n *node) {
	t.Helper()
	testutil.WaitFor(t, 20*time.Second, "session up", func() bool {
		st, err := n.sp.Status()
		return err == nil && len(st) > 0 && st[0].State == "up"
	})
}

func TestRoutesFlowAndWithdraw(t *testing.T) {
	a, b := pair(t, "", false, nil)
	if err := a.sp.Advertise([]netip.Prefix{netip.MustParsePrefix("10.244.1.0/26"), netip.MustParsePrefix("10.244.9.7/32")}); err != nil {
		t.Fatal(err)
	}
	waitUp(t, b)
	testutil.WaitFor(t, converge, "routes at b", func() bool {
		_, ok1 := bgpRoute(b.fib, "10.244.1.0/26")
		_, ok2 := bgpRoute(b.fib, "10.244.9.7/32")
		return ok1 && ok2
	})
	r, _ := bgpRoute(b.fib, "10.244.1.0/26")
	if r.NextHop.Node != a.addr.As4() {
		t.Fatalf("next hop %v, want %s", r.NextHop.Node, a.addr)
	}
	// Our own advertisements never land in our own FIB.
	if _, ok := bgpRoute(a.fib, "10.244.1.0/26"); ok {
		t.Fatal("a installed its own advertisement")
	}
	st, _ := b.sp.Status()
	if st[0].Type != "node-to-node mesh" || st[0].Info != "Established" || st[0].Accepted != 2 {
		t.Fatalf("status %+v", st[0])
	}
	if err := a.sp.Advertise([]netip.Prefix{netip.MustParsePrefix("10.244.1.0/26")}); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, converge, "withdrawal at b", func() bool {
		_, ok := bgpRoute(b.fib, "10.244.9.7/32")
		return !ok
	})
	if _, ok := bgpRoute(b.fib, "10.244.1.0/26"); !ok {
		t.Fatal("the block went with the /32")
	}
}

// Learnt prefixes inside the kept-out ranges (the Service ranges) stay out
// of the FIB, and come in once the range is no longer kept out.
func TestKeepOut(t *testing.T) {
	a, b := pair(t, "", false, nil)
	b.sp.KeepOut([]netip.Prefix{netip.MustParsePrefix("10.96.0.0/12")})
	if err := a.sp.Advertise([]netip.Prefix{netip.MustParsePrefix("10.244.1.0/26"), netip.MustParsePrefix("10.96.0.0/12"),
		netip.MustParsePrefix("10.100.7.0/24"), netip.MustParsePrefix("10.0.0.0/8")}); err != nil {
		t.Fatal(err)
	}
	waitUp(t, b)
	testutil.WaitFor(t, converge, "the block and 10.0.0.0/8 at b", func() bool {
		_, ok1 := bgpRoute(b.fib, "10.244.1.0/26")
		_, ok2 := bgpRoute(b.fib, "10.0.0.0/8")
		return ok1 && ok2
	})
	testutil.WaitFor(t, converge, "every path accepted", func() bool {
		st, err := b.sp.Status()
		return err == nil && len(st) == 1 && st[0].Accepted == 4
	})
	for _, p := range []string{"10.96.0.0/12", "10.100.7.0/24"} {
		if _, ok := bgpRoute(b.fib, p); ok {
			t.Errorf("%s, inside a kept-out range, is in the FIB", p)
		}
	}
	if n := b.sp.Counters().Installed; n != 2 {
		t.Errorf("%d routes installed, want 2", n)
	}
	b.sp.KeepOut(nil)
	testutil.WaitFor(t, converge, "the ranges back in b's FIB", func() bool {
		_, ok1 := bgpRoute(b.fib, "10.96.0.0/12")
		_, ok2 := bgpRoute(b.fib, "10.100.7.0/24")
		return ok1 && ok2
	})
}

// A burst of updates coalesces: far fewer FIB snapshots than prefixes.
func TestBurstCoalesces(t *testing.T) {
	a, b := pair(t, "", false, nil)
	waitUp(t, b)
	var ps []netip.Prefix
	for i := 0; i < 2000; i++ {
		ps = append(ps, netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 100, byte(i >> 8), byte(i)}), 32))
	}
	before := b.fib.Version()
	if err := a.sp.Advertise(ps); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 20*time.Second, "2000 routes at b", func() bool { return b.sp.Counters().Installed == 2000 })
	snaps := b.fib.Version() - before
	t.Logf("2000 prefixes in %d FIB snapshots (%d best-path events)", snaps, b.sp.Counters().BestPathEvents)
	if snaps >= 2000 {
		t.Fatalf("%d snapshots for 2000 prefixes: updates were not coalesced", snaps)
	}
}

// The speaker's own bound on BGP routes holds whatever peers send.
func TestMaxRoutesBound(t *testing.T) {
	a := start(t, "127.0.0.1", freePort(t, "127.0.0.1"), "")
	defer a.sp.Stop(false)
	port := freePort(t, "127.0.0.2")
	f := fib.New()
	addr := netip.MustParseAddr("127.0.0.2")
	sp, err := Start(Config{RouterID: addr, ASN: 64512, ListenPort: port, ListenAddr: addr, FIB: f, Resolve: resolveNative,
		MaxRoutes: 50, Log: zaptest.NewLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Stop(false)
	b := &node{sp: sp, fib: f, addr: addr, port: port}
	_ = a.sp.SetPeers([]Peer{meshPeer(b, false)})
	_ = b.sp.SetPeers([]Peer{meshPeer(a, true)})
	var ps []netip.Prefix
	for i := 0; i < 80; i++ {
		ps = append(ps, netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 100, 0, byte(i)}), 32))
	}
	_ = a.sp.Advertise(ps)
	testutil.WaitFor(t, 20*time.Second, "over-limit routes counted", func() bool { return sp.Counters().OverLimit >= 30 })
	if n := sp.Counters().Installed; n != 50 {
		t.Fatalf("%d BGP routes installed, want the bound 50", n)
	}
}

// A peer that sends more prefixes than its limit is cut off.
func TestMaxPrefixCutsPeer(t *testing.T) {
	skipUnderRace(t)
	a, b := pair(t, "", false, func(_, toA *Peer) { toA.MaxPrefixes = 20 })
	waitUp(t, b)
	var ps []netip.Prefix
	for i := 0; i < 100; i++ {
		ps = append(ps, netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 101, 0, byte(i)}), 32))
	}
	_ = a.sp.Advertise(ps)
	testutil.WaitFor(t, 20*time.Second, "session cut", func() bool {
		st, _ := b.sp.Status()
		return len(st) == 1 && st[0].State != "up"
	})
	if n := b.sp.Counters().Installed; n > 20 {
		st, _ := b.sp.Status()
		t.Fatalf("%d routes from a peer limited to 20 (%+v, %+v)", n, b.sp.Counters(), st)
	}
}

// A planned restart keeps the learnt routes in the FIB from the first
// instant of the new run, and sweeps what the peer no longer announces.
func TestPlannedRestartKeepsRoutes(t *testing.T) {
	state := filepath.Join(t.TempDir(), "bgp-routes.json")
	a, b := pair(t, state, true, nil)
	_ = a.sp.Advertise([]netip.Prefix{netip.MustParsePrefix("10.244.1.0/26"), netip.MustParsePrefix("10.244.2.0/26")})
	testutil.WaitFor(t, 20*time.Second, "routes at b", func() bool { return b.sp.Counters().Installed == 2 })
	b.sp.Stop(true)
	// While b is away a withdraws one block.
	_ = a.sp.Advertise([]netip.Prefix{netip.MustParsePrefix("10.244.1.0/26")})
	b2 := start(t, "127.0.0.2", b.port, state)
	defer b2.sp.Stop(false)
	if !b2.sp.Restarting() {
		t.Fatal("the new run does not know it restarted")
	}
	for _, p := range []string{"10.244.1.0/26", "10.244.2.0/26"} {
		if _, ok := bgpRoute(b2.fib, p); !ok {
			t.Fatalf("%s missing right after the restart", p)
		}
	}
	_ = b2.sp.SetPeers([]Peer{meshPeer(a, false)})
	testutil.WaitFor(t, 30*time.Second, "stale route swept", func() bool {
		_, ok := bgpRoute(b2.fib, "10.244.2.0/26")
		return !ok
	})
	if _, ok := bgpRoute(b2.fib, "10.244.1.0/26"); !ok {
		t.Fatal("the re-announced block was swept")
	}
	if b2.sp.Counters().StaleSwept != 1 {
		t.Fatalf("swept %d, want 1", b2.sp.Counters().StaleSwept)
	}
}

// Malformed messages reset the session (or are treated as withdrawn, for
// attribute errors), never install a route, and never stop the speaker.
func TestMalformedMessages(t *testing.T) {
	skipUnderRace(t)
	a := start(t, "127.0.0.1", freePort(t, "127.0.0.1"), "")
	defer a.sp.Stop(false)
	// One peer address per case: a reset peer is held idle for a while.
	cases := bgptest.Malformed(netip.MustParseAddr("127.0.0.3"))
	var peers []Peer
	for i := range cases {
		peers = append(peers, Peer{Address: netip.AddrFrom4([4]byte{127, 0, 1, byte(10 + i)}), ASN: 64512, Passive: true, Type: PeerGlobal, Name: "attacker"})
	}
	peer := netip.MustParseAddr("127.0.0.3")
	peers = append(peers, Peer{Address: peer, ASN: 64512, Passive: true, Type: PeerGlobal, Name: "attacker"})
	_ = a.sp.SetPeers(peers)
	for i, c := range cases {
		t.Run(c.Name, func(t *testing.T) {
			from := peers[i].Address
			c := bgptest.Malformed(from)[i]
			o := sendMalformed(t, a, from, c.Msg)
			t.Logf("%s: %s", c.Name, o)
			if c.MustReset && o.Alive {
				t.Fatalf("%s: the session stayed up", c.Name)
			}
			if _, ok := bgpRoute(a.fib, "198.18.0.0/24"); ok && !c.MayInstall {
				t.Fatalf("%s: a malformed update was installed", c.Name)
			}
		})
	}
	// Still a working speaker: a valid update from the same peer installs.
	s := dialEstablished(t, a, peer)
	defer s.C.Close()
	if o := s.Send(bgptest.ValidUpdate(netip.MustParsePrefix("198.18.1.0/24"), peer), 200*time.Millisecond); !o.Alive {
		t.Fatalf("valid update: %s", o)
	}
	testutil.WaitFor(t, converge, "valid route", func() bool { _, ok := bgpRoute(a.fib, "198.18.1.0/24"); return ok })
}

func dialEstablished(t testing.TB, a *node, peer netip.Addr) *bgptest.Session {
	t.Helper()
	var s *bgptest.Session
	testutil.WaitFor(t, 20*time.Second, "session with the speaker", func() bool {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: peer.AsSlice()}, Timeout: time.Second}
		c, err := d.Dial("tcp", netip.AddrPortFrom(a.addr, uint16(a.port)).String())
		if err != nil {
			return false
		}
		s, err = bgptest.Establish(c, 64512, peer)
		if err != nil {
			c.Close()
			return false
		}
		return true
	})
	return s
}

func sendMalformed(t testing.TB, a *node, peer netip.Addr, msg []byte) bgptest.Outcome {
	s := dialEstablished(t, a, peer)
	defer s.C.Close()
	return s.Send(msg, 300*time.Millisecond)
}

// FuzzMessage sends arbitrary messages on an established session: the
// speaker must stay up and answer the next session.
func FuzzMessage(f *testing.F) {
	skipUnderRace(f)
	peer := netip.MustParseAddr("127.0.0.3")
	for _, c := range bgptest.Malformed(peer) {
		f.Add(c.Msg)
	}
	f.Add(bgptest.ValidUpdate(netip.MustParsePrefix("198.18.1.0/24"), peer))
	a := startWith(f, "127.0.0.1", freePort(f, "127.0.0.1"), "", zap.NewNop())
	f.Cleanup(func() { a.sp.Stop(false) })
	// A pool of peer addresses used in turn: a peer whose session was
	// reset is held idle for a few seconds.
	var pool []Peer
	for i := 0; i < 64; i++ {
		pool = append(pool, Peer{Address: netip.AddrFrom4([4]byte{127, 0, 2, byte(10 + i)}), ASN: 64512, Passive: true, Type: PeerGlobal, Name: "fuzz"})
	}
	_ = a.sp.SetPeers(pool)
	next := 0
	f.Fuzz(func(t *testing.T, msg []byte) {
		from := pool[next%len(pool)].Address
		next++
		sendMalformed(t, a, from, msg)
		if _, err := a.sp.Status(); err != nil {
			t.Fatalf("speaker stopped answering: %v", err)
		}
	})
}

// A crash (no Stop at all) also comes back as a graceful restart: the
// routes saved in the background are reinstalled at once.
func TestCrashRestartKeepsRoutes(t *testing.T) {
	state := filepath.Join(t.TempDir(), "bgp-routes.json")
	a, b := pair(t, state, true, nil)
	_ = a.sp.Advertise([]netip.Prefix{netip.MustParsePrefix("10.244.1.0/26")})
	testutil.WaitFor(t, 20*time.Second, "route at b", func() bool { return b.sp.Counters().Installed == 1 })
	testutil.WaitFor(t, converge, "restart state saved", func() bool {
		st, err := os.Stat(state)
		return err == nil && st.Size() > 0 && strings.Contains(readFile(state), "10.244.1.0/26")
	})
	// What survives a crash is the file: a new speaker reads it.
	b2 := startWith(t, "127.0.0.3", freePort(t, "127.0.0.3"), state, zap.NewNop())
	defer b2.sp.Stop(false)
	if !b2.sp.Restarting() {
		t.Fatal("the run after a crash does not know it restarted")
	}
	if _, ok := bgpRoute(b2.fib, "10.244.1.0/26"); !ok {
		t.Fatal("route missing right after the crash")
	}
}

func readFile(p string) string {
	b, _ := os.ReadFile(p)
	return string(b)
}

// TTL security (GTSM): sessions establish when both ends send with TTL 255;
// a peer requiring it never accepts one that sends with the default TTL.
func TestTTLSecurity(t *testing.T) {
	skipUnderRace(t)
	_, b := pair(t, "", false, func(toB, toA *Peer) { toB.TTLSecurity, toA.TTLSecurity = 1, 1 })
	waitUp(t, b)

	c := start(t, "127.0.0.3", freePort(t, "127.0.0.3"), "")
	defer c.sp.Stop(false)
	d := start(t, "127.0.0.4", freePort(t, "127.0.0.4"), "")
	defer d.sp.Stop(false)
	pc := meshPeer(d, false) // c sends with the default TTL
	pd := meshPeer(c, true)
	pd.TTLSecurity = 1 // d requires TTL 255
	_ = c.sp.SetPeers([]Peer{pc})
	_ = d.sp.SetPeers([]Peer{pd})
	deadline := time.Now().Add(6 * time.Second) // two connect retries of c
	for time.Now().Before(deadline) {
		if st, _ := d.sp.Status(); len(st) == 1 && st[0].State == "up" {
			t.Fatal("a session without TTL 255 established against TTL security")
		}
		time.Sleep(100 * time.Millisecond)
	}
}
