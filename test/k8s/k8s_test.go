// Package k8s holds the integration tests that run a real Kubernetes
// control plane (built by `make k8s-bins`) on a tortie lab. They need root
// and are kept apart from package test so that their cost is seen on its
// own.
package k8s

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tortie-net/tortie/api"
	"github.com/tortie-net/tortie/internal/labtest"
	"github.com/tortie-net/tortie/internal/testutil"
	"github.com/tortie-net/tortie/lab"
	"github.com/tortie-net/tortie/lab/images"
)

func TestMain(m *testing.M) { labtest.Main(m, "../..") }

// k8sBinDir is where `make k8s-bins` put the Kubernetes binaries.
func k8sBinDir(t *testing.T) string {
	t.Helper()
	if d := os.Getenv("TORTIE_K8S_BIN"); d != "" {
		return d
	}
	out, err := exec.Command("make", "-s", "-C", "../..", "k8s-bin-dir").Output()
	if err != nil {
		t.Fatalf("make k8s-bin-dir: %v", err)
	}
	return strings.TrimSpace(string(out))
}

// kubectl runs kubectl as the administrator and fails the test on error.
func kubectl(t *testing.T, cp *lab.ControlPlane, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := cp.Kubectl(ctx, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestControlPlane runs kube-apiserver, kube-controller-manager and
// kube-scheduler on the etcd of a 2-node tortie lab and checks that each
// does its job: the API server serves and publishes the `kubernetes`
// Service, the controllers give a new namespace its service account, and
// the controllers mirror the API server's endpoints into an EndpointSlice.
func TestControlPlane(t *testing.T) {
	testutil.RequireRoot(t)
	bins := k8sBinDir(t)
	l := labtest.Up(t, lab.Options{Name: "tk8", Nodes: 2, Pods: 0, Mode: "vxlan"})
	cp, err := l.StartControlPlane(bins)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, c := range []string{"kube-apiserver", "kube-controller-manager", "kube-scheduler"} {
				if b, err := os.ReadFile(cp.Dir + "/" + c + ".log"); err == nil {
					t.Logf("%s log:\n%s", c, labtest.TailLines(string(b), 20))
				}
			}
		}
	})
	if out := kubectl(t, cp, "get", "namespaces", "-o", "name"); !strings.Contains(out, "namespace/kube-system") {
		t.Fatalf("namespaces: %s", out)
	}
	if ip := kubectl(t, cp, "get", "service", "kubernetes", "-o", "jsonpath={.spec.clusterIP}"); ip != lab.KubernetesServiceIP {
		t.Fatalf("kubernetes Service has cluster IP %q, want %s", ip, lab.KubernetesServiceIP)
	}
	kubectl(t, cp, "create", "namespace", "probe")
	testutil.WaitFor(t, 60*time.Second, "the service account controller to create probe/default", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, err := cp.Kubectl(ctx, "-n", "probe", "get", "serviceaccount", "default")
		return err == nil
	})
	testutil.WaitFor(t, 60*time.Second, "an EndpointSlice of the kubernetes Service with the API server's address", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		out, err := cp.Kubectl(ctx, "get", "endpointslices", "-l", "kubernetes.io/service-name=kubernetes",
			"-o", "jsonpath={.items[*].endpoints[*].addresses[*]}")
		return err == nil && strings.Contains(out, lab.APIServerAddr)
	})
}

