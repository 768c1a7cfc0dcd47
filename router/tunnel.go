package router

import (
	"go.uber.org/zap"

	"github.com/tortie-net/tortie/encap"
	"github.com/tortie-net/tortie/fib"
	"github.com/tortie-net/tortie/header"
)

// TunnelWriter hands the node's kernel VXLAN frames that carry whole TCP
// superframes, each behind its own 24-byte UDP tunnel virtio-net header
// (header.VirtioNetHdr.EncodeTunnel), for the kernel to route to the
// underlay and cut into datagrams where it must (hostif.Tunnel). Frames
// are written in order, in one batch where the device can. WriteTunnel
// must be safe for concurrent use; MAC reports a fixed address, the one
// frames are sent to.
type TunnelWriter interface {
	WriteTunnel(frames [][]byte) (int, error)
	MAC() header.MAC
}

// tunnelPort is the attached TunnelWriter and its address.
type tunnelPort struct {
	w   TunnelWriter
	mac header.MAC
}

// tunnelRoom is what a superframe sent through the TunnelWriter needs in
// front of its inner IPv4 header: the virtio-net header, outer Ethernet,
// IPv4 and UDP headers, VXLAN and inner Ethernet.
const tunnelRoom = header.VirtioNetHdrTunnelLen + header.EthernetLen + header.IPv4MinLen + header.UDPLen +
	header.VXLANLen + header.EthernetLen

// AttachTunnel has pods' TCP superframes to VXLAN nodes leave whole
// through t, for the kernel to segment (UDP tunnel GSO), instead of being
// cut into datagrams here. It needs the UDP GSO senders (so that a flow's
// superframes carry the source port of its other datagrams) and a host
// that takes superframes; without them it does nothing. Call it before
// the router starts.
func (r *Router) AttachTunnel(t TunnelWriter) {
	r.gsoTunnel.Store(&tunnelPort{w: t, mac: t.MAC()})
}

// UseTunnel says whether pods' superframes to VXLAN nodes go to the
// attached TunnelWriter (true from AttachTunnel on) or are cut here, as
// the node finds its forward chains open to them or not. Superframes
// already queued still go. It is safe for concurrent use.
func (r *Router) UseTunnel(on bool) { r.tunnelPaused.Store(!on) }

// tunnelFits says whether a pod's superframe to a VXLAN node, whose IPv4
// header begins at start, which is ipLen bytes long and whose segments
// carry segLen bytes of IPv4, can leave whole through the TunnelWriter:
// one is attached, the worker sends VXLAN with UDP GSO, there is room in
// front for the headers, the outer packet's length fits its IPv4 header
// (a pod may write a frame of 64 KB), and every segment fits the tunnel.
func (w *worker) tunnelFits(start, ipLen, segLen int) bool {
	return w.r.gsoTunnel.Load() != nil && !w.r.tunnelPaused.Load() && w.gso.send != nil && start >= tunnelRoom &&
		ipLen+encap.Overhead(fib.ModeVXLAN) <= header.IPv4MaxLen &&
		segLen <= int(w.r.pathMTU.Load())-encap.Overhead(fib.ModeVXLAN)
}

// toTunnel queues the superframe at buf[start:end] (see whole; w.super
// describes it) for the TunnelWriter: VXLAN to nh's node, its outer UDP
// source port the one the flow's other datagrams leave from, and in
// front a virtio-net header asking the kernel to cut it into segments of
// w.super.mss bytes and to compute each one's inner TCP and outer UDP
// checksums.
func (w *worker) toTunnel(nh *fib.NextHop, buf []byte, start, end int) {
	t := w.r.gsoTunnel.Load()
	inner := header.IPv4(buf[start:end])
	v := w.r.vxlan.PutInner(buf, start, nh.VTEPMAC)
	u := v - header.UDPLen
	o := u - header.IPv4MinLen
	e := o - header.EthernetLen
	at := e - header.VirtioNetHdrTunnelLen
	src := w.r.vxlan.SrcAddr
	port := w.gso.send.SourcePort(w.gso.send.Source(uint32(encap.SourcePort(inner))))
	header.UDP(buf[u:]).Encode(port, header.VXLANPort, end-u,
		header.PartialChecksum(src, nh.Node, header.ProtocolUDP, end-u))
	header.IPv4(buf[o:]).Encode(&header.IPv4Fields{TotalLen: end - o, TTL: header.IPv4DefaultTTL,
		FlagsFrag: header.IPv4FlagDF, Protocol: header.ProtocolUDP, Src: src, Dst: nh.Node})
	header.Ethernet(buf[e:]).Encode(t.mac, GatewayMAC, header.EtherTypeIPv4)
	s := &w.super
	innerAt := start - e
	header.VirtioNetHdr(buf[at:]).EncodeTunnel(header.VirtioNetHdrFNeedsCsum|header.VirtioNetHdrFUDPTunnelCsum,
		s.gsoType|header.VirtioGSOUDPTunnelIPv4, innerAt+s.hdrLen, s.mss, innerAt+s.csumStart,
		header.TCPChecksumOffset, u-e, innerAt)
	if w.gsoPending() {
		w.flushGSO() // keep the order routed
	}
	if w.tun.add(buf[at:end]) {
		w.flushTunnel()
	}
}

// flushTunnel writes the superframes queued for the TunnelWriter. Those
// it refuses are counted as tx_error (the kernel refuses a header it
// cannot follow with EINVAL) and logged at debug level.
func (w *worker) flushTunnel() {
	q := &w.tun
	if len(q.pkts) == 0 {
		return
	}
	t := w.r.gsoTunnel.Load()
	n, err := t.w.WriteTunnel(q.pkts)
	w.r.offload.wholeToTunnel.Add(uint64(n))
	if err != nil {
		w.drops[DropTxError] += uint64(len(q.pkts) - n)
		w.r.log.Debug("tunnel write failed", zap.Int("superframes", len(q.pkts)-n), zap.Error(err))
	}
	q.reset()
}
