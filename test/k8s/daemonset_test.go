package k8s

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tortie-net/tortie/api"
	"github.com/tortie-net/tortie/cni"
	"github.com/tortie-net/tortie/internal/labtest"
	"github.com/tortie-net/tortie/internal/testutil"
	"github.com/tortie-net/tortie/lab"
	"github.com/tortie-net/tortie/lab/images"
)

// clusterImages is the image archive of the DaemonSet clusters (pause,
// the echo server, tortie's image from the binaries the tests run, with
// tortied under the race detector, and CoreDNS as `make coredns-bin`
// builds it), with the static tortie-echo beside it. It is made once for
// all of them, in labtest.BinDir (removed when the tests end): writing it
// (gzip, in this race-instrumented test binary) takes minutes.
var clusterImages struct {
	once sync.Once
	dir  string
	err  error
}

// imageArchive returns the archive of clusterImages and its directory.
func imageArchive(t *testing.T) (archive, dir string) {
	t.Helper()
	c := &clusterImages
	c.once.Do(func() {
		c.dir, c.err = os.MkdirTemp(labtest.BinDir, "images-")
		if c.err != nil {
			return
		}
		tortie, err := images.TortieImage(context.Background(), labtest.BinDir, "GORACE=halt_on_error=0")
		if err != nil {
			c.err = err
			return
		}
		out, err := exec.Command("make", "-s", "-C", "../..", "coredns-bin-path").Output()
		if err != nil {
			c.err = fmt.Errorf("make coredns-bin-path: %w", err)
			return
		}
		dns, err := images.BinaryImage(images.CoreDNS, strings.TrimSpace(string(out)))
		if err != nil {
			c.err = fmt.Errorf("CoreDNS image (make coredns-bin builds it): %w", err)
			return
		}
		c.err = images.Lab(context.Background(), ".", c.dir, filepath.Join(c.dir, "images.tar"), tortie, dns)
	})
	if c.err != nil {
		t.Fatalf("the clusters' images: %v", c.err)
	}
	return filepath.Join(c.dir, "images.tar"), c.dir
}

// daemonSetCluster builds a DaemonSet lab (o: nodes, mode, BGP) with a
// control plane, a kubelet and kube-proxy (in proxyMode) on every node,
// and deploys tortie from deploy/ as users do; it returns once every node
// is Ready. The lab's images include CoreDNS; the returned directory
// holds the static tortie-echo binary.
func daemonSetCluster(t *testing.T, o lab.Options, proxyMode string) (*lab.Lab, *lab.ControlPlane, string) {
	t.Helper()
	testutil.RequireRoot(t)
	bins := k8sBinDir(t)
	work := t.TempDir()
	archive, imgDir := imageArchive(t)
	if err := os.Symlink(filepath.Join(imgDir, "tortie-echo"), filepath.Join(work, "tortie-echo")); err != nil {
		t.Fatal(err)
	}
	o.DaemonSet, o.Images = true, archive
	l := labtest.Up(t, o)
	cp, err := l.StartControlPlane(bins)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// tortied's logs are its containers' logs: the race detector's
		// reports land there.
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		for _, pod := range strings.Fields(kubectlOut(ctx, cp, "-n", "kube-system", "get", "pods", "-l", "k8s-app=tortie-node", "-o", "jsonpath={.items[*].metadata.name}")) {
			logs := kubectlOut(ctx, cp, "-n", "kube-system", "logs", pod, "-c", "tortied")
			if r := labtest.RaceReports(logs); r != "" {
				t.Errorf("data race in tortied (%s):\n%s", pod, r)
			}
			if t.Failed() {
				t.Logf("%s:\n%s", pod, labtest.TailLines(logs, 20))
			}
		}
		logKubelets(t, cp, l)
		sctx, scancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer scancel()
		logServiceState(sctx, t, cp, l)
	})
	for _, n := range l.Nodes {
		if err := l.StartKubelet(cp, bins, n, n.Containerd.Socket); err != nil {
			t.Fatal(err)
		}
		if err := l.StartKubeProxy(cp, bins, n, proxyMode); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	manifest, err := filepath.Abs("../../deploy/tortie.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := cp.DeployTortie(ctx, l, manifest); err != nil {
		t.Fatal(err)
	}
	waitNodesReady(t, cp, l)
	return l, cp, work
}

