package resources

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/tortie-net/tortie/datastore"
)

// calicoExamples are the manifests under testdata: Calico's documented
// examples (written here in substance) and what Calico refuses. refused is
// the error wanted ("": accepted); ignored lists the fields the manifest
// sets that tortie keeps without acting on them, as Warnings names them.
var calicoExamples = []struct {
	file    string
	refused string
	ignored []string
}{
	{"ippool-reference.yaml", "", nil},
	{"ippool-ipip-cross-subnet.yaml", "", nil},
	{"ippool-vxlan-always.yaml", "", nil},
	{"ippool-topology.yaml", "", nil},
	{"ippool-block-size.yaml", "", nil},
	{"ippool-disabled-no-nat.yaml", "", nil},
	{"ippool-loadbalancer.yaml", "", []string{"IPPool.spec.allowedUses LoadBalancer"}},
	{"ippool-list-without-kind.yaml", "", nil},
	{"ippool-calicoctl-list.yaml", "", nil},
	{"ippool-ipv6.yaml", "", []string{"IPPool.spec.cidr IPv6"}},
	{"ippool-manual.yaml", "", nil},
	{"ippool-tunnel-only.yaml", "", nil},
	{"ipreservation-reference.yaml", "", []string{"IPReservation.spec.reservedCIDRs IPv6"}},
	{"bgpconfiguration-reference.yaml", "", []string{"BGPConfiguration.spec.logSeverityScreen"}},
	{"bgpconfiguration-no-mesh.yaml", "", nil},
	{"bgpconfiguration-service-ips.yaml", "", []string{"BGPConfiguration.spec.serviceLoadBalancerAggregation",
		"BGPConfiguration.spec.serviceClusterIPs IPv6"}},
	{"bgpconfiguration-mesh-password.yaml", "", []string{"BGPConfiguration.spec.logSeverityScreen", "BGPConfiguration.spec.nodeMeshPassword.secretKeyRef"}},
	{"bgpconfiguration-workload-peering.yaml", "", []string{"BGPConfiguration.spec.ignoredInterfaces", "BGPConfiguration.spec.localWorkloadPeeringIPV4",
		"BGPConfiguration.spec.localWorkloadPeeringIPV6", "BGPConfiguration.spec.programClusterRoutes", "BGPConfiguration.spec.ipv4NormalRoutePriority"}},
	{"bgppeer-reference.yaml", "", nil},
	{"bgppeer-passwords.yaml", "", []string{"BGPPeer.spec.password.secretKeyRef"}},
	{"bgppeer-route-reflectors.yaml", "", nil},
	{"bgppeer-global-and-rack.yaml", "", nil},
	{"bgppeer-secret.yaml", "", []string{"BGPPeer.spec.password.secretKeyRef"}},
	{"bgppeer-filters.yaml", "", []string{"BGPFilter.spec.exportV6", "BGPFilter.spec.importV6"}},
	{"bgppeer-local-workloads.yaml", "", []string{"BGPPeer.spec.localWorkloadSelector"}},
	{"bgppeer-parent-cluster.yaml", "", []string{"BGPPeer.spec.peerIP IPv6"}},
	{"bgppeer-every-field.yaml", "", []string{"BGPPeer.spec.localASNumber", "BGPPeer.spec.reachableBy", "BGPPeer.spec.reversePeering"}},
	{"bgpfilter-reference.yaml", "", []string{"BGPFilter.spec.exportV6", "BGPFilter.spec.importV6"}},
	{"bgpfilter-live-migration.yaml", "", []string{"BGPFilter.spec.exportV4.priority", "BGPFilter.spec.importV4.operations.setPriority",
		"BGPFilter.spec.exportV6", "BGPFilter.spec.importV6"}},
	{"bgpfilter-workloads.yaml", "", []string{"BGPFilter.spec.exportV6", "BGPFilter.spec.importV6"}},
	{"node-reference.yaml", "", []string{"Node.spec.bgp.ipv6Address"}},
	{"node-bare.yaml", "", nil},
	{"node-calico-node.yaml", "", []string{"Node.spec.ipv6VXLANTunnelAddr", "Node.spec.vxlanTunnelMACAddrV6", "Node.spec.orchRefs",
		"Node.spec.wireguard", "Node.spec.addresses", "Node.spec.interfaces", "Node.status.wireguardPublicKey", "Node.status.podCIDRs"}},
	{"felixconfiguration-reference.yaml", "", []string{"FelixConfiguration.spec.chainInsertMode", "FelixConfiguration.spec.ipv6Support",
		"FelixConfiguration.spec.ipipMTU"}},
	{"felixconfiguration-selector.yaml", "", []string{"FelixConfiguration.spec.nodeSelector", "FelixConfiguration.spec.logSeverityScreen",
		"FelixConfiguration.spec.bpfEnabled"}},
	{"felixconfiguration-node.yaml", "", []string{"FelixConfiguration.spec.logSeverityScreen", "FelixConfiguration.spec.reportingInterval",
		"FelixConfiguration.spec.wireguardEnabled", "FelixConfiguration.spec.wireguardEnabledV6"}},
	{"felixconfiguration-host-protection.yaml", "", []string{"FelixConfiguration.spec.logSeverityScreen", "FelixConfiguration.spec.defaultEndpointToHostAction",
		"FelixConfiguration.spec.failsafeInboundHostPorts", "FelixConfiguration.spec.failsafeOutboundHostPorts", "FelixConfiguration.spec.reportingInterval",
		"FelixConfiguration.spec.ipipEnabled"}},
	{"felixconfiguration-routing.yaml", "", []string{"FelixConfiguration.spec.featureDetectOverride", "FelixConfiguration.spec.healthTimeoutOverrides",
		"FelixConfiguration.spec.deviceRouteSourceAddress", "FelixConfiguration.spec.istioDSCPMark", "FelixConfiguration.spec.mtuIfacePattern",
		"FelixConfiguration.spec.natOutgoingAddress", "FelixConfiguration.spec.natPortRange", "FelixConfiguration.spec.removeExternalRoutes",
		"FelixConfiguration.spec.routeRefreshInterval", "FelixConfiguration.spec.routeSource", "FelixConfiguration.spec.routeTableRanges",
		"FelixConfiguration.spec.kubeNodePortRanges", "FelixConfiguration.spec.bpfConntrackTimeouts", "FelixConfiguration.spec.bpfEnabled",
		"FelixConfiguration.spec.bpfExternalServiceMode", "FelixConfiguration.spec.bpfKubeProxyIptablesCleanupEnabled", "FelixConfiguration.spec.bpfLogFilters",
		"FelixConfiguration.spec.vxlanEnabled", "FelixConfiguration.spec.vxlanMTU", "FelixConfiguration.spec.vxlanMTUV6", "FelixConfiguration.spec.vxlanPort",
		"FelixConfiguration.spec.vxlanVNI", "FelixConfiguration.spec.ipipEnabled", "FelixConfiguration.spec.ipipMTU", "FelixConfiguration.spec.wireguardMTU"}},
	{"felixconfiguration-list.yaml", "", []string{"FelixConfiguration.spec.logSeverityScreen", "FelixConfiguration.spec.reportingInterval",
		"FelixConfiguration.spec.vxlanEnabled", "FelixConfiguration.spec.ipipEnabled"}},
	{"clusterinformation-default.yaml", "", []string{"ClusterInformation.spec.clusterGUID", "ClusterInformation.spec.clusterType",
		"ClusterInformation.spec.calicoVersion", "ClusterInformation.spec.datastoreReady", "ClusterInformation.spec.variant"}},

	{"refused-ippool-both-encapsulations.yaml", `IPPool "both": spec.ipipMode and spec.vxlanMode cannot both be enabled`, nil},
	{"refused-ippool-allowed-use.yaml", `IPPool "pods": spec.allowedUses[0] "Pods": want Workload, Tunnel or LoadBalancer`, nil},
	{"refused-ippool-loadbalancer-and-workload.yaml", `IPPool "mixed": spec.allowedUses: LoadBalancer cannot be combined with Workload or Tunnel`, nil},
	{"refused-ippool-loadbalancer-encapsulated.yaml", `IPPool "lb": spec.allowedUses: a LoadBalancer pool cannot have IPIP or VXLAN enabled`, nil},
	{"refused-ippool-tunnel-namespace-selector.yaml", `IPPool "tunnels": spec.namespaceSelector: a pool for Tunnel addresses cannot have a namespaceSelector`, nil},
	{"refused-ippool-block-size.yaml", `IPPool "big-blocks": spec.blockSize 19 out of range 20-32`, nil},
	{"refused-ippool-ipv6-ipip.yaml", `IPPool "v6": spec.ipipMode Always: IPIP is not supported on an IPv6 pool`, nil},
	{"refused-ippool-v1-ipip.yaml", `IPPool "old": spec.ipip: unknown field`, nil},
	{"refused-ippool-assignment-mode.yaml", `IPPool "pods": spec.assignmentMode "manual": want Automatic or Manual`, nil},
	{"refused-ipreservation-cidr.yaml", `IPReservation "bad": spec.reservedCIDRs[0] "10.0.0.300": not an IP address or CIDR`, nil},
	{"refused-bgppeer-selector-and-asnumber.yaml", `BGPPeer "rr": spec.asNumber must be empty when spec.peerSelector is set`, nil},
	{"refused-bgppeer-asnumber.yaml", `BGPPeer "tor": spec.asNumber: "1.2.3": want an AS number`, nil},
	{"refused-bgppeer-node-and-selector.yaml", `BGPPeer "tor": spec.node and spec.nodeSelector cannot both be set`, nil},
	{"refused-bgppeer-peerip-and-selector.yaml", `BGPPeer "tor": spec.peerIP and spec.peerSelector cannot both be set`, nil},
	{"refused-bgpfilter-action.yaml", `BGPFilter "f": spec.exportV4[0].action "Allow": want Accept or Reject`, nil},
	{"refused-bgpfilter-operator.yaml", `BGPFilter "f": spec.importV4[0].matchOperator "Contains": want Equal, NotEqual, In or NotIn`, nil},
	{"refused-bgpfilter-cidr-without-operator.yaml", `BGPFilter "f": spec.importV4[0].matchOperator is required when cidr is set`, nil},
	{"refused-bgpfilter-family.yaml", `BGPFilter "f": spec.importV4[0].cidr "5000::/64": not an IPv4 address or CIDR`, nil},
	{"refused-bgpfilter-operations-on-reject.yaml", `BGPFilter "f": spec.exportV4[0].operations may only be used with action Accept`, nil},
	{"refused-bgpconfiguration-mesh-off.yaml", `BGPConfiguration "default": spec.nodeMeshMaxRestartTime cannot be set when spec.nodeToNodeMeshEnabled is false`, nil},
	{"refused-felixconfiguration-selector-on-default.yaml", `FelixConfiguration "default": spec.nodeSelector must not be set on the "default" FelixConfiguration`, nil},
	{"refused-felixconfiguration-type.yaml", `FelixConfiguration "default": spec.vxlanPort: want a whole number, got a string`, nil},
	{"refused-felixconfiguration-enum.yaml", `FelixConfiguration "default": spec.routeSource "Kernel": want WorkloadIPs or CalicoIPAM`, nil},
	{"refused-felixconfiguration-unknown-field.yaml", `FelixConfiguration "default": spec.vxlanVni: unknown field`, nil},
	{"refused-node-empty-bgp.yaml", `Node "n1": spec.bgp is empty`, nil},
}

