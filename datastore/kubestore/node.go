package kubestore

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/tortie-net/tortie/datastore"
	"github.com/tortie-net/tortie/resources"
)

// nodeCodec keeps Calico's Node resource on the Kubernetes Node of the same
// name, as Calico does: its addresses and BGP settings in Calico's
// projectcalico.org/* annotations (so `kubectl annotate node ...
// projectcalico.org/ASNumber=...` works as with Calico), its labels as the
// Node's labels, and what Calico has no annotation for in tortie.io/node.
// A Node tortie registers on before its kubelet does is created, and
// deleted with its record.
type nodeCodec struct{}

// Calico's annotations of a Node, and where each goes in the resource.
const (
	annIPv4Address     = "projectcalico.org/IPv4Address"
	annIPv6Address     = "projectcalico.org/IPv6Address"
	annIPIPTunnel      = "projectcalico.org/IPv4IPIPTunnelAddr"
	annASNumber        = "projectcalico.org/ASNumber"
	annRRClusterID     = "projectcalico.org/RouteReflectorClusterID"
	annVXLANTunnel     = "projectcalico.org/IPv4VXLANTunnelAddr"
	annVXLANMAC        = "projectcalico.org/VXLANTunnelMACAddr"
	annVXLANTunnelV6   = "projectcalico.org/IPv6VXLANTunnelAddr"
	annVXLANMACV6      = "projectcalico.org/VXLANTunnelMACAddrV6"
	annNode            = "tortie.io/node"        // the rest of the resource (JSON)
	annNodeLabels      = "tortie.io/node-labels" // the label keys the resource set (JSON)
	annCreatedByTortie = "tortie.io/created"     // "true": tortie made the Node object
)

// nodeAnnotations maps Calico's annotations to their place in the spec:
// under spec.bgp or spec itself, and the field.
var nodeAnnotations = []struct {
	ann   string
	bgp   bool
	field string
}{
	{annIPv4Address, true, "ipv4Address"}, {annIPv6Address, true, "ipv6Address"},
	{annIPIPTunnel, true, "ipv4IPIPTunnelAddr"}, {annASNumber, true, "asNumber"},
	{annRRClusterID, true, "routeReflectorClusterID"},
	{annVXLANTunnel, false, "ipv4VXLANTunnelAddr"}, {annVXLANMAC, false, "vxlanTunnelMACAddr"},
	{annVXLANTunnelV6, false, "ipv6VXLANTunnelAddr"}, {annVXLANMACV6, false, "vxlanTunnelMACAddrV6"},
}

