package k8s

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/tortie-net/tortie/api"
	"github.com/tortie-net/tortie/internal/npmatrix"
	"github.com/tortie-net/tortie/internal/testutil"
	"github.com/tortie-net/tortie/lab"
	"github.com/tortie-net/tortie/lab/images"
	"github.com/tortie-net/tortie/nsutil"
)

// The NetworkPolicy matrix: cyclonus' conformance cases replayed on a real
// cluster. testdata/np-matrix.json is written by policy/oracle (go test
// -run TestMatrixFile -update there), which computes cyclonus' verdicts;
// its types are mirrored here.

// npmatrix.Matrix is the matrix file.
func loadNPMatrix(t *testing.T) *npmatrix.Matrix {
	t.Helper()
	b, err := os.ReadFile("testdata/np-matrix.json")
	if err != nil {
		t.Fatal(err)
	}
	var m npmatrix.Matrix
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("testdata/np-matrix.json: %v", err)
	}
	if len(m.Cases) == 0 || len(m.Pods) == 0 || len(m.Ports) == 0 || len(m.Protocols) == 0 {
		t.Fatalf("testdata/np-matrix.json: no cases, pods, ports or protocols")
	}
	return &m
}

// Probing. Every probe runs in the test process: a socket opened inside
// the source pod's network namespace (nsutil), to the destination pod's
// address. A TCP probe is a connect (a denied SYN gets no answer); a UDP
// probe is a datagram the echo server answers with its payload.
const (
	probeTimeout = time.Second
	// All of a round's probes run at once: a denied probe costs the
	// whole timeout, and a round of cyclonus' 288 costs about one.
	probeParallel = 300
	// How long a step's probes may disagree with the expected verdicts
	// while policy reaches the nodes.
	npStepDeadline = 20 * time.Second
)

// npPod is a pod of the test, as the cluster runs it.
type npPod struct {
	ns, name, node string
	labels         map[string]string
	ip             netip.Addr
	netns          string // its network namespace, as a path on this host
}

func (p *npPod) key() string { return p.ns + "/" + p.name }

// npCell is one probe and what it should find.
type npCell struct {
	from, to *npPod
	port     int
	proto    string
	want     bool
}

func (c npCell) String() string {
	return fmt.Sprintf("%s -> %s %d/%s", c.from.key(), c.to.key(), c.port, c.proto)
}

// probe runs one probe: whether it was answered, and what happened.
func probe(from, to *npPod, port int, proto string) (bool, string) {
	addr := netip.AddrPortFrom(to.ip, uint16(port)).String()
	var conn net.Conn
	err := nsutil.Do(from.netns, func() error {
		var err error
		if proto == "TCP" {
			conn, err = net.DialTimeout("tcp", addr, probeTimeout)
		} else {
			conn, err = net.Dial("udp", addr)
		}
		return err
	})
	if err != nil {
		return false, probeError(err)
	}
	defer conn.Close()
	if proto == "TCP" {
		return true, "connected"
	}
	// The datagram again every quarter of the timeout: one lost on the
	// way is not a denial.
	payload := fmt.Sprintf("probe %s -> %s", from.key(), addr)
	deadline := time.Now().Add(probeTimeout)
	buf := make([]byte, 4096)
	for time.Now().Before(deadline) {
		if _, err := conn.Write([]byte(payload)); err != nil {
			return false, probeError(err)
		}
		wait := time.Now().Add(probeTimeout / 4)
		if wait.After(deadline) {
			wait = deadline
		}
		_ = conn.SetReadDeadline(wait)
		n, err := conn.Read(buf)
		if err == nil {
			var r struct{ Data string }
			if json.Unmarshal(buf[:n], &r) == nil && r.Data == payload {
				return true, "answered"
			}
			return false, fmt.Sprintf("unexpected answer %q", buf[:n])
		}
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			return false, probeError(err)
		}
	}
	return false, "timeout"
}

// probeError names a failed probe's cause briefly.
func probeError(err error) string {
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded):
		return "timeout"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "refused"
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH):
		return "unreachable"
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return "timeout"
	}
	return err.Error()
}

// probeAll runs every cell's probe, probeParallel at a time, and returns
// the cells whose result is not the one wanted, with what was seen.
func probeAll(cells []npCell) []string {
	got := make([]bool, len(cells))
	detail := make([]string, len(cells))
	sem := make(chan struct{}, probeParallel)
	var wg sync.WaitGroup
	for i, c := range cells {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			got[i], detail[i] = probe(c.from, c.to, c.port, c.proto)
			<-sem
		}()
	}
	wg.Wait()
	var diffs []string
	verdict := map[bool]string{true: "allowed", false: "denied"}
	for i, c := range cells {
		if got[i] != c.want {
			diffs = append(diffs, fmt.Sprintf("%v: want %s, got %s (%s)", c, verdict[c.want], verdict[got[i]], detail[i]))
		}
	}
	return diffs
}

// expectCells probes until every cell agrees in one round, or fails t
// once timeout has passed, listing the cells that disagreed last. It
// returns how many rounds it took and whether they came to agree.
func expectCells(t *testing.T, what string, cells []npCell, timeout time.Duration) (int, bool) {
	t.Helper()
	start := time.Now()
	deadline := start.Add(timeout)
	// Rounds at least this far apart: when a policy is late, rounds in
	// which nothing is denied take milliseconds.
	const pace = 200 * time.Millisecond
	for rounds := 1; ; rounds++ {
		began := time.Now()
		diffs := probeAll(cells)
		if len(diffs) == 0 {
			return rounds, true
		}
		if time.Now().After(deadline) {
			shown := diffs[:min(len(diffs), 40)]
			more := ""
			if len(diffs) > len(shown) {
				more = fmt.Sprintf("\n  ... and %d more", len(diffs)-len(shown))
			}
			t.Errorf("%s: %d of %d probes still disagree after %v (%d rounds):\n  %s%s",
				what, len(diffs), len(cells), time.Since(start).Round(time.Millisecond), rounds, strings.Join(shown, "\n  "), more)
			return rounds, false
		}
		if d := pace - time.Since(began); d > 0 {
			time.Sleep(d) // pacing between polls, not synchronisation
		}
	}
}

// npCluster is the cluster the policy tests run on, and what they put in
// it: namespaces (their labels as set, without the one Kubernetes adds),
// pods and the policies applied (namespace/name).
type npCluster struct {
	l        *lab.Lab
	cp       *lab.ControlPlane
	api      *npAPI
	dir      string
	ns       map[string]map[string]string
	pods     map[string]*npPod
	policies map[string]bool
	nextNode int
	// dirty: a failed step may have left policies the test does not
	// know of; the next case removes every policy.
	dirty bool
}

func (c *npCluster) kubectl(t *testing.T, timeout time.Duration, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	out, err := c.cp.Kubectl(ctx, args...)
	if err != nil {
		t.Fatalf("kubectl %s: %v", strings.Join(args, " "), err)
	}
	return out
}

