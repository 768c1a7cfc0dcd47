// Package kubeview follows the Kubernetes objects that network policy is
// made of — pods, namespaces, service accounts and NetworkPolicies — and,
// when asked, those BGP advertises Services by — Services and
// EndpointSlices — through client-go informers, and hands out consistent,
// read-only snapshots of them. It keeps only what is needed of each object
// (labels, service account, named ports, node; a Service's addresses and
// traffic policies; an endpoint's node and readiness), so that a node's
// memory does not grow with the size of every pod spec in the cluster.
//
// The API server has validated what it stores, but a View trusts nothing:
// an object it cannot use is left out and counted, never a reason to stop.
package kubeview

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"sort"
	"sync"
	"sync/atomic"

	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"
	discoveryv1client "k8s.io/client-go/kubernetes/typed/discovery/v1"
	networkingv1client "k8s.io/client-go/kubernetes/typed/networking/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/tortie-net/tortie/policy"
)

// Pod is what policy needs of a pod.
type Pod struct {
	Namespace, Name string
	Node            string
	ServiceAccount  string
	Labels          map[string]string
	Ports           []policy.NamedPort // the containers' named ports
	IPs             []netip.Addr       // status.podIPs (IPv4 and IPv6)
	HostNetwork     bool
}

// Key is "<namespace>/<name>", the key of policy endpoints.
func (p *Pod) Key() string { return p.Namespace + "/" + p.Name }

// Snapshot is the state of the objects at one moment. Nothing in it is
// shared with the View: callers may keep it, and must not change it.
type Snapshot struct {
	Pods            map[string]*Pod              // by "<namespace>/<name>"
	Namespaces      map[string]map[string]string // labels by namespace name
	ServiceAccounts map[string]map[string]string // labels by "<namespace>/<name>"
	NetworkPolicies []*networkingv1.NetworkPolicy
}

// View follows the objects. Construct it with New, then Start it once; its
// methods are safe for concurrent use, before, during and after Start.
type View struct {
	pods cache.SharedIndexInformer
	ns   cache.SharedIndexInformer
	sas  cache.SharedIndexInformer
	nps  cache.SharedIndexInformer
	// svcs and slices are nil unless Options.Services.
	svcs   cache.SharedIndexInformer
	slices cache.SharedIndexInformer
	log    *zap.Logger
	// The policy objects and the Service objects sync and signal apart:
	// policy is not compiled again when an endpoint becomes ready, nor are
	// BGP advertisements computed again when a pod's labels change.
	policy, services group
	started          sync.Once
}

// group is informers that sync and signal changes together.
type group struct {
	informers []cache.SharedIndexInformer
	changed   chan struct{}
	synced    atomic.Bool
}

// notify signals a change, once the group has synced.
func (g *group) notify() {
	if !g.synced.Load() {
		return
	}
	select {
	case g.changed <- struct{}{}:
	default:
	}
}

// Options choose what a View follows beyond the policy objects.
type Options struct {
	// Services follows Services and EndpointSlices, for the Service
	// addresses a node advertises over BGP.
	Services bool
}

// RESTConfig loads a client configuration: from the kubeconfig file at
// path, or, with path empty, the in-cluster one of a pod (its service
// account's token and the kubernetes Service from the environment).
func RESTConfig(path string) (*rest.Config, error) {
	if path == "" {
		c, err := rest.InClusterConfig()
		if err != nil {
			return nil, fmt.Errorf("kubernetes: no kubeconfig given and not running in a pod: %w", err)
		}
		return c, nil
	}
	c, err := clientcmd.BuildConfigFromFlags("", path)
	if err != nil {
		return nil, fmt.Errorf("kubernetes: kubeconfig %s: %w", path, err)
	}
	return c, nil
}

// Clients are the typed API clients a View reads through (only these
// groups: the whole clientset would double the size of tortied). Discovery
// is needed only with Options.Services.
type Clients struct {
	Core       corev1client.CoreV1Interface
	Networking networkingv1client.NetworkingV1Interface
	Discovery  discoveryv1client.DiscoveryV1Interface
}

