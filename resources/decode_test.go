package resources

import (
	"encoding/json"
	"strings"
	"testing"
)

// The same pool and node, in every form Decode takes.
var forms = map[string]string{
	"stream": `
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: pods}
spec: {cidr: 10.244.0.0/16, vxlanMode: Always}
---
apiVersion: tortie.io/v1
kind: Node
metadata: {name: n1, labels: {zone: a}}
spec: {bgp: {ipv4Address: 10.0.1.1/24}}
`,
	"stream with markers and comments": `--- # pools
apiVersion: projectcalico.org/v3
kind: IPPool
metadata:
  name: pods
spec:
  cidr: 10.244.0.0/16
  vxlanMode: Always
...
---
# the node
---
apiVersion: projectcalico.org/v3
kind: Node
metadata:
  name: n1
  labels:
    zone: a
spec:
  bgp:
    ipv4Address: 10.0.1.1/24
`,
	"JSON documents": `{"apiVersion":"projectcalico.org/v3","kind":"IPPool","metadata":{"name":"pods"},"spec":{"cidr":"10.244.0.0/16","vxlanMode":"Always"}}
---
{"apiVersion":"projectcalico.org/v3","kind":"Node","metadata":{"name":"n1","labels":{"zone":"a"}},"spec":{"bgp":{"ipv4Address":"10.0.1.1/24"}}}`,
	"JSON array": `[{"apiVersion":"projectcalico.org/v3","kind":"IPPool","metadata":{"name":"pods"},"spec":{"cidr":"10.244.0.0/16","vxlanMode":"Always"}},
 {"apiVersion":"projectcalico.org/v3","kind":"Node","metadata":{"name":"n1","labels":{"zone":"a"}},"spec":{"bgp":{"ipv4Address":"10.0.1.1/24"}}}]`,
	"YAML sequence": `
- apiVersion: projectcalico.org/v3
  kind: IPPool
  metadata: {name: pods}
  spec: {cidr: 10.244.0.0/16, vxlanMode: Always}
- apiVersion: projectcalico.org/v3
  kind: Node
  metadata: {name: n1, labels: {zone: a}}
  spec: {bgp: {ipv4Address: 10.0.1.1/24}}
`,
	// As kubectl prints a list, here of Calico's CRD objects: Kubernetes
	// metadata, and the resource's own labels in Calico's annotation.
	"kind: List of CRD objects": `
apiVersion: v1
kind: List
metadata: {resourceVersion: ""}
items:
- apiVersion: crd.projectcalico.org/v1
  kind: IPPool
  metadata:
    annotations:
      projectcalico.org/metadata: '{"uid":"1ba06317-30af-4017-9665-9e47f1f20a62","creationTimestamp":"2024-03-21T06:17:28Z"}'
      kubectl.kubernetes.io/last-applied-configuration: '{"apiVersion":"crd.projectcalico.org/v1"}'
    creationTimestamp: "2024-03-21T06:17:28Z"
    generation: 1
    name: pods
    resourceVersion: "1281"
    uid: e6ffc1cb-c7a3-4236-9dd6-bf7b7fc3ac92
    managedFields:
    - {apiVersion: crd.projectcalico.org/v1, fieldsType: FieldsV1, manager: calicoctl, operation: Update}
  spec:
    cidr: 10.244.0.0/16
    vxlanMode: Always
- apiVersion: crd.projectcalico.org/v1
  kind: Node
  metadata:
    annotations:
      projectcalico.org/metadata: '{"labels":{"zone":"a"}}'
    labels: {storage-only: "x"}
    name: n1
    resourceVersion: "77"
  spec:
    bgp: {ipv4Address: 10.0.1.1/24}
`,
	// As calicoctl prints a list: a <Kind>List (its items need not repeat
	// their kind), with server-set metadata.
	"IPPoolList and a NodeList": `
apiVersion: projectcalico.org/v3
kind: IPPoolList
metadata: {resourceVersion: "1306"}
items:
- apiVersion: projectcalico.org/v3
  kind: IPPool
  metadata:
    creationTimestamp: "2024-03-21T06:17:28Z"
    name: pods
    resourceVersion: "1281"
    uid: 1ba06317-30af-4017-9665-9e47f1f20a62
  spec:
    cidr: 10.244.0.0/16
    vxlanMode: Always
---
apiVersion: projectcalico.org/v3
kind: NodeList
items:
- metadata: {name: n1, labels: {zone: a}}
  spec: {bgp: {ipv4Address: 10.0.1.1/24}}
`,
}

