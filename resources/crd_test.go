package resources

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/tortie-net/tortie/datastore"
)

// A record turned into a CRD object decodes back to the same resource,
// labels and annotations included, and a CRD object with a field Calico
// does not have is refused, as on input.
func TestCRDRecordRoundTrip(t *testing.T) {
	objs, err := Decode(strings.NewReader(`
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: p1, labels: {zone: a}, annotations: {note: x}}
spec: {cidr: 10.9.0.0/16, vxlanMode: Always, natOutgoing: true}
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: np, namespace: ns1}
spec: {selector: app == 'a', types: [Ingress], ingress: [{action: Allow}]}
`))
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range objs {
		v3, err := json.Marshal(o)
		if err != nil {
			t.Fatal(err)
		}
		crd, err := EncodeCRD(v3)
		if err != nil {
			t.Fatal(err)
		}
		if crd["apiVersion"] != CRDAPIVersion {
			t.Fatalf("apiVersion %v", crd["apiVersion"])
		}
		md := crd["metadata"].(map[string]any)
		if _, ok := md["labels"]; ok {
			t.Fatalf("CRD object has the resource's labels as its own: %v", md)
		}
		// What the API server adds must not matter.
		md["resourceVersion"], md["uid"] = "42", "u"
		b, _ := json.Marshal(crd)
		kind := KindIPPool
		if _, ok := o.(*NetworkPolicy); ok {
			kind = KindNetworkPolicy
		}
		back, err := DecodeStored(kind, datastore.KV{Key: o.key(), Value: b})
		if err != nil {
			t.Fatalf("%s: %v", b, err)
		}
		got, _ := json.Marshal(back)
		if string(got) != string(v3) {
			t.Fatalf("round trip:\n got %s\nwant %s", got, v3)
		}
		// Encoding a CRD object again keeps it.
		again, err := EncodeCRD(b)
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := again["metadata"].(map[string]any)["resourceVersion"]; ok {
			t.Fatal("server metadata kept")
		}
	}
	bad := `{"apiVersion":"crd.projectcalico.org/v1","kind":"IPPool","metadata":{"name":"p1"},"spec":{"cidr":"10.9.0.0/16","vxlanMod":"Always"}}`
	if _, err := DecodeStored(KindIPPool, datastore.KV{Key: Prefix + "ippools/p1", Value: []byte(bad)}); err == nil {
		t.Fatal("a CRD record with an unknown field decoded")
	}
	other := `{"apiVersion":"crd.projectcalico.org/v1","kind":"BGPPeer","metadata":{"name":"p1"},"spec":{"peerIP":"10.0.0.1","asNumber":64512}}`
	if _, err := DecodeStored(KindIPPool, datastore.KV{Key: Prefix + "ippools/p1", Value: []byte(other)}); err == nil {
		t.Fatal("a BGPPeer stored as an IPPool decoded")
	}
}
