package migrate

import (
	"bytes"
	"context"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"

	"github.com/tortie-net/tortie/datastore"
	"github.com/tortie-net/tortie/datastore/kubestore"
	"github.com/tortie-net/tortie/datastore/kubetest"
)

// From memory into a real API server's custom resources and back: every
// record reads back as tortie wrote it, and copying again writes nothing
// although the API server re-encodes every record.
func TestCopyKubernetes(t *testing.T) {
	api := kubetest.Start(t)
	ctx := context.Background()
	dyn, err := dynamic.NewForConfig(api.Config)
	if err != nil {
		t.Fatal(err)
	}
	// The namespaced records' namespace, as a cluster has it.
	ns := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": "prod"}}}
	if _, err := dyn.Resource(schema.GroupVersionResource{Version: "v1", Resource: "namespaces"}).Create(ctx, ns, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	kube, err := kubestore.New(api.Config)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { kube.Close() })

	src := datastore.NewMemory()
	populate(t, src)
	rep, err := Copy(ctx, src, kube, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if tot := rep.Total(); tot.Created != tot.Records || tot.Invalid != 1 {
		t.Fatalf("into the API server: %+v", tot)
	}
	again, err := Copy(ctx, src, kube, Options{})
	if tot := again.Total(); err != nil || tot.Unchanged != tot.Records {
		t.Fatalf("second copy: %+v %v", tot, err)
	}
	back := datastore.NewMemory()
	if _, err := Copy(ctx, kube, back, Options{}); err != nil {
		t.Fatal(err)
	}
	want, got := dump(t, src, "/"), dump(t, back, "/")
	delete(want, heartbeat)
	for k, v := range want {
		g, ok := got[k]
		if !ok || !bytes.Equal(canonicalOf(datastore.KV{Key: k, Value: []byte(v)}), canonicalOf(datastore.KV{Key: k, Value: []byte(g)})) {
			t.Errorf("%s: back from the API server as %q, want %q", k, g, v)
		}
	}
	if len(got) != len(want) {
		t.Errorf("%d records back from the API server, want %d", len(got), len(want))
	}
}