// NewClients makes the clients from a configuration.
func NewClients(c *rest.Config) (Clients, error) {
	core, err := corev1client.NewForConfig(c)
	if err != nil {
		return Clients{}, fmt.Errorf("kubernetes: %w", err)
	}
	nw, err := networkingv1client.NewForConfig(c)
	if err != nil {
		return Clients{}, fmt.Errorf("kubernetes: %w", err)
	}
	disc, err := discoveryv1client.NewForConfig(c)
	if err != nil {
		return Clients{}, fmt.Errorf("kubernetes: %w", err)
	}
	return Clients{Core: core, Networking: nw, Discovery: disc}, nil
}

// informer lists and watches one kind in every namespace. No periodic
// resync: the watch carries every change, and a resync would only
// recompile the same policy.
func informer[T runtime.Object](obj T, list func(context.Context, metav1.ListOptions) (runtime.Object, error),
	watchFn func(context.Context, metav1.ListOptions) (watch.Interface, error)) cache.SharedIndexInformer {
	lw := &cache.ListWatch{ListWithContextFunc: list, WatchFuncWithContext: watchFn}
	return cache.NewSharedIndexInformer(lw, obj, 0, cache.Indexers{})
}

// New returns a View of the cluster the clients talk to. Nothing is read
// until Start.
func New(c Clients, log *zap.Logger, o Options) (*View, error) {
	if c.Core == nil || c.Networking == nil || (o.Services && c.Discovery == nil) {
		return nil, errors.New("kubeview: a client of the core, networking or (for Services) discovery API is missing")
	}
	pods := c.Core.Pods(metav1.NamespaceAll)
	nss := c.Core.Namespaces()
	sas := c.Core.ServiceAccounts(metav1.NamespaceAll)
	nps := c.Networking.NetworkPolicies(metav1.NamespaceAll)
	v := &View{
		pods: informer(&corev1.Pod{},
			func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) { return pods.List(ctx, o) }, pods.Watch),
		ns: informer(&corev1.Namespace{},
			func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) { return nss.List(ctx, o) }, nss.Watch),
		sas: informer(&corev1.ServiceAccount{},
			func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) { return sas.List(ctx, o) }, sas.Watch),
		nps: informer(&networkingv1.NetworkPolicy{},
			func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) { return nps.List(ctx, o) }, nps.Watch),
		log:      log,
		policy:   group{changed: make(chan struct{}, 1)},
		services: group{changed: make(chan struct{}, 1)},
	}
	v.policy.informers = []cache.SharedIndexInformer{v.pods, v.ns, v.sas, v.nps}
	if o.Services {
		svcs := c.Core.Services(metav1.NamespaceAll)
		eps := c.Discovery.EndpointSlices(metav1.NamespaceAll)
		v.svcs = informer(&corev1.Service{},
			func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) { return svcs.List(ctx, o) }, svcs.Watch)
		v.slices = informer(&discoveryv1.EndpointSlice{},
			func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) { return eps.List(ctx, o) }, eps.Watch)
		v.services.informers = []cache.SharedIndexInformer{v.svcs, v.slices}
	}
	// Transforms run before an object enters the cache; they cannot fail
	// the informer: what they cannot use they pass on untouched, and
	// Snapshot skips it.
	_ = v.pods.SetTransform(trimPod)
	_ = v.sas.SetTransform(trimMeta)
	_ = v.ns.SetTransform(trimMeta)
	if o.Services {
		_ = v.svcs.SetTransform(trimService)
		_ = v.slices.SetTransform(trimSlice)
	}
	for _, g := range []*group{&v.policy, &v.services} {
		for _, inf := range g.informers {
			_, _ = inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
				AddFunc:    func(any) { g.notify() },
				UpdateFunc: func(old, cur any) { notifyUpdate(g, old, cur) },
				DeleteFunc: func(any) { g.notify() },
			})
		}
	}
	return v, nil
}

