package bgp

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	api "github.com/osrg/gobgp/v4/api"
	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"
)

// Routes are filtered and changed on their way in and out by two GoBGP
// policies assigned to the global RIB, each accepting what none of its
// statements decides. GoBGP keeps per-peer policies for route-server
// clients only, so a peer's statements start with a condition on the
// peer's address: on import GoBGP evaluates it against the peer a route
// came from, on export against the peer it is going to.
const (
	importPolicy = "tortie-import"
	exportPolicy = "tortie-export"
)

// NextHopMode says which next hop the routes sent to a peer carry.
type NextHopMode uint8

// Next hop modes, as Calico's BGPPeer nextHopMode.
const (
	NextHopAuto NextHopMode = iota // BGP's rules: ours toward eBGP peers, the route's own toward iBGP peers
	NextHopSelf                    // always our address
	NextHopKeep                    // always the route's own next hop
)

func (m NextHopMode) String() string {
	return [...]string{"Auto", "Self", "Keep", "?"}[min(int(m), 3)]
}

// Rule is one rule of a peer's route filter, in the shape of Calico's
// BGPFilter rules: a peer's rules are tried in order, the first that
// matches accepts or rejects the route, and a route none matches goes on
// (on import it is accepted; on export it is advertised as usual).
type Rule struct {
	// Prefix, when valid, makes the rule match only routes inside it
	// whose prefix length is MinLen to MaxLen (Prefix's own length alone
	// for Calico's Equal); Invert matches the routes that are not.
	Prefix         netip.Prefix
	MinLen, MaxLen int
	Invert         bool
	// Learnt makes an export rule match only routes learnt from peers,
	// not those this node originates (every imported route is learnt).
	Learnt bool
	// Community, when set, makes the rule match only routes carrying it.
	Community *Community
	// ASPathPrefix, when set, makes the rule match only routes whose AS
	// path starts with these AS numbers (on export, the path before our
	// own AS number is put in front of it for an eBGP peer).
	ASPathPrefix []uint32
	Accept       bool
	// AddCommunities are added to the routes an accepting rule matches.
	AddCommunities []Community
}

func (r Rule) String() string {
	var b strings.Builder
	if r.Accept {
		b.WriteString("accept")
	} else {
		b.WriteString("reject")
	}
	if r.Prefix.IsValid() {
		op := " in "
		if r.Invert {
			op = " not in "
		}
		fmt.Fprintf(&b, "%s%s{%d,%d}", op, r.Prefix, r.MinLen, r.MaxLen)
	}
	if r.Learnt {
		b.WriteString(" learnt")
	}
	if r.Community != nil {
		fmt.Fprintf(&b, " with %s", r.Community)
	}
	if len(r.ASPathPrefix) > 0 {
		fmt.Fprintf(&b, " from %v", r.ASPathPrefix)
	}
	if len(r.AddCommunities) > 0 {
		fmt.Fprintf(&b, " adding %v", r.AddCommunities)
	}
	return b.String()
}

// valid reports whether the rule can be given to GoBGP: an IPv4 prefix
// with lengths in order, or none.
func (r Rule) valid() bool {
	if len(r.AddCommunities) > 0 && !r.Accept {
		return false
	}
	if !r.Prefix.IsValid() {
		return true
	}
	return r.Prefix.Addr().Is4() && r.MinLen >= r.Prefix.Bits() && r.MinLen <= r.MaxLen && r.MaxLen <= 32
}

// addCommunities puts an ADD of each community in act.
func addCommunities(act *api.Actions, cs []Community) {
	for _, c := range cs {
		ca := &act.Community
		if c.Large {
			ca = &act.LargeCommunity
		}
		if *ca == nil {
			*ca = &api.CommunityAction{Type: api.CommunityAction_TYPE_ADD}
		}
		(*ca).Communities = append((*ca).Communities, c.String())
	}
}

// Community is a BGP community: standard (RFC 1997: A:B, 16 bits each)
// or large (RFC 8092: A:B:C, 32 bits each).
type Community struct {
	Large   bool
	A, B, C uint32
}

// ParseCommunity reads "aa:nn" or "aa:nn:mm".
func ParseCommunity(s string) (Community, error) {
	parts := strings.Split(s, ":")
	bits := 16
	if len(parts) == 3 {
		bits = 32
	} else if len(parts) != 2 {
		return Community{}, fmt.Errorf("community %q: want aa:nn or aa:nn:mm", s)
	}
	var v [3]uint32
	for i, p := range parts {
		n, err := strconv.ParseUint(p, 10, bits)
		if err != nil {
			return Community{}, fmt.Errorf("community %q: want aa:nn (16-bit numbers) or aa:nn:mm (32-bit numbers)", s)
		}
		v[i] = uint32(n)
	}
	return Community{Large: bits == 32, A: v[0], B: v[1], C: v[2]}, nil
}

func (c Community) String() string {
	if c.Large {
		return fmt.Sprintf("%d:%d:%d", c.A, c.B, c.C)
	}
	return fmt.Sprintf("%d:%d", c.A, c.B)
}