// TestKubeProxyKubernetesService runs kube-proxy on every node, in
// iptables and in nftables mode, and reaches the API server through the
// `kubernetes` Service (10.96.0.1:443, DNATed by kube-proxy to
// 10.0.1.254:6443) from a node and from a pod. From the pod, the packet
// goes through tortie to the node's stack, is DNATed there and leaves with
// the node's address (natOutgoing: the API server lies outside every pool).
func TestKubeProxyKubernetesService(t *testing.T) {
	testutil.RequireRoot(t)
	bins := k8sBinDir(t)
	for _, mode := range []string{"iptables", "nftables"} {
		t.Run(mode, func(t *testing.T) {
			l := labtest.Up(t, lab.Options{Name: "tkp", Nodes: 2, Pods: 1, Mode: "vxlan"})
			cp, err := l.StartControlPlane(bins)
			if err != nil {
				t.Fatal(err)
			}
			for _, n := range l.Nodes {
				if err := l.StartKubeProxy(cp, bins, n, mode); err != nil {
					t.Fatal(err)
				}
			}
			t.Cleanup(func() {
				if t.Failed() {
					if b, err := os.ReadFile(cp.Dir + "/kube-proxy-n1.log"); err == nil {
						t.Logf("kube-proxy on n1:\n%s", labtest.TailLines(string(b), 25))
					}
				}
			})
			for _, where := range []string{l.Nodes[0].Netns, l.Nodes[1].Pods[0].Netns} {
				testutil.WaitFor(t, 60*time.Second, "the API server through 10.96.0.1:443 from "+where, func() bool {
					ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
					defer cancel()
					out, err := exec.CommandContext(ctx, "ip", "netns", "exec", where, cp.KubectlBin, "--kubeconfig", cp.Admin,
						"--server", "https://"+lab.KubernetesServiceIP+":443", "get", "--raw", "/readyz").CombinedOutput()
					return err == nil && strings.TrimSpace(string(out)) == "ok"
				})
			}
		})
	}
}

// TestDeployManifests has the lab's API server validate deploy/ (a
// server-side dry run checks every field against the real schemas and
// admission) and then creates it for real: the DaemonSet, its RBAC and its
// ConfigMap exist afterwards.
func TestDeployManifests(t *testing.T) {
	testutil.RequireRoot(t)
	bins := k8sBinDir(t)
	l := labtest.Up(t, lab.Options{Name: "tkd", Nodes: 1, Pods: 0, Mode: "vxlan"})
	cp, err := l.StartControlPlane(bins)
	if err != nil {
		t.Fatal(err)
	}
	manifest, err := filepath.Abs("../../deploy/tortie.yaml")
	if err != nil {
		t.Fatal(err)
	}
	kubectl(t, cp, "apply", "--dry-run=server", "-f", manifest)
	kubectl(t, cp, "apply", "-f", manifest)
	for _, obj := range []string{"daemonset/tortie-node", "serviceaccount/tortie-node", "configmap/tortie-config"} {
		kubectl(t, cp, "-n", "kube-system", "get", obj)
	}
	kubectl(t, cp, "get", "clusterrolebinding/tortie-node")
	// The service account may read what policy needs.
	if out := kubectl(t, cp, "auth", "can-i", "watch", "networkpolicies", "--as", "system:serviceaccount:kube-system:tortie-node"); strings.TrimSpace(out) != "yes" {
		t.Fatalf("tortie-node may not watch networkpolicies: %s", out)
	}
}

