package agent

import (
	"context"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/tortie-net/tortie/datastore"
	"github.com/tortie-net/tortie/fib"
	"github.com/tortie-net/tortie/internal/kubefake"
	"github.com/tortie-net/tortie/kubeview"
	"github.com/tortie-net/tortie/policy"
	"github.com/tortie-net/tortie/resources"
	"github.com/tortie-net/tortie/router"
	"github.com/tortie-net/tortie/router/routertest"
)

const policyPods = `
apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata: {name: n1-k8s-web-eth0, namespace: prod}
spec: {node: n1, orchestrator: k8s, pod: web, endpoint: eth0, ipNetworks: [10.244.0.5/32], profiles: [kns.prod]}
---
apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata: {name: n2-k8s-client-eth0, namespace: dev, labels: {role: client}}
spec: {node: n2, orchestrator: k8s, pod: client, endpoint: eth0, ipNetworks: [10.244.1.7/32], profiles: [kns.dev]}
`

func apply(t *testing.T, s datastore.Store, manifest string) {
	t.Helper()
	objs, err := resources.Decode(strings.NewReader(manifest))
	if err != nil {
		t.Fatal(err)
	}
	if err := (resources.Client{S: s}).Apply(context.Background(), objs); err != nil {
		t.Fatal(err)
	}
}

// waitFor polls cond until it holds or a deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// verdict is what the installed Set says of TCP from src to dst:80, at
// the ingress of local endpoint key.
func verdict(t *testing.T, a *Agent, key, src, dst string) policy.Verdict {
	t.Helper()
	set := a.PolicySet()
	i, ok := set.Index(key)
	if !ok {
		t.Fatalf("%s is not in the installed set", key)
	}
	u32 := func(s string) uint32 { return fib.AddrU32(netip.MustParseAddr(s)) }
	return set.Evaluate(i, policy.Ingress, &policy.Packet{Src: u32(src), Dst: u32(dst), SrcPort: 40000, DstPort: 80, Proto: 6})
}

