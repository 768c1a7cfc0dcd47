package kubeview

import (
	"net/netip"
	"sort"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
)

// Service is what BGP advertisement needs of a Service.
type Service struct {
	Namespace, Name string
	// Type is spec.type: ClusterIP, NodePort, LoadBalancer or
	// ExternalName.
	Type string
	// ExternalTrafficPolicy and InternalTrafficPolicy are the spec's
	// (Cluster, Local, or empty where the API server leaves them so).
	ExternalTrafficPolicy, InternalTrafficPolicy string
	// ClusterIPs are spec.clusterIPs (spec.clusterIP when the list is
	// empty): none for a headless Service ("None") or an ExternalName one.
	ClusterIPs  []netip.Addr
	ExternalIPs []netip.Addr // spec.externalIPs
	// LoadBalancerIP is the deprecated spec.loadBalancerIP (invalid when
	// unset); IngressIPs are status.loadBalancer.ingress[].ip.
	LoadBalancerIP netip.Addr
	IngressIPs     []netip.Addr
}

// Key is "<namespace>/<name>".
func (s *Service) Key() string { return s.Namespace + "/" + s.Name }

// EndpointSlice is what BGP advertisement needs of an EndpointSlice.
type EndpointSlice struct {
	Namespace, Name string
	// Service is the Service the slice belongs to: its
	// kubernetes.io/service-name label ("" when it has none).
	Service string
	// AddressType is IPv4, IPv6 or FQDN.
	AddressType string
	Endpoints   []Endpoint
}

// Endpoint is one endpoint of a slice: where it runs and whether it is
// ready.
type Endpoint struct {
	Node string // nodeName; "" when the slice does not say
	// Ready is conditions.ready, unset counting as ready as the API
	// defines it (a terminating endpoint is not ready).
	Ready bool
}

// Services is the state of Services and EndpointSlices at one moment.
// Nothing in it is shared with the View: callers may keep it, and must not
// change it.
type Services struct {
	Services []*Service       // by key
	Slices   []*EndpointSlice // by namespace, then name
}

// Services copies the Services and EndpointSlices (none without
// Options.Services). Before ServicesSynced it may be partial.
func (v *View) Services() *Services {
	out := &Services{}
	if v.svcs == nil {
		return out
	}
	for _, o := range v.svcs.GetStore().List() {
		if s, ok := o.(*corev1.Service); ok {
			out.Services = append(out.Services, ServiceFrom(s))
		}
	}
	for _, o := range v.slices.GetStore().List() {
		if s, ok := o.(*discoveryv1.EndpointSlice); ok {
			out.Slices = append(out.Slices, SliceFrom(s))
		}
	}
	sort.Slice(out.Services, func(i, j int) bool { return out.Services[i].Key() < out.Services[j].Key() })
	sort.Slice(out.Slices, func(i, j int) bool {
		a, b := out.Slices[i], out.Slices[j]
		if a.Namespace != b.Namespace {
			return a.Namespace < b.Namespace
		}
		return a.Name < b.Name
	})
	return out
}

// ServiceFrom takes what BGP advertisement needs of a Service. Addresses
// that do not parse ("None" of a headless Service among them) are left
// out.
func ServiceFrom(s *corev1.Service) *Service {
	out := &Service{Namespace: s.Namespace, Name: s.Name, Type: string(s.Spec.Type),
		ExternalTrafficPolicy: string(s.Spec.ExternalTrafficPolicy)}
	if p := s.Spec.InternalTrafficPolicy; p != nil {
		out.InternalTrafficPolicy = string(*p)
	}
	clusterIPs := s.Spec.ClusterIPs
	if len(clusterIPs) == 0 && s.Spec.ClusterIP != "" {
		clusterIPs = []string{s.Spec.ClusterIP}
	}
	out.ClusterIPs = parseAddrs(clusterIPs)
	out.ExternalIPs = parseAddrs(s.Spec.ExternalIPs)
	if a, err := netip.ParseAddr(s.Spec.LoadBalancerIP); err == nil {
		out.LoadBalancerIP = a
	}
	for _, in := range s.Status.LoadBalancer.Ingress {
		if a, err := netip.ParseAddr(in.IP); err == nil {
			out.IngressIPs = append(out.IngressIPs, a)
		}
	}
	return out
}

// SliceFrom takes what BGP advertisement needs of an EndpointSlice.
func SliceFrom(s *discoveryv1.EndpointSlice) *EndpointSlice {
	out := &EndpointSlice{Namespace: s.Namespace, Name: s.Name, Service: s.Labels[discoveryv1.LabelServiceName],
		AddressType: string(s.AddressType)}
	for _, e := range s.Endpoints {
		ep := Endpoint{Ready: e.Conditions.Ready == nil || *e.Conditions.Ready}
		if e.NodeName != nil {
			ep.Node = *e.NodeName
		}
		out.Endpoints = append(out.Endpoints, ep)
	}
	return out
}

func parseAddrs(l []string) []netip.Addr {
	var out []netip.Addr
	for _, s := range l {
		if a, err := netip.ParseAddr(s); err == nil {
			out = append(out, a)
		}
	}
	return out
}

// trimService keeps what ServiceFrom reads of a Service.
func trimService(obj any) (any, error) {
	s, ok := obj.(*corev1.Service)
	if !ok {
		return obj, nil
	}
	out := &corev1.Service{}
	out.Name, out.Namespace, out.ResourceVersion, out.UID = s.Name, s.Namespace, s.ResourceVersion, s.UID
	out.Spec.Type, out.Spec.ExternalTrafficPolicy, out.Spec.InternalTrafficPolicy = s.Spec.Type, s.Spec.ExternalTrafficPolicy, s.Spec.InternalTrafficPolicy
	out.Spec.ClusterIP, out.Spec.ClusterIPs, out.Spec.ExternalIPs = s.Spec.ClusterIP, s.Spec.ClusterIPs, s.Spec.ExternalIPs
	out.Spec.LoadBalancerIP = s.Spec.LoadBalancerIP
	for _, in := range s.Status.LoadBalancer.Ingress {
		if in.IP != "" {
			out.Status.LoadBalancer.Ingress = append(out.Status.LoadBalancer.Ingress, corev1.LoadBalancerIngress{IP: in.IP})
		}
	}
	return out, nil
}

// trimSlice keeps what SliceFrom reads of an EndpointSlice: its Service
// label, address type, and each endpoint's node and readiness — not the
// addresses, ports or topology, which change far more often.
func trimSlice(obj any) (any, error) {
	s, ok := obj.(*discoveryv1.EndpointSlice)
	if !ok {
		return obj, nil
	}
	out := &discoveryv1.EndpointSlice{AddressType: s.AddressType}
	out.Name, out.Namespace, out.ResourceVersion, out.UID = s.Name, s.Namespace, s.ResourceVersion, s.UID
	if name, ok := s.Labels[discoveryv1.LabelServiceName]; ok {
		out.Labels = map[string]string{discoveryv1.LabelServiceName: name}
	}
	out.Endpoints = make([]discoveryv1.Endpoint, len(s.Endpoints))
	for i, e := range s.Endpoints {
		out.Endpoints[i] = discoveryv1.Endpoint{NodeName: e.NodeName, Conditions: discoveryv1.EndpointConditions{Ready: e.Conditions.Ready}}
	}
	return out, nil
}