// TestKubeletRunsPods runs a kubelet with a containerd of its own on each
// of two lab nodes: both register and become Ready (their runtime's
// network is ready once tortie-cni's conflist is there), a Deployment of
// four echo pods is scheduled across them, every pod gets an address from
// tortie's pool through the kubelet, containerd and tortie-cni, an IPAM
// handle named as Calico names it, and the kubelet's readiness probes reach
// the pods; one pod reaches another on the other node (kubectl exec), and
// deleting a pod releases its address.
func TestKubeletRunsPods(t *testing.T) {
	testutil.RequireRoot(t)
	bins := k8sBinDir(t)
	work := t.TempDir()
	archive := filepath.Join(work, "images.tar")
	ctx := context.Background()
	if err := images.Lab(ctx, ".", work, archive); err != nil {
		t.Fatal(err)
	}
	l := labtest.Up(t, lab.Options{Name: "tkl", Nodes: 2, Pods: 0, Mode: "vxlan", Containerd: true, Images: archive})
	cp, err := l.StartControlPlane(bins)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { logKubelets(t, cp, l) })
	for _, n := range l.Nodes {
		if err := l.StartKubelet(cp, bins, n, n.Containerd.Socket); err != nil {
			t.Fatal(err)
		}
	}
	waitNodesReady(t, cp, l)
	deploy := filepath.Join(work, "echo.yaml")
	if err := os.WriteFile(deploy, []byte(`apiVersion: apps/v1
kind: Deployment
metadata: {name: echo, namespace: default}
spec:
  replicas: 4
  selector: {matchLabels: {app: echo}}
  template:
    metadata: {labels: {app: echo}}
    spec:
      # Two per node: the test needs pods on both.
      topologySpreadConstraints:
        - {maxSkew: 1, topologyKey: kubernetes.io/hostname, whenUnsatisfiable: DoNotSchedule, labelSelector: {matchLabels: {app: echo}}}
      containers:
        - name: echo
          image: `+images.Echo+`
          imagePullPolicy: Never
          ports: [{containerPort: 8080}]
          readinessProbe:
            httpGet: {path: /healthz, port: 8080}
            periodSeconds: 2
`), 0o644); err != nil {
		t.Fatal(err)
	}
	kubectl(t, cp, "apply", "-f", deploy)
	kubectl(t, cp, "rollout", "status", "deployment/echo", "--timeout=120s")
	out := kubectl(t, cp, "get", "pods", "-l", "app=echo", "-o", `jsonpath={range .items[*]}{.metadata.name} {.spec.nodeName} {.status.podIP}{"\n"}{end}`)
	type pod struct{ name, node, ip string }
	var pods []pod
	nodes := map[string]bool{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.Fields(line)
		if len(f) != 3 || !strings.HasPrefix(f[2], "10.244.") {
			t.Fatalf("pod line %q: want name, node and an address from 10.244.0.0/16", line)
		}
		pods = append(pods, pod{f[0], f[1], f[2]})
		nodes[f[1]] = true
	}
	if len(pods) != 4 || len(nodes) != 2 {
		t.Fatalf("pods %v across nodes %v: want 4 across 2", pods, nodes)
	}
	var a, b pod
	for _, p := range pods {
		if p.node == "n1" {
			a = p
		} else {
			b = p
		}
	}
	reply := kubectl(t, cp, "exec", a.name, "--", "/tortie-echo", "get", "http://"+b.ip+":8080/")
	if !strings.Contains(reply, `"client":"`+a.ip+":") || !strings.Contains(reply, `"hostname":"`+b.name+`"`) {
		t.Fatalf("%s (on n1) -> %s (on n2): %s", a.name, b.name, reply)
	}
	kubectl(t, cp, "delete", "pod", b.name, "--wait=true")
	testutil.WaitFor(t, 60*time.Second, "the deleted pod's address to be released", func() bool {
		v, err := api.NewClient(l.Nodes[1].Socket).IPAM()
		if err != nil {
			return false
		}
		for _, h := range v.Handles {
			if len(h.IPs) > 0 && h.IPs[0] == b.ip {
				return false
			}
		}
		return true
	})
}

