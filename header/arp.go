package header

import "encoding/binary"

// ARP for IPv4 over Ethernet (RFC 826):
//
//	0      2      4    5    6      8         14        18        24        28
//	+------+------+----+----+------+---------+---------+---------+---------+
//	| htype| ptype|hlen|plen|  op  | sha     | spa     | tha     | tpa     |
//	+------+------+----+----+------+---------+---------+---------+---------+
const (
	ARPLen      = 28
	ARPRequest  = 1
	ARPReply    = 2
	arpHTypeEth = 1
	arpOffOp    = 6
	arpOffSHA   = 8
	arpOffSPA   = 14
	arpOffTHA   = 18
	arpOffTPA   = 24
)

// ARP is a view of an ARP packet (after the Ethernet header).
type ARP []byte

// IsValid reports whether a is an Ethernet/IPv4 ARP packet of sufficient length.
func (a ARP) IsValid() bool {
	return len(a) >= ARPLen &&
		binary.BigEndian.Uint16(a[0:2]) == arpHTypeEth &&
		binary.BigEndian.Uint16(a[2:4]) == EtherTypeIPv4 &&
		a[4] == 6 && a[5] == 4
}

// Op returns the operation (ARPRequest or ARPReply).
func (a ARP) Op() uint16 { return binary.BigEndian.Uint16(a[arpOffOp:]) }

// SHA returns the sender hardware address.
func (a ARP) SHA() (m MAC) { copy(m[:], a[arpOffSHA:arpOffSHA+6]); return }

// SPA returns the sender protocol (IPv4) address.
func (a ARP) SPA() [4]byte { return [4]byte(a[arpOffSPA : arpOffSPA+4]) }

// THA returns the target hardware address.
func (a ARP) THA() (m MAC) { copy(m[:], a[arpOffTHA:arpOffTHA+6]); return }

// TPA returns the target protocol (IPv4) address.
func (a ARP) TPA() [4]byte { return [4]byte(a[arpOffTPA : arpOffTPA+4]) }

// TurnIntoReply rewrites a request in place into the reply that says
// "ip is at mac": the requester becomes the target.
func (a ARP) TurnIntoReply(mac MAC, ip [4]byte) {
	copy(a[arpOffTHA:arpOffTHA+6], a[arpOffSHA:arpOffSHA+6])
	copy(a[arpOffTPA:arpOffTPA+4], a[arpOffSPA:arpOffSPA+4])
	binary.BigEndian.PutUint16(a[arpOffOp:], ARPReply)
	copy(a[arpOffSHA:], mac[:])
	copy(a[arpOffSPA:], ip[:])
}

// EncodeRequest writes a who-has request for tpa from (sha, spa).
func (a ARP) EncodeRequest(sha MAC, spa, tpa [4]byte) {
	binary.BigEndian.PutUint16(a[0:2], arpHTypeEth)
	binary.BigEndian.PutUint16(a[2:4], EtherTypeIPv4)
	a[4], a[5] = 6, 4
	binary.BigEndian.PutUint16(a[arpOffOp:], ARPRequest)
	copy(a[arpOffSHA:], sha[:])
	copy(a[arpOffSPA:], spa[:])
	clear(a[arpOffTHA : arpOffTHA+6])
	copy(a[arpOffTPA:], tpa[:])
}