// Start starts the informers; they stop when ctx ends. It returns at once:
// Synced (ServicesSynced) says when the first lists of the policy objects
// (Services and EndpointSlices) are in, and Changed (ServicesChanged)
// signals then and after every change.
func (v *View) Start(ctx context.Context) {
	v.started.Do(func() {
		for _, g := range []*group{&v.policy, &v.services} {
			if len(g.informers) == 0 {
				continue
			}
			var synced []cache.InformerSynced
			for _, inf := range g.informers {
				go inf.RunWithContext(ctx)
				synced = append(synced, inf.HasSynced)
			}
			go func() {
				if !cache.WaitForCacheSync(ctx.Done(), synced...) {
					return
				}
				g.synced.Store(true)
				if g == &v.policy {
					v.log.Info("kubernetes objects synced", zap.Int("pods", len(v.pods.GetStore().ListKeys())),
						zap.Int("namespaces", len(v.ns.GetStore().ListKeys())),
						zap.Int("networkPolicies", len(v.nps.GetStore().ListKeys())))
				} else {
					v.log.Info("kubernetes services synced", zap.Int("services", len(v.svcs.GetStore().ListKeys())),
						zap.Int("endpointSlices", len(v.slices.GetStore().ListKeys())))
				}
				g.notify()
			}()
		}
	})
}

// Synced says whether every informer of the policy objects has its first
// full list.
func (v *View) Synced() bool { return v.policy.synced.Load() }

// Changed is signalled (it holds at most one signal) when the policy
// objects change after the first sync, and once at the sync itself.
func (v *View) Changed() <-chan struct{} { return v.policy.changed }

// FollowsServices says whether the View follows Services and
// EndpointSlices (Options.Services).
func (v *View) FollowsServices() bool { return v.svcs != nil }

// ServicesSynced says whether the Services and EndpointSlices have their
// first full list (never without Options.Services).
func (v *View) ServicesSynced() bool { return v.services.synced.Load() }

// ServicesChanged is signalled (it holds at most one signal) when Services
// or EndpointSlices change after their first sync, and once at the sync
// itself.
func (v *View) ServicesChanged() <-chan struct{} { return v.services.changed }

// notifyUpdate ignores updates that change nothing the View keeps: a pod's
// status changes many times in its life, its labels rarely; an
// EndpointSlice changes with every address, of which only the nodes and
// readiness are kept.
func notifyUpdate(g *group, old, cur any) {
	switch o := old.(type) {
	case *corev1.Pod:
		if c, ok := cur.(*corev1.Pod); ok && samePod(o, c) {
			return
		}
	case *corev1.Service:
		if c, ok := cur.(*corev1.Service); ok && reflect.DeepEqual(ServiceFrom(o), ServiceFrom(c)) {
			return
		}
	case *discoveryv1.EndpointSlice:
		if c, ok := cur.(*discoveryv1.EndpointSlice); ok && reflect.DeepEqual(SliceFrom(o), SliceFrom(c)) {
			return
		}
	}
	g.notify()
}

func samePod(a, b *corev1.Pod) bool {
	return labels.Equals(a.Labels, b.Labels) && a.Spec.NodeName == b.Spec.NodeName &&
		a.Spec.ServiceAccountName == b.Spec.ServiceAccountName && sameIPs(a.Status.PodIPs, b.Status.PodIPs)
}

func sameIPs(a, b []corev1.PodIP) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].IP != b[i].IP {
			return false
		}
	}
	return true
}