// TestPolicyFromDatastore: the agent compiles the datastore's workload
// endpoints and policies and installs the Set in the router; labelling the
// pod and applying a deny policy changes the installed verdict; a policy
// that does not compile keeps the previous Set and is counted.
func TestPolicyFromDatastore(t *testing.T) {
	s := datastore.NewMemory()
	r := router.New(router.Config{}, fib.New(), router.Underlay{Sender: func() router.UnderlaySender {
		return (&routertest.Underlay{}).NewSender()
	}})
	t.Cleanup(func() { _ = r.Close() })
	a := &Agent{Node: "n1", Store: s, Router: r, Log: zap.NewNop(), Invalid: resources.NewInvalid(zap.NewNop())}
	apply(t, s, policyPods)
	// The pod's router port, named for policy as the endpoint manager
	// names it.
	if _, err := r.AddPort(router.PortConfig{Name: "prod/n1-k8s-web-eth0", Addr: netip.MustParseAddr("10.244.0.5"),
		PolicyKey: "prod/web"}, routertest.NewDevice()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { a.runPolicy(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })

	waitFor(t, "the first Set", func() bool { return a.PolicySet() != nil })
	set := a.PolicySet()
	if set.Len() != 1 {
		t.Fatalf("%d local endpoints, want 1 (n1's)", set.Len())
	}
	// No policy: the namespace profile Calico makes allows.
	if v := verdict(t, a, "prod/web", "10.244.1.7", "10.244.0.5"); v.Action != policy.Allow || v.Decider != policy.ByProfile {
		t.Fatalf("before any policy: %+v", v)
	}
	gen := r.Stats().Policy.Generation

	// The pod gets its label, and a policy denies the client.
	if _, err := (resources.Client{S: s}).LabelWorkloadEndpoint(ctx, "prod/n1-k8s-web-eth0", map[string]string{"app": "web"}, nil); err != nil {
		t.Fatal(err)
	}
	apply(t, s, `
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: deny-clients}
spec:
  selector: app == 'web'
  ingress:
  - {action: Deny, source: {selector: role == 'client', namespaceSelector: projectcalico.org/name == 'dev'}}
  - {action: Allow}
`)
	waitFor(t, "the deny policy", func() bool {
		return verdict(t, a, "prod/web", "10.244.1.7", "10.244.0.5").Action == policy.Deny
	})
	v := verdict(t, a, "prod/web", "10.244.1.7", "10.244.0.5")
	if v.Decider != policy.ByRule || v.Policy != "deny-clients" || v.Rule != 0 {
		t.Errorf("denied by %+v", v)
	}
	if v := verdict(t, a, "prod/web", "10.244.9.9", "10.244.0.5"); v.Action != policy.Allow {
		t.Errorf("another source: %+v", v)
	}
	if g := r.Stats().Policy.Generation; g <= gen {
		t.Errorf("router generation %d after the change, was %d", g, gen)
	}
	// The router maps the pod's port to its endpoint in the installed Set.
	if n := r.Stats().Policy.Subject; n != 1 {
		t.Errorf("%d ports subject to policy, want 1 (the pod's)", n)
	}

	// A tier deleted under its policy leaves a policy that does not
	// compile: the previous Set stays, and the failure is counted.
	apply(t, s, "apiVersion: projectcalico.org/v3\nkind: Tier\nmetadata: {name: nowhere}\nspec: {order: 10}\n---\n"+
		"apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: lost}\nspec: {tier: nowhere, selector: all()}\n")
	waitFor(t, "the tier's policy", func() bool {
		installed, _ := a.PolicyCounts()
		return installed > 0 && a.PolicySet() != nil && verdict(t, a, "prod/web", "10.244.1.7", "10.244.0.5").Tier == "nowhere"
	})
	installed := a.PolicySet()
	if err := (resources.Client{S: s}).Delete(ctx, resources.KindTier, "nowhere"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the compile failure", func() bool { _, failed := a.PolicyCounts(); return failed > 0 })
	if a.PolicySet() != installed {
		t.Error("a failed compilation replaced the installed Set")
	}
	if err := (resources.Client{S: s}).Delete(ctx, resources.KindGlobalNetworkPolicy, "lost"); err != nil {
		t.Fatal(err)
	}
	// Deleting the deny policy allows the client again.
	if err := (resources.Client{S: s}).Delete(ctx, resources.KindGlobalNetworkPolicy, "deny-clients"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the deny policy's removal", func() bool {
		return verdict(t, a, "prod/web", "10.244.1.7", "10.244.0.5").Action == policy.Allow
	})
}

// TestPolicyInputs: namespace labels come from kns profiles' pcns.
// labels; a namespace without a stored kns profile gets Calico's; a
// missing profile has no rules; endpoints without an address, and a pod's
// second endpoint, are left out with a warning.
func TestPolicyInputs(t *testing.T) {
	s := datastore.NewMemory()
	apply(t, s, policyPods+`---
apiVersion: projectcalico.org/v3
kind: Profile
metadata: {name: kns.prod}
spec: {labelsToApply: {pcns.env: production, team: a}, ingress: [{action: Allow}]}
---
apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata: {name: n1-k8s-web-eth1, namespace: prod}
spec: {node: n1, pod: web, ipNetworks: [10.244.0.6/32]}
---
apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata: {name: n1-k8s-noaddr-eth0, namespace: prod}
spec: {node: n1, pod: noaddr}
---
apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata: {name: n1-k8s-odd-eth0, namespace: prod}
spec: {node: n1, pod: odd, ipNetworks: [10.244.0.9/32], profiles: [nowhere]}
`)
	r, err := (resources.Client{S: s}).PolicyResourcesAt(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	in, warnings := PolicyInputs("n1", r, nil)
	if len(warnings) != 3 {
		t.Errorf("warnings %q", warnings)
	}
	eps := map[string]policy.Endpoint{}
	for _, e := range in.Endpoints {
		eps[e.Key] = e
	}
	if len(eps) != 3 || !eps["prod/web"].Local || eps["dev/client"].Local || eps["prod/web"].IP.String() != "10.244.0.5" {
		t.Fatalf("endpoints %+v", in.Endpoints)
	}
	if l := eps["prod/web"].NamespaceLabels; len(l) != 1 || l["env"] != "production" {
		t.Errorf("namespace labels %v", l)
	}
	profiles := map[string]policy.Profile{}
	for _, p := range in.Profiles {
		profiles[p.Name] = p
	}
	if p := profiles["kns.dev"]; len(p.Ingress) != 1 || len(p.Egress) != 1 || p.LabelsToApply["pcns.projectcalico.org/name"] != "dev" {
		t.Errorf("made kns.dev %+v", p)
	}
	if p, ok := profiles["nowhere"]; !ok || len(p.Ingress)+len(p.Egress) != 0 {
		t.Errorf("missing profile %+v", p)
	}
	set, err := policy.Compile(in)
	if err != nil {
		t.Fatal(err)
	}
	u32 := func(s string) uint32 { return fib.AddrU32(netip.MustParseAddr(s)) }
	i, _ := set.Index("prod/odd")
	if v := set.Evaluate(i, policy.Ingress, &policy.Packet{Src: u32("10.244.1.7"), Dst: u32("10.244.0.9"), DstPort: 80, Proto: 6}); v.Action != policy.Deny {
		t.Errorf("endpoint naming a missing profile: %+v", v)
	}
}

// TestPolicyInputsFromKubernetes: with the API's objects, a Kubernetes
// pod's endpoint takes the pod's labels (with Calico's), service account
// and named ports, and its namespace's labels; NetworkPolicies are
// compiled with the Calico resources, and decide verdicts; an endpoint
// whose pod the API does not know keeps its record's labels.
func TestPolicyInputsFromKubernetes(t *testing.T) {
	s := datastore.NewMemory()
	apply(t, s, policyPods+`---
apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata: {name: n1-k8s-gone-eth0, namespace: prod, labels: {kept: "yes"}}
spec: {node: n1, orchestrator: k8s, pod: gone, endpoint: eth0, ipNetworks: [10.244.0.8/32]}
`)
	r, err := (resources.Client{S: s}).PolicyResourcesAt(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	tcp := networkingv1.NetworkPolicyPort{Port: &intstr.IntOrString{Type: intstr.String, StrVal: "http"}}
	kube := &kubeview.Snapshot{
		Pods: map[string]*kubeview.Pod{
			"prod/web": {Namespace: "prod", Name: "web", ServiceAccount: "web-sa", Labels: map[string]string{"app": "web"},
				Ports: []policy.NamedPort{{Name: "http", Protocol: "TCP", Port: 8080}}},
			"dev/client": {Namespace: "dev", Name: "client", ServiceAccount: "default", Labels: map[string]string{"role": "client"}},
		},
		Namespaces:      map[string]map[string]string{"prod": {"env": "prod"}, "dev": {"env": "dev"}},
		ServiceAccounts: map[string]map[string]string{"prod/web-sa": {"tier": "front"}},
		NetworkPolicies: []*networkingv1.NetworkPolicy{{
			ObjectMeta: metav1.ObjectMeta{Namespace: "prod", Name: "web-from-dev"},
			Spec: networkingv1.NetworkPolicySpec{
				PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
				Ingress: []networkingv1.NetworkPolicyIngressRule{{
					From:  []networkingv1.NetworkPolicyPeer{{NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"env": "dev"}}}},
					Ports: []networkingv1.NetworkPolicyPort{tcp},
				}},
			},
		}},
	}
	in, warnings := PolicyInputs("n1", r, kube)
	if len(warnings) != 0 {
		t.Errorf("warnings %q", warnings)
	}
	eps := map[string]policy.Endpoint{}
	for _, e := range in.Endpoints {
		eps[e.Key] = e
	}
	web := eps["prod/web"]
	wantLabels := map[string]string{"app": "web", resources.LabelNamespace: "prod", resources.LabelOrchestrator: "k8s", resources.LabelSAName: "web-sa"}
	if !reflect.DeepEqual(web.Labels, wantLabels) || web.ServiceAccount != "web-sa" || web.ServiceAccountLabels["tier"] != "front" ||
		web.NamespaceLabels["env"] != "prod" || len(web.Ports) != 1 || web.IP.String() != "10.244.0.5" || !web.Local {
		t.Errorf("prod/web = %+v", web)
	}
	if gone := eps["prod/gone"]; gone.Labels["kept"] != "yes" || gone.NamespaceLabels["env"] != "prod" {
		t.Errorf("endpoint of a pod the API does not know: %+v", gone)
	}
	if len(in.KubernetesPolicies) != 1 {
		t.Fatalf("kubernetes policies %v", in.KubernetesPolicies)
	}
	set, err := policy.Compile(in)
	if err != nil {
		t.Fatal(err)
	}
	u32 := func(s string) uint32 { return fib.AddrU32(netip.MustParseAddr(s)) }
	i, _ := set.Index("prod/web")
	for _, c := range []struct {
		src  string
		port uint16
		want policy.Action
	}{
		{"10.244.1.7", 8080, policy.Allow}, // dev/client, the named port
		{"10.244.1.7", 80, policy.Deny},    // another port
		{"10.244.0.8", 8080, policy.Deny},  // prod/gone: not in a dev namespace
	} {
		if v := set.Evaluate(i, policy.Ingress, &policy.Packet{Src: u32(c.src), Dst: u32("10.244.0.5"), DstPort: c.port, Proto: 6}); v.Action != c.want {
			t.Errorf("%s → prod/web:%d: %+v, want %s", c.src, c.port, v, c.want)
		}
	}
}

// TestPolicyFromKubernetes: with a View of the Kubernetes API, the agent
// installs nothing before the View's first full list, then compiles its
// NetworkPolicies; a NetworkPolicy created later, and a pod label that
// takes the pod out of its selector, change the installed verdict.
func TestPolicyFromKubernetes(t *testing.T) {
	s := datastore.NewMemory()
	r := router.New(router.Config{}, fib.New(), router.Underlay{Sender: func() router.UnderlaySender {
		return (&routertest.Underlay{}).NewSender()
	}})
	t.Cleanup(func() { _ = r.Close() })
	apply(t, s, policyPods)
	web := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "prod", Name: "web", Labels: map[string]string{"app": "web"}}}
	cs := kubefake.NewClientset(
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "prod"}},
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "dev", Labels: map[string]string{"env": "dev"}}},
		web,
		&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "dev", Name: "client", Labels: map[string]string{"role": "client"}}},
	)
	kube, err := kubeview.New(kubeview.Clients{Core: cs.CoreV1(), Networking: cs.NetworkingV1()}, zap.NewNop(), kubeview.Options{})
	if err != nil {
		t.Fatal(err)
	}
	a := &Agent{Node: "n1", Store: s, Router: r, Log: zap.NewNop(), Invalid: resources.NewInvalid(zap.NewNop()), Kube: kube}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { a.runPolicy(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })

	waitFor(t, "the first Set", func() bool { return a.PolicySet() != nil })
	if !kube.Synced() {
		t.Fatal("a Set was installed before the Kubernetes objects were synced")
	}
	if v := verdict(t, a, "prod/web", "10.244.1.7", "10.244.0.5"); v.Action != policy.Allow {
		t.Fatalf("before any policy: %+v", v)
	}
	np := &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: "prod", Name: "deny-web"},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
		},
	}
	cs.WaitWatched(t, "networkpolicies", "pods")
	if _, err := cs.NetworkingV1().NetworkPolicies("prod").Create(ctx, np, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the NetworkPolicy", func() bool {
		return verdict(t, a, "prod/web", "10.244.1.7", "10.244.0.5").Action == policy.Deny
	})
	web.Labels = map[string]string{"app": "other"}
	if _, err := cs.CoreV1().Pods("prod").Update(ctx, web, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the pod's new label", func() bool {
		return verdict(t, a, "prod/web", "10.244.1.7", "10.244.0.5").Action == policy.Allow
	})
}

