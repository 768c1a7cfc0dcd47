package test

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tortie-net/tortie/datastore/kubetest"
	"github.com/tortie-net/tortie/internal/labtest"
	"github.com/tortie-net/tortie/internal/testutil"
	"github.com/tortie-net/tortie/lab"
)

// serviceLocalConfig is the default BGPConfiguration of the Service
// advertisement test, and a BGPFilter on the sessions with the BIRD node
// that keeps the /32s of the external range from it (the range itself
// still goes).
const serviceLocalConfig = `apiVersion: projectcalico.org/v3
kind: BGPConfiguration
metadata:
  name: default
spec:
  serviceClusterIPs:
    - cidr: ` + lab.ServiceCIDR + `
  serviceExternalIPs:
    - cidr: 192.0.2.0/24
  serviceLoadBalancerIPs:
    - cidr: 198.18.0.0/24
---
apiVersion: projectcalico.org/v3
kind: BGPFilter
metadata:
  name: no-external-32s
spec:
  exportV4:
    - action: Reject
      matchOperator: In
      cidr: 192.0.2.0/24
      prefixLength: {min: 32}
---
`

// serviceObjects are the Kubernetes objects of the test: web, a
// LoadBalancer Service with externalTrafficPolicy Local and no selector
// (its EndpointSlice is made by hand, as a controller would make it), with
// an external IP inside serviceExternalIPs and one outside; and spread,
// the same with externalTrafficPolicy Cluster, which only the ranges
// carry.
const serviceObjects = `apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  type: LoadBalancer
  externalTrafficPolicy: Local
  externalIPs: [192.0.2.10, 198.51.100.7]
  ports: [{port: 80, protocol: TCP}]
---
apiVersion: v1
kind: Service
metadata: {name: spread, namespace: default}
spec:
  type: LoadBalancer
  externalTrafficPolicy: Cluster
  externalIPs: [192.0.2.20]
  ports: [{port: 80, protocol: TCP}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: spread-1
  namespace: default
  labels: {kubernetes.io/service-name: spread}
addressType: IPv4
ports: [{port: 80, protocol: TCP}]
endpoints:
  - addresses: [10.244.0.20]
    nodeName: n1
    conditions: {ready: true}
`

// webSlice is web's EndpointSlice: an endpoint on n1 and one on n2, each
// ready or not.
func webSlice(n1Ready, n2Ready bool) string {
	b := func(v bool) string {
		if v {
			return "true"
		}
		return "false"
	}
	return `apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-1
  namespace: default
  labels: {kubernetes.io/service-name: web}
addressType: IPv4
ports: [{port: 80, protocol: TCP}]
endpoints:
  - addresses: [10.244.0.10]
    nodeName: n1
    conditions: {ready: ` + b(n1Ready) + `}
  - addresses: [10.244.0.11]
    nodeName: n2
    conditions: {ready: ` + b(n2Ready) + `}
`
}

// kubectl runs kubectl as the lab cluster's administrator, failing the
// test on error.
func kubectl(t *testing.T, cp *lab.ControlPlane, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := cp.Kubectl(ctx, args...)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(out)
}

// kubectlApply applies a manifest to the lab's cluster.
func kubectlApply(t *testing.T, cp *lab.ControlPlane, manifest string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "objects.yaml")
	if err := os.WriteFile(path, []byte(manifest), 0o644); err != nil {
		t.Fatal(err)
	}
	kubectl(t, cp, "apply", "-f", path)
}

// serviceHosts says which nodes BIRD on n learnt prefix from ("" when it
// has no route to it), in address order.
func serviceHosts(l *lab.Lab, n *lab.Node, prefix string) string {
	out, _ := l.Birdc(n, "show route "+prefix)
	var via []string
	for _, a := range []string{"10.0.1.1", "10.0.1.2"} {
		if strings.Contains(out, "via "+a) {
			via = append(via, a)
		}
	}
	return strings.Join(via, ",")
}

// advertised32s are the /32s node n advertises.
func advertised32s(t *testing.T, n *lab.Node) []string {
	var out []string
	for _, p := range bgpStatus(t, n).Advertised {
		if strings.HasSuffix(p, "/32") {
			out = append(out, p)
		}
	}
	slices.Sort(out)
	return out
}

