package test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tortie-net/tortie/api"
	"github.com/tortie-net/tortie/internal/labtest"
	"github.com/tortie-net/tortie/internal/testutil"
	"github.com/tortie-net/tortie/lab"
	"github.com/tortie-net/tortie/nsutil"
)

// Ports of TestPolicy's servers. Every server pod listens on the TCP ones
// and answers UDP on udpEcho; nothing listens on udpClosed or udpOther.
const (
	tcpAllowed = 8080 // allowed by the server policy
	tcpDenied  = 8081 // listened on, not allowed (until the policy changes)
	udpEcho    = 7070 // allowed, answered
	udpClosed  = 9999 // allowed, nobody listens: ICMP port unreachable
	udpOther   = 9998 // not allowed, nobody listens
)

// deniedWait is how long a connection attempt that policy denies is given:
// a denied SYN is never answered, so the attempt times out; anything the
// router let through would be answered within milliseconds on this lab.
const deniedWait = 1500 * time.Millisecond

// policyManifest is TestPolicy's policy: a platform tier whose policy logs
// TCP to the server port, denies sources in the GlobalNetworkSet
// "blocked" (blockedNet) and passes the rest to the default tier; there,
// the server pods (role=server) are isolated both ways and allow TCP
// serverPorts and UDP udpEcho and udpClosed from clients of their own
// namespace, and the clients (role=client) are isolated both ways and may
// send anything. Neither allows a reply, which must pass as part of the
// flow its request opened.
func policyManifest(blockedNet string, serverPorts ...int) string {
	ports := make([]string, len(serverPorts))
	for i, p := range serverPorts {
		ports[i] = fmt.Sprint(p)
	}
	return fmt.Sprintf(`apiVersion: projectcalico.org/v3
kind: Tier
metadata:
  name: platform
spec:
  order: 100
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkSet
metadata:
  name: blocked
  labels:
    blocked: "true"
spec:
  nets: [%s]
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata:
  name: platform.guard
spec:
  tier: platform
  order: 10
  selector: role == 'server'
  types: [Ingress]
  ingress:
  - action: Log
    protocol: TCP
    destination:
      ports: [%d]
  - action: Deny
    source:
      selector: blocked == 'true'
  - action: Pass
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata:
  name: server
  namespace: default
spec:
  selector: role == 'server'
  types: [Ingress, Egress]
  ingress:
  - action: Allow
    protocol: TCP
    source:
      selector: role == 'client'
    destination:
      ports: [%s]
  - action: Allow
    protocol: UDP
    source:
      selector: role == 'client'
    destination:
      ports: [%d, %d]
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata:
  name: client
  namespace: default
spec:
  selector: role == 'client'
  types: [Ingress, Egress]
  egress:
  - action: Allow
`, blockedNet, tcpAllowed, strings.Join(ports, ", "), udpEcho, udpClosed)
}

// podServer is a pod's TCP line echo servers and UDP echo server, in the
// pod's namespace, in this process. It remembers which clients connected.
type podServer struct {
	mu       sync.Mutex
	accepted map[string]int // "<client address> <port>" -> connections
}

