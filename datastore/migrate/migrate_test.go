package migrate

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/tortie-net/tortie/datastore"
	"github.com/tortie-net/tortie/datastore/etcdtest"
	"github.com/tortie-net/tortie/ipam"
	"github.com/tortie-net/tortie/resources"
)

// state is a cluster's worth of records, one or more of every directory
// tortie writes, in the shapes Calico's documentation gives them.
const state = `
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: pods}
spec: {cidr: 10.244.0.0/24, blockSize: 28, vxlanMode: Always, natOutgoing: true}
---
apiVersion: projectcalico.org/v3
kind: Node
metadata: {name: n1, labels: {zone: a}}
spec: {bgp: {ipv4Address: 10.0.1.1/24}}
---
apiVersion: projectcalico.org/v3
kind: BGPConfiguration
metadata: {name: default}
spec: {asNumber: 64512, nodeToNodeMeshEnabled: true}
---
apiVersion: projectcalico.org/v3
kind: Tier
metadata: {name: security}
spec: {order: 100}
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: allow-web, namespace: prod}
spec:
  tier: security
  selector: app == 'web'
  ingress: [{action: Allow, protocol: TCP, destination: {ports: [80]}}]
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkSet
metadata: {name: blocked, labels: {blocked: "true"}}
spec: {nets: [192.0.2.0/24]}
---
apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata: {name: n1-k8s-web-eth0, namespace: prod, labels: {app: web}}
spec: {node: n1, orchestrator: k8s, workload: web, pod: web, endpoint: eth0, ipNetworks: [10.244.0.5/32], interfaceName: tap1}
`

// Records outside the resources and IPAM: a heartbeat the copy leaves
// behind, and an IPAM block no reader can use, which it keeps.
const (
	heartbeat = "/tortie/heartbeats/n1"
	badBlock  = resources.Prefix + "ipam/blocks/10.244.9.0-28"
)

// populate fills s with state, addresses for pods on two nodes (one
// released again) and the two records above; it returns the pods'
// addresses by handle.
func populate(t *testing.T, s datastore.Store) map[string]netip.Addr {
	t.Helper()
	ctx := context.Background()
	objs, err := resources.Decode(strings.NewReader(state))
	if err != nil {
		t.Fatal(err)
	}
	if err := (resources.Client{S: s}).Apply(ctx, objs); err != nil {
		t.Fatal(err)
	}
	m := &ipam.IPAM{S: s}
	addrs := map[string]netip.Addr{}
	for i, node := range []string{"n1", "n1", "n2", "n2", "n1"} {
		h := fmt.Sprintf("k8s-pod-%d", i)
		a, err := m.Assign(ctx, ipam.Request{Handle: h, Node: node})
		if err != nil {
			t.Fatal(err)
		}
		addrs[h] = a
	}
	if err := m.Release(ctx, "k8s-pod-4"); err != nil {
		t.Fatal(err)
	}
	delete(addrs, "k8s-pod-4")
	put(t, s, heartbeat, `{"address":"10.0.1.1/24","instance":"abc"}`)
	put(t, s, badBlock, `{"cidr":"10.244.9.0/28","allocations":[]}`)
	return addrs
}

func put(t *testing.T, s datastore.Store, key, value string) {
	t.Helper()
	if _, err := s.Put(context.Background(), key, []byte(value)); err != nil {
		t.Fatal(err)
	}
}

// dump is every record of s, by key.
func dump(t *testing.T, s datastore.Store, prefix string) map[string]string {
	t.Helper()
	kvs, _, err := s.List(context.Background(), prefix)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, kv := range kvs {
		out[kv.Key] = string(kv.Value)
	}
	return out
}

// copied checks that to holds exactly the records of from that a copy
// takes, byte for byte, and no heartbeat.
func copied(t *testing.T, from, to datastore.Store) {
	t.Helper()
	want := dump(t, from, "/")
	delete(want, heartbeat)
	got := dump(t, to, "/")
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: destination holds %q, want %q", k, got[k], v)
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			t.Errorf("%s: in the destination only", k)
		}
	}
}

func dir(r Report, name string) Dir {
	for _, d := range r.Dirs {
		if d.Dir == name {
			return d
		}
	}
	return Dir{}
}

