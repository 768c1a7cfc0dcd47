package policy

import (
	"net/netip"
	"slices"
)

// span is an inclusive range of IPv4 addresses as host-order integers.
type span struct{ lo, hi uint32 }

// addrSet is a sorted list of disjoint, non-adjacent spans: the compiled
// form of CIDR lists and of selectors (endpoint addresses as /32s plus the
// CIDRs of selected network sets), looked up by binary search.
type addrSet []span

func (s addrSet) has(ip uint32) bool {
	lo, hi := 0, len(s)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		switch {
		case ip < s[m].lo:
			hi = m
		case ip > s[m].hi:
			lo = m + 1
		default:
			return true
		}
	}
	return false
}

// setBuilder collects spans in any order and overlap.
type setBuilder []span

func (b *setBuilder) addPrefix(p netip.Prefix) {
	p = p.Masked()
	a := p.Addr().As4()
	lo := uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3])
	hi := lo | uint32((uint64(1)<<(32-p.Bits()))-1)
	*b = append(*b, span{lo, hi})
}

func (b *setBuilder) addIP(ip uint32) { *b = append(*b, span{ip, ip}) }

func (b setBuilder) build() addrSet {
	if len(b) == 0 {
		return addrSet{}
	}
	s := slices.Clone(b)
	slices.SortFunc(s, func(x, y span) int {
		switch {
		case x.lo < y.lo:
			return -1
		case x.lo > y.lo:
			return 1
		}
		return 0
	})
	out := addrSet{s[0]}
	for _, x := range s[1:] {
		last := &out[len(out)-1]
		if last.hi == ^uint32(0) || x.lo <= last.hi+1 {
			if x.hi > last.hi {
				last.hi = x.hi
			}
			continue
		}
		out = append(out, x)
	}
	return out
}

// portRange is an inclusive range of ports.
type portRange struct{ lo, hi uint16 }

// portSet is the compiled form of a rule's ports or notPorts: numeric
// ranges, plus named ports resolved to (address, protocol, port) keys of
// the endpoints that define them, as Felix resolves named ports into IP
// sets of address-port pairs.
type portSet struct {
	ranges []portRange
	named  []uint64 // sorted namedKey values
}

func namedKey(ip uint32, proto uint8, port uint16) uint64 {
	return uint64(ip)<<24 | uint64(proto)<<16 | uint64(port)
}

func (s *portSet) has(ip uint32, proto uint8, port uint16) bool {
	for _, r := range s.ranges {
		if port >= r.lo && port <= r.hi {
			return true
		}
	}
	if len(s.named) == 0 {
		return false
	}
	k := namedKey(ip, proto, port)
	lo, hi := 0, len(s.named)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		switch {
		case k < s.named[m]:
			hi = m
		case k > s.named[m]:
			lo = m + 1
		default:
			return true
		}
	}
	return false
}

// Constraint bits of a match: which of its parts are in force.
const (
	hasNets uint8 = 1 << iota
	hasNotNets
	hasSel
	hasNotSel
	hasPorts
	hasNotPorts
)

// match is the compiled source or destination side of a rule.
type match struct {
	flags                      uint8
	nets, notNets, sel, notSel addrSet
	ports, notPorts            portSet
}

func (m *match) matches(ip uint32, proto uint8, port uint16) bool {
	f := m.flags
	if f == 0 {
		return true
	}
	if f&hasNets != 0 && !m.nets.has(ip) {
		return false
	}
	if f&hasNotNets != 0 && m.notNets.has(ip) {
		return false
	}
	if f&hasSel != 0 && !m.sel.has(ip) {
		return false
	}
	if f&hasNotSel != 0 && m.notSel.has(ip) {
		return false
	}
	if f&hasPorts != 0 && !m.ports.has(ip, proto, port) {
		return false
	}
	if f&hasNotPorts != 0 && m.notPorts.has(ip, proto, port) {
		return false
	}
	return true
}

func ip4(a netip.Addr) uint32 {
	b := a.As4()
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}
