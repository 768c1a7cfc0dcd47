package resources

import (
	"context"
	"encoding/json"
	"os"
	"strings"
	"testing"

	"go.uber.org/zap"

	"github.com/tortie-net/tortie/datastore"
	"github.com/tortie-net/tortie/policy"
)

// policyManifest has one of every policy kind and a workload endpoint, in
// the forms Calico's documentation writes them.
const policyManifest = `
apiVersion: projectcalico.org/v3
kind: Tier
metadata: {name: security}
spec: {order: 100, defaultAction: Pass}
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: allow-web, namespace: prod, labels: {team: web}}
spec:
  tier: security
  order: 10
  selector: app == 'web'
  types: [Ingress, Egress]
  ingress:
  - action: Allow
    protocol: TCP
    source:
      selector: role == 'frontend'
      notNets: [10.0.9.0/24]
    destination:
      ports: [80, "8000:8080", http]
  - action: Deny
    protocol: 17
  - action: Allow
    protocol: ICMP
    icmp: {type: 8, code: 0}
  egress:
  - action: Pass
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: deny-db}
spec:
  selector: app == 'db'
  namespaceSelector: env == 'prod'
  ingress:
  - action: Log
  - action: Deny
    source: {serviceAccounts: {names: [batch]}}
---
apiVersion: projectcalico.org/v3
kind: NetworkSet
metadata: {name: partners, labels: {kind: partner}}
spec: {nets: [198.51.100.0/24, 203.0.113.7]}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkSet
metadata: {name: blocked, labels: {blocked: "true"}}
spec: {nets: [192.0.2.0/24]}
---
apiVersion: projectcalico.org/v3
kind: Profile
metadata: {name: kns.prod}
spec:
  labelsToApply: {env: prod}
  ingress: [{action: Allow}]
  egress: [{action: Allow}]
---
apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata:
  name: n1-k8s-web-eth0
  namespace: prod
  labels: {app: web, projectcalico.org/namespace: prod, projectcalico.org/orchestrator: k8s}
spec:
  node: n1
  orchestrator: k8s
  workload: web
  pod: web
  endpoint: eth0
  ipNetworks: [10.244.0.5/32]
  profiles: [kns.prod]
  interfaceName: tap1
  ports: [{name: http, protocol: TCP, port: 8080}]
`

