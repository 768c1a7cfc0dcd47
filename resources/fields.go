package resources

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/tortie-net/tortie/selector"
)

// Fields of Calico's kinds carry two struct tags besides their JSON name:
//
//   - check: the rules Calico applies to the value, comma-separated:
//     oneof=A|B (exactly one of these), oneofi=A|B (the same, any case),
//     min=N and max=N (numbers), required, and named rules (namedChecks).
//     A rule on a list or map applies to each element. Empty values and
//     nil pointers are not checked, except by required.
//   - tortie:"stored": tortie keeps and shows the field but does not act on
//     it yet; applying it is reported (NotActedOn). On a struct-valued
//     field (not a pointer) each present field of the struct is reported
//     on its own. Fields without the tag are honoured; in a list of
//     mappings, the elements' fields are tagged and reported alike.
//
// Validate methods run checkFields over their spec, then the rules that
// relate several fields.

// ASNumber is a BGP AS number. Calico takes it as a number or as a string,
// in decimal or in dotted notation ("1.10" is 1<<16 + 10); it is written as
// a number.
type ASNumber uint32

// UnmarshalJSON reads 65001, "65001" or "1.10".
func (a *ASNumber) UnmarshalJSON(b []byte) error {
	var n uint32
	if err := json.Unmarshal(b, &n); err == nil {
		*a = ASNumber(n)
		return nil
	}
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return errors.New(asnWant)
	}
	v, err := parseASN(s)
	if err != nil {
		return err
	}
	*a = v
	return nil
}

const asnWant = `want an AS number: 0 to 4294967295, or "<high>.<low>" with each part 0 to 65535`

func parseASN(s string) (ASNumber, error) {
	if n, err := strconv.ParseUint(s, 10, 32); err == nil {
		return ASNumber(n), nil
	}
	hi, lo, ok := strings.Cut(s, ".")
	h, err1 := strconv.ParseUint(hi, 10, 16)
	l, err2 := strconv.ParseUint(lo, 10, 16)
	if !ok || err1 != nil || err2 != nil {
		return 0, fmt.Errorf("%q: %s", s, asnWant)
	}
	return ASNumber(h<<16 | l), nil
}

// Port is a port number, a range "min:max", or a port's name, as Calico's
// numorstring.Port: a number or a string in manifests.
type Port struct {
	Min, Max uint16
	Name     string
}

var (
	portRangeRe = regexp.MustCompile(`^(\d+):(\d+)$`)
	portNameRe  = regexp.MustCompile(`^[a-zA-Z0-9_.-]{1,128}$`)
)

// UnmarshalJSON reads 80, "80", "8080:8089" or a name.
func (p *Port) UnmarshalJSON(b []byte) error {
	var n uint16
	if err := json.Unmarshal(b, &n); err == nil {
		*p = Port{Min: n, Max: n}
		return nil
	}
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return errors.New(`want a port (0 to 65535), a range such as "8080:8089", or a port's name`)
	}
	if n, err := strconv.ParseUint(s, 10, 16); err == nil {
		*p = Port{Min: uint16(n), Max: uint16(n)}
		return nil
	}
	if m := portRangeRe.FindStringSubmatch(s); m != nil {
		lo, err1 := strconv.ParseUint(m[1], 10, 16)
		hi, err2 := strconv.ParseUint(m[2], 10, 16)
		if err1 != nil || err2 != nil || lo > hi {
			return fmt.Errorf("%q: want a range min:max of ports from 0 to 65535, min not above max", s)
		}
		*p = Port{Min: uint16(lo), Max: uint16(hi)}
		return nil
	}
	if !portNameRe.MatchString(s) {
		return fmt.Errorf("%q: want a port, a range such as \"8080:8089\", or a port's name (letters, digits, '_', '.', '-')", s)
	}
	*p = Port{Name: s}
	return nil
}

// MarshalJSON writes a single port as a number, a range or a name as a
// string.
func (p Port) MarshalJSON() ([]byte, error) {
	switch {
	case p.Name != "":
		return json.Marshal(p.Name)
	case p.Min == p.Max:
		return json.Marshal(p.Min)
	}
	return json.Marshal(fmt.Sprintf("%d:%d", p.Min, p.Max))
}

func (p Port) String() string {
	b, _ := p.MarshalJSON()
	return strings.Trim(string(b), `"`)
}

