package agent

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/tortie-net/tortie/datastore"
	"github.com/tortie-net/tortie/dsync"
	"github.com/tortie-net/tortie/kubeview"
	"github.com/tortie-net/tortie/policy"
	"github.com/tortie-net/tortie/resources"
	"github.com/tortie-net/tortie/router"
)

// namespaceLabelPrefix marks, in a kns.<namespace> profile's
// labelsToApply, the namespace's own labels (Calico writes a namespace's
// label k=v there as pcns.k=v).
const namespaceLabelPrefix = "pcns."

// policyState is what the policy loop keeps between compilations.
type policyState struct {
	set      atomic.Pointer[policy.Set]
	compiles atomic.Uint64
	failures atomic.Uint64
	lastErr  atomic.Pointer[error] // the last compilation's failure; nil after a success
	// attempted fires after every attempt to install.
	attempted broadcast
}

// WaitPolicy returns once the installed policy includes the local endpoint
// key ("<namespace>/<pod>"), or an error when ctx ends first saying why
// (a compilation that fails keeps new endpoints out). Without a router
// there is no policy and nothing to wait for. It is safe for concurrent
// use.
func (a *Agent) WaitPolicy(ctx context.Context, key string) error {
	if a.Router == nil {
		return nil
	}
	for {
		next := a.pol.attempted.next()
		if set := a.pol.set.Load(); set != nil {
			if _, ok := set.Index(key); ok {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			if err := a.pol.lastErr.Load(); err != nil {
				return fmt.Errorf("the policy does not compile: %w", *err)
			}
			if a.pol.set.Load() == nil {
				return errors.New("no policy has been compiled yet")
			}
			return fmt.Errorf("the policy in force does not include %s yet", key)
		case <-next:
		}
	}
}

// PolicySet is the policy Set installed in the router (nil before the
// first successful compilation).
func (a *Agent) PolicySet() *policy.Set { return a.pol.set.Load() }

// PolicyCounts says how many compilations were installed and how many
// failed (a failure keeps the previous Set in force).
func (a *Agent) PolicyCounts() (installed, failed uint64) {
	return a.pol.compiles.Load(), a.pol.failures.Load()
}

// runPolicy follows the policy resources and workload endpoints in the
// datastore, and with Kube the cluster's pods, namespaces, service
// accounts and NetworkPolicies: a full list, compiled and installed, then
// a watch whose bursts of events (or a 30 s tick) trigger the next list.
// Compilation happens here, never on the packet path; a list or compile
// error keeps the Set in force. With Kube nothing is installed before its
// first full list: a Set without the NetworkPolicies would open what
// they close.
func (a *Agent) runPolicy(ctx context.Context) {
	if a.Kube != nil {
		a.Kube.Start(ctx)
		for !a.Kube.Synced() {
			select {
			case <-ctx.Done():
				return
			case <-a.Kube.Changed():
			}
		}
	}
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		// The watch starts before the list: whatever changes after the
		// list read is an event, whatever the store's watch does with
		// revisions.
		wctx, cancel := context.WithCancel(ctx)
		events := a.Store.Watch(wctx, resources.CalicoPrefix, 0)
		if err := a.syncPolicy(ctx); err != nil {
			cancel()
			a.Log.Warn("policy resources not read; keeping the policy in force", zap.Error(err), zap.Duration("retry", backoff))
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, 5*time.Second)
			continue
		}
		ended := a.watchPolicy(ctx, events)
		cancel()
		if !ended {
			backoff = 100 * time.Millisecond
			continue
		}
		// The watch broke: list again, but not in a tight loop.
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// watchPolicy returns after the first burst of events (or the tick), so
// that runPolicy lists again; ended says the watch broke instead.
func (a *Agent) watchPolicy(ctx context.Context, events <-chan datastore.Event) (ended bool) {
	tick := time.NewTimer(30 * time.Second)
	defer tick.Stop()
	var kube <-chan struct{} // nil without Kube: never ready
	if a.Kube != nil {
		kube = a.Kube.Changed()
	}
	select {
	case <-ctx.Done():
	case _, ok := <-events:
		if !ok {
			return ctx.Err() == nil
		}
		dsync.Drain(events, 20*time.Millisecond)
	case <-kube:
		// A burst of pod changes (a Deployment scaled) is one compilation.
		t := time.NewTimer(20 * time.Millisecond)
		select {
		case <-ctx.Done():
		case <-t.C:
		}
		t.Stop()
	case <-tick.C:
	}
	return false
}

// syncPolicy lists, compiles and installs once. A compile error is logged and counted, and the
// previous Set stays: enforcement is never dropped because of one bad
// resource.
func (a *Agent) syncPolicy(ctx context.Context) error {
	r, err := resources.Client{S: a.Store, Invalid: a.Invalid}.PolicyResourcesAt(ctx)
	if err != nil {
		return err
	}
	var ks *kubeview.Snapshot
	if a.Kube != nil {
		ks = a.Kube.Snapshot()
	}
	in, warnings := PolicyInputs(a.Node, r, ks)
	for _, w := range warnings {
		a.Log.Warn(w)
	}
	defer a.pol.attempted.fire()
	set, err := policy.Compile(in)
	if err != nil {
		a.pol.failures.Add(1)
		a.pol.lastErr.Store(&err)
		a.Log.Error("network policy does not compile; the previous policy stays in force", zap.Error(err))
		return nil
	}
	if err := a.Router.SetPolicy(router.Policy{Set: set, ServiceNets: a.ServiceNets}); err != nil {
		a.pol.failures.Add(1)
		a.pol.lastErr.Store(&err)
		a.Log.Error("network policy not installed; the previous policy stays in force", zap.Error(err))
		return nil
	}
	a.pol.set.Store(set)
	a.pol.lastErr.Store(nil)
	a.pol.compiles.Add(1)
	return nil
}

// PolicyInputs turns the stored resources into what the policy engine
// compiles, for node: every workload endpoint of the cluster is a policy
// endpoint (Local when on node), with its namespace's labels from the
// kns.<namespace> profile. As Calico's controllers make one per
// namespace, a namespace with endpoints and no stored kns profile gets
// the one they would make (its name labels and Allow rules); a profile an
// endpoint names that does not exist has no rules (so nothing after the
// tiers allows), as for Felix. The warnings say what was left out.
//
// With kube (the Kubernetes API's objects; nil: none) a Kubernetes pod's
// endpoint takes its labels, service account and named ports from the
// pod, and its namespace's labels from the Namespace, as Calico's do; the
// datastore's record still says where the pod is and its address. The
// Kubernetes NetworkPolicies join the Calico ones.
func PolicyInputs(node string, r *resources.PolicyResources, kube *kubeview.Snapshot) (*policy.Inputs, []string) {
	in := &policy.Inputs{}
	var warnings []string
	profiles := map[string]bool{}
	nsLabels := map[string]map[string]string{}
	for _, p := range r.Profiles {
		in.Profiles = append(in.Profiles, p.Profile())
		profiles[p.Metadata.Name] = true
		if ns, ok := strings.CutPrefix(p.Metadata.Name, resources.NamespaceProfilePrefix); ok {
			labels := map[string]string{}
			for k, v := range p.Spec.LabelsToApply {
				if k, ok := strings.CutPrefix(k, namespaceLabelPrefix); ok {
					labels[k] = v
				}
			}
			nsLabels[ns] = labels
		}
	}
	seen := map[string]string{}
	var missing []string
	for _, w := range r.WorkloadEndpoints {
		key := w.PolicyKey()
		if !w.Addr().IsValid() {
			warnings = append(warnings, "WorkloadEndpoint "+w.Metadata.Namespace+"/"+w.Metadata.Name+" has no IPv4 address: no policy names it")
			continue
		}
		if other, dup := seen[key]; dup {
			warnings = append(warnings, "WorkloadEndpoint "+w.Metadata.Namespace+"/"+w.Metadata.Name+" is a second endpoint of pod "+key+
				" (after "+other+"): only the first is subject to policy")
			continue
		}
		seen[key] = w.Metadata.Name
		ns := w.Metadata.Namespace
		for _, p := range w.Spec.Profiles {
			if profiles[p] {
				continue
			}
			profiles[p] = true
			if p == resources.NamespaceProfilePrefix+ns {
				in.Profiles = append(in.Profiles, namespaceProfile(ns))
				continue
			}
			missing = append(missing, p)
			in.Profiles = append(in.Profiles, policy.Profile{Name: p})
		}
		e := w.Endpoint(nsLabels[ns], w.Spec.Node == node)
		if kube != nil && w.Spec.Orchestrator == resources.OrchestratorK8s {
			fromKube(&e, kube)
		}
		in.Endpoints = append(in.Endpoints, e)
	}
	sort.Strings(missing)
	for _, p := range missing {
		warnings = append(warnings, "profile "+p+" does not exist: endpoints naming it are allowed nothing after the tiers")
	}
	for _, t := range r.Tiers {
		in.Tiers = append(in.Tiers, t.Tier())
	}
	for _, p := range r.NetworkPolicies {
		in.NetworkPolicies = append(in.NetworkPolicies, p.Policy())
	}
	for _, p := range r.GlobalNetworkPolicies {
		in.GlobalNetworkPolicies = append(in.GlobalNetworkPolicies, p.Policy())
	}
	for _, s := range r.NetworkSets {
		in.NetworkSets = append(in.NetworkSets, s.Set())
	}
	for _, s := range r.GlobalNetworkSets {
		in.GlobalNetworkSets = append(in.GlobalNetworkSets, s.Set())
	}
	if kube != nil {
		in.KubernetesPolicies = kube.NetworkPolicies
	}
	return in, warnings
}

// fromKube gives a Kubernetes pod's endpoint what the API says of the pod
// and its namespace: the pod's labels with those Calico adds, its service
// account and that account's labels, its named ports, and the
// namespace's labels. An endpoint whose pod or namespace the API does not
// know (yet, or any more) keeps what its record says.
func fromKube(e *policy.Endpoint, kube *kubeview.Snapshot) {
	if l, ok := kube.Namespaces[e.Namespace]; ok {
		e.NamespaceLabels = l
	}
	p, ok := kube.Pods[e.Key]
	if !ok {
		return
	}
	labels := make(map[string]string, len(p.Labels)+3)
	for k, v := range p.Labels {
		labels[k] = v
	}
	labels[resources.LabelNamespace] = p.Namespace
	labels[resources.LabelOrchestrator] = resources.OrchestratorK8s
	labels[resources.LabelSAName] = p.ServiceAccount
	e.Labels = labels
	e.ServiceAccount = p.ServiceAccount
	e.ServiceAccountLabels = kube.ServiceAccounts[p.Namespace+"/"+p.ServiceAccount]
	e.Ports = p.Ports
}

// namespaceProfile is the kns.<namespace> profile Calico's controllers
// make for a namespace: its name as labels, and Allow both ways, so that
// a pod no policy selects is not isolated.
func namespaceProfile(ns string) policy.Profile {
	return policy.Profile{
		Name: resources.NamespaceProfilePrefix + ns,
		LabelsToApply: map[string]string{
			namespaceLabelPrefix + "projectcalico.org/name":      ns,
			namespaceLabelPrefix + "kubernetes.io/metadata.name": ns,
		},
		Ingress: []policy.Rule{{Action: policy.Allow}},
		Egress:  []policy.Rule{{Action: policy.Allow}},
	}
}
