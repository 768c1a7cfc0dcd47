package header

import "encoding/binary"

// Ethernet II header layout:
//
//	0                   6                   12      14
//	+-------------------+-------------------+-------+
//	|  destination MAC  |    source MAC     | type  |
//	+-------------------+-------------------+-------+
const (
	EthernetLen = 14

	EtherTypeIPv4 = 0x0800
	EtherTypeARP  = 0x0806
	EtherTypeIPv6 = 0x86dd
)

// MAC is a 48-bit Ethernet address.
type MAC [6]byte

// BroadcastMAC is ff:ff:ff:ff:ff:ff.
var BroadcastMAC = MAC{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}

// String formats the address as aa:bb:cc:dd:ee:ff.
func (m MAC) String() string {
	const hex = "0123456789abcdef"
	b := make([]byte, 0, 17)
	for i, x := range m {
		if i > 0 {
			b = append(b, ':')
		}
		b = append(b, hex[x>>4], hex[x&0xf])
	}
	return string(b)
}

// IsMulticast reports whether the group bit is set (this includes broadcast).
func (m MAC) IsMulticast() bool { return m[0]&1 == 1 }

// Ethernet is a view of an Ethernet II header. Callers check len >= EthernetLen.
type Ethernet []byte

// Dst returns the destination MAC.
func (e Ethernet) Dst() (m MAC) { copy(m[:], e[0:6]); return }

// Src returns the source MAC.
func (e Ethernet) Src() (m MAC) { copy(m[:], e[6:12]); return }

// Type returns the EtherType.
func (e Ethernet) Type() uint16 { return binary.BigEndian.Uint16(e[12:14]) }

// SetDst sets the destination MAC.
func (e Ethernet) SetDst(m MAC) { copy(e[0:6], m[:]) }

// SetSrc sets the source MAC.
func (e Ethernet) SetSrc(m MAC) { copy(e[6:12], m[:]) }

// SetType sets the EtherType.
func (e Ethernet) SetType(t uint16) { binary.BigEndian.PutUint16(e[12:14], t) }

// DstIs reports whether the destination MAC equals *m.
func (e Ethernet) DstIs(m *MAC) bool { return [6]byte(e[0:6]) == *m }

// Encode writes a whole Ethernet header.
func (e Ethernet) Encode(dst, src MAC, etherType uint16) {
	e.SetDst(dst)
	e.SetSrc(src)
	e.SetType(etherType)
}