// trimPod keeps what policy reads of a pod: metadata's name, namespace
// and labels, the node, service account, host networking, the containers'
// ports, and the pod's addresses.
func trimPod(obj any) (any, error) {
	p, ok := obj.(*corev1.Pod)
	if !ok {
		return obj, nil
	}
	out := &corev1.Pod{}
	out.Name, out.Namespace, out.Labels = p.Name, p.Namespace, p.Labels
	out.ResourceVersion, out.UID = p.ResourceVersion, p.UID
	out.Spec.NodeName, out.Spec.ServiceAccountName, out.Spec.HostNetwork = p.Spec.NodeName, p.Spec.ServiceAccountName, p.Spec.HostNetwork
	for _, c := range p.Spec.Containers {
		if len(c.Ports) > 0 {
			out.Spec.Containers = append(out.Spec.Containers, corev1.Container{Name: c.Name, Ports: c.Ports})
		}
	}
	out.Status.PodIPs = p.Status.PodIPs
	out.Status.Phase = p.Status.Phase
	return out, nil
}

// trimMeta keeps a namespace's or service account's name, namespace and
// labels.
func trimMeta(obj any) (any, error) {
	switch o := obj.(type) {
	case *corev1.Namespace:
		out := &corev1.Namespace{}
		out.Name, out.Labels, out.ResourceVersion, out.UID = o.Name, o.Labels, o.ResourceVersion, o.UID
		return out, nil
	case *corev1.ServiceAccount:
		out := &corev1.ServiceAccount{}
		out.Name, out.Namespace, out.Labels, out.ResourceVersion, out.UID = o.Name, o.Namespace, o.Labels, o.ResourceVersion, o.UID
		return out, nil
	}
	return obj, nil
}

// Snapshot copies the informers' state. Before Synced it may be partial.
func (v *View) Snapshot() *Snapshot {
	s := &Snapshot{Pods: map[string]*Pod{}, Namespaces: map[string]map[string]string{}, ServiceAccounts: map[string]map[string]string{}}
	for _, o := range v.pods.GetStore().List() {
		if p, ok := o.(*corev1.Pod); ok {
			pod := PodFrom(p)
			s.Pods[pod.Key()] = pod
		}
	}
	for _, o := range v.ns.GetStore().List() {
		if n, ok := o.(*corev1.Namespace); ok {
			s.Namespaces[n.Name] = copyLabels(n.Labels)
		}
	}
	for _, o := range v.sas.GetStore().List() {
		if a, ok := o.(*corev1.ServiceAccount); ok {
			s.ServiceAccounts[a.Namespace+"/"+a.Name] = copyLabels(a.Labels)
		}
	}
	for _, o := range v.nps.GetStore().List() {
		if np, ok := o.(*networkingv1.NetworkPolicy); ok {
			s.NetworkPolicies = append(s.NetworkPolicies, np.DeepCopy())
		}
	}
	// A stable order, so that the same objects compile to the same Set.
	sort.Slice(s.NetworkPolicies, func(i, j int) bool {
		a, b := s.NetworkPolicies[i], s.NetworkPolicies[j]
		if a.Namespace != b.Namespace {
			return a.Namespace < b.Namespace
		}
		return a.Name < b.Name
	})
	return s
}

// PodFrom takes what policy needs of a pod. Ports without a name cannot be
// named by a rule and are left out, as are addresses that do not parse.
func PodFrom(p *corev1.Pod) *Pod {
	out := &Pod{Namespace: p.Namespace, Name: p.Name, Node: p.Spec.NodeName, ServiceAccount: p.Spec.ServiceAccountName,
		Labels: copyLabels(p.Labels), HostNetwork: p.Spec.HostNetwork}
	if out.ServiceAccount == "" {
		out.ServiceAccount = "default"
	}
	for _, c := range p.Spec.Containers {
		for _, cp := range c.Ports {
			if cp.Name == "" || cp.ContainerPort <= 0 || cp.ContainerPort > 65535 {
				continue
			}
			proto := policy.Protocol(cp.Protocol)
			if proto == "" {
				proto = "TCP"
			}
			out.Ports = append(out.Ports, policy.NamedPort{Name: cp.Name, Protocol: proto, Port: uint16(cp.ContainerPort)})
		}
	}
	for _, ip := range p.Status.PodIPs {
		if a, err := netip.ParseAddr(ip.IP); err == nil {
			out.IPs = append(out.IPs, a)
		}
	}
	return out
}

func copyLabels(m map[string]string) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}