// TestBirdServiceLocal: with a real API server (the lab's control plane)
// and a BIRD node, a Service with externalTrafficPolicy Local is
// advertised as /32s — its cluster IP, its external IP and its
// LoadBalancer address, each inside its configured range — by the node
// with its ready endpoint only, besides the ranges every node
// advertises; addresses outside the ranges, and a Service with
// externalTrafficPolicy Cluster, are not. BIRD learns the /32s from that
// node alone; they are withdrawn when the endpoint is no longer ready,
// learnt from n2 when its endpoint there becomes ready, and withdrawn
// when the Service is deleted. A BGPFilter export rule toward BIRD keeps
// the external /32 from it, as it would any route; the other node keeps
// its peer's /32s out of its FIB, as it does the ranges.
func TestBirdServiceLocal(t *testing.T) {
	bins := kubetest.BinDir(t)
	// The API server's etcd in the fabric, not in n1's tortied: the
	// nodes restart to reach the API.
	l := up(t, lab.Options{Name: "tsl", Nodes: 3, Pods: 0, Mode: "native", BirdNodes: 1, EtcdMembers: 1,
		Manifest: serviceLocalConfig + toBird("no-external-32s")})
	n1, n2, n3 := l.Nodes[0], l.Nodes[1], l.Nodes[2]
	cp, err := l.StartControlPlane(bins)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			if b, err := os.ReadFile(filepath.Join(cp.Dir, "kube-apiserver.log")); err == nil {
				t.Logf("kube-apiserver log:\n%s", labtest.TailLines(string(b), 20))
			}
		}
	})
	if err := l.ConnectKubernetes(cp); err != nil {
		t.Fatal(err)
	}
	ranges := []string{lab.ServiceCIDR, "192.0.2.0/24", "198.18.0.0/24"}
	testutil.WaitFor(t, 60*time.Second, "every Service range at BIRD from both tortie nodes", func() bool {
		for _, r := range ranges {
			if serviceHosts(l, n3, r) != "10.0.1.1,10.0.1.2" {
				return false
			}
		}
		return true
	})

	kubectlApply(t, cp, serviceObjects+"---\n"+webSlice(true, false))
	kubectl(t, cp, "patch", "service", "web", "--subresource=status", "--type=merge",
		"-p", `{"status":{"loadBalancer":{"ingress":[{"ip":"198.18.0.10"},{"ip":"198.19.0.5"}]}}}`)
	kubectl(t, cp, "patch", "service", "spread", "--subresource=status", "--type=merge",
		"-p", `{"status":{"loadBalancer":{"ingress":[{"ip":"198.18.0.20"}]}}}`)
	clusterIP := kubectl(t, cp, "get", "service", "web", "-o", "jsonpath={.spec.clusterIP}")
	if !strings.HasPrefix(clusterIP, "10.") {
		t.Fatalf("web's cluster IP %q", clusterIP)
	}
	web := []string{clusterIP + "/32", "192.0.2.10/32", "198.18.0.10/32"}
	slices.Sort(web)
	atBird := []string{clusterIP + "/32", "198.18.0.10/32"} // the filter keeps 192.0.2.10/32 back

	// The endpoint on n1 is ready: n1 alone advertises web's addresses
	// inside the ranges, and nothing of spread.
	testutil.WaitFor(t, 60*time.Second, "web's /32s at BIRD from n1", func() bool {
		for _, p := range atBird {
			if serviceHosts(l, n3, p) != "10.0.1.1" {
				return false
			}
		}
		return true
	})
	if got := advertised32s(t, n1); !slices.Equal(got, web) {
		t.Errorf("n1 advertises the /32s %v, want %v", got, web)
	}
	if got := advertised32s(t, n2); len(got) != 0 {
		t.Errorf("n2, without a ready endpoint, advertises %v", got)
	}
	for _, p := range []string{"192.0.2.10/32", "198.51.100.7/32", "198.19.0.5/32", "198.18.0.20/32", "192.0.2.20/32"} {
		if !birdLacks(l, n3, p) {
			out, _ := l.Birdc(n3, "show route "+p)
			t.Errorf("BIRD has a route to %s:\n%s", p, out)
		}
	}
	for _, r := range ranges {
		if h := serviceHosts(l, n3, r); h != "10.0.1.1,10.0.1.2" {
			t.Errorf("BIRD learns range %s from %q, want both nodes", r, h)
		}
	}
	// n2 learns n1's /32s and keeps them out of its FIB, as it does the
	// ranges.
	testutil.WaitFor(t, 30*time.Second, "n1's routes accepted by n2", func() bool {
		p, ok := peerOf(t, n2, "10.0.1.1")
		return ok && p.Accepted >= uint64(len(ranges)+len(web))
	})
	for _, p := range web {
		if rt, ok := fibRoute(t, n2, p); ok {
			t.Errorf("n2 installed its peer's copy of %s: %+v", p, rt)
		}
	}

	// The endpoint on n1 no longer ready: withdrawn.
	kubectlApply(t, cp, webSlice(false, false))
	testutil.WaitFor(t, 60*time.Second, "web's /32s withdrawn at BIRD", func() bool {
		for _, p := range atBird {
			if !birdLacks(l, n3, p) {
				return false
			}
		}
		return true
	})
	if got := advertised32s(t, n1); len(got) != 0 {
		t.Errorf("n1 still advertises %v", got)
	}

	// The endpoint on n2 ready: learnt from n2 alone.
	kubectlApply(t, cp, webSlice(false, true))
	testutil.WaitFor(t, 60*time.Second, "web's /32s at BIRD from n2", func() bool {
		for _, p := range atBird {
			if serviceHosts(l, n3, p) != "10.0.1.2" {
				return false
			}
		}
		return true
	})
	if got := advertised32s(t, n2); !slices.Equal(got, web) {
		t.Errorf("n2 advertises the /32s %v, want %v", got, web)
	}

	// The Service deleted: withdrawn, the ranges stay.
	kubectl(t, cp, "delete", "service", "web")
	testutil.WaitFor(t, 60*time.Second, "web's /32s withdrawn at BIRD after its deletion", func() bool {
		for _, p := range atBird {
			if !birdLacks(l, n3, p) {
				return false
			}
		}
		return true
	})
	if got := advertised32s(t, n2); len(got) != 0 {
		t.Errorf("n2 advertises %v after the Service's deletion", got)
	}
	for _, r := range ranges {
		if h := serviceHosts(l, n3, r); h != "10.0.1.1,10.0.1.2" {
			t.Errorf("BIRD learns range %s from %q after the deletion, want both nodes", r, h)
		}
	}
}
