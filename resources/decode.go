package resources

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"sort"
	"strings"

	"sigs.k8s.io/yaml"
)

// CRDAPIVersion is the group Calico's Kubernetes datastore keeps its
// resources in: `kubectl get ippools -o yaml` shows them with it. The spec
// is the v3 one; the metadata is the Kubernetes object's.
const CRDAPIVersion = "crd.projectcalico.org/v1"

// maxInput bounds what Decode reads: manifests are small, and a runaway
// stream should fail clearly rather than be cut short silently.
const maxInput = 16 << 20

// calicoMetadataAnnotation holds, on a CRD object Calico wrote, the v3
// resource's own labels and annotations (as JSON): the CRD's labels are
// not the resource's.
const calicoMetadataAnnotation = "projectcalico.org/metadata"

// serverMetadata are the metadata fields the Kubernetes API server and
// calicoctl fill in when they print an object. Objects copied from their
// output carry them; they say nothing about the desired state and are
// dropped on input.
var serverMetadata = []string{"creationTimestamp", "resourceVersion", "uid", "generation", "managedFields", "selfLink"}

// Decode reads resources in every form Calico users have them in:
//
//   - single documents and "---" separated streams (YAML or JSON);
//   - a `kind: List` (as kubectl prints it) or a `<Kind>List` such as
//     IPPoolList (as calicoctl prints it), resources under items (a list
//     whose kind is left out, as Calico's documentation shows some, too);
//   - a top-level YAML or JSON sequence of resources;
//
// with apiVersion projectcalico.org/v3, crd.projectcalico.org/v1 or
// tortie.io/v1. Each resource is validated; errors name the document (and
// the item within a list) and the kind. Decoded objects say apiVersion
// projectcalico.org/v3, whatever they were written with.
func Decode(r io.Reader) ([]Object, error) {
	b, err := io.ReadAll(io.LimitReader(r, maxInput+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxInput {
		return nil, fmt.Errorf("input larger than %d MiB", maxInput>>20)
	}
	var out []Object
	n := 0
	for _, doc := range splitDocuments(b) {
		js, err := yaml.YAMLToJSONStrict(doc)
		if err != nil {
			return nil, fmt.Errorf("document %d: not valid YAML or JSON: %s", n+1, cleanError(err))
		}
		js = bytes.TrimSpace(js)
		if len(js) == 0 || string(js) == "null" {
			continue // empty, or only comments
		}
		n++
		objs, err := decodeDocument(js, fmt.Sprintf("document %d", n))
		if err != nil {
			return nil, err
		}
		out = append(out, objs...)
	}
	if len(out) == 0 {
		return nil, errors.New("no resources in input")
	}
	return out, nil
}

// splitDocuments cuts a YAML stream at its "---" lines. Text after the
// marker on the same line ("--- # pools") starts the next document.
func splitDocuments(b []byte) [][]byte {
	var docs [][]byte
	var cur []byte
	for line := range bytes.Lines(b) {
		t := bytes.TrimRight(line, "\r\n")
		switch {
		case bytes.Equal(t, []byte("---")) || bytes.HasPrefix(t, []byte("--- ")) || bytes.HasPrefix(t, []byte("---\t")):
			docs = append(docs, cur)
			cur = append([]byte(nil), t[3:]...)
			cur = append(cur, '\n')
		case bytes.Equal(t, []byte("...")):
			// End of a document; the next "---" (or the end) follows.
		default:
			cur = append(cur, line...)
		}
	}
	return append(docs, cur)
}

// decodeDocument decodes one document: a resource, a list of them, or a
// sequence of them.
func decodeDocument(js []byte, where string) ([]Object, error) {
	switch js[0] {
	case '[':
		var items []json.RawMessage
		if err := json.Unmarshal(js, &items); err != nil {
			return nil, fmt.Errorf("%s: %s", where, cleanError(err))
		}
		return decodeItems(items, where, "", "")
	case '{':
	default:
		return nil, fmt.Errorf("%s: want a resource (a mapping with apiVersion, kind, metadata and spec), got %s", where, describeJSON(js))
	}
	h, err := readHeader(js)
	if err != nil {
		return nil, fmt.Errorf("%s: %v", where, err)
	}
	itemKind, isList := listKind(h.Kind)
	if h.Kind == "" && h.Items != nil {
		// A list as calicoctl's documentation shows it: apiVersion and
		// items, its kind left out.
		isList = true
	}
	if isList {
		if h.Items == nil {
			return nil, fmt.Errorf("%s: %s has no items", where, h.Kind)
		}
		var items []json.RawMessage
		if err := json.Unmarshal(h.Items, &items); err != nil {
			return nil, fmt.Errorf("%s: %s items: want a list of resources, got %s", where, h.Kind, describeJSON(h.Items))
		}
		// A <Kind>List says what its items are; a List's items say it
		// themselves.
		apiVersion := ""
		if itemKind != "" || h.Kind == "" {
			apiVersion = h.APIVersion
		}
		return decodeItems(items, where, apiVersion, itemKind)
	}
	o, err := decodeResource(js, h)
	if err != nil {
		return nil, fmt.Errorf("%s: %v", where, err)
	}
	return []Object{o}, nil
}

func decodeItems(items []json.RawMessage, where, apiVersion, kind string) ([]Object, error) {
	out := make([]Object, 0, len(items))
	for i, it := range items {
		at := fmt.Sprintf("%s, item %d", where, i+1)
		it = bytes.TrimSpace(it)
		if len(it) == 0 || it[0] != '{' {
			return nil, fmt.Errorf("%s: want a resource (a mapping with apiVersion, kind, metadata and spec), got %s", at, describeJSON(it))
		}
		h, err := readHeader(it)
		if err != nil {
			return nil, fmt.Errorf("%s: %v", at, err)
		}
		if h.APIVersion == "" {
			h.APIVersion = apiVersion
		}
		if h.Kind == "" {
			h.Kind = kind
		}
		if _, ok := listKind(h.Kind); ok {
			return nil, fmt.Errorf("%s: a %s inside a list: lists do not nest", at, h.Kind)
		}
		if kind != "" && h.Kind != kind {
			return nil, fmt.Errorf("%s: a %s in a %sList", at, h.Kind, kind)
		}
		o, err := decodeResource(it, h)
		if err != nil {
			return nil, fmt.Errorf("%s: %v", at, err)
		}
		out = append(out, o)
	}
	return out, nil
}

// header is what is read of a document before its kind is known.
type header struct {
	APIVersion string
	Kind       string
	Items      json.RawMessage
}

func readHeader(js []byte) (header, error) {
	var raw struct {
		APIVersion json.RawMessage `json:"apiVersion"`
		Kind       json.RawMessage `json:"kind"`
		Items      json.RawMessage `json:"items"`
	}
	if err := json.Unmarshal(js, &raw); err != nil {
		return header{}, errors.New(cleanError(err))
	}
	h := header{Items: raw.Items}
	for _, f := range []struct {
		name string
		raw  json.RawMessage
		to   *string
	}{{"apiVersion", raw.APIVersion, &h.APIVersion}, {"kind", raw.Kind, &h.Kind}} {
		if f.raw == nil || string(f.raw) == "null" {
			continue
		}
		if err := json.Unmarshal(f.raw, f.to); err != nil {
			return header{}, fmt.Errorf("%s: want a string, got %s", f.name, describeJSON(f.raw))
		}
	}
	return h, nil
}

// listKind reports whether kind is a list: "List" (item kind "") or
// "<Kind>List" for a kind tortie knows.
func listKind(kind string) (string, bool) {
	if kind == "List" {
		return "", true
	}
	k, ok := strings.CutSuffix(kind, "List")
	if ok && newObject(k) != nil {
		return k, true
	}
	return "", false
}

// Kinds lists the kinds Decode accepts.
var Kinds = []string{KindIPPool, KindNode, KindBGPConfiguration, KindBGPPeer, KindBGPFilter, KindIPReservation,
	KindFelixConfiguration, KindClusterInformation, KindNetworkPolicy, KindGlobalNetworkPolicy,
	KindTier, KindNetworkSet, KindGlobalNetworkSet, KindProfile, KindWorkloadEndpoint}

func newObject(kind string) Object {
	switch kind {
	case KindIPPool:
		return &IPPool{}
	case KindNode:
		return &Node{}
	case KindBGPConfiguration:
		return &BGPConfiguration{}
	case KindBGPPeer:
		return &BGPPeer{}
	case KindBGPFilter:
		return &BGPFilter{}
	case KindIPReservation:
		return &IPReservation{}
	case KindFelixConfiguration:
		return &FelixConfiguration{}
	case KindClusterInformation:
		return &ClusterInformation{}
	case KindNetworkPolicy:
		return &NetworkPolicy{}
	case KindGlobalNetworkPolicy:
		return &GlobalNetworkPolicy{}
	case KindTier:
		return &Tier{}
	case KindNetworkSet:
		return &NetworkSet{}
	case KindGlobalNetworkSet:
		return &GlobalNetworkSet{}
	case KindProfile:
		return &Profile{}
	case KindWorkloadEndpoint:
		return &WorkloadEndpoint{}
	}
	return nil
}

// decodeResource decodes and validates one resource whose header is h.
func decodeResource(js []byte, h header) (Object, error) {
	switch h.APIVersion {
	case CalicoAPIVersion, CRDAPIVersion, APIVersion:
	case "":
		return nil, fmt.Errorf("apiVersion is missing (want %s, %s or %s)", CalicoAPIVersion, CRDAPIVersion, APIVersion)
	default:
		return nil, fmt.Errorf("apiVersion %q: want %s, %s or %s", h.APIVersion, CalicoAPIVersion, CRDAPIVersion, APIVersion)
	}
	o := newObject(h.Kind)
	if o == nil {
		if h.Kind == "" {
			return nil, fmt.Errorf("kind is missing (want one of %s, or a List of them)", strings.Join(Kinds, ", "))
		}
		return nil, fmt.Errorf("unknown kind %q (want one of %s, or a List of them)", h.Kind, strings.Join(Kinds, ", "))
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(js, &fields); err != nil {
		return nil, fmt.Errorf("%s: %s", h.Kind, cleanError(err))
	}
	if err := normalizeMetadata(fields, h.APIVersion == CRDAPIVersion); err != nil {
		return nil, fmt.Errorf("%s: %v", h.Kind, err)
	}
	if h.Kind == KindIPPool {
		// An IPPool's status is the conditions Calico's controllers
		// report (Allocatable, CIDROverlap): theirs, not the pool's.
		delete(fields, "status")
	}
	fields["apiVersion"], _ = json.Marshal(h.APIVersion)
	fields["kind"], _ = json.Marshal(h.Kind)
	clean, err := json.Marshal(fields)
	if err != nil {
		return nil, fmt.Errorf("%s: %v", h.Kind, err)
	}
	// UnmarshalStrict refuses unknown fields and, as for YAML input,
	// turns scalars into the strings a field wants (label values such as
	// true).
	if err := yaml.UnmarshalStrict(clean, o); err != nil {
		msg := locateError(clean, reflect.TypeOf(o).Elem(), "", true)
		if msg == "" {
			msg = cleanError(err)
		}
		return nil, fmt.Errorf("%s %q: %s", h.Kind, nameIn(fields), msg)
	}
	// Go's JSON decoder matches field names whatever their case; Calico's
	// do not, and neither does this: "vxlanVni" is no field.
	if msg := locateError(clean, reflect.TypeOf(o).Elem(), "", false); msg != "" {
		return nil, fmt.Errorf("%s %q: %s", h.Kind, nameIn(fields), msg)
	}
	if err := o.Validate(); err != nil {
		return nil, err
	}
	o.setVersion()
	return o, nil
}

// normalizeMetadata drops the fields servers fill in and, for a CRD
// object, takes the resource's labels and annotations from Calico's
// metadata annotation as Calico does (the CRD's own are its storage's).
func normalizeMetadata(fields map[string]json.RawMessage, crd bool) error {
	raw, ok := fields["metadata"]
	if !ok || string(raw) == "null" {
		return nil
	}
	var md map[string]json.RawMessage
	if err := json.Unmarshal(raw, &md); err != nil {
		return fmt.Errorf("metadata: want a mapping, got %s", describeJSON(raw))
	}
	for _, f := range serverMetadata {
		delete(md, f)
	}
	if crd {
		var ann map[string]string
		if a, ok := md["annotations"]; ok {
			if err := json.Unmarshal(a, &ann); err != nil {
				return fmt.Errorf("metadata.annotations: want a mapping of strings, got %s", describeJSON(a))
			}
		}
		delete(ann, "kubectl.kubernetes.io/last-applied-configuration")
		if v, ok := ann[calicoMetadataAnnotation]; ok {
			var own struct {
				Labels      map[string]string `json:"labels"`
				Annotations map[string]string `json:"annotations"`
			}
			if err := json.Unmarshal([]byte(v), &own); err != nil {
				return fmt.Errorf("metadata.annotations[%s]: %s", calicoMetadataAnnotation, cleanError(err))
			}
			ann = own.Annotations
			delete(md, "labels")
			if len(own.Labels) > 0 {
				md["labels"], _ = json.Marshal(own.Labels)
			}
		}
		delete(md, "annotations")
		if len(ann) > 0 {
			md["annotations"], _ = json.Marshal(ann)
		}
	}
	fields["metadata"], _ = json.Marshal(md)
	return nil
}

func nameIn(fields map[string]json.RawMessage) string {
	var md struct {
		Name any `json:"name"`
	}
	_ = json.Unmarshal(fields["metadata"], &md)
	if s, ok := md.Name.(string); ok {
		return s
	}
	return ""
}

// cleanError words decoding errors for the person who wrote the input:
// field paths and what was wanted, not Go types.
func cleanError(err error) string {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		field := te.Field
		if field == "" {
			field = "value"
		}
		return fmt.Sprintf("%s: want %s, got %s", field, describeType(te.Type), article(te.Value))
	}
	s := err.Error()
	for _, p := range []string{"unmarshal errors:\n  ", "error unmarshaling JSON: ", "error converting YAML to JSON: ", "while decoding JSON: ", "json: ", "yaml: "} {
		s = strings.ReplaceAll(s, p, "")
	}
	return s
}

func describeType(t reflect.Type) string {
	if t == nil {
		return "another type"
	}
	switch t.Kind() {
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return "a whole number"
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return fmt.Sprintf("a whole number from 0 to %d", uint64(1)<<(t.Bits())-1)
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.String:
		return "a string"
	case reflect.Slice, reflect.Array:
		return "a list"
	case reflect.Map, reflect.Struct, reflect.Pointer:
		return "a mapping"
	}
	return "another type"
}

func article(v string) string {
	switch {
	case v == "":
		return "something else"
	case strings.HasPrefix(v, "number"):
		return v // "number 70000"
	case strings.ContainsAny(v[:1], "aeiou"):
		return "an " + v
	}
	return "a " + v
}

// describeJSON names what a JSON value is, for errors.
func describeJSON(js []byte) string {
	js = bytes.TrimSpace(js)
	if len(js) == 0 {
		return "nothing"
	}
	switch js[0] {
	case '[':
		return "a list"
	case '{':
		return "a mapping"
	case '"':
		return "a string"
	case 't', 'f':
		return "true or false"
	case 'n':
		return "null"
	}
	return "a number"
}

// locateError finds the first value of js that does not decode into type
// t and says where it is and what was wanted ("spec.vxlanPort: want a
// whole number, got a string"), or "" when every part decodes. Errors from
// a type's own decoder (a duration, an AS number) do not name their field;
// this does, and it names unknown fields with their path, matching names
// exactly. With leaves false, only the names are checked.
func locateError(js []byte, t reflect.Type, path string, leaves bool) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	at := func(msg string) string {
		if path == "" {
			return msg
		}
		return path + ": " + msg
	}
	if bytes.Equal(bytes.TrimSpace(js), []byte("null")) {
		return ""
	}
	leaf := func() string {
		if !leaves {
			return ""
		}
		err := yaml.UnmarshalStrict(js, reflect.New(t).Interface())
		if err == nil {
			return ""
		}
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) && te.Field == "" {
			return at(fmt.Sprintf("want %s, got %s", describeType(te.Type), article(te.Value)))
		}
		return at(cleanError(err))
	}
	if reflect.PointerTo(t).Implements(reflect.TypeFor[json.Unmarshaler]()) ||
		reflect.PointerTo(t).Implements(reflect.TypeFor[interface{ UnmarshalText([]byte) error }]()) {
		return leaf()
	}
	join := func(name string) string {
		if path == "" {
			return name
		}
		return path + "." + name
	}
	switch t.Kind() {
	case reflect.Struct:
		var fields map[string]json.RawMessage
		if err := json.Unmarshal(js, &fields); err != nil {
			return at("want a mapping, got " + describeJSON(js))
		}
		byName := map[string]reflect.Type{}
		jsonFields(t, byName)
		keys := make([]string, 0, len(fields))
		for k := range fields {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			ft, ok := byName[k]
			if !ok {
				return join(k) + ": unknown field"
			}
			if msg := locateError(fields[k], ft, join(k), leaves); msg != "" {
				return msg
			}
		}
		return ""
	case reflect.Slice:
		var items []json.RawMessage
		if err := json.Unmarshal(js, &items); err != nil {
			return at("want a list, got " + describeJSON(js))
		}
		for i, it := range items {
			if msg := locateError(it, t.Elem(), fmt.Sprintf("%s[%d]", path, i), leaves); msg != "" {
				return msg
			}
		}
		return ""
	case reflect.Map:
		var items map[string]json.RawMessage
		if err := json.Unmarshal(js, &items); err != nil {
			return at("want a mapping, got " + describeJSON(js))
		}
		keys := make([]string, 0, len(items))
		for k := range items {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			if msg := locateError(items[k], t.Elem(), fmt.Sprintf("%s[%s]", path, k), leaves); msg != "" {
				return msg
			}
		}
		return ""
	}
	return leaf()
}

// jsonFields maps the JSON names of struct type t's fields to their types,
// the fields of embedded structs with them, as encoding/json sees them.
func jsonFields(t reflect.Type, out map[string]reflect.Type) {
	for i := range t.NumField() {
		f := t.Field(i)
		et := f.Type
		if et.Kind() == reflect.Pointer {
			et = et.Elem()
		}
		if name, _, _ := strings.Cut(f.Tag.Get("json"), ","); f.Anonymous && name == "" && et.Kind() == reflect.Struct {
			jsonFields(et, out)
			continue
		}
		if n := fieldName(f); n != "" {
			out[n] = f.Type
		}
	}
}
