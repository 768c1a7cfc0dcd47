package router

import (
	"github.com/tortie-net/tortie/encap"
	"github.com/tortie-net/tortie/fib"
	"github.com/tortie-net/tortie/header"
)

// segBatch is how many segments of superframes a worker holds before it
// sends what is queued and reuses the buffers.
const segBatch = 64

// ingress names what a packet with a virtio-net header came in on: a pod's
// port (an Ethernet frame), the host or the underlay (an IPv4 packet; the
// underlay's header is made here, see fromCoalesced).
type ingress struct {
	host, tunnel bool
	pod          *Port // when neither
}

// hostIngress is the host's TUN.
var hostIngress = ingress{host: true}

// tunnelIngress is the underlay: a packet some other node sent us.
var tunnelIngress = ingress{tunnel: true}

// podIngress is pod port p.
func podIngress(p *Port) ingress { return ingress{pod: p} }

// linkHeaderLen is where the IPv4 header starts in what comes in: after
// the Ethernet header of a pod's frame; at once in the host's packets and
// the underlay's.
func (in ingress) linkHeaderLen() int {
	if in.pod == nil {
		return 0
	}
	return header.EthernetLen
}

// coalesced reports whether ip, a packet decapsulated from IPIP or VXLAN,
// is a TCP superframe: one the underlay's kernel coalesced (GRO on the
// NIC, which Linux does for IPIP with or without an ipip module), or one
// that crossed whole from a sender whose kernel segments VXLAN late (UDP
// tunnel GSO, which a veth, or a NIC with tunnel segmentation offload,
// carries whole to the end of its wire). Either way its IPv4 length
// covers all of it and its TCP checksum field holds the pseudo-header
// sum, as for CHECKSUM_PARTIAL; a UDP or raw socket says no more than
// that. A segment whose real checksum happens to equal that sum (one in
// 65,536) is taken as a superframe too, harmlessly: its checksum is then
// computed again or left to the pod's kernel, and comes out the same.
func coalesced(ip header.IPv4) bool {
	hl := ip.HeaderLen()
	if ip.Protocol() != header.ProtocolTCP || ip.IsFragment() || len(ip) < hl+header.TCPMinLen {
		return false
	}
	return header.TCP(ip[hl:]).Checksum() == header.PartialChecksum(ip.Src(), ip.Dst(), header.ProtocolTCP, len(ip)-hl)
}

// finishPartialUDP completes the UDP checksum of ip, decapsulated from
// VXLAN, where the sender's kernel left it to finish (CHECKSUM_PARTIAL,
// which a veth carries across as it is): its field holds the
// pseudo-header sum, and the pod, told nothing, would drop the datagram.
// As for coalesced, a datagram whose real checksum equals that sum
// comes out the same.
func finishPartialUDP(ip header.IPv4) {
	hl := ip.HeaderLen()
	if ip.Protocol() != header.ProtocolUDP || ip.IsFragment() || len(ip) < hl+header.UDPLen {
		return
	}
	c := header.UDP(ip[hl:]).Checksum()
	if c != 0 && c == header.PartialChecksum(ip.Src(), ip.Dst(), header.ProtocolUDP, len(ip)-hl) {
		finishChecksum(ip, 0, hl, header.UDPChecksumOffset)
		if u := header.UDP(ip[hl:]); u.Checksum() == 0 {
			u.SetChecksum(0xffff) // 0 would say "none" (RFC 768)
		}
	}
}

