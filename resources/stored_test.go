package resources

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/tortie-net/tortie/datastore"
)

// badRecords are stored records of every kind that must be skipped.
var badRecords = map[string]string{
	"ippools/garbage-cidr":  `{"apiVersion":"tortie.io/v1","kind":"IPPool","metadata":{"name":"garbage-cidr"},"spec":{"cidr":"garbage"}}`,
	"ippools/out-of-range":  `{"apiVersion":"tortie.io/v1","kind":"IPPool","metadata":{"name":"out-of-range"},"spec":{"cidr":"10.300.0.0/16"}}`,
	"ippools/truncated":     `{"apiVersion":"tortie.io/v1","kind":"IPPool","metadata":{"name":"trunc`,
	"ippools/wrong-type":    `{"apiVersion":"tortie.io/v1","kind":"IPPool","metadata":{"name":"wrong-type"},"spec":{"cidr":"10.9.0.0/16","blockSize":"26"}}`,
	"ippools/ipv6":          `{"apiVersion":"tortie.io/v1","kind":"IPPool","metadata":{"name":"ipv6"},"spec":{"cidr":"fd00::/64","ipipMode":"Always"}}`,
	"ippools/misnamed":      `{"apiVersion":"tortie.io/v1","kind":"IPPool","metadata":{"name":"other"},"spec":{"cidr":"10.8.0.0/16"}}`,
	"nodes/bad-address":     `{"apiVersion":"tortie.io/v1","kind":"Node","metadata":{"name":"bad-address"},"spec":{"bgp":{"ipv4Address":"not-an-ip"}}}`,
	"nodes/no-address":      `{"apiVersion":"tortie.io/v1","kind":"Node","metadata":{"name":"no-address"},"spec":{"bgp":{"ipv4Address":"fd00::1/64"}}}`,
	"nodes/bad-mac":         `{"apiVersion":"tortie.io/v1","kind":"Node","metadata":{"name":"bad-mac"},"spec":{"bgp":{"ipv4Address":"10.0.1.9/24"},"vxlanTunnelMACAddr":"zz"}}`,
	"nodes/array":           `[]`,
	"bgpconfigurations/x":   `{"apiVersion":"tortie.io/v1","kind":"BGPConfiguration","metadata":{"name":"x"},"spec":{"listenPort":"179"}}`,
	"bgpconfigurations/big": `{"apiVersion":"tortie.io/v1","kind":"BGPConfiguration","metadata":{"name":"big"},"spec":{"listenPort":70000}}`,
	"bgppeers/bad-ip":       `{"apiVersion":"tortie.io/v1","kind":"BGPPeer","metadata":{"name":"bad-ip"},"spec":{"peerIP":"10.0.0.256","asNumber":65001}}`,
	"bgppeers/trunc":        `{"apiVersion":"tortie.io/v1","kind":"BGPPeer","meta`,
}

const goodRecords = `
apiVersion: tortie.io/v1
kind: IPPool
metadata: {name: good}
spec: {cidr: 10.244.0.0/16, ipipMode: Always}
---
apiVersion: tortie.io/v1
kind: Node
metadata: {name: n1}
spec: {bgp: {ipv4Address: 10.0.1.1/24, routeReflectorClusterID: 244.0.0.1}, vxlanTunnelMACAddr: "66:f9:37:c3:7e:94"}
---
apiVersion: tortie.io/v1
kind: BGPConfiguration
metadata: {name: default}
spec: {asNumber: 65000}
---
apiVersion: tortie.io/v1
kind: BGPPeer
metadata: {name: tor}
spec: {peerIP: 10.0.1.254, asNumber: 65001}
`