// checkNumeric refuses port names and port 0, as Calico does where a
// field wants port numbers.
func (p Port) checkNumeric(path string) error {
	switch {
	case p.Name != "":
		return fmt.Errorf("%s %q: want port numbers, not a port's name", path, p.Name)
	case p.Min < 1:
		return fmt.Errorf("%s %s: port numbers are 1 to 65535", path, p)
	}
	return nil
}

// DSCP is a DSCP value: a number 0 to 63 or a name such as "AF11" or "EF".
type DSCP struct {
	Num  *uint8
	Name string
}

// dscpNames are the named DSCP values Calico knows.
var dscpNames = map[string]bool{
	"DF": true, "EF": true,
	"AF11": true, "AF12": true, "AF13": true, "AF21": true, "AF22": true, "AF23": true,
	"AF31": true, "AF32": true, "AF33": true, "AF41": true, "AF42": true, "AF43": true,
	"CS0": true, "CS1": true, "CS2": true, "CS3": true, "CS4": true, "CS5": true, "CS6": true,
}

// UnmarshalJSON reads 46 or "EF".
func (d *DSCP) UnmarshalJSON(b []byte) error {
	var n uint8
	if err := json.Unmarshal(b, &n); err == nil {
		if n > 63 {
			return fmt.Errorf("DSCP %d: want 0 to 63", n)
		}
		*d = DSCP{Num: &n}
		return nil
	}
	var s string
	if err := json.Unmarshal(b, &s); err != nil || !dscpNames[strings.ToUpper(strings.TrimSpace(s))] {
		return errors.New("want a DSCP value: 0 to 63, or a name such as DF, EF, AF11 to AF43, CS0 to CS6")
	}
	*d = DSCP{Name: s}
	return nil
}

// MarshalJSON writes the value as it was given.
func (d DSCP) MarshalJSON() ([]byte, error) {
	if d.Num != nil {
		return json.Marshal(*d.Num)
	}
	return json.Marshal(d.Name)
}

// Calico's text formats, for the check rules.
var (
	ifaceRe            = regexp.MustCompile(`^[a-zA-Z0-9_.-]{1,15}$`)
	ifaceFilterRe      = regexp.MustCompile(`^[a-zA-Z0-9:._+-]{1,15}$`)
	ifaceWildcardRe    = regexp.MustCompile(`^[a-zA-Z0-9_.*-]{1,15}$`)
	keyValueRe         = regexp.MustCompile(`^\s*(\w+)=(.*)$`)
	featureOverrideRe  = regexp.MustCompile(`^([a-zA-Z0-9-_]+=(true|false|),)*([a-zA-Z0-9-_]+=(true|false|))?$`)
	featureGatesRe     = regexp.MustCompile(`^([a-zA-Z0-9-_]+=([^=]+),)*([a-zA-Z0-9-_]+=([^=]+))?$`)
	logPrefixRe        = regexp.MustCompile(`^([a-zA-Z0-9%: /_-])*$`)
	rateLimitRe        = regexp.MustCompile(`^[1-9]\d{0,3}/(?:second|minute|hour|day)$`)
	prometheusHostRe   = regexp.MustCompile(`^[a-zA-Z0-9:._+-]{1,64}$`)
	healthNameRe       = regexp.MustCompile(`^[a-zA-Z0-9_ -]+$`)
	conntrackTimeoutRe = regexp.MustCompile(`^(([0-9]*(\.[0-9]*)?(ms|s|h|m|us)+)+|Auto)$`)
	standardCommRe     = regexp.MustCompile(`^(\d+):(\d+)$`)
	largeCommRe        = regexp.MustCompile(`^(\d+):(\d+):(\d+)$`)
)

