package resources

import (
	"context"
	"fmt"
)

// KindBGPFilter is Calico's BGPFilter.
const KindBGPFilter = "BGPFilter"

// BGPFilter holds ordered rules that accept or reject routes imported from
// or exported to the BGPPeers naming it in their filters. tortie's speaker
// applies the IPv4 rules (it peers over IPv4 only) and keeps the IPv6 ones.
type BGPFilter struct {
	APIVersion string        `json:"apiVersion"`
	Kind       string        `json:"kind"`
	Metadata   Meta          `json:"metadata"`
	Spec       BGPFilterSpec `json:"spec"`
}

// BGPFilterSpec mirrors Calico's: rules for IPv4 and IPv6, export and
// import.
type BGPFilterSpec struct {
	ExportV4 []BGPFilterRule `json:"exportV4,omitempty"`
	ImportV4 []BGPFilterRule `json:"importV4,omitempty"`
	ExportV6 []BGPFilterRule `json:"exportV6,omitempty" tortie:"stored"`
	ImportV6 []BGPFilterRule `json:"importV6,omitempty" tortie:"stored"`
}

// BGPFilterRule matches routes (by CIDR and prefix length, source,
// interface, peer type, communities, AS path, priority) and accepts or
// rejects them, accepted ones after its operations. The IPv4 and IPv6
// rules have the same fields; the family of cidr and the prefix lengths
// are checked against the list the rule is in.
type BGPFilterRule struct {
	CIDR          string                 `json:"cidr,omitempty"`
	PrefixLength  *BGPFilterPrefixLength `json:"prefixLength,omitempty"`
	Source        string                 `json:"source,omitempty" check:"oneof=RemotePeers"`
	Interface     string                 `json:"interface,omitempty" check:"bgpFilterInterface"`
	MatchOperator string                 `json:"matchOperator,omitempty" check:"oneof=Equal|NotEqual|In|NotIn"`
	PeerType      string                 `json:"peerType,omitempty" check:"oneof=eBGP|iBGP"`
	// A rule matching on a priority is kept but never matches: tortie's
	// routes have no priority.
	Communities  *BGPFilterCommunities `json:"communities,omitempty"`
	ASPathPrefix []ASNumber            `json:"asPathPrefix,omitempty"`
	Priority     *int                  `json:"priority,omitempty" check:"min=1,max=2147483646" tortie:"stored"`
	Action       string                `json:"action" check:"required,oneof=Accept|Reject"`
	Operations   []BGPFilterOperation  `json:"operations,omitempty"`
}

// BGPFilterPrefixLength bounds the prefix length of matched routes.
type BGPFilterPrefixLength struct {
	Min *int32 `json:"min,omitempty"`
	Max *int32 `json:"max,omitempty"`
}

// BGPFilterCommunities matches routes carrying a community (Calico takes
// exactly one value).
type BGPFilterCommunities struct {
	Values []string `json:"values" check:"required,community"`
}

// BGPFilterOperation changes an accepted route: exactly one of its fields.
type BGPFilterOperation struct {
	AddCommunity  *BGPFilterAddCommunity  `json:"addCommunity,omitempty"`
	PrependASPath *BGPFilterPrependASPath `json:"prependASPath,omitempty" tortie:"stored"`
	SetPriority   *BGPFilterSetPriority   `json:"setPriority,omitempty" tortie:"stored"`
}

// BGPFilterAddCommunity adds a community to the route.
type BGPFilterAddCommunity struct {
	Value string `json:"value" check:"required,community"`
}

// BGPFilterPrependASPath prepends AS numbers to the route's AS path.
type BGPFilterPrependASPath struct {
	Prefix []ASNumber `json:"prefix" check:"required"`
}

// BGPFilterSetPriority sets the route's priority (metric).
type BGPFilterSetPriority struct {
	Value *int `json:"value" check:"required,min=1,max=2147483646"`
}