// TestWaitPolicy: WaitPolicy returns once the installed Set includes the
// endpoint (the record written after the loop started), and when it never
// does, says why: here, a policy that does not compile.
func TestWaitPolicy(t *testing.T) {
	s := datastore.NewMemory()
	r := router.New(router.Config{}, fib.New(), router.Underlay{Sender: func() router.UnderlaySender {
		return (&routertest.Underlay{}).NewSender()
	}})
	t.Cleanup(func() { _ = r.Close() })
	a := &Agent{Node: "n1", Store: s, Router: r, Log: zap.NewNop(), Invalid: resources.NewInvalid(zap.NewNop())}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { a.runPolicy(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })

	waitFor(t, "the first Set", func() bool { return a.PolicySet() != nil })
	short, stop := context.WithTimeout(ctx, 50*time.Millisecond)
	err := a.WaitPolicy(short, "prod/web")
	stop()
	if err == nil || !strings.Contains(err.Error(), "does not include prod/web") {
		t.Fatalf("before the pod's record: %v", err)
	}
	waited := make(chan error, 1)
	go func() { waited <- a.WaitPolicy(ctx, "prod/web") }()
	apply(t, s, policyPods)
	if err := <-waited; err != nil {
		t.Fatal(err)
	}
	if _, ok := a.PolicySet().Index("prod/web"); !ok {
		t.Fatal("WaitPolicy returned before the Set included the endpoint")
	}

	// A policy in a tier that is then deleted does not compile: a new
	// endpoint never gets in, and WaitPolicy says so.
	apply(t, s, "apiVersion: projectcalico.org/v3\nkind: Tier\nmetadata: {name: t1}\nspec: {order: 10}\n---\n"+
		"apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: lost}\nspec: {tier: t1, selector: all()}\n")
	if err := (resources.Client{S: s}).Delete(ctx, resources.KindTier, "t1"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the compile failure", func() bool { _, failed := a.PolicyCounts(); return failed > 0 })
	apply(t, s, `
apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata: {name: n1-k8s-late-eth0, namespace: prod}
spec: {node: n1, orchestrator: k8s, pod: late, endpoint: eth0, ipNetworks: [10.244.0.9/32]}
`)
	short, stop = context.WithTimeout(ctx, 300*time.Millisecond)
	err = a.WaitPolicy(short, "prod/late")
	stop()
	if err == nil || !strings.Contains(err.Error(), "does not compile") {
		t.Fatalf("under a policy that does not compile: %v", err)
	}
}