const formsWant = `[{"apiVersion":"projectcalico.org/v3","kind":"IPPool","metadata":{"name":"pods"},"spec":{"cidr":"10.244.0.0/16","blockSize":26,"ipipMode":"Never","vxlanMode":"Always",` +
	`"allowedUses":["Workload","Tunnel"],"assignmentMode":"Automatic"}},` +
	`{"apiVersion":"projectcalico.org/v3","kind":"Node","metadata":{"name":"n1","labels":{"zone":"a"}},"spec":{"bgp":{"ipv4Address":"10.0.1.1/24"}}}]`

func TestDecodeForms(t *testing.T) {
	for name, in := range forms {
		objs, err := Decode(strings.NewReader(in))
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		b, _ := json.Marshal(objs)
		if string(b) != formsWant {
			t.Errorf("%s:\n got %s\nwant %s", name, b, formsWant)
		}
	}
}

// Annotations of a v3 object are kept; those of a CRD object come from
// Calico's metadata annotation, as Calico reads them.
func TestDecodeAnnotations(t *testing.T) {
	objs, err := Decode(strings.NewReader(`
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: a, annotations: {owner: team-a}}
spec: {cidr: 10.1.0.0/16}
---
apiVersion: crd.projectcalico.org/v1
kind: IPPool
metadata:
  name: b
  annotations:
    owner: storage-only
    projectcalico.org/metadata: '{"annotations":{"owner":"team-b"},"labels":{"tier":"gold"}}'
spec: {cidr: 10.2.0.0/16}
`))
	if err != nil {
		t.Fatal(err)
	}
	a, b := objs[0].(*IPPool), objs[1].(*IPPool)
	if a.Metadata.Annotations["owner"] != "team-a" || b.Metadata.Annotations["owner"] != "team-b" ||
		len(b.Metadata.Annotations) != 1 || b.Metadata.Labels["tier"] != "gold" || b.APIVersion != CalicoAPIVersion {
		t.Fatalf("a %+v, b %+v", a.Metadata, b.Metadata)
	}
}

