package resources

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/tortie-net/tortie/datastore"
)

const manifest = `
apiVersion: projectcalico.org/v3
kind: IPPool
metadata:
  name: default-ipv4-ippool
spec:
  cidr: 192.168.0.0/16
  vxlanMode: Always
  natOutgoing: true
---
apiVersion: tortie.io/v1
kind: Node
metadata:
  name: n1
  labels: {route-reflector: "true"}
spec:
  bgp: {ipv4Address: 10.0.1.1/24}
`

func TestApplyAndList(t *testing.T) {
	c := Client{S: datastore.NewMemory()}
	objs, err := Decode(strings.NewReader(manifest))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Apply(context.Background(), objs); err != nil {
		t.Fatal(err)
	}
	pools, _ := c.Pools(context.Background())
	if len(pools) != 1 || pools[0].Spec.BlockSize != 26 || pools[0].Spec.IPIPMode != ModeNever || !pools[0].Spec.NATOutgoing {
		t.Fatalf("pool defaults: %+v", pools)
	}
	nodes, _ := c.Nodes(context.Background())
	if len(nodes) != 1 || nodes[0].Metadata.Labels["route-reflector"] != "true" {
		t.Fatalf("nodes: %+v", nodes)
	}
}

func TestRejected(t *testing.T) {
	pool := func(name, spec string) string {
		return "apiVersion: tortie.io/v1\nkind: IPPool\nmetadata: {name: " + name + "}\nspec: " + spec + "\n"
	}
	for _, c := range []struct{ in, want string }{
		{pool("a", "{cidr: 10.0.0.0/8, blockSize: 19}"), "out of range 20-32"},
		{pool("a", "{cidr: 10.0.0.0/8, blockSize: 33}"), "out of range 20-32"},
		{pool("a", "{cidr: 10.0.0.0/8, ipipMode: Always, vxlanMode: CrossSubnet}"), "cannot both"},
		{pool("a", "{cidr: 10.0.0.0/8, ipipMode: Sometimes}"), "want Never, Always or CrossSubnet"},
		{pool("a", "{cidr: 10.0.0.1/8}"), "host bits"},
		{pool("a", "{cidr: \"fd00::/64\"}") + "---\n" + pool("b", "{cidr: \"fd00::/48\"}"), "overlaps"},
		{pool("a", "{cidr: 10.0.0.0/24, blockSize: 22}"), "larger than the pool"},
		{pool("a", "{cidr: 10.0.0.0/8, nodeSelector: \"zone ==\"}"), "nodeSelector"},
		{pool("a", "{cidr: 10.0.0.0/8, bogus: 1}"), "unknown field"},
		{pool("a", "{cidr: 10.0.0.0/16}") + "---\n" + pool("b", "{cidr: 10.0.128.0/17}"), "overlaps"},
		{pool("x", "{cidr: 10.1.0.0/16}") + "---\n" + pool("y", "{cidr: 10.2.0.0/16, blockSize: 40}"), "out of range"},
		{"apiVersion: v1\nkind: IPPool", "apiVersion"},
		{"apiVersion: tortie.io/v1\nkind: Pod", "unknown kind"},
		{"{{{", "document 1"},
	} {
		c2 := Client{S: datastore.NewMemory()}
		objs, err := Decode(strings.NewReader(c.in))
		if err == nil {
			err = c2.Apply(context.Background(), objs)
		}
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: %v, want error with %q", c.in, err, c.want)
		}
		// Nothing half-written.
		if pools, _ := c2.Pools(context.Background()); len(pools) != 0 {
			t.Errorf("%q: %d pools written despite the error", c.in, len(pools))
		}
	}
}

