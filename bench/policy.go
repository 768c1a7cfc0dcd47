package bench

import (
	"fmt"
	"strings"
	"time"

	"github.com/tortie-net/tortie/api"
	"github.com/tortie-net/tortie/lab"
)

// Labels the policy setup gives the bench lab's pods: the senders (node
// 1's pods) are clients, the receivers (node 2's) servers.
const (
	roleClient = "bench-client"
	roleServer = "bench-server"
)

// allowPolicy is the name of the policy that allows the benchmark's
// traffic, the last one evaluated.
const allowPolicy = "bench-allow"

// policyTier is the tier of the platform policies.
const policyTier = "bench-platform"

// PolicyManifest is n Calico policies (n >= 1) as a cluster might have
// them, in the shape tortiectl apply takes: a tenth in a platform tier
// that runs first (order 100, default action Pass), which deny sources
// and destinations by address and by a quarantine label; then, in the
// default tier, namespaced policies alternately selecting the servers
// (ingress rules) and the clients (egress rules), each with a TCP rule
// for a service by label, a UDP rule by address range and port, and an
// ICMP rule by namespace label, none of which matches the benchmark's
// traffic; and last, bench-allow, which allows every pod with a role to
// reach every other, both ways. So the first packet of a benchmark flow
// walks every rule of the policies that select its ends before it is
// allowed. Nothing that allows is written before bench-allow, so once a
// node's trace names bench-allow every policy is in force.
func PolicyManifest(n int) string {
	if n < 1 {
		n = 1
	}
	platform := n / 10
	fillers := n - platform - 1
	var b strings.Builder
	doc := func(format string, a ...any) {
		fmt.Fprintf(&b, "---\napiVersion: projectcalico.org/v3\n"+format, a...)
	}
	if platform > 0 {
		doc("kind: Tier\nmetadata:\n  name: %s\nspec:\n  order: 100\n  defaultAction: Pass\n", policyTier)
	}
	for i := 0; i < platform; i++ {
		doc(`kind: GlobalNetworkPolicy
metadata:
  name: %[1]s.guard-%[2]d
spec:
  tier: %[1]s
  order: %[2]d
  selector: has(role)
  types: [Ingress, Egress]
  ingress:
  - action: Deny
    source:
      nets: [198.51.100.%[3]d/32]
  - action: Deny
    source:
      selector: quarantine == 'true'
  egress:
  - action: Deny
    protocol: TCP
    destination:
      nets: [203.0.113.%[3]d/32]
      ports: [25]
`, policyTier, i, i%250)
	}
	for i := 0; i < fillers; i++ {
		if i%2 == 0 {
			doc(`kind: NetworkPolicy
metadata:
  name: svc-%[1]d-ingress
  namespace: default
spec:
  order: %[2]d
  selector: role == '%[3]s'
  types: [Ingress]
  ingress:
  - action: Allow
    protocol: TCP
    source:
      selector: app == 'svc-%[1]d'
    destination:
      ports: [%[4]d]
  - action: Deny
    protocol: UDP
    source:
      nets: [192.0.2.0/24]
    destination:
      ports: ["%[5]d:%[6]d"]
  - action: Allow
    protocol: ICMP
    icmp:
      type: 8
    source:
      namespaceSelector: team == 'team-%[1]d'
`, i, 100+i, roleServer, 10000+i, 20000+10*i, 20000+10*i+9)
		} else {
			doc(`kind: NetworkPolicy
metadata:
  name: svc-%[1]d-egress
  namespace: default
spec:
  order: %[2]d
  selector: role == '%[3]s'
  types: [Egress]
  egress:
  - action: Allow
    protocol: TCP
    destination:
      selector: app == 'svc-%[1]d'
      ports: [%[4]d]
  - action: Deny
    protocol: UDP
    destination:
      nets: [192.0.2.%[5]d/32]
  - action: Allow
    protocol: ICMP
    destination:
      namespaceSelector: team == 'team-%[1]d'
`, i, 100+i, roleClient, 10000+i, i%250)
		}
	}
	doc(`kind: GlobalNetworkPolicy
metadata:
  name: %s
spec:
  order: 5000
  selector: has(role)
  types: [Ingress, Egress]
  ingress:
  - action: Allow
    source:
      selector: has(role)
  egress:
  - action: Allow
    destination:
      selector: has(role)
`, allowPolicy)
	return b.String()
}

// policyObject is one resource of PolicyManifest, as the API deletes it.
type policyObject struct{ kind, name string }

