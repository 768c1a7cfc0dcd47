package oracle

import (
	"bytes"
	"flag"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/mattfenwick/cyclonus/pkg/generator"
	"github.com/mattfenwick/cyclonus/pkg/matcher"
	networkingv1 "k8s.io/api/networking/v1"

	"github.com/tortie-net/tortie/internal/npmatrix"
)

// The matrix file: cyclonus' cases as the cluster test in test/k8s
// (TestNetworkPolicyMatrix) applies them, with cyclonus' verdict for every
// pod-to-pod probe. That test runs in the main module, which cannot import
// cyclonus: the verdicts are computed here and committed.
//
//	go test -run TestMatrixFile -update    (or go generate) rewrites it
var update = flag.Bool("update", false, "rewrite "+matrixFile)

const matrixFile = "../../test/k8s/testdata/np-matrix.json"

// cyclonusPodIP is the address the generator is told x/a has: ipBlock
// cases cut CIDRs around it. The cluster test replaces every CIDR that
// contains it by the same-length CIDR around x/a's real address.
const cyclonusPodIP = "10.1.0.10"

// cyclonusCases are the cases TestCyclonusOracle and the matrix file use.
func cyclonusCases() []*generator.TestCase {
	return generator.NewTestCaseGenerator(false, cyclonusPodIP, namespaces, nil, nil).GenerateTestCases()
}

// noPolicyCase leads the file: nothing applied, everything allowed. The
// cluster test runs it first, and it checks the harness where no policy is
// enforced.
const noPolicyCase = "no policy"

// matrixAction converts one of cyclonus' actions.
func matrixAction(a *generator.Action) (npmatrix.Action, error) {
	apply := func(p *networkingv1.NetworkPolicy) *networkingv1.NetworkPolicy {
		p = p.DeepCopy()
		p.APIVersion, p.Kind = "networking.k8s.io/v1", "NetworkPolicy"
		return p
	}
	switch {
	case a.CreatePolicy != nil:
		return npmatrix.Action{Apply: apply(a.CreatePolicy.Policy)}, nil
	case a.UpdatePolicy != nil:
		return npmatrix.Action{Apply: apply(a.UpdatePolicy.Policy)}, nil
	case a.DeletePolicy != nil:
		return npmatrix.Action{DeletePolicy: &npmatrix.ObjectRef{Namespace: a.DeletePolicy.Namespace, Name: a.DeletePolicy.Name}}, nil
	case a.CreateNamespace != nil:
		return npmatrix.Action{CreateNamespace: &npmatrix.ObjectRef{Name: a.CreateNamespace.Namespace, Labels: a.CreateNamespace.Labels}}, nil
	case a.SetNamespaceLabels != nil:
		return npmatrix.Action{SetNamespaceLabels: &npmatrix.ObjectRef{Name: a.SetNamespaceLabels.Namespace, Labels: a.SetNamespaceLabels.Labels}}, nil
	case a.DeleteNamespace != nil:
		return npmatrix.Action{DeleteNamespace: &npmatrix.ObjectRef{Name: a.DeleteNamespace.Namespace}}, nil
	case a.CreatePod != nil:
		return npmatrix.Action{CreatePod: &npmatrix.ObjectRef{Namespace: a.CreatePod.Namespace, Name: a.CreatePod.Pod, Labels: a.CreatePod.Labels}}, nil
	case a.SetPodLabels != nil:
		return npmatrix.Action{SetPodLabels: &npmatrix.ObjectRef{Namespace: a.SetPodLabels.Namespace, Name: a.SetPodLabels.Pod, Labels: a.SetPodLabels.Labels}}, nil
	case a.DeletePod != nil:
		return npmatrix.Action{DeletePod: &npmatrix.ObjectRef{Namespace: a.DeletePod.Namespace, Name: a.DeletePod.Pod}}, nil
	}
	return npmatrix.Action{}, fmt.Errorf("action %+v has no equivalent in the matrix file", a)
}

// ipBlocks lists every ipBlock CIDR and exception of the policies.
func ipBlocks(pols []*networkingv1.NetworkPolicy) []string {
	var out []string
	add := func(peers []networkingv1.NetworkPolicyPeer) {
		for _, p := range peers {
			if p.IPBlock != nil {
				out = append(out, p.IPBlock.CIDR)
				out = append(out, p.IPBlock.Except...)
			}
		}
	}
	for _, p := range pols {
		for _, r := range p.Spec.Ingress {
			add(r.From)
		}
		for _, r := range p.Spec.Egress {
			add(r.To)
		}
	}
	return out
}

// classIP is an address of class c: one that shares exactly c leading
// bits with x/a's (x/a's own, when c is the longest class).
func classIP(podIP netip.Addr, c int, classes []int) netip.Addr {
	if c == slices.Max(classes) {
		return podIP
	}
	b := podIP.As4()
	b[c/8] ^= 0x80 >> (c % 8)
	return netip.AddrFrom4(b)
}

