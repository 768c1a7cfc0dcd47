package bench

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/tortie-net/tortie/policy"
	"github.com/tortie-net/tortie/resources"
)

// decodePolicies decodes PolicyManifest(n) as tortied's apply does and
// validates every object, returning the policy engine's inputs and the
// objects as the API deletes them.
func decodePolicies(t *testing.T, n int) (*policy.Inputs, []policyObject) {
	t.Helper()
	objs, err := resources.Decode(strings.NewReader(PolicyManifest(n)))
	if err != nil {
		t.Fatalf("PolicyManifest(%d): %v", n, err)
	}
	in := &policy.Inputs{}
	var names []policyObject
	for _, o := range objs {
		if err := o.Validate(); err != nil {
			t.Fatalf("PolicyManifest(%d): %v", n, err)
		}
		switch o := o.(type) {
		case *resources.Tier:
			in.Tiers = append(in.Tiers, o.Tier())
			names = append(names, policyObject{"tiers", o.Metadata.Name})
		case *resources.GlobalNetworkPolicy:
			in.GlobalNetworkPolicies = append(in.GlobalNetworkPolicies, o.Policy())
			names = append(names, policyObject{"globalnetworkpolicies", o.Metadata.Name})
		case *resources.NetworkPolicy:
			in.NetworkPolicies = append(in.NetworkPolicies, o.Policy())
			names = append(names, policyObject{"networkpolicies", o.Metadata.Namespace + "/" + o.Metadata.Name})
		default:
			t.Fatalf("PolicyManifest(%d): unexpected %T", n, o)
		}
	}
	return in, names
}

// TestPolicyManifest: the benchmark's policies are valid, as many as asked,
// all of them listed for removal, and they decide the benchmark's traffic
// as the benchmark relies on: allowed by bench-allow at the sender's
// egress and the receiver's ingress, after walking the rules of every
// policy that selects the pod; other traffic meets live rules.
func TestPolicyManifest(t *testing.T) {
	for _, n := range []int{1, 2, 10, 100, 250} {
		in, names := decodePolicies(t, n)
		if got := len(in.GlobalNetworkPolicies) + len(in.NetworkPolicies); got != n {
			t.Errorf("PolicyManifest(%d) has %d policies", n, got)
		}
		objs := policyObjects(n)
		if len(objs) != len(names) {
			t.Errorf("policyObjects(%d) lists %d objects, the manifest has %d", n, len(objs), len(names))
		}
		for _, o := range names {
			if !slices.Contains(objs, o) {
				t.Errorf("policyObjects(%d) does not list %v", n, o)
			}
		}
		if len(in.Tiers) > 0 && objs[len(objs)-1].kind != "tiers" {
			t.Errorf("policyObjects(%d) removes the tier before its policies: %v", n, objs)
		}

		client, server := netip.MustParseAddr("10.244.0.1"), netip.MustParseAddr("10.244.0.65")
		ep := func(name, role string, ip netip.Addr) policy.Endpoint {
			return policy.Endpoint{Key: "default/" + name, Namespace: "default", IP: ip, Local: true,
				Labels: map[string]string{"role": role, resources.LabelNamespace: "default"}}
		}
		in.Endpoints = []policy.Endpoint{ep("n1p1", roleClient, client), ep("n2p1", roleServer, server)}
		set, err := policy.Compile(in)
		if err != nil {
			t.Fatalf("PolicyManifest(%d) does not compile: %v", n, err)
		}
		u32 := func(a netip.Addr) uint32 {
			b := a.As4()
			return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
		}
		pk := policy.Packet{Src: u32(client), Dst: u32(server), Proto: 17, SrcPort: 40000, DstPort: 9}
		ci, _ := set.Index("default/n1p1")
		si, _ := set.Index("default/n2p1")
		for _, side := range []struct {
			ep  int
			dir policy.Direction
		}{{ci, policy.Egress}, {si, policy.Ingress}} {
			v, steps := set.Explain(side.ep, side.dir, &pk)
			if v.Action != policy.Allow || v.Policy != allowPolicy {
				t.Errorf("PolicyManifest(%d): %s of %s: %+v, want allowed by %s", n, side.dir, set.Key(side.ep), v, allowPolicy)
			}
			// Every policy that selects the pod in that direction is walked first:
			// about half of the default tier's, and the platform tier's.
			if least := n / 3; len(steps) < least {
				t.Errorf("PolicyManifest(%d): %s of %s walks %d rules, want at least %d", n, side.dir, set.Key(side.ep), len(steps), least)
			}
		}
		if n >= 10 {
			bad := policy.Packet{Src: u32(netip.MustParseAddr("198.51.100.0")), Dst: u32(server), Proto: 17, SrcPort: 40000, DstPort: 9}
			if v := set.Evaluate(si, policy.Ingress, &bad); v.Action != policy.Deny || v.Tier != policyTier {
				t.Errorf("PolicyManifest(%d): a source the platform tier denies: %+v", n, v)
			}
		}
	}
}