// Each example is accepted or refused as Calico would; an accepted one
// warns of exactly the fields tortie does not act on yet, and goes through
// the datastore and back: what `get` shows of it (JSON from the API, YAML
// from tortiectl) decodes to the same objects.
func TestCalicoExamples(t *testing.T) {
	files, err := filepath.Glob("testdata/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		if !slices.ContainsFunc(calicoExamples, func(e struct {
			file    string
			refused string
			ignored []string
		}) bool {
			return e.file == filepath.Base(f)
		}) {
			t.Errorf("%s is in no case", f)
		}
	}
	for _, c := range calicoExamples {
		t.Run(c.file, func(t *testing.T) {
			b, err := os.ReadFile(filepath.Join("testdata", c.file))
			if err != nil {
				t.Fatal(err)
			}
			objs, err := Decode(bytes.NewReader(b))
			if c.refused != "" {
				if err == nil || !strings.Contains(err.Error(), c.refused) {
					t.Fatalf("got %v, want refused with %q", err, c.refused)
				}
				return
			}
			if err != nil {
				t.Fatalf("refused: %v", err)
			}
			want := []string{}
			for _, f := range c.ignored {
				want = append(want, "accepted; tortie does not act on "+f+" yet")
			}
			if got := Warnings(objs); !reflect.DeepEqual(got, want) {
				t.Errorf("warnings\n got %q\nwant %q", got, want)
			}
			roundTrip(t, objs)
		})
	}
}