// applyObjects writes objects as one List and applies it.
func (c *npCluster) applyObjects(t *testing.T, objs []any) {
	t.Helper()
	b, err := json.Marshal(map[string]any{"apiVersion": "v1", "kind": "List", "items": objs})
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.CreateTemp(c.dir, "apply-*.json")
	if err != nil {
		t.Fatal(err)
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	c.kubectl(t, time.Minute, "apply", "-f", f.Name())
}

// labelArgs are kubectl label's arguments that turn labels from into to
// (the label Kubernetes gives every namespace stays).
func labelArgs(from, to map[string]string) []string {
	var args []string
	for _, k := range slices.Sorted(maps.Keys(from)) {
		if _, ok := to[k]; !ok && k != "kubernetes.io/metadata.name" {
			args = append(args, k+"-")
		}
	}
	for _, k := range slices.Sorted(maps.Keys(to)) {
		if v, ok := from[k]; !ok || v != to[k] {
			args = append(args, k+"="+to[k])
		}
	}
	return args
}

func (c *npCluster) createNamespace(t *testing.T, name string, labels map[string]string) {
	t.Helper()
	c.applyObjects(t, []any{map[string]any{"apiVersion": "v1", "kind": "Namespace",
		"metadata": map[string]any{"name": name, "labels": labels}}})
	c.ns[name] = maps.Clone(labels)
}

func (c *npCluster) setNamespaceLabels(t *testing.T, name string, labels map[string]string) {
	t.Helper()
	if args := labelArgs(c.ns[name], labels); len(args) > 0 {
		c.kubectl(t, 30*time.Second, append([]string{"label", "--overwrite", "namespace", name}, args...)...)
	}
	c.ns[name] = maps.Clone(labels)
}

// deleteNamespace deletes a namespace and waits until it is gone, with
// its pods and policies.
func (c *npCluster) deleteNamespace(t *testing.T, name string) {
	t.Helper()
	c.kubectl(t, 3*time.Minute, "delete", "namespace", name, "--wait=true", "--timeout=150s")
	delete(c.ns, name)
	maps.DeleteFunc(c.pods, func(_ string, p *npPod) bool { return p.ns == name })
	maps.DeleteFunc(c.policies, func(k string, _ bool) bool { return strings.HasPrefix(k, name+"/") })
}

func (c *npCluster) setPodLabels(t *testing.T, ns, name string, labels map[string]string) {
	t.Helper()
	p := c.pods[ns+"/"+name]
	if p == nil {
		t.Fatalf("no pod %s/%s to label", ns, name)
	}
	if args := labelArgs(p.labels, labels); len(args) > 0 {
		c.kubectl(t, 30*time.Second, append([]string{"label", "--overwrite", "-n", ns, "pod", name}, args...)...)
	}
	p.labels = maps.Clone(labels)
}

func (c *npCluster) deletePod(t *testing.T, ns, name string) {
	t.Helper()
	c.kubectl(t, 2*time.Minute, "delete", "-n", ns, "pod", name, "--wait=true", "--timeout=90s")
	delete(c.pods, ns+"/"+name)
}

// npPodManifest is a pod as cyclonus' are: it serves TCP and UDP on 80 and
// 81 under the port names its cases use (serve-80-tcp, …), on a node of
// the test's choosing. The kubelet probes its readiness often, and gives
// up after two misses: a policy that stopped the kubelet's probes would
// soon show.
func npPodManifest(ns, name, node string, labels map[string]string) map[string]any {
	var ports []any
	for _, port := range []int{80, 81} {
		for _, proto := range []string{"TCP", "UDP"} {
			ports = append(ports, map[string]any{"name": fmt.Sprintf("serve-%d-%s", port, strings.ToLower(proto)),
				"containerPort": port, "protocol": proto})
		}
	}
	return map[string]any{
		"apiVersion": "v1", "kind": "Pod",
		"metadata": map[string]any{"name": name, "namespace": ns, "labels": labels},
		"spec": map[string]any{
			"nodeName":                      node,
			"terminationGracePeriodSeconds": 0,
			"containers": []any{map[string]any{
				"name": "echo", "image": images.Echo, "imagePullPolicy": "Never",
				"args":  []string{"--port", "80,81"},
				"ports": ports,
				"readinessProbe": map[string]any{"httpGet": map[string]any{"path": "/healthz", "port": 80},
					"periodSeconds": 1, "timeoutSeconds": 2, "failureThreshold": 2},
			}},
		},
	}
}

// createPods creates pods (namespace, name, labels), each on the next
// node in turn, and waits until all are Ready and attached: their
// addresses and network namespaces are read from tortied's endpoints.
func (c *npCluster) createPods(t *testing.T, refs []npmatrix.ObjectRef) {
	t.Helper()
	if len(refs) == 0 {
		return
	}
	var objs []any
	want := map[string]*npPod{}
	for _, r := range refs {
		node := c.l.Nodes[c.nextNode%len(c.l.Nodes)].Name
		c.nextNode++
		objs = append(objs, npPodManifest(r.Namespace, r.Name, node, r.Labels))
		want[r.Namespace+"/"+r.Name] = &npPod{ns: r.Namespace, name: r.Name, node: node, labels: maps.Clone(r.Labels)}
	}
	// A new namespace's default service account comes a moment after it:
	// pods are refused until then.
	testutil.WaitFor(t, time.Minute, "the API server to accept the pods", func() bool {
		b, err := json.Marshal(map[string]any{"apiVersion": "v1", "kind": "List", "items": objs})
		if err != nil {
			t.Fatal(err)
		}
		f := filepath.Join(c.dir, "pods.json")
		if err := os.WriteFile(f, b, 0o644); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_, err = c.cp.Kubectl(ctx, "apply", "-f", f)
		return err == nil
	})
	var last string
	testutil.WaitFor(t, 2*time.Minute, "the pods to be Ready", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		out, err := c.cp.Kubectl(ctx, "get", "pods", "-A", "-o",
			`jsonpath={range .items[*]}{.metadata.namespace}/{.metadata.name} {.status.podIP} {.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}`)
		if err != nil {
			return false
		}
		ready := 0
		for _, line := range strings.Split(out, "\n") {
			f := strings.Fields(line)
			if len(f) != 3 || f[2] != "True" || want[f[0]] == nil {
				continue
			}
			if want[f[0]].ip, err = netip.ParseAddr(f[1]); err == nil {
				ready++
			}
		}
		last = out
		return ready == len(want)
	})
	if t.Failed() {
		t.Logf("pods: %s", last)
	}
	// The pods' network namespaces, from the endpoints tortied keeps on
	// each node.
	testutil.WaitFor(t, time.Minute, "tortied's endpoints of the new pods", func() bool {
		found := 0
		for _, n := range c.l.Nodes {
			eps, err := api.NewClient(n.Socket).Endpoints()
			if err != nil {
				return false
			}
			for _, e := range eps {
				p := want[e.PodNamespace+"/"+e.PodName]
				if p == nil || p.node != n.Name || e.Address != p.ip {
					continue
				}
				p.netns = hostNetnsPath(n, e.Netns)
				found++
			}
		}
		return found == len(want)
	})
	for k, p := range want {
		var st unix.Statfs_t
		if err := unix.Statfs(p.netns, &st); err != nil || st.Type != unix.NSFS_MAGIC {
			t.Fatalf("pod %s: %s is not a network namespace (%v)", k, p.netns, err)
		}
		c.pods[k] = p
	}
}