func TestCopy(t *testing.T) {
	ctx := context.Background()
	src, dst := datastore.NewMemory(), datastore.NewMemory()
	addrs := populate(t, src)
	total := len(dump(t, src, "/")) - 1 // less the heartbeat

	rep, err := Copy(ctx, src, dst, Options{})
	if err != nil {
		t.Fatal(err)
	}
	copied(t, src, dst)
	if tot := rep.Total(); tot.Records != total || tot.Created != total || tot.Updated+tot.Unchanged+tot.Failed != 0 || tot.Invalid != 1 {
		t.Fatalf("counts: %+v, want %d records created, one invalid", tot, total)
	}
	if len(rep.Invalid) != 1 || rep.Invalid[0].Key != badBlock || rep.Invalid[0].Kind != resources.KindIPAMBlock {
		t.Fatalf("invalid records: %+v", rep.Invalid)
	}
	if len(rep.Extra)+len(rep.Differing)+len(rep.SourceChanged)+len(rep.Failed) != 0 {
		t.Fatalf("report: %+v", rep)
	}
	for name, want := range map[string]int{
		resources.Prefix + "ippools/":                 1,
		resources.Prefix + "nodes/":                   1,
		resources.Prefix + "bgpconfigurations/":       1,
		resources.Prefix + "ipam/blocks/":             3, // n1's, n2's and the bad one
		resources.Prefix + "ipam/affinities/":         2,
		resources.Prefix + "ipam/handles/":            4,
		resources.CalicoPrefix + "tiers/":             1,
		resources.CalicoPrefix + "networkpolicies/":   1,
		resources.CalicoPrefix + "globalnetworksets/": 1,
		resources.CalicoPrefix + "workloadendpoints/": 1,
		"/tortie/heartbeats/":                         0,
	} {
		if got := dir(rep, name); got.Records != want || got.Created != want {
			t.Errorf("%s: %+v, want %d records created", name, got, want)
		}
	}

	// IPAM on the destination knows every pod by its address, and hands a
	// new pod an address none of them has.
	m := &ipam.IPAM{S: dst}
	for h, a := range addrs {
		got, err := m.GetHandle(ctx, h)
		if err != nil || !slices.Equal(got.IPs, []netip.Addr{a}) {
			t.Errorf("handle %s: %+v %v, want %s", h, got, err, a)
		}
	}
	a, err := m.Assign(ctx, ipam.Request{Handle: "k8s-new", Node: "n2"})
	if err != nil {
		t.Fatal(err)
	}
	for h, old := range addrs {
		if a == old {
			t.Fatalf("new pod got %s, the address of %s", a, h)
		}
	}
}