// policyObjects lists PolicyManifest(n)'s resources, policies before the
// tier that holds some of them.
func policyObjects(n int) []policyObject {
	if n < 1 {
		n = 1
	}
	platform := n / 10
	var out []policyObject
	for i := 0; i < platform; i++ {
		out = append(out, policyObject{"globalnetworkpolicies", fmt.Sprintf("%s.guard-%d", policyTier, i)})
	}
	for i := 0; i < n-platform-1; i++ {
		dir := "ingress"
		if i%2 == 1 {
			dir = "egress"
		}
		out = append(out, policyObject{"networkpolicies", fmt.Sprintf("default/svc-%d-%s", i, dir)})
	}
	out = append(out, policyObject{"globalnetworkpolicies", allowPolicy})
	if platform > 0 {
		out = append(out, policyObject{"tiers", policyTier})
	}
	return out
}

// labelPods gives node 1's pods the client role and node 2's the server
// role, on their WorkloadEndpoints. Labels alone change nothing: no
// policy selects a pod until the policies are applied.
func labelPods(l *lab.Lab) error {
	c := api.NewClient(l.Nodes[0].Socket)
	for i, n := range l.Nodes[:2] {
		role := roleClient
		if i == 1 {
			role = roleServer
		}
		for _, p := range n.Pods {
			wep, err := p.WorkloadEndpoint()
			if err != nil {
				return err
			}
			if err := c.Label(api.LabelRequest{Kind: "workloadendpoint", Name: wep, Set: map[string]string{"role": role}}, nil); err != nil {
				return fmt.Errorf("labelling %s: %w", wep, err)
			}
		}
	}
	return nil
}

// applyPolicies puts PolicyManifest(n) in force in the lab and waits
// until both nodes decide the benchmark's first flow by bench-allow: the
// client's egress on node 1, the server's ingress on node 2.
func applyPolicies(l *lab.Lab, n int) error {
	if _, err := api.NewClient(l.Nodes[0].Socket).Apply(PolicyManifest(n)); err != nil {
		return fmt.Errorf("applying %d policies: %w", n, err)
	}
	return waitPolicies(l, true)
}

// removePolicies deletes what PolicyManifest(n) applied and waits until
// no policy decides for the pods (their namespace profile still does).
func removePolicies(l *lab.Lab, n int) error {
	c := api.NewClient(l.Nodes[0].Socket)
	for _, o := range policyObjects(n) {
		if err := c.DeleteResource(o.kind, o.name); err != nil {
			return fmt.Errorf("deleting %s %s: %w", o.kind, o.name, err)
		}
	}
	return waitPolicies(l, false)
}

// waitPolicies polls both nodes' trace of the benchmark's first flow
// (UDP from n1p1 to n2p1) until it shows the policies in force (on) or
// gone (off: no tier decides).
func waitPolicies(l *lab.Lab, on bool) error {
	src, dst := l.Pod("n1p1"), l.Pod("n2p1")
	n1, n2 := api.NewClient(l.Nodes[0].Socket), api.NewClient(l.Nodes[1].Socket)
	deadline := time.Now().Add(60 * time.Second)
	for {
		e, err1 := n1.Trace(api.TraceRequest{From: "default/" + src.Name, To: dst.Address, Proto: "udp", Port: 9})
		i, err2 := n2.Trace(api.TraceRequest{From: src.Address, To: "default/" + dst.Name, Proto: "udp", Port: 9})
		if err1 == nil && err2 == nil {
			if on && e.Egress.Evaluated && e.Egress.Policy == allowPolicy && e.Egress.Action == "Allow" &&
				i.Ingress.Evaluated && i.Ingress.Policy == allowPolicy && i.Ingress.Action == "Allow" {
				return nil
			}
			// Without policies, what decides is the pods' namespace
			// profile (it allows everything), or nothing: no tier.
			if !on && e.Verdict == "forward" && i.Verdict == "forward" && e.Egress.Tier == "" && i.Ingress.Tier == "" {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("policies (in force: %v) not seen by both nodes within 60s: n1 egress %+v (%v), n2 ingress %+v (%v)",
				on, e.Egress, err1, i.Ingress, err2)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// policyWork reads node 2's counters (flow table and drops), to show what
// policy did during a test.
func policyWork(l *lab.Lab) (api.Counters, error) {
	if len(l.Nodes) < 2 || l.Nodes[1].Socket == "" {
		return api.Counters{}, nil
	}
	return api.NewClient(l.Nodes[1].Socket).Counters()
}
