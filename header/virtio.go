package header

import "encoding/binary"

// The virtio-net header (virtio spec §5.1.6, Linux include/uapi/linux/
// virtio_net.h) precedes every frame on a TAP opened with IFF_VNET_HDR. It
// carries what the sending stack left for "hardware" to do: finish a
// checksum, or segment a TCP superframe.
//
//	0      1         2         4         6           8            10
//	+------+---------+---------+---------+-----------+------------+
//	|flags |gso_type | hdr_len |gso_size |csum_start |csum_offset |
//	+------+---------+---------+---------+-----------+------------+
//
// Multi-byte fields are in the host's byte order (little-endian here).
const (
	VirtioNetHdrLen = 10

	VirtioNetHdrFNeedsCsum = 1
	// VirtioNetHdrFDataValid: the sender (the kernel, for a TUN read)
	// verified the packet's checksums.
	VirtioNetHdrFDataValid = 2

	VirtioGSONone  = 0
	VirtioGSOTCPv4 = 1
	VirtioGSOUDP   = 3
	VirtioGSOTCPv6 = 4
	VirtioGSOUDPL4 = 5
	VirtioGSOECN   = 0x80
)

// The UDP tunnel form of the header (virtio 1.4 §5.1.6.2.2; Linux 6.17's
// struct virtio_net_hdr_v1_hash_tunnel), on a TAP that was given a
// 24-byte header and the UDP tunnel offload: the 10 bytes above, the
// num_buffers and hash fields (zero when sending), then where the outer
// UDP header and the inner IPv4 header begin, counted from the frame's
// first byte. gso_type is the inner packet's type with
// VirtioGSOUDPTunnelIPv4 added; csum_start and csum_offset point at the
// inner TCP checksum, and VirtioNetHdrFUDPTunnelCsum asks for the outer
// UDP checksum of each segment too (its field holding the pseudo-header
// sum, as PartialChecksum makes it).
//
//	10           12          16           18         20              22              24
//	+------------+-----------+------------+----------+---------------+---------------+
//	|num_buffers |hash_value |hash_report | reserved |outer_th_offset|inner_nh_offset|
//	+------------+-----------+------------+----------+---------------+---------------+
const (
	VirtioNetHdrTunnelLen      = 24
	VirtioGSOUDPTunnelIPv4     = 0x20
	VirtioNetHdrFUDPTunnelCsum = 0x08
)

// EncodeTunnel writes a 24-byte UDP tunnel header into v[:24]: the fields
// Encode writes, the outer UDP header's and the inner IPv4 header's
// offsets, and zeros between.
func (v VirtioNetHdr) EncodeTunnel(flags, gsoType uint8, hdrLen, gsoSize, csumStart, csumOffset, outerUDP, innerIP int) {
	v = v[:VirtioNetHdrTunnelLen]
	v.Encode(flags, gsoType, hdrLen, gsoSize, csumStart, csumOffset)
	clear(v[VirtioNetHdrLen:20])
	binary.LittleEndian.PutUint16(v[20:22], uint16(outerUDP))
	binary.LittleEndian.PutUint16(v[22:24], uint16(innerIP))
}

// VirtioNetHdr is a view of the 10-byte header. Callers check the length.
type VirtioNetHdr []byte

// Flags returns the flags byte.
func (v VirtioNetHdr) Flags() uint8 { return v[0] }

// GSOType returns the GSO type (VirtioGSO*).
func (v VirtioNetHdr) GSOType() uint8 { return v[1] }

// HdrLen returns hdr_len, the length of the headers to copy into each segment.
func (v VirtioNetHdr) HdrLen() int { return int(binary.LittleEndian.Uint16(v[2:4])) }

// GSOSize returns gso_size, the payload bytes per segment.
func (v VirtioNetHdr) GSOSize() int { return int(binary.LittleEndian.Uint16(v[4:6])) }

