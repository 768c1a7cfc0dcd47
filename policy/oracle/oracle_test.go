package oracle

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/mattfenwick/cyclonus/pkg/generator"
	"github.com/mattfenwick/cyclonus/pkg/matcher"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"

	"github.com/tortie-net/tortie/policy"
)

// The classic matrix: namespaces x, y, z labelled ns=<name>, each with pods
// a, b, c labelled pod=<name>, every pod serving 80 and 81 over TCP, UDP and
// SCTP under the port names cyclonus' cases use (serve-80-tcp, …).
var (
	namespaces = []string{"x", "y", "z"}
	podNames   = []string{"a", "b", "c"}
	protocols  = []corev1.Protocol{corev1.ProtocolTCP, corev1.ProtocolUDP}
	probePorts = []int{80, 81}
	// Addresses outside the cluster: one inside the /24 around the pods
	// (ipBlock cases cut CIDRs around a pod's address), one far from it.
	externals = []string{"10.1.0.250", "192.0.2.1"}
)

type pod struct {
	ns, name string
	labels   map[string]string
	ip       netip.Addr
}

// world is the cluster as a test case's actions leave it.
type world struct {
	nsLabels map[string]map[string]string
	pods     []*pod
	policies map[string]*networkingv1.NetworkPolicy // by namespace/name
	nextIP   netip.Addr
}

func newWorld() *world {
	w := &world{nsLabels: map[string]map[string]string{}, policies: map[string]*networkingv1.NetworkPolicy{},
		nextIP: netip.MustParseAddr("10.1.0.10")}
	for _, ns := range namespaces {
		w.nsLabels[ns] = map[string]string{"ns": ns}
		for _, p := range podNames {
			w.addPod(ns, p, map[string]string{"pod": p})
		}
	}
	return w
}

func (w *world) addPod(ns, name string, labels map[string]string) {
	w.pods = append(w.pods, &pod{ns: ns, name: name, labels: maps.Clone(labels), ip: w.nextIP})
	w.nextIP = w.nextIP.Next()
}

func (w *world) pod(ns, name string) (*pod, error) {
	for _, p := range w.pods {
		if p.ns == ns && p.name == name {
			return p, nil
		}
	}
	return nil, fmt.Errorf("no pod %s/%s", ns, name)
}

func (w *world) apply(a *generator.Action) error {
	switch {
	case a.CreatePolicy != nil:
		p := a.CreatePolicy.Policy
		w.policies[p.Namespace+"/"+p.Name] = p
	case a.UpdatePolicy != nil:
		p := a.UpdatePolicy.Policy
		w.policies[p.Namespace+"/"+p.Name] = p
	case a.DeletePolicy != nil:
		delete(w.policies, a.DeletePolicy.Namespace+"/"+a.DeletePolicy.Name)
	case a.CreateNamespace != nil:
		w.nsLabels[a.CreateNamespace.Namespace] = maps.Clone(a.CreateNamespace.Labels)
	case a.SetNamespaceLabels != nil:
		w.nsLabels[a.SetNamespaceLabels.Namespace] = maps.Clone(a.SetNamespaceLabels.Labels)
	case a.DeleteNamespace != nil:
		ns := a.DeleteNamespace.Namespace
		delete(w.nsLabels, ns)
		w.pods = slices.DeleteFunc(w.pods, func(p *pod) bool { return p.ns == ns })
		maps.DeleteFunc(w.policies, func(k string, _ *networkingv1.NetworkPolicy) bool { return strings.HasPrefix(k, ns+"/") })
	case a.ReadNetworkPolicies != nil:
	case a.CreatePod != nil:
		w.addPod(a.CreatePod.Namespace, a.CreatePod.Pod, a.CreatePod.Labels)
	case a.SetPodLabels != nil:
		p, err := w.pod(a.SetPodLabels.Namespace, a.SetPodLabels.Pod)
		if err != nil {
			return err
		}
		p.labels = maps.Clone(a.SetPodLabels.Labels)
	case a.DeletePod != nil:
		ns, name := a.DeletePod.Namespace, a.DeletePod.Pod
		w.pods = slices.DeleteFunc(w.pods, func(p *pod) bool { return p.ns == ns && p.name == name })
	default:
		return fmt.Errorf("unknown action %+v", a)
	}
	return nil
}

// namespaceLabels are a namespace's labels as the API server keeps them.
func (w *world) namespaceLabels(ns string) map[string]string {
	l := maps.Clone(w.nsLabels[ns])
	if l == nil {
		l = map[string]string{}
	}
	l["kubernetes.io/metadata.name"] = ns
	return l
}

func (w *world) netpols() []*networkingv1.NetworkPolicy {
	var out []*networkingv1.NetworkPolicy
	for _, k := range slices.Sorted(maps.Keys(w.policies)) {
		out = append(out, w.policies[k])
	}
	return out
}