// TestDNSAndServices runs CoreDNS as a Deployment behind the kube-dns
// Service (10.96.0.10) and a Service of echo pods on the 3-node cluster
// of TestTortieDaemonSet (tortie deployed from deploy/; n1 and n3 routed
// natively, n2 over VXLAN, BGP), with kube-proxy in each mode: ClusterIPs over TCP and UDP from a pod to a backend on another
// node, on its own node and to itself, and from the node itself; a pod
// resolves kubernetes.default and a Service of its own
// namespace through CoreDNS, reaches that Service by name (its replies
// come back through the node that DNATed them), and reads the API server
// through the `kubernetes` Service with its service-account token.
func TestDNSAndServices(t *testing.T) {
	for _, mode := range []string{"iptables", "nftables"} {
		t.Run(mode, func(t *testing.T) {
			start := time.Now()
			step := func(what string) { t.Logf("%s at %.0fs", what, time.Since(start).Seconds()) }
			l, cp, work := daemonSetCluster(t, lab.Options{Name: "tks" + mode[:1], Nodes: 3, Mode: "vxlan-crosssubnet", BGP: true}, mode)
			step("cluster ready")
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			if err := cp.DeployCoreDNS(ctx, images.CoreDNS); err != nil {
				t.Fatal(err)
			}
			echo := deployEcho(t, cp, 4)
			step("CoreDNS and echo pods running")
			kubectl(t, cp, "expose", "deployment", "echo", "--port", "80", "--target-port", "8080")
			svcIP := kubectl(t, cp, "get", "service", "echo", "-o", "jsonpath={.spec.clusterIP}")
			client := echo[0].name
			singleBackendServices(t, cp, l, work, echo)
			step("single-backend Services checked")
			inPod := func(args ...string) string {
				return kubectl(t, cp, append([]string{"exec", client, "--", "/tortie-echo"}, args...)...)
			}
			if got := strings.TrimSpace(inPod("resolve", "kubernetes.default")); got != lab.KubernetesServiceIP {
				t.Fatalf("kubernetes.default resolves to %q, want %s", got, lab.KubernetesServiceIP)
			}
			if got := strings.TrimSpace(inPod("resolve", "echo")); got != svcIP {
				t.Fatalf("echo resolves to %q, want its ClusterIP %s", got, svcIP)
			}
			// Several connections, so that backends on both nodes answer.
			seen := map[string]bool{}
			for range 8 {
				reply := inPod("get", "http://echo/")
				if !strings.Contains(reply, `"hostname":"echo-`) {
					t.Fatalf("echo Service answered %s", reply)
				}
				seen[reply[strings.Index(reply, `"hostname"`):]] = true
			}
			if len(seen) < 2 {
				t.Errorf("8 connections to the echo Service reached %d backend(s)", len(seen))
			}
			if out := inPod("apiserver", "/api"); !strings.Contains(out, `"kind":"APIVersions"`) {
				t.Fatalf("GET /api through the kubernetes Service: %s", out)
			}
			step("DNS and the echo Service checked")

			// NodePort from the outside host, to every node, over TCP and
			// UDP: with externalTrafficPolicy Cluster the backend may be on
			// another node; with Local, only a node's own backends answer,
			// and they see the client's own address.
			np := filepath.Join(work, "echo-np.yaml")
			if err := os.WriteFile(np, []byte(`apiVersion: v1
kind: Service
metadata: {name: echo-np, namespace: default}
spec:
  type: NodePort
  selector: {app: echo}
  ports:
    - {name: tcp, port: 80, targetPort: 8080, protocol: TCP}
    - {name: udp, port: 80, targetPort: 8080, protocol: UDP}
`), 0o644); err != nil {
				t.Fatal(err)
			}
			kubectl(t, cp, "apply", "-f", np)
			tcpPort := kubectl(t, cp, "get", "service", "echo-np", "-o", "jsonpath={.spec.ports[0].nodePort}")
			udpPort := kubectl(t, cp, "get", "service", "echo-np", "-o", "jsonpath={.spec.ports[1].nodePort}")
			outside := func(args ...string) (string, error) {
				c, cancel := context.WithTimeout(context.Background(), 15*time.Second)
				defer cancel()
				out, err := exec.CommandContext(c, "ip", append([]string{"netns", "exec", l.Name + "-ext", filepath.Join(work, "tortie-echo")}, args...)...).CombinedOutput()
				return string(out), err
			}
			for _, policy := range []string{"Cluster", "Local"} {
				kubectl(t, cp, "patch", "service", "echo-np", "-p", `{"spec":{"externalTrafficPolicy":"`+policy+`"}}`)
				for _, n := range l.Nodes {
					for _, args := range [][]string{
						{"get", "http://" + n.Addr() + ":" + tcpPort + "/"},
						{"udp", n.Addr() + ":" + udpPort, "hello"},
					} {
						// kube-proxy applies a changed policy a moment later:
						// wait for the answer the policy gives.
						what := "NodePort " + strings.Join(args, " ") + " (" + policy + ") from the outside host"
						if policy == "Local" {
							what += ", the backend seeing the client's address " + lab.OutsideAddr
						}
						testutil.WaitFor(t, 30*time.Second, what, func() bool {
							out, err := outside(args...)
							ok := err == nil && strings.Contains(out, `"hostname":"echo-`)
							if policy == "Local" {
								ok = ok && strings.Contains(out, `"client":"`+lab.OutsideAddr+":")
							}
							return ok
						})
					}
				}
				step("NodePorts with externalTrafficPolicy " + policy + " checked")
			}

			// sessionAffinity ClientIP: every connection of one client
			// reaches the same backend.
			kubectl(t, cp, "patch", "service", "echo", "-p", `{"spec":{"sessionAffinity":"ClientIP"}}`)
			testutil.WaitFor(t, 30*time.Second, "eight connections of one client to reach one backend", func() bool {
				backends := map[string]bool{}
				for range 8 {
					reply := inPod("get", "http://echo/")
					backends[reply[strings.Index(reply, `"hostname"`):]] = true
				}
				return len(backends) == 1
			})
			step("session affinity checked")
		})
	}
}