func TestDecodeErrors(t *testing.T) {
	pool := "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: p}\nspec: {cidr: 10.1.0.0/16}\n"
	for _, c := range []struct{ in, want string }{
		{"- " + strings.TrimSuffix(strings.ReplaceAll(pool, "\n", "\n  "), "  ") + "- 5\n", "document 1, item 2: want a resource (a mapping with apiVersion, kind, metadata and spec), got a number"},
		{"- apiVersion: projectcalico.org/v3\n  kind: Pod\n", `document 1, item 1: unknown kind "Pod"`},
		{pool + "---\n" + "[1, 2]", "document 2, item 1: want a resource"},
		{pool + "---\n" + pool + "---\napiVersion: v1\nkind: List\nitems:\n- " + strings.ReplaceAll(strings.ReplaceAll(pool, "\n", "\n  "), "10.1.0.0", "10.1.0.1"), `document 3, item 1: IPPool "p": spec.cidr 10.1.0.1/16 is not strictly masked`},
		{"apiVersion: v1\nkind: List\nitems: {a: 1}\n", "List items: want a list of resources, got a mapping"},
		{"apiVersion: v1\nkind: List\n", "List has no items"},
		{"apiVersion: projectcalico.org/v3\nkind: IPPoolList\nitems:\n- kind: Node\n  metadata: {name: n}\n", "document 1, item 1: a Node in a IPPoolList"},
		{"apiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: List, items: []}\n", "lists do not nest"},
		{"apiVersion: v1\nkind: List\nitems:\n- {kind: IPPool, metadata: {name: p}, spec: {cidr: 10.1.0.0/16}}\n", "document 1, item 1: apiVersion is missing"},
		{"just text", "document 1: want a resource (a mapping with apiVersion, kind, metadata and spec), got a string"},
		{"apiVersion: projectcalico.org/v3\nkind: [IPPool]\n", "kind: want a string, got a list"},
		{"apiVersion: projectcalico.org/v3\nmetadata: {name: p}\n", "kind is missing"},
		{strings.Replace(pool, "{cidr: 10.1.0.0/16}", "{cidr: 10.1.0.0/16, blockSize: twenty}", 1), `document 1: IPPool "p": spec.blockSize: want a whole number, got a string`},
		{strings.Replace(pool, "{cidr: 10.1.0.0/16}", "{cidr: 10.1.0.0/16, natOutgoing: [x]}", 1), "spec.natOutgoing: want true or false, got an array"},
		{"apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata: {name: x}\nspec: {peerIP: 10.0.0.1, asNumber: 4294967296}\n", `spec.asNumber: want an AS number: 0 to 4294967295, or "<high>.<low>"`},
		{"apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata: {name: x}\nspec: {peerIP: 10.0.0.1, asNumber: \"1.65536\"}\n", `spec.asNumber: "1.65536": want an AS number`},
		{"apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata: {name: x}\nspec: {peerIP: 10.0.0.1, asNumber: 1, keepaliveTime: soon}\n", `spec.keepaliveTime: duration "soon": want a duration`},
		{"apiVersion: projectcalico.org/v3\nkind: Node\nmetadata: {name: x}\nspec: {bgp: {ipv4Address: 10.0.0.1/24, colour: red}}\n", `Node "x": spec.bgp.colour: unknown field`},
		{"apiVersion: projectcalico.org/v3\nkind: FelixConfiguration\nmetadata: {name: default}\nspec: {vxlanPort: \"4789x\"}\n", `FelixConfiguration "default": spec.vxlanPort: want a whole number, got a string`},
		{"apiVersion: projectcalico.org/v3\nkind: BGPFilter\nmetadata: {name: f}\nspec: {exportV4: [{action: Accept}, {action: [Reject]}]}\n", `BGPFilter "f": spec.exportV4[1].action: want a string, got an array`},
		{strings.Replace(pool, "metadata: {name: p}", "metadata: {name: p, namespace: default}", 1), `IPPool "p": metadata.namespace: unknown field`},
		{strings.Replace(pool, "metadata: {name: p}", "metadata: [p]", 1), "metadata: want a mapping, got a list"},
		{strings.Replace(pool, "{cidr: 10.1.0.0/16}", "{CIDR: 10.1.0.0/16}", 1), `IPPool "p": spec.CIDR: unknown field`},
		{strings.Replace(pool, "metadata: {name: p}", "metadata: {Name: p}", 1), `metadata.Name: unknown field`},
		{"apiVersion: crd.projectcalico.org/v1\nkind: IPPool\nmetadata: {name: p, annotations: {projectcalico.org/metadata: '{'}}\nspec: {cidr: 10.1.0.0/16}\n", "projectcalico.org/metadata"},
		{"apiVersion: projectcalico.org/v3\nkind: IPPool\nkind: Node\n", "document 1: not valid YAML or JSON"},
		{"---\n# nothing\n---\n", "no resources in input"},
	} {
		_, err := Decode(strings.NewReader(c.in))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q:\n got %v\nwant an error with %q", c.in, err, c.want)
			continue
		}
		// Errors speak of the input, not of Go.
		for _, leak := range []string{"Go value", "Go struct", "struct {", "json:", "unmarshal"} {
			if strings.Contains(err.Error(), leak) {
				t.Errorf("%q: error %q mentions %q", c.in, err, leak)
			}
		}
	}
}