// logServiceState logs, if t failed, what a Service's path through the
// cluster depends on: where the pods run and whether they are ready, the
// Services' endpoints, the end of each node's kube-proxy log and the drops
// each node's tortied counted.
func logServiceState(ctx context.Context, t *testing.T, cp *lab.ControlPlane, l *lab.Lab) {
	if !t.Failed() {
		return
	}
	t.Logf("pods:\n%s", kubectlOut(ctx, cp, "get", "pods", "-A", "-o", "wide"))
	t.Logf("endpoint slices:\n%s", kubectlOut(ctx, cp, "get", "endpointslices", "-A", "-o",
		`jsonpath={range .items[*]}{.metadata.name}:{range .endpoints[*]} {.addresses[0]}@{.nodeName} ready={.conditions.ready}{end}{"\n"}{end}`))
	for _, n := range l.Nodes {
		if b, err := os.ReadFile(filepath.Join(cp.Dir, "kube-proxy-"+n.Name+".log")); err == nil {
			t.Logf("kube-proxy on %s:\n%s", n.Name, labtest.TailLines(string(b), 15))
		}
		c, err := api.NewClient(n.Socket).Counters()
		if err != nil {
			t.Logf("tortied on %s: counters: %v", n.Name, err)
			continue
		}
		t.Logf("tortied on %s: drops %v", n.Name, c.Drops)
	}
}

// kubectlOut is kubectl's output, or its error as text.
func kubectlOut(ctx context.Context, cp *lab.ControlPlane, args ...string) string {
	out, err := cp.Kubectl(ctx, args...)
	if err != nil {
		return err.Error()
	}
	return out
}

// bulkToVXLANNode fetches 64 MiB from an echo pod on n1 or n3 to one on
// n2, across VXLAN, under kube-proxy's iptables rules: it must come
// intact, its TCP superframes leaving the sending node whole through the
// kernel (tunnelGSO's default) past the FORWARD chain tortied opened.
func bulkToVXLANNode(t *testing.T, l *lab.Lab, cp *lab.ControlPlane, echo []pod) {
	t.Helper()
	var from, to pod
	for _, p := range echo {
		if p.node == "n2" {
			to = p
		} else {
			from = p
		}
	}
	if from.name == "" || to.name == "" {
		t.Fatalf("want echo pods on n2 and on another node: %v", echo)
	}
	sender := api.NewClient(l.Node(from.node).Socket)
	st, err := sender.Status()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(st.TunnelGSO, "on: ") {
		t.Fatalf("%s's tortied says tunnel GSO %q", from.node, st.TunnelGSO)
	}
	before, err := sender.Counters()
	if err != nil {
		t.Fatal(err)
	}
	const n = 64 << 20
	// As long as tortie-echo's own limit: a slow CI machine is no failure.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	out, err := cp.Kubectl(ctx, "exec", to.name, "--", "/tortie-echo", "fetch", fmt.Sprintf("http://%s:8080/bytes?n=%d", from.ip, n))
	if err != nil || strings.TrimSpace(out) != fmt.Sprintf("intact %d bytes", n) {
		t.Fatalf("%s -> %s: %q, %v", from.name, to.name, out, err)
	}
	after, err := sender.Counters()
	if err != nil {
		t.Fatal(err)
	}
	whole := after.Offload.WholeToTunnel - before.Offload.WholeToTunnel
	if whole == 0 {
		t.Fatalf("%s's tortied sent no superframe whole through the kernel: %+v", from.node, after.Offload)
	}
	t.Logf("%d MiB %s (%s) -> %s (n2) intact, %d superframes cut by %s's kernel", n>>20, from.name, from.node, to.name, whole, from.node)
}