// stepVerdicts is cyclonus' verdict on every probe of w, per pair of
// address classes.
func stepVerdicts(w *world, podIP netip.Addr, classes []int) map[string]string {
	oracle := matcher.BuildNetworkPolicies(true, w.netpols())
	pods := slices.Clone(w.pods)
	slices.SortFunc(pods, func(a, b *pod) int { return strings.Compare(a.ns+"/"+a.name, b.ns+"/"+b.name) })
	peer := func(p *pod, c int) *matcher.TrafficPeer {
		return &matcher.TrafficPeer{IP: classIP(podIP, c, classes).String(),
			Internal: &matcher.InternalPeer{PodLabels: p.labels, NamespaceLabels: w.namespaceLabels(p.ns), Namespace: p.ns}}
	}
	out := map[string]string{}
	for _, cs := range classes {
		for _, cd := range classes {
			var b strings.Builder
			for _, src := range pods {
				for _, dst := range pods {
					for _, port := range probePorts {
						for _, proto := range protocols {
							tr := &matcher.Traffic{Source: peer(src, cs), Destination: peer(dst, cd),
								ResolvedPort: port, ResolvedPortName: portName(port, proto), Protocol: proto}
							if oracle.IsTrafficAllowed(tr).IsAllowed() {
								b.WriteByte('1')
							} else {
								b.WriteByte('0')
							}
						}
					}
				}
			}
			out[fmt.Sprintf("%d/%d", cs, cd)] = b.String()
		}
	}
	first := out[fmt.Sprintf("%d/%d", classes[0], classes[0])]
	for _, v := range out {
		if v != first {
			return out
		}
	}
	return map[string]string{"*": first}
}

// buildMatrix runs every case through cyclonus' matcher.
func buildMatrix() (*npmatrix.Matrix, error) {
	podIP := netip.MustParseAddr(cyclonusPodIP)
	cases := cyclonusCases()
	m := &npmatrix.Matrix{
		Source:     "cyclonus v0.5.6 generator (allowDNS false, pod IP " + cyclonusPodIP + ", namespaces x y z) and matcher; made by policy/oracle's TestMatrixFile",
		Namespaces: map[string]map[string]string{}, Pods: map[string]map[string]string{},
		Ports: probePorts, PodIP: cyclonusPodIP,
	}
	for _, p := range protocols {
		m.Protocols = append(m.Protocols, string(p))
	}
	w := newWorld()
	for ns, l := range w.nsLabels {
		m.Namespaces[ns] = maps.Clone(l)
	}
	for _, p := range w.pods {
		m.Pods[p.ns+"/"+p.name] = maps.Clone(p.labels)
	}

	// The address classes: every CIDR of every step, relative to x/a's
	// address or not.
	relative, fixed := map[int]bool{}, map[string]bool{}
	for _, tc := range cases {
		for _, s := range tc.Steps {
			for _, a := range s.Actions {
				var pols []*networkingv1.NetworkPolicy
				if a.CreatePolicy != nil {
					pols = append(pols, a.CreatePolicy.Policy)
				}
				if a.UpdatePolicy != nil {
					pols = append(pols, a.UpdatePolicy.Policy)
				}
				for _, c := range ipBlocks(pols) {
					pfx, err := netip.ParsePrefix(c)
					if err != nil {
						return nil, fmt.Errorf("case %q: ipBlock %q: %v", tc.Description, c, err)
					}
					switch {
					case pfx.Contains(podIP) && pfx.Bits() > 0:
						relative[pfx.Bits()] = true
					case !pfx.Contains(podIP):
						fixed[pfx.String()] = true
					}
				}
			}
		}
	}
	m.RelativeCIDRs = slices.Sorted(maps.Keys(relative))
	m.FixedCIDRs = slices.Sorted(maps.Keys(fixed))
	classes := append([]int{0}, m.RelativeCIDRs...)
	for _, c := range classes {
		ip := classIP(podIP, c, classes)
		for f := range fixed {
			if netip.MustParsePrefix(f).Contains(ip) {
				return nil, fmt.Errorf("class %d's address %v lies in the fixed CIDR %s", c, ip, f)
			}
		}
	}

	m.Cases = append(m.Cases, npmatrix.Case{Name: noPolicyCase, Tags: []string{},
		Steps: []npmatrix.Step{{Actions: []npmatrix.Action{}, Pods: w.podKeys(), Allowed: stepVerdicts(w, podIP, classes)}}})
	for ci, tc := range cases {
		mc := npmatrix.Case{Name: tc.Description, Tags: slices.Sorted(maps.Keys(tc.Tags))}
		w := newWorld()
		for si, step := range tc.Steps {
			// A step without actions probes again, by another means
			// (Service name or IP, one port): by pod address, as the
			// cluster test probes, nothing changed.
			if len(step.Actions) == 0 {
				continue
			}
			ms := npmatrix.Step{}
			for _, a := range step.Actions {
				if err := w.apply(a); err != nil {
					return nil, fmt.Errorf("case %d %q step %d: %v", ci, tc.Description, si, err)
				}
				ma, err := matrixAction(a)
				if err != nil {
					return nil, fmt.Errorf("case %d %q step %d: %v", ci, tc.Description, si, err)
				}
				ms.Actions = append(ms.Actions, ma)
			}
			ms.Pods = w.podKeys()
			ms.Allowed = stepVerdicts(w, podIP, classes)
			mc.Steps = append(mc.Steps, ms)
		}
		if len(mc.Steps) == 0 {
			return nil, fmt.Errorf("case %d %q has no step with actions", ci, tc.Description)
		}
		m.Cases = append(m.Cases, mc)
	}
	return m, nil
}