func TestPolicyKindsRoundTrip(t *testing.T) {
	ctx := context.Background()
	objs, err := Decode(strings.NewReader(policyManifest))
	if err != nil {
		t.Fatal(err)
	}
	if len(objs) != 7 {
		t.Fatalf("%d objects, want 7", len(objs))
	}
	s := datastore.NewMemory()
	c := Client{S: s, Invalid: NewInvalid(zap.NewNop())}
	if err := c.Apply(ctx, objs); err != nil {
		t.Fatal(err)
	}
	// Stored where Calico's etcd datastore keeps them.
	for _, k := range []string{
		"tiers/security", "networkpolicies/prod/allow-web", "globalnetworkpolicies/deny-db",
		"networksets/default/partners", "globalnetworksets/blocked", "profiles/kns.prod",
		"workloadendpoints/prod/n1-k8s-web-eth0",
	} {
		kv, err := s.Get(ctx, CalicoPrefix+k)
		if err != nil {
			t.Fatalf("%s: %v", k, err)
		}
		var h struct{ APIVersion string }
		if json.Unmarshal(kv.Value, &h) != nil || h.APIVersion != CalicoAPIVersion {
			t.Errorf("%s stored as %s", k, kv.Value)
		}
	}
	r, err := c.PolicyResourcesAt(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.NetworkPolicies) != 1 || len(r.GlobalNetworkPolicies) != 1 || len(r.Tiers) != 1 || len(r.NetworkSets) != 1 ||
		len(r.GlobalNetworkSets) != 1 || len(r.Profiles) != 1 || len(r.WorkloadEndpoints) != 1 || r.Rev == 0 {
		t.Fatalf("listed %+v", r)
	}
	np := r.NetworkPolicies[0].Policy()
	if np.Name != "allow-web" || np.Namespace != "prod" || np.Tier != "security" || *np.Order != 10 ||
		len(np.Ingress) != 3 || np.Ingress[0].Destination.Ports[1] != (policy.Port{Min: 8000, Max: 8080}) ||
		np.Ingress[0].Destination.Ports[2].Name != "http" || np.Ingress[1].Protocol != "17" || *np.Ingress[2].ICMP.Type != 8 {
		t.Errorf("NetworkPolicy mapped to %+v", np)
	}
	if ns := r.NetworkSets[0].Set(); ns.Namespace != DefaultNamespace || ns.Labels["kind"] != "partner" || len(ns.Nets) != 2 {
		t.Errorf("NetworkSet mapped to %+v", ns)
	}
	w := r.WorkloadEndpoints[0]
	ep := w.Endpoint(map[string]string{"env": "prod"}, true)
	if ep.Key != "prod/web" || ep.IP.String() != "10.244.0.5" || ep.Profiles[0] != "kns.prod" || ep.Ports[0].Port != 8080 || !ep.Local {
		t.Errorf("WorkloadEndpoint mapped to %+v", ep)
	}
	// Everything compiles together, as the node compiles it.
	in := &policy.Inputs{Tiers: []policy.Tier{r.Tiers[0].Tier()}, NetworkPolicies: []policy.Policy{np},
		GlobalNetworkPolicies: []policy.Policy{r.GlobalNetworkPolicies[0].Policy()},
		NetworkSets:           []policy.NetworkSet{r.NetworkSets[0].Set()}, GlobalNetworkSets: []policy.NetworkSet{r.GlobalNetworkSets[0].Set()},
		Profiles: []policy.Profile{r.Profiles[0].Profile()}, Endpoints: []policy.Endpoint{ep}}
	if _, err := policy.Compile(in); err != nil {
		t.Fatal(err)
	}
	// What get shows applies back unchanged.
	for _, kind := range []string{KindTier, KindNetworkPolicy, KindGlobalNetworkPolicy, KindNetworkSet, KindGlobalNetworkSet, KindProfile, KindWorkloadEndpoint} {
		v, err := c.List(ctx, kind)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := json.Marshal(v)
		again, err := Decode(strings.NewReader(string(b)))
		if err != nil {
			t.Fatalf("%s: %s does not decode: %v", kind, b, err)
		}
		if b2, _ := json.Marshal(again); string(b2) != string(b) {
			t.Errorf("%s: shown\n%s\nreads back as\n%s", kind, b, b2)
		}
	}
	// Deletion: namespaced kinds by NAMESPACE/NAME (the default namespace
	// when only NAME), the others by NAME.
	for _, d := range []struct{ kind, name string }{
		{KindNetworkPolicy, "prod/allow-web"}, {KindNetworkSet, "partners"}, {KindGlobalNetworkPolicy, "deny-db"},
		{KindTier, "security"}, {KindGlobalNetworkSet, "blocked"}, {KindProfile, "kns.prod"}, {KindWorkloadEndpoint, "prod/n1-k8s-web-eth0"},
	} {
		if err := c.Delete(ctx, d.kind, d.name); err != nil {
			t.Errorf("delete %s %s: %v", d.kind, d.name, err)
		}
	}
	if kvs, _, _ := s.List(ctx, CalicoPrefix); len(kvs) != 0 {
		t.Errorf("left after deletion: %v", kvs)
	}
	for _, d := range []struct{ kind, name string }{{KindNetworkPolicy, "a/b/c"}, {KindNetworkPolicy, "/x"}, {KindTier, "ns/x"}} {
		if err := c.Delete(ctx, d.kind, d.name); err == nil {
			t.Errorf("delete %s %q accepted", d.kind, d.name)
		}
	}
}

