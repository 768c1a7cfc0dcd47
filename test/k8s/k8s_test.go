// Package k8s holds the integration tests that run a real Kubernetes
// control plane (built by `make k8s-bins`) on a tortie lab. They need root
// and are kept apart from package test so that their cost is seen on its
// own.
package k8s

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tortie-net/tortie/internal/labtest"
	"github.com/tortie-net/tortie/internal/testutil"
	"github.com/tortie-net/tortie/lab"
)

func TestMain(m *testing.M) { labtest.Main(m, "../..", nil) }

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
