package header

import "encoding/binary"

// UDPLen is the length of a UDP header (RFC 768): source port, destination
// port, length, checksum.
const UDPLen = 8

// UDPChecksumOffset is where the checksum lies in a UDP header.
const UDPChecksumOffset = 6

// UDP is a view of a UDP header and payload.
type UDP []byte

// SrcPort returns the UDP source port.
func (u UDP) SrcPort() uint16 { return binary.BigEndian.Uint16(u[0:2]) }

// DstPort returns the UDP destination port.
func (u UDP) DstPort() uint16 { return binary.BigEndian.Uint16(u[2:4]) }

// Length returns the length field (header and payload, in bytes).
func (u UDP) Length() int { return int(binary.BigEndian.Uint16(u[4:6])) }

// Checksum returns the checksum field (0 means none).
func (u UDP) Checksum() uint16 { return binary.BigEndian.Uint16(u[6:8]) }

// SetChecksum sets the checksum field.
func (u UDP) SetChecksum(c uint16) { binary.BigEndian.PutUint16(u[6:8], c) }

// Encode writes the header. A zero checksum means "none", which RFC 768
// allows for IPv4 and which is what Linux VXLAN sends by default.
func (u UDP) Encode(src, dst uint16, length int, csum uint16) {
	binary.BigEndian.PutUint16(u[0:2], src)
	binary.BigEndian.PutUint16(u[2:4], dst)
	binary.BigEndian.PutUint16(u[4:6], uint16(length))
	binary.BigEndian.PutUint16(u[6:8], csum)
}