// hostNetnsPath is where the test process finds a pod's network namespace:
// the CNI names it as the node sees it, and the node's /run/netns is bound
// in the node's own mount namespace (lab.NodePaths), that of its
// containerd. /var/run is a link to /run, resolved here: a link is read in
// the test's own mount namespace.
func hostNetnsPath(n *lab.Node, p string) string {
	p = filepath.Clean(p)
	if rest, ok := strings.CutPrefix(p, "/var/run/"); ok {
		p = "/run/" + rest
	}
	return fmt.Sprintf("/proc/%d/root%s", n.Containerd.PID, p)
}

// newNPCluster builds a 3-node cluster with tortie as a DaemonSet.
func newNPCluster(t *testing.T) *npCluster {
	l, cp, _ := daemonSetCluster(t, lab.Options{Name: "tnp", Nodes: 3, Mode: "vxlan-crosssubnet", BGP: true}, "iptables")
	a, err := newNPAPI(l, cp)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.client.CloseIdleConnections)
	return &npCluster{l: l, cp: cp, api: a, dir: t.TempDir(), ns: map[string]map[string]string{},
		pods: map[string]*npPod{}, policies: map[string]bool{}}
}

// npAPI applies and deletes the matrix's policies with requests of its
// own to the API server, as the lab's administrator: a kubectl run costs
// most of a second, a request milliseconds, and every case makes some.
type npAPI struct {
	server string
	client *http.Client
}

// newNPAPI reads the administrator's kubeconfig. The API server listens in
// the lab's fabric namespace: connections are opened there.
func newNPAPI(l *lab.Lab, cp *lab.ControlPlane) (*npAPI, error) {
	b, err := os.ReadFile(cp.Admin)
	if err != nil {
		return nil, err
	}
	var kc struct {
		Clusters []struct {
			Cluster struct {
				Server string `json:"server"`
				CA     string `json:"certificate-authority"`
			} `json:"cluster"`
		} `json:"clusters"`
		Users []struct {
			User struct {
				Cert string `json:"client-certificate"`
				Key  string `json:"client-key"`
			} `json:"user"`
		} `json:"users"`
	}
	if err := yaml.Unmarshal(b, &kc); err != nil {
		return nil, fmt.Errorf("%s: %v", cp.Admin, err)
	}
	if len(kc.Clusters) != 1 || len(kc.Users) != 1 {
		return nil, fmt.Errorf("%s: want one cluster and one user", cp.Admin)
	}
	cert, err := tls.LoadX509KeyPair(kc.Users[0].User.Cert, kc.Users[0].User.Key)
	if err != nil {
		return nil, err
	}
	ca, err := os.ReadFile(kc.Clusters[0].Cluster.CA)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca) {
		return nil, fmt.Errorf("no certificate in %s", kc.Clusters[0].Cluster.CA)
	}
	fabric := testutil.NetnsPath(l.Fabric)
	tr := &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}},
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			var conn net.Conn
			err := nsutil.Do(fabric, func() error {
				var err error
				conn, err = (&net.Dialer{}).DialContext(ctx, network, addr)
				return err
			})
			return conn, err
		},
	}
	return &npAPI{server: kc.Clusters[0].Cluster.Server, client: &http.Client{Transport: tr, Timeout: 30 * time.Second}}, nil
}

func (a *npAPI) do(method, path, contentType string, body []byte, ok ...int) error {
	req, err := http.NewRequest(method, a.server+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := a.client.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if !slices.Contains(ok, resp.StatusCode) {
		return fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, out)
	}
	return nil
}

func policyPath(ns, name string) string {
	return "/apis/networking.k8s.io/v1/namespaces/" + url.PathEscape(ns) + "/networkpolicies/" + url.PathEscape(name)
}

// applyPolicy creates or replaces a policy (server-side apply: fields an
// earlier apply set and this one does not are removed), in one step: no
// moment without it.
func (a *npAPI) applyPolicy(p *networkingv1.NetworkPolicy) error {
	b, err := json.Marshal(p)
	if err != nil {
		return err
	}
	return a.do(http.MethodPatch, policyPath(p.Namespace, p.Name)+"?fieldManager=tortie-np-matrix&force=true",
		"application/apply-patch+yaml", b, http.StatusOK, http.StatusCreated)
}

// getPolicy reads a policy.
func (a *npAPI) getPolicy(ns, name string) (*networkingv1.NetworkPolicy, error) {
	resp, err := a.client.Get(a.server + policyPath(ns, name))
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s/%s: %s", ns, name, resp.Status)
	}
	var p networkingv1.NetworkPolicy
	return &p, json.NewDecoder(resp.Body).Decode(&p)
}

// check applies a policy that selects no pod in namespace ns, applies it
// again with one rule less, and deletes it: the cases rely on all three.
func (a *npAPI) check(ns string) error {
	p := &networkingv1.NetworkPolicy{
		TypeMeta:   metav1.TypeMeta{APIVersion: "networking.k8s.io/v1", Kind: "NetworkPolicy"},
		ObjectMeta: metav1.ObjectMeta{Name: "np-api-check", Namespace: ns},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"np-api-check": "no-such-pod"}},
			Ingress:     []networkingv1.NetworkPolicyIngressRule{{}, {From: []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{}}}}},
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
		},
	}
	for _, rules := range []int{2, 1} {
		p.Spec.Ingress = p.Spec.Ingress[:rules]
		if err := a.applyPolicy(p); err != nil {
			return err
		}
		got, err := a.getPolicy(ns, p.Name)
		if err != nil {
			return err
		}
		if len(got.Spec.Ingress) != rules {
			return fmt.Errorf("applied %s/%s with %d ingress rules, read back %d", ns, p.Name, rules, len(got.Spec.Ingress))
		}
	}
	if err := a.deletePolicy(ns, p.Name); err != nil {
		return err
	}
	if _, err := a.getPolicy(ns, p.Name); err == nil {
		return fmt.Errorf("%s/%s still there after its deletion", ns, p.Name)
	}
	return nil
}

// deletePolicy deletes a policy; one already gone is no error.
func (a *npAPI) deletePolicy(ns, name string) error {
	return a.do(http.MethodDelete, policyPath(ns, name), "", nil, http.StatusOK, http.StatusAccepted, http.StatusNotFound)
}