func TestOverlapWithStored(t *testing.T) {
	c := Client{S: datastore.NewMemory()}
	ctx := context.Background()
	objs, _ := Decode(strings.NewReader("apiVersion: tortie.io/v1\nkind: IPPool\nmetadata: {name: a}\nspec: {cidr: 10.244.0.0/16}\n"))
	if err := c.Apply(ctx, objs); err != nil {
		t.Fatal(err)
	}
	objs, _ = Decode(strings.NewReader("apiVersion: tortie.io/v1\nkind: IPPool\nmetadata: {name: b}\nspec: {cidr: 10.244.1.0/24}\n"))
	if err := c.Apply(ctx, objs); err == nil || !strings.Contains(err.Error(), "overlaps") {
		t.Fatalf("overlap with a stored pool: %v", err)
	}
	// Re-applying the same pool with new settings is fine; a new CIDR is not.
	objs, _ = Decode(strings.NewReader("apiVersion: tortie.io/v1\nkind: IPPool\nmetadata: {name: a}\nspec: {cidr: 10.244.0.0/16, disabled: true}\n"))
	if err := c.Apply(ctx, objs); err != nil {
		t.Fatal(err)
	}
	objs, _ = Decode(strings.NewReader("apiVersion: tortie.io/v1\nkind: IPPool\nmetadata: {name: a}\nspec: {cidr: 10.245.0.0/16}\n"))
	if err := c.Apply(ctx, objs); err == nil {
		t.Fatal("changing a pool's CIDR was accepted")
	}
}

// FuzzDecode: any input decodes to valid objects or to an error, never a
// panic; what decodes, written back out as a list, decodes to the same.
func FuzzDecode(f *testing.F) {
	f.Add(manifest)
	f.Add(goodRecords)
	f.Add(policyManifest)
	for _, in := range forms {
		f.Add(in)
	}
	f.Add("apiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: List, items: []}\n")
	f.Add("apiVersion: projectcalico.org/v3\nkind: IPPoolList\nitems:\n- metadata: {name: p}\n  spec: {cidr: 169.254.0.0/16}\n")
	f.Add("- 5\n- [a]\n")
	f.Fuzz(func(t *testing.T, in string) {
		objs, err := Decode(strings.NewReader(in))
		if err != nil {
			if len(objs) != 0 {
				t.Fatalf("objects and an error: %v", err)
			}
			return
		}
		for _, o := range objs {
			if err := o.Validate(); err != nil {
				t.Fatalf("decoded object does not validate: %v", err)
			}
		}
		b, err := json.Marshal(objs)
		if err != nil {
			t.Fatal(err)
		}
		again, err := Decode(bytes.NewReader(b))
		if err != nil {
			t.Fatalf("re-encoded %s does not decode: %v", b, err)
		}
		if b2, _ := json.Marshal(again); !bytes.Equal(b, b2) {
			t.Fatalf("round trip changed\n%s\n%s", b, b2)
		}
	})
}