// namedChecks are the check rules with a name; each returns why the value
// is refused, or "".
var namedChecks = map[string]func(string) string{
	"ip": func(s string) string {
		if _, err := netip.ParseAddr(s); err != nil {
			return "not an IP address"
		}
		return ""
	},
	"ipv4": func(s string) string {
		if a, err := netip.ParseAddr(s); err != nil || !a.Is4() {
			return "not an IPv4 address"
		}
		return ""
	},
	"ipv6": func(s string) string {
		if a, err := netip.ParseAddr(s); err != nil || !a.Is6() || a.Is4In6() {
			return "not an IPv6 address"
		}
		return ""
	},
	"cidr":   func(s string) string { return cidrReason(s, 0, false) },
	"cidrv4": func(s string) string { return cidrReason(s, 4, false) },
	"cidrv6": func(s string) string { return cidrReason(s, 6, false) },
	"net":    func(s string) string { return cidrReason(s, 0, true) },
	"netv4":  func(s string) string { return cidrReason(s, 4, true) },
	"netv6":  func(s string) string { return cidrReason(s, 6, true) },
	"regexp": func(s string) string {
		if _, err := regexp.Compile(s); err != nil {
			return "not a regular expression: " + err.Error()
		}
		return ""
	},
	"selector": func(s string) string {
		if _, err := selector.Parse(s); err != nil {
			return err.Error()
		}
		return ""
	},
	"name": func(s string) string {
		if !dnsSubdomain(s) {
			return "want lower-case letters, digits, '-' and '.', starting and ending with a letter or digit"
		}
		return ""
	},
	"dnsLabel": func(s string) string {
		if !dnsSubdomain(s) || strings.Contains(s, ".") || len(s) > 63 {
			return "want a DNS label: lower-case letters, digits and '-', at most 63"
		}
		return ""
	},
	"iface":            regexReason(ifaceRe, "want an interface name: letters, digits, '_', '.', '-', at most 15"),
	"ifaceFilter":      regexReason(ifaceFilterRe, "want an interface name, '+' as a wildcard: letters, digits, ':', '_', '.', '+', '-', at most 15"),
	"ignoredInterface": regexReason(ifaceWildcardRe, "want an interface name, '*' as a wildcard: letters, digits, '_', '.', '*', '-', at most 15"),
	"bgpFilterInterface": func(s string) string {
		if s == "*" || ifaceWildcardRe.MatchString(s) {
			return ""
		}
		return "want an interface name, '*' as a wildcard: letters, digits, '_', '.', '*', '-', at most 15"
	},
	"keyValueList": func(s string) string {
		for item := range strings.SplitSeq(s, ",") {
			if item != "" && !keyValueRe.MatchString(item) {
				return "want a comma-separated list of key=value"
			}
		}
		return ""
	},
	"featureOverrides": regexReason(featureOverrideRe, "want a comma-separated list of Feature=true, Feature=false or Feature="),
	"featureGates":     regexReason(featureGatesRe, "want a comma-separated list of Feature=value"),
	"logPrefix":        regexReason(logPrefixRe, "want letters, digits, spaces and % : / _ -"),
	"rateLimit":        regexReason(rateLimitRe, `want N/second, N/minute, N/hour or N/day, N from 1 to 9999, e.g. "10/second"`),
	"prometheusHost":   regexReason(prometheusHostRe, "want a host name or address: letters, digits, ':', '.', '_', '+', '-', at most 64"),
	"healthName":       regexReason(healthNameRe, "want letters, digits, '_', ' ' and '-'"),
	"conntrackTimeout": regexReason(conntrackTimeoutRe, `want a duration such as "30s" or "1h", or Auto`),
	"community": func(s string) string {
		if !validCommunity(s) {
			return "want a standard community aa:nn (16-bit numbers) or a large one aa:nn:mm (32-bit numbers)"
		}
		return ""
	},
	"wireguardKey": func(s string) string {
		if b, err := base64.StdEncoding.DecodeString(s); err != nil || len(b) != 32 {
			return "not a WireGuard public key (32 bytes in base64)"
		}
		return ""
	},
}

func regexReason(re *regexp.Regexp, why string) func(string) string {
	return func(s string) string {
		if re.MatchString(s) {
			return ""
		}
		return why
	}
}