// TestNetworkPolicyMatrix replays cyclonus' NetworkPolicy cases on a real
// cluster (3 nodes, tortie as a DaemonSet): namespaces x, y and z with
// pods a, b and c each, spread over the nodes, serving TCP and UDP on 80
// and 81. Each case's policies are applied with kubectl, then every pod
// probes every other on every port and protocol until the results are
// cyclonus' verdicts (testdata/np-matrix.json) or a deadline passes. By
// default a sample of the cases runs (selectNPCases); TORTIE_NP_MATRIX
// chooses: "all", a number of cases, or a regular expression of their
// names; each case is a subtest (cyclonus/<index> <name>).
//
// The subtest kubectl (kubectlScenarios) then applies hand-written
// policies with kubectl on the same cluster: building one costs a minute
// or more.
func TestNetworkPolicyMatrix(t *testing.T) {
	m := loadNPMatrix(t)
	sel, err := selectNPCases(m, os.Getenv("TORTIE_NP_MATRIX"))
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	c := newNPCluster(t)
	t.Logf("cluster up in %v", time.Since(start).Round(time.Second))
	start = time.Now()
	c.setUpMatrix(t, m)
	t.Logf("matrix pods up in %v", time.Since(start).Round(time.Second))
	t.Run("cyclonus", func(t *testing.T) { c.runMatrix(t, m, sel) })
	t.Run("kubectl", func(t *testing.T) { c.kubectlScenarios(t) })
}

// npMatrixSample is how many cases run by default, to keep the whole
// test within about 6 minutes on 2 cores: the cluster takes about a
// minute and the matrix's pods 15 s; a round of probes that all connect
// takes 0.3-0.5 s, one with a denial the probe timeout (1 s), and a case
// about two rounds (the policy before, then the case's), one that makes
// pods or namespaces 10-20 s more; the kubectl scenarios about 2 minutes.
// Each case logs what it took: this is to be revised on those figures.
const npMatrixSample = 50

// selectNPCases picks the cases to run (indexes into m.Cases, in order):
// spec "" is npMatrixSample of them, every case that does more than apply
// policies (they change pods, labels and namespaces under policy, and
// delete policies) and an evenly spread sample of the others; "all" is all
// of them, a number that many evenly spread, anything else a regular
// expression matched against the names. The case without policy comes
// first in all but the last.
func selectNPCases(m *npmatrix.Matrix, spec string) ([]int, error) {
	n := len(m.Cases)
	switch spec = strings.TrimSpace(spec); spec {
	case "":
		var changes, applies []int
		for i, c := range m.Cases {
			if npChangesMore(c) {
				changes = append(changes, i)
			} else {
				applies = append(applies, i)
			}
		}
		sel := changes
		for _, j := range spread(len(applies), max(npMatrixSample-len(changes), 1)) {
			sel = append(sel, applies[j])
		}
		slices.Sort(sel)
		return sel, nil
	case "all":
		return spread(n, n), nil
	}
	if k, err := strconv.Atoi(spec); err == nil {
		if k < 1 {
			return nil, fmt.Errorf("TORTIE_NP_MATRIX=%s: want at least one case", spec)
		}
		return spread(n, k), nil
	}
	re, err := regexp.Compile(spec)
	if err != nil {
		return nil, fmt.Errorf("TORTIE_NP_MATRIX=%q: neither all, a number nor a regular expression: %v", spec, err)
	}
	var out []int
	for i, c := range m.Cases {
		if re.MatchString(c.Name) {
			out = append(out, i)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("TORTIE_NP_MATRIX=%q matches no case", spec)
	}
	return out, nil
}

// npChangesMore tells whether a case does more than apply policies.
func npChangesMore(c npmatrix.Case) bool {
	for _, s := range c.Steps {
		for _, a := range s.Actions {
			if a.Apply == nil {
				return true
			}
		}
	}
	return false
}

// spread is k of n indexes, evenly spread, 0 first.
func spread(n, k int) []int {
	k = min(k, n)
	out := make([]int, k)
	for i := range k {
		out[i] = i * n / k
	}
	return out
}

// setUpMatrix creates the matrix's namespaces and pods.
func (c *npCluster) setUpMatrix(t *testing.T, m *npmatrix.Matrix) {
	start := time.Now()
	for _, ns := range slices.Sorted(maps.Keys(m.Namespaces)) {
		c.createNamespace(t, ns, m.Namespaces[ns])
	}
	t.Logf("kubectl apply of a namespace: %v on average", (time.Since(start) / time.Duration(len(m.Namespaces))).Round(time.Millisecond))
	start = time.Now()
	if err := c.api.check(slices.Min(slices.Collect(maps.Keys(m.Namespaces)))); err != nil {
		t.Fatalf("applying policies through the API: %v", err)
	}
	t.Logf("a policy applied twice and deleted through the API in %v", time.Since(start).Round(time.Millisecond))
	var refs []npmatrix.ObjectRef
	for _, k := range slices.Sorted(maps.Keys(m.Pods)) {
		ns, name, _ := strings.Cut(k, "/")
		refs = append(refs, npmatrix.ObjectRef{Namespace: ns, Name: name, Labels: m.Pods[k]})
	}
	c.createPods(t, refs)
	xa, err := c.anchor(m)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range slices.Sorted(maps.Keys(c.pods)) {
		p := c.pods[k]
		t.Logf("pod %s on %s: %v (address class %d)", k, p.node, p.ip, npClass(m, xa, p.ip))
	}
}

// anchor is x/a's address, around which the ipBlock cases' CIDRs are cut,
// after checking that no pod lies in the cases' other CIDRs.
func (c *npCluster) anchor(m *npmatrix.Matrix) (netip.Addr, error) {
	xa := c.pods["x/a"]
	if xa == nil {
		return netip.Addr{}, errors.New("no pod x/a")
	}
	for _, f := range m.FixedCIDRs {
		pfx, err := netip.ParsePrefix(f)
		if err != nil {
			return netip.Addr{}, err
		}
		for _, p := range c.pods {
			if pfx.Contains(p.ip) {
				return netip.Addr{}, fmt.Errorf("pod %s's address %v lies in %s, which cyclonus' verdicts assume holds no pod", p.key(), p.ip, f)
			}
		}
	}
	return xa.ip, nil
}

// npClass is an address's class: the longest of the cases' CIDRs around
// x/a's address that holds it (0 if none).
func npClass(m *npmatrix.Matrix, xa, ip netip.Addr) int {
	c := 0
	for _, l := range m.RelativeCIDRs {
		if netip.PrefixFrom(xa, l).Masked().Contains(ip) {
			c = max(c, l)
		}
	}
	return c
}

// relocate moves the policy's CIDRs that contain the generator's x/a
// address to the same-length CIDRs around x/a's address here.
func relocate(p *networkingv1.NetworkPolicy, generated, xa netip.Addr) error {
	fix := func(s *string) error {
		pfx, err := netip.ParsePrefix(*s)
		if err != nil {
			return fmt.Errorf("policy %s/%s: %v", p.Namespace, p.Name, err)
		}
		if pfx.Contains(generated) {
			*s = netip.PrefixFrom(xa, pfx.Bits()).Masked().String()
		}
		return nil
	}
	peers := func(ps []networkingv1.NetworkPolicyPeer) error {
		for _, peer := range ps {
			if b := peer.IPBlock; b != nil {
				if err := fix(&b.CIDR); err != nil {
					return err
				}
				for i := range b.Except {
					if err := fix(&b.Except[i]); err != nil {
						return err
					}
				}
			}
		}
		return nil
	}
	for _, r := range p.Spec.Ingress {
		if err := peers(r.From); err != nil {
			return err
		}
	}
	for _, r := range p.Spec.Egress {
		if err := peers(r.To); err != nil {
			return err
		}
	}
	return nil
}

// runMatrix runs the selected cases, each from the matrix's initial world.
func (c *npCluster) runMatrix(t *testing.T, m *npmatrix.Matrix, sel []int) {
	generated, err := netip.ParseAddr(m.PodIP)
	if err != nil {
		t.Fatalf("matrix podIP: %v", err)
	}
	ran, passed := 0, 0
	var took time.Duration
	for _, i := range sel {
		tc := m.Cases[i]
		name := fmt.Sprintf("%03d %s", i, strings.ReplaceAll(tc.Name, "/", "-"))
		t.Run(name, func(t *testing.T) {
			ran++
			start := time.Now()
			defer func() {
				d := time.Since(start)
				took += d
				t.Logf("case took %v", d.Round(time.Millisecond))
				if t.Failed() {
					c.dirty = true
				} else {
					passed++
				}
			}()
			c.reset(t, m, tc)
			for si, step := range tc.Steps {
				began := time.Now()
				gens := c.policyGenerations(t)
				c.runStep(t, m, step, generated)
				// Probes that agree with the policy of before would pass a
				// step whose policy is not in force yet: first every node
				// installs a policy made after the actions.
				c.waitPolicyAfter(t, gens)
				applied := time.Now()
				cells, err := c.stepCells(m, step)
				if err != nil {
					t.Fatalf("step %d: %v", si, err)
				}
				rounds, ok := expectCells(t, fmt.Sprintf("case %d %q step %d", i, tc.Name, si), cells, npStepDeadline)
				if ok {
					t.Logf("step %d: actions took %v; then %d probes agreed with cyclonus after %v (%d round(s))",
						si, applied.Sub(began).Round(time.Millisecond), len(cells), time.Since(applied).Round(time.Millisecond), rounds)
				}
			}
		})
	}
	if ran > 0 {
		t.Logf("cyclonus matrix: %d of %d cases ran, %d passed, %d failed; %v per case on average",
			ran, len(m.Cases), passed, ran-passed, (took / time.Duration(ran)).Round(time.Millisecond))
	}
}

// policyGenerations reads the generation of the policy in force on every
// node.
func (c *npCluster) policyGenerations(t *testing.T) map[string]uint64 {
	t.Helper()
	gens := map[string]uint64{}
	for _, n := range c.l.Nodes {
		st, err := api.NewClient(n.Socket).Counters()
		if err != nil {
			t.Fatalf("%s: %v", n.Name, err)
		}
		gens[n.Name] = st.Policy.Generation
	}
	return gens
}

// waitPolicyAfter waits until every node has installed a policy since
// gens were read: each action of a step (a policy, a label, a pod or a
// namespace) changes what every node compiles, but for a policy applied
// again unchanged, which the API server does not even announce. So after
// a while the probes go ahead anyway, and their deadline decides.
func (c *npCluster) waitPolicyAfter(t *testing.T, gens map[string]uint64) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		all := true
		for _, n := range c.l.Nodes {
			st, err := api.NewClient(n.Socket).Counters()
			all = all && err == nil && st.Policy.Generation > gens[n.Name]
		}
		if all {
			return
		}
	}
	t.Logf("not every node installed a new policy within 5 s of the step's actions (an unchanged policy applied again?)")
}

