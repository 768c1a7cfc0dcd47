package kubestore_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"

	"github.com/tortie-net/tortie/datastore"
	"github.com/tortie-net/tortie/datastore/kubestore"
	"github.com/tortie-net/tortie/datastore/kubetest"
	"github.com/tortie-net/tortie/datastore/storetest"
	"github.com/tortie-net/tortie/resources"
)

// One API server for the package's tests: each test uses records of its
// own and removes them.
func start(t *testing.T) (*kubestore.Store, dynamic.Interface, *kubetest.APIServer) {
	t.Helper()
	api := kubetest.Start(t)
	s, err := kubestore.New(api.Config)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	dyn, err := dynamic.NewForConfig(api.Config)
	if err != nil {
		t.Fatal(err)
	}
	return s, dyn, api
}

var (
	nodes   = schema.GroupVersionResource{Version: "v1", Resource: "nodes"}
	leases  = schema.GroupVersionResource{Group: "coordination.k8s.io", Version: "v1", Resource: "leases"}
	ippools = schema.GroupVersionResource{Group: "crd.projectcalico.org", Version: "v1", Resource: "ippools"}
)

// The same contract as the memory store and etcd, on a real API server.
func TestKubernetes(t *testing.T) {
	s, dyn, api := start(t)
	t.Run("contract", func(t *testing.T) { storetest.Contract(t, s) })
	t.Run("records", func(t *testing.T) { storetest.Records(t, s) })
	t.Run("node", func(t *testing.T) { testNode(t, s, dyn) })
	t.Run("kubectl", func(t *testing.T) { testForeignObjects(t, s, dyn) })
	t.Run("sameState", func(t *testing.T) { testSameState(t, s, api) })
	t.Run("lease", func(t *testing.T) { testLease(t, s, dyn) })
	t.Run("noPlace", func(t *testing.T) {
		if _, err := s.Put(context.Background(), "/elsewhere/x", []byte("{}")); !errors.Is(err, kubestore.ErrNoPlace) {
			t.Fatalf("put outside tortie's directories: %v", err)
		}
	})
}

