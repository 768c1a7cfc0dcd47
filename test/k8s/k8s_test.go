// Package k8s holds the integration tests that run a real Kubernetes
// control plane (built by `make k8s-bins`) on a tortie lab. They need root
// and are kept apart from package test so that their cost is seen on its
// own.
package k8s

import (
	"context"
	"os"
	"os/exec"
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
