package apiserver

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/tortie-net/tortie/api"
	"github.com/tortie-net/tortie/datastore"
	"github.com/tortie-net/tortie/resources"
)

func serve(t *testing.T) *api.Client {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "api.sock")
	l, err := Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	srv := Serve(ctx, l, (&Server{Resources: &resources.Client{S: datastore.NewMemory()}}).Handler())
	t.Cleanup(func() { cancel(); srv.Close() })
	return api.NewClient(sock)
}

var kinds = []string{"ippools", "nodes", "bgpconfigurations", "bgppeers", "bgpfilters", "ipreservations", "felixconfigurations", "clusterinformations"}

// getAll reads every resource as `tortiectl get KIND -o json` does.
func getAll(t *testing.T, c *api.Client) map[string][]map[string]any {
	t.Helper()
	out := map[string][]map[string]any{}
	for _, k := range kinds {
		var objs []map[string]any
		if err := c.Get(k, &objs); err != nil {
			t.Fatal(err)
		}
		out[k] = objs
	}
	return out
}

// What `get` shows applies back unchanged, as a "---" stream (what
// `tortiectl get -o yaml` prints) and as a kubectl-style List; manifests
// written with any of the three apiVersions are shown as
// projectcalico.org/v3.
func TestGetApplyRoundTrip(t *testing.T) {
	var manifest strings.Builder
	for _, f := range []string{"../examples/ippool.yaml", "../examples/bgp.yaml"} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		manifest.Write(b)
		manifest.WriteString("\n---\n")
	}
	manifest.WriteString(`apiVersion: tortie.io/v1
kind: IPPool
metadata: {name: tunnel-pool, annotations: {owner: net-team}}
spec: {cidr: 10.20.0.0/22, blockSize: 28, ipipMode: CrossSubnet, disabled: true}
---
apiVersion: crd.projectcalico.org/v1
kind: Node
metadata:
  name: n7
  resourceVersion: "991"
  annotations:
    projectcalico.org/metadata: '{"labels":{"rack":"r1"}}'
spec:
  bgp: {ipv4Address: 10.0.1.7/24, ipv4IPIPTunnelAddr: 10.20.0.1, asNumber: 65010}
  ipv4VXLANTunnelAddr: 10.20.0.2
  vxlanTunnelMACAddr: "66:f9:37:c3:7e:94"
  orchRefs: [{nodeName: n7, orchestrator: k8s}]
status: {podCIDRs: [10.244.7.0/24]}
---
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: default-ipv6-ippool}
spec: {cidr: "fd00:10:244::/48", vxlanMode: Always, allowedUses: [Workload]}
---
apiVersion: projectcalico.org/v3
kind: IPReservation
metadata: {name: gateways}
spec: {reservedCIDRs: [192.168.0.1, 192.168.0.128/25]}
---
apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata: {name: tor-r2}
spec:
  peerIP: "10.0.2.254:1179"
  asNumber: "1.10"
  password: {secretKeyRef: {name: bgp-passwords, key: tor-r2}}
  filters: [no-default]
---
apiVersion: projectcalico.org/v3
kind: BGPFilter
metadata: {name: no-default}
spec: {exportV4: [{action: Reject, matchOperator: Equal, cidr: 0.0.0.0/0}], importV6: [{action: Accept, prefixLength: {max: 64}, cidr: "fd00::/8", matchOperator: In}]}
---
apiVersion: projectcalico.org/v3
kind: FelixConfiguration
metadata: {name: default}
spec: {vxlanVNI: 4096, routeRefreshInterval: 90s, failsafeInboundHostPorts: [], natPortRange: "32768:65535", bpfLogFilters: {all: tcp}}
---
apiVersion: projectcalico.org/v3
kind: ClusterInformation
metadata: {name: default}
spec: {clusterGUID: 3b2d5c, datastoreReady: true}
`)
	c := serve(t)
	n, err := c.Apply(manifest.String())
	if err != nil {
		t.Fatal(err)
	}
	first := getAll(t, c)
	total := 0
	for k, objs := range first {
		total += len(objs)
		for _, o := range objs {
			if o["apiVersion"] != resources.CalicoAPIVersion {
				t.Errorf("%s: get shows apiVersion %v", k, o["apiVersion"])
			}
		}
	}
	if total != n || len(first["nodes"]) != 2 || len(first["ippools"]) != 3 || len(first["felixconfigurations"]) != 1 {
		t.Fatalf("applied %d, got %v", n, first)
	}
	var stream strings.Builder
	var items []map[string]any
	for _, k := range kinds {
		for _, o := range first[k] {
			b, err := yaml.Marshal(o)
			if err != nil {
				t.Fatal(err)
			}
			stream.WriteString("---\n")
			stream.Write(b)
			items = append(items, o)
		}
	}
	list, err := yaml.Marshal(map[string]any{"apiVersion": "v1", "kind": "List", "items": items})
	if err != nil {
		t.Fatal(err)
	}
	for name, again := range map[string]string{"stream": stream.String(), "List": string(list)} {
		if m, err := c.Apply(again); err != nil || m != n {
			t.Fatalf("%s: re-applying get's output: %d, %v\n%s", name, m, err, again)
		}
		if second := getAll(t, c); !reflect.DeepEqual(first, second) {
			a, _ := json.Marshal(first)
			b, _ := json.Marshal(second)
			t.Fatalf("%s: round trip changed the resources\n%s\n%s", name, a, b)
		}
	}
	if got := first["nodes"][0]; got["metadata"].(map[string]any)["labels"].(map[string]any)["rack"] != "r1" {
		t.Errorf("CRD node's labels: %v", got)
	}
}