// A Node record lives on the Kubernetes Node: Calico's annotations, the
// kubelet's labels kept, an annotation written by hand honoured, a status
// update by someone else sends no event, and deleting the record leaves
// the Node as it was.
func testNode(t *testing.T, s *kubestore.Store, dyn dynamic.Interface) {
	ctx := context.Background()
	kn := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "v1", "kind": "Node",
		"metadata": map[string]any{"name": "kn1", "labels": map[string]any{"kubernetes.io/os": "linux"}},
	}}
	if _, err := dyn.Resource(nodes).Create(ctx, kn, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	key := resources.KindPrefix(resources.KindNode) + "kn1"
	if _, err := s.Get(ctx, key); !errors.Is(err, datastore.ErrNotFound) {
		t.Fatalf("a Node tortie never wrote is a record: %v", err)
	}
	_, rev, err := s.List(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	wctx, stop := context.WithCancel(ctx)
	defer stop()
	events := s.Watch(wctx, key, rev)
	objs, err := resources.Decode(strings.NewReader(`
apiVersion: projectcalico.org/v3
kind: Node
metadata: {name: kn1, labels: {rack: r1}}
spec:
  bgp: {ipv4Address: 10.0.1.1/24, asNumber: 64512}
  ipv4VXLANTunnelAddr: 10.66.0.2
  vxlanTunnelMACAddr: "66:f9:37:c3:7e:94"
`))
	if err != nil {
		t.Fatal(err)
	}
	c := resources.Client{S: s}
	if err := c.Apply(ctx, objs); err != nil {
		t.Fatal(err)
	}
	u, err := dyn.Resource(nodes).Get(ctx, "kn1", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ann, labels := u.GetAnnotations(), u.GetLabels()
	for k, v := range map[string]string{
		"projectcalico.org/IPv4Address": "10.0.1.1/24", "projectcalico.org/ASNumber": "64512",
		"projectcalico.org/IPv4VXLANTunnelAddr": "10.66.0.2", "projectcalico.org/VXLANTunnelMACAddr": "66:f9:37:c3:7e:94",
	} {
		if ann[k] != v {
			t.Errorf("annotation %s = %q, want %q", k, ann[k], v)
		}
	}
	if labels["kubernetes.io/os"] != "linux" || labels["rack"] != "r1" {
		t.Errorf("labels %v", labels)
	}
	// By hand, as with Calico.
	ann["projectcalico.org/ASNumber"] = "65001"
	u.SetAnnotations(ann)
	if u, err = dyn.Resource(nodes).Update(ctx, u, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	ns, err := c.Nodes(ctx)
	if err != nil || len(ns) != 1 {
		t.Fatalf("nodes: %v %v", ns, err)
	}
	if n := ns[0]; n.Spec.BGP == nil || n.Spec.BGP.ASNumber != 65001 || n.Metadata.Labels["rack"] != "r1" ||
		n.Spec.IPv4VXLANTunnelAddr.String() != "10.66.0.2" {
		t.Fatalf("node as read: %+v %+v", n.Metadata, n.Spec)
	}
	// Someone else's change that leaves the record alone.
	u.SetLabels(map[string]string{"kubernetes.io/os": "linux", "rack": "r1", "other": "x"})
	if _, err := dyn.Resource(nodes).Update(ctx, u, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := c.Delete(ctx, resources.KindNode, "kn1"); err != nil {
		t.Fatal(err)
	}
	// The watch: put (apply), put (AS number by hand), put (label
	// "other", which is the resource's too), delete.
	var got []string
	deadline := time.After(20 * time.Second)
	for len(got) < 4 {
		select {
		case e, ok := <-events:
			if !ok {
				t.Fatalf("watch ended after %v", got)
			}
			got = append(got, map[datastore.EventType]string{datastore.EventPut: "put", datastore.EventDelete: "delete"}[e.Type])
		case <-deadline:
			t.Fatalf("watch saw %v", got)
		}
	}
	if strings.Join(got, " ") != "put put put delete" {
		t.Fatalf("watch saw %v", got)
	}
	u, err = dyn.Resource(nodes).Get(ctx, "kn1", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("the kubelet's Node went with the record: %v", err)
	}
	for k := range u.GetAnnotations() {
		if strings.HasPrefix(k, "projectcalico.org/") || strings.HasPrefix(k, "tortie.io/") {
			t.Errorf("annotation %s left", k)
		}
	}
	if l := u.GetLabels(); l["kubernetes.io/os"] != "linux" || l["rack"] != "" {
		t.Errorf("labels after delete: %v", l)
	}
	if err := dyn.Resource(nodes).Delete(ctx, "kn1", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	// A Node tortie registers on first is made, and goes with the record.
	if err := c.Apply(ctx, objs); err != nil {
		t.Fatal(err)
	}
	if _, err := dyn.Resource(nodes).Get(ctx, "kn1", metav1.GetOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := c.Delete(ctx, resources.KindNode, "kn1"); err != nil {
		t.Fatal(err)
	}
	if _, err := dyn.Resource(nodes).Get(ctx, "kn1", metav1.GetOptions{}); err == nil {
		t.Fatal("the Node tortie made stayed")
	}
}

// Objects written with kubectl (crd.projectcalico.org/v1, labels on the
// object) are read as resources; one Calico would refuse is reported, not
// used.
func testForeignObjects(t *testing.T, s *kubestore.Store, dyn dynamic.Interface) {
	ctx := context.Background()
	var good, bad unstructured.Unstructured
	if err := json.Unmarshal([]byte(`{"apiVersion":"crd.projectcalico.org/v1","kind":"IPPool",
		"metadata":{"name":"by-kubectl","labels":{"zone":"b"},"annotations":{"kubectl.kubernetes.io/last-applied-configuration":"{}"}},
		"spec":{"cidr":"10.77.0.0/16","vxlanMode":"Always","blockSize":26}}`), &good.Object); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal([]byte(`{"apiVersion":"crd.projectcalico.org/v1","kind":"IPPool",
		"metadata":{"name":"typo"},"spec":{"cidr":"10.78.0.0/16","vxlanMod":"Always"}}`), &bad.Object); err != nil {
		t.Fatal(err)
	}
	for _, u := range []*unstructured.Unstructured{&good, &bad} {
		if _, err := dyn.Resource(ippools).Create(ctx, u, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	inv := resources.NewInvalid(zap.NewNop())
	pools, err := resources.Client{S: s, Invalid: inv}.Pools(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(pools) != 1 || pools[0].Metadata.Name != "by-kubectl" || pools[0].Metadata.Labels["zone"] != "b" ||
		pools[0].Spec.VXLANMode != resources.ModeAlways {
		t.Fatalf("pools %+v", pools)
	}
	if l := inv.List(); len(l) != 1 || !strings.Contains(l[0].Key, "typo") || !strings.Contains(l[0].Error, "vxlanMod") {
		t.Fatalf("invalid records %+v", l)
	}
	for _, n := range []string{"by-kubectl", "typo"} {
		if err := s.Delete(ctx, resources.KindPrefix(resources.KindIPPool)+n, 0); err != nil {
			t.Fatal(err)
		}
	}
}

// `kubectl apply -f` of Calico's CRD manifest and an apply of the v3
// manifest through tortie give the same resource; what tortie wrote,
// kubectl shows as Calico's CRD object.
func testSameState(t *testing.T, s *kubestore.Store, api *kubetest.APIServer) {
	ctx := context.Background()
	crdYAML := `apiVersion: crd.projectcalico.org/v1
kind: IPPool
metadata:
  name: same
  annotations:
    projectcalico.org/metadata: '{"labels":{"zone":"c"}}'
spec:
  cidr: 10.88.0.0/16
  blockSize: 27
  ipipMode: CrossSubnet
  natOutgoing: true
  nodeSelector: zone == "c"
  allowedUses: [Workload]
`
	f := filepath.Join(t.TempDir(), "pool.yaml")
	if err := os.WriteFile(f, []byte(crdYAML), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(api.Kubectl(), "--kubeconfig", api.Kubeconfig, "apply", "-f", f).CombinedOutput(); err != nil {
		t.Fatalf("kubectl apply: %v\n%s", err, out)
	}
	c := resources.Client{S: s}
	byKubectl, err := c.Pools(ctx)
	if err != nil || len(byKubectl) != 1 {
		t.Fatalf("pools: %v %v", byKubectl, err)
	}
	kb, _ := json.Marshal(byKubectl[0])
	if err := c.Delete(ctx, resources.KindIPPool, "same"); err != nil {
		t.Fatal(err)
	}
	objs, err := resources.Decode(strings.NewReader(`apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: same, labels: {zone: c}}
spec: {cidr: 10.88.0.0/16, blockSize: 27, ipipMode: CrossSubnet, natOutgoing: true, nodeSelector: zone == "c", allowedUses: [Workload]}
`))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Apply(ctx, objs); err != nil {
		t.Fatal(err)
	}
	byTortie, err := c.Pools(ctx)
	if err != nil || len(byTortie) != 1 {
		t.Fatalf("pools: %v %v", byTortie, err)
	}
	if tb, _ := json.Marshal(byTortie[0]); string(tb) != string(kb) {
		t.Fatalf("kubectl's pool and tortie's differ:\n%s\n%s", kb, tb)
	}
	out, err := exec.Command(api.Kubectl(), "--kubeconfig", api.Kubeconfig, "get", "ippools.crd.projectcalico.org", "same",
		"-o", "jsonpath={.spec.cidr} {.spec.ipipMode} {.metadata.annotations.projectcalico\\.org/metadata}").CombinedOutput()
	if err != nil || string(out) != `10.88.0.0/16 CrossSubnet {"labels":{"zone":"c"}}` {
		t.Fatalf("kubectl get: %v %s", err, out)
	}
	if err := c.Delete(ctx, resources.KindIPPool, "same"); err != nil {
		t.Fatal(err)
	}
}

// A heartbeat is a Lease whose holderIdentity is the node and whose
// renewTime is the beat's, as `kubectl get lease` shows a kubelet's; a
// record without a time (an older release's) leaves renewTime alone.
func testLease(t *testing.T, s *kubestore.Store, dyn dynamic.Interface) {
	ctx := context.Background()
	spec := func() map[string]any {
		t.Helper()
		u, err := dyn.Resource(leases).Namespace("kube-node-lease").Get(ctx, "tortie-kl1", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		m, _, _ := unstructured.NestedMap(u.Object, "spec")
		return m
	}
	for _, c := range []struct{ value, renewTime string }{
		{`{"address":"10.0.1.1/24","instance":"a","renewed":"2026-12-02T15:04:05.123456789Z"}`, "2026-12-02T15:04:05.123456Z"},
		{`{"address":"10.0.1.1/24","instance":"a","renewed":"2026-12-02T16:04:05+01:00"}`, "2026-12-02T15:04:05.000000Z"},
		{`{"address":"10.0.1.1/24","instance":"a","renewed":"2026-12-02T15:04:15.5Z"}`, "2026-12-02T15:04:15.500000Z"},
		{`{"address":"10.0.1.1/24","instance":"old"}`, "2026-12-02T15:04:15.500000Z"},
		{`not json`, "2026-12-02T15:04:15.500000Z"},
	} {
		if _, err := s.Put(ctx, "/tortie/heartbeats/kl1", []byte(c.value)); err != nil {
			t.Fatal(err)
		}
		kv, err := s.Get(ctx, "/tortie/heartbeats/kl1")
		if err != nil || string(kv.Value) != c.value {
			t.Fatalf("read back %q, %v; want %q", kv.Value, err, c.value)
		}
		if m := spec(); m["holderIdentity"] != "kl1" || m["renewTime"] != c.renewTime {
			t.Errorf("after %s: spec %v, want holderIdentity kl1, renewTime %s", c.value, m, c.renewTime)
		}
	}
}