// Copying again writes nothing; the destination's revision stays.
func TestCopyIdempotent(t *testing.T) {
	ctx := context.Background()
	src, dst := datastore.NewMemory(), datastore.NewMemory()
	populate(t, src)
	if _, err := Copy(ctx, src, dst, Options{}); err != nil {
		t.Fatal(err)
	}
	_, rev, _ := dst.List(ctx, "/")
	rep, err := Copy(ctx, src, dst, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if tot := rep.Total(); tot.Unchanged != tot.Records || tot.Created+tot.Updated != 0 {
		t.Fatalf("second copy: %+v", tot)
	}
	if _, rev2, _ := dst.List(ctx, "/"); rev2 != rev {
		t.Fatalf("second copy wrote: revision %d, then %d", rev, rev2)
	}
	copied(t, src, dst)
}

// A destination record that differs stops the copy before it writes
// anything, unless overwriting is allowed; records the destination has
// alone are reported and kept.
func TestCopyConflict(t *testing.T) {
	ctx := context.Background()
	src, dst := datastore.NewMemory(), datastore.NewMemory()
	populate(t, src)
	if _, err := Copy(ctx, src, dst, Options{}); err != nil {
		t.Fatal(err)
	}
	pool := resources.Prefix + "ippools/pods"
	other := strings.Replace(dump(t, src, pool)[pool], "10.244.0.0/24", "10.245.0.0/24", 1)
	put(t, dst, pool, other)
	extra := resources.Prefix + "ippools/theirs"
	put(t, dst, extra, strings.ReplaceAll(other, `"pods"`, `"theirs"`))
	added := resources.CalicoPrefix + "globalnetworksets/allowed"
	put(t, src, added, strings.ReplaceAll(dump(t, src, resources.CalicoPrefix+"globalnetworksets/blocked")[resources.CalicoPrefix+"globalnetworksets/blocked"], "blocked", "allowed"))
	before := dump(t, dst, "/")
	_, rev, _ := dst.List(ctx, "/")

	for _, dry := range []bool{true, false} {
		rep, err := Copy(ctx, src, dst, Options{DryRun: dry})
		if !errors.Is(err, ErrDiffers) || !strings.Contains(err.Error(), pool) || !strings.Contains(err.Error(), "nothing was written") {
			t.Fatalf("dry %v: error %v, want one naming %s", dry, err, pool)
		}
		if !slices.Equal(rep.Differing, []string{pool}) || !slices.Equal(rep.Extra, []string{extra}) {
			t.Fatalf("dry %v: differing %q, extra %q", dry, rep.Differing, rep.Extra)
		}
		if _, rev2, _ := dst.List(ctx, "/"); rev2 != rev {
			t.Fatalf("dry %v: a refused copy wrote", dry)
		}
	}

	rep, err := Copy(ctx, src, dst, Options{Overwrite: true, DryRun: true})
	if err != nil || rep.Total().Updated != 1 || rep.Total().Created != 1 {
		t.Fatalf("dry run with overwrite: %+v %v", rep.Total(), err)
	}
	if got := dump(t, dst, "/"); len(got) != len(before) || got[pool] != other {
		t.Fatal("a dry run wrote")
	}

	rep, err = Copy(ctx, src, dst, Options{Overwrite: true})
	if err != nil {
		t.Fatal(err)
	}
	if d := dir(rep, resources.Prefix+"ippools/"); d.Updated != 1 || d.Unchanged != 0 {
		t.Fatalf("pools: %+v", d)
	}
	if d := dir(rep, resources.CalicoPrefix+"globalnetworksets/"); d.Created != 1 || d.Unchanged != 1 {
		t.Fatalf("network sets: %+v", d)
	}
	got := dump(t, dst, "/")
	if got[pool] != dump(t, src, pool)[pool] || got[added] == "" || got[extra] == "" {
		t.Fatalf("after overwriting: pool %s, added %q, extra %q", got[pool], got[added], got[extra])
	}
}

// recoding is a store that keeps what it is given in another encoding, as
// the Kubernetes API keeps records as custom resources: fields in another
// order, the server's metadata added, and (lossy) one field dropped.
type recoding struct {
	*datastore.Memory
	drop string // a top-level spec field it loses, if any
}

func (r recoding) recode(kv datastore.KV) datastore.KV {
	var v map[string]any
	if json.Unmarshal(kv.Value, &v) != nil {
		return kv
	}
	if md, ok := v["metadata"].(map[string]any); ok {
		md["resourceVersion"] = fmt.Sprint(kv.Rev)
		md["uid"] = "6f1b"
	}
	if spec, ok := v["spec"].(map[string]any); ok && r.drop != "" {
		delete(spec, r.drop)
	}
	if v["apiVersion"] == resources.APIVersion {
		v["apiVersion"] = resources.CalicoAPIVersion
	}
	b, _ := json.MarshalIndent(v, "", " ")
	kv.Value = b
	return kv
}

func (r recoding) List(ctx context.Context, prefix string) ([]datastore.KV, int64, error) {
	kvs, rev, err := r.Memory.List(ctx, prefix)
	for i := range kvs {
		kvs[i] = r.recode(kvs[i])
	}
	return kvs, rev, err
}

func TestCopyRecoding(t *testing.T) {
	ctx := context.Background()
	src := datastore.NewMemory()
	populate(t, src)
	// A record from before resources were stored as projectcalico.org/v3.
	put(t, src, resources.Prefix+"ippools/old", `{"apiVersion":"tortie.io/v1","kind":"IPPool","metadata":{"name":"old"},"spec":{"cidr":"10.250.0.0/16"}}`)

	dst := recoding{Memory: datastore.NewMemory()}
	if _, err := Copy(ctx, src, dst, Options{}); err != nil {
		t.Fatal(err)
	}
	rep, err := Copy(ctx, src, dst, Options{})
	if tot := rep.Total(); err != nil || tot.Unchanged != tot.Records {
		t.Fatalf("copy onto a store that re-encodes: %+v %v", tot, err)
	}

	lossy := recoding{Memory: datastore.NewMemory(), drop: "natOutgoing"}
	rep, err = Copy(ctx, src, lossy, Options{})
	pool := resources.Prefix + "ippools/pods"
	if err == nil || !strings.Contains(err.Error(), pool+": the destination keeps it differently") || !slices.Equal(rep.Failed, []string{pool}) {
		t.Fatalf("lossy store: %v, failed %q", err, rep.Failed)
	}
	if d := dir(rep, resources.Prefix+"ippools/"); d.Failed != 1 {
		t.Fatalf("pools: %+v", d)
	}
}

// failing refuses writes under one directory, and runs hook on each write.
type failing struct {
	datastore.Store
	refuse string
	hook   func()
}

func (f failing) Put(ctx context.Context, key string, value []byte) (int64, error) {
	if f.hook != nil {
		f.hook()
	}
	if f.refuse != "" && strings.HasPrefix(key, f.refuse) {
		return 0, fmt.Errorf("%w: no such resource", datastore.ErrUnavailable)
	}
	return f.Store.Put(ctx, key, value)
}

func TestCopyFailures(t *testing.T) {
	ctx := context.Background()
	src := datastore.NewMemory()
	populate(t, src)
	dst := datastore.NewMemory()
	nets := resources.CalicoPrefix + "globalnetworksets/"
	rep, err := Copy(ctx, src, failing{Store: dst, refuse: nets}, Options{})
	if err == nil || !strings.Contains(err.Error(), nets+"blocked: datastore: unavailable: no such resource") {
		t.Fatalf("error %v", err)
	}
	if tot := rep.Total(); tot.Failed != 1 || tot.Created != tot.Records {
		t.Fatalf("counts %+v", tot)
	}
	if got := dump(t, dst, "/"); len(got) != rep.Total().Records-1 {
		t.Fatalf("the other records were not all written: %d of %d", len(got), rep.Total().Records-1)
	}
	// Once the store takes them, copying again completes the copy.
	if _, err := Copy(ctx, src, dst, Options{}); err != nil {
		t.Fatal(err)
	}
	copied(t, src, dst)

	// A source that changes during the copy is reported: a tortied still
	// running.
	dst = datastore.NewMemory()
	changing := resources.CalicoPrefix + "workloadendpoints/prod/n1-k8s-new-eth0"
	once := false
	rep, err = Copy(ctx, src, failing{Store: dst, hook: func() {
		if !once {
			once = true
			put(t, src, changing, `{}`)
		}
	}}, Options{})
	if err != nil || !slices.Equal(rep.SourceChanged, []string{changing}) {
		t.Fatalf("source changed during the copy: %v, reported %q", err, rep.SourceChanged)
	}
	src.Down = true
	if _, err := Copy(ctx, src, dst, Options{}); !errors.Is(err, datastore.ErrUnavailable) || !strings.Contains(err.Error(), "reading the source") {
		t.Fatalf("unreachable source: %v", err)
	}
}

// From memory into a real etcd and back: the records come back as they
// were.
func TestCopyEtcd(t *testing.T) {
	ctx := context.Background()
	src := datastore.NewMemory()
	populate(t, src)
	etcd := etcdtest.Start(t)
	put(t, etcd, "/tortie/heartbeats/n9", `{}`)
	if _, err := Copy(ctx, src, etcd, Options{}); err != nil {
		t.Fatal(err)
	}
	rep, err := Copy(ctx, src, etcd, Options{})
	if tot := rep.Total(); err != nil || tot.Unchanged != tot.Records {
		t.Fatalf("second copy into etcd: %+v %v", tot, err)
	}
	back := datastore.NewMemory()
	if _, err := Copy(ctx, etcd, back, Options{}); err != nil {
		t.Fatal(err)
	}
	copied(t, src, back)
	if hb := dump(t, etcd, "/tortie/heartbeats/"); len(hb) != 1 {
		t.Fatalf("etcd's own heartbeats: %v", hb)
	}
}

func TestDirOf(t *testing.T) {
	for key, want := range map[string]string{
		resources.Prefix + "ippools/p":                      resources.Prefix + "ippools/",
		resources.Prefix + "ipam/affinities/n1/10.0.0.0-26": resources.Prefix + "ipam/affinities/",
		resources.Prefix + "ipam":                           resources.Prefix,
		resources.CalicoPrefix + "networksets/ns/n":         resources.CalicoPrefix + "networksets/",
	} {
		if got := dirOf(key); got != want {
			t.Errorf("dirOf(%q) = %q, want %q", key, got, want)
		}
	}
	if !bytes.Equal(plainJSON([]byte("not json")), []byte("not json")) {
		t.Error("plainJSON changed a value that is not JSON")
	}
}