func TestBGPResources(t *testing.T) {
	f, err := os.Open("../examples/bgp.yaml")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	objs, err := Decode(f)
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range objs {
		if err := o.Validate(); err != nil {
			t.Fatal(err)
		}
	}
	conf := objs[0].(*BGPConfiguration)
	if conf.MeshEnabled() || conf.ASN() != 64512 || conf.MeshRestartTime() != 120*time.Second {
		t.Fatalf("configuration %+v", conf.Spec)
	}
	tor := objs[2].(*BGPPeer)
	if tor.Spec.Password.Value != "change-me" || tor.Spec.KeepaliveTime.Duration != 30*time.Second || tor.Global() {
		t.Fatalf("peer %+v", tor.Spec)
	}
	for doc, want := range map[string]string{
		"kind: BGPPeer\nmetadata: {name: x}\nspec: {asNumber: 65001, peerSelector: all()}":                                                                                      "spec.asNumber must be empty when spec.peerSelector is set",
		"kind: BGPPeer\nmetadata: {name: x}\nspec: {peerIP: 10.0.0.1}":                                                                                                          "asNumber is required",
		"kind: BGPPeer\nmetadata: {name: x}\nspec: {peerIP: nope, asNumber: 1}":                                                                                                 `"nope"`,
		"kind: BGPPeer\nmetadata: {name: x}\nspec: {peerIP: \"10.0.0.1:0\", asNumber: 1}":                                                                                       "port 1 to 65535",
		"kind: BGPPeer\nmetadata: {name: x}\nspec: {peerSelector: \"a ==\", node: n1}":                                                                                          "peerSelector",
		"kind: BGPPeer\nmetadata: {name: x}\nspec: {peerIP: 10.0.0.1, asNumber: 1, password: {secretKeyRef: {name: s}}}":                                                        "want the secret's name and key",
		"kind: BGPPeer\nmetadata: {name: x}\nspec: {peerIP: 10.0.0.1, asNumber: 1, password: {secretkeyref: {name: s, key: k}}}":                                                "secretkeyref: unknown field (want value or secretKeyRef)",
		"kind: BGPPeer\nmetadata: {name: x}\nspec: {peerIP: 10.0.0.1, asNumber: 1, password: {secretKeyRef: {name: s, Key: k}}}":                                                "secretKeyRef: Key: unknown field",
		"kind: BGPPeer\nmetadata: {name: x}\nspec: {peerIP: 10.0.0.1, asNumber: 1, password: {value: a, secretKeyRef: {name: s, key: k}}}":                                      "exactly one of them",
		"kind: BGPPeer\nmetadata: {name: x}\nspec: {localWorkloadSelector: all()}":                                                                                              "spec.asNumber is required when spec.localWorkloadSelector is set",
		"kind: BGPPeer\nmetadata: {name: x}\nspec: {localWorkloadSelector: all(), asNumber: 1, peerIP: 10.0.0.1}":                                                               "spec.peerIP must be empty when spec.localWorkloadSelector is set",
		"kind: BGPPeer\nmetadata: {name: x}\nspec: {reachableBy: 10.0.0.1}":                                                                                                     "spec.reachableBy must be empty when spec.peerIP is empty",
		"kind: BGPPeer\nmetadata: {name: x}\nspec: {peerIP: \"fd00::1\", asNumber: 1, reachableBy: 10.0.0.1}":                                                                   "different IP families",
		"kind: BGPPeer\nmetadata: {name: x}\nspec: {peerIP: 10.0.0.1, asNumber: 1, keepOriginalNextHop: true, nextHopMode: Self}":                                               "keepOriginalNextHop is deprecated",
		"kind: BGPPeer\nmetadata: {name: x}\nspec: {peerIP: 10.0.0.1, asNumber: 1, nextHopMode: self}":                                                                          `spec.nextHopMode "self": want Auto, Self or Keep`,
		"kind: BGPPeer\nmetadata: {name: X}\nspec: {peerIP: 10.0.0.1, asNumber: 1}":                                                                                             "lower-case letters",
		"kind: BGPConfiguration\nmetadata: {name: default}\nspec: {nodeToNodeMeshEnabled: false, nodeMeshPassword: {value: x}}":                                                 "spec.nodeMeshPassword cannot be set when spec.nodeToNodeMeshEnabled is false",
		"kind: BGPConfiguration\nmetadata: {name: default}\nspec: {communities: [{name: a, value: \"1:2\"}]}":                                                                   "spec.communities are defined but not used",
		"kind: BGPConfiguration\nmetadata: {name: default}\nspec: {prefixAdvertisements: [{cidr: 10.0.0.0/8, communities: [b]}]}":                                               "neither a community value",
		"kind: BGPConfiguration\nmetadata: {name: default}\nspec: {communities: [{name: a, value: \"65536:2\"}], prefixAdvertisements: [{cidr: 10.0.0.0/8, communities: [a]}]}": `spec.communities[0].value "65536:2"`,
		"kind: BGPConfiguration\nmetadata: {name: default}\nspec: {logSeverityScreen: info}":                                                                                    `spec.logSeverityScreen "info": want Trace, Debug, Info, Warning, Error or Fatal`,
		"kind: BGPConfiguration\nmetadata: {name: default}\nspec: {serviceClusterIPs: [{cidr: 10.96.0.1/12}]}":                                                                  "not strictly masked",
		"kind: BGPConfiguration\nmetadata: {name: default}\nspec: {listenPort: 70000}":                                                                                          "listenPort",
		"kind: Node\nmetadata: {name: n}\nspec: {bgp: {ipv4Address: 10.0.0.1/24, routeReflectorClusterID: x}}":                                                                  `"x"`,
		"kind: Node\nmetadata: {name: n}\nspec: {bgp: {ipv4Address: 10.0.0.1/24, routeReflectorClusterID: \"fd00::1\"}}":                                                        "routeReflectorClusterID",
	} {
		objs, err := Decode(strings.NewReader("apiVersion: projectcalico.org/v3\n" + doc))
		if err == nil {
			err = objs[0].Validate()
		}
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: got %v, want %q", doc, err, want)
		}
	}
}