// reset brings the cluster back to the matrix's initial world before case
// tc: policies of earlier cases removed (but for those tc's first step
// applies again: applying replaces them), namespace and pod labels as
// they were, namespaces and pods the earlier cases made deleted, those
// they deleted made again.
func (c *npCluster) reset(t *testing.T, m *npmatrix.Matrix, tc npmatrix.Case) {
	t.Helper()
	if c.dirty {
		c.kubectl(t, time.Minute, "delete", "networkpolicies", "--all", "--all-namespaces")
		clear(c.policies)
		c.dirty = false
	}
	keep := map[string]bool{}
	for _, a := range tc.Steps[0].Actions {
		if a.Apply != nil {
			keep[a.Apply.Namespace+"/"+a.Apply.Name] = true
		}
	}
	var stale []string
	for k := range c.policies {
		if !keep[k] {
			stale = append(stale, k)
		}
	}
	c.deletePolicies(t, stale)
	for ns := range c.ns {
		if _, ok := m.Namespaces[ns]; !ok {
			c.deleteNamespace(t, ns)
		}
	}
	for _, ns := range slices.Sorted(maps.Keys(m.Namespaces)) {
		if _, ok := c.ns[ns]; !ok {
			c.createNamespace(t, ns, m.Namespaces[ns])
		} else {
			c.setNamespaceLabels(t, ns, m.Namespaces[ns])
		}
	}
	for k, p := range c.pods {
		if _, ok := m.Pods[k]; !ok && m.Namespaces[p.ns] != nil {
			c.deletePod(t, p.ns, p.name)
		}
	}
	var missing []npmatrix.ObjectRef
	for _, k := range slices.Sorted(maps.Keys(m.Pods)) {
		ns, name, _ := strings.Cut(k, "/")
		if c.pods[k] == nil {
			missing = append(missing, npmatrix.ObjectRef{Namespace: ns, Name: name, Labels: m.Pods[k]})
		} else {
			c.setPodLabels(t, ns, name, m.Pods[k])
		}
	}
	c.createPods(t, missing)
}

// deletePolicies deletes policies by namespace/name.
func (c *npCluster) deletePolicies(t *testing.T, keys []string) {
	t.Helper()
	for _, k := range keys {
		ns, name, _ := strings.Cut(k, "/")
		if err := c.api.deletePolicy(ns, name); err != nil {
			t.Fatal(err)
		}
		delete(c.policies, k)
	}
}

