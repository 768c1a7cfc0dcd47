package kubetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"

	"github.com/tortie-net/tortie/datastore/etcdtest"
	"github.com/tortie-net/tortie/deploy"
)

func TestStart(t *testing.T) {
	begin := time.Now()
	s := Start(t)
	t.Logf("Start took %v", time.Since(begin).Round(time.Millisecond))

	if len(s.CRDs) != 17 {
		t.Errorf("%d CRDs installed, want the 17 of deploy.CRDs", len(s.CRDs))
	}
	dyn, err := dynamic.NewForConfig(s.Config)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	pools := schema.GroupVersionResource{Group: "crd.projectcalico.org", Version: "v1", Resource: "ippools"}
	pool := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "crd.projectcalico.org/v1",
		"kind":       "IPPool",
		"metadata":   map[string]any{"name": "pool-a"},
		"spec": map[string]any{
			"cidr": "10.244.0.0/16", "blockSize": int64(26), "vxlanMode": "Always", "ipipMode": "Never", "natOutgoing": true,
			// A field tortie does not know must be kept.
			"someFutureField": map[string]any{"x": "y"},
		},
		"status": map[string]any{"conditions": []any{map[string]any{"type": "Allocatable", "status": "True"}}},
	}}
	if _, err := dyn.Resource(pools).Create(ctx, pool, metav1.CreateOptions{}); err != nil {
		t.Fatalf("creating an IPPool: %v", err)
	}
	got, err := dyn.Resource(pools).Get(ctx, "pool-a", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("getting the IPPool: %v", err)
	}
	if cidr, _, _ := unstructured.NestedString(got.Object, "spec", "cidr"); cidr != "10.244.0.0/16" {
		t.Errorf("IPPool spec.cidr = %q, want 10.244.0.0/16", cidr)
	}
	if x, _, _ := unstructured.NestedString(got.Object, "spec", "someFutureField", "x"); x != "y" {
		t.Errorf("IPPool lost a field it does not know: spec = %v", got.Object["spec"])
	}
	if conds, _, _ := unstructured.NestedSlice(got.Object, "status", "conditions"); len(conds) != 1 {
		t.Errorf("IPPool status = %v, want the one condition written", got.Object["status"])
	}
	if got.GetResourceVersion() == "" || got.GetUID() == "" {
		t.Errorf("IPPool has no resource version or UID: %v", got.Object["metadata"])
	}

	policies := schema.GroupVersionResource{Group: "crd.projectcalico.org", Version: "v1", Resource: "networkpolicies"}
	policy := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "crd.projectcalico.org/v1",
		"kind":       "NetworkPolicy",
		"metadata":   map[string]any{"name": "allow-dns", "namespace": "default"},
		"spec": map[string]any{
			"selector": "all()",
			"egress":   []any{map[string]any{"action": "Allow", "protocol": "UDP", "destination": map[string]any{"ports": []any{int64(53)}}}},
		},
	}}
	if _, err := dyn.Resource(policies).Namespace("default").Create(ctx, policy, metav1.CreateOptions{}); err != nil {
		t.Fatalf("creating a NetworkPolicy: %v", err)
	}
	gotPolicy, err := dyn.Resource(policies).Namespace("default").Get(ctx, "allow-dns", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("getting the NetworkPolicy: %v", err)
	}
	if gotPolicy.GetNamespace() != "default" {
		t.Errorf("NetworkPolicy in namespace %q, want default", gotPolicy.GetNamespace())
	}
	if sel, _, _ := unstructured.NestedString(gotPolicy.Object, "spec", "selector"); sel != "all()" {
		t.Errorf("NetworkPolicy spec.selector = %q, want all()", sel)
	}
	// A namespaced kind has no objects outside a namespace.
	if _, err := dyn.Resource(policies).Create(ctx, policy, metav1.CreateOptions{}); err == nil {
		t.Error("a NetworkPolicy was created without a namespace")
	}

	// kubectl works with the kubeconfig, and shows IPPool's columns. Its
	// discovery cache goes with the test, not into the home directory.
	out, err := exec.CommandContext(ctx, s.Kubectl(), "--kubeconfig", s.Kubeconfig, "--cache-dir", t.TempDir(),
		"get", "ippools").CombinedOutput()
	if err != nil {
		t.Fatalf("kubectl get ippools: %v: %s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) != 2 {
		t.Fatalf("kubectl get ippools printed %q, want a header and one pool", out)
	}
	if header := strings.Fields(lines[0]); strings.Join(header, " ") != "NAME CIDR VXLAN IPIP NAT AGE" {
		t.Errorf("kubectl get ippools header %q, want NAME CIDR VXLAN IPIP NAT AGE", lines[0])
	}
	if f := strings.Fields(lines[1]); len(f) != 6 || f[0] != "pool-a" || f[1] != "10.244.0.0/16" || f[2] != "Always" || f[3] != "Never" || f[4] != "true" {
		t.Errorf("kubectl get ippools row %q, want pool-a 10.244.0.0/16 Always Never true <age>", lines[1])
	}

	t.Run("deploy", func(t *testing.T) { testDeployRBAC(ctx, t, s) })
}