// TestTortieDaemonSet runs tortie as users run Calico: deploy/ applied
// with kubectl on a 3-node cluster, n1 and n3 on one subnet (native
// routing between them) and n2 on another (VXLAN to both), routes
// through BGP. Nodes become Ready only once tortie's install-cni has
// written their CNI configuration; tortied takes its node name from the
// Kubernetes Node. A Deployment of four echo pods and a client run on it;
// then the DaemonSet is restarted (kubectl rollout restart) while the
// client probes a pod on another node: every pod stays attached (same
// pod, same address, no container restarted, so the kubelet's liveness
// probes kept reaching them) and the forwarding gap is printed. Pods'
// endpoints carry Calico's WorkloadEndpoint names, and a kubelet killed
// and started again keeps its node's pods running and reachable.
func TestTortieDaemonSet(t *testing.T) {
	l, cp, _ := daemonSetCluster(t, lab.Options{Name: "tds", Nodes: 3, Mode: "vxlan-crosssubnet", BGP: true}, "iptables")
	// tortied registered each node under its Kubernetes name.
	for _, n := range l.Nodes {
		out := kubectl(t, cp, "-n", "kube-system", "get", "pods", "-l", "k8s-app=tortie-node",
			"--field-selector", "spec.nodeName="+n.Name, "-o", "jsonpath={.items[0].status.podIP}")
		if out != n.Addr() {
			t.Fatalf("tortie-node pod on %s has address %q, want the node's %s (host network)", n.Name, out, n.Addr())
		}
	}
	echo := deployEcho(t, cp, 4)
	client := echo[0]
	var target pod
	for _, p := range echo[1:] {
		if p.node != client.node {
			target = p
			break
		}
	}
	if target.name == "" {
		t.Fatalf("no echo pod on another node than %s: %v", client.node, echo)
	}
	reply := kubectl(t, cp, "exec", client.name, "--", "/tortie-echo", "get", "http://"+target.ip+":8080/")
	if !strings.Contains(reply, `"client":"`+client.ip+":") {
		t.Fatalf("%s -> %s: %s", client.name, target.name, reply)
	}
	bulkToVXLANNode(t, l, cp, echo)
	// Each pod's endpoint is named as Calico names its WorkloadEndpoint,
	// on the node the kubelet runs it on.
	for _, p := range echo {
		n := l.Node(p.node)
		wep, err := cni.WorkloadEndpointName(n.Name, p.name, "eth0")
		if err != nil {
			t.Fatal(err)
		}
		eps, err := api.NewClient(n.Socket).Endpoints()
		if err != nil {
			t.Fatal(err)
		}
		if !slices.ContainsFunc(eps, func(e api.EndpointInfo) bool {
			return e.Name == wep && e.PodNamespace == "default" && e.PodName == p.name && e.Address.String() == p.ip
		}) {
			t.Errorf("no endpoint %s (default/%s, %s) on %s: %+v", wep, p.name, p.ip, n.Name, eps)
		}
	}

	// The rollout, under traffic.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	probe := exec.CommandContext(ctx, "ip", "netns", "exec", l.Fabric, cp.KubectlBin, "--kubeconfig", cp.Admin,
		"exec", "-i", client.name, "--", "/tortie-echo", "probe", target.ip+":8080")
	stdin, err := probe.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := probe.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	probe.Stderr = &stderr
	if err := probe.Start(); err != nil {
		t.Fatal(err)
	}
	lines := bufio.NewScanner(stdout)
	answered := make(chan bool, 1)
	go func() { answered <- lines.Scan() && lines.Text() == "answered" }()
	select {
	case ok := <-answered:
		if !ok {
			t.Fatalf("probe: %q %s", lines.Text(), stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("the probe had no answer within 30s: %s", stderr.String())
	}
	before := tortiePods(t, cp)
	start := time.Now()
	kubectl(t, cp, "-n", "kube-system", "rollout", "restart", "daemonset/tortie-node")
	if _, err := cp.Kubectl(ctx, "-n", "kube-system", "rollout", "status", "daemonset/tortie-node", "--timeout=240s"); err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	after := tortiePods(t, cp)
	for n, p := range before {
		if after[n] == p {
			t.Errorf("tortie-node pod %s on %s was not replaced", p, n)
		}
	}
	// Traffic after the last new tortied is ready, then the probe's
	// result.
	reply = kubectl(t, cp, "exec", client.name, "--", "/tortie-echo", "get", "http://"+target.ip+":8080/")
	if !strings.Contains(reply, `"client":"`+client.ip+":") {
		t.Fatalf("after the rollout, %s -> %s: %s", client.name, target.name, reply)
	}
	stdin.Close()
	var last string
	for lines.Scan() {
		last = lines.Text()
	}
	if err := probe.Wait(); err != nil {
		t.Fatalf("probe: %v: %s", err, stderr.String())
	}
	var r struct {
		Sent, Received int
		LongestGapMs   float64
	}
	if err := json.Unmarshal([]byte(last), &r); err != nil {
		t.Fatalf("probe output %q: %v", last, err)
	}
	t.Logf("rollout restart of %d tortie-node pods took %v; probe %s -> %s every 10 ms: %d sent, %d answered, longest gap %.0f ms",
		len(before), took.Round(time.Second), client.node, target.node, r.Sent, r.Received, r.LongestGapMs)
	if r.Received == 0 || r.Received > r.Sent {
		t.Fatalf("probe: %+v", r)
	}
	// Every pod is still the same, attached, with the same address.
	for _, p := range deployedEcho(t, cp) {
		if !containsPod(echo, p) {
			t.Errorf("pod %v after the rollout was not there before (%v)", p, echo)
		}
	}
	if rs := kubectl(t, cp, "get", "pods", "-l", "app=echo", "-o", "jsonpath={.items[*].status.containerStatuses[*].restartCount}"); strings.Trim(rs, "0 ") != "" {
		t.Errorf("echo containers restarted: %s", rs)
	}
	reachAll := func(when string) {
		t.Helper()
		for _, p := range echo {
			if p == client {
				continue
			}
			reply := kubectl(t, cp, "exec", client.name, "--", "/tortie-echo", "get", "http://"+p.ip+":8080/")
			if !strings.Contains(reply, `"hostname":"`+p.name+`"`) {
				t.Errorf("%s, %s -> %s: %s", when, client.name, p.name, reply)
			}
		}
	}
	reachAll("after the rollout")

	// A kubelet restart (killed, then started again on its state) keeps
	// its node's pods running and attached: the same pods, addresses and
	// containers, probed all along.
	n := l.Node(target.node)
	if err := cp.StopKubelet(n); err != nil {
		t.Fatal(err)
	}
	reply = kubectl(t, cp, "exec", client.name, "--", "/tortie-echo", "get", "http://"+target.ip+":8080/")
	if !strings.Contains(reply, `"hostname":"`+target.name+`"`) {
		t.Fatalf("with the kubelet of %s down, %s -> %s: %s", n.Name, client.name, target.name, reply)
	}
	if err := l.StartKubelet(cp, k8sBinDir(t), n, n.Containerd.Socket); err != nil {
		t.Fatal(err)
	}
	waitNodesReady(t, cp, l)
	kubectl(t, cp, "rollout", "status", "deployment/echo", "--timeout=120s")
	if now := deployedEcho(t, cp); len(now) != len(echo) || !containsPod(now, target) {
		t.Errorf("pods after the kubelet restart %v, before %v", now, echo)
	}
	if rs := kubectl(t, cp, "get", "pods", "-l", "app=echo", "-o", "jsonpath={.items[*].status.containerStatuses[*].restartCount}"); strings.Trim(rs, "0 ") != "" {
		t.Errorf("echo containers restarted with the kubelet: %s", rs)
	}
	reachAll("after the kubelet restart")
}

// tortiePods maps each node to its tortie-node pod.
func tortiePods(t *testing.T, cp *lab.ControlPlane) map[string]string {
	t.Helper()
	out := kubectl(t, cp, "-n", "kube-system", "get", "pods", "-l", "k8s-app=tortie-node", "-o",
		`jsonpath={range .items[*]}{.spec.nodeName} {.metadata.name}{"\n"}{end}`)
	m := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if f := strings.Fields(line); len(f) == 2 {
			m[f[0]] = f[1]
		}
	}
	return m
}

