package bench

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"strings"
)

// Frame sizes here are bytes on the wire without the 4-byte FCS, as a
// packet socket sends them; the names of tests and the report count the
// FCS (a "64-byte frame" is 60 bytes here).
const (
	fcs = 4
	// udpFrameHeaders is Ethernet, IPv4 and UDP: the smallest frame the
	// generators build.
	udpFrameHeaders = 14 + 20 + 8
)

// imixShare is one frame size of a mix and how many of each round it has.
type imixShare struct {
	Size  int // with FCS
	Count int
}

// simpleIMIX is the common "simple IMIX": of every 12 frames, 7 of 64
// bytes, 4 of 594 and 1 of 1518 (sizes with FCS).
var simpleIMIX = []imixShare{{64, 7}, {594, 4}, {1518, 1}}

// IMIXFrames returns one round of the simple IMIX as frame sizes without
// FCS, interleaved so that the sizes spread evenly (7:4:1 in 12 frames).
// A frame larger than a pod with this MTU can send is cut to the largest
// it can: the 1518-byte frame is 1468 bytes where VXLAN leaves pods an
// MTU of 1450.
func IMIXFrames(mtu int) ([]int, error) {
	largest := mtu + 14
	var sizes, counts []int
	for _, s := range simpleIMIX {
		size := s.Size - fcs
		if size > largest {
			if s != simpleIMIX[len(simpleIMIX)-1] {
				return nil, fmt.Errorf("an MTU of %d bytes is too small for the IMIX's %d-byte frames", mtu, s.Size)
			}
			size = largest // only the largest frame is cut to the MTU
		}
		sizes = append(sizes, size)
		counts = append(counts, s.Count)
	}
	return interleave(sizes, counts), nil
}

// interleave spreads count[i] copies of sizes[i] over one round, each
// next pick the size furthest behind its share (smooth weighted round
// robin), so that no size comes in a long run.
func interleave(sizes, counts []int) []int {
	total := 0
	for _, c := range counts {
		total += c
	}
	credit := make([]int, len(sizes))
	out := make([]int, 0, total)
	for range total {
		best := 0
		for i := range sizes {
			credit[i] += counts[i]
			if credit[i] > credit[best] {
				best = i
			}
		}
		credit[best] -= total
		out = append(out, sizes[best])
	}
	return out
}

// meanFrameBits is the mean size of the frames, with FCS, in bits.
func meanFrameBits(sizes []int) float64 {
	if len(sizes) == 0 {
		return 0
	}
	sum := 0
	for _, s := range sizes {
		sum += s + fcs
	}
	return 8 * float64(sum) / float64(len(sizes))
}

// trafgenConfig is a trafgen configuration with one packet per size, in
// order: trafgen sends a configuration's packets round robin, so a round
// of IMIXFrames gives the mix frame by frame. Each packet is UDP from src
// to dst with a random source port and destination port dport (a trafgen
// value: a number or a function such as drnd()), padded with zeros.
func trafgenConfig(srcMAC string, src, dst netip.Addr, dport string, sizes []int) (string, error) {
	if _, err := net.ParseMAC(srcMAC); err != nil {
		return "", fmt.Errorf("source MAC: %w", err)
	}
	if !src.Is4() || !dst.Is4() {
		return "", fmt.Errorf("addresses %s and %s: IPv4 only", src, dst)
	}
	if len(sizes) == 0 {
		return "", fmt.Errorf("no frames")
	}
	var b strings.Builder
	for _, size := range sizes {
		fill := size - udpFrameHeaders
		if fill < 0 {
			return "", fmt.Errorf("frame size %d is below the %d-byte Ethernet+IPv4+UDP headers", size, udpFrameHeaders)
		}
		fmt.Fprintf(&b, "{ eth(da=%s, sa=%s, type=0x0800), ipv4(saddr=%s, daddr=%s, ttl=64), udp(sp=drnd(), dp=%s), fill(0x00, %d) }\n",
			gatewayMAC, srcMAC, src, dst, dport, fill)
	}
	return b.String(), nil
}

// gatewayMAC is where a pod sends everything: Calico's veth MAC, which
// both the kernel nodes and tortie answer for.
const gatewayMAC = "ee:ee:ee:ee:ee:ee"

// udpFrame builds an Ethernet frame of size bytes (without FCS) carrying
// a UDP datagram from src:sport to dst:dport, its payload zeros. The IPv4
// header has its checksum; the UDP checksum is 0 (none), as IPv4 allows.
func udpFrame(size int, srcMAC, dstMAC net.HardwareAddr, src, dst netip.Addr, sport, dport uint16) ([]byte, error) {
	if size < udpFrameHeaders || size > 14+0xffff {
		return nil, fmt.Errorf("frame size %d: not between %d and %d", size, udpFrameHeaders, 14+0xffff)
	}
	if len(srcMAC) != 6 || len(dstMAC) != 6 {
		return nil, fmt.Errorf("MACs %s and %s: Ethernet only", srcMAC, dstMAC)
	}
	if !src.Is4() || !dst.Is4() {
		return nil, fmt.Errorf("addresses %s and %s: IPv4 only", src, dst)
	}
	f := make([]byte, size)
	copy(f[0:6], dstMAC)
	copy(f[6:12], srcMAC)
	binary.BigEndian.PutUint16(f[12:], 0x0800)
	ip := f[14:34]
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], uint16(size-14))
	ip[8] = 64
	ip[9] = 17
	s4, d4 := src.As4(), dst.As4()
	copy(ip[12:16], s4[:])
	copy(ip[16:20], d4[:])
	binary.BigEndian.PutUint16(ip[10:], ipv4Checksum(ip))
	udp := f[34:42]
	binary.BigEndian.PutUint16(udp[0:], sport)
	binary.BigEndian.PutUint16(udp[2:], dport)
	binary.BigEndian.PutUint16(udp[4:], uint16(size-34))
	return f, nil
}

// setSourcePort rewrites the UDP source port of a frame from udpFrame;
// the UDP checksum is none, so nothing else changes.
func setSourcePort(f []byte, port uint16) { binary.BigEndian.PutUint16(f[34:], port) }

// ipv4Checksum is the Internet checksum of an IPv4 header whose checksum
// field is zero.
func ipv4Checksum(h []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(h); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(h[i:]))
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}
