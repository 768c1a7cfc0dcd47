// Package storetest is the contract every datastore.Store keeps, as tests
// any implementation runs: the memory store, etcd and the Kubernetes API.
// Its keys and values are records tortie really keeps (IPAM handles, IP
// pools, nodes, heartbeats), since a store may map each directory to
// objects of its own.
package storetest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tortie-net/tortie/datastore"
	"github.com/tortie-net/tortie/ipam"
	"github.com/tortie-net/tortie/resources"
)

const handles = resources.Prefix + "ipam/handles/"

// handle is a record of the handles directory whose node field carries v.
func handle(id, v string) []byte {
	return fmt.Appendf(nil, `{"id":%q,"node":%q,"ips":[]}`, id, v)
}

// nodeOf reads back what handle wrote.
func nodeOf(t testing.TB, b []byte) string {
	var h struct {
		Node string `json:"node"`
	}
	if err := json.Unmarshal(b, &h); err != nil {
		t.Fatalf("value %s: %v", b, err)
	}
	return h.Node
}

// Contract checks what every Store must do: not found, create once,
// compare-and-swap updates and deletes, prefix lists, a watch that sees
// every change in order from a revision (changes made before it was
// established included), and no lost update under contention.
func Contract(t *testing.T, s datastore.Store) {
	ctx := context.Background()
	a, ab, nope := handles+"a", handles+"ab", handles+"nope"
	if _, err := s.Get(ctx, a); !errors.Is(err, datastore.ErrNotFound) {
		t.Fatalf("get missing: %v", err)
	}
	watchCtx, stop := context.WithCancel(ctx)
	defer stop()
	// Watch from a known revision: revision 0 means "from whenever the
	// watch is established", which races with the writes below.
	_, rev, err := s.List(ctx, a)
	if err != nil {
		t.Fatal(err)
	}
	events := s.Watch(watchCtx, a, rev)
	r1, err := s.Create(ctx, a, handle("a", "1"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Create(ctx, a, handle("a", "x")); !errors.Is(err, datastore.ErrExists) {
		t.Fatalf("create twice: %v", err)
	}
	r2, err := s.Update(ctx, a, handle("a", "2"), r1)
	if err != nil || r2 <= r1 {
		t.Fatalf("update: %v", err)
	}
	if _, err := s.Update(ctx, a, handle("a", "3"), r1); !errors.Is(err, datastore.ErrConflict) {
		t.Fatalf("stale update: %v", err)
	}
	if _, err := s.Update(ctx, nope, handle("nope", "3"), 1); !errors.Is(err, datastore.ErrNotFound) {
		t.Fatalf("update missing: %v", err)
	}
	kv, err := s.Get(ctx, a)
	if err != nil || nodeOf(t, kv.Value) != "2" || kv.Rev != r2 || kv.Key != a {
		t.Fatalf("get: %+v %v", kv, err)
	}
	if _, err := s.Put(ctx, ab, handle("ab", "4")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Put(ctx, handles+"b", handle("b", "5")); err != nil {
		t.Fatal(err)
	}
	l, _, err := s.List(ctx, a)
	if err != nil || len(l) != 2 {
		t.Fatalf("list: %d %v", len(l), err)
	}
	if err := s.Delete(ctx, a, r1); !errors.Is(err, datastore.ErrConflict) {
		t.Fatalf("stale delete: %v", err)
	}
	if err := s.Delete(ctx, a, r2); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(ctx, a, 0); !errors.Is(err, datastore.ErrNotFound) {
		t.Fatalf("delete missing: %v", err)
	}
	// The watch saw create, update, put of ab and delete, in order, and
	// not b.
	var got []string
	timeout := time.After(20 * time.Second)
	for len(got) < 4 {
		select {
		case e, ok := <-events:
			if !ok {
				t.Fatalf("watch ended after %v", got)
			}
			v := ""
			if e.Type == datastore.EventPut {
				v = nodeOf(t, e.KV.Value)
			}
			got = append(got, fmt.Sprintf("%d:%s=%s", e.Type, strings.TrimPrefix(e.KV.Key, handles), v))
		case <-timeout:
			t.Fatalf("watch saw only %v", got)
		}
	}
	if want := "[0:a=1 0:a=2 0:ab=4 1:a=]"; fmt.Sprint(got) != want {
		t.Fatalf("watch %v, want %s", got, want)
	}
	// A change made after a list and before the watch from the list's
	// revision is established is not lost.
	c := handles + "c"
	_, rev, err = s.List(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Put(ctx, c, handle("c", "6")); err != nil {
		t.Fatal(err)
	}
	select {
	case e, ok := <-s.Watch(watchCtx, c, rev):
		if !ok || e.Type != datastore.EventPut || e.KV.Key != c || nodeOf(t, e.KV.Value) != "6" {
			t.Fatalf("watch from the revision before a put: %+v (open %v)", e, ok)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("a watch from the revision before a put did not see it")
	}
	if err := s.Delete(ctx, c, 0); err != nil { // later checks may share the store
		t.Fatal(err)
	}
	// Compare-and-swap under contention: no increment is lost.
	n := handles + "n"
	if _, err := s.Put(ctx, n, handle("n", "0")); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 10; i++ {
				for {
					kv, err := s.Get(ctx, n)
					if err != nil {
						t.Error(err)
						return
					}
					var c int
					fmt.Sscan(nodeOf(t, kv.Value), &c)
					if _, err := s.Update(ctx, n, handle("n", fmt.Sprint(c+1)), kv.Rev); err == nil {
						break
					} else if !errors.Is(err, datastore.ErrConflict) {
						t.Error(err)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	if kv, _ := s.Get(ctx, n); nodeOf(t, kv.Value) != "80" {
		t.Fatalf("CAS lost updates: %s", kv.Value)
	}
	for _, k := range []string{ab, handles + "b", n} {
		if err := s.Delete(ctx, k, 0); err != nil {
			t.Fatal(err)
		}
	}
}

// records is one record of every directory tortie keeps, as tortie
// writes them.
const records = `
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: pool1, labels: {zone: a}}
spec: {cidr: 10.66.0.0/16, blockSize: 26, vxlanMode: Always, natOutgoing: true}
---
apiVersion: projectcalico.org/v3
kind: Node
metadata: {name: node1, labels: {rack: r1}, annotations: {note: kept}}
spec:
  bgp: {ipv4Address: 10.0.1.1/24, asNumber: 4200000000, ipv4IPIPTunnelAddr: 10.66.0.1, routeReflectorClusterID: 1.2.3.4}
  ipv4VXLANTunnelAddr: 10.66.0.2
  vxlanTunnelMACAddr: "66:f9:37:c3:7e:94"
  orchRefs: [{nodeName: node1, orchestrator: k8s}]
---
apiVersion: projectcalico.org/v3
kind: BGPConfiguration
metadata: {name: default}
spec: {asNumber: 64512, nodeToNodeMeshEnabled: true, serviceClusterIPs: [{cidr: 10.96.0.0/12}]}
---
apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata: {name: tor}
spec: {peerIP: 10.0.1.254, asNumber: 64513}
---
apiVersion: projectcalico.org/v3
kind: BGPFilter
metadata: {name: f}
spec: {exportV4: [{action: Reject, matchOperator: In, cidr: 10.99.0.0/16}]}
---
apiVersion: projectcalico.org/v3
kind: IPReservation
metadata: {name: r}
spec: {reservedCIDRs: [10.66.0.0/28]}
---
apiVersion: projectcalico.org/v3
kind: FelixConfiguration
metadata: {name: default}
spec: {vxlanVNI: 4096}
---
apiVersion: projectcalico.org/v3
kind: ClusterInformation
metadata: {name: default}
spec: {clusterGUID: abc, datastoreReady: true}
---
apiVersion: projectcalico.org/v3
kind: Tier
metadata: {name: security}
spec: {order: 100}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: security.deny}
spec: {tier: security, selector: all(), types: [Ingress], ingress: [{action: Deny, source: {nets: [10.1.0.0/16]}}]}
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: np, namespace: default}
spec: {selector: app == 'a', types: [Ingress], ingress: [{action: Allow, protocol: TCP, destination: {ports: [80]}}]}
---
apiVersion: projectcalico.org/v3
kind: NetworkSet
metadata: {name: ns1, namespace: default, labels: {role: db}}
spec: {nets: [10.5.0.0/16]}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkSet
metadata: {name: gns, labels: {role: ext}}
spec: {nets: [192.0.2.0/24]}
---
apiVersion: projectcalico.org/v3
kind: Profile
metadata: {name: kns.default}
spec: {ingress: [{action: Allow}], egress: [{action: Allow}]}
---
apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata: {name: node1-k8s-pod1-eth0, namespace: default, labels: {app: a}}
spec: {node: node1, orchestrator: k8s, workload: pod1, endpoint: eth0, interfaceName: tap1, ipNetworks: [10.66.0.5/32], profiles: [kns.default]}
`

// Records checks that a record of every directory tortie keeps comes back
// as it went in: the resources through resources.DecodeStored (equal as
// resources), IPAM records through ipam's decoders, and a heartbeat as
// written; each is listed under its directory and deleted.
func Records(t *testing.T, s datastore.Store) {
	ctx := context.Background()
	objs, err := resources.Decode(strings.NewReader(records))
	if err != nil {
		t.Fatal(err)
	}
	c := resources.Client{S: s}
	if err := c.Apply(ctx, objs); err != nil {
		t.Fatal(err)
	}
	for _, o := range objs {
		want, _ := json.Marshal(o)
		kind, name := kindName(t, want)
		dir := resources.KindPrefix(kind)
		kvs, _, err := s.List(ctx, dir)
		if err != nil {
			t.Fatal(err)
		}
		if len(kvs) != 1 || kvs[0].Key != dir+name {
			t.Fatalf("%s: list of %s: %v", kind, dir, keys(kvs))
		}
		back, err := resources.DecodeStored(kind, kvs[0])
		if err != nil {
			t.Fatalf("%s: %v\n%s", kind, err, kvs[0].Value)
		}
		got, _ := json.Marshal(back)
		if string(got) != string(want) {
			t.Fatalf("%s round trip:\n got %s\nwant %s", kind, got, want)
		}
		kv, err := s.Get(ctx, dir+name)
		if err != nil || kv.Rev != kvs[0].Rev {
			t.Fatalf("%s get: %+v %v", kind, kv, err)
		}
	}
	// IPAM: a block, an affinity and a handle, as ipam writes them.
	block := resources.Prefix + "ipam/blocks/10.66.0.0-26"
	aff := resources.Prefix + "ipam/affinities/node1/10.66.0.0-26"
	h := resources.Prefix + "ipam/handles/tortie.0123ABC_x"
	for k, v := range map[string]string{
		block: `{"cidr":"10.66.0.0/26","affinity":"host:node1","allocations":[{"handle":"tortie.0123ABC_x","node":"node1"}` +
			strings.Repeat(",{}", 63) + `]}`,
		aff: `{"state":"confirmed"}`,
		h:   `{"id":"tortie.0123ABC_x","node":"node1","ips":["10.66.0.0"],"attrs":{"pod":"p"}}`,
	} {
		if _, err := s.Create(ctx, k, []byte(v)); err != nil {
			t.Fatalf("%s: %v", k, err)
		}
	}
	kv := get(t, s, block)
	b, err := ipam.DecodeBlock(kv)
	if err != nil || b.AffinityNode() != "node1" || b.Allocs[0].Handle != "tortie.0123ABC_x" || len(b.Allocs) != 64 {
		t.Fatalf("block: %+v %v", b, err)
	}
	if a, err := ipam.DecodeAffinity(get(t, s, aff)); err != nil || a.Node != "node1" || a.State != "confirmed" || a.CIDR.String() != "10.66.0.0/26" {
		t.Fatalf("affinity: %+v %v", a, err)
	}
	if hd, err := ipam.DecodeHandle(get(t, s, h)); err != nil || hd.ID != "tortie.0123ABC_x" || hd.Attrs["pod"] != "p" {
		t.Fatalf("handle: %+v %v", hd, err)
	}
	kvs, _, err := s.List(ctx, resources.Prefix+"ipam/")
	if err != nil || len(kvs) != 3 {
		t.Fatalf("ipam list: %v %v", keys(kvs), err)
	}
	// A heartbeat.
	hb := "/tortie/heartbeats/node1"
	if _, err := s.Put(ctx, hb, []byte(`{"address":"10.0.1.1"}`)); err != nil {
		t.Fatal(err)
	}
	if v := get(t, s, hb).Value; string(v) != `{"address":"10.0.1.1"}` {
		t.Fatalf("heartbeat %s", v)
	}
	// Everything is listed under the roots, and deleted.
	all := map[string]bool{}
	for _, root := range []string{resources.Prefix, resources.CalicoPrefix, "/tortie/heartbeats/"} {
		kvs, _, err := s.List(ctx, root)
		if err != nil {
			t.Fatal(err)
		}
		for _, kv := range kvs {
			all[kv.Key] = true
		}
	}
	if want := len(objs) + 4; len(all) != want {
		t.Fatalf("%d records listed, want %d: %v", len(all), want, all)
	}
	for k := range all {
		if err := s.Delete(ctx, k, 0); err != nil {
			t.Fatalf("delete %s: %v", k, err)
		}
		if _, err := s.Get(ctx, k); !errors.Is(err, datastore.ErrNotFound) {
			t.Fatalf("%s after delete: %v", k, err)
		}
	}
}

func get(t *testing.T, s datastore.Store, key string) datastore.KV {
	t.Helper()
	kv, err := s.Get(context.Background(), key)
	if err != nil {
		t.Fatalf("get %s: %v", key, err)
	}
	return kv
}

func kindName(t *testing.T, js []byte) (string, string) {
	var h struct {
		Kind     string `json:"kind"`
		Metadata struct {
			Name      string `json:"name"`
			Namespace string `json:"namespace"`
		} `json:"metadata"`
	}
	if err := json.Unmarshal(js, &h); err != nil {
		t.Fatal(err)
	}
	if h.Metadata.Namespace != "" {
		return h.Kind, h.Metadata.Namespace + "/" + h.Metadata.Name
	}
	return h.Kind, h.Metadata.Name
}

func keys(kvs []datastore.KV) []string {
	var out []string
	for _, kv := range kvs {
		out = append(out, kv.Key)
	}
	return out
}