// parseCIDROrIP reads "10.0.0.0/8" or "10.0.0.1" (a /32), as Calico's
// ParseCIDROrIP does, returning the address as written and the prefix.
func parseCIDROrIP(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		return netip.ParsePrefix(s)
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// cidrReason checks an address or CIDR of the IP family fam (0: any);
// strict wants no host bits set.
func cidrReason(s string, fam int, strict bool) string {
	want := "an IP address or CIDR"
	switch fam {
	case 4:
		want = "an IPv4 address or CIDR"
	case 6:
		want = "an IPv6 address or CIDR"
	}
	p, err := parseCIDROrIP(s)
	switch {
	case err != nil || p.Addr().Zone() != "":
		return "not " + want
	case fam == 4 && !p.Addr().Is4(), fam == 6 && !p.Addr().Is6():
		return "not " + want
	case strict && p.Masked() != p:
		return fmt.Sprintf("not strictly masked: it has host bits set (did you mean %s?)", p.Masked())
	}
	return ""
}

// validCommunity reports whether s is a standard BGP community aa:nn
// (16-bit parts) or a large one aa:nn:mm (32-bit parts).
func validCommunity(s string) bool {
	bits := 0
	switch {
	case standardCommRe.MatchString(s):
		bits = 16
	case largeCommRe.MatchString(s):
		bits = 32
	default:
		return false
	}
	for part := range strings.SplitSeq(s, ":") {
		if _, err := strconv.ParseUint(part, 10, bits); err != nil {
			return false
		}
	}
	return true
}

// fieldName is a struct field's JSON name ("" for one not in JSON).
func fieldName(f reflect.StructField) string {
	name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
	if name == "-" || !f.IsExported() {
		return ""
	}
	if name == "" {
		return f.Name
	}
	return name
}

// structChecker is a type with rules relating its fields; checkFields
// calls it for every value of the type it meets, at the value's path.
type structChecker interface {
	check(path string) []error
}

// checkFields applies the check tags of v's fields (v a struct or a
// pointer to one), recursively, naming fields by their path from path.
func checkFields(v any, path string) []error {
	var errs []error
	walkCheck(reflect.ValueOf(v), path, &errs)
	return errs
}

func walkCheck(v reflect.Value, path string, errs *[]error) {
	for v.Kind() == reflect.Pointer || v.Kind() == reflect.Interface {
		if v.IsNil() {
			return
		}
		v = v.Elem()
	}
	switch v.Kind() {
	case reflect.Struct:
		if c, ok := v.Interface().(structChecker); ok {
			*errs = append(*errs, c.check(path)...)
		} else if v.CanAddr() {
			if c, ok := v.Addr().Interface().(structChecker); ok {
				*errs = append(*errs, c.check(path)...)
			}
		}
		t := v.Type()
		for i := range t.NumField() {
			f := t.Field(i)
			name := fieldName(f)
			if name == "" {
				continue
			}
			fp := path + "." + name
			if rules := f.Tag.Get("check"); rules != "" {
				applyRules(v.Field(i), fp, rules, errs)
			}
			walkCheck(v.Field(i), fp, errs)
		}
	case reflect.Slice, reflect.Array:
		for i := range v.Len() {
			walkCheck(v.Index(i), fmt.Sprintf("%s[%d]", path, i), errs)
		}
	case reflect.Map:
		keys := v.MapKeys()
		sort.Slice(keys, func(i, j int) bool { return fmt.Sprint(keys[i]) < fmt.Sprint(keys[j]) })
		for _, k := range keys {
			walkCheck(v.MapIndex(k), fmt.Sprintf("%s[%v]", path, k), errs)
		}
	}
}

// applyRules checks one field's value against its rules.
func applyRules(v reflect.Value, path, rules string, errs *[]error) {
	bad := func(f string, a ...any) { *errs = append(*errs, fmt.Errorf(f, a...)) }
	for v.Kind() == reflect.Pointer {
		if v.IsNil() {
			if strings.Contains(","+rules+",", ",required,") {
				bad("%s is required", path)
			}
			return
		}
		v = v.Elem()
	}
	if v.Kind() == reflect.Slice || v.Kind() == reflect.Map {
		if v.Len() == 0 && strings.Contains(","+rules+",", ",required,") {
			bad("%s is required", path)
		}
		each := strings.ReplaceAll(","+rules+",", ",required,", ",")
		if v.Kind() == reflect.Slice {
			for i := range v.Len() {
				applyRules(v.Index(i), fmt.Sprintf("%s[%d]", path, i), strings.Trim(each, ","), errs)
			}
		}
		return
	}
	if v.IsZero() {
		if strings.Contains(","+rules+",", ",required,") {
			bad("%s is required", path)
		}
		return
	}
	var lo, hi *int64
	for rule := range strings.SplitSeq(rules, ",") {
		name, arg, _ := strings.Cut(rule, "=")
		switch name {
		case "", "required":
		case "oneof", "oneofi":
			s := v.String()
			ok := false
			for want := range strings.SplitSeq(arg, "|") {
				ok = ok || s == want || (name == "oneofi" && strings.EqualFold(s, want))
			}
			if !ok {
				bad("%s %q: want %s", path, s, orList(strings.Split(arg, "|")))
			}
		case "min", "max":
			n, err := strconv.ParseInt(arg, 10, 64)
			if err != nil {
				panic(fmt.Sprintf("resources: bad rule %q at %s", rule, path))
			}
			if name == "min" {
				lo = &n
			} else {
				hi = &n
			}
		default:
			f, ok := namedChecks[name]
			if !ok {
				panic(fmt.Sprintf("resources: unknown rule %q at %s", rule, path))
			}
			if why := f(v.String()); why != "" {
				bad("%s %q: %s", path, v.String(), why)
			}
		}
	}
	if lo != nil || hi != nil {
		var n int64
		switch v.Kind() {
		case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
			n = v.Int()
		case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
			n = int64(v.Uint())
		default:
			panic(fmt.Sprintf("resources: range rule on %s at %s", v.Kind(), path))
		}
		switch {
		case lo != nil && hi != nil && (n < *lo || n > *hi):
			bad("%s %d out of range %d-%d", path, n, *lo, *hi)
		case lo != nil && hi == nil && n < *lo:
			bad("%s %d: want at least %d", path, n, *lo)
		case hi != nil && lo == nil && n > *hi:
			bad("%s %d: want at most %d", path, n, *hi)
		}
	}
}

// orList writes "A, B or C".
func orList(s []string) string {
	if len(s) < 2 {
		return strings.Join(s, "")
	}
	return strings.Join(s[:len(s)-1], ", ") + " or " + s[len(s)-1]
}

// extraNotActedOn is a resource with values (rather than whole fields)
// tortie does not act on yet, such as an IPv6 CIDR: it names them as
// "spec.cidr IPv6".
type extraNotActedOn interface {
	notActedOnValues() []string
}

// NotActedOn lists the fields of o that tortie keeps but does not act on
// yet and that o sets, as "<Kind>.spec.<field>" (values, such as an IPv6
// CIDR, as "<Kind>.spec.<field> <what>").
func NotActedOn(o Object) []string {
	v := reflect.ValueOf(o)
	kind := v.Elem().Type().Name()
	var out []string
	walkStored(v, kind, false, &out)
	if e, ok := o.(extraNotActedOn); ok {
		for _, s := range e.notActedOnValues() {
			out = append(out, kind+"."+s)
		}
	}
	// The elements of a list are named alike: each field once.
	seen := map[string]bool{}
	return slices.DeleteFunc(out, func(f string) bool {
		dup := seen[f]
		seen[f] = true
		return dup
	})
}

func walkStored(v reflect.Value, path string, eachField bool, out *[]string) {
	for v.Kind() == reflect.Pointer {
		if v.IsNil() {
			return
		}
		v = v.Elem()
	}
	if v.Kind() != reflect.Struct {
		return
	}
	t := v.Type()
	for i := range t.NumField() {
		f := t.Field(i)
		name := fieldName(f)
		if name == "" {
			continue
		}
		fv, fp := v.Field(i), path+"."+name
		switch {
		case eachField:
			if present(fv) {
				*out = append(*out, fp)
			}
		case f.Tag.Get("tortie") == "stored" && fv.Kind() == reflect.Struct && !isValueType(fv.Type()):
			walkStored(fv, fp, true, out)
		case f.Tag.Get("tortie") == "stored":
			if present(fv) {
				*out = append(*out, fp)
			}
		case fv.Kind() == reflect.Slice:
			// A list of mappings: each element's fields, under the
			// list's name.
			for j := range fv.Len() {
				walkStored(fv.Index(j), fp, false, out)
			}
		default:
			walkStored(fv, fp, false, out)
		}
	}
}

// isValueType reports whether t is a struct written as one value (a
// duration, a port) rather than a mapping of fields.
func isValueType(t reflect.Type) bool {
	_, ok := reflect.New(t).Interface().(json.Marshaler)
	if !ok {
		_, ok = reflect.New(t).Interface().(interface{ MarshalText() ([]byte, error) })
	}
	return ok
}

// present says whether a field is set: not nil, not empty, not zero.
func present(v reflect.Value) bool {
	switch v.Kind() {
	case reflect.Pointer, reflect.Interface:
		return !v.IsNil()
	case reflect.Slice, reflect.Map:
		return v.Len() > 0
	}
	return !v.IsZero()
}

// Warnings says, once for each field, which fields the objects set that
// tortie keeps but does not act on yet: "accepted; tortie does not act on
// <Kind>.spec.<field> yet".
func Warnings(objs []Object) []string {
	seen := map[string]bool{}
	out := []string{}
	for _, o := range objs {
		for _, f := range NotActedOn(o) {
			if !seen[f] {
				seen[f] = true
				out = append(out, "accepted; tortie does not act on "+f+" yet")
			}
		}
	}
	return out
}