// fromCoalesced takes a TCP superframe that came through the underlay in
// mode (IPIP or VXLAN), the IPv4 packet at buf[start:end] (see
// coalesced), as one that came with a virtio-net header: the header is
// written in front of it, over the outer headers already read. The socket
// does not say the segment size the sender used; the largest segment a
// pod's MTU holds here (the tunnel's) stands for it, which is what the
// pod's kernel or our own segmentation needs of it. fromOffload checks
// the headers against the packet as it does any sender's.
func (w *worker) fromCoalesced(mode fib.Mode, buf []byte, start, end int) {
	ip := header.IPv4(buf[start:end])
	hl := ip.HeaderLen()
	thl := header.TCP(ip[hl:]).HeaderLen()
	mss := int(w.r.pathMTU.Load()) - encap.Overhead(mode) - hl - thl
	w.r.offload.underlaySuperframes.Add(1)
	at := start - header.VirtioNetHdrLen
	header.VirtioNetHdr(buf[at:start]).Encode(header.VirtioNetHdrFNeedsCsum, header.VirtioGSOTCPv4, hl+thl, mss,
		hl, header.TCPChecksumOffset)
	w.fromOffload(tunnelIngress, buf, at, end)
}

// fromOffload handles a frame or packet that starts with a virtio-net
// header. The header is the sending kernel's word on what is left to do;
// its lengths are checked against the frame itself, never trusted
// (hdr_len is ignored).
func (w *worker) fromOffload(in ingress, buf []byte, off, end int) {
	l2 := in.linkHeaderLen()
	if end-off < header.VirtioNetHdrLen+l2 {
		w.drop(DropTooShort)
		return
	}
	h := header.VirtioNetHdr(buf[off:])
	frame := off + header.VirtioNetHdrLen
	switch h.GSOType() &^ header.VirtioGSOECN {
	case header.VirtioGSONone:
		if h.NeedsCsum() && !finishChecksum(buf[frame:end], l2, h.CsumStart(), h.CsumOffset()) {
			w.drop(DropBadOffload)
			return
		}
		w.csumKnown = h.NeedsCsum() || h.DataValid()
		w.fromIngress(in, buf, frame, end)
		w.csumKnown = false
	case header.VirtioGSOTCPv4:
		if w.whole(in, buf, frame, end, h) {
			return
		}
		w.csumKnown = true // every segment's checksum is computed here
		w.segmentTCP(in, buf[frame:end], h.GSOSize())
		w.csumKnown = false
	default:
		w.drop(DropBadOffload)
	}
}

// superframe describes a TCP superframe forwarded whole: the GSO fields of
// the virtio-net header it leaves with, as offsets from its IPv4 header.
type superframe struct {
	on        bool
	gsoType   uint8 // TCPv4, with the ECN bit if it came with it
	mss       int
	hdrLen    int // IPv4 and TCP headers
	csumStart int // the TCP header
}

