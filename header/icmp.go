package header

import "encoding/binary"

// ICMPv4 (RFC 792). The first 8 bytes of every message are
//
//	| type | code | checksum | rest of header (4 bytes) |
//
// For "destination unreachable / fragmentation needed" the last two bytes of
// the rest carry the next-hop MTU (RFC 1191 §4).
const (
	ICMPHeaderLen = 8

	ICMPEchoReply    = 0
	ICMPDestUnreach  = 3
	ICMPSourceQuench = 4
	ICMPRedirect     = 5
	ICMPEcho         = 8
	ICMPTimeExceeded = 11
	ICMPParamProblem = 12

	ICMPCodeNetUnreach  = 0
	ICMPCodeHostUnreach = 1
	ICMPCodeFragNeeded  = 4
	ICMPCodeTTLExceeded = 0
)

// ICMP is a view of an ICMPv4 message. Callers check len >= ICMPHeaderLen.
type ICMP []byte

// Type returns the ICMP type.
func (c ICMP) Type() uint8 { return c[0] }

// Code returns the ICMP code.
func (c ICMP) Code() uint8 { return c[1] }

// Checksum returns the checksum field.
func (c ICMP) Checksum() uint16 { return binary.BigEndian.Uint16(c[2:4]) }

// NextHopMTU returns the next-hop MTU of a fragmentation-needed message
// (the last two bytes of the rest of the header).
func (c ICMP) NextHopMTU() uint16 { return binary.BigEndian.Uint16(c[6:8]) }

// IsICMPError reports whether an ICMP type is an error message; RFC 1812
// §4.3.2.7 forbids answering one with another.
func IsICMPError(t uint8) bool {
	switch t {
	case ICMPDestUnreach, ICMPSourceQuench, ICMPRedirect, ICMPTimeExceeded, ICMPParamProblem:
		return true
	}
	return false
}

// EncodeError writes an error message header; rest is the 4-byte field after
// the checksum (zero, or the MTU in its low 16 bits). The checksum covers the
// whole message, so the quoted datagram must already follow in c.
func (c ICMP) EncodeError(typ, code uint8, rest uint32) {
	c[0], c[1] = typ, code
	binary.BigEndian.PutUint16(c[2:4], 0)
	binary.BigEndian.PutUint32(c[4:8], rest)
	binary.BigEndian.PutUint16(c[2:4], ^Checksum(c, 0))
}
