package kubestore

import (
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// FuzzLeaseRecord: any heartbeat record becomes a Lease holding it as it
// is; a valid time of renewal is its renewTime, anything else sets none.
func FuzzLeaseRecord(f *testing.F) {
	f.Add([]byte(`{"address":"10.0.1.1/24","instance":"a","renewed":"2026-12-02T15:04:05.123456789Z"}`))
	f.Add([]byte(`{"renewed":"not a time"}`))
	f.Add([]byte(`{"renewed":null}`))
	f.Add([]byte(`{"address":"10.0.1.1/24","instance":"old"}`))
	f.Add([]byte(`[]`))
	f.Add([]byte(`{"renewed":"9999-12-31T23:59:59-23:59"}`))
	f.Add([]byte(`{"renewed":"0000-01-01T00:00:00+01:00"}`))
	odd := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "spec": "by hand"}}
	f.Fuzz(func(t *testing.T, value []byte) {
		u, err := leaseCodec{}.object("n1", value, nil)
		if err != nil {
			t.Fatal(err)
		}
		// An existing Lease whose spec is not an object gets one.
		if _, err := (leaseCodec{}).object("n1", value, odd); err != nil {
			t.Fatalf("over a spec that is not an object: %v", err)
		}
		if v, ok := (leaseCodec{}).value(u); !ok || string(v) != string(value) {
			t.Fatalf("record %q read back as %q", value, v)
		}
		if rt, ok, _ := unstructured.NestedString(u.Object, "spec", "renewTime"); ok {
			if _, err := time.Parse(metav1.RFC3339Micro, rt); err != nil {
				t.Fatalf("renewTime %q: %v", rt, err)
			}
		}
	})
}