// waitNodesReady waits until the lab's nodes are registered and Ready.
func waitNodesReady(t *testing.T, cp *lab.ControlPlane, l *lab.Lab) {
	t.Helper()
	testutil.WaitFor(t, 120*time.Second, "every node Ready", func() bool {
		c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		out, err := cp.Kubectl(c, "get", "nodes", "-o", `jsonpath={range .items[*]}{.metadata.name}={.status.conditions[?(@.type=="Ready")].status} {end}`)
		if err != nil {
			return false
		}
		for _, n := range l.Nodes {
			if !strings.Contains(" "+out, " "+n.Name+"=True ") {
				return false
			}
		}
		return true
	})
}

// singleBackendServices checks ClusterIP Services of one backend each,
// TCP and UDP on port 80: from a client pod (one with another pod on its
// node) to a pod on another
// node, to another pod on its own node and to itself (hairpin), and from
// the client's node (host network) to each. The backend that answers must
// be the one the Service selects.
func singleBackendServices(t *testing.T, cp *lab.ControlPlane, l *lab.Lab, work string, echo []pod) {
	t.Helper()
	// The client: a pod with another pod beside it on its node.
	perNode := map[string]int{}
	for _, p := range echo {
		perNode[p.node]++
	}
	i := slices.IndexFunc(echo, func(p pod) bool { return perNode[p.node] > 1 })
	if i < 0 {
		t.Fatalf("echo pods %v: no node runs two", echo)
	}
	client := echo[i]
	backends := map[string]pod{"self": client}
	for _, p := range echo {
		if p == client {
			continue
		}
		if p.node == client.node && backends["same-node"].name == "" {
			backends["same-node"] = p
		}
		if p.node != client.node && backends["other-node"].name == "" {
			backends["other-node"] = p
		}
	}
	if len(backends) != 3 {
		t.Fatalf("echo pods %v: want one beside %s on its node and one on another", echo, client.name)
	}
	hostNetns := l.Node(client.node).Netns
	for what, b := range backends {
		kubectl(t, cp, "label", "pod", b.name, "one="+what)
		manifest := filepath.Join(work, "one-"+what+".yaml")
		if err := os.WriteFile(manifest, []byte(`apiVersion: v1
kind: Service
metadata: {name: one-`+what+`, namespace: default}
spec:
  selector: {one: `+what+`}
  ports:
    - {name: tcp, port: 80, targetPort: 8080, protocol: TCP}
    - {name: udp, port: 80, targetPort: 8080, protocol: UDP}
`), 0o644); err != nil {
			t.Fatal(err)
		}
		kubectl(t, cp, "apply", "-f", manifest)
		ip := kubectl(t, cp, "get", "service", "one-"+what, "-o", "jsonpath={.spec.clusterIP}")
		want := `"hostname":"` + b.name + `"`
		for _, c := range []struct{ from, mode, target string }{
			{"pod", "get", "http://" + ip + "/"}, {"pod", "udp", ip + ":80"},
			{"node", "get", "http://" + ip + "/"}, {"node", "udp", ip + ":80"},
		} {
			args := []string{c.mode, c.target}
			if c.mode == "udp" {
				args = append(args, "hello")
			}
			var out string
			// kube-proxy programs a new Service a moment after it exists.
			testutil.WaitFor(t, 30*time.Second, fmt.Sprintf("%s %s from the %s of %s to %s (%s)", c.mode, c.target, c.from, client.name, b.name, what), func() bool {
				ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
				defer cancel()
				var err error
				if c.from == "pod" {
					out, err = cp.Kubectl(ctx, append([]string{"exec", client.name, "--", "/tortie-echo"}, args...)...)
				} else {
					var b []byte
					b, err = exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", hostNetns, filepath.Join(work, "tortie-echo")}, args...)...).CombinedOutput()
					out = string(b)
				}
				return err == nil && strings.Contains(out, want)
			})
		}
	}
}

// logKubelets logs the end of every node's kubelet log if t failed.
func logKubelets(t *testing.T, cp *lab.ControlPlane, l *lab.Lab) {
	if !t.Failed() {
		return
	}
	for _, n := range l.Nodes {
		if b, err := os.ReadFile(cp.Dir + "/kubelet-" + n.Name + ".log"); err == nil {
			t.Logf("kubelet on %s:\n%s", n.Name, labtest.TailLines(string(b), 25))
		}
	}
}
