package kubeview

import (
	"context"
	"net/netip"
	"reflect"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tortie-net/tortie/internal/kubefake"
	"github.com/tortie-net/tortie/policy"
)

func pod(ns, name string, labels map[string]string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels, Annotations: map[string]string{"big": "annotation"}},
		Spec: corev1.PodSpec{NodeName: "n1", Containers: []corev1.Container{
			{Name: "c", Image: "img", Env: []corev1.EnvVar{{Name: "A", Value: "b"}}, Ports: []corev1.ContainerPort{
				{Name: "http", ContainerPort: 8080},
				{Name: "dns", ContainerPort: 53, Protocol: corev1.ProtocolUDP},
				{ContainerPort: 9000}, // no name: no rule can name it
			}},
		}},
		Status: corev1.PodStatus{PodIPs: []corev1.PodIP{{IP: "10.244.0.5"}, {IP: "not-an-ip"}}},
	}
}

// waitChanged waits for a change signal, failing the test after a deadline.
func waitChanged(t *testing.T, v *View, what string) {
	t.Helper()
	select {
	case <-v.Changed():
	case <-time.After(30 * time.Second):
		t.Fatalf("no change signalled after %s", what)
	}
}

func TestView(t *testing.T) {
	cs := kubefake.NewClientset(
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "x", Labels: map[string]string{"ns": "x"}}},
		&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: "x", Name: "default", Labels: map[string]string{"sa": "d"}}},
		pod("x", "a", map[string]string{"pod": "a"}),
		&networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "x", Name: "deny"}},
	)
	v, err := New(Clients{Core: cs.CoreV1(), Networking: cs.NetworkingV1()}, zaptest.NewLogger(t), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if v.FollowsServices() || len(v.Services().Services) != 0 {
		t.Error("a View without Options.Services follows Services")
	}
	if v.Synced() {
		t.Fatal("synced before Start")
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	v.Start(ctx)
	v.Start(ctx) // a second Start changes nothing
	waitChanged(t, v, "the first sync")
	if !v.Synced() {
		t.Fatal("signalled before synced")
	}
	s := v.Snapshot()
	want := &Pod{Namespace: "x", Name: "a", Node: "n1", ServiceAccount: "default", Labels: map[string]string{"pod": "a"},
		Ports: []policy.NamedPort{{Name: "http", Protocol: "TCP", Port: 8080}, {Name: "dns", Protocol: "UDP", Port: 53}},
		IPs:   []netip.Addr{netip.MustParseAddr("10.244.0.5")}}
	if got := s.Pods["x/a"]; !reflect.DeepEqual(got, want) {
		t.Errorf("pod x/a = %+v, want %+v", got, want)
	}
	if got := s.Namespaces["x"]; !reflect.DeepEqual(got, map[string]string{"ns": "x"}) {
		t.Errorf("namespace x labels = %v", got)
	}
	if got := s.ServiceAccounts["x/default"]; !reflect.DeepEqual(got, map[string]string{"sa": "d"}) {
		t.Errorf("service account x/default labels = %v", got)
	}
	if len(s.NetworkPolicies) != 1 || s.NetworkPolicies[0].Name != "deny" {
		t.Errorf("network policies = %v", s.NetworkPolicies)
	}
	// The cache keeps only what policy reads.
	obj, ok, err := v.pods.GetStore().GetByKey("x/a")
	if err != nil || !ok {
		t.Fatalf("pod x/a not cached: %v", err)
	}
	if p := obj.(*corev1.Pod); p.Annotations != nil || p.Spec.Containers[0].Image != "" || p.Spec.Containers[0].Env != nil {
		t.Errorf("cached pod keeps what policy does not read: %+v", p)
	}

	// A label change is signalled and shows in the next snapshot; the
	// snapshot taken before does not change.
	p := pod("x", "a", map[string]string{"pod": "b"})
	cs.WaitWatched(t, "pods", "networkpolicies")
	if _, err := cs.CoreV1().Pods("x").Update(ctx, p, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitChanged(t, v, "a label change")
	deadline := time.Now().Add(30 * time.Second)
	for v.Snapshot().Pods["x/a"].Labels["pod"] != "b" {
		if time.Now().After(deadline) {
			t.Fatal("the label change never reached the snapshot")
		}
		waitChanged(t, v, "a label change")
	}
	if s.Pods["x/a"].Labels["pod"] != "a" {
		t.Error("an earlier snapshot changed")
	}
	if err := cs.NetworkingV1().NetworkPolicies("x").Delete(ctx, "deny", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitChanged(t, v, "a policy deletion")
	for len(v.Snapshot().NetworkPolicies) != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the deleted policy stays in the snapshot")
		}
		waitChanged(t, v, "a policy deletion")
	}
}

func TestSamePod(t *testing.T) {
	a := pod("x", "a", map[string]string{"pod": "a"})
	b := a.DeepCopy()
	b.Status.Phase = corev1.PodRunning
	b.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}
	if !samePod(a, b) {
		t.Error("a status change that policy does not read counts as a change")
	}
	for name, change := range map[string]func(*corev1.Pod){
		"labels":          func(p *corev1.Pod) { p.Labels["new"] = "1" },
		"node":            func(p *corev1.Pod) { p.Spec.NodeName = "n2" },
		"service account": func(p *corev1.Pod) { p.Spec.ServiceAccountName = "other" },
		"addresses":       func(p *corev1.Pod) { p.Status.PodIPs = nil },
	} {
		c := a.DeepCopy()
		change(c)
		if samePod(a, c) {
			t.Errorf("a change of %s is not seen", name)
		}
	}
}

func TestPodFromOddInput(t *testing.T) {
	p := &corev1.Pod{Spec: corev1.PodSpec{Containers: []corev1.Container{{Ports: []corev1.ContainerPort{
		{Name: "neg", ContainerPort: -1}, {Name: "big", ContainerPort: 70000}, {Name: "ok", ContainerPort: 1, Protocol: "SCTP"},
	}}}}}
	got := PodFrom(p)
	if want := []policy.NamedPort{{Name: "ok", Protocol: "SCTP", Port: 1}}; !reflect.DeepEqual(got.Ports, want) {
		t.Errorf("ports = %v, want %v", got.Ports, want)
	}
	if got.ServiceAccount != "default" || got.Labels == nil {
		t.Errorf("pod without service account or labels: %+v", got)
	}
	if _, err := trimPod("not a pod"); err != nil {
		t.Error(err)
	}
	if _, err := trimMeta(42); err != nil {
		t.Error(err)
	}
}