// testDeployRBAC applies deploy/tortie.yaml and checks, with the API
// server's own authorizer, that its service account may use the
// Kubernetes API datastore.
func testDeployRBAC(ctx context.Context, t *testing.T, s *APIServer) {
	cache := t.TempDir()
	// kubectl's standard output; its warnings go to standard error, shown
	// with an error.
	kubectl := func(args ...string) (string, error) {
		args = append([]string{"--kubeconfig", s.Kubeconfig, "--cache-dir", cache}, args...)
		var stderr bytes.Buffer
		cmd := exec.CommandContext(ctx, s.Kubectl(), args...)
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			err = fmt.Errorf("%w: %s", err, strings.TrimSpace(stderr.String()))
		}
		return strings.TrimSpace(string(out)), err
	}
	manifest := filepath.Join(t.TempDir(), "tortie.yaml")
	if err := os.WriteFile(manifest, deploy.Manifest, 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := kubectl("apply", "-f", manifest); err != nil {
		t.Fatalf("kubectl apply -f tortie.yaml: %v: %s", err, out)
	}
	const sa = "system:serviceaccount:kube-system:tortie-node"
	for _, c := range []struct {
		verb, resource string
		want           string
	}{
		{"create", "ippools.crd.projectcalico.org", "yes"},
		{"delete", "workloadendpoints.crd.projectcalico.org", "yes"},
		{"watch", "ipamblocks.crd.projectcalico.org", "yes"},
		{"create", "nodes", "yes"},
		{"update", "nodes", "yes"},
		{"update", "leases.coordination.k8s.io", "yes"},
		{"delete", "leases.coordination.k8s.io", "yes"},
		{"watch", "pods", "yes"},
		{"watch", "services", "yes"},
		{"list", "endpointslices.discovery.k8s.io", "yes"},
		{"watch", "endpointslices.discovery.k8s.io", "yes"},
		// Nothing beyond what it needs.
		{"delete", "nodes", "no"},
		{"create", "pods", "no"},
		{"get", "secrets", "no"},
		{"update", "services", "no"},
		{"create", "endpointslices.discovery.k8s.io", "no"},
	} {
		// can-i exits 1 when the answer is no; its output says which.
		out, _ := kubectl("auth", "can-i", c.verb, c.resource, "--as", sa)
		if out != c.want {
			t.Errorf("may tortie-node %s %s? %q, want %s", c.verb, c.resource, out, c.want)
		}
	}
}

