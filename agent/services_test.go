package agent

import (
	"context"
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tortie-net/tortie/dsync"
	"github.com/tortie-net/tortie/fib"
	"github.com/tortie-net/tortie/internal/kubefake"
	"github.com/tortie-net/tortie/kubeview"
	"github.com/tortie-net/tortie/resources"
)

// freePort is a TCP port nothing listens on just now.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// TestServiceAdvertisement runs the agent's BGP side on a real speaker
// (no peers) with Services from a fake API: the /32s of a Service with
// externalTrafficPolicy Local join the advertised ranges once the Services
// are synced and the node has a ready endpoint, leave when it is not
// ready, and follow the ranges of the BGPConfiguration.
func TestServiceAdvertisement(t *testing.T) {
	ready := true
	n1 := "n1"
	slice := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: "x", Name: "web-1", Labels: map[string]string{discoveryv1.LabelServiceName: "web"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints: []discoveryv1.Endpoint{{Addresses: []string{"10.244.0.5"}, NodeName: &n1,
			Conditions: discoveryv1.EndpointConditions{Ready: &ready}}},
	}
	cs := kubefake.NewClientset(
		&corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "x", Name: "web"},
			Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, ExternalTrafficPolicy: corev1.ServiceExternalTrafficPolicyLocal,
				ClusterIP: "10.96.0.20", ClusterIPs: []string{"10.96.0.20"}, ExternalIPs: []string{"192.0.2.10"}},
			Status: corev1.ServiceStatus{LoadBalancer: corev1.LoadBalancerStatus{Ingress: []corev1.LoadBalancerIngress{{IP: "198.18.0.10"}}}}},
		slice,
	)
	log := zaptest.NewLogger(t)
	kube, err := kubeview.New(kubeview.Clients{Core: cs.CoreV1(), Networking: cs.NetworkingV1(), Discovery: cs.DiscoveryV1()},
		log, kubeview.Options{Services: true})
	if err != nil {
		t.Fatal(err)
	}
	a := &Agent{Node: "n1", Addr: netip.MustParsePrefix("127.0.0.1/8"), FIB: fib.New(), Log: log, BGP: &BGPOptions{}, Kube: kube}
	t.Cleanup(func() { a.Stop(false) })
	block := func(c string) []resources.ServiceIPBlock { return []resources.ServiceIPBlock{{CIDR: c}} }
	cfg := &resources.BGPConfiguration{Metadata: resources.Meta{Name: "default"}, Spec: resources.BGPConfigurationSpec{
		ListenPort: freePort(t), ServiceClusterIPs: block("10.96.0.0/12"), ServiceExternalIPs: block("192.0.2.0/24"),
		ServiceLoadBalancerIPs: block("198.18.0.0/24")}}
	snap := &dsync.Snapshot{
		Nodes: []*resources.Node{{Metadata: resources.Meta{Name: "n1"},
			Spec: resources.NodeSpec{BGP: &resources.NodeBGPSpec{IPv4Address: a.Addr}}}},
		BGPConfigs: []*resources.BGPConfiguration{cfg},
	}
	advertised := func() []string {
		a.bgpMu.Lock()
		sp := a.speaker
		a.bgpMu.Unlock()
		var out []string
		if sp != nil {
			for _, p := range sp.Advertised() {
				out = append(out, p.String())
			}
		}
		return out
	}
	waitAdvertised := func(what string, want ...string) {
		t.Helper()
		slices.Sort(want)
		deadline := time.Now().Add(30 * time.Second)
		for {
			got := advertised()
			if slices.Equal(got, want) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: advertised %v, want %v", what, got, want)
			}
			time.Sleep(10 * time.Millisecond) // polling, with a deadline
		}
	}
	ranges := []string{"10.96.0.0/12", "192.0.2.0/24", "198.18.0.0/24"}

	a.syncBGP(snap)
	if got := advertised(); !slices.Equal(got, ranges) {
		t.Fatalf("before the Services are synced: advertised %v, want the ranges %v", got, ranges)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { a.runServices(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	waitAdvertised("a ready endpoint here", append(slices.Clone(ranges), "10.96.0.20/32", "192.0.2.10/32", "198.18.0.10/32")...)

	// A datastore sync that changes nothing keeps the /32s.
	a.syncBGP(snap)
	waitAdvertised("after a datastore sync", append(slices.Clone(ranges), "10.96.0.20/32", "192.0.2.10/32", "198.18.0.10/32")...)
	// The LoadBalancer range taken out takes its /32 along.
	cfg2 := *cfg
	cfg2.Spec.ServiceLoadBalancerIPs = nil
	snap2 := *snap
	snap2.BGPConfigs = []*resources.BGPConfiguration{&cfg2}
	a.syncBGP(&snap2)
	waitAdvertised("without the LoadBalancer range", "10.96.0.0/12", "192.0.2.0/24", "10.96.0.20/32", "192.0.2.10/32")
	a.syncBGP(snap)

	// The endpoint no longer ready: only the ranges.
	ready = false
	cs.WaitWatched(t, "endpointslices")
	if _, err := cs.DiscoveryV1().EndpointSlices("x").Update(ctx, slice, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitAdvertised("the endpoint not ready", ranges...)
}