// roundTrip applies objs to a store, reads them back as `get` does and
// checks that what get shows decodes to the same objects, from JSON and
// from YAML.
func roundTrip(t *testing.T, objs []Object) {
	t.Helper()
	ctx := context.Background()
	c := Client{S: datastore.NewMemory()}
	if err := c.Apply(ctx, objs); err != nil {
		t.Fatalf("apply: %v", err)
	}
	byName := func(objs []Object) map[string]string {
		out := map[string]string{}
		for _, o := range objs {
			b, err := json.Marshal(o)
			if err != nil {
				t.Fatal(err)
			}
			out[o.key()] = string(b)
		}
		return out
	}
	want := byName(objs)
	var shown []Object
	seen := map[string]bool{}
	for _, o := range objs {
		kind := reflect.TypeOf(o).Elem().Name()
		if seen[kind] {
			continue
		}
		seen[kind] = true
		got, err := c.List(ctx, kind)
		if err != nil {
			t.Fatal(err)
		}
		js, err := json.Marshal(got)
		if err != nil {
			t.Fatal(err)
		}
		// What tortiectl get -o yaml prints: each object from the API's
		// JSON, as YAML.
		var generic []map[string]any
		if err := json.Unmarshal(js, &generic); err != nil {
			t.Fatal(err)
		}
		var stream strings.Builder
		for _, g := range generic {
			y, err := yaml.Marshal(g)
			if err != nil {
				t.Fatal(err)
			}
			stream.WriteString("---\n")
			stream.Write(y)
		}
		fromJSON, err := Decode(bytes.NewReader(js))
		if err != nil {
			t.Fatalf("get's JSON does not apply back: %v\n%s", err, js)
		}
		fromYAML, err := Decode(strings.NewReader(stream.String()))
		if err != nil {
			t.Fatalf("get's YAML does not apply back: %v\n%s", err, stream.String())
		}
		if a, b := byName(fromJSON), byName(fromYAML); !reflect.DeepEqual(a, b) {
			t.Fatalf("get's YAML and JSON differ\n%v\n%v", a, b)
		}
		shown = append(shown, fromJSON...)
	}
	if got := byName(shown); !reflect.DeepEqual(got, want) {
		t.Fatalf("round trip changed the resources\n got %v\nwant %v", got, want)
	}
	for i, o := range objs {
		for _, s := range shown {
			if s.key() == o.key() && !reflect.DeepEqual(s, o) {
				t.Errorf("object %d: decoded from get's output %+v, applied %+v", i, s, o)
			}
		}
	}
}
