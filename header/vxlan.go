package header

import "encoding/binary"

// VXLAN header (RFC 7348 §5):
//
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|R|R|R|R|I|R|R|R|            Reserved                           |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|                VXLAN Network Identifier (VNI) |   Reserved    |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
const (
	VXLANLen   = 8
	VXLANFlagI = 0x08
	VXLANPort  = 4789
)

// VXLAN is a view of a VXLAN header and its inner frame.
type VXLAN []byte

// Flags returns the flags byte.
func (v VXLAN) Flags() uint8 { return v[0] }

// VNI returns the 24-bit VXLAN network identifier.
func (v VXLAN) VNI() uint32 { return binary.BigEndian.Uint32(v[4:8]) >> 8 }

// Encode writes the header with the I flag set and the given 24-bit VNI.
func (v VXLAN) Encode(vni uint32) {
	binary.BigEndian.PutUint32(v[0:4], uint32(VXLANFlagI)<<24)
	binary.BigEndian.PutUint32(v[4:8], vni<<8)
}
