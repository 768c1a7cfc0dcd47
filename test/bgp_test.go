package test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tortie-net/tortie/api"
	"github.com/tortie-net/tortie/bgp"
	"github.com/tortie-net/tortie/bgp/bgptest"
	"github.com/tortie-net/tortie/datastore"
	"github.com/tortie-net/tortie/fib"
	"github.com/tortie-net/tortie/internal/labtest"
	"github.com/tortie-net/tortie/internal/nsdial"
	"github.com/tortie-net/tortie/internal/testutil"
	"github.com/tortie-net/tortie/ipam"
	"github.com/tortie-net/tortie/lab"
	"github.com/tortie-net/tortie/resources"
)

func bgpStatus(t *testing.T, n *lab.Node) api.BGPStatus {
	t.Helper()
	st, err := api.NewClient(n.Socket).BGP()
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// fibRoute finds a route by prefix in a node's FIB.
func fibRoute(t *testing.T, n *lab.Node, prefix string) (api.Route, bool) {
	t.Helper()
	rs, err := api.NewClient(n.Socket).Routes()
	if err != nil {
		return api.Route{}, false
	}
	for _, r := range rs {
		if r.Prefix == prefix {
			return r, true
		}
	}
	return api.Route{}, false
}

// peerOf finds node n's session with addr.
func peerOf(t *testing.T, n *lab.Node, addr string) (bgp.PeerStatus, bool) {
	for _, p := range bgpStatus(t, n).Peers {
		if p.Address == addr {
			return p, true
		}
	}
	return bgp.PeerStatus{}, false
}

// torPeer is a BGPPeer toward the lab's top-of-rack router (AS 65001) for
// node (every node when "").
func torPeer(name, node, password string) string {
	m := fmt.Sprintf("apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata:\n  name: %s\nspec:\n  peerIP: 10.0.1.254\n  asNumber: 65001\n", name)
	if node != "" {
		m += "  node: " + node + "\n"
	}
	return m + "  password:\n    value: " + password + "\n"
}

func allUp(st api.BGPStatus, want int) bool {
	up := 0
	for _, p := range st.Peers {
		if p.State == "up" {
			up++
		}
	}
	return st.Running && up == want && len(st.Peers) == want
}

// blockOf is the /26 a pod's address sits in.
func blockOf(addr string) string {
	return netip.PrefixFrom(netip.MustParseAddr(addr), 26).Masked().String()
}

// TestBirdMesh: two tortie nodes and a node running BIRD 2 configured as
// Calico configures a mesh member. Sessions establish, BIRD learns our
// blocks, we learn BIRD's, pods reach each other both ways; then tortied
// restarts (planned) on a node while a TCP stream runs through it to the
// BIRD node's pod: BIRD never withdraws our block, and the stream lives.
func TestBirdMesh(t *testing.T) {
	l := up(t, lab.Options{Name: "tbm", Nodes: 3, Pods: 1, Mode: "native", BirdNodes: 1})
	n1, n3 := l.Nodes[0], l.Nodes[2]
	testutil.WaitFor(t, 30*time.Second, "mesh established on n1", func() bool { return allUp(bgpStatus(t, n1), 2) })
	st := bgpStatus(t, n1)
	for _, p := range st.Peers {
		if p.Type != "node-to-node mesh" || p.Info != "Established" {
			t.Fatalf("peer %+v", p)
		}
	}
	// We learn BIRD's block, natively via the BIRD node.
	testutil.WaitFor(t, 30*time.Second, "BIRD's block in n1's FIB", func() bool {
		r, ok := fibRoute(t, n1, n3.PodCIDR)
		return ok && r.Source == fib.SourceBGP.String() && r.Node == "10.0.1.3" && r.NodeName == "n3" && r.Mode == "native"
	})
	// BIRD learns ours, with our node as next hop, and puts them in its kernel.
	b1, b2 := blockOf(l.Pod("n1p1").Address), blockOf(l.Pod("n2p1").Address)
	testutil.WaitFor(t, 30*time.Second, "our blocks at BIRD", func() bool {
		out, _ := l.Birdc(n3, "show route "+b1)
		out2, _ := l.Birdc(n3, "show route "+b2)
		return strings.Contains(out, "via 10.0.1.1") && strings.Contains(out2, "via 10.0.1.2")
	})
	out, _ := l.Birdc(n3, "show protocols")
	t.Logf("BIRD:\n%s", out)
	kr, _ := exec.Command("ip", "-n", n3.Netns, "route", "show", b1).CombinedOutput()
	if !strings.Contains(string(kr), "via 10.0.1.1") || !strings.Contains(string(kr), "proto bird") {
		t.Fatalf("BIRD node's kernel route to %s: %s", b1, kr)
	}
	// Prometheus shows the sessions and the learnt routes.
	resp, err := nsdial.HTTPClient(testutil.NetnsPath(n1.Netns), 10*time.Second).Get("http://" + n1.Metrics + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, w := range []string{`tortie_bgp_peer_up{peer="10.0.1.3",type="node-to-node mesh"} 1`, "tortie_bgp_routes_installed 2", "tortie_bgp_peer_prefixes_accepted{peer=\"10.0.1.3\"} 1"} {
		if !strings.Contains(string(body), w) {
			t.Errorf("/metrics lacks %s", w)
		}
	}
	// Each tortie node's kernel routes the other's block straight to it
	// (tortied installs these routes after BGP learns them; until then
	// the default route sends the packets through the fabric's router,
	// one hop more).
	for _, w := range []struct {
		n        *lab.Node
		blk, via string
	}{{n1, b2, "via 10.0.1.2"}, {l.Nodes[1], b1, "via 10.0.1.1"}} {
		testutil.WaitFor(t, 30*time.Second, w.n.Name+"'s kernel route to "+w.blk, func() bool {
			out, _ := exec.Command("ip", "-n", w.n.Netns, "route", "show", w.blk).CombinedOutput()
			return strings.Contains(string(out), w.via)
		})
	}
	checkAll(t, l)
	transfer(t, l, "n1p1", "n3p1", false)
	transfer(t, l, "n1p1", "n3p1", true)

	// Graceful restart of n1's tortied under a TCP stream to the BIRD pod:
	// first planned (SIGTERM), then a crash (kill -9).
	restartUnderStream(t, l, false, b1)
	stateFile := filepath.Join(lab.Dir(l.Name), "n1-state", "bgp-routes.json")
	testutil.WaitFor(t, 20*time.Second, "restart state saved in the background", func() bool {
		b, err := os.ReadFile(stateFile)
		return err == nil && strings.Contains(string(b), n3.PodCIDR)
	})
	restartUnderStream(t, l, true, b1)
	checkAll(t, l)
}

// restartUnderStream restarts tortied on n1 (kill -9 when crash is set)
// while a TCP stream runs from its pod to the BIRD node's pod, and checks
// that BIRD never deleted block from its kernel table and the stream lived.
func restartUnderStream(t *testing.T, l *lab.Lab, crash bool, block string) {
	t.Helper()
	n1, n3 := l.Nodes[0], l.Nodes[2]
	mctx, stopMon := context.WithCancel(context.Background())
	defer stopMon()
	mon := exec.CommandContext(mctx, "ip", "-n", n3.Netns, "monitor", "route")
	mout, _ := mon.StdoutPipe()
	if err := mon.Start(); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var events []string
	go func() {
		sc := bufio.NewScanner(mout)
		for sc.Scan() {
			mu.Lock()
			events = append(events, sc.Text())
			mu.Unlock()
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		r, err := l.Iperf(ctx, "n1p1", "n3p1", 8*time.Second, 0, false)
		if err == nil {
			t.Logf("TCP n1p1 -> n3p1 through the restart (crash %v): %.2f Gbit/s average, %d retransmits", crash, r.BitsPerSecond/1e9, r.Retransmits)
			if r.Received == 0 {
				err = fmt.Errorf("nothing received")
			}
		}
		done <- err
	}()
	time.Sleep(2 * time.Second) // let the stream run before the restart (not synchronisation)
	start := time.Now()
	if err := l.Restart(n1, crash); err != nil {
		t.Fatal(err)
	}
	t.Logf("tortied on n1 restarted (crash %v) in %v", crash, time.Since(start).Round(time.Millisecond))
	if st := bgpStatus(t, n1); !st.Restarting && st.Counters.Installed == 0 {
		t.Errorf("restarted speaker has neither restart state nor routes: %+v", st.Counters)
	}
	testutil.WaitFor(t, 30*time.Second, "sessions back", func() bool { return allUp(bgpStatus(t, n1), 2) })
	if err := <-done; err != nil {
		t.Fatalf("TCP stream through the restart (crash %v): %v", crash, err)
	}
	stopMon()
	_ = mon.Wait()
	mu.Lock()
	defer mu.Unlock()
	for _, e := range events {
		if strings.HasPrefix(e, "Deleted") && strings.Contains(e, block) {
			t.Fatalf("BIRD withdrew our block during a graceful restart (crash %v): %s", crash, e)
		}
	}
	out, _ := l.Birdc(n3, "show route "+block)
	if !strings.Contains(out, "via 10.0.1.1") {
		t.Fatalf("after the restart BIRD has no route to %s: %s", block, out)
	}
}

// TestFRRTopOfRack: FRR's bgpd as an eBGP top-of-rack router (AS 65001)
// in the fabric namespace, peering with every node through a global
// BGPPeer with an MD5 password. Routes flow both ways; a node whose
// password is wrong never establishes.
func TestFRRTopOfRack(t *testing.T) {
	l := up(t, lab.Options{Name: "tfr", Nodes: 2, Pods: 1, Mode: "native", BGP: true, Manifest: torPeer("tor", "", "s3cret-md5")})
	n1, n2 := l.Nodes[0], l.Nodes[1]
	frr, err := l.StartFRR(lab.FRRConfig{ASN: 65001, RouterID: "10.0.1.254", Listen: "10.0.1.254",
		Peers: map[string]uint32{"10.0.1.1": 64512, "10.0.1.2": 64512}, Password: "s3cret-md5", Networks: []string{"198.51.100.0/24"}})
	if err != nil {
		t.Fatal(err)
	}
	defer frr.Stop()
	testutil.WaitFor(t, 40*time.Second, "sessions with FRR", func() bool {
		return allUp(bgpStatus(t, n1), 2) && allUp(bgpStatus(t, n2), 2)
	})
	if p, _ := peerOf(t, n1, "10.0.1.254"); p.Type != "global" || p.ASN != 65001 {
		t.Fatalf("ToR peer %+v", p)
	}
	// FRR's network reaches our FIB, natively via the ToR.
	testutil.WaitFor(t, 30*time.Second, "FRR's route in the FIB", func() bool {
		r, ok := fibRoute(t, n1, "198.51.100.0/24")
		return ok && r.Source == "bgp" && r.Node == "10.0.1.254" && r.Mode == "native"
	})
	// Our blocks reach FRR, with AS path 64512 and our node as next hop.
	b1 := blockOf(l.Pod("n1p1").Address)
	testutil.WaitFor(t, 30*time.Second, "our block at FRR", func() bool {
		out, _ := frr.Vtysh("show bgp ipv4 unicast " + b1 + " json")
		return strings.Contains(out, `"10.0.1.1"`) && strings.Contains(out, "64512")
	})
	sum, _ := frr.Vtysh("show bgp ipv4 unicast summary")
	t.Logf("FRR:\n%s", sum)
	// What an operator sees, through the CLI.
	ctl := func(args ...string) string {
		out, err := exec.Command(filepath.Join(labtest.BinDir, "tortiectl"), append([]string{"--socket", n1.Socket}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("tortiectl %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	st := ctl("node", "status")
	t.Logf("tortiectl node status:\n%s", st)
	for _, w := range []string{"| PEER ADDRESS | PEER TYPE", "| 10.0.1.254   | global", "| up    |", "Established"} {
		if !strings.Contains(st, w) {
			t.Errorf("node status lacks %q", w)
		}
	}
	if y := ctl("get", "bgppeers", "-o", "yaml"); !strings.Contains(y, "name: tor") || !strings.Contains(y, "asNumber: 65001") {
		t.Errorf("get bgppeers -o yaml:\n%s", y)
	}
	ping(t, l, "n1p1", "198.51.100.1")

	// A wrong password never establishes.
	if err := l.Apply(torPeer("tor", "n2", "wrong-password") + "---\n" + torPeer("tor-n1", "n1", "s3cret-md5")); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 30*time.Second, "n2's ToR session down after the password change", func() bool {
		p, ok := peerOf(t, n2, "10.0.1.254")
		return ok && p.State != "up" && p.Type == "node specific"
	})
	deadline := time.Now().Add(8 * time.Second) // several connect retries (3 s) of both sides
	for time.Now().Before(deadline) {
		if p, _ := peerOf(t, n2, "10.0.1.254"); p.State == "up" {
			t.Fatal("a session with the wrong MD5 password established")
		}
		time.Sleep(200 * time.Millisecond)
	}
	if !allUp(bgpStatus(t, n1), 2) {
		t.Fatalf("n1 (right password) lost its session: %+v", bgpStatus(t, n1).Peers)
	}
}

// TestRouteReflectors: five nodes, the mesh off, two route reflectors
// (n4, n5) sharing cluster ID 244.0.0.1 and one BGPPeer giving every node
// the reflectors. Every FIB holds every block; a new block converges to
// every FIB (measured), and so do 50 more per node; with one reflector
// stopped, nothing is lost and traffic keeps flowing.
func TestRouteReflectors(t *testing.T) {
	manifest := `apiVersion: projectcalico.org/v3
kind: BGPConfiguration
metadata:
  name: default
spec:
  nodeToNodeMeshEnabled: false
  asNumber: 64512
---
apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata:
  name: peer-with-route-reflectors
spec:
  nodeSelector: all()
  peerSelector: route-reflector == 'true'
`
	for _, n := range []string{"n4", "n5"} {
		manifest += fmt.Sprintf(`---
apiVersion: projectcalico.org/v3
kind: Node
metadata:
  name: %s
  labels:
    route-reflector: "true"
spec:
  bgp:
    ipv4Address: 10.0.1.%s/24
    routeReflectorClusterID: 244.0.0.1
`, n, n[1:])
	}
	l := up(t, lab.Options{Name: "trr", Nodes: 5, Pods: 1, Mode: "native", BGP: true, Manifest: manifest})
	blocks := map[string]string{}
	for _, p := range l.Pods() {
		blocks[p.Node] = blockOf(p.Address)
	}
	var all []string
	for _, b := range blocks {
		all = append(all, b)
	}
	testutil.WaitFor(t, 60*time.Second, "every block in every FIB", everyFIB(l, all))
	for _, n := range l.Nodes[:3] {
		st := bgpStatus(t, n)
		if len(st.Peers) != 2 || st.Peers[0].Address != "10.0.1.4" || st.Peers[1].Address != "10.0.1.5" {
			t.Fatalf("%s peers with %+v, want only the reflectors", n.Name, st.Peers)
		}
	}
	st := bgpStatus(t, l.Nodes[3])
	if st.ClusterID != "244.0.0.1" || len(st.Peers) != 4 || !st.Peers[0].RRClient {
		t.Fatalf("reflector n4: %+v", st)
	}
	checkAll(t, l)

	convergence(t, l, "over two route reflectors")

	// Stop one reflector: the other keeps every route, traffic flows.
	if err := l.Stop(l.Nodes[4], true); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 60*time.Second, "n5's sessions down on the clients", func() bool {
		for _, n := range l.Nodes[:3] {
			if p, _ := peerOf(t, n, "10.0.1.5"); p.State == "up" {
				return false
			}
		}
		return true
	})
	var live []string
	for node, b := range blocks {
		if node != "n5" {
			live = append(live, b)
		}
	}
	for _, n := range l.Nodes[:4] {
		for _, b := range live {
			if _, ok := fibRoute(t, n, b); !ok {
				t.Fatalf("%s lost %s with one reflector down", n.Name, b)
			}
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, p := range lab.Failed(l.CheckAmong(ctx, []string{"n1", "n2", "n3", "n4"})) {
		t.Errorf("%s -> %s failed with one reflector down:\n%s", p.From, p.To, p.Output)
	}
}

// TestMalformedAtListener: a fuzz corpus of malformed BGP messages sent
// at tortied's BGP listener from a configured peer's address. Sessions
// reset (or treat the update as withdrawn where RFC 7606 says so), nothing
// is installed, the process keeps forwarding. Then a peer that floods
// more prefixes than its limit is cut off and the FIB stays bounded.
func TestMalformedAtListener(t *testing.T) {
	// One peer address per message (a reset peer is held idle a few
	// seconds), all on the fabric router, which also floods.
	cases := bgptest.Malformed(netip.MustParseAddr("10.0.1.254"))
	manifest := `apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata:
  name: flood
spec:
  peerIP: 10.0.1.254
  asNumber: 64512
  maxPrefixes: 100
`
	for i := range cases {
		manifest += fmt.Sprintf("---\napiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata:\n  name: fuzz-%d\nspec:\n  peerIP: 10.0.1.%d\n  asNumber: 64512\n", i, 200+i)
	}
	l := up(t, lab.Options{Name: "tml", Nodes: 2, Pods: 1, Mode: "native", BGP: true, Manifest: manifest})
	n1 := l.Nodes[0]
	dial := func(from netip.Addr) *bgptest.Session {
		var s *bgptest.Session
		testutil.WaitFor(t, 30*time.Second, "session from "+from.String(), func() bool {
			c, err := nsdial.DialFrom("/var/run/netns/"+l.Fabric, from.String(), "10.0.1.1:179", time.Second)
			if err != nil {
				return false
			}
			if s, err = bgptest.Establish(c, 64512, from); err != nil {
				c.Close()
				return false
			}
			return true
		})
		return s
	}
	for i := range cases {
		from := netip.AddrFrom4([4]byte{10, 0, 1, byte(200 + i)})
		if err := exec.Command("ip", "-n", l.Fabric, "addr", "add", from.String()+"/24", "dev", "br0").Run(); err != nil {
			t.Fatal(err)
		}
		c := bgptest.Malformed(from)[i]
		s := dial(from)
		o := s.Send(c.Msg, 300*time.Millisecond)
		s.C.Close()
		t.Logf("%-42s %s", c.Name, o)
		if c.MustReset && o.Alive {
			t.Errorf("%s: session stayed up", c.Name)
		}
		if _, ok := fibRoute(t, n1, "198.18.0.0/24"); ok && !c.MayInstall {
			t.Errorf("%s: installed", c.Name)
		}
	}
	checkAll(t, l)
	// Flood: 500 prefixes against a limit of 100.
	peer := netip.MustParseAddr("10.0.1.254")
	before := bgpStatus(t, n1).Counters
	s := dial(peer)
	var msgs []byte
	for i := 0; i < 500; i++ {
		msgs = append(msgs, bgptest.ValidUpdate(netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 19, byte(i >> 8), byte(i)}), 32), peer)...)
	}
	o := s.Send(msgs, 3*time.Second)
	s.C.Close()
	t.Logf("flood of 500 prefixes, limit 100: %s", o)
	if !o.Notified || o.Code != 6 || o.Subcode != 1 {
		t.Fatalf("flood: %s, want NOTIFICATION 6/1 (Cease, maximum number of prefixes reached)", o)
	}
	after := bgpStatus(t, n1).Counters
	if got := after.Installed - before.Installed; got > 100 {
		t.Fatalf("%d routes from a peer limited to 100", got)
	}
	t.Logf("BGP routes in n1's FIB after the flood: %d (limit 100 for the peer)", after.Installed)
	checkAll(t, l)
}

// everyFIB reports whether every node's FIB has every prefix.
func everyFIB(l *lab.Lab, prefixes []string) func() bool {
	return func() bool {
		for _, n := range l.Nodes {
			rs, err := api.NewClient(n.Socket).Routes()
			if err != nil {
				return false
			}
			have := map[string]bool{}
			for _, r := range rs {
				have[r.Prefix] = true
			}
			for _, p := range prefixes {
				if !have[p] {
					return false
				}
			}
		}
		return true
	}
}

// convergence measures the time from new IPAM blocks (written as a node
// claiming them does) to their routes in every FIB: one block, then 50
// per node at once. Figures, not thresholds.
func convergence(t *testing.T, l *lab.Lab, how string) {
	store := etcdClient(t, l)
	t0 := time.Now()
	claimBlocks(t, store, "n3", []string{"10.244.200.0/26"})
	testutil.WaitFor(t, 30*time.Second, "new block everywhere", everyFIB(l, []string{"10.244.200.0/26"}))
	one := time.Since(t0)
	var many []string
	t0 = time.Now()
	for i, n := range l.Nodes {
		var mine []string
		for j := 0; j < 50; j++ {
			k := i*50 + j
			mine = append(mine, fmt.Sprintf("10.244.%d.%d/26", 64+k/4, (k%4)*64))
		}
		claimBlocks(t, store, n.Name, mine)
		many = append(many, mine...)
	}
	testutil.WaitFor(t, 60*time.Second, "50 blocks per node everywhere", everyFIB(l, many))
	t.Logf("convergence %s, %d nodes: one new block in every FIB after %v; 50 new blocks per node (%d) after %v",
		how, len(l.Nodes), one.Round(time.Millisecond), len(many), time.Since(t0).Round(time.Millisecond))
}

// TestMeshConvergence: five nodes in a full mesh learn a new block, then
// 50 more per node; the times are printed.
func TestMeshConvergence(t *testing.T) {
	l := up(t, lab.Options{Name: "tmc", Nodes: 5, Pods: 0, Mode: "native", BGP: true})
	for _, n := range l.Nodes {
		testutil.WaitFor(t, 30*time.Second, "mesh up on "+n.Name, func() bool { return allUp(bgpStatus(t, n), 4) })
	}
	convergence(t, l, "in a full mesh")
}

// etcdClient reaches the lab's etcd (embedded in n1) from inside n1.
func etcdClient(t *testing.T, l *lab.Lab) datastore.Store {
	t.Helper()
	ns := "/var/run/netns/" + l.Nodes[0].Netns
	f := l.EtcdClientFiles()
	s, err := datastore.DialEtcd(datastore.EtcdConfig{Endpoints: []string{l.EtcdURL}, Dial: func(ctx context.Context, addr string) (net.Conn, error) {
		return nsdial.Dial(ctx, ns, addr)
	}, TLS: datastore.ClientTLS{CAFile: f.CA, CertFile: f.Cert, KeyFile: f.Key}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// claimBlocks writes IPAM blocks with affinity to node, as a node claiming
// them does.
func claimBlocks(t *testing.T, s datastore.Store, node string, cidrs []string) {
	t.Helper()
	for _, c := range cidrs {
		b, _ := json.Marshal(ipam.Block{CIDR: netip.MustParsePrefix(c), Affinity: "host:" + node, Allocs: make([]ipam.Alloc, 64)})
		if _, err := s.Put(context.Background(), resources.Prefix+"ipam/blocks/"+strings.ReplaceAll(c, "/", "-"), b); err != nil {
			t.Fatal(err)
		}
	}
}
