// Package encap holds the wire formats tortie uses between nodes, exactly as
// Calico puts them on the wire: IPIP (IP protocol 4, RFC 2003) and VXLAN
// (UDP 4789, VNI 4096, RFC 7348), and the bytes each adds. Writers put outer
// headers into the headroom in front of a packet; nothing here copies the
// packet or allocates. Which of them reaches a peer is Calico's rule, in
// package calico.
package encap

import (
	"github.com/tortie-net/tortie/fib"
	"github.com/tortie-net/tortie/header"
)

const (
	// VNI is the VXLAN network identifier Calico uses.
	VNI = 4096
	// OverheadIPIP is the bytes IP-in-IP adds on an IPv4 underlay (outer IPv4 header).
	OverheadIPIP = header.IPv4MinLen
	// OverheadVXLAN is the bytes VXLAN adds on an IPv4 underlay (outer IPv4,
	// UDP, VXLAN and inner Ethernet headers).
	OverheadVXLAN = header.IPv4MinLen + header.UDPLen + header.VXLANLen + header.EthernetLen
)

// Overhead returns the bytes a mode adds to each packet.
func Overhead(m fib.Mode) int {
	switch m {
	case fib.ModeIPIP:
		return OverheadIPIP
	case fib.ModeVXLAN:
		return OverheadVXLAN
	}
	return 0
}

// PutIPIP writes the outer header for the inner packet at buf[start:end]
// into buf[start-20:start] and returns where the outer packet begins.
// RFC 2003 §3.1: TOS and DF are copied from the inner header.
func PutIPIP(buf []byte, start, end int, src, dst [4]byte) int {
	inner := header.IPv4(buf[start:end])
	o := start - OverheadIPIP
	header.IPv4(buf[o:]).Encode(&header.IPv4Fields{
		TOS: inner.TOS(), TotalLen: end - o, FlagsFrag: inner.FlagsFrag() & header.IPv4FlagDF,
		TTL: header.IPv4DefaultTTL, Protocol: header.ProtocolIPIP, Src: src, Dst: dst,
	})
	return o
}

// VXLANTunnel is the fixed part of a VXLAN encapsulation from this node.
type VXLANTunnel struct {
	VNI     uint32
	SrcMAC  header.MAC // our VTEP MAC
	SrcAddr [4]byte    // our underlay address
}

// Put writes outer IPv4, UDP, VXLAN and inner Ethernet headers in front of
// the inner packet at buf[start:end] and returns where the outer packet
// begins. The UDP checksum is zero, as Linux sends VXLAN over IPv4; the
// outer DF bit is clear, as Linux's default.
func (t *VXLANTunnel) Put(buf []byte, start, end int, dstMAC header.MAC, dst [4]byte) int {
	inner := header.IPv4(buf[start:end])
	v := t.PutInner(buf, start, dstMAC)
	u := v - header.UDPLen
	header.UDP(buf[u:]).Encode(SourcePort(inner), header.VXLANPort, end-u, 0)
	o := u - header.IPv4MinLen
	header.IPv4(buf[o:]).Encode(&header.IPv4Fields{
		TotalLen: end - o, TTL: header.IPv4DefaultTTL, Protocol: header.ProtocolUDP, Src: t.SrcAddr, Dst: dst,
	})
	return o
}

// PutInner writes only the VXLAN header and inner Ethernet header in front
// of the inner packet at buf[start:] and returns where the VXLAN header
// begins: the UDP payload, for a sender whose socket adds IPv4 and UDP.
func (t *VXLANTunnel) PutInner(buf []byte, start int, dstMAC header.MAC) int {
	e := start - header.EthernetLen
	header.Ethernet(buf[e:]).Encode(dstMAC, t.SrcMAC, header.EtherTypeIPv4)
	v := e - header.VXLANLen
	header.VXLAN(buf[v:]).Encode(t.VNI)
	return v
}

// Decap checks a received VXLAN payload (after the outer UDP header) and
// returns the offset of the inner IPv4 packet: the I flag must be set, the
// VNI ours, the inner destination MAC our VTEP's and the inner type IPv4.
func (t *VXLANTunnel) Decap(payload []byte) (int, bool) {
	if len(payload) < header.VXLANLen+header.EthernetLen {
		return 0, false
	}
	v := header.VXLAN(payload)
	if v.Flags()&header.VXLANFlagI == 0 || v.VNI() != t.VNI {
		return 0, false
	}
	eth := header.Ethernet(payload[header.VXLANLen:])
	if !eth.DstIs(&t.SrcMAC) || eth.Type() != header.EtherTypeIPv4 {
		return 0, false
	}
	return header.VXLANLen + header.EthernetLen, true
}

// SourcePort derives the UDP source port from the inner flow so that ECMP
// and receive-side scaling spread flows (RFC 7348 §5), in the range Linux
// uses for its own VXLAN devices (32768-60999). Ports are read only from
// first fragments.
func SourcePort(ip header.IPv4) uint16 {
	h := ip.SrcU32()*0x9e3779b1 ^ ip.DstU32()*0x85ebca77 ^ uint32(ip.Protocol())*0xc2b2ae3d
	if ip.IsFirstFragment() && (ip.Protocol() == header.ProtocolTCP || ip.Protocol() == header.ProtocolUDP) &&
		len(ip) >= ip.HeaderLen()+4 {
		p := ip.Payload()
		h ^= (uint32(p[0])<<24 | uint32(p[1])<<16 | uint32(p[2])<<8 | uint32(p[3])) * 0x27d4eb2f
	}
	h ^= h >> 15
	h *= 0x2c1b3c6d
	h ^= h >> 12
	const lo, hi = 32768, 61000
	return uint16((uint64(h)*(hi-lo))>>32 + lo)
}