// runStep carries out a step's actions in order.
func (c *npCluster) runStep(t *testing.T, m *npmatrix.Matrix, step npmatrix.Step, generated netip.Addr) {
	t.Helper()
	for _, a := range step.Actions {
		if a.Apply != nil {
			p := a.Apply.DeepCopy()
			xa, err := c.anchor(m)
			if err != nil {
				t.Fatal(err)
			}
			if err := relocate(p, generated, xa); err != nil {
				t.Fatal(err)
			}
			if err := c.api.applyPolicy(p); err != nil {
				t.Fatal(err)
			}
			c.policies[p.Namespace+"/"+p.Name] = true
			continue
		}
		switch {
		case a.DeletePolicy != nil:
			c.deletePolicies(t, []string{a.DeletePolicy.Namespace + "/" + a.DeletePolicy.Name})
		case a.CreateNamespace != nil:
			c.createNamespace(t, a.CreateNamespace.Name, a.CreateNamespace.Labels)
		case a.SetNamespaceLabels != nil:
			c.setNamespaceLabels(t, a.SetNamespaceLabels.Name, a.SetNamespaceLabels.Labels)
		case a.DeleteNamespace != nil:
			c.deleteNamespace(t, a.DeleteNamespace.Name)
		case a.CreatePod != nil:
			c.createPods(t, []npmatrix.ObjectRef{*a.CreatePod})
			if _, err := c.anchor(m); err != nil {
				t.Fatal(err)
			}
		case a.SetPodLabels != nil:
			c.setPodLabels(t, a.SetPodLabels.Namespace, a.SetPodLabels.Name, a.SetPodLabels.Labels)
		case a.DeletePod != nil:
			c.deletePod(t, a.DeletePod.Namespace, a.DeletePod.Name)
		default:
			t.Fatalf("an action the test does not know: %+v", a)
		}
	}
}

// stepCells are the step's probes with cyclonus' verdicts, but those of a
// pod to itself: they stay inside the pod.
func (c *npCluster) stepCells(m *npmatrix.Matrix, step npmatrix.Step) ([]npCell, error) {
	xa, err := c.anchor(m)
	if err != nil {
		return nil, err
	}
	var pods []*npPod
	for _, k := range step.Pods {
		p := c.pods[k]
		if p == nil {
			return nil, fmt.Errorf("the step expects a pod %s; the cluster has %v", k, slices.Sorted(maps.Keys(c.pods)))
		}
		pods = append(pods, p)
	}
	per := len(m.Ports) * len(m.Protocols)
	var cells []npCell
	for i, from := range pods {
		for j, to := range pods {
			if i == j {
				continue
			}
			verdicts, ok := step.Allowed["*"]
			if !ok {
				k := fmt.Sprintf("%d/%d", npClass(m, xa, from.ip), npClass(m, xa, to.ip))
				if verdicts, ok = step.Allowed[k]; !ok {
					return nil, fmt.Errorf("no verdicts for address classes %s", k)
				}
			}
			if len(verdicts) != len(pods)*len(pods)*per {
				return nil, fmt.Errorf("%d verdicts for %d pods", len(verdicts), len(pods))
			}
			for pi, port := range m.Ports {
				for qi, proto := range m.Protocols {
					v := verdicts[(i*len(pods)+j)*per+pi*len(m.Protocols)+qi]
					cells = append(cells, npCell{from: from, to: to, port: port, proto: proto, want: v == '1'})
				}
			}
		}
	}
	return cells, nil
}

// npKubectlPolicies are kubectlScenarios' policies, as files
// for kubectl apply -f; {{cidr}} and {{except}} are filled in with the
// pods' /16 and np/other's address.
var npKubectlPolicies = map[string]string{
	"default-deny": `apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: default-deny-ingress, namespace: np}
spec:
  podSelector: {}
  policyTypes: [Ingress]
`,
	"from-clients": `apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: server-from-clients, namespace: np}
spec:
  podSelector: {matchLabels: {app: server}}
  ingress:
    - from: [{podSelector: {matchLabels: {role: client}}}]
`,
	"from-blue": `apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: server-from-blue, namespace: np}
spec:
  podSelector: {matchLabels: {app: server}}
  ingress:
    - from: [{namespaceSelector: {matchLabels: {team: blue}}}]
`,
	"named-port": `apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: server-named-port, namespace: np}
spec:
  podSelector: {matchLabels: {app: server}}
  ingress:
    - ports: [{port: serve-81-tcp}]
`,
	"ip-block": `apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: server-ip-block, namespace: np}
spec:
  podSelector: {matchLabels: {app: server}}
  ingress:
    - from: [{ipBlock: {cidr: {{cidr}}, except: [{{except}}]}}]
`,
	"egress-dns": `apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: egress-dns-only, namespace: np-green}
spec:
  podSelector: {}
  policyTypes: [Egress]
  egress:
    - to:
        - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: kube-system}}
          podSelector: {matchLabels: {k8s-app: kube-dns}}
      ports: [{protocol: UDP, port: 53}, {protocol: TCP, port: 53}]
`,
}