func TestPolicyKindsInvalid(t *testing.T) {
	head := func(kind string) string { return "apiVersion: projectcalico.org/v3\nkind: " + kind + "\n" }
	for _, c := range []struct{ in, want string }{
		{head("NetworkPolicy") + "metadata: {name: p}\nspec: {selector: 'app =='}", "selector"},
		{head("NetworkPolicy") + "metadata: {name: p, namespace: Bad_NS}\nspec: {}", "metadata.namespace"},
		{head("NetworkPolicy") + "metadata: {name: p}\nspec: {namespaceSelector: all()}", "namespaceSelector is for GlobalNetworkPolicy only"},
		{head("NetworkPolicy") + "metadata: {name: p}\nspec: {ingress: [{action: Jump}]}", "Jump"},
		{head("NetworkPolicy") + "metadata: {name: p}\nspec: {ingress: [{action: Allow, destination: {ports: ['9:1']}}]}", "9:1"},
		{head("NetworkPolicy") + "metadata: {name: p}\nspec: {ingress: [{action: Allow, protocol: 300}]}", "protocol"},
		{head("NetworkPolicy") + "metadata: {name: p}\nspec: {ingress: [{action: Allow, source: {nets: [10.0.0.0/33]}}]}", "10.0.0.0/33"},
		{head("NetworkPolicy") + "metadata: {name: p}\nspec: {types: [Sideways]}", "Sideways"},
		{head("NetworkPolicy") + "metadata: {name: p}\nspec: {bogus: 1}", "bogus"},
		{head("GlobalNetworkPolicy") + "metadata: {name: p, namespace: x}\nspec: {}", "namespace"},
		{head("GlobalNetworkPolicy") + "metadata: {name: p}\nspec: {order: high}", "order"},
		{head("Tier") + "metadata: {name: t}\nspec: {defaultAction: Allow}", "defaultAction"},
		{head("NetworkSet") + "metadata: {name: s}\nspec: {nets: [nope]}", "nope"},
		{head("GlobalNetworkSet") + "metadata: {name: ''}\nspec: {nets: [10.0.0.0/8]}", "metadata.name"},
		{head("Profile") + "metadata: {name: kns.x}\nspec: {egress: [{action: Allow, destination: {selector: '!!'}}]}", "selector"},
		{head("WorkloadEndpoint") + "metadata: {name: w, namespace: x}\nspec: {pod: p}", "spec.node"},
		{head("WorkloadEndpoint") + "metadata: {name: w, namespace: x}\nspec: {node: n, pod: p, ipNetworks: [10.1.2.3/40]}", "ipNetworks"},
		{head("WorkloadEndpoint") + "metadata: {name: w, namespace: x}\nspec: {node: n}", "spec.pod"},
	} {
		objs, err := Decode(strings.NewReader(c.in))
		if err == nil || !strings.Contains(err.Error(), c.want) || objs != nil {
			t.Errorf("%s\n: got %v, want an error with %q", c.in, err, c.want)
		}
	}
}

// badPolicyRecords are stored policy records that must be skipped.
var badPolicyRecords = map[string]string{
	"networkpolicies/prod/bad-sel":     `{"apiVersion":"projectcalico.org/v3","kind":"NetworkPolicy","metadata":{"name":"bad-sel","namespace":"prod"},"spec":{"selector":"a =="}}`,
	"networkpolicies/prod/misplaced":   `{"apiVersion":"projectcalico.org/v3","kind":"NetworkPolicy","metadata":{"name":"misplaced","namespace":"dev"},"spec":{}}`,
	"globalnetworkpolicies/trunc":      `{"apiVersion":"projectcalico.org/v3","kind":"GlobalNet`,
	"tiers/pass-all":                   `{"apiVersion":"projectcalico.org/v3","kind":"Tier","metadata":{"name":"pass-all"},"spec":{"defaultAction":"Allow"}}`,
	"networksets/prod/bad-net":         `{"apiVersion":"projectcalico.org/v3","kind":"NetworkSet","metadata":{"name":"bad-net","namespace":"prod"},"spec":{"nets":["x"]}}`,
	"globalnetworksets/array":          `[]`,
	"profiles/kns.bad":                 `{"apiVersion":"projectcalico.org/v3","kind":"Profile","metadata":{"name":"kns.bad"},"spec":{"ingress":[{"action":"Maybe"}]}}`,
	"workloadendpoints/prod/no-node-w": `{"apiVersion":"projectcalico.org/v3","kind":"WorkloadEndpoint","metadata":{"name":"no-node-w","namespace":"prod"},"spec":{"pod":"p"}}`,
}