// nodeRest is what tortie.io/node holds.
type nodeRest struct {
	Spec        map[string]any    `json:"spec,omitempty"`
	Status      map[string]any    `json:"status,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

func (nodeCodec) ref(rest string) (string, string, error) {
	return "", rest, objectName(rest)
}

func (nodeCodec) rest(u *unstructured.Unstructured) string { return u.GetName() }

func (nodeCodec) value(u *unstructured.Unstructured) ([]byte, bool) {
	ann := u.GetAnnotations()
	_, tortie := ann[annNode]
	_, calico := ann[annIPv4Address]
	if !tortie && !calico {
		return nil, false
	}
	var r nodeRest
	if v := ann[annNode]; v != "" {
		// An unreadable tortie.io/node leaves what the Calico
		// annotations say; the resource's checks judge the rest.
		_ = json.Unmarshal([]byte(v), &r)
	}
	spec := r.Spec
	if spec == nil {
		spec = map[string]any{}
	}
	for _, a := range nodeAnnotations {
		v, ok := ann[a.ann]
		if !ok {
			continue
		}
		to := spec
		if a.bgp {
			b, _ := spec["bgp"].(map[string]any)
			if b == nil {
				b = map[string]any{}
				spec["bgp"] = b
			}
			to = b
		}
		to[a.field] = v
	}
	own, err := json.Marshal(map[string]any{"labels": u.GetLabels(), "annotations": r.Annotations})
	if err != nil {
		return nil, false
	}
	obj := map[string]any{
		"apiVersion": resources.CRDAPIVersion, "kind": resources.KindNode,
		"metadata": map[string]any{"name": u.GetName(), "annotations": map[string]any{"projectcalico.org/metadata": string(own)}},
		"spec":     spec,
	}
	if len(r.Status) > 0 {
		obj["status"] = r.Status
	}
	b, err := json.Marshal(obj)
	return b, err == nil
}

func (nodeCodec) object(rest string, value []byte, cur *unstructured.Unstructured) (*unstructured.Unstructured, error) {
	o, err := resources.DecodeStored(resources.KindNode, datastore.KV{Key: resources.KindPrefix(resources.KindNode) + rest, Value: value})
	if err != nil {
		return nil, fmt.Errorf("kubestore: Node %s: %w", rest, err)
	}
	n := o.(*resources.Node)
	// The resource as JSON: spec and status as maps.
	var parts struct {
		Spec   map[string]any `json:"spec"`
		Status map[string]any `json:"status"`
	}
	b, err := json.Marshal(n)
	if err != nil {
		return nil, err
	}
	// Numbers as written: an AS number of 4200000000 is no float.
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	if err := dec.Decode(&parts); err != nil {
		return nil, err
	}
	var u *unstructured.Unstructured
	if cur != nil {
		u = cur.DeepCopy()
	} else {
		u = &unstructured.Unstructured{Object: map[string]any{"apiVersion": "v1", "kind": "Node", "metadata": map[string]any{}}}
		u.SetAnnotations(map[string]string{annCreatedByTortie: "true"})
	}
	ann := u.GetAnnotations()
	if ann == nil {
		ann = map[string]string{}
	}
	// Calico's annotations hold their fields; the rest keeps the others.
	bgp, _ := parts.Spec["bgp"].(map[string]any)
	for _, a := range nodeAnnotations {
		from := parts.Spec
		if a.bgp {
			from = bgp
		}
		v, ok := from[a.field]
		delete(from, a.field)
		if s := fmt.Sprint(v); ok && v != nil && s != "" && s != "0" {
			ann[a.ann] = s
		} else {
			delete(ann, a.ann)
		}
	}
	if bgp != nil && len(bgp) == 0 {
		delete(parts.Spec, "bgp")
	}
	restJSON, err := json.Marshal(nodeRest{Spec: parts.Spec, Status: parts.Status, Annotations: n.Metadata.Annotations})
	if err != nil {
		return nil, err
	}
	ann[annNode] = string(restJSON)
	// Labels: the resource's replace those it set before; the kubelet's
	// and others' stay.
	labels := u.GetLabels()
	if labels == nil {
		labels = map[string]string{}
	}
	var owned []string
	_ = json.Unmarshal([]byte(ann[annNodeLabels]), &owned)
	for _, k := range owned {
		delete(labels, k)
	}
	maps.Copy(labels, n.Metadata.Labels)
	keys := slices.Sorted(maps.Keys(n.Metadata.Labels))
	if len(keys) > 0 {
		kb, _ := json.Marshal(keys)
		ann[annNodeLabels] = string(kb)
	} else {
		delete(ann, annNodeLabels)
	}
	u.SetLabels(labels)
	u.SetAnnotations(ann)
	return u, nil
}

func (nodeCodec) remove(cur *unstructured.Unstructured) *unstructured.Unstructured {
	ann := cur.GetAnnotations()
	if ann[annCreatedByTortie] == "true" {
		return nil
	}
	u := cur.DeepCopy()
	ann = u.GetAnnotations()
	labels := u.GetLabels()
	var owned []string
	_ = json.Unmarshal([]byte(ann[annNodeLabels]), &owned)
	for _, k := range owned {
		delete(labels, k)
	}
	for k := range ann {
		if strings.HasPrefix(k, "projectcalico.org/") || strings.HasPrefix(k, "tortie.io/node") {
			delete(ann, k)
		}
	}
	u.SetLabels(labels)
	u.SetAnnotations(ann)
	return u
}