// PrefixCommunities attaches communities to the routes inside Prefix as
// they are advertised (Calico's prefixAdvertisements).
type PrefixCommunities struct {
	Prefix      netip.Prefix
	Communities []Community
}

// policies builds the GoBGP policies for peers (sorted by address) of a
// speaker in AS localASN and communities: on export, each peer's next hop
// action, then its rules, then the communities; on import, each peer's
// rules. Rules GoBGP could not take are left out and returned as warnings.
func policies(localASN uint32, peers []Peer, comms []PrefixCommunities) (*api.SetPoliciesRequest, []string) {
	req := &api.SetPoliciesRequest{}
	var imp, exp []*api.Statement
	var warnings []string
	prefixSet := func(name string, p netip.Prefix, lo, hi int) *api.MatchSet {
		req.DefinedSets = append(req.DefinedSets, &api.DefinedSet{DefinedType: api.DefinedType_DEFINED_TYPE_PREFIX, Name: name,
			Prefixes: []*api.Prefix{{IpPrefix: p.Masked().String(), MaskLengthMin: uint32(lo), MaskLengthMax: uint32(hi)}}})
		return &api.MatchSet{Type: api.MatchSet_TYPE_ANY, Name: name}
	}
	for _, p := range peers {
		if len(p.Import) == 0 && len(p.Export) == 0 && p.NextHop == NextHopAuto {
			continue
		}
		a := p.Address.String()
		nset := "peer-" + a
		req.DefinedSets = append(req.DefinedSets, &api.DefinedSet{DefinedType: api.DefinedType_DEFINED_TYPE_NEIGHBOR, Name: nset,
			List: []string{netip.PrefixFrom(p.Address, 32).String()}})
		neighbor := func() *api.MatchSet { return &api.MatchSet{Type: api.MatchSet_TYPE_ANY, Name: nset} }
		switch p.NextHop {
		case NextHopSelf, NextHopKeep:
			exp = append(exp, &api.Statement{Name: "nexthop-" + a, Conditions: &api.Conditions{NeighborSet: neighbor()},
				Actions: &api.Actions{Nexthop: &api.NexthopAction{Self: p.NextHop == NextHopSelf, Unchanged: p.NextHop == NextHopKeep}}})
		}
		for _, dir := range []struct {
			name  string
			rules []Rule
			out   *[]*api.Statement
		}{{"import", p.Import, &imp}, {"export", p.Export, &exp}} {
			for i, r := range dir.rules {
				if !r.valid() {
					warnings = append(warnings, fmt.Sprintf("peer %s: %s rule %d (%s) left out: not an IPv4 prefix with lengths in order, or communities added by a reject", a, dir.name, i, r))
					continue
				}
				name := fmt.Sprintf("%s-%s-%d", dir.name, a, i)
				var sets []*api.DefinedSet // named after the statement and their type
				if r.Prefix.IsValid() {
					sets = append(sets, &api.DefinedSet{DefinedType: api.DefinedType_DEFINED_TYPE_PREFIX, Name: "prefix-" + name,
						Prefixes: []*api.Prefix{{IpPrefix: r.Prefix.Masked().String(), MaskLengthMin: uint32(r.MinLen), MaskLengthMax: uint32(r.MaxLen)}}})
				}
				if c := r.Community; c != nil {
					typ := api.DefinedType_DEFINED_TYPE_COMMUNITY
					if c.Large {
						typ = api.DefinedType_DEFINED_TYPE_LARGE_COMMUNITY
					}
					sets = append(sets, &api.DefinedSet{DefinedType: typ, Name: "community-" + name, List: []string{"^" + c.String() + "$"}})
				}
				if len(r.ASPathPrefix) > 0 {
					// GoBGP matches the path written "65001 65002" against a
					// regular expression in which "_" is a boundary. On
					// export to an eBGP peer it has already put our AS
					// number first.
					re := "^"
					if dir.name == "export" && p.ASN != localASN {
						re += strconv.FormatUint(uint64(localASN), 10) + "_"
					}
					for _, as := range r.ASPathPrefix {
						re += strconv.FormatUint(uint64(as), 10) + "_"
					}
					sets = append(sets, &api.DefinedSet{DefinedType: api.DefinedType_DEFINED_TYPE_AS_PATH, Name: "aspath-" + name, List: []string{re}})
				}
				req.DefinedSets = append(req.DefinedSets, sets...)
				cond := func() *api.Conditions {
					c := &api.Conditions{NeighborSet: neighbor()}
					for _, set := range sets {
						m := &api.MatchSet{Type: api.MatchSet_TYPE_ANY, Name: set.Name}
						switch set.DefinedType {
						case api.DefinedType_DEFINED_TYPE_PREFIX:
							c.PrefixSet = m
							if r.Invert {
								m.Type = api.MatchSet_TYPE_INVERT
							}
						case api.DefinedType_DEFINED_TYPE_COMMUNITY:
							c.CommunitySet = m
						case api.DefinedType_DEFINED_TYPE_LARGE_COMMUNITY:
							c.LargeCommunitySet = m
						case api.DefinedType_DEFINED_TYPE_AS_PATH:
							c.AsPathSet = m
						}
					}
					return c
				}
				act := &api.Actions{RouteAction: api.RouteAction_ROUTE_ACTION_REJECT}
				if r.Accept {
					act.RouteAction = api.RouteAction_ROUTE_ACTION_ACCEPT
					addCommunities(act, r.AddCommunities)
				}
				if !r.Learnt || dir.name == "import" {
					*dir.out = append(*dir.out, &api.Statement{Name: name, Conditions: cond(), Actions: act})
					continue
				}
				// Learnt from an iBGP or an eBGP peer: GoBGP's route
				// types cannot say "not local" in one condition.
				for _, rt := range []api.Conditions_RouteType{api.Conditions_ROUTE_TYPE_INTERNAL, api.Conditions_ROUTE_TYPE_EXTERNAL} {
					c := cond()
					c.RouteType = rt
					*dir.out = append(*dir.out, &api.Statement{Name: fmt.Sprintf("%s-%d", name, rt), Conditions: c, Actions: act})
				}
			}
		}
	}
	for i, pc := range comms {
		if !pc.Prefix.Addr().Is4() || len(pc.Communities) == 0 {
			continue
		}
		act := &api.Actions{}
		addCommunities(act, pc.Communities)
		name := fmt.Sprintf("communities-%d", i)
		exp = append(exp, &api.Statement{Name: name, Conditions: &api.Conditions{PrefixSet: prefixSet("prefix-"+name, pc.Prefix, pc.Prefix.Bits(), 32)},
			Actions: act})
	}
	req.Policies = []*api.Policy{{Name: importPolicy, Statements: imp}, {Name: exportPolicy, Statements: exp}}
	return req, warnings
}

