package test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/tortie-net/tortie/api"
	"github.com/tortie-net/tortie/cni"
	"github.com/tortie-net/tortie/internal/labtest"
	"github.com/tortie-net/tortie/internal/testutil"
	"github.com/tortie-net/tortie/lab"
)

func newPod(t *testing.T, name string) *lab.Pod {
	ns := testutil.Netns(t)
	return &lab.Pod{Name: name, Netns: ns, ContainerID: uniqueID(ns)}
}

// uniqueID makes a container ID as runtimes do: 64 hex digits that differ
// from the first ones on.
func uniqueID(seed string) string {
	sum := sha256.Sum256([]byte(seed))
	return hex.EncodeToString(sum[:])
}

func handles(t *testing.T, n *lab.Node) map[string]string {
	t.Helper()
	v, err := api.NewClient(n.Socket).IPAM()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, h := range v.Handles {
		out[h.ID] = h.IPs[0]
	}
	return out
}

// TestCNIConformance drives the real tortie-cni through libcni for every
// supported spec version: ADD (result shape, reachability), CHECK (passes,
// then fails when the pod's routes are broken), DEL twice, STATUS and GC.
func TestCNIConformance(t *testing.T) {
	l := up(t, lab.Options{Name: "tn1", Nodes: 1, Pods: 0, Mode: "vxlan"})
	n1 := l.Nodes[0]
	cn := l.CNI()
	ctx := context.Background()
	for _, v := range []string{"0.4.0", "1.0.0", "1.1.0"} {
		t.Run(v, func(t *testing.T) {
			list, err := l.ConfList(n1, v)
			if err != nil {
				t.Fatal(err)
			}
			p := newPod(t, "conf")
			res, err := cn.AddNetworkList(ctx, list, p.Runtime())
			if err != nil {
				t.Fatalf("ADD: %v", err)
			}
			if res.Version() != v {
				t.Fatalf("result version %s, want %s", res.Version(), v)
			}
			r, err := current.NewResultFromResult(res)
			if err != nil {
				t.Fatal(err)
			}
			if len(r.Interfaces) != 1 || r.Interfaces[0].Name != "eth0" || r.Interfaces[0].Sandbox != "/var/run/netns/"+p.Netns ||
				len(r.IPs) != 1 || r.IPs[0].Gateway.String() != "169.254.1.1" || len(r.Routes) != 1 {
				t.Fatalf("result %s", res)
			}
			ip := r.IPs[0].Address
			if ones, _ := ip.Mask.Size(); ones != 32 || !netip.MustParsePrefix("10.244.0.0/16").Contains(netip.MustParseAddr(ip.IP.String())) {
				t.Fatalf("address %v is not a /32 from the pool", ip)
			}
			if out, err := exec.Command("ip", "netns", "exec", n1.Netns, "ping", "-c", "1", "-W", "2", ip.IP.String()).CombinedOutput(); err != nil {
				t.Fatalf("node cannot reach the new pod: %s", out)
			}
			if h := handles(t, n1)[lab.NetworkName+"."+p.ContainerID]; h != ip.IP.String() {
				t.Fatalf("IPAM handle holds %q", h)
			}
			// The pod's endpoint is named as Calico names its WorkloadEndpoint.
			wep, err := cni.WorkloadEndpointName(n1.Name, p.Name, "eth0")
			if err != nil {
				t.Fatal(err)
			}
			eps, err := api.NewClient(n1.Socket).Endpoints()
			if i := slices.IndexFunc(eps, func(e api.EndpointInfo) bool { return e.ContainerID == p.ContainerID }); err != nil || i < 0 ||
				eps[i].Name != wep || eps[i].PodNamespace != "default" {
				t.Fatalf("endpoints %+v (%v), want %s in default for the pod", eps, err, wep)
			}
			// ADD again for the same container: same answer.
			res2, err := cn.AddNetworkList(ctx, list, p.Runtime())
			if err != nil {
				t.Fatal(err)
			}
			if r2, _ := current.NewResultFromResult(res2); r2.IPs[0].Address.String() != ip.String() {
				t.Fatalf("repeated ADD gave %v", r2.IPs[0].Address)
			}
			if err := cn.CheckNetworkList(ctx, list, p.Runtime()); err != nil {
				t.Fatalf("CHECK of a healthy pod: %v", err)
			}
			testutil.Run(t, "ip", "-n", p.Netns, "route", "del", "default")
			err = cn.CheckNetworkList(ctx, list, p.Runtime())
			if err == nil || !strings.Contains(err.Error(), "default route via 169.254.1.1 missing") {
				t.Fatalf("CHECK of a broken pod: %v", err)
			}
			if v == "1.1.0" {
				if err := cn.GetStatusNetworkList(ctx, list); err != nil {
					t.Fatalf("STATUS: %v", err)
				}
			}
			for i := 0; i < 2; i++ {
				// The first DEL does not say which pod: the endpoint is
				// found by container, not by the pod's name.
				rt := p.Runtime()
				if i == 0 {
					rt.Args = nil
				}
				if err := cn.DelNetworkList(ctx, list, rt); err != nil {
					t.Fatalf("DEL #%d: %v", i+1, err)
				}
			}
			if out, _ := exec.Command("ip", "-n", p.Netns, "link", "show", "eth0").CombinedOutput(); !strings.Contains(string(out), "does not exist") {
				t.Fatalf("eth0 survived DEL: %s", out)
			}
			if _, ok := handles(t, n1)[lab.NetworkName+"."+p.ContainerID]; ok {
				t.Fatal("DEL left the IPAM handle")
			}
		})
	}
	t.Run("gc", func(t *testing.T) {
		list, _ := l.ConfList(n1, "1.1.0")
		keep, drop := newPod(t, "keep"), newPod(t, "drop")
		for _, p := range []*lab.Pod{keep, drop} {
			if _, err := cn.AddNetworkList(ctx, list, p.Runtime()); err != nil {
				t.Fatal(err)
			}
		}
		err := cn.GCNetworkList(ctx, list, &libcni.GCArgs{ValidAttachments: []types.GCAttachment{{ContainerID: keep.ContainerID, IfName: "eth0"}}})
		if err != nil {
			t.Fatal(err)
		}
		hs := handles(t, n1)
		if _, ok := hs[lab.NetworkName+"."+keep.ContainerID]; !ok {
			t.Fatal("GC removed a valid attachment")
		}
		if _, ok := hs[lab.NetworkName+"."+drop.ContainerID]; ok {
			t.Fatal("GC kept an attachment not in the list")
		}
		if err := cn.CheckNetworkList(ctx, list, keep.Runtime()); err != nil {
			t.Fatal(err)
		}
	})
}

