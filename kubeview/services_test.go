package kubeview

import (
	"context"
	"net/netip"
	"reflect"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tortie-net/tortie/internal/kubefake"
)

func lbService(ns, name string) *corev1.Service {
	local := corev1.ServiceInternalTrafficPolicyLocal
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{"app": "web"},
			Annotations: map[string]string{"big": "annotation"}},
		Spec: corev1.ServiceSpec{
			Type: corev1.ServiceTypeLoadBalancer, ExternalTrafficPolicy: corev1.ServiceExternalTrafficPolicyLocal,
			InternalTrafficPolicy: &local,
			ClusterIP:             "10.96.0.20", ClusterIPs: []string{"10.96.0.20", "fd00::20"},
			ExternalIPs: []string{"192.0.2.10", "bad"},
			Selector:    map[string]string{"app": "web"},
			Ports:       []corev1.ServicePort{{Name: "http", Port: 80}},
		},
		Status: corev1.ServiceStatus{LoadBalancer: corev1.LoadBalancerStatus{Ingress: []corev1.LoadBalancerIngress{
			{IP: "198.18.0.10", Hostname: "lb.example"}, {Hostname: "only.a.name"},
		}}},
	}
}

func slice(ns, name, svc string, eps ...discoveryv1.Endpoint) *discoveryv1.EndpointSlice {
	return &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name,
			Labels: map[string]string{discoveryv1.LabelServiceName: svc, discoveryv1.LabelManagedBy: "someone"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints:   eps,
		Ports:       []discoveryv1.EndpointPort{{}},
	}
}

func endpoint(node string, ready *bool) discoveryv1.Endpoint {
	e := discoveryv1.Endpoint{Addresses: []string{"10.244.0.5"}, Conditions: discoveryv1.EndpointConditions{Ready: ready}}
	if node != "" {
		e.NodeName = &node
	}
	return e
}

func waitServicesChanged(t *testing.T, v *View, what string) {
	t.Helper()
	select {
	case <-v.ServicesChanged():
	case <-time.After(30 * time.Second):
		t.Fatalf("no Service change signalled after %s", what)
	}
}