// Each of the pool rules, with Calico's reason in spirit.
func TestPoolValidation(t *testing.T) {
	for _, c := range []struct{ spec, want string }{
		{"{cidr: 169.254.0.0/16}", "overlaps with the IPv4 link-local range 169.254.0.0/16 and holds 169.254.1.1, the pods' default gateway"},
		{"{cidr: 169.254.1.0/24}", "holds 169.254.1.1, the pods' default gateway"},
		{"{cidr: 169.254.8.0/24}", "overlaps with the IPv4 link-local range 169.254.0.0/16"},
		{"{cidr: 169.0.0.0/8}", "link-local"},
		{"{cidr: 127.0.0.0/16}", "overlaps with the IPv4 loopback range 127.0.0.0/8"},
		{"{cidr: 96.0.0.0/3}", "loopback"},
		{"{cidr: 224.0.0.0/24}", "overlaps with the IPv4 multicast range 224.0.0.0/4"},
		{"{cidr: 239.1.0.0/16}", "multicast"},
		{"{cidr: 10.0.0.1/16}", "is not strictly masked"},
		{"{cidr: 10.0.0.0/8, blockSize: 19}", "IPv4 block size must be between 20 and 32"},
		{"{cidr: 10.0.0.0/8, blockSize: 33}", "IPv4 block size must be between 20 and 32"},
		{"{cidr: 10.0.0.0/28}", "the pool must be at least one block"},
		{"{cidr: 10.0.0.0/8, ipipMode: Always, vxlanMode: Always}", "cannot both be enabled"},
		{"{cidr: fe80::/64}", "overlaps with the IPv6 link-local range fe80::/10"},
		{"{cidr: ff02::/64}", "IPv6 multicast"},
		{"{cidr: \"::/120\"}", "IPv6 loopback"},
		{"{cidr: fd00::/64, blockSize: 26}", "IPv6 block size must be between 116 and 128"},
		{"{cidr: fd00::/124}", "the pool must be at least one block"},
		{"{cidr: fd00::/64, ipipMode: Always}", "IPIP is not supported on an IPv6 pool"},
		{"{cidr: \"fd00::1/64\"}", "is not strictly masked"},
		{"{}", "spec.cidr is required"},
	} {
		in := "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: p}\nspec: " + c.spec + "\n"
		_, err := Decode(strings.NewReader(in))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want %q", c.spec, err, c.want)
		}
	}
	for _, name := range []string{"Pods", "pods_a", "-pods", "pods.", "a..b"} {
		in := "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: \"" + name + "\"}\nspec: {cidr: 10.1.0.0/16}\n"
		if _, err := Decode(strings.NewReader(in)); err == nil || !strings.Contains(err.Error(), "lower-case letters") {
			t.Errorf("name %q: %v", name, err)
		}
	}
	// What Calico accepts: near the refused ranges, a disabled pool
	// smaller than a block, a dotted name.
	for _, spec := range []string{"{cidr: 169.253.0.0/16}", "{cidr: 169.255.0.0/16}", "{cidr: 126.0.0.0/8}", "{cidr: 128.0.0.0/16}",
		"{cidr: 223.255.0.0/16}", "{cidr: 240.0.0.0/16}", "{cidr: 10.0.0.0/28, disabled: true}", "{cidr: 10.0.0.0/26, blockSize: 26}",
		"{cidr: fd00::/64}", "{cidr: \"fd00:1::/122\", vxlanMode: Always}"} {
		in := "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: pool.zone-a.1}\nspec: " + spec + "\n"
		if _, err := Decode(strings.NewReader(in)); err != nil {
			t.Errorf("%s refused: %v", spec, err)
		}
	}
}