// kubectlScenarios applies hand-written
// policies with kubectl apply -f on pods the kubelet runs, and checks
// connections they allow and deny: a default deny of ingress, then
// ingress allowed from pods by label, from namespaces by label, to a named
// port only, from an ipBlock with an exception; an egress default deny
// that still allows DNS to kube-dns; and, with every policy deleted,
// everything allowed again. The kubelet's readiness probes reach the pods
// under every policy: no pod ever stops being Ready.
func (c *npCluster) kubectlScenarios(t *testing.T) {
	// The matrix's policies, whatever the cases left.
	c.kubectl(t, time.Minute, "delete", "networkpolicies", "--all", "--all-namespaces")
	clear(c.policies)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := c.cp.DeployCoreDNS(ctx, images.CoreDNS); err != nil {
		t.Fatal(err)
	}
	c.createNamespace(t, "np", map[string]string{})
	c.createNamespace(t, "np-blue", map[string]string{"team": "blue"})
	c.createNamespace(t, "np-green", map[string]string{})
	c.createPods(t, []npmatrix.ObjectRef{
		{Namespace: "np", Name: "server", Labels: map[string]string{"app": "server"}},
		{Namespace: "np", Name: "client", Labels: map[string]string{"role": "client"}},
		{Namespace: "np", Name: "other", Labels: map[string]string{"role": "other"}},
		{Namespace: "np-blue", Name: "client", Labels: map[string]string{"role": "client"}},
		{Namespace: "np-green", Name: "client", Labels: map[string]string{"role": "client"}},
	})
	server, client, other := c.pods["np/server"], c.pods["np/client"], c.pods["np/other"]
	blue, green := c.pods["np-blue/client"], c.pods["np-green/client"]
	everyone := []*npPod{server, client, other, blue, green}
	readySince := c.readySince(t, everyone)

	fill := strings.NewReplacer("{{cidr}}", netip.PrefixFrom(server.ip, 16).Masked().String(), "{{except}}", other.ip.String()+"/32")
	apply := func(name string) {
		t.Helper()
		f := filepath.Join(c.dir, name+".yaml")
		if err := os.WriteFile(f, []byte(fill.Replace(npKubectlPolicies[name])), 0o644); err != nil {
			t.Fatal(err)
		}
		c.kubectl(t, time.Minute, "apply", "-f", f)
	}
	expect := func(what string, cells ...npCell) {
		t.Helper()
		expectCells(t, what, cells, npStepDeadline)
	}
	const allow, deny = true, false

	// Before any policy, everything is allowed.
	all := func(want bool) []npCell {
		var cs []npCell
		for _, a := range everyone {
			for _, b := range everyone {
				if a != b {
					for _, port := range []int{80, 81} {
						for _, proto := range []string{"TCP", "UDP"} {
							cs = append(cs, npCell{a, b, port, proto, want})
						}
					}
				}
			}
		}
		return cs
	}
	expect("no policy", all(allow)...)

	apply("default-deny")
	expect("default deny of ingress in np",
		npCell{client, server, 80, "TCP", deny}, npCell{client, server, 80, "UDP", deny}, npCell{client, server, 81, "TCP", deny},
		npCell{blue, server, 80, "TCP", deny}, npCell{server, client, 80, "TCP", deny}, npCell{green, other, 81, "UDP", deny},
		// Egress is not isolated, nor are other namespaces.
		npCell{server, blue, 80, "TCP", allow}, npCell{client, green, 81, "UDP", allow}, npCell{blue, green, 80, "TCP", allow})
	// A pod started under the default deny becomes Ready: the kubelet's
	// probes come from the pod's own node, which policy always lets in.
	c.createPods(t, []npmatrix.ObjectRef{{Namespace: "np", Name: "late", Labels: map[string]string{"role": "late"}}})
	c.deletePod(t, "np", "late")

	apply("from-clients")
	expect("ingress to np/server from pods labelled role=client (of np only)",
		npCell{client, server, 80, "TCP", allow}, npCell{client, server, 81, "UDP", allow},
		npCell{other, server, 80, "TCP", deny}, npCell{other, server, 81, "UDP", deny},
		npCell{blue, server, 80, "TCP", deny}, npCell{green, server, 80, "UDP", deny},
		npCell{server, client, 80, "TCP", deny})

	apply("from-blue")
	expect("ingress to np/server from namespaces labelled team=blue, too",
		npCell{blue, server, 80, "TCP", allow}, npCell{blue, server, 81, "UDP", allow},
		npCell{green, server, 80, "TCP", deny}, npCell{green, server, 81, "UDP", deny},
		npCell{client, server, 80, "TCP", allow}, npCell{other, server, 80, "TCP", deny})

	c.kubectl(t, time.Minute, "delete", "-n", "np", "networkpolicy", "server-from-clients", "server-from-blue")
	apply("named-port")
	expect("ingress to np/server on its port named serve-81-tcp only, from anywhere",
		npCell{other, server, 81, "TCP", allow}, npCell{green, server, 81, "TCP", allow}, npCell{client, server, 81, "TCP", allow},
		npCell{other, server, 80, "TCP", deny}, npCell{other, server, 81, "UDP", deny}, npCell{green, server, 80, "UDP", deny})

	c.kubectl(t, time.Minute, "delete", "-n", "np", "networkpolicy", "server-named-port")
	apply("ip-block")
	expect("ingress to np/server from the pods' /16 except np/other",
		npCell{client, server, 80, "TCP", allow}, npCell{green, server, 81, "UDP", allow}, npCell{blue, server, 80, "TCP", allow},
		npCell{other, server, 80, "TCP", deny}, npCell{other, server, 81, "UDP", deny})

	c.kubectl(t, time.Minute, "delete", "networkpolicies", "--all", "-n", "np")
	apply("egress-dns")
	expect("egress from np-green denied but for DNS",
		npCell{green, server, 80, "TCP", deny}, npCell{green, server, 81, "UDP", deny}, npCell{green, blue, 80, "TCP", deny},
		// Ingress to np-green is not isolated: answers go back.
		npCell{server, green, 80, "TCP", allow}, npCell{blue, green, 81, "UDP", allow},
		npCell{server, client, 80, "TCP", allow})
	// DNS through the kube-dns Service: egress is judged on the CoreDNS
	// pod the node's kube-proxy translated the Service address to.
	for deadline := time.Now().Add(npStepDeadline); ; {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		out, err := c.cp.Kubectl(ctx, "exec", "-n", "np-green", "client", "--", "/tortie-echo", "resolve", "kubernetes.default")
		cancel()
		if err == nil && strings.TrimSpace(out) == lab.KubernetesServiceIP {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("np-green/client, its egress denied but for DNS, resolves kubernetes.default to %q (%v), want %s", out, err, lab.KubernetesServiceIP)
			break
		}
	}

	c.kubectl(t, time.Minute, "delete", "networkpolicies", "--all", "-n", "np-green")
	expect("every policy deleted", all(allow)...)

	// The kubelet's probes were never denied: every pod has been Ready
	// since before the first policy.
	now := c.readySince(t, everyone)
	for k, since := range readySince {
		if now[k] != since {
			t.Errorf("pod %s was not Ready all along: Ready since %s, was since %s", k, now[k], since)
		}
	}
}

// readySince maps each pod to the time its Ready condition last changed,
// failing t if one is not Ready.
func (c *npCluster) readySince(t *testing.T, pods []*npPod) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, p := range pods {
		s := c.kubectl(t, 30*time.Second, "get", "pod", "-n", p.ns, p.name, "-o",
			`jsonpath={.status.conditions[?(@.type=="Ready")].status} {.status.conditions[?(@.type=="Ready")].lastTransitionTime}`)
		status, since, _ := strings.Cut(s, " ")
		if status != "True" {
			t.Errorf("pod %s is not Ready: %q", p.key(), s)
		}
		out[p.key()] = since
	}
	return out
}