// servePod starts p's servers on the TCP ports and UDP udpEcho; they stop
// when the test ends. A TCP connection gets back every line it sends, with
// "<pod> " in front.
func servePod(t *testing.T, p *lab.Pod, tcpPorts ...int) *podServer {
	t.Helper()
	s := &podServer{accepted: map[string]int{}}
	var lns []net.Listener
	var pc net.PacketConn
	err := nsutil.Do(testutil.NetnsPath(p.Netns), func() error {
		for _, port := range tcpPorts {
			ln, err := net.Listen("tcp4", fmt.Sprintf("0.0.0.0:%d", port))
			if err != nil {
				return err
			}
			lns = append(lns, ln)
		}
		var err error
		pc, err = net.ListenPacket("udp4", fmt.Sprintf("0.0.0.0:%d", udpEcho))
		return err
	})
	if err != nil {
		t.Fatalf("servers in %s: %v", p.Name, err)
	}
	// Connections are closed when the test ends; one accepted while it
	// ends is closed at once (closed says so), so that Wait returns.
	var conns sync.WaitGroup
	var cmu sync.Mutex
	var open []net.Conn
	closed := false
	t.Cleanup(func() {
		for _, ln := range lns {
			ln.Close()
		}
		pc.Close()
		cmu.Lock()
		closed = true
		for _, c := range open {
			c.Close()
		}
		cmu.Unlock()
		conns.Wait()
	})
	for _, ln := range lns {
		port := ln.Addr().(*net.TCPAddr).Port
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				host, _, _ := net.SplitHostPort(c.RemoteAddr().String())
				s.mu.Lock()
				s.accepted[fmt.Sprintf("%s %d", host, port)]++
				s.mu.Unlock()
				cmu.Lock()
				if closed {
					cmu.Unlock()
					c.Close()
					return
				}
				open = append(open, c)
				conns.Add(1)
				cmu.Unlock()
				go func() {
					defer conns.Done()
					defer c.Close()
					r := bufio.NewReader(c)
					for {
						line, err := r.ReadString('\n')
						if err != nil {
							return
						}
						if _, err := io.WriteString(c, p.Name+" "+line); err != nil {
							return
						}
					}
				}()
			}
		}()
	}
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			_, _ = pc.WriteTo(append([]byte(p.Name+" "), buf[:n]...), from)
		}
	}()
	return s
}

// saw counts the connections from addr the server accepted on port.
func (s *podServer) saw(addr string, port int) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.accepted[fmt.Sprintf("%s %d", addr, port)]
}

// dialFrom opens a TCP connection from pod p's namespace.
func dialFrom(p *lab.Pod, addr string, timeout time.Duration) (net.Conn, error) {
	var c net.Conn
	d := net.Dialer{Timeout: timeout}
	err := nsutil.Do(testutil.NetnsPath(p.Netns), func() (err error) { c, err = d.Dial("tcp4", addr); return err })
	return c, err
}

