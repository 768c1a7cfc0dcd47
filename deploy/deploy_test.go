package deploy

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"slices"
	"sort"
	"strings"
	"testing"

	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// crd is the part of an apiextensions.k8s.io/v1 CustomResourceDefinition
// that crds.yaml writes. It is decoded strictly: a field it does not
// name (a misspelt one) fails the test.
type crd struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name string `json:"name"`
	} `json:"metadata"`
	Spec struct {
		Group string `json:"group"`
		Scope string `json:"scope"`
		Names struct {
			Kind     string `json:"kind"`
			ListKind string `json:"listKind"`
			Plural   string `json:"plural"`
			Singular string `json:"singular"`
		} `json:"names"`
		Versions []struct {
			Name    string `json:"name"`
			Served  bool   `json:"served"`
			Storage bool   `json:"storage"`
			Schema  struct {
				OpenAPIV3Schema *schema `json:"openAPIV3Schema"`
			} `json:"schema"`
			AdditionalPrinterColumns []struct {
				Name     string `json:"name"`
				Type     string `json:"type"`
				JSONPath string `json:"jsonPath"`
			} `json:"additionalPrinterColumns"`
		} `json:"versions"`
	} `json:"spec"`
}

type schema struct {
	Type                  string             `json:"type"`
	Properties            map[string]*schema `json:"properties"`
	PreserveUnknownFields bool               `json:"x-kubernetes-preserve-unknown-fields"`
}

// documents splits a YAML stream into its documents, leaving out those
// with nothing but comments.
func documents(t *testing.T, stream []byte) [][]byte {
	t.Helper()
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(stream)))
	var docs [][]byte
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return docs
		}
		if err != nil {
			t.Fatal(err)
		}
		var v any
		if err := yaml.Unmarshal(doc, &v); err != nil {
			t.Fatalf("%v in document:\n%s", err, doc)
		}
		if v != nil {
			docs = append(docs, doc)
		}
	}
}

// The kinds tortie keeps in the Kubernetes API, with their names as
// Calico has them and their scope.
var wantKinds = map[string]struct {
	plural, singular string
	namespaced       bool
}{
	"IPPool":              {"ippools", "ippool", false},
	"IPReservation":       {"ipreservations", "ipreservation", false},
	"BGPConfiguration":    {"bgpconfigurations", "bgpconfiguration", false},
	"BGPPeer":             {"bgppeers", "bgppeer", false},
	"BGPFilter":           {"bgpfilters", "bgpfilter", false},
	"FelixConfiguration":  {"felixconfigurations", "felixconfiguration", false},
	"ClusterInformation":  {"clusterinformations", "clusterinformation", false},
	"GlobalNetworkPolicy": {"globalnetworkpolicies", "globalnetworkpolicy", false},
	"GlobalNetworkSet":    {"globalnetworksets", "globalnetworkset", false},
	"Tier":                {"tiers", "tier", false},
	"Profile":             {"profiles", "profile", false},
	"IPAMBlock":           {"ipamblocks", "ipamblock", false},
	"BlockAffinity":       {"blockaffinities", "blockaffinity", false},
	"IPAMHandle":          {"ipamhandles", "ipamhandle", false},
	"NetworkPolicy":       {"networkpolicies", "networkpolicy", true},
	"NetworkSet":          {"networksets", "networkset", true},
	"WorkloadEndpoint":    {"workloadendpoints", "workloadendpoint", true},
}