// The matrix file as the cluster test reads it, and the test's own
// arithmetic, without a cluster.
func TestNetworkPolicyMatrixFile(t *testing.T) {
	m := loadNPMatrix(t)
	n := len(m.Cases)
	if m.Cases[0].Name != "no policy" {
		t.Fatalf("first case %q, want the one without policy", m.Cases[0].Name)
	}
	sel, err := selectNPCases(m, "")
	if err != nil || len(sel) != min(n, npMatrixSample) || sel[0] != 0 || !slices.IsSorted(sel) || sel[len(sel)-1] >= n {
		t.Errorf("default selection %v, %v", sel, err)
	}
	changes := 0
	for i, c := range m.Cases {
		if npChangesMore(c) {
			changes++
			if !slices.Contains(sel, i) {
				t.Errorf("default selection %v leaves out case %d %q, which changes more than policies", sel, i, c.Name)
			}
		}
	}
	if changes < 5 || changes > npMatrixSample/2 {
		t.Errorf("%d cases change more than policies", changes)
	}
	if sel, err := selectNPCases(m, "all"); err != nil || len(sel) != n || sel[n-1] != n-1 {
		t.Errorf("all: %d cases, %v", len(sel), err)
	}
	if sel, err := selectNPCases(m, "3"); err != nil || !slices.Equal(sel, []int{0, n / 3, 2 * n / 3}) {
		t.Errorf("3: %v, %v", sel, err)
	}
	if sel, err := selectNPCases(m, "^no policy$"); err != nil || !slices.Equal(sel, []int{0}) {
		t.Errorf("^no policy$: %v, %v", sel, err)
	}
	for _, bad := range []string{"0", "-2", "(", "no such case at all"} {
		if sel, err := selectNPCases(m, bad); err == nil {
			t.Errorf("%q: %v, want an error", bad, sel)
		}
	}

	// The ipBlock CIDRs move to x/a's address; the others stay.
	generated, xa := netip.MustParseAddr(m.PodIP), netip.MustParseAddr("10.244.1.77")
	p := &networkingv1.NetworkPolicy{Spec: networkingv1.NetworkPolicySpec{
		Ingress: []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{
			{IPBlock: &networkingv1.IPBlock{CIDR: netip.PrefixFrom(generated, 24).Masked().String(), Except: []string{netip.PrefixFrom(generated, 28).Masked().String()}}}}}},
		Egress: []networkingv1.NetworkPolicyEgressRule{{To: []networkingv1.NetworkPolicyPeer{
			{IPBlock: &networkingv1.IPBlock{CIDR: "0.0.0.0/0", Except: []string{"0.0.0.0/31"}}}}}},
	}}
	if err := relocate(p, generated, xa); err != nil {
		t.Fatal(err)
	}
	in, out := p.Spec.Ingress[0].From[0].IPBlock, p.Spec.Egress[0].To[0].IPBlock
	if in.CIDR != "10.244.1.0/24" || in.Except[0] != "10.244.1.64/28" || out.CIDR != "0.0.0.0/0" || out.Except[0] != "0.0.0.0/31" {
		t.Errorf("relocated: %+v %+v", in, out)
	}
	p.Spec.Egress[0].To[0].IPBlock.CIDR = "not a CIDR"
	if err := relocate(p, generated, xa); err == nil {
		t.Error("relocate took a bad CIDR")
	}
	for ip, want := range map[string]int{"10.244.1.77": 28, "10.244.1.70": 28, "10.244.1.80": 24, "10.244.1.1": 24, "10.244.2.77": 0} {
		if got := npClass(m, xa, netip.MustParseAddr(ip)); got != want {
			t.Errorf("class of %s: %d, want %d", ip, got, want)
		}
	}

	// Every step's verdicts, for pods around x/a as a cluster might
	// number them: the case without policy allows all, others deny some,
	// and the ipBlock cases tell pods apart by class.
	c := &npCluster{pods: map[string]*npPod{}}
	addr := map[string]string{"x/a": "10.244.1.77", "x/b": "10.244.1.78", "x/c": "10.244.1.130",
		"y/a": "10.244.2.5", "y/b": "10.244.1.79", "y/c": "10.244.1.131", "z/a": "10.244.2.6", "z/b": "10.244.1.80", "z/c": "10.244.3.1",
		"x/d": "10.244.1.81", "y-2/a": "10.244.2.7", "y-2/b": "10.244.1.82", "w/a": "10.244.1.83"}
	for k, ip := range addr {
		ns, name, _ := strings.Cut(k, "/")
		c.pods[k] = &npPod{ns: ns, name: name, ip: netip.MustParseAddr(ip)}
	}
	denying, byClass := 0, 0
	for i, tc := range m.Cases {
		for si, s := range tc.Steps {
			cells, err := c.stepCells(m, s)
			if err != nil {
				t.Fatalf("case %d %q step %d: %v", i, tc.Name, si, err)
			}
			if want := len(s.Pods) * (len(s.Pods) - 1) * len(m.Ports) * len(m.Protocols); len(cells) != want {
				t.Fatalf("case %d step %d: %d cells, want %d", i, si, len(cells), want)
			}
			denied := slices.ContainsFunc(cells, func(c npCell) bool { return !c.want })
			if i == 0 && denied {
				t.Errorf("the case without policy denies")
			}
			if denied {
				denying++
			}
			if _, ok := s.Allowed["*"]; !ok {
				byClass++
			}
		}
	}
	if denying < n/2 || byClass == 0 {
		t.Errorf("%d steps deny something, %d depend on address classes", denying, byClass)
	}

	if got := labelArgs(map[string]string{"ns": "y", "new-ns": "qrs", "kubernetes.io/metadata.name": "y"}, map[string]string{"ns": "z", "pod": "b"}); !slices.Equal(got, []string{"new-ns-", "ns=z", "pod=b"}) {
		t.Errorf("labelArgs: %v", got)
	}
}

// The hand-written policies and the pods' manifest are what the API
// server takes: every field known to its types.
func TestNetworkPolicyKubectlManifests(t *testing.T) {
	fill := strings.NewReplacer("{{cidr}}", "10.244.0.0/16", "{{except}}", "10.244.0.7/32")
	seen := map[string]bool{}
	for name, y := range npKubectlPolicies {
		var p networkingv1.NetworkPolicy
		if err := yaml.UnmarshalStrict([]byte(fill.Replace(y)), &p); err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if p.APIVersion != "networking.k8s.io/v1" || p.Kind != "NetworkPolicy" || p.Name == "" || !strings.HasPrefix(p.Namespace, "np") || seen[p.Name] {
			t.Errorf("%s: %+v", name, p.ObjectMeta)
		}
		seen[p.Name] = true
	}
	var p networkingv1.NetworkPolicy
	if err := yaml.UnmarshalStrict([]byte(fill.Replace(npKubectlPolicies["ip-block"])), &p); err != nil {
		t.Fatal(err)
	}
	if b := p.Spec.Ingress[0].From[0].IPBlock; b == nil || b.CIDR != "10.244.0.0/16" || !slices.Equal(b.Except, []string{"10.244.0.7/32"}) {
		t.Errorf("ip-block: %+v", p.Spec.Ingress)
	}
	if err := yaml.UnmarshalStrict([]byte(npKubectlPolicies["named-port"]), &p); err != nil {
		t.Fatal(err)
	}
	if port := p.Spec.Ingress[0].Ports[0].Port; port == nil || port.StrVal != "serve-81-tcp" {
		t.Errorf("named-port: %+v", p.Spec.Ingress)
	}

	b, err := json.Marshal(npPodManifest("x", "a", "n1", map[string]string{"pod": "a"}))
	if err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var pod corev1.Pod
	if err := dec.Decode(&pod); err != nil {
		t.Fatalf("pod manifest: %v", err)
	}
	var names []string
	for _, cp := range pod.Spec.Containers[0].Ports {
		names = append(names, fmt.Sprintf("%s=%d/%s", cp.Name, cp.ContainerPort, cp.Protocol))
	}
	if want := []string{"serve-80-tcp=80/TCP", "serve-80-udp=80/UDP", "serve-81-tcp=81/TCP", "serve-81-udp=81/UDP"}; !slices.Equal(names, want) {
		t.Errorf("container ports %v, want %v", names, want)
	}
	if pod.Spec.NodeName != "n1" || pod.Labels["pod"] != "a" || pod.Spec.Containers[0].ReadinessProbe == nil {
		t.Errorf("pod %+v", pod)
	}
}