// udpFrom opens a connected UDP socket from pod p's namespace.
func udpFrom(t *testing.T, p *lab.Pod, addr string) net.Conn {
	t.Helper()
	var c net.Conn
	if err := nsutil.Do(testutil.NetnsPath(p.Netns), func() (err error) { c, err = net.Dial("udp4", addr); return err }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// echo sends one line on an established connection and reads the answer
// within timeout.
func echo(c net.Conn, line string, timeout time.Duration) (string, error) {
	_ = c.SetDeadline(time.Now().Add(timeout))
	defer c.SetDeadline(time.Time{})
	if _, err := io.WriteString(c, line+"\n"); err != nil {
		return "", err
	}
	got, err := bufio.NewReader(c).ReadString('\n')
	return strings.TrimSuffix(got, "\n"), err
}

// udpAsk sends datagrams on c until something answers or the deadline
// passes: a reply's payload, or the socket's error (ECONNREFUSED after an
// ICMP port unreachable). A timeout means nothing came back.
func udpAsk(c net.Conn, payload string, deadline time.Duration) (string, error) {
	end := time.Now().Add(deadline)
	buf := make([]byte, 2048)
	for {
		if _, err := c.Write([]byte(payload)); err != nil {
			if errors.Is(err, syscall.ECONNREFUSED) {
				return "", err
			}
			return "", fmt.Errorf("send: %w", err)
		}
		_ = c.SetReadDeadline(time.Now().Add(250 * time.Millisecond))
		n, err := c.Read(buf)
		if err == nil {
			return string(buf[:n]), nil
		}
		if !isTimeout(err) || time.Now().After(end) {
			return "", err
		}
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// tortiectl runs the real tortiectl against a node's socket, with JSON
// output decoded into out when out is not nil.
func tortiectl(t *testing.T, n *lab.Node, out any, args ...string) {
	t.Helper()
	cmd := exec.Command(filepath.Join(labtest.BinDir, "tortiectl"), append([]string{"--socket", n.Socket, "-o", "json"}, args...)...)
	b, err := cmd.Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		t.Fatalf("tortiectl %s: %v\n%s%s", strings.Join(args, " "), err, b, stderr)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("tortiectl %s: %v\n%s", strings.Join(args, " "), err, b)
		}
	}
}

// applyPolicy applies a manifest with tortiectl apply -f.
func applyPolicy(t *testing.T, n *lab.Node, manifest string) {
	t.Helper()
	f := filepath.Join(t.TempDir(), "policy.yaml")
	if err := os.WriteFile(f, []byte(manifest), 0o644); err != nil {
		t.Fatal(err)
	}
	tortiectl(t, n, nil, "apply", "-f", f)
}

// trace asks a node, through tortiectl, what it does with a new flow.
func trace(t *testing.T, n *lab.Node, from, to, proto string, port int) api.Trace {
	t.Helper()
	var tr api.Trace
	tortiectl(t, n, &tr, "trace", "--from", from, "--to", to, "--proto", proto, "--port", fmt.Sprint(port))
	return tr
}

// waitPolicy polls a node's trace of a new flow (through the API, every
// 50 ms) until ok accepts it: the policy change it shows is in force.
func waitPolicy(t *testing.T, n *lab.Node, q api.TraceRequest, what string, ok func(api.Trace) bool) {
	t.Helper()
	c := api.NewClient(n.Socket)
	deadline := time.Now().Add(20 * time.Second)
	var last api.Trace
	var err error
	for {
		if last, err = c.Trace(q); err == nil && ok(last) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("policy on %s not in force after 20s (%s): last trace %+v, %v", n.Name, what, last, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// decided says whether a trace side was decided as want says: action,
// decider, tier, policy and rule index.
func decided(p api.TracePolicy, action, decider, tier, pol string, rule int) bool {
	return p.Evaluated && p.Action == action && p.Decider == decider && p.Tier == tier && p.Policy == pol && p.Rule == rule
}

// policyCounters is what a node counted of policy denials.
type policyCounters struct {
	dropped    uint64            // drop reason policy_denied
	byEndpoint map[string]uint64 // endpoint key -> packets
	byPolicy   map[string]uint64 // "decider/tier/policy" -> packets
}

func readPolicyCounters(t *testing.T, n *lab.Node) policyCounters {
	t.Helper()
	s, err := api.NewClient(n.Socket).Counters()
	if err != nil {
		t.Fatal(err)
	}
	pc := policyCounters{dropped: s.Drops["policy_denied"], byEndpoint: map[string]uint64{}, byPolicy: map[string]uint64{}}
	for _, e := range s.Policy.DeniedByEndpoint {
		pc.byEndpoint[e.Endpoint] = e.Packets
	}
	for _, p := range s.Policy.DeniedByPolicy {
		pc.byPolicy[p.Decider+"/"+p.Tier+"/"+p.Policy] = p.Packets
	}
	return pc
}

// metric reads one sample of a node's Prometheus metrics (from inside the
// node's namespace, where tortied listens); the line must match exactly
// up to the value. A counter not exported yet (nothing counted) reads 0.
func metric(t *testing.T, n *lab.Node, series string) float64 {
	t.Helper()
	tr := &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		var c net.Conn
		err := nsutil.Do(testutil.NetnsPath(n.Netns), func() (err error) {
			c, err = (&net.Dialer{}).DialContext(ctx, network, addr)
			return err
		})
		return c, err
	}}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: 5 * time.Second}).Get("http://" + n.Metrics + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			var f float64
			if _, err := fmt.Sscan(v, &f); err != nil {
				t.Fatalf("metric %s: %q", series, line)
			}
			return f
		}
	}
	return 0
}