// CsumStart returns csum_start, the offset where checksumming starts.
func (v VirtioNetHdr) CsumStart() int { return int(binary.LittleEndian.Uint16(v[6:8])) }

// CsumOffset returns csum_offset, where the checksum goes relative to csum_start.
func (v VirtioNetHdr) CsumOffset() int { return int(binary.LittleEndian.Uint16(v[8:10])) }

// Clear zeroes the header.
func (v VirtioNetHdr) Clear() { clear(v[:VirtioNetHdrLen]) }

// NeedsCsum reports whether the NEEDS_CSUM flag is set.
func (v VirtioNetHdr) NeedsCsum() bool { return v[0]&VirtioNetHdrFNeedsCsum != 0 }

// DataValid reports whether the DATA_VALID flag is set.
func (v VirtioNetHdr) DataValid() bool { return v[0]&VirtioNetHdrFDataValid != 0 }

// Encode writes every field.
func (v VirtioNetHdr) Encode(flags, gsoType uint8, hdrLen, gsoSize, csumStart, csumOffset int) {
	v[0], v[1] = flags, gsoType
	binary.LittleEndian.PutUint16(v[2:4], uint16(hdrLen))
	binary.LittleEndian.PutUint16(v[4:6], uint16(gsoSize))
	binary.LittleEndian.PutUint16(v[6:8], uint16(csumStart))
	binary.LittleEndian.PutUint16(v[8:10], uint16(csumOffset))
}

// TCP header fields used by segmentation and coalescing (RFC 9293 §3.1).
const (
	TCPMinLen = 20
	// TCPChecksumOffset is where the checksum lies in a TCP header.
	TCPChecksumOffset = 16
	TCPFlagFIN        = 0x01
	TCPFlagSYN        = 0x02
	TCPFlagRST        = 0x04
	TCPFlagPSH        = 0x08
	TCPFlagACK        = 0x10
	TCPFlagURG        = 0x20
	TCPFlagECE        = 0x40
	TCPFlagCWR        = 0x80
)

// TCP is a view of a TCP header and payload.
type TCP []byte

// HeaderLen returns the TCP header length in bytes (data offset * 4).
func (t TCP) HeaderLen() int { return int(t[12]>>4) * 4 }

// Seq returns the sequence number.
func (t TCP) Seq() uint32 { return binary.BigEndian.Uint32(t[4:8]) }

// SetSeq sets the sequence number.
func (t TCP) SetSeq(s uint32) { binary.BigEndian.PutUint32(t[4:8], s) }

// Flags returns the flags byte (TCPFlag*).
func (t TCP) Flags() uint8 { return t[13] }

// SetFlags sets the flags byte.
func (t TCP) SetFlags(f uint8) { t[13] = f }

// Checksum returns the checksum field.
func (t TCP) Checksum() uint16 { return binary.BigEndian.Uint16(t[16:18]) }

// SetChecksum sets the checksum field.
func (t TCP) SetChecksum(c uint16) { binary.BigEndian.PutUint16(t[16:18], c) }

// PartialChecksum is what a TCP or UDP checksum field holds while the
// checksum is left to finish (CHECKSUM_PARTIAL, NEEDS_CSUM, a coalesced
// superframe): the pseudo-header sum, folded, not complemented.
func PartialChecksum(src, dst [4]byte, proto uint8, length int) uint16 {
	return Checksum(nil, PseudoHeaderSum(src, dst, proto, length))
}

// PseudoHeaderSum is the RFC 793 pseudo-header sum (source, destination,
// protocol, length), not yet complemented.
func PseudoHeaderSum(src, dst [4]byte, proto uint8, length int) uint32 {
	return uint32(src[0])<<8 | uint32(src[1]) + (uint32(src[2])<<8 | uint32(src[3])) +
		(uint32(dst[0])<<8 | uint32(dst[1])) + (uint32(dst[2])<<8 | uint32(dst[3])) +
		uint32(proto) + uint32(length)
}
