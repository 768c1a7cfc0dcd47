package resources

import (
	"flag"
	"fmt"
	"os"
	"reflect"
	"strings"
	"testing"
)

var updateREADME = flag.Bool("update", false, "rewrite the README's table of Calico's fields from the types")

// The README's table of Calico's fields is made from the types' tags; these
// say what the tags cannot: values tortie keeps without acting on them,
// tortie's own additions, and what is refused beside unknown fields.
var (
	tableKinds = []Object{&IPPool{}, &IPReservation{}, &Node{}, &BGPConfiguration{}, &BGPPeer{}, &BGPFilter{},
		&FelixConfiguration{}, &ClusterInformation{}}
	reportedValues = map[string][]string{
		KindIPPool:        {"`cidr` IPv6", "`allowedUses` LoadBalancer"},
		KindIPReservation: {"`reservedCIDRs` IPv6"},
		KindBGPPeer:       {"`peerIP` IPv6"},
		KindBGPConfiguration: {"`serviceClusterIPs` IPv6", "`serviceExternalIPs` IPv6", "`serviceLoadBalancerIPs` IPv6",
			"`prefixAdvertisements` IPv6"},
	}
	fieldNotes = map[string]string{
		"IPPool.cidr":                             "IPv4",
		"IPReservation.reservedCIDRs":             "IPv4",
		"BGPPeer.peerIP":                          "IPv4, with or without a port",
		"BGPPeer.maxPrefixes":                     "tortie's own",
		"BGPConfiguration.serviceClusterIPs":      "IPv4: the ranges, from every node; with the Kubernetes API, the cluster IP /32 of each Service with externalTrafficPolicy Local from the nodes with its ready endpoints",
		"BGPConfiguration.serviceExternalIPs":     "IPv4: the ranges, from every node; with the Kubernetes API, the external IP /32s of each Service with externalTrafficPolicy Local from the nodes with its ready endpoints",
		"BGPConfiguration.serviceLoadBalancerIPs": "IPv4: the ranges, from every node; with the Kubernetes API, the ingress IP /32s of each Service with externalTrafficPolicy Local from the nodes with its ready endpoints",
		"BGPConfiguration.prefixAdvertisements":   "IPv4",
		"BGPConfiguration.bindMode":               "read when tortied starts",
		"BGPFilter.exportV4.interface":            "matches the routes learnt from peers when it matches the underlay interface",
		"BGPFilter.importV4.interface":            "matches when it matches the underlay interface",
		"BGPPeer.password.value":                  "tortie's own: the password inline",
		"BGPConfiguration.nodeMeshPassword.value": "tortie's own: the password inline",
	}
	refusedFields = map[string]string{
		KindIPPool:  "`ipip`, `nat-outgoing`: Calico's v1 fields, refused by Calico's v3 too; an IPv6 `cidr` with `ipipMode`",
		KindBGPPeer: "`peerIP` without `asNumber`: tortie does not guess a peer's AS",
	}
)

const (
	tableBegin = "<!-- calico-fields:begin (made by go test ./resources -run TestREADMEFieldTable -update) -->"
	tableEnd   = "<!-- calico-fields:end -->"
)

// calicoFieldTable lists, kind by kind, the fields tortie honours, those it
// keeps and reports, and those it refuses.
func calicoFieldTable() string {
	var b strings.Builder
	b.WriteString("| Kind | Honoured | Accepted and reported (tortie does not act on them yet) | Refused (besides unknown fields) |\n")
	b.WriteString("|---|---|---|---|\n")
	for _, o := range tableKinds {
		t := reflect.TypeOf(o).Elem()
		kind := t.Name()
		var honoured, reported []string
		for i := range t.NumField() {
			f := t.Field(i)
			switch name := fieldName(f); name {
			case "apiVersion", "kind", "metadata":
			case "spec":
				tableFields(f, "", kind, &honoured, &reported)
			default:
				tableFields(f, name+".", kind, &honoured, &reported)
			}
		}
		reported = append(reported, reportedValues[kind]...)
		refused := refusedFields[kind]
		if refused == "" {
			refused = "—"
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", kind, orDash(honoured), orDash(reported), refused)
	}
	return b.String()
}

func orDash(s []string) string {
	if len(s) == 0 {
		return "—"
	}
	return strings.Join(s, ", ")
}

// tableFields sorts field f (of a struct at prefix) and what it holds into
// honoured and reported.
func tableFields(f reflect.StructField, prefix, kind string, honoured, reported *[]string) {
	t := f.Type
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	stored := f.Tag.Get("tortie") == "stored"
	name := fieldName(f)
	if name == "spec" {
		name = ""
	}
	switch {
	case stored && t.Kind() == reflect.Struct && f.Type.Kind() == reflect.Struct && !isValueType(t):
		for i := range t.NumField() {
			if n := fieldName(t.Field(i)); n != "" {
				*reported = append(*reported, "`"+strings.TrimPrefix(prefix+n, ".")+"`")
			}
		}
	case stored:
		*reported = append(*reported, "`"+prefix+name+"`")
	case t.Kind() == reflect.Struct && (holdsStored(t) || name == ""), t.Kind() == reflect.Slice && structHoldsStored(t.Elem()):
		if t.Kind() == reflect.Slice {
			for t = t.Elem(); t.Kind() == reflect.Pointer; t = t.Elem() {
			}
		}
		p := prefix
		if name != "" {
			p += name + "."
		}
		for i := range t.NumField() {
			if fieldName(t.Field(i)) != "" {
				tableFields(t.Field(i), p, kind, honoured, reported)
			}
		}
	default:
		s := "`" + prefix + name + "`"
		if note := fieldNotes[kind+"."+prefix+name]; note != "" {
			s += " (" + note + ")"
		}
		*honoured = append(*honoured, s)
	}
}

// structHoldsStored reports whether t is a struct (or a pointer to one)
// holding a field tagged stored.
func structHoldsStored(t reflect.Type) bool {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	return t.Kind() == reflect.Struct && holdsStored(t)
}

// holdsStored reports whether struct type t has a field tagged stored, at
// any depth.
func holdsStored(t reflect.Type) bool {
	for i := range t.NumField() {
		f := t.Field(i)
		if fieldName(f) == "" {
			continue
		}
		if f.Tag.Get("tortie") == "stored" {
			return true
		}
		ft := f.Type
		for ft.Kind() == reflect.Pointer || ft.Kind() == reflect.Slice {
			ft = ft.Elem()
		}
		if ft.Kind() == reflect.Struct && holdsStored(ft) {
			return true
		}
	}
	return false
}

// The README's table says what the types say.
func TestREADMEFieldTable(t *testing.T) {
	const path = "../README.md"
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	text := string(b)
	i, j := strings.Index(text, tableBegin), strings.Index(text, tableEnd)
	if i < 0 || j < i {
		t.Fatalf("README has no table between %q and %q", tableBegin, tableEnd)
	}
	want := calicoFieldTable()
	if got := text[i+len(tableBegin)+1 : j]; got != want {
		if *updateREADME {
			text = text[:i+len(tableBegin)+1] + want + text[j:]
			if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
				t.Fatal(err)
			}
			return
		}
		t.Fatalf("README's table of Calico's fields is out of date; run go test ./resources -run TestREADMEFieldTable -update\n got:\n%s\nwant:\n%s", got, want)
	}
}