// findFlow finds the flow src:sport -> dst:dport in a node's flow table,
// read with tortiectl flows.
func findFlow(t *testing.T, n *lab.Node, proto string, src netip.AddrPort, dst netip.AddrPort) (api.Flow, bool) {
	t.Helper()
	var fs api.Flows
	tortiectl(t, n, &fs, "flows", "--limit", "100000")
	for _, f := range fs.Flows {
		if f.Proto == proto && f.Src == src.Addr().String() && f.SrcPort == src.Port() && f.Dst == dst.Addr().String() && f.DstPort == dst.Port() {
			return f, true
		}
	}
	return api.Flow{}, false
}

// waitLog waits for a line of the node's tortied log that holds every
// one of want.
func waitLog(t *testing.T, n *lab.Node, want ...string) {
	t.Helper()
	testutil.WaitFor(t, 10*time.Second, fmt.Sprintf("a line with %q in %s's log", want, n.Name), func() bool {
		b, _ := os.ReadFile(n.Log)
		for _, line := range strings.Split(string(b), "\n") {
			all := true
			for _, w := range want {
				all = all && strings.Contains(line, w)
			}
			if all {
				return true
			}
		}
		return false
	})
}

func hasFlag(f api.Flow, flag string) bool {
	for _, x := range f.Flags {
		if x == flag {
			return true
		}
	}
	return false
}