func TestCRDs(t *testing.T) {
	const group = "crd.projectcalico.org"
	seen := map[string]bool{}
	for _, doc := range documents(t, CRDs) {
		var c crd
		if err := yaml.UnmarshalStrict(doc, &c); err != nil {
			t.Fatalf("%v in document:\n%s", err, doc)
		}
		kind := c.Spec.Names.Kind
		if c.APIVersion != "apiextensions.k8s.io/v1" || c.Kind != "CustomResourceDefinition" {
			t.Errorf("%s: a %s %s, want an apiextensions.k8s.io/v1 CustomResourceDefinition", kind, c.APIVersion, c.Kind)
		}
		if seen[kind] {
			t.Errorf("%s defined twice", kind)
		}
		seen[kind] = true
		want, ok := wantKinds[kind]
		if !ok {
			t.Errorf("unexpected kind %q", kind)
			continue
		}
		if c.Spec.Group != group {
			t.Errorf("%s: group %q, want %q", kind, c.Spec.Group, group)
		}
		if c.Metadata.Name != want.plural+"."+group {
			t.Errorf("%s: named %q, want %q", kind, c.Metadata.Name, want.plural+"."+group)
		}
		n := c.Spec.Names
		if n.Plural != want.plural || n.Singular != want.singular || n.ListKind != kind+"List" {
			t.Errorf("%s: names %s/%s/%s, want %s/%s/%sList", kind, n.Plural, n.Singular, n.ListKind, want.plural, want.singular, kind)
		}
		scope := "Cluster"
		if want.namespaced {
			scope = "Namespaced"
		}
		if c.Spec.Scope != scope {
			t.Errorf("%s: scope %q, want %q", kind, c.Spec.Scope, scope)
		}
		if len(c.Spec.Versions) != 1 {
			t.Errorf("%s: %d versions, want v1 only", kind, len(c.Spec.Versions))
			continue
		}
		v := c.Spec.Versions[0]
		if v.Name != "v1" || !v.Served || !v.Storage {
			t.Errorf("%s: version %s served=%v storage=%v, want v1 served and stored", kind, v.Name, v.Served, v.Storage)
		}
		checkSchema(t, kind, v.Schema.OpenAPIV3Schema)
		for _, col := range v.AdditionalPrinterColumns {
			if col.Name == "" || !strings.HasPrefix(col.JSONPath, ".") ||
				!slices.Contains([]string{"string", "boolean", "integer", "number", "date"}, col.Type) {
				t.Errorf("%s: bad printer column %+v", kind, col)
			}
		}
	}
	var missing []string
	for kind := range wantKinds {
		if !seen[kind] {
			missing = append(missing, kind)
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Errorf("no CRD for %v", missing)
	}
}

// checkSchema checks a structural schema that keeps whatever spec (and
// status, if there is one) holds.
func checkSchema(t *testing.T, kind string, s *schema) {
	t.Helper()
	if s == nil || s.Type != "object" {
		t.Errorf("%s: the schema is not of an object", kind)
		return
	}
	want := map[string]string{"apiVersion": "string", "kind": "string", "metadata": "object", "spec": "object"}
	for name, typ := range want {
		if p := s.Properties[name]; p == nil || p.Type != typ {
			t.Errorf("%s: property %s is not a %s", kind, name, typ)
		}
	}
	for name, p := range s.Properties {
		switch name {
		case "spec", "status":
			if p.Type != "object" || !p.PreserveUnknownFields {
				t.Errorf("%s: %s does not keep unknown fields", kind, name)
			}
		case "apiVersion", "kind", "metadata":
		default:
			t.Errorf("%s: unexpected property %s", kind, name)
		}
	}
	if kind == "IPPool" && s.Properties["status"] == nil {
		t.Errorf("IPPool has no status")
	}
}

// TestClusterRole checks that tortie.yaml lets the DaemonSet's service
// account use the Kubernetes API datastore.
func TestClusterRole(t *testing.T) {
	type rule struct {
		APIGroups []string `json:"apiGroups"`
		Resources []string `json:"resources"`
		Verbs     []string `json:"verbs"`
	}
	var rules []rule
	found := false
	for _, doc := range documents(t, Manifest) {
		var obj struct {
			Kind     string `json:"kind"`
			Metadata struct {
				Name string `json:"name"`
			} `json:"metadata"`
			Rules []rule `json:"rules"`
		}
		if err := yaml.Unmarshal(doc, &obj); err != nil {
			t.Fatal(err)
		}
		if obj.Kind == "ClusterRole" && obj.Metadata.Name == "tortie-node" {
			found = true
			rules = obj.Rules
		}
	}
	if !found {
		t.Fatal("no ClusterRole tortie-node in tortie.yaml")
	}
	allows := func(group, resource, verb string) bool {
		for _, r := range rules {
			if (slices.Contains(r.APIGroups, group) || slices.Contains(r.APIGroups, "*")) &&
				(slices.Contains(r.Resources, resource) || slices.Contains(r.Resources, "*")) &&
				(slices.Contains(r.Verbs, verb) || slices.Contains(r.Verbs, "*")) {
				return true
			}
		}
		return false
	}
	for _, want := range []struct {
		group, resource string
		verbs           []string
	}{
		{"crd.projectcalico.org", "ippools", []string{"get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"}},
		{"crd.projectcalico.org", "workloadendpoints", []string{"get", "list", "watch", "create", "update", "delete"}},
		{"", "nodes", []string{"get", "list", "watch", "create", "update", "patch"}},
		{"coordination.k8s.io", "leases", []string{"get", "list", "watch", "create", "update", "delete"}},
		// What it had before the Kubernetes API datastore.
		{"", "pods", []string{"get", "list", "watch"}},
		{"networking.k8s.io", "networkpolicies", []string{"get", "list", "watch"}},
		// Service advertisement over BGP.
		{"", "services", []string{"get", "list", "watch"}},
		{"discovery.k8s.io", "endpointslices", []string{"get", "list", "watch"}},
	} {
		for _, verb := range want.verbs {
			if !allows(want.group, want.resource, verb) {
				t.Errorf("tortie-node may not %s %s in group %q", verb, want.resource, want.group)
			}
		}
	}
}