// podKeys are the pods' "namespace/name", sorted.
func (w *world) podKeys() []string {
	var out []string
	for _, p := range w.pods {
		out = append(out, p.ns+"/"+p.name)
	}
	slices.Sort(out)
	return out
}

// TestMatrixFile fails when the committed matrix file is not what the
// cases and cyclonus make now (-update rewrites it), and checks what the
// cluster test relies on.
func TestMatrixFile(t *testing.T) {
	m, err := buildMatrix()
	if err != nil {
		t.Fatal(err)
	}
	want, err := m.Encode()
	if err != nil {
		t.Fatal(err)
	}
	if *update {
		if err := os.WriteFile(matrixFile, want, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("wrote %s: %d cases, %d bytes", matrixFile, len(m.Cases), len(want))
	}
	got, err := os.ReadFile(matrixFile)
	if err != nil {
		t.Fatalf("%v (go test -run TestMatrixFile -update writes it)", err)
	}
	if !bytes.Equal(got, want) {
		gl, wl := strings.Split(string(got), "\n"), strings.Split(string(want), "\n")
		line := 0
		for line < min(len(gl), len(wl)) && gl[line] == wl[line] {
			line++
		}
		t.Fatalf("%s is out of date (first difference on line %d): run `go test -run TestMatrixFile -update` in policy/oracle", matrixFile, line+1)
	}

	// What the cluster test assumes.
	if len(m.Cases) < 200 {
		t.Fatalf("%d cases; cyclonus generates hundreds", len(m.Cases))
	}
	if !slices.Equal(m.RelativeCIDRs, []int{24, 28}) {
		t.Errorf("relative CIDR lengths %v; cyclonus' ipBlock cases cut a /24 and a /28 around x/a", m.RelativeCIDRs)
	}
	cells := len(probePorts) * len(protocols)
	deniedSomewhere := 0
	for i, c := range m.Cases {
		for si, s := range c.Steps {
			for k, v := range s.Allowed {
				if len(v) != len(s.Pods)*len(s.Pods)*cells {
					t.Errorf("case %d %q step %d: %s has %d verdicts for %d pods", i, c.Name, si, k, len(v), len(s.Pods))
				}
				if strings.Contains(v, "0") {
					deniedSomewhere++
				}
			}
		}
	}
	if c := m.Cases[0]; c.Name != noPolicyCase || len(c.Steps) != 1 || strings.Contains(c.Steps[0].Allowed["*"], "0") || len(c.Steps[0].Allowed["*"]) != 9*9*cells {
		t.Errorf("the first case is not %q with everything allowed: %+v", noPolicyCase, c)
	}
	if deniedSomewhere < len(m.Cases)/2 {
		t.Errorf("only %d steps deny anything", deniedSomewhere)
	}
	// The ipBlock cases do depend on the classes.
	byClass := 0
	for _, c := range m.Cases {
		for _, s := range c.Steps {
			if _, ok := s.Allowed["*"]; !ok {
				byClass++
			}
		}
	}
	if byClass == 0 {
		t.Error("no step's verdicts depend on address classes; the ipBlock cases should")
	}
	t.Logf("%d cases, %d steps with class-dependent verdicts, %d bytes", len(m.Cases), byClass, len(want))
}

// A pod's class as the cluster test computes it from real addresses.
func TestClassIP(t *testing.T) {
	podIP := netip.MustParseAddr(cyclonusPodIP)
	classes := []int{0, 24, 28}
	for _, c := range classes {
		ip := classIP(podIP, c, classes)
		got := 0
		for _, l := range classes[1:] {
			if netip.PrefixFrom(podIP, l).Masked().Contains(ip) {
				got = l
			}
		}
		if got != c {
			t.Errorf("classIP(%d) = %v, of class %d", c, ip, got)
		}
	}
}