func TestServices(t *testing.T) {
	yes, no := true, false
	cs := kubefake.NewClientset(
		lbService("x", "web"),
		slice("x", "web-1", "web", endpoint("n1", &yes), endpoint("n2", &no)),
		slice("x", "web-2", "web", endpoint("n3", nil), endpoint("", &yes)),
	)
	if _, err := New(Clients{Core: cs.CoreV1(), Networking: cs.NetworkingV1()}, zaptest.NewLogger(t), Options{Services: true}); err == nil {
		t.Error("a View of Services without a discovery client")
	}
	v, err := New(Clients{Core: cs.CoreV1(), Networking: cs.NetworkingV1(), Discovery: cs.DiscoveryV1()}, zaptest.NewLogger(t),
		Options{Services: true})
	if err != nil {
		t.Fatal(err)
	}
	if !v.FollowsServices() || v.ServicesSynced() {
		t.Fatal("follows no Services, or synced before Start")
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	v.Start(ctx)
	waitServicesChanged(t, v, "the first sync")
	if !v.ServicesSynced() {
		t.Fatal("signalled before synced")
	}
	got := v.Services()
	want := &Services{
		Services: []*Service{{Namespace: "x", Name: "web", Type: "LoadBalancer", ExternalTrafficPolicy: "Local",
			InternalTrafficPolicy: "Local",
			ClusterIPs:            []netip.Addr{netip.MustParseAddr("10.96.0.20"), netip.MustParseAddr("fd00::20")},
			ExternalIPs:           []netip.Addr{netip.MustParseAddr("192.0.2.10")},
			IngressIPs:            []netip.Addr{netip.MustParseAddr("198.18.0.10")}}},
		Slices: []*EndpointSlice{
			{Namespace: "x", Name: "web-1", Service: "web", AddressType: "IPv4",
				Endpoints: []Endpoint{{Node: "n1", Ready: true}, {Node: "n2"}}},
			{Namespace: "x", Name: "web-2", Service: "web", AddressType: "IPv4",
				Endpoints: []Endpoint{{Node: "n3", Ready: true}, {Ready: true}}},
		},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Services() =\n%+v\nwant\n%+v", got, want)
	}
	// The caches keep only what advertisement reads.
	obj, ok, err := v.svcs.GetStore().GetByKey("x/web")
	if err != nil || !ok {
		t.Fatalf("service x/web not cached: %v", err)
	}
	if s := obj.(*corev1.Service); s.Labels != nil || s.Annotations != nil || s.Spec.Selector != nil || s.Spec.Ports != nil ||
		len(s.Status.LoadBalancer.Ingress) != 1 || s.Status.LoadBalancer.Ingress[0].Hostname != "" {
		t.Errorf("cached Service keeps what advertisement does not read: %+v", s)
	}
	obj, ok, err = v.slices.GetStore().GetByKey("x/web-1")
	if err != nil || !ok {
		t.Fatalf("slice x/web-1 not cached: %v", err)
	}
	if s := obj.(*discoveryv1.EndpointSlice); len(s.Labels) != 1 || s.Ports != nil || s.Endpoints[0].Addresses != nil {
		t.Errorf("cached EndpointSlice keeps what advertisement does not read: %+v", s)
	}

	// An endpoint becoming ready on n2 is signalled and seen; the policy
	// objects, followed apart, have their own sync.
	s := slice("x", "web-1", "web", endpoint("n1", &yes), endpoint("n2", &yes))
	cs.WaitWatched(t, "endpointslices", "services")
	if _, err := cs.DiscoveryV1().EndpointSlices("x").Update(ctx, s, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for !v.Services().Slices[0].Endpoints[1].Ready {
		if time.Now().After(deadline) {
			t.Fatal("the readiness change never reached the snapshot")
		}
		waitServicesChanged(t, v, "an endpoint becoming ready")
	}
	if got.Slices[0].Endpoints[1].Ready {
		t.Error("an earlier snapshot changed")
	}
	if err := cs.CoreV1().Services("x").Delete(ctx, "web", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	for len(v.Services().Services) != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the deleted Service stays in the snapshot")
		}
		waitServicesChanged(t, v, "a Service deletion")
	}
	waitChanged(t, v, "the policy objects' sync")
	if !v.Synced() {
		t.Error("policy objects signalled before synced")
	}
}

// TestNotifyUpdate: an update that changes nothing kept is not signalled;
// one that does is, to its own group only.
func TestNotifyUpdate(t *testing.T) {
	yes, no := true, false
	pol, svc := &group{changed: make(chan struct{}, 1)}, &group{changed: make(chan struct{}, 1)}
	pol.synced.Store(true)
	svc.synced.Store(true)
	signalled := func(g *group) bool {
		select {
		case <-g.changed:
			return true
		default:
			return false
		}
	}
	trimmed := func(o any) any {
		var out any
		var err error
		switch o.(type) {
		case *corev1.Service:
			out, err = trimService(o)
		default:
			out, err = trimSlice(o)
		}
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	a := slice("x", "s", "web", endpoint("n1", &yes))
	b := a.DeepCopy()
	b.Endpoints[0].Addresses = []string{"10.244.9.9"}
	b.ResourceVersion = "2"
	notifyUpdate(svc, trimmed(a), trimmed(b))
	if signalled(svc) {
		t.Error("an address change, which is not kept, was signalled")
	}
	c := a.DeepCopy()
	c.Endpoints[0].Conditions.Ready = &no
	notifyUpdate(svc, trimmed(a), trimmed(c))
	if !signalled(svc) || signalled(pol) {
		t.Error("a readiness change was not signalled to the Services alone")
	}
	s1 := lbService("x", "web")
	s2 := s1.DeepCopy()
	s2.Labels["new"] = "label"
	notifyUpdate(svc, trimmed(s1), trimmed(s2))
	if signalled(svc) {
		t.Error("a Service label change, which is not kept, was signalled")
	}
	s2.Status.LoadBalancer.Ingress = append(s2.Status.LoadBalancer.Ingress, corev1.LoadBalancerIngress{IP: "198.18.0.11"})
	notifyUpdate(svc, trimmed(s1), trimmed(s2))
	if !signalled(svc) {
		t.Error("a new LoadBalancer address was not signalled")
	}
	unsynced := &group{changed: make(chan struct{}, 1)}
	notifyUpdate(unsynced, trimmed(a), trimmed(c))
	if signalled(unsynced) {
		t.Error("signalled before the first sync")
	}
}

func TestServiceFromOddInput(t *testing.T) {
	s := ServiceFrom(&corev1.Service{Spec: corev1.ServiceSpec{ClusterIP: "None", LoadBalancerIP: "198.18.0.1",
		ExternalIPs: []string{""}}})
	if s.ClusterIPs != nil || s.ExternalIPs != nil || s.LoadBalancerIP != netip.MustParseAddr("198.18.0.1") {
		t.Errorf("headless Service: %+v", s)
	}
	// An old object with spec.clusterIP alone.
	if s := ServiceFrom(&corev1.Service{Spec: corev1.ServiceSpec{ClusterIP: "10.96.0.7"}}); len(s.ClusterIPs) != 1 {
		t.Errorf("spec.clusterIP alone: %+v", s)
	}
	if e := SliceFrom(&discoveryv1.EndpointSlice{}); e.Service != "" || e.Endpoints != nil {
		t.Errorf("empty slice: %+v", e)
	}
	for _, o := range []any{"not a Service", 42} {
		if out, err := trimService(o); err != nil || out != o {
			t.Errorf("trimService(%v) = %v, %v", o, out, err)
		}
		if out, err := trimSlice(o); err != nil || out != o {
			t.Errorf("trimSlice(%v) = %v, %v", o, out, err)
		}
	}
}