// whole forwards a TCP superframe (at buf[frame:end], which came behind h)
// without cutting it where it can leave as it is: a pod's to the host (a
// natively routed node, for the kernel to forward and segment, or the
// underlay's NIC, or no one: a veth carries it whole; or the node
// itself), a pod's to a VXLAN node through the TunnelWriter (see
// toTunnel), a pod's to another pod of this node on an offload port, and
// the host's or the underlay's to such a pod (natively routed traffic or
// IPIP the kernel received coalesced, or the node's own): the pod's
// kernel takes it as it would a coalesced one. It reports false, having done nothing, for any other
// destination, or a superframe it cannot pass on as it is: those are cut
// here.
func (w *worker) whole(in ingress, buf []byte, frame, end int, h header.VirtioNetHdr) bool {
	l2 := in.linkHeaderLen()
	if end-frame < l2+header.IPv4MinLen || (l2 > 0 && header.Ethernet(buf[frame:end]).Type() != header.EtherTypeIPv4) {
		return false
	}
	if l2 == 0 && frame < header.VirtioNetHdrLen+header.EthernetLen {
		return false // no room for the pod's Ethernet and virtio-net headers
	}
	// A pod's superframe may still turn out to be a reply the kernel must
	// see (forward's replyViaHost), even one for a local pod: only a host
	// that takes superframes can take it whole.
	if hp := w.r.host.Load(); !in.host && (hp == nil || hp.off == nil) {
		return false
	}
	// What the receiving kernel needs: a valid IPv4 header of TCP with its
	// real total length, the TCP checksum left partial (the pseudo-header
	// sum in place), and a segment size.
	ip, st := header.IPv4(buf[frame+l2 : end]).Check()
	if st != header.IPv4OK || ip.Protocol() != header.ProtocolTCP || ip.IsFragment() {
		return false
	}
	hl := ip.HeaderLen()
	if len(ip) < hl+header.TCPMinLen {
		return false
	}
	thl := header.TCP(ip[hl:]).HeaderLen()
	mss := h.GSOSize()
	if thl < header.TCPMinLen || hl+thl > len(ip) || mss <= 0 || !h.NeedsCsum() ||
		h.CsumStart() != l2+hl || h.CsumOffset() != header.TCPChecksumOffset {
		return false
	}
	nh := w.lookup(ip.DstU32())
	if nh == nil {
		return false
	}
	toOffloadPod := nh.Kind == fib.KindLocal && nh.Port < uint32(len(w.ports)) && w.ports[nh.Port] != nil && w.ports[nh.Port].cfg.Offload
	if in.pod == nil { // the host's or the underlay's: only to an offload pod
		if !toOffloadPod {
			return false
		}
	} else if !toOffloadPod && nh.Kind != fib.KindHost && (nh.Kind != fib.KindRemote || nh.Mode != fib.ModeNative) &&
		(nh.Kind != fib.KindRemote || nh.Mode != fib.ModeVXLAN || !w.tunnelFits(frame+l2, len(ip), hl+thl+mss)) {
		return false
	}
	w.super = superframe{on: true, gsoType: h.GSOType(), mss: mss, hdrLen: hl + thl, csumStart: hl}
	w.fromIngress(in, buf, frame, end)
	w.super = superframe{}
	return true
}

// fromIngress takes a frame from a pod, or a packet from the host or the
// underlay.
func (w *worker) fromIngress(in ingress, buf []byte, off, end int) {
	if in.tunnel {
		w.forward(fromTunnel, buf, off, end)
		return
	}
	if in.host {
		w.fromHost(buf, off, end)
		return
	}
	w.fromPod(in.pod, buf, off, end)
}

// finishChecksum does what a NIC does for CHECKSUM_PARTIAL: the field at
// start+offset holds the pseudo-header sum; the checksum of everything from
// start on is computed over it and stored, complemented. The checksummed
// part may not begin before the IPv4 header, at l2.
func finishChecksum(frame []byte, l2, start, offset int) bool {
	at := start + offset
	if start < l2 || at+2 > len(frame) {
		return false
	}
	sum := ^header.Checksum(frame[start:], 0)
	frame[at], frame[at+1] = byte(sum>>8), byte(sum)
	return true
}

