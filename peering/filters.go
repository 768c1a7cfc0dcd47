package peering

import (
	"fmt"
	"net/netip"
	"path"

	"github.com/tortie-net/tortie/bgp"
	"github.com/tortie-net/tortie/resources"
)

// peerRules turns the IPv4 rules of the BGPFilters a BGPPeer names, in
// the peer's order, into the speaker's rules for one direction, as
// Calico's BIRD configuration reads them: the first rule that matches
// decides, on export before Calico's own export rules.
//
// What a rule matches on is settled here when it depends on the peer or
// the node rather than on the route: peerType (the session is eBGP when
// the peer's AS number differs from ours), and interface. Pods have no
// host-side interface in tortie, and blocks and Service ranges are
// blackholes, so the only routes with an interface are those learnt from
// peers, reached through the underlay interface nic: a rule whose
// interface pattern matches nic matches learnt routes, other interface
// rules match nothing. A rule tortie cannot evaluate (it matches on a
// priority: tortie's routes have none) is left out with a warning, rather
// than matching more than it says; of the operations, addCommunity is
// applied, the others are not.
func peerRules(names []string, filters map[string]*resources.BGPFilter, export, ebgp bool, nic string, warn func(string)) []bgp.Rule {
	var out []bgp.Rule
	dir := "importV4"
	if export {
		dir = "exportV4"
	}
	for _, name := range names {
		f := filters[name]
		if f == nil {
			if !export { // said once for both directions
				warn(fmt.Sprintf("BGPFilter %s does not exist; its rules are not applied", name))
			}
			continue
		}
		rules := f.Spec.ImportV4
		if export {
			rules = f.Spec.ExportV4
		}
		for i, r := range rules {
			where := fmt.Sprintf("BGPFilter %s %s[%d]", name, dir, i)
			if rule, ok := convertRule(r, export, ebgp, nic, where, warn); ok {
				out = append(out, rule)
			}
		}
	}
	return out
}

// convertRule gives the speaker's rule for r, or false when r can match
// nothing on this session.
func convertRule(r resources.BGPFilterRule, export, ebgp bool, nic, where string, warn func(string)) (bgp.Rule, bool) {
	switch {
	case r.Priority != nil:
		warn(where + ": not applied: tortie's routes have no priority to match")
		return bgp.Rule{}, false
	case r.PeerType == "eBGP" && !ebgp, r.PeerType == "iBGP" && ebgp:
		return bgp.Rule{}, false
	}
	rule := bgp.Rule{Accept: r.Action == "Accept"}
	if c := r.Communities; c != nil {
		if len(c.Values) != 1 {
			warn(fmt.Sprintf("%s: communities: want one value, got %d; rule not applied", where, len(c.Values)))
			return bgp.Rule{}, false
		}
		v, err := bgp.ParseCommunity(c.Values[0])
		if err != nil {
			warn(fmt.Sprintf("%s: %v; rule not applied", where, err))
			return bgp.Rule{}, false
		}
		rule.Community = &v
	}
	for _, as := range r.ASPathPrefix {
		rule.ASPathPrefix = append(rule.ASPathPrefix, uint32(as))
	}
	for j, op := range r.Operations {
		switch {
		case op.AddCommunity != nil && rule.Accept:
			v, err := bgp.ParseCommunity(op.AddCommunity.Value)
			if err != nil {
				warn(fmt.Sprintf("%s.operations[%d]: %v; not applied", where, j, err))
				continue
			}
			rule.AddCommunities = append(rule.AddCommunities, v)
		case op.PrependASPath != nil || op.SetPriority != nil:
			warn(fmt.Sprintf("%s.operations[%d]: not applied: tortie does not prepend AS numbers or set priorities yet", where, j))
		}
	}
	if r.Interface != "" {
		if ok, err := path.Match(r.Interface, nic); err != nil || !ok {
			return bgp.Rule{}, false
		}
		rule.Learnt = export
	}
	if r.Source == "RemotePeers" {
		rule.Learnt = export
	}
	if r.CIDR == "" {
		return rule, true
	}
	cidr, err := netip.ParsePrefix(r.CIDR)
	if err != nil || !cidr.Addr().Is4() {
		warn(fmt.Sprintf("%s: cidr %q is not an IPv4 CIDR; rule not applied", where, r.CIDR))
		return bgp.Rule{}, false
	}
	cidr = cidr.Masked()
	// The prefix lengths matched: Calico's prefix set cidr{lo,hi}, lo at
	// least the CIDR's own length. Equal and NotEqual match the CIDR
	// itself, when its length is in the range.
	lo, hi := cidr.Bits(), 32
	if pl := r.PrefixLength; pl != nil {
		if pl.Min != nil {
			lo = max(lo, int(*pl.Min))
		}
		if pl.Max != nil {
			hi = min(hi, int(*pl.Max))
		}
	}
	var exact bool
	switch r.MatchOperator {
	case "Equal", "NotEqual":
		exact = true
	case "In", "NotIn":
	default:
		warn(fmt.Sprintf("%s: matchOperator %q unknown; rule not applied", where, r.MatchOperator))
		return bgp.Rule{}, false
	}
	invert := r.MatchOperator == "NotEqual" || r.MatchOperator == "NotIn"
	if exact {
		if lo > cidr.Bits() || hi < cidr.Bits() {
			lo, hi = 1, 0 // the CIDR's length is out of range: nothing
		} else {
			lo, hi = cidr.Bits(), cidr.Bits()
		}
	}
	if lo > hi {
		// The set is empty: In and Equal match nothing, their inverses
		// every route.
		if !invert {
			return bgp.Rule{}, false
		}
		return rule, true
	}
	rule.Prefix, rule.MinLen, rule.MaxLen, rule.Invert = cidr, lo, hi, invert
	return rule, true
}