func (w *world) inputs() *policy.Inputs {
	in := &policy.Inputs{KubernetesPolicies: w.netpols()}
	for _, p := range w.pods {
		var named []policy.NamedPort
		for _, port := range probePorts {
			for _, proto := range []string{"TCP", "UDP", "SCTP"} {
				named = append(named, policy.NamedPort{Name: portName(port, corev1.Protocol(proto)), Protocol: policy.Protocol(proto), Port: uint16(port)})
			}
		}
		in.Endpoints = append(in.Endpoints, policy.Endpoint{
			Key: p.ns + "/" + p.name, Namespace: p.ns, Labels: p.labels, NamespaceLabels: w.namespaceLabels(p.ns),
			ServiceAccount: "default", IP: p.ip, Ports: named, Local: true,
		})
	}
	return in
}

func portName(port int, proto corev1.Protocol) string {
	return fmt.Sprintf("serve-%d-%s", port, strings.ToLower(string(proto)))
}

func ip4(a netip.Addr) uint32 {
	b := a.As4()
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

// peer is one side of probed traffic: a pod or an address outside.
type peer struct {
	pod *pod
	ip  netip.Addr
}

func (p peer) String() string {
	if p.pod != nil {
		return p.pod.ns + "/" + p.pod.name
	}
	return p.ip.String()
}

// compare probes every pair of peers (at least one a pod) with TCP and UDP
// on 80 and 81, and returns the disagreements between our engine and
// cyclonus' matcher, and how many verdicts it compared.
func compare(w *world) (diffs []string, compared int, err error) {
	set, err := policy.Compile(w.inputs())
	if err != nil {
		return nil, 0, err
	}
	oracle := matcher.BuildNetworkPolicies(true, w.netpols())
	var peers []peer
	for _, p := range w.pods {
		peers = append(peers, peer{pod: p, ip: p.ip})
	}
	for _, e := range externals {
		peers = append(peers, peer{ip: netip.MustParseAddr(e)})
	}
	trafficPeer := func(p peer) *matcher.TrafficPeer {
		tp := &matcher.TrafficPeer{IP: p.ip.String()}
		if p.pod != nil {
			tp.Internal = &matcher.InternalPeer{PodLabels: p.pod.labels, NamespaceLabels: w.namespaceLabels(p.pod.ns), Namespace: p.pod.ns}
		}
		return tp
	}
	for _, src := range peers {
		for _, dst := range peers {
			if src.pod == nil && dst.pod == nil {
				continue
			}
			for _, proto := range protocols {
				for _, port := range probePorts {
					tr := &matcher.Traffic{Source: trafficPeer(src), Destination: trafficPeer(dst), ResolvedPort: port, Protocol: proto}
					if dst.pod != nil {
						tr.ResolvedPortName = portName(port, proto)
					}
					want := oracle.IsTrafficAllowed(tr)
					pkt := policy.Packet{Src: ip4(src.ip), Dst: ip4(dst.ip), SrcPort: 33333, DstPort: uint16(port), Proto: 6}
					if proto == corev1.ProtocolUDP {
						pkt.Proto = 17
					}
					if dst.pod != nil {
						i, _ := set.Index(dst.pod.ns + "/" + dst.pod.name)
						got := set.Evaluate(i, policy.Ingress, &pkt)
						compared++
						if (got.Action == policy.Allow) != want.Ingress.IsAllowed() {
							diffs = append(diffs, fmt.Sprintf("%s -> %s %s/%d ingress: ours %+v, cyclonus allowed=%v",
								src, dst, proto, port, got, want.Ingress.IsAllowed()))
						}
					}
					if src.pod != nil {
						i, _ := set.Index(src.pod.ns + "/" + src.pod.name)
						got := set.Evaluate(i, policy.Egress, &pkt)
						compared++
						if (got.Action == policy.Allow) != want.Egress.IsAllowed() {
							diffs = append(diffs, fmt.Sprintf("%s -> %s %s/%d egress: ours %+v, cyclonus allowed=%v",
								src, dst, proto, port, got, want.Egress.IsAllowed()))
						}
					}
				}
			}
		}
	}
	return diffs, compared, nil
}

// TestCyclonusOracle runs every case cyclonus' generator makes, step by
// step, and compares every verdict of ours with its matcher's.
func TestCyclonusOracle(t *testing.T) {
	cases := cyclonusCases()
	if len(cases) < 100 {
		t.Fatalf("cyclonus generated %d cases; expected hundreds", len(cases))
	}
	passed, steps, compared := 0, 0, 0
	for ci, tc := range cases {
		w := newWorld()
		ok := true
		for si, step := range tc.Steps {
			for _, a := range step.Actions {
				if err := w.apply(a); err != nil {
					t.Fatalf("case %d %q step %d: %v", ci, tc.Description, si, err)
				}
			}
			diffs, n, err := compare(w)
			if err != nil {
				t.Errorf("case %d %q step %d: compile: %v", ci, tc.Description, si, err)
				ok = false
				continue
			}
			steps++
			compared += n
			if len(diffs) > 0 {
				ok = false
				t.Errorf("case %d %q step %d: %d disagreements, first: %s", ci, tc.Description, si, len(diffs), strings.Join(diffs[:min(3, len(diffs))], "\n  "))
			}
		}
		if ok {
			passed++
		}
	}
	t.Logf("cyclonus oracle: %d cases (%d steps, %d verdicts compared): %d passed, %d failed", len(cases), steps, compared, passed, len(cases)-passed)
}
