package header

import (
	"encoding/binary"
	"math/bits"
)

// Checksum returns the 16-bit one's complement sum of b added to initial, not
// yet complemented (RFC 1071 §4.1). The sum is byte-order independent
// (RFC 1071 §2(B)): b is summed as little-endian 64-bit words, each carry
// out fed into the next addition (add-with-carry chains, 64 bytes per
// round), then folded to 16 bits and swapped to network order once at the
// end.
func Checksum(b []byte, initial uint32) uint16 {
	// Two add-with-carry chains, over alternate words, run side by side
	// on a superscalar core (a third faster than one chain here); they
	// are joined after the loop.
	var sum, c, sum2, c2 uint64
	for len(b) >= 64 {
		w := b[:64:64]
		sum, c = bits.Add64(sum, binary.LittleEndian.Uint64(w[0:]), c)
		sum2, c2 = bits.Add64(sum2, binary.LittleEndian.Uint64(w[8:]), c2)
		sum, c = bits.Add64(sum, binary.LittleEndian.Uint64(w[16:]), c)
		sum2, c2 = bits.Add64(sum2, binary.LittleEndian.Uint64(w[24:]), c2)
		sum, c = bits.Add64(sum, binary.LittleEndian.Uint64(w[32:]), c)
		sum2, c2 = bits.Add64(sum2, binary.LittleEndian.Uint64(w[40:]), c2)
		sum, c = bits.Add64(sum, binary.LittleEndian.Uint64(w[48:]), c)
		sum2, c2 = bits.Add64(sum2, binary.LittleEndian.Uint64(w[56:]), c2)
		b = b[64:]
	}
	sum, c = bits.Add64(sum, sum2, c)
	sum, c2 = bits.Add64(sum, c2, 0)
	c += c2 // at most 2: the next addition takes it as a word
	sum, c = bits.Add64(sum, c, 0)
	for len(b) >= 8 {
		sum, c = bits.Add64(sum, binary.LittleEndian.Uint64(b), c)
		b = b[8:]
	}
	var tail uint64
	if len(b) >= 4 {
		tail += uint64(binary.LittleEndian.Uint32(b[0:4]))
		b = b[4:]
	}
	if len(b) >= 2 {
		tail += uint64(binary.LittleEndian.Uint16(b[0:2]))
		b = b[2:]
	}
	if len(b) == 1 {
		tail += uint64(b[0]) // at an even offset: the low byte of a little-endian word
	}
	sum, c = bits.Add64(sum, tail, c)
	// The last carry out of bit 63 is worth 1 in one's complement
	// arithmetic; adding it cannot carry again unless sum was all ones.
	sum, c = bits.Add64(sum, 0, c)
	sum += c
	// Fold 64 -> 16 bits (still little-endian), then to network order.
	s := (sum & 0xffffffff) + (sum >> 32)
	s = (s & 0xffff) + (s >> 16)
	s = (s & 0xffff) + (s >> 16)
	s = (s & 0xffff) + (s >> 16)
	total := uint64(bits.ReverseBytes16(uint16(s))) + uint64(initial)
	for total>>16 != 0 {
		total = (total & 0xffff) + (total >> 16)
	}
	return uint16(total)
}

// UpdateChecksum16 returns the header checksum hc after one 16-bit word of the
// covered data changed from old to next, following RFC 1624 eqn. 3:
//
//	HC' = ~(~HC + ~m + m')
//
// which, unlike the older RFC 1141 form, never yields 0x0000 from a non-zero
// sum (the -0 problem described in RFC 1624 §3).
func UpdateChecksum16(hc, old, next uint16) uint16 {
	sum := uint32(^hc) + uint32(^old) + uint32(next)
	sum = (sum & 0xffff) + (sum >> 16)
	sum = (sum & 0xffff) + (sum >> 16)
	return ^uint16(sum)
}