func TestStoredPolicyInvalidSkipped(t *testing.T) {
	ctx := context.Background()
	s := datastore.NewMemory()
	inv := NewInvalid(zap.NewNop())
	c := Client{S: s, Invalid: inv}
	objs, err := Decode(strings.NewReader(policyManifest))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Apply(ctx, objs); err != nil {
		t.Fatal(err)
	}
	for k, v := range badPolicyRecords {
		if _, err := s.Put(ctx, CalicoPrefix+k, []byte(v)); err != nil {
			t.Fatal(err)
		}
	}
	r, err := c.PolicyResourcesAt(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.NetworkPolicies) != 1 || len(r.GlobalNetworkPolicies) != 1 || len(r.Tiers) != 1 || len(r.NetworkSets) != 1 ||
		len(r.GlobalNetworkSets) != 1 || len(r.Profiles) != 1 || len(r.WorkloadEndpoints) != 1 {
		t.Fatalf("the valid records beside the invalid ones: %+v", r)
	}
	got := map[string]bool{}
	for _, rec := range inv.List() {
		got[strings.TrimPrefix(rec.Key, CalicoPrefix)] = rec.Error != "" && rec.Kind != ""
	}
	for k := range badPolicyRecords {
		if !got[k] {
			t.Errorf("%s not reported", k)
		}
	}
	if len(got) != len(badPolicyRecords) {
		t.Errorf("reported %v", got)
	}
	counts := inv.Counts()
	if counts[KindNetworkPolicy] != 2 || counts[KindWorkloadEndpoint] != 1 {
		t.Errorf("counts %v", counts)
	}
}

// FuzzDecodeStoredPolicy: a stored policy record either decodes to a
// valid object that reads back, or is an error; never both, never a panic.
func FuzzDecodeStoredPolicy(f *testing.F) {
	kinds := []string{KindNetworkPolicy, KindGlobalNetworkPolicy, KindTier, KindNetworkSet, KindGlobalNetworkSet, KindProfile, KindWorkloadEndpoint}
	for k, v := range badPolicyRecords {
		for i, kind := range kinds {
			if strings.HasPrefix(k, calicoDirs[kind]+"/") {
				f.Add(uint8(i), v)
			}
		}
	}
	objs, _ := Decode(strings.NewReader(policyManifest))
	for _, o := range objs {
		b, _ := json.Marshal(o)
		for i, kind := range kinds {
			if strings.HasPrefix(o.key(), kindPrefix(kind)) {
				f.Add(uint8(i), string(b))
			}
		}
	}
	f.Fuzz(func(t *testing.T, ki uint8, value string) {
		kind := kinds[int(ki)%len(kinds)]
		var probe struct {
			Metadata NamespacedMeta `json:"metadata"`
		}
		_ = json.Unmarshal([]byte(value), &probe)
		key := kindPrefix(kind) + probe.Metadata.Name
		if Namespaced(kind) {
			key = kindPrefix(kind) + probe.Metadata.Namespace + "/" + probe.Metadata.Name
		}
		o, err := DecodeStored(kind, datastore.KV{Key: key, Value: []byte(value), Rev: 1})
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
		if _, err := DecodeStored(kind, datastore.KV{Key: key, Value: b}); err != nil {
			t.Fatalf("re-encoded %s does not decode: %v", b, err)
		}
	})
}