// segmentTCP cuts a TCPv4 superframe (Ethernet, none from the host, +
// IPv4 + TCP + payload up to 64 KB) into segments of at most mss payload
// bytes, as a NIC's TSO would: headers copied, IP length, ID and checksum
// per segment, TCP sequence numbers advanced, FIN and PSH only on the last
// segment, CWR only on the first, full TCP checksums. Each segment then
// takes the ordinary path from where the superframe came in.
func (w *worker) segmentTCP(in ingress, frame []byte, mss int) {
	l2 := in.linkHeaderLen()
	if len(frame) < l2+header.IPv4MinLen || (l2 > 0 && header.Ethernet(frame).Type() != header.EtherTypeIPv4) {
		w.drop(DropBadOffload)
		return
	}
	ip := header.IPv4(frame[l2:])
	hl := int(ip[0]&0xf) * 4
	if ip[0]>>4 != 4 || hl < header.IPv4MinLen || ip.TotalLen() > len(ip) || hl+header.TCPMinLen > ip.TotalLen() ||
		ip.Protocol() != header.ProtocolTCP || mss <= 0 {
		w.drop(DropBadOffload)
		return
	}
	ip = ip[:ip.TotalLen()]
	tcp := header.TCP(ip[hl:])
	thl := tcp.HeaderLen()
	if thl < header.TCPMinLen || thl > len(tcp) {
		w.drop(DropBadOffload)
		return
	}
	payload := tcp[thl:]
	hdrs := l2 + hl + thl
	if hdrs+mss > maxFrameFor(w.r) {
		w.drop(DropBadOffload)
		return
	}
	backToBack := w.backToBack(ip.DstU32(), hl+thl+mss)
	// In front of each segment lying back to back: its VXLAN header, and
	// the inner Ethernet header a host packet does not have yet.
	room := header.VXLANLen + header.EthernetLen - l2
	if backToBack && w.segArea == nil {
		w.segArea = make([]byte, Headroom+segBatch*(header.VXLANLen+maxFrameFor(w.r)))
		w.areaPos = Headroom
	}
	if !backToBack && w.segBufs == nil {
		w.segBufs = make([][]byte, segBatch)
		for i := range w.segBufs {
			w.segBufs[i] = make([]byte, Headroom+maxFrameFor(w.r))
		}
	}
	flags, seq, id := tcp.Flags(), tcp.Seq(), ip.ID()
	w.r.offload.tsoFrames.Add(1)
	w.r.offload.tsoSegments.Add(uint64((len(payload) + mss - 1) / mss))
	src, dst := ip.Src(), ip.Dst()
	for i, o := 0, 0; o < len(payload) || (o == 0 && len(payload) == 0); i, o = i+1, o+mss {
		chunk := payload[o:min(o+mss, len(payload))]
		var sb []byte
		at := Headroom
		if backToBack {
			// Each segment right behind the one before, with exactly the
			// room its encapsulation takes: the datagrams form the UDP GSO
			// run where they lie.
			if w.areaPos+room+hdrs+mss > len(w.segArea) {
				w.flushSegments()
				w.areaPos = Headroom
			}
			sb, at = w.segArea, w.areaPos+room
			w.areaPos = at + hdrs + len(chunk)
		} else {
			if w.segUsed == len(w.segBufs) {
				w.flushSegments()
				w.segUsed = 0
			}
			sb = w.segBufs[w.segUsed]
			w.segUsed++
		}
		n := copy(sb[at:], frame[:hdrs])
		n += copy(sb[at+n:], chunk)
		seg := sb[at : at+n]
		sip := header.IPv4(seg[l2:])
		sip.SetTotalLen(hl + thl + len(chunk))
		sip[4], sip[5] = byte((id+uint16(i))>>8), byte(id+uint16(i))
		sip.ComputeChecksum()
		st := header.TCP(sip[hl:])
		st.SetSeq(seq + uint32(o))
		f := flags
		if o+mss < len(payload) {
			f &^= header.TCPFlagFIN | header.TCPFlagPSH
		}
		if i > 0 {
			f &^= header.TCPFlagCWR
		}
		st.SetFlags(f)
		st.SetChecksum(0)
		st.SetChecksum(^header.Checksum(st, header.PseudoHeaderSum(src, dst, header.ProtocolTCP, len(st))))
		w.fromIngress(in, sb, at, at+n)
		if len(payload) == 0 {
			break
		}
	}
}

// flushSegments sends everything queued, so segment buffers can be reused.
func (w *worker) flushSegments() {
	w.flushUnder()
	w.flushHost()
	w.flushPods()
}

// backToBack says whether segments of a superframe to dst, of ipLen bytes
// each, go out as VXLAN over UDP GSO without fragmentation. Then nothing
// writes in front of a segment but its own VXLAN and inner Ethernet
// headers, and segments may lie back to back. The lookup is the one each
// segment's forwarding makes, on the same FIB snapshot.
func (w *worker) backToBack(dst uint32, ipLen int) bool {
	if w.gso.send == nil {
		return false
	}
	nh := w.lookup(dst)
	return nh != nil && nh.Kind == fib.KindRemote && nh.Mode == fib.ModeVXLAN &&
		ipLen <= int(w.r.pathMTU.Load())-encap.Overhead(fib.ModeVXLAN)
}