func TestStoredInvalidSkipped(t *testing.T) {
	ctx := context.Background()
	s := datastore.NewMemory()
	core, logs := observer.New(zapcore.WarnLevel)
	inv := NewInvalid(zap.New(core))
	c := Client{S: s, Invalid: inv}
	objs, err := Decode(strings.NewReader(goodRecords))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Apply(ctx, objs); err != nil {
		t.Fatal(err)
	}
	for k, v := range badRecords {
		if _, err := s.Put(ctx, Prefix+k, []byte(v)); err != nil {
			t.Fatal(err)
		}
	}
	for round := 0; round < 2; round++ {
		pools, err := c.Pools(ctx)
		if err != nil || len(pools) != 1 || pools[0].Prefix().String() != "10.244.0.0/16" {
			t.Fatalf("pools: %v %+v", err, pools)
		}
		nodes, err := c.Nodes(ctx)
		if err != nil || len(nodes) != 1 {
			t.Fatalf("nodes: %v %+v", err, nodes)
		}
		if a, _ := nodes[0].Address(); a.String() != "10.0.1.1/24" || nodes[0].Spec.BGP.RouteReflectorClusterID.String() != "244.0.0.1" ||
			nodes[0].Spec.VXLANTunnelMACAddr.String() != "66:f9:37:c3:7e:94" {
			t.Fatalf("node fields: %+v %+v", nodes[0].Spec, nodes[0].Spec.BGP)
		}
		if confs, err := c.BGPConfigurations(ctx); err != nil || len(confs) != 1 {
			t.Fatalf("bgpconfigurations: %v %+v", err, confs)
		}
		if peers, err := c.BGPPeers(ctx); err != nil || len(peers) != 1 || peers[0].Spec.PeerIP.String() != "10.0.1.254" {
			t.Fatalf("bgppeers: %v %+v", err, peers)
		}
	}
	got := map[string]InvalidRecord{}
	for _, r := range inv.List() {
		got[strings.TrimPrefix(r.Key, Prefix)] = r
	}
	for k := range badRecords {
		r, ok := got[k]
		if !ok || r.Error == "" || r.Rev == 0 {
			t.Errorf("%s not reported: %+v", k, r)
		}
	}
	if len(got) != len(badRecords) {
		t.Errorf("reported %d records, want %d: %v", len(got), len(badRecords), got)
	}
	// Listed twice, logged and counted once.
	if n := logs.Len(); n != len(badRecords) {
		t.Errorf("%d warnings for %d invalid records read twice", n, len(badRecords))
	}
	total := uint64(0)
	for _, n := range inv.Counts() {
		total += n
	}
	if total != uint64(len(badRecords)) || inv.Counts()[KindIPPool] != 6 {
		t.Errorf("counts %v", inv.Counts())
	}
	// A fixed record leaves the registry; a new revision of a bad one is
	// reported again.
	if _, err := s.Put(ctx, Prefix+"ippools/truncated", []byte(`{"apiVersion":"tortie.io/v1","kind":"IPPool","metadata":{"name":"truncated"},"spec":{"cidr":"10.245.0.0/16"}}`)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Put(ctx, Prefix+"ippools/garbage-cidr", []byte(`{"spec":{"cidr":"still garbage"}}`)); err != nil {
		t.Fatal(err)
	}
	if pools, _ := c.Pools(ctx); len(pools) != 2 {
		t.Fatalf("fixed pool not read: %+v", pools)
	}
	for _, r := range inv.List() {
		if strings.HasSuffix(r.Key, "/truncated") {
			t.Error("fixed record still reported")
		}
	}
	if inv.Counts()[KindIPPool] != 7 {
		t.Errorf("new revision of a bad record not counted: %v", inv.Counts())
	}
}

// Typed fields keep Calico's JSON text.
func TestStoredShape(t *testing.T) {
	objs, err := Decode(strings.NewReader(goodRecords))
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(objs[1])
	if err != nil {
		t.Fatal(err)
	}
	want := `{"apiVersion":"projectcalico.org/v3","kind":"Node","metadata":{"name":"n1"},"spec":{"bgp":{"ipv4Address":"10.0.1.1/24","routeReflectorClusterID":"244.0.0.1"},"vxlanTunnelMACAddr":"66:f9:37:c3:7e:94"}}`
	if string(b) != want {
		t.Fatalf("node JSON\n got %s\nwant %s", b, want)
	}
	b, _ = json.Marshal(objs[0].(*IPPool).Spec)
	if !strings.HasPrefix(string(b), `{"cidr":"10.244.0.0/16"`) {
		t.Fatalf("pool JSON %s", b)
	}
}

// FuzzDecodeStored: a stored record of any kind decodes to an object that
// validates and survives a round trip, or to an error; never a panic.
func FuzzDecodeStored(f *testing.F) {
	for k, v := range badRecords {
		f.Add(strings.SplitN(k, "/", 2)[0], v)
	}
	objs, _ := Decode(strings.NewReader(goodRecords))
	for _, o := range objs {
		o.(interface{ setVersion() }).setVersion()
		b, _ := json.Marshal(o)
		f.Add(strings.TrimSuffix(strings.TrimPrefix(o.key(), Prefix), "/"+nameOf(o)), string(b))
	}
	f.Fuzz(func(t *testing.T, dir, value string) {
		var kind string
		for k, d := range kindDirs {
			if d == dir {
				kind = k
			}
		}
		if kind == "" {
			kind = KindIPPool
		}
		var probe struct {
			Metadata Meta `json:"metadata"`
		}
		_ = json.Unmarshal([]byte(value), &probe)
		kv := datastore.KV{Key: Prefix + kindDirs[kind] + "/" + probe.Metadata.Name, Value: []byte(value), Rev: 1}
		o, err := DecodeStored(kind, kv)
		if err != nil {
			if o != nil {
				t.Fatalf("both an object and an error: %v", err)
			}
			return
		}
		if err := o.Validate(); err != nil {
			t.Fatalf("decoded object does not validate: %v", err)
		}
		b, err := json.Marshal(o)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := DecodeStored(kind, datastore.KV{Key: kv.Key, Value: b}); err != nil {
			t.Fatalf("re-encoded %s does not decode: %v", b, err)
		}
	})
}

func nameOf(o Object) string {
	b, _ := json.Marshal(o)
	var probe struct {
		Metadata Meta `json:"metadata"`
	}
	_ = json.Unmarshal(b, &probe)
	return probe.Metadata.Name
}

func TestKindOfKey(t *testing.T) {
	for key, want := range map[string]string{
		Prefix + "ippools/default":                       KindIPPool,
		Prefix + "nodes/n1":                              KindNode,
		Prefix + "bgpfilters/f":                          KindBGPFilter,
		Prefix + "clusterinformations/default":           KindClusterInformation,
		CalicoPrefix + "networkpolicies/default/p":       KindNetworkPolicy,
		CalicoPrefix + "globalnetworkpolicies/g":         KindGlobalNetworkPolicy,
		CalicoPrefix + "workloadendpoints/ns/n1-k8s-pod": KindWorkloadEndpoint,
		CalicoPrefix + "profiles/kns.default":            KindProfile,
		Prefix + "ipam/blocks/10.244.0.0-26":             "",
		Prefix + "ippools":                               "",
		"/tortie/heartbeats/n1":                          "",
		"/calico/resources/v3/projectcalico.org/bogus/x": "",
	} {
		if got := KindOfKey(key); got != want {
			t.Errorf("KindOfKey(%q) = %q, want %q", key, got, want)
		}
	}
	// Every kind's own key maps back to it.
	for _, kind := range Kinds {
		if got := KindOfKey(kindPrefix(kind) + "x"); got != kind {
			t.Errorf("KindOfKey of %s's directory = %q", kind, got)
		}
	}
}