// plugin runs tortie-cni directly with an environment and stdin, and
// returns its CNI error (nil on success).
func plugin(t *testing.T, env map[string]string, conf string) (*types.Error, string) {
	t.Helper()
	cmd := exec.Command(filepath.Join(labtest.BinDir, "tortie-cni"))
	cmd.Env = []string{"CNI_PATH=" + labtest.BinDir}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	cmd.Stdin = strings.NewReader(conf)
	var stdout bytes.Buffer
	cmd.Stdout = &stdout
	err := cmd.Run()
	if err == nil {
		return nil, stdout.String()
	}
	var e types.Error
	if jerr := json.Unmarshal(stdout.Bytes(), &e); jerr != nil {
		t.Fatalf("plugin failed without CNI error JSON on stdout: %v: %q", err, stdout.String())
	}
	return &e, stdout.String()
}

// TestCNIErrors: bad input and failures give the CNI error code for them
// and a message that says what is wrong; a failed ADD leaves nothing.
func TestCNIErrors(t *testing.T) {
	// Log level info, for the startup line checked below.
	l := up(t, lab.Options{Name: "tn2", Nodes: 1, Pods: 0, Mode: "vxlan", LogLevel: "info"})
	n1 := l.Nodes[0]
	// A datastore node's startup log does not claim the static
	// encapsulation: it is per IP pool.
	var running string
	testutil.WaitFor(t, 10*time.Second, "the startup log line", func() bool {
		b, _ := os.ReadFile(n1.Log)
		for _, line := range strings.Split(string(b), "\n") {
			if strings.Contains(line, `"tortied running"`) {
				running = line
			}
		}
		return running != ""
	})
	if !strings.Contains(running, `"mode":"per IP pool"`) || !strings.Contains(running, `"routeSource":"datastore"`) {
		t.Errorf("startup log: %s", running)
	}
	pod := testutil.Netns(t)
	conf := func(extra string) string {
		return fmt.Sprintf(`{"cniVersion":"1.1.0","name":"k8s-pod-network","type":"tortie","socket":%q%s}`, n1.Socket, extra)
	}
	env := func(cmd string, kv ...string) map[string]string {
		m := map[string]string{"CNI_COMMAND": cmd, "CNI_CONTAINERID": "c0ffee", "CNI_NETNS": "/var/run/netns/" + pod, "CNI_IFNAME": "eth0"}
		for i := 0; i+1 < len(kv); i += 2 {
			if kv[i+1] == "" {
				delete(m, kv[i])
			} else {
				m[kv[i]] = kv[i+1]
			}
		}
		return m
	}
	cases := []struct {
		name string
		env  map[string]string
		conf string
		code uint
		msg  string
	}{
		{"bad json", env("ADD"), "{nope", types.ErrDecodingFailure, "network config"},
		{"unsupported version", env("ADD"), `{"cniVersion":"0.1.0","name":"n","type":"tortie"}`, types.ErrIncompatibleCNIVersion, "0.1.0"},
		{"missing netns", env("ADD", "CNI_NETNS", ""), conf(""), types.ErrInvalidEnvironmentVariables, "CNI_NETNS"},
		{"bad ifname", env("ADD", "CNI_IFNAME", "a/b"), conf(""), types.ErrInvalidEnvironmentVariables, "interface name"},
		{"no name", env("ADD"), `{"cniVersion":"1.1.0","type":"tortie"}`, types.ErrInvalidNetworkConfig, "name"},
		{"daemon unreachable", env("ADD"), `{"cniVersion":"1.1.0","name":"n","type":"tortie","socket":"/nonexistent.sock"}`, types.ErrTryAgainLater, "not reachable"},
		{"status, daemon unreachable", env("STATUS"), `{"cniVersion":"1.1.0","name":"n","type":"tortie","socket":"/nonexistent.sock"}`, types.ErrPluginNotAvailable, "not reachable"},
		{"no such pool", env("ADD"), conf(`,"ipam":{"pools":["nope"]}`), types.ErrInvalidNetworkConfig, `IP pool "nope" does not exist`},
		{"no such pool, calico's key", env("ADD"), conf(`,"ipam":{"type":"calico-ipam","ipv4_pools":["elsewhere"]}`),
			types.ErrInvalidNetworkConfig, `IP pool "elsewhere" does not exist`},
		{"field of the wrong type", env("ADD"), conf(`,"mtu":"1400"`), types.ErrInvalidNetworkConfig, `field "mtu": got a JSON string, want an integer`},
		{"unsupported ipam type", env("ADD"), conf(`,"ipam":{"type":"host-local","subnet":"10.9.0.0/24"}`),
			types.ErrInvalidNetworkConfig, `ipam.type "host-local" is not supported`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e, out := plugin(t, c.env, c.conf)
			if e == nil {
				t.Fatalf("succeeded: %s", out)
			}
			if e.Code != c.code || !strings.Contains(e.Msg+e.Details, c.msg) {
				t.Fatalf("error %d %q (%q), want %d containing %q", e.Code, e.Msg, e.Details, c.code, c.msg)
			}
		})
	}
	// Pool exhaustion: a 4-address pool, named with calico-ipam's key.
	if _, err := api.NewClient(n1.Socket).Apply("apiVersion: tortie.io/v1\nkind: IPPool\nmetadata: {name: tiny}\nspec: {cidr: 10.245.0.0/30, blockSize: 30}\n"); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 5; i++ {
		ns := testutil.Netns(t)
		e, _ := plugin(t, env("ADD", "CNI_NETNS", "/var/run/netns/"+ns, "CNI_CONTAINERID", fmt.Sprint("tiny", i)), conf(`,"ipam":{"type":"calico-ipam","ipv4_pools":["tiny"]}`))
		if i < 4 && e != nil {
			t.Fatalf("ADD %d in the tiny pool: %v", i, e)
		}
		if i == 4 && (e == nil || e.Code != 100 || !strings.Contains(e.Msg, "no free address")) {
			t.Fatalf("exhausted pool: %+v", e)
		}
	}
	// Counted by name: the node's own tunnel address may get its handle
	// meanwhile.
	tiny := 0
	for h := range handles(t, n1) {
		if strings.HasPrefix(h, lab.NetworkName+".tiny") {
			tiny++
		}
	}
	if tiny != 4 {
		t.Fatalf("%d handles of the tiny pool's containers after exhaustion, want 4", tiny)
	}
	// ADD that fails half-way (eth0 already exists as something else) rolls back.
	testutil.Run(t, "ip", "-n", pod, "link", "add", "eth0", "type", "veth", "peer", "name", "other")
	e, _ := plugin(t, env("ADD", "CNI_CONTAINERID", "halfway"), conf(""))
	if e == nil || e.Code != 5 || !strings.Contains(e.Msg, "released") {
		t.Fatalf("half-way ADD: %+v", e)
	}
	if _, ok := handles(t, n1)[lab.NetworkName+".halfway"]; ok {
		t.Fatal("the address of a failed ADD was not released")
	}
	// DEL for an unknown container, and DEL after the netns is gone: success.
	if e, _ := plugin(t, env("DEL", "CNI_CONTAINERID", "never-added"), conf("")); e != nil {
		t.Fatalf("DEL of an unknown container: %+v", e)
	}
	gone := testutil.Netns(t)
	if e, _ := plugin(t, env("ADD", "CNI_NETNS", "/var/run/netns/"+gone, "CNI_CONTAINERID", "gone"), conf("")); e != nil {
		t.Fatal(e)
	}
	testutil.Run(t, "ip", "netns", "del", gone)
	if e, _ := plugin(t, env("DEL", "CNI_NETNS", "/var/run/netns/"+gone, "CNI_CONTAINERID", "gone"), conf("")); e != nil {
		t.Fatalf("DEL after the netns is gone: %+v", e)
	}
	if _, ok := handles(t, n1)[lab.NetworkName+".gone"]; ok {
		t.Fatal("DEL after the netns is gone kept the address")
	}
	// VERSION lists what we implement.
	_, out := plugin(t, map[string]string{"CNI_COMMAND": "VERSION"}, `{"cniVersion":"1.1.0"}`)
	for _, v := range []string{"0.4.0", "1.0.0", "1.1.0"} {
		if !strings.Contains(out, v) {
			t.Errorf("VERSION lacks %s: %s", v, out)
		}
	}
}