// TestPolicy enforces Calico policy from the datastore with real tortieds
// and pods made through CNI (their WorkloadEndpoints written by CNI ADD,
// labelled with tortiectl label, policy applied with tortiectl apply): on
// a 2-node VXLAN lab, a server pod on n2, a client on n1 (across nodes)
// and one on n2 (same node), a client whose address is in a blocked
// GlobalNetworkSet, and a client in another namespace. See the subtests.
func TestPolicy(t *testing.T) {
	l := up(t, lab.Options{Name: "tpol", Nodes: 2, Pods: 2, Mode: "vxlan", LogLevel: "info"})
	n1, n2 := l.Nodes[0], l.Nodes[1]
	server, remote, local, blocked := l.Pod("n2p1"), l.Pod("n1p1"), l.Pod("n2p2"), l.Pod("n1p2")
	// A client in the namespace "other": the server policy's source
	// selector, in a namespaced policy, names pods of its own namespace.
	outsider := &lab.Pod{Name: "n1x", Namespace: "other", Netns: testutil.Netns(t), Node: n1.Name}
	if err := l.AddPodCNI(context.Background(), n1, outsider); err != nil {
		t.Fatal(err)
	}
	srv := servePod(t, server, tcpAllowed, tcpDenied)
	servePod(t, remote, tcpAllowed) // to be called back by the server

	for _, c := range []struct {
		p     *lab.Pod
		label string
	}{{server, "role=server"}, {remote, "role=client"}, {local, "role=client"}, {blocked, "role=client"}, {outsider, "role=client"}} {
		wep, err := c.p.WorkloadEndpoint()
		if err != nil {
			t.Fatal(err)
		}
		tortiectl(t, l.Node(c.p.Node), nil, "label", "workloadendpoint", wep, c.label)
	}
	applyPolicy(t, n1, policyManifest(blocked.Address+"/32", tcpAllowed))
	serverKey := "default/" + server.Name
	serverAddr := func(port int) string { return fmt.Sprintf("%s:%d", server.Address, port) }
	// In force on both nodes: the server's ingress on n2, the remote
	// client's egress on n1.
	waitPolicy(t, n2, api.TraceRequest{From: remote.Address, To: serverKey, Proto: "tcp", Port: tcpAllowed}, "server allows 8080",
		func(tr api.Trace) bool { return decided(tr.Ingress, "Allow", "rule", "default", "default/server", 0) })
	waitPolicy(t, n2, api.TraceRequest{From: blocked.Address, To: serverKey, Proto: "tcp", Port: tcpAllowed}, "blocked set denies",
		func(tr api.Trace) bool { return decided(tr.Ingress, "Deny", "rule", "platform", "platform.guard", 1) })
	waitPolicy(t, n2, api.TraceRequest{From: outsider.Address, To: serverKey, Proto: "tcp", Port: tcpAllowed}, "other namespace denied",
		func(tr api.Trace) bool { return decided(tr.Ingress, "Deny", "end of tier", "default", "", -1) })
	waitPolicy(t, n1, api.TraceRequest{From: "default/" + remote.Name, To: server.Address, Proto: "tcp", Port: tcpAllowed}, "client egress",
		func(tr api.Trace) bool { return decided(tr.Egress, "Allow", "rule", "default", "default/client", 0) })

	// Connections kept open across the policy changes below.
	established := map[string]net.Conn{}
	t.Cleanup(func() {
		for _, c := range established {
			c.Close()
		}
	})

	for _, client := range []*lab.Pod{remote, local} {
		where := "cross-node"
		cnode := n1
		if client.Node == server.Node {
			where, cnode = "same-node", n2
		}
		t.Run(where, func(t *testing.T) {
			// Allowed: data both ways, though neither end's policy
			// allows the replies.
			t.Run("tcp-allowed", func(t *testing.T) {
				c, err := dialFrom(client, serverAddr(tcpAllowed), 5*time.Second)
				if err != nil {
					t.Fatalf("%s -> %s: %v", client.Name, serverAddr(tcpAllowed), err)
				}
				established[client.Name] = c
				blob := strings.Repeat("0123456789abcdef", 4096) // 64 KiB each way
				got, err := echo(c, blob, 10*time.Second)
				if err != nil || got != server.Name+" "+blob {
					t.Fatalf("echo over the allowed connection: %d bytes back, %v", len(got), err)
				}
				if srv.saw(client.Address, tcpAllowed) == 0 {
					t.Error("the server did not record the connection")
				}
				// tortiectl trace says what happened, from the real socket:
				// the server's node judges the server's ingress, the
				// client's node the client's egress.
				from := client.Address
				if cnode == n2 {
					from = "default/" + client.Name
				}
				tr := trace(t, n2, from, serverKey, "tcp", tcpAllowed)
				if tr.Verdict != "forward" || !decided(tr.Ingress, "Allow", "rule", "default", "default/server", 0) {
					t.Errorf("trace on %s: verdict %s, ingress %+v", n2.Name, tr.Verdict, tr.Ingress)
				}
				tr = trace(t, cnode, "default/"+client.Name, server.Address, "tcp", tcpAllowed)
				if tr.Verdict != "forward" || !decided(tr.Egress, "Allow", "rule", "default", "default/client", 0) {
					t.Errorf("trace on %s: verdict %s, egress %+v", cnode.Name, tr.Verdict, tr.Egress)
				}
				// tortiectl flows lists the connection as allowed, on both
				// nodes it crossed.
				src := netip.MustParseAddrPort(c.LocalAddr().String())
				dst := netip.MustParseAddrPort(c.RemoteAddr().String())
				nodes := []*lab.Node{n2}
				if cnode != n2 {
					nodes = append(nodes, cnode)
				}
				for _, n := range nodes {
					f, ok := findFlow(t, n, "tcp", src, dst)
					if !ok || !hasFlag(f, "policyAllowed") || f.State != "established" || f.PolicyGen == 0 {
						t.Errorf("flows on %s: %v -> %v: %+v (found %v), want established, policyAllowed", n.Name, src, dst, f, ok)
					}
				}
			})
			// Denied: the SYN gets nothing, the server never sees it, and
			// the server's node counts it against the default tier's end.
			t.Run("tcp-denied", func(t *testing.T) {
				before := readPolicyCounters(t, n2)
				metricBefore := metric(t, n2, `tortie_policy_denied_by_total{decider="end of tier",policy="",tier="default"}`)
				c, err := dialFrom(client, serverAddr(tcpDenied), deniedWait)
				if err == nil {
					c.Close()
					t.Fatalf("%s -> %s connected; policy denies it", client.Name, serverAddr(tcpDenied))
				}
				if !isTimeout(err) {
					t.Fatalf("%s -> %s: %v, want a timeout (a denied SYN is dropped, not refused)", client.Name, serverAddr(tcpDenied), err)
				}
				if n := srv.saw(client.Address, tcpDenied); n != 0 {
					t.Fatalf("the server accepted %d connection(s) policy denies", n)
				}
				after := readPolicyCounters(t, n2)
				if after.dropped <= before.dropped {
					t.Errorf("drops policy_denied on %s: %d then %d", n2.Name, before.dropped, after.dropped)
				}
				if k := "end of tier/default/"; after.byPolicy[k] <= before.byPolicy[k] {
					t.Errorf("denied by %q: %d then %d (all: %v)", k, before.byPolicy[k], after.byPolicy[k], after.byPolicy)
				}
				if after.byEndpoint[serverKey] <= before.byEndpoint[serverKey] {
					t.Errorf("denied at %s: %d then %d", serverKey, before.byEndpoint[serverKey], after.byEndpoint[serverKey])
				}
				if m := metric(t, n2, `tortie_policy_denied_by_total{decider="end of tier",policy="",tier="default"}`); m <= metricBefore {
					t.Errorf("tortie_policy_denied_by_total for the default tier's end: %v then %v", metricBefore, m)
				}
				from := client.Address
				if cnode == n2 {
					from = "default/" + client.Name
				}
				tr := trace(t, n2, from, serverKey, "tcp", tcpDenied)
				if tr.Verdict != "drop" || !decided(tr.Ingress, "Deny", "end of tier", "default", "", -1) {
					t.Errorf("trace of the denied flow: verdict %s, ingress %+v", tr.Verdict, tr.Ingress)
				}
			})
			t.Run("udp", func(t *testing.T) {
				// Allowed: the reply comes back.
				got, err := udpAsk(udpFrom(t, client, serverAddr(udpEcho)), "hello", 5*time.Second)
				if err != nil || got != server.Name+" hello" {
					t.Fatalf("UDP to %s: %q, %v", serverAddr(udpEcho), got, err)
				}
				// Allowed, nobody listens: the server's ICMP port
				// unreachable, which the server's egress policy does not
				// allow, reaches the client as part of the flow.
				if _, err := udpAsk(udpFrom(t, client, serverAddr(udpClosed)), "anyone?", 5*time.Second); !errors.Is(err, syscall.ECONNREFUSED) {
					t.Fatalf("UDP to %s where nothing listens: %v, want ECONNREFUSED", serverAddr(udpClosed), err)
				}
				// Not allowed, nobody listens: no datagram reaches the
				// server, so no ICMP error comes back either.
				if got, err := udpAsk(udpFrom(t, client, serverAddr(udpOther)), "anyone?", deniedWait); !isTimeout(err) {
					t.Fatalf("UDP to %s (denied): %q, %v; want nothing back", serverAddr(udpOther), got, err)
				}
			})
		})
	}

	// The GlobalNetworkSet in the platform tier: a client whose address is
	// in it is denied there, before the default tier would allow it.
	t.Run("blocked-set", func(t *testing.T) {
		before := readPolicyCounters(t, n2)
		if c, err := dialFrom(blocked, serverAddr(tcpAllowed), deniedWait); err == nil || !isTimeout(err) {
			if c != nil {
				c.Close()
			}
			t.Fatalf("%s (in the blocked set) -> %s: %v, want a timeout", blocked.Name, serverAddr(tcpAllowed), err)
		}
		if srv.saw(blocked.Address, tcpAllowed) != 0 {
			t.Fatal("the server accepted a blocked client")
		}
		after := readPolicyCounters(t, n2)
		if k := "rule/platform/platform.guard"; after.byPolicy[k] <= before.byPolicy[k] {
			t.Errorf("denied by %q: %d then %d", k, before.byPolicy[k], after.byPolicy[k])
		}
		tr := trace(t, n2, blocked.Address, serverKey, "tcp", tcpAllowed)
		if tr.Verdict != "drop" || !decided(tr.Ingress, "Deny", "rule", "platform", "platform.guard", 1) {
			t.Errorf("trace: verdict %s, ingress %+v", tr.Verdict, tr.Ingress)
		}
	})
	// The namespaced policy's selector names its own namespace's pods.
	t.Run("other-namespace", func(t *testing.T) {
		if c, err := dialFrom(outsider, serverAddr(tcpAllowed), deniedWait); err == nil || !isTimeout(err) {
			if c != nil {
				c.Close()
			}
			t.Fatalf("other/%s -> %s: %v, want a timeout", outsider.Name, serverAddr(tcpAllowed), err)
		}
		if srv.saw(outsider.Address, tcpAllowed) != 0 {
			t.Fatal("the server accepted a client of another namespace")
		}
	})
	// Replies pass; the server's own new connections do not: its egress is
	// isolated.
	t.Run("server-egress", func(t *testing.T) {
		if c, err := dialFrom(server, fmt.Sprintf("%s:%d", remote.Address, tcpAllowed), deniedWait); err == nil || !isTimeout(err) {
			if c != nil {
				c.Close()
			}
			t.Fatalf("server -> client: %v, want a timeout", err)
		}
		tr := trace(t, n2, serverKey, remote.Address, "tcp", tcpAllowed)
		if tr.Verdict != "drop" || !decided(tr.Egress, "Deny", "end of tier", "default", "", -1) {
			t.Errorf("trace: verdict %s, egress %+v", tr.Verdict, tr.Egress)
		}
	})
	// The Log rule: tortied logs every new flow to the server port with the
	// verdict it ended in (the Log rule marks it and evaluation goes on).
	t.Run("log-rule", func(t *testing.T) {
		waitLog(t, n2, `"msg":"policy log"`, `"endpoint":"`+serverKey+`"`, `"direction":"Ingress"`, `"action":"Allow"`,
			`"policy":"default/server"`, `"rule":0`, `"src":"`+remote.Address+`"`, fmt.Sprintf(`"dstPort":%d`, tcpAllowed))
		waitLog(t, n2, `"msg":"policy log"`, `"action":"Deny"`, `"tier":"platform"`, `"policy":"platform.guard"`, `"rule":1`,
			`"src":"`+blocked.Address+`"`)
		if s, err := api.NewClient(n2.Socket).Counters(); err != nil || s.Policy.Logged < 2 {
			t.Errorf("Log records written: %+v, %v", s.Policy, err)
		}
	})

	// A policy change: new flows follow it at once; an established flow
	// follows it at its next packet (each install is a new generation, and
	// a flow judged under an older one is judged again): it stalls while
	// denied and carries on, unreset, once allowed again.
	t.Run("change", func(t *testing.T) {
		if len(established) != 2 {
			t.Fatalf("%d established connections, want 2: the allowed subtests failed", len(established))
		}
		stillEchoes := func(when string) {
			t.Helper()
			for name, c := range established {
				if got, err := echo(c, "still there "+when, 5*time.Second); err != nil || got != server.Name+" still there "+when {
					t.Errorf("%s's established connection %s: %q, %v", name, when, got, err)
				}
			}
		}
		// 1. Open tcpDenied as well: a new connection there works, the
		// established ones carry on.
		applyPolicy(t, n1, policyManifest(blocked.Address+"/32", tcpAllowed, tcpDenied))
		waitPolicy(t, n2, api.TraceRequest{From: remote.Address, To: serverKey, Proto: "tcp", Port: tcpDenied}, "8081 allowed",
			func(tr api.Trace) bool { return decided(tr.Ingress, "Allow", "rule", "default", "default/server", 0) })
		c, err := dialFrom(remote, serverAddr(tcpDenied), 5*time.Second)
		if err != nil {
			t.Fatalf("new connection to the newly allowed port: %v", err)
		}
		defer c.Close()
		if got, err := echo(c, "new", 5*time.Second); err != nil || got != server.Name+" new" {
			t.Fatalf("new connection to the newly allowed port: %q, %v", got, err)
		}
		stillEchoes("after a change that keeps them allowed")

		// 2. Close tcpAllowed: a new connection there is denied, and so
		// are the established ones' next packets.
		applyPolicy(t, n1, policyManifest(blocked.Address+"/32", tcpDenied))
		waitPolicy(t, n2, api.TraceRequest{From: remote.Address, To: serverKey, Proto: "tcp", Port: tcpAllowed}, "8080 denied",
			func(tr api.Trace) bool { return decided(tr.Ingress, "Deny", "end of tier", "default", "", -1) })
		before := readPolicyCounters(t, n2)
		if c, err := dialFrom(remote, serverAddr(tcpAllowed), deniedWait); err == nil || !isTimeout(err) {
			if c != nil {
				c.Close()
			}
			t.Fatalf("new connection to the closed port: %v, want a timeout", err)
		}
		for name, c := range established {
			_ = c.SetDeadline(time.Now().Add(deniedWait))
			if _, err := io.WriteString(c, "denied now\n"); err != nil {
				t.Fatalf("%s: write: %v", name, err)
			}
			if b, err := bufio.NewReader(c).ReadString('\n'); !isTimeout(err) {
				t.Fatalf("%s's established connection after its port was closed: %q, %v; want no answer", name, b, err)
			}
			_ = c.SetDeadline(time.Time{})
		}
		// The router judged the established flows again under the new
		// policy: the Log rule's records say so, with their ports.
		for _, c := range established {
			src := netip.MustParseAddrPort(c.LocalAddr().String())
			waitLog(t, n2, `"msg":"policy log"`, `"action":"Deny"`, `"decider":"end of tier"`, `"src":"`+src.Addr().String()+`"`,
				fmt.Sprintf(`"srcPort":%d,`, src.Port()))
		}
		after := readPolicyCounters(t, n2)
		if after.dropped <= before.dropped || after.byEndpoint[serverKey] <= before.byEndpoint[serverKey] {
			t.Errorf("denied packets on %s: %d then %d (at %s: %d then %d)", n2.Name, before.dropped, after.dropped,
				serverKey, before.byEndpoint[serverKey], after.byEndpoint[serverKey])
		}
		// The connection opened under the second policy is unaffected.
		if got, err := echo(c, "unaffected", 5*time.Second); err != nil || got != server.Name+" unaffected" {
			t.Errorf("connection to the still allowed port: %q, %v", got, err)
		}

		// 3. Open tcpAllowed again: the stalled connections' retransmitted
		// lines get through and are answered; nothing was reset.
		applyPolicy(t, n1, policyManifest(blocked.Address+"/32", tcpAllowed, tcpDenied))
		waitPolicy(t, n2, api.TraceRequest{From: remote.Address, To: serverKey, Proto: "tcp", Port: tcpAllowed}, "8080 allowed again",
			func(tr api.Trace) bool { return decided(tr.Ingress, "Allow", "rule", "default", "default/server", 0) })
		for name, c := range established {
			// TCP retransmits with backoff: within seconds of the change.
			_ = c.SetDeadline(time.Now().Add(30 * time.Second))
			if got, err := bufio.NewReader(c).ReadString('\n'); err != nil || got != server.Name+" denied now\n" {
				t.Fatalf("%s's stalled connection after its port reopened: %q, %v", name, got, err)
			}
			_ = c.SetDeadline(time.Time{})
		}
		stillEchoes("after reopening")
	})
}
