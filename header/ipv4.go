package header

import (
	"encoding/binary"
	"net/netip"
)

// IPv4 header layout (RFC 791 §3.1):
//
//	 0                   1                   2                   3
//	 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|Version|  IHL  |Type of Service|          Total Length         |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|         Identification        |Flags|      Fragment Offset    |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|  Time to Live |    Protocol   |         Header Checksum       |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|                       Source Address                          |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|                    Destination Address                        |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|                    Options                    |    Padding    |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
const (
	IPv4MinLen = 20
	IPv4MaxLen = 65535

	ipv4VerIHL   = 0
	ipv4TOS      = 1
	ipv4TotalLen = 2
	ipv4ID       = 4
	ipv4FlagsOff = 6
	ipv4TTL      = 8
	ipv4Protocol = 9
	ipv4Checksum = 10
	ipv4Src      = 12
	ipv4Dst      = 16

	IPv4FlagDF      = 0x4000
	IPv4FlagMF      = 0x2000
	IPv4FragOffMask = 0x1fff
	ProtocolICMP    = 1
	ProtocolIPIP    = 4
	ProtocolTCP     = 6
	ProtocolUDP     = 17
	IPv4DefaultTTL  = 64
	ipv4OptEnd      = 0
	ipv4OptNOP      = 1
)

// IPv4Status is the outcome of validating an IPv4 header.
type IPv4Status uint8

// IPv4 validation outcomes.
const (
	IPv4OK          IPv4Status = iota // header is valid
	IPv4TooShort                      // fewer than 20 bytes
	IPv4BadVersion                    // version field is not 4
	IPv4Malformed                     // IHL < 5, IHL beyond total length, total length beyond the bytes read, bad options
	IPv4BadChecksum                   // header checksum does not verify
)

// IPv4 is a view of an IPv4 packet (header and payload).
type IPv4 []byte

// Check validates the header of b against the n bytes actually present and
// returns the packet trimmed to its total length (link-layer padding removed).
// Every getter on the returned view is safe once Check returned IPv4OK.
// Options are walked so that a malformed option list is rejected
// (RFC 791 §3.1, RFC 1812 §5.2.4.1 allow silently discarding such packets).
func (b IPv4) Check() (IPv4, IPv4Status) {
	if len(b) < IPv4MinLen {
		return nil, IPv4TooShort
	}
	if b[0]>>4 != 4 {
		return nil, IPv4BadVersion
	}
	hl := int(b[0]&0xf) * 4
	tl := int(binary.BigEndian.Uint16(b[ipv4TotalLen:]))
	if hl < IPv4MinLen || hl > tl || tl > len(b) {
		return nil, IPv4Malformed
	}
	if headerSum(b[:hl]) != 0xffff {
		return nil, IPv4BadChecksum
	}
	if hl > IPv4MinLen && !validOptions(b[IPv4MinLen:hl]) {
		return nil, IPv4Malformed
	}
	return b[:tl], IPv4OK
}

// validOptions walks an option list: single-byte END and NOP, and TLV options
// whose length covers at least their own two bytes and stays inside the list.
func validOptions(o []byte) bool {
	for i := 0; i < len(o); {
		switch o[i] {
		case ipv4OptEnd:
			return true
		case ipv4OptNOP:
			i++
		default:
			if i+1 >= len(o) {
				return false
			}
			l := int(o[i+1])
			if l < 2 || i+l > len(o) {
				return false
			}
			i += l
		}
	}
	return true
}

// HeaderLen returns the header length in bytes (IHL * 4).
func (b IPv4) HeaderLen() int { return int(b[ipv4VerIHL]&0xf) * 4 }

// TOS returns the type-of-service byte.
func (b IPv4) TOS() uint8 { return b[ipv4TOS] }

// TotalLen returns the total length field in bytes.
func (b IPv4) TotalLen() int { return int(binary.BigEndian.Uint16(b[ipv4TotalLen:])) }

// ID returns the identification field.
func (b IPv4) ID() uint16 { return binary.BigEndian.Uint16(b[ipv4ID:]) }

// FlagsFrag returns the flags and fragment offset word.
func (b IPv4) FlagsFrag() uint16 { return binary.BigEndian.Uint16(b[ipv4FlagsOff:]) }

// DF reports whether the Don't Fragment flag is set.
func (b IPv4) DF() bool { return b.FlagsFrag()&IPv4FlagDF != 0 }

// MF reports whether the More Fragments flag is set.
func (b IPv4) MF() bool { return b.FlagsFrag()&IPv4FlagMF != 0 }

// FragOffset returns the fragment offset in bytes.
func (b IPv4) FragOffset() int { return int(b.FlagsFrag()&IPv4FragOffMask) * 8 }

// TTL returns the time to live.
func (b IPv4) TTL() uint8 { return b[ipv4TTL] }

// Protocol returns the payload's IP protocol number.
func (b IPv4) Protocol() uint8 { return b[ipv4Protocol] }

// Checksum returns the header checksum field.
func (b IPv4) Checksum() uint16 { return binary.BigEndian.Uint16(b[ipv4Checksum:]) }

// Src returns the source address.
func (b IPv4) Src() [4]byte { return [4]byte(b[ipv4Src : ipv4Src+4]) }