// Validate checks a BGPFilter as Calico does.
func (f *BGPFilter) Validate() error {
	var errs []error
	if err := checkResourceName(f.Metadata.Name); err != nil {
		errs = append(errs, err)
	}
	errs = append(errs, checkFields(&f.Spec, "spec")...)
	for _, l := range []struct {
		name  string
		rules []BGPFilterRule
		bits  int
	}{{"exportV4", f.Spec.ExportV4, 32}, {"importV4", f.Spec.ImportV4, 32}, {"exportV6", f.Spec.ExportV6, 128}, {"importV6", f.Spec.ImportV6, 128}} {
		for i, r := range l.rules {
			errs = append(errs, r.checkFamily(fmt.Sprintf("spec.%s[%d]", l.name, i), l.bits)...)
		}
	}
	return wrap(KindBGPFilter, f.Metadata.Name, errs)
}

// check holds the rules relating a rule's fields, whatever its family.
func (r BGPFilterRule) check(path string) []error {
	var errs []error
	bad := func(f string, a ...any) { errs = append(errs, fmt.Errorf(f, a...)) }
	switch {
	case r.CIDR != "" && r.MatchOperator == "":
		bad("%s.matchOperator is required when cidr is set", path)
	case r.CIDR == "" && r.MatchOperator != "":
		bad("%s.cidr is required when matchOperator is set", path)
	}
	if r.CIDR == "" && r.PrefixLength != nil {
		bad("%s.cidr is required when prefixLength is set", path)
	}
	if len(r.Operations) > 0 && r.Action != "Accept" {
		bad("%s.operations may only be used with action Accept", path)
	}
	if len(r.Operations) > 10 {
		bad("%s.operations: at most 10, got %d", path, len(r.Operations))
	}
	if c := r.Communities; c != nil && len(c.Values) > 1 {
		bad("%s.communities.values: exactly one value, got %d", path, len(c.Values))
	}
	return errs
}

// checkFamily checks what depends on the rule's list: the CIDR's family
// and the prefix lengths (bits: 32 or 128).
func (r BGPFilterRule) checkFamily(path string, bits int) []error {
	var errs []error
	rule, fam := "netv4", "IPv4"
	if bits == 128 {
		rule, fam = "netv6", "IPv6"
	}
	if r.CIDR != "" {
		if why := namedChecks[rule](r.CIDR); why != "" {
			errs = append(errs, fmt.Errorf("%s.cidr %q: %s (an %s rule)", path, r.CIDR, why, fam))
		}
	}
	if pl := r.PrefixLength; pl != nil {
		for name, v := range map[string]*int32{"min": pl.Min, "max": pl.Max} {
			if v != nil && (*v < 0 || int(*v) > bits) {
				errs = append(errs, fmt.Errorf("%s.prefixLength.%s %d out of range 0-%d", path, name, *v, bits))
			}
		}
	}
	sortErrors(errs)
	return errs
}

// check refuses an operation setting none or several of its fields.
func (o BGPFilterOperation) check(path string) []error {
	n := 0
	for _, set := range []bool{o.AddCommunity != nil, o.PrependASPath != nil, o.SetPriority != nil} {
		if set {
			n++
		}
	}
	if n != 1 {
		return []error{fmt.Errorf("%s: exactly one of addCommunity, prependASPath and setPriority, got %d", path, n)}
	}
	return nil
}

// check bounds the AS numbers prepended.
func (p BGPFilterPrependASPath) check(path string) []error {
	if len(p.Prefix) > 10 {
		return []error{fmt.Errorf("%s.prefix: at most 10 AS numbers, got %d", path, len(p.Prefix))}
	}
	return nil
}

func (f *BGPFilter) key() string { return Prefix + "bgpfilters/" + f.Metadata.Name }
func (f *BGPFilter) setVersion() { f.APIVersion, f.Kind = CalicoAPIVersion, KindBGPFilter }

// BGPFilters lists every BGPFilter.
func (c Client) BGPFilters(ctx context.Context) ([]*BGPFilter, error) {
	out, _, err := list[BGPFilter](ctx, c, KindBGPFilter)
	return out, err
}