type pod struct{ name, node, ip string }

func containsPod(ps []pod, p pod) bool {
	for _, q := range ps {
		if q == p {
			return true
		}
	}
	return false
}

// deployEcho runs a Deployment of n echo pods spread over the nodes, with
// readiness and liveness probes, and returns them once all are ready.
// Liveness is probed as Kubernetes defaults it (every 10 s, restart after
// 3 failures): a rolling restart of tortie stops forwarding to a node's
// pods for a few seconds (see README), which a probe every 2 s can
// straddle three times.
func deployEcho(t *testing.T, cp *lab.ControlPlane, n int) []pod {
	t.Helper()
	// Created with no pod and scaled once its template is whole: pods of a
	// first template would count against the spread while the patched
	// ones are placed (a rollout), and could leave a node without one.
	kubectl(t, cp, "create", "deployment", "echo", "--image", images.Echo, "--replicas", "0", "--port", "8080")
	kubectl(t, cp, "patch", "deployment", "echo", "--type", "json", "-p",
		`[{"op":"add","path":"/spec/template/spec/containers/0/imagePullPolicy","value":"Never"},`+
			`{"op":"add","path":"/spec/template/spec/containers/0/readinessProbe","value":{"httpGet":{"path":"/healthz","port":8080},"periodSeconds":2}},`+
			`{"op":"add","path":"/spec/template/spec/containers/0/livenessProbe","value":{"httpGet":{"path":"/healthz","port":8080},"periodSeconds":10,"failureThreshold":3}},`+
			`{"op":"add","path":"/spec/template/spec/topologySpreadConstraints","value":[{"maxSkew":1,`+
			`"topologyKey":"kubernetes.io/hostname","whenUnsatisfiable":"DoNotSchedule","labelSelector":{"matchLabels":{"app":"echo"}}}]}]`)
	kubectl(t, cp, "scale", "deployment/echo", "--replicas", fmt.Sprint(n))
	kubectl(t, cp, "rollout", "status", "deployment/echo", "--timeout=180s")
	ps := deployedEcho(t, cp)
	if len(ps) != n {
		t.Fatalf("echo pods %v: want %d", ps, n)
	}
	return ps
}

// deployedEcho lists the echo pods that are running.
func deployedEcho(t *testing.T, cp *lab.ControlPlane) []pod {
	t.Helper()
	out := kubectl(t, cp, "get", "pods", "-l", "app=echo", "--field-selector", "status.phase=Running", "-o",
		`jsonpath={range .items[*]}{.metadata.name} {.spec.nodeName} {.status.podIP}{"\n"}{end}`)
	var ps []pod
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.Fields(line)
		if len(f) != 3 || !strings.HasPrefix(f[2], "10.244.") {
			t.Fatalf("pod line %q: want name, node and an address from 10.244.0.0/16", line)
		}
		ps = append(ps, pod{f[0], f[1], f[2]})
	}
	return ps
}
