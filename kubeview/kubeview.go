// Package kubeview follows the Kubernetes objects that network policy is
// made of — pods, namespaces, service accounts and NetworkPolicies —
// through client-go informers, and hands out consistent, read-only
// snapshots of them. It keeps only what policy needs of each object
// (labels, service account, named ports, node), so that a node's memory
// does not grow with the size of every pod spec in the cluster.
//
// The API server has validated what it stores, but a View trusts nothing:
// an object it cannot use is left out and counted, never a reason to stop.
package kubeview

import (
	"context"
	"fmt"
	"net/netip"
	"sort"
	"sync"
	"sync/atomic"

	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"
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
	pods    cache.SharedIndexInformer
	ns      cache.SharedIndexInformer
	sas     cache.SharedIndexInformer
	nps     cache.SharedIndexInformer
	log     *zap.Logger
	changed chan struct{}
	synced  atomic.Bool
	started sync.Once
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

// Clients are the typed API clients a View reads through (only these two
// groups: the whole clientset would double the size of tortied).
type Clients struct {
	Core       corev1client.CoreV1Interface
	Networking networkingv1client.NetworkingV1Interface
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
	return Clients{Core: core, Networking: nw}, nil
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
func New(c Clients, log *zap.Logger) *View {
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
		log:     log,
		changed: make(chan struct{}, 1),
	}
	// Transforms run before an object enters the cache; they cannot fail
	// the informer: what they cannot use they pass on untouched, and
	// Snapshot skips it.
	_ = v.pods.SetTransform(trimPod)
	_ = v.sas.SetTransform(trimMeta)
	_ = v.ns.SetTransform(trimMeta)
	for _, inf := range []cache.SharedIndexInformer{v.pods, v.ns, v.sas, v.nps} {
		_, _ = inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc:    func(any) { v.notify() },
			UpdateFunc: func(old, cur any) { v.notifyUpdate(old, cur) },
			DeleteFunc: func(any) { v.notify() },
		})
	}
	return v
}

// Start starts the informers; they stop when ctx ends. It returns at once:
// Synced says when the first lists are in, and Changed signals then and
// after every change.
func (v *View) Start(ctx context.Context) {
	v.started.Do(func() {
		for _, inf := range []cache.SharedIndexInformer{v.pods, v.ns, v.sas, v.nps} {
			go inf.RunWithContext(ctx)
		}
		go func() {
			if !cache.WaitForCacheSync(ctx.Done(), v.pods.HasSynced, v.ns.HasSynced, v.sas.HasSynced, v.nps.HasSynced) {
				return
			}
			v.synced.Store(true)
			v.log.Info("kubernetes objects synced", zap.Int("pods", len(v.pods.GetStore().ListKeys())),
				zap.Int("namespaces", len(v.ns.GetStore().ListKeys())),
				zap.Int("networkPolicies", len(v.nps.GetStore().ListKeys())))
			v.notify()
		}()
	})
}

// Synced says whether every informer has its first full list.
func (v *View) Synced() bool { return v.synced.Load() }

// Changed is signalled (it holds at most one signal) when the objects
// change after the first sync, and once at the sync itself.
func (v *View) Changed() <-chan struct{} { return v.changed }

func (v *View) notify() {
	if !v.synced.Load() {
		return
	}
	select {
	case v.changed <- struct{}{}:
	default:
	}
}

// notifyUpdate ignores updates that change nothing policy reads: a pod's
// status changes many times in its life, its labels rarely.
func (v *View) notifyUpdate(old, cur any) {
	if op, ok := old.(*corev1.Pod); ok {
		if cp, ok := cur.(*corev1.Pod); ok && samePod(op, cp) {
			return
		}
	}
	v.notify()
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