// TestStartPortTaken: when the port chosen for kube-apiserver is taken
// before it binds it, kube-apiserver exits saying so, and Start brings it
// up on another port.
func TestStartPortTaken(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	taken := l.Addr().(*net.TCPAddr).Port
	picks := 0
	s := startOn(t, func(tb testing.TB) int {
		picks++
		if picks == 1 {
			return taken
		}
		return etcdtest.FreePort(tb)
	})
	if picks != 2 || strings.HasSuffix(s.URL, ":"+strconv.Itoa(taken)) {
		t.Fatalf("ports picked: %d, API server at %s; want it on a second port, not %d", picks, s.URL, taken)
	}
	if _, err := os.Stat(s.Log + ".1"); err != nil {
		t.Errorf("the first attempt's log was not kept: %v", err)
	}
	cs, err := dynamic.NewForConfig(s.Config)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	nss := schema.GroupVersionResource{Version: "v1", Resource: "namespaces"}
	if _, err := cs.Resource(nss).Get(ctx, "default", metav1.GetOptions{}); err != nil {
		t.Fatalf("the API server Start returned does not answer: %v", err)
	}
}

func TestParseCRDs(t *testing.T) {
	for _, c := range []struct{ name, yaml, err string }{
		{"not a CRD", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n", "not a CustomResourceDefinition"},
		{"no version", "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata: {name: xs.g}\n" +
			"spec: {group: g, names: {plural: xs, kind: X}, scope: Cluster, versions: []}\n", "one version"},
		{"bad YAML", "kind: [\n", "yaml"},
	} {
		if _, err := parseCRDs([]byte(c.yaml)); err == nil || !strings.Contains(err.Error(), c.err) {
			t.Errorf("%s: error %v, want one saying %q", c.name, err, c.err)
		}
	}
	crds, err := parseCRDs([]byte("# only a comment\n---\n" +
		"apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata: {name: xs.g}\n" +
		"spec: {group: g, names: {plural: xs, kind: X}, scope: Namespaced, versions: [{name: v2}]}\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := CRD{Resource: schema.GroupVersionResource{Group: "g", Version: "v2", Resource: "xs"}, Kind: "X", Namespaced: true}
	if len(crds) != 1 || crds[0].CRD != want {
		t.Errorf("parsed %+v, want one %+v", crds, want)
	}
}

func TestBinDir(t *testing.T) {
	with := t.TempDir()
	if err := os.WriteFile(filepath.Join(with, "kube-apiserver"), []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	notExec := t.TempDir()
	if err := os.WriteFile(filepath.Join(notExec, "kube-apiserver"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	without := t.TempDir()
	makeSays := func(dir string, err error) func() (string, error) {
		return func() (string, error) { return dir, err }
	}
	makeMustNotRun := func() (string, error) {
		t.Error("make asked although the environment names the directory")
		return "", nil
	}
	for _, c := range []struct {
		name      string
		env       string
		fromMake  func() (string, error)
		dir       string
		skip, err bool
	}{
		{name: "env", env: with, fromMake: makeMustNotRun, dir: with},
		{name: "env without kube-apiserver fails", env: without, fromMake: makeMustNotRun, err: true},
		{name: "env with a kube-apiserver not executable fails", env: notExec, fromMake: makeMustNotRun, err: true},
		{name: "make", fromMake: makeSays(with, nil), dir: with},
		{name: "make's directory without kube-apiserver skips", fromMake: makeSays(without, nil), skip: true},
		{name: "make failing skips", fromMake: makeSays("", errors.New("no make")), skip: true},
	} {
		dir, skip, err := binDir(c.env, c.fromMake)
		if dir != c.dir || (skip != "") != c.skip || (err != nil) != c.err {
			t.Errorf("%s: got dir %q, skip %q, error %v; want dir %q, skip %v, error %v", c.name, dir, skip, err, c.dir, c.skip, c.err)
		}
		if skip != "" && !strings.Contains(skip, "make k8s-bins") || err != nil && !strings.Contains(err.Error(), BinDirEnv) {
			t.Errorf("%s: the reason (%q, %v) does not say what to do", c.name, skip, err)
		}
	}
}
