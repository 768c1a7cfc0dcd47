package flow

import (
	"encoding/binary"

	"github.com/tortie-net/tortie/header"
)

// Kind says what a parsed packet is to the flow table.
type Kind uint8

// Packet kinds.
const (
	// Plain: a packet of a flow, Key its own 5-tuple.
	Plain Kind = iota
	// Fragment: a fragment (first or not), Key without ports: every
	// fragment of a datagram is found by its addresses and protocol.
	Fragment
	// Related: an ICMP error, Key the 5-tuple of the packet it quotes,
	// which is the flow's key as that packet's sender tracked it.
	Related
)

// Packet is what the flow table needs of an IPv4 packet.
type Packet struct {
	Key  Key
	TCP  uint8 // TCP flags (Plain TCP only)
	Kind Kind
}

// Parse reads ip's flow key. ip has passed header.IPv4.Check; the
// transport header may be missing or short (then the ports are zero).
func Parse(ip header.IPv4) Packet {
	k := Key{Src: ip.SrcU32(), Dst: ip.DstU32(), Proto: ip.Protocol()}
	if ip.IsFragment() {
		return Packet{Key: k, Kind: Fragment}
	}
	p := ip.Payload()
	switch k.Proto {
	case header.ProtocolTCP:
		if len(p) >= 14 {
			k.SrcPort, k.DstPort = binary.BigEndian.Uint16(p), binary.BigEndian.Uint16(p[2:])
			return Packet{Key: k, TCP: p[13]}
		}
	case header.ProtocolUDP:
		if len(p) >= 4 {
			k.SrcPort, k.DstPort = binary.BigEndian.Uint16(p), binary.BigEndian.Uint16(p[2:])
		}
	case header.ProtocolICMP:
		if len(p) < header.ICMPHeaderLen {
			break
		}
		switch t := p[0]; {
		case t == header.ICMPEcho || t == header.ICMPEchoReply:
			id := binary.BigEndian.Uint16(p[4:])
			k.SrcPort, k.DstPort = id, id
		case header.IsICMPError(t):
			if in, ok := quoted(p[header.ICMPHeaderLen:]); ok {
				return Packet{Key: in, Kind: Related}
			}
		}
	}
	return Packet{Key: k}
}

// quoted reads the key of the packet an ICMP error quotes: its IPv4
// header and at least the first 8 bytes of its payload (RFC 792).
func quoted(q []byte) (Key, bool) {
	if len(q) < header.IPv4MinLen || q[0]>>4 != 4 {
		return Key{}, false
	}
	ip := header.IPv4(q)
	hl := ip.HeaderLen()
	if hl < header.IPv4MinLen || len(q) < hl {
		return Key{}, false
	}
	k := Key{Src: ip.SrcU32(), Dst: ip.DstU32(), Proto: ip.Protocol()}
	if ip.IsFragment() && !ip.IsFirstFragment() {
		return k, true
	}
	p := q[hl:]
	switch k.Proto {
	case header.ProtocolTCP, header.ProtocolUDP:
		if len(p) < 4 {
			return Key{}, false
		}
		k.SrcPort, k.DstPort = binary.BigEndian.Uint16(p), binary.BigEndian.Uint16(p[2:])
	case header.ProtocolICMP:
		if len(p) < header.ICMPHeaderLen || (p[0] != header.ICMPEcho && p[0] != header.ICMPEchoReply) {
			return Key{}, false
		}
		id := binary.BigEndian.Uint16(p[4:])
		k.SrcPort, k.DstPort = id, id
	}
	return k, true
}