// TestCnitool: the CNI project's own command-line client, every version.
func TestCnitool(t *testing.T) {
	l := up(t, lab.Options{Name: "tn3", Nodes: 1, Pods: 0, Mode: "ipip"})
	for _, v := range []string{"0.4.0", "1.0.0", "1.1.0"} {
		t.Run(v, func(t *testing.T) {
			dir := t.TempDir()
			list := fmt.Sprintf(`{"cniVersion":%q,"name":"k8s-pod-network","plugins":[{"type":"tortie","socket":%q}]}`, v, l.Nodes[0].Socket)
			if err := os.WriteFile(filepath.Join(dir, "10-tortie.conflist"), []byte(list), 0o644); err != nil {
				t.Fatal(err)
			}
			pod := testutil.Netns(t)
			tool := func(args ...string) (string, error) {
				c := exec.Command(filepath.Join(labtest.BinDir, "cnitool"), args...)
				c.Env = append(os.Environ(), "CNI_PATH="+l.CNIPath, "NETCONFPATH="+dir, "CNI_ARGS=K8S_POD_NAMESPACE=default;K8S_POD_NAME=tool")
				out, err := c.CombinedOutput()
				return string(out), err
			}
			out, err := tool("add", "k8s-pod-network", "/var/run/netns/"+pod)
			if err != nil || !strings.Contains(out, `"cniVersion": "`+v+`"`) || !strings.Contains(out, "169.254.1.1") {
				t.Fatalf("cnitool add: %v\n%s", err, out)
			}
			if out, err := tool("check", "k8s-pod-network", "/var/run/netns/"+pod); err != nil {
				t.Fatalf("cnitool check: %v\n%s", err, out)
			}
			for i := 0; i < 2; i++ {
				if out, err := tool("del", "k8s-pod-network", "/var/run/netns/"+pod); err != nil {
					t.Fatalf("cnitool del: %v\n%s", err, out)
				}
			}
		})
	}
}