// Dst returns the destination address.
func (b IPv4) Dst() [4]byte { return [4]byte(b[ipv4Dst : ipv4Dst+4]) }

// SrcU32 returns the source address as a big-endian uint32.
func (b IPv4) SrcU32() uint32 { return binary.BigEndian.Uint32(b[ipv4Src:]) }

// DstU32 returns the destination address as a big-endian uint32.
func (b IPv4) DstU32() uint32 { return binary.BigEndian.Uint32(b[ipv4Dst:]) }

// SrcAddr returns the source address as a netip.Addr.
func (b IPv4) SrcAddr() netip.Addr { return netip.AddrFrom4(b.Src()) }

// DstAddr returns the destination address as a netip.Addr.
func (b IPv4) DstAddr() netip.Addr { return netip.AddrFrom4(b.Dst()) }

// Payload returns the bytes after the header (options included in the header).
func (b IPv4) Payload() []byte { return b[b.HeaderLen():] }

// SetTotalLen sets the total length field; the checksum is not updated.
func (b IPv4) SetTotalLen(n int) { binary.BigEndian.PutUint16(b[ipv4TotalLen:], uint16(n)) }

// SetFlagsFrag sets the flags and fragment offset word; the checksum is not updated.
func (b IPv4) SetFlagsFrag(v uint16) { binary.BigEndian.PutUint16(b[ipv4FlagsOff:], v) }

// SetChecksum sets the header checksum field.
func (b IPv4) SetChecksum(c uint16) { binary.BigEndian.PutUint16(b[ipv4Checksum:], c) }

// IsFirstFragment reports whether the packet carries the start of its payload
// (offset 0); only then do transport headers (ports, ICMP type) exist in it.
func (b IPv4) IsFirstFragment() bool { return b.FlagsFrag()&IPv4FragOffMask == 0 }

// IsFragment reports whether the packet is any fragment of a larger datagram.
func (b IPv4) IsFragment() bool { return b.FlagsFrag()&(IPv4FlagMF|IPv4FragOffMask) != 0 }

// DecTTL decrements the TTL and patches the checksum incrementally
// (RFC 1624): TTL shares a 16-bit word with the protocol field.
func (b IPv4) DecTTL() {
	old := uint16(b[ipv4TTL])<<8 | uint16(b[ipv4Protocol])
	b[ipv4TTL]--
	b.SetChecksum(UpdateChecksum16(b.Checksum(), old, old-0x100))
}

// ComputeChecksum fills the header checksum from scratch.
func (b IPv4) ComputeChecksum() {
	b.SetChecksum(0)
	b.SetChecksum(^headerSum(b[:b.HeaderLen()]))
}

// headerSum is Checksum(h, 0) for an IPv4 header, whose length is a
// multiple of 4 bytes and at most 60: 32-bit words added into 64 bits
// cannot overflow, so there is no carry to keep, and the words are read in
// network order, so there is nothing to swap.
func headerSum(h []byte) uint16 {
	var sum uint64
	for ; len(h) >= 4; h = h[4:] {
		sum += uint64(binary.BigEndian.Uint32(h))
	}
	sum = sum&0xffffffff + sum>>32
	sum = sum&0xffff + sum>>16
	sum = sum&0xffff + sum>>16
	return uint16(sum&0xffff + sum>>16)
}

// IPv4Fields describe a header without options for Encode.
type IPv4Fields struct {
	TOS       uint8
	TotalLen  int
	ID        uint16
	FlagsFrag uint16
	TTL       uint8
	Protocol  uint8
	Src, Dst  [4]byte
}

// Encode writes a 20-byte header (no options) including its checksum.
func (b IPv4) Encode(f *IPv4Fields) {
	b[ipv4VerIHL] = 0x45
	b[ipv4TOS] = f.TOS
	binary.BigEndian.PutUint16(b[ipv4TotalLen:], uint16(f.TotalLen))
	binary.BigEndian.PutUint16(b[ipv4ID:], f.ID)
	binary.BigEndian.PutUint16(b[ipv4FlagsOff:], f.FlagsFrag)
	b[ipv4TTL] = f.TTL
	b[ipv4Protocol] = f.Protocol
	copy(b[ipv4Src:], f.Src[:])
	copy(b[ipv4Dst:], f.Dst[:])
	b.ComputeChecksum()
}

// IPv4 address classes used by the martian and ICMP rules of RFC 1812. Each
// takes an address as a big-endian uint32 (see IPv4.SrcU32).

// IsZeroNet reports whether a is in 0.0.0.0/8.
func IsZeroNet(a uint32) bool { return a>>24 == 0 }

// IsLoopback reports whether a is in 127.0.0.0/8.
func IsLoopback(a uint32) bool { return a>>24 == 127 }

// IsLinkLocal reports whether a is in 169.254.0.0/16.
func IsLinkLocal(a uint32) bool { return a>>16 == 0xa9fe }

// IsMulticast reports whether a is in 224.0.0.0/4.
func IsMulticast(a uint32) bool { return a>>28 == 0xe }

// IsClassE reports whether a is in 240.0.0.0/4 (this includes broadcast).
func IsClassE(a uint32) bool { return a>>28 == 0xf }

// IsBroadcast reports whether a is the limited broadcast 255.255.255.255.
func IsBroadcast(a uint32) bool { return a == 0xffffffff }
