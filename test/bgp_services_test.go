package test

import (
	"strings"
	"testing"
	"time"

	"github.com/tortie-net/tortie/internal/testutil"
	"github.com/tortie-net/tortie/lab"
)

// serviceRanges is the default BGPConfiguration of the Service test:
// cluster, external and LoadBalancer ranges, two of them advertised with
// communities (one named).
const serviceRanges = `apiVersion: projectcalico.org/v3
kind: BGPConfiguration
metadata:
  name: default
spec:
  serviceClusterIPs:
    - cidr: 10.96.0.0/12
  serviceExternalIPs:
    - cidr: 203.0.113.0/24
  serviceLoadBalancerIPs:
    - cidr: 198.18.0.0/24
  communities:
    - name: lb
      value: 65001:200:300
  prefixAdvertisements:
    - cidr: 10.96.0.0/12
      communities: ["65001:100"]
    - cidr: 198.18.0.0/24
      communities: [lb, "65001:101"]
`

// birdLacks reports whether BIRD on n has no route to prefix (birdc
// exits with an error then).
func birdLacks(l *lab.Lab, n *lab.Node, prefix string) bool {
	out, _ := l.Birdc(n, "show route "+prefix)
	return strings.Contains(out, "Network not found")
}

// birdAttrs is what BIRD shows of a route's communities, spaces removed:
// "BGP.community:(65001,100)", "BGP.large_community:(65001,200,300)".
func birdAttrs(out string) string {
	var b strings.Builder
	for _, line := range strings.Split(out, "\n") {
		if strings.Contains(line, "community") {
			b.WriteString(strings.Join(strings.Fields(line), "") + "\n")
		}
	}
	return b.String()
}

// TestBirdServiceRanges: with the Service ranges in the default
// BGPConfiguration, a BIRD node learns each of them from both tortie
// nodes, with the communities of prefixAdvertisements; a tortie node keeps
// its peer's copies out of its FIB; a range taken out of the
// configuration is withdrawn.
func TestBirdServiceRanges(t *testing.T) {
	l := up(t, lab.Options{Name: "tsa", Nodes: 3, Pods: 1, Mode: "native", BirdNodes: 1, Manifest: serviceRanges})
	n1, n3 := l.Nodes[0], l.Nodes[2]
	ranges := []string{"10.96.0.0/12", "203.0.113.0/24", "198.18.0.0/24"}
	testutil.WaitFor(t, 40*time.Second, "every Service range at BIRD from both tortie nodes", func() bool {
		for _, r := range ranges {
			out, _ := l.Birdc(n3, "show route "+r)
			if !strings.Contains(out, "via 10.0.1.1") || !strings.Contains(out, "via 10.0.1.2") {
				return false
			}
		}
		return true
	})
	out, _ := l.Birdc(n3, "show route all 10.96.0.0/12")
	t.Logf("BIRD:\n%s", out)
	// Communities: on the ranges of prefixAdvertisements only, from both
	// nodes.
	b1 := blockOf(l.Pod("n1p1").Address)
	for r, want := range map[string][]string{
		"10.96.0.0/12":   {"BGP.community:(65001,100)"},
		"198.18.0.0/24":  {"BGP.community:(65001,101)", "BGP.large_community:(65001,200,300)"},
		"203.0.113.0/24": nil,
		b1:               nil,
	} {
		out, _ := l.Birdc(n3, "show route all "+r)
		got := birdAttrs(out)
		for _, w := range want {
			if strings.Count(got, w) != 2 {
				t.Errorf("BIRD's two routes to %s do not both carry %s:\n%s", r, w, out)
			}
		}
		if want == nil && got != "" {
			t.Errorf("BIRD's routes to %s carry communities:\n%s", r, out)
		}
	}
	st := bgpStatus(t, n1)
	for _, r := range ranges {
		found := false
		for _, a := range st.Advertised {
			found = found || a == r
		}
		if !found {
			t.Errorf("n1 does not list %s among its advertisements %v", r, st.Advertised)
		}
	}
	// n1 accepts n2's block and its three ranges, and installs the block
	// only.
	testutil.WaitFor(t, 30*time.Second, "n2's routes accepted by n1", func() bool {
		p, ok := peerOf(t, n1, "10.0.1.2")
		return ok && p.Accepted == 4
	})
	b2 := blockOf(l.Pod("n2p1").Address)
	if _, ok := fibRoute(t, n1, b2); !ok {
		t.Fatalf("n2's block %s is not in n1's FIB", b2)
	}
	for _, r := range ranges {
		if rt, ok := fibRoute(t, n1, r); ok {
			t.Errorf("n1 installed its peer's copy of Service range %s: %+v", r, rt)
		}
	}
	checkAll(t, l)

	// A range taken out is withdrawn by both nodes.
	if err := l.Apply(strings.Replace(serviceRanges, "  serviceExternalIPs:\n    - cidr: 203.0.113.0/24\n", "", 1)); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 30*time.Second, "203.0.113.0/24 withdrawn by n1", func() bool {
		for _, a := range bgpStatus(t, n1).Advertised {
			if a == "203.0.113.0/24" {
				return false
			}
		}
		return true
	})
	testutil.WaitFor(t, 30*time.Second, "203.0.113.0/24 withdrawn at BIRD", func() bool { return birdLacks(l, n3, "203.0.113.0/24") })
	if out, _ := l.Birdc(n3, "show route 10.96.0.0/12"); !strings.Contains(out, "via 10.0.1.1") || !strings.Contains(out, "via 10.0.1.2") {
		t.Fatalf("the cluster range went with the external one:\n%s", out)
	}
}
