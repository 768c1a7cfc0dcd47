package resources

import (
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"testing"
)

func TestASNumber(t *testing.T) {
	for in, want := range map[string]ASNumber{`64512`: 64512, `"64512"`: 64512, `"1.10"`: 1<<16 + 10, `"0.0"`: 0, `4294967295`: 4294967295, `"65535.65535"`: 4294967295} {
		var a ASNumber
		if err := json.Unmarshal([]byte(in), &a); err != nil || a != want {
			t.Errorf("%s: %d, %v; want %d", in, a, err, want)
		}
		if b, _ := json.Marshal(a); string(b) != fmt.Sprint(uint32(want)) {
			t.Errorf("%s written as %s, want a number", in, b)
		}
	}
	for _, in := range []string{`-1`, `4294967296`, `"1.65536"`, `"1.2.3"`, `"x"`, `1.5`, `true`, `"65536.0"`} {
		var a ASNumber
		if err := json.Unmarshal([]byte(in), &a); err == nil {
			t.Errorf("%s accepted as %d", in, a)
		}
	}
}

func TestPort(t *testing.T) {
	for in, want := range map[string]Port{`80`: {Min: 80, Max: 80}, `"80"`: {Min: 80, Max: 80}, `"8080:8089"`: {Min: 8080, Max: 8089}, `"http"`: {Name: "http"}} {
		var p Port
		if err := json.Unmarshal([]byte(in), &p); err != nil || p != want {
			t.Errorf("%s: %+v, %v; want %+v", in, p, err, want)
		}
		b, _ := json.Marshal(p)
		var again Port
		if err := json.Unmarshal(b, &again); err != nil || again != p {
			t.Errorf("%s: written as %s, read back as %+v", in, b, again)
		}
	}
	for _, in := range []string{`70000`, `"9:8"`, `"1:70000"`, `"a b"`, `[80]`, `-1`} {
		var p Port
		if err := json.Unmarshal([]byte(in), &p); err == nil {
			t.Errorf("%s accepted as %+v", in, p)
		}
	}
	if err := (Port{Name: "http"}).checkNumeric("p"); err == nil {
		t.Error("a named port passed as a number")
	}
	if err := (Port{}).checkNumeric("p"); err == nil {
		t.Error("port 0 passed")
	}
}

func TestDSCP(t *testing.T) {
	for _, in := range []string{`0`, `63`, `"EF"`, `"af11"`, `"CS6"`} {
		var d DSCP
		if err := json.Unmarshal([]byte(in), &d); err != nil {
			t.Errorf("%s: %v", in, err)
		}
		if b, _ := json.Marshal(d); string(b) != in {
			t.Errorf("%s written as %s", in, b)
		}
	}
	for _, in := range []string{`64`, `"AF14"`, `-1`, `true`} {
		var d DSCP
		if err := json.Unmarshal([]byte(in), &d); err == nil {
			t.Errorf("%s accepted", in)
		}
	}
}

func TestPeerAddress(t *testing.T) {
	for in, want := range map[string]string{"10.0.0.1": "10.0.0.1", "10.0.0.1:1179": "10.0.0.1:1179", "fd00::1": "fd00::1", "[fd00::1]:1179": "[fd00::1]:1179"} {
		var a PeerAddress
		if err := a.UnmarshalText([]byte(in)); err != nil || a.String() != want {
			t.Errorf("%s: %v, %v", in, a, err)
		}
	}
	for _, in := range []string{"10.0.0.1:0", "10.0.0.1:70000", "fd00::1:1179:", "[fd00::1]", "host:179", "10.0.0.256"} {
		var a PeerAddress
		if err := a.UnmarshalText([]byte(in)); err == nil {
			t.Errorf("%s accepted as %v", in, a)
		}
	}
}

func TestCommunity(t *testing.T) {
	for s, ok := range map[string]bool{"65535:65535": true, "65536:1": false, "4294967295:1:1": true, "4294967296:1:1": false, "1": false, "1:2:3:4": false, "a:b": false} {
		if validCommunity(s) != ok {
			t.Errorf("%s: valid %v, want %v", s, !ok, ok)
		}
	}
}

// Every check rule named in a tag is one checkFields knows: an unknown one
// would only show when a manifest sets the field.
func TestCheckRulesKnown(t *testing.T) {
	seen := map[reflect.Type]bool{}
	var walk func(t reflect.Type, path string)
	walk = func(rt reflect.Type, path string) {
		for rt.Kind() == reflect.Pointer || rt.Kind() == reflect.Slice || rt.Kind() == reflect.Map || rt.Kind() == reflect.Array {
			rt = rt.Elem()
		}
		if rt.Kind() != reflect.Struct || seen[rt] {
			return
		}
		seen[rt] = true
		for i := range rt.NumField() {
			f := rt.Field(i)
			for rule := range strings.SplitSeq(f.Tag.Get("check"), ",") {
				name, arg, _ := strings.Cut(rule, "=")
				switch name {
				case "", "required":
				case "oneof", "oneofi":
					if arg == "" {
						t.Errorf("%s.%s: %s without values", path, f.Name, name)
					}
				case "min", "max":
					if _, err := json.Number(arg).Int64(); err != nil {
						t.Errorf("%s.%s: %s", path, f.Name, rule)
					}
				default:
					if namedChecks[name] == nil {
						t.Errorf("%s.%s: unknown rule %q", path, f.Name, rule)
					}
				}
			}
			if tag := f.Tag.Get("tortie"); tag != "" && tag != "stored" {
				t.Errorf("%s.%s: tortie tag %q", path, f.Name, tag)
			}
			walk(f.Type, path+"."+f.Name)
		}
	}
	for _, k := range Kinds {
		walk(reflect.TypeOf(newObject(k)), k)
	}
}

// Warnings names each field once however many objects set it, in the
// order the objects set them; honoured fields and fields left unset are
// not named.
func TestWarnings(t *testing.T) {
	objs, err := Decode(strings.NewReader(`
apiVersion: projectcalico.org/v3
kind: FelixConfiguration
metadata: {name: default}
spec: {vxlanMTU: 1410, ipv6Support: false}
---
apiVersion: projectcalico.org/v3
kind: FelixConfiguration
metadata: {name: node.n1}
spec: {vxlanMTU: 1400, failsafeOutboundHostPorts: []}
---
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: p}
spec: {cidr: 10.1.0.0/16, natOutgoing: true, allowedUses: [Workload]}
---
apiVersion: projectcalico.org/v3
kind: BGPConfiguration
metadata: {name: default}
spec: {asNumber: 65000, nodeMeshPassword: {value: s}}
`))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"accepted; tortie does not act on FelixConfiguration.spec.ipv6Support yet",
		"accepted; tortie does not act on FelixConfiguration.spec.vxlanMTU yet",
		"accepted; tortie does not act on FelixConfiguration.spec.failsafeOutboundHostPorts yet",
	}
	if got := Warnings(objs); !reflect.DeepEqual(got, want) {
		t.Fatalf("got %q\nwant %q", got, want)
	}
}