// Bad input is refused with the document and kind named, and nothing is
// written.
func TestApplyErrors(t *testing.T) {
	c := serve(t)
	_, err := c.Apply("- apiVersion: projectcalico.org/v3\n  kind: IPPool\n  metadata: {name: ok}\n  spec: {cidr: 10.1.0.0/16}\n" +
		"- apiVersion: projectcalico.org/v3\n  kind: IPPool\n  metadata: {name: gw}\n  spec: {cidr: 169.254.1.0/24}\n")
	if err == nil || !strings.Contains(err.Error(), `document 1, item 2: IPPool "gw": spec.cidr 169.254.1.0/24 overlaps with the IPv4 link-local range`) {
		t.Fatalf("got %v", err)
	}
	if objs := getAll(t, c); len(objs["ippools"]) != 0 {
		t.Fatalf("written despite the error: %v", objs)
	}
}

// Policy kinds go through the API: applied, listed, a workload endpoint
// labelled, and namespaced resources deleted by NAMESPACE/NAME.
func TestPolicyResourcesAPI(t *testing.T) {
	c := serve(t)
	n, err := c.Apply(`
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: allow-web, namespace: prod}
spec: {selector: app == 'web', ingress: [{action: Allow, protocol: TCP, destination: {ports: [80]}}]}
---
apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata: {name: n1-k8s-web-eth0, namespace: prod}
spec: {node: n1, pod: web, ipNetworks: [10.244.0.5/32]}
`)
	if err != nil || n != 2 {
		t.Fatalf("apply: %d %v", n, err)
	}
	var out map[string]any
	if err := c.Label(api.LabelRequest{Kind: "wep", Name: "prod/n1-k8s-web-eth0", Set: map[string]string{"app": "web"}}, &out); err != nil {
		t.Fatal(err)
	}
	var weps []resources.WorkloadEndpoint
	if err := c.Get("workloadendpoints", &weps); err != nil || len(weps) != 1 || weps[0].Metadata.Labels["app"] != "web" {
		t.Fatalf("workloadendpoints: %+v %v", weps, err)
	}
	if err := c.Label(api.LabelRequest{Kind: "networkpolicy", Name: "prod/allow-web", Set: map[string]string{"a": "b"}}, nil); err == nil {
		t.Error("labelled a NetworkPolicy")
	}
	var pols []map[string]any
	if err := c.Get("networkpolicies", &pols); err != nil || len(pols) != 1 {
		t.Fatalf("networkpolicies: %v %v", pols, err)
	}
	for _, d := range [][2]string{{"networkpolicies", "prod/allow-web"}, {"wep", "prod/n1-k8s-web-eth0"}} {
		if err := c.DeleteResource(d[0], d[1]); err != nil {
			t.Fatalf("delete %s %s: %v", d[0], d[1], err)
		}
	}
	if err := c.Get("networkpolicies", &pols); err != nil || len(pols) != 0 {
		t.Fatalf("after delete: %v %v", pols, err)
	}
}

// An apply that sets fields tortie keeps without acting on them says so,
// once for each field; a client written before warnings existed (which
// decodes the reply as a map of numbers) still reads how many were applied.
func TestApplyWarnings(t *testing.T) {
	c := serve(t)
	manifest := `
apiVersion: projectcalico.org/v3
kind: FelixConfiguration
metadata: {name: default}
spec: {vxlanPort: 4789, bpfEnabled: false}
---
apiVersion: projectcalico.org/v3
kind: FelixConfiguration
metadata: {name: node.n1}
spec: {vxlanPort: 4790}
---
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: pods}
spec: {cidr: 10.1.0.0/16, allowedUses: [Workload], assignmentMode: Manual}
`
	res, err := c.ApplyReport(manifest)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"accepted; tortie does not act on FelixConfiguration.spec.bpfEnabled yet",
		"accepted; tortie does not act on FelixConfiguration.spec.vxlanPort yet",
	}
	if res.Applied != 3 || !reflect.DeepEqual(res.Warnings, want) {
		t.Fatalf("applied %d, warnings %q; want 3, %q", res.Applied, res.Warnings, want)
	}
	// As a client that predates warnings asks.
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", c.Socket)
	}}}
	resp, err := hc.Post("http://tortied/v1/apply", "application/yaml", strings.NewReader(manifest))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var old map[string]int
	if err := json.NewDecoder(resp.Body).Decode(&old); err != nil || old["applied"] != 3 {
		t.Fatalf("old client: %v, %v", old, err)
	}
}