func TestLabelWorkloadEndpoint(t *testing.T) {
	ctx := context.Background()
	c := Client{S: datastore.NewMemory()}
	w := &WorkloadEndpoint{Metadata: NamespacedMeta{Name: "n1-k8s-web-eth0", Namespace: "prod", Labels: map[string]string{"old": "x", LabelNamespace: "prod"}},
		Spec: WorkloadEndpointSpec{Node: "n1", Pod: "web", IPNetworks: []string{"10.244.0.5/32"}}}
	if err := c.Apply(ctx, []Object{w}); err != nil {
		t.Fatal(err)
	}
	got, err := c.LabelWorkloadEndpoint(ctx, "prod/n1-k8s-web-eth0", map[string]string{"app": "web"}, []string{"old"})
	if err != nil {
		t.Fatal(err)
	}
	again, err := c.WorkloadEndpoint(ctx, "prod", "n1-k8s-web-eth0")
	if err != nil || again == nil {
		t.Fatal(err)
	}
	for _, l := range []map[string]string{got.Metadata.Labels, again.Metadata.Labels} {
		if len(l) != 2 || l["app"] != "web" || l[LabelNamespace] != "prod" {
			t.Errorf("labels %v", l)
		}
	}
	if _, err := c.LabelWorkloadEndpoint(ctx, "prod/nope", map[string]string{"a": "b"}, nil); err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Errorf("labelling a missing endpoint: %v", err)
	}
	if _, err := c.LabelWorkloadEndpoint(ctx, "prod/n1-k8s-web-eth0", map[string]string{"bad key": "b"}, nil); err == nil {
		t.Error("a bad key accepted")
	}
}

// A policy in a tier that does not exist is refused, unless the tier is
// stored or applied with it.
func TestPolicyTierMustExist(t *testing.T) {
	ctx := context.Background()
	c := Client{S: datastore.NewMemory()}
	pol := "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: p}\nspec: {tier: security, selector: all()}\n"
	tier := "apiVersion: projectcalico.org/v3\nkind: Tier\nmetadata: {name: security}\nspec: {order: 10}\n"
	objs, err := Decode(strings.NewReader(pol))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Apply(ctx, objs); err == nil || !strings.Contains(err.Error(), `tier "security" does not exist`) {
		t.Fatalf("policy without its tier: %v", err)
	}
	if kvs, _, _ := c.S.List(ctx, CalicoPrefix); len(kvs) != 0 {
		t.Fatalf("written anyway: %v", kvs)
	}
	both, err := Decode(strings.NewReader(pol + "---\n" + tier))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Apply(ctx, both); err != nil {
		t.Fatalf("policy with its tier: %v", err)
	}
	if err := c.Apply(ctx, objs); err != nil {
		t.Fatalf("policy in a stored tier: %v", err)
	}
}

// The example manifest applies, and what it holds compiles.
func TestPolicyExample(t *testing.T) {
	b, err := os.ReadFile("../examples/policy.yaml")
	if err != nil {
		t.Fatal(err)
	}
	objs, err := Decode(strings.NewReader(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	c := Client{S: datastore.NewMemory()}
	if err := c.Apply(context.Background(), objs); err != nil {
		t.Fatal(err)
	}
	r, err := c.PolicyResourcesAt(context.Background())
	if err != nil || len(objs) != 5 || len(r.Tiers)+len(r.GlobalNetworkPolicies)+len(r.GlobalNetworkSets)+len(r.NetworkPolicies)+len(r.Profiles) != 5 {
		t.Fatalf("%d objects, stored %+v, %v", len(objs), r, err)
	}
	in := &policy.Inputs{Tiers: []policy.Tier{r.Tiers[0].Tier()}, GlobalNetworkPolicies: []policy.Policy{r.GlobalNetworkPolicies[0].Policy()},
		GlobalNetworkSets: []policy.NetworkSet{r.GlobalNetworkSets[0].Set()}, NetworkPolicies: []policy.Policy{r.NetworkPolicies[0].Policy()},
		Profiles: []policy.Profile{r.Profiles[0].Profile()}}
	if _, err := policy.Compile(in); err != nil {
		t.Fatal(err)
	}
}