// communities gives the communities node me attaches to advertised
// routes: the prefixAdvertisements of its own BGPConfiguration
// ("node.<me>") when it has some, else those of "default", as Calico
// does. A community is a value (aa:nn or aa:nn:mm) or the name of one in
// the communities of the same resource, or of "default".
func communities(me string, all []*resources.BGPConfiguration, warn func(string)) []bgp.PrefixCommunities {
	var def, mine *resources.BGPConfiguration
	for _, c := range all {
		switch c.Metadata.Name {
		case "default":
			def = c
		case "node." + me:
			mine = c
		}
	}
	src := def
	if mine != nil && len(mine.Spec.PrefixAdvertisements) > 0 {
		src = mine
	}
	if src == nil {
		return nil
	}
	named := map[string]string{}
	for _, c := range []*resources.BGPConfiguration{def, src} {
		if c != nil {
			for _, n := range c.Spec.Communities {
				named[n.Name] = n.Value
			}
		}
	}
	var out []bgp.PrefixCommunities
	for i, pa := range src.Spec.PrefixAdvertisements {
		where := fmt.Sprintf("BGPConfiguration %s prefixAdvertisements[%d]", src.Metadata.Name, i)
		p, err := netip.ParsePrefix(pa.CIDR)
		if err != nil {
			if a, err2 := netip.ParseAddr(pa.CIDR); err2 == nil {
				p, err = netip.PrefixFrom(a, a.BitLen()), nil
			}
		}
		if err != nil {
			warn(fmt.Sprintf("%s: cidr %q is not a CIDR; not applied", where, pa.CIDR))
			continue
		}
		if !p.Addr().Is4() {
			continue // the speaker advertises IPv4 only; reported when applied
		}
		pc := bgp.PrefixCommunities{Prefix: p.Masked()}
		for _, v := range pa.Communities {
			if n, ok := named[v]; ok {
				v = n
			}
			c, err := bgp.ParseCommunity(v)
			if err != nil {
				warn(fmt.Sprintf("%s: %v; not attached", where, err))
				continue
			}
			pc.Communities = append(pc.Communities, c)
		}
		if len(pc.Communities) > 0 {
			out = append(out, pc)
		}
	}
	return out
}