// TestConcurrentAdds: 200 ADDs at once across three nodes: no address
// twice, every handle recorded; DEL of all leaves every block empty.
func TestConcurrentAdds(t *testing.T) {
	l := up(t, lab.Options{Name: "tn4", Nodes: 3, Pods: 0, Mode: "vxlan"})
	const n = 200
	pods := make([]*lab.Pod, n)
	for i := range pods {
		pods[i] = &lab.Pod{Name: fmt.Sprint("c", i), Netns: testutil.Netns(t), Node: l.Nodes[i%3].Name}
		pods[i].ContainerID = uniqueID(pods[i].Netns)
	}
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for _, p := range pods {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := l.AddPodCNI(ctx, l.Node(p.Node), p); err != nil {
				errs <- fmt.Errorf("%s on %s: %w", p.Name, p.Node, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		return
	}
	seen := map[string]string{}
	for _, p := range pods {
		if other, dup := seen[p.Address]; dup {
			t.Errorf("%s given to %s and %s", p.Address, other, p.Name)
		}
		seen[p.Address] = p.Name
	}
	hs := handles(t, l.Nodes[0])
	for _, p := range pods {
		if hs[lab.NetworkName+"."+p.ContainerID] != p.Address {
			t.Errorf("handle of %s holds %q, want %s", p.Name, hs[lab.NetworkName+"."+p.ContainerID], p.Address)
		}
	}
	// A sample of pods is reachable across nodes.
	for _, i := range []int{0, 1, 2, 100, 199} {
		ping(t, l, "n1", pods[i].Address)
	}
	for _, p := range pods {
		wg.Add(1)
		go func() {
			defer wg.Done()
			list, _ := l.ConfList(l.Node(p.Node), "1.1.0")
			if err := l.CNI().DelNetworkList(ctx, list, p.Runtime()); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	v, err := api.NewClient(l.Nodes[0].Socket).IPAM()
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range v.Blocks {
		for i, a := range b.Allocs {
			if a.Handle != "" && !strings.HasPrefix(a.Handle, "tortie-tunnel-addr-") {
				t.Errorf("block %s ordinal %d still held by %s", b.CIDR, i, a.Handle)
			}
		}
	}
}

// TestBorrowing: a node whose pool has no free block borrows one address
// from another node's block; the borrowed pod is reachable from every node
// and pod, routed as a /32 via the borrower.
func TestBorrowing(t *testing.T) {
	l := up(t, lab.Options{Name: "tn5", Nodes: 3, Pods: 1, Mode: "vxlan"})
	n1, n2 := l.Nodes[0], l.Nodes[1]
	if _, err := api.NewClient(n1.Socket).Apply("apiVersion: tortie.io/v1\nkind: IPPool\nmetadata: {name: small}\nspec: {cidr: 10.246.0.0/29, blockSize: 30, vxlanMode: Always}\n"); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	add := func(n *lab.Node, name string) *lab.Pod {
		p := newPod(t, name)
		p.Node = n.Name
		b, _ := json.Marshal(map[string]any{"cniVersion": "1.1.0", "name": lab.NetworkName,
			"plugins": []any{map[string]any{"type": "tortie", "socket": n.Socket, "ipam": map[string]any{"pools": []string{"small"}}}}})
		list, _ := libcni.NetworkConfFromBytes(b)
		res, err := l.CNI().AddNetworkList(ctx, list, p.Runtime())
		if err != nil {
			t.Fatalf("%s on %s: %v", name, n.Name, err)
		}
		r, _ := current.NewResultFromResult(res)
		p.Address = r.IPs[0].Address.IP.String()
		return p
	}
	for i := 0; i < 4; i++ {
		add(n1, fmt.Sprint("fill", i)) // n1's block of 4 is full
	}
	add(n2, "other") // n2 claims the only other block
	borrowed := add(n1, "borrower")
	if !netip.MustParsePrefix("10.246.0.4/30").Contains(netip.MustParseAddr(borrowed.Address)) {
		t.Fatalf("n1's fifth pod got %s, not an address borrowed from n2's block", borrowed.Address)
	}
	for _, n := range l.Nodes[1:] {
		testutil.WaitFor(t, 5*time.Second, n.Name+" routes the borrowed /32", func() bool {
			rs, _ := api.NewClient(n.Socket).Routes()
			for _, r := range rs {
				if r.Prefix == borrowed.Address+"/32" && r.NodeName == "n1" {
					return true
				}
			}
			return false
		})
	}
	for _, from := range []string{"n1", "n2", "n3", "n2p1", "n3p1"} {
		if out := ping(t, l, from, borrowed.Address); !strings.Contains(out, " 0% packet loss") {
			t.Errorf("%s cannot reach the borrowed address %s:\n%s", from, borrowed.Address, out)
		}
	}
}

// TestAddLatency prints how long CNI ADD takes end to end (runtime to
// result), one pod at a time. A figure, not a gate.
func TestAddLatency(t *testing.T) {
	l := up(t, lab.Options{Name: "tn6", Nodes: 1, Pods: 0, Mode: "vxlan"})
	var d []time.Duration
	for i := 0; i < 30; i++ {
		p := newPod(t, fmt.Sprint("lat", i))
		start := time.Now()
		if err := l.AddPodCNI(context.Background(), l.Nodes[0], p); err != nil {
			t.Fatal(err)
		}
		d = append(d, time.Since(start))
	}
	slices.Sort(d)
	t.Logf("CNI ADD latency over %d pods: p50 %v, p99 %v, max %v", len(d), d[len(d)/2], d[len(d)*99/100], d[len(d)-1])
}

// TestAddRightAfterNewPool takes addresses from pools created a moment
// before the ADD: ADD must not succeed before the node's kernel routes the
// new pool to tortie (a kubelet probes the pod right after ADD).
func TestAddRightAfterNewPool(t *testing.T) {
	l := up(t, lab.Options{Name: "tnp", Nodes: 1, Pods: 0, Mode: "vxlan"})
	n1 := l.Nodes[0]
	cn := l.CNI()
	for i := range 10 {
		name := fmt.Sprintf("fresh-%d", i)
		if err := l.Apply(fmt.Sprintf("apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: %s}\n"+
			"spec: {cidr: 10.%d.0.0/16, vxlanMode: Always}\n", name, 50+i)); err != nil {
			t.Fatal(err)
		}
		b, _ := json.Marshal(map[string]any{"cniVersion": "1.0.0", "name": lab.NetworkName,
			"plugins": []any{map[string]any{"type": "tortie", "socket": n1.Socket, "ipam": map[string]any{"pools": []string{name}}}}})
		list, err := libcni.NetworkConfFromBytes(b)
		if err != nil {
			t.Fatal(err)
		}
		p := newPod(t, name)
		res, err := cn.AddNetworkList(context.Background(), list, p.Runtime())
		if err != nil {
			t.Fatalf("ADD from the new pool %s: %v", name, err)
		}
		r, _ := current.NewResultFromResult(res)
		ip := r.IPs[0].Address.IP.String()
		if out, err := exec.Command("ip", "netns", "exec", n1.Netns, "ping", "-c", "1", "-W", "2", ip).CombinedOutput(); err != nil {
			t.Fatalf("ADD succeeded but the node cannot reach %s from pool %s: %s", ip, name, out)
		}
	}
}