// assignPolicies puts the (empty) policies in place at start: the global
// RIB's import and export, accepting by default.
func (s *Speaker) assignPolicies(ctx context.Context) error {
	req, _ := policies(s.cfg.ASN, nil, nil)
	if err := s.srv.SetPolicies(ctx, req); err != nil {
		return err
	}
	for _, a := range []struct {
		dir    api.PolicyDirection
		policy string
	}{{api.PolicyDirection_POLICY_DIRECTION_IMPORT, importPolicy}, {api.PolicyDirection_POLICY_DIRECTION_EXPORT, exportPolicy}} {
		if err := s.srv.AddPolicyAssignment(ctx, &api.AddPolicyAssignmentRequest{Assignment: &api.PolicyAssignment{
			Name: "global", Direction: a.dir, Policies: []*api.Policy{{Name: a.policy}}, DefaultAction: api.RouteAction_ROUTE_ACTION_ACCEPT,
		}}); err != nil {
			return err
		}
	}
	s.policy = req
	return nil
}

// setPolicies gives GoBGP the policies for peers and communities, if they
// changed; changed reports whether they did (routes already exchanged
// then need a soft reset).
func (s *Speaker) setPolicies(ctx context.Context, peers map[netip.Addr]Peer, comms []PrefixCommunities) (changed bool, err error) {
	list := make([]Peer, 0, len(peers))
	for _, p := range peers {
		list = append(list, p)
	}
	slices.SortFunc(list, func(a, b Peer) int { return a.Address.Compare(b.Address) })
	req, warnings := policies(s.cfg.ASN, list, comms)
	for _, w := range warnings {
		s.log.Warn(w)
	}
	if proto.Equal(req, s.policy) {
		return false, nil
	}
	if err := s.srv.SetPolicies(ctx, req); err != nil {
		return false, fmt.Errorf("route policies: %w", err)
	}
	s.policy = req
	return true, nil
}

// softReset runs every route of the given peers (all of them when none
// is named) through the policies again, both ways.
func (s *Speaker) softReset(ctx context.Context, addrs []netip.Addr) error {
	if addrs == nil {
		return s.srv.ResetPeer(ctx, &api.ResetPeerRequest{Address: "all", Soft: true, Direction: api.ResetPeerRequest_DIRECTION_BOTH})
	}
	var errs []error
	for _, a := range addrs {
		if err := s.srv.ResetPeer(ctx, &api.ResetPeerRequest{Address: a.String(), Soft: true,
			Direction: api.ResetPeerRequest_DIRECTION_BOTH}); err != nil {
			errs = append(errs, fmt.Errorf("soft reset of %s: %w", a, err))
		}
	}
	return errors.Join(errs...)
}

// SetCommunities makes the communities attached to advertised routes
// exactly comms; routes already advertised are sent again with them.
func (s *Speaker) SetCommunities(comms []PrefixCommunities) error {
	s.polMu.Lock()
	defer s.polMu.Unlock()
	s.mu.Lock()
	peers := s.peers
	s.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	changed, err := s.setPolicies(ctx, peers, comms)
	if err != nil {
		return err
	}
	s.comms = comms
	if changed && len(peers) > 0 {
		s.log.Info("BGP communities changed; advertising again", zap.Int("prefixes", len(comms)))
		return s.softReset(ctx, nil)
	}
	return nil
}
