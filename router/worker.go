package router

import (
	"errors"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/tortie-net/tortie/encap"
	"github.com/tortie-net/tortie/fib"
	"github.com/tortie-net/tortie/flow"
	"github.com/tortie-net/tortie/header"
)

// origin says where a packet entered; it decides TTL handling and what may
// be forwarded where.
type origin uint8

const (
	fromPod    origin = iota // a pod port: routed hop, TTL decremented
	fromHost                 // the host stack already routed it: no decrement
	fromTunnel               // decapsulated: delivered to local pods only
	fromSelf                 // an ICMP error we generated
)

const icmpQuoteMax = 576 // RFC 1812 §4.3.2.3: the error must not exceed 576 bytes

// worker carries one input's batches to their outputs. Everything it needs
// per packet is allocated once, in newWorker.
type worker struct {
	r     *Router
	bufs  [][]byte
	sizes []int
	one   [][]byte // a one-element batch for pod writes

	tab   *fib.Table
	ports []*Port
	pol   *policyState // nil: no policy installed
	now   int64        // flow.Now() at the start of the batch
	ct    ctMemo       // the last packet conntrack passed in the batch
	fm    fibMemo      // the last FIB answers in the batch
	from  *Port        // the pod port of the packet being forwarded (fromPod)
	// csumKnown: the packet being forwarded from the host or the
	// underlay has its TCP checksum computed here (a superframe cut, a
	// CHECKSUM_PARTIAL finished) or verified by the kernel (DATA_VALID,
	// or a VXLAN datagram of a GRO message, under a verified UDP
	// checksum); set by fromOffload and underlayBatch around the
	// packet, false otherwise.
	csumKnown bool
	// packed: the VXLAN datagram being handled follows another in its
	// buffer (a GRO message), so nothing may be written in front of its
	// own VXLAN header; set by underlayBatch around the datagram.
	packed bool
	// super: the packet being forwarded is a TCP superframe that leaves
	// whole, a pod's to the host, the host's or the underlay's to a pod
	// (set by whole around it).
	super superframe

	// The outputs, each a queue emptied at the end of the batch (or when
	// full). The underlay queue and the GSO run hold the worker's own
	// senders (see Underlay).
	under underQueue // complete packets for the underlay
	host  hostQueue  // packets for the host, written at flush
	// hostOff: packets for the host behind their own virtio-net headers
	// (the host's OffloadWriter). At most one of host and hostOff holds
	// packets at a time, so the host sees them in the order routed.
	hostOff hostQueue
	// tun: pods' superframes for the TunnelWriter, behind their own
	// virtio-net headers. A datagram gathered for a UDP GSO send and a
	// superframe queued here never wait at the same time, so a flow's
	// packets leave in the order routed.
	tun  hostQueue
	pods podQueue // frames for offload ports, coalesced at flush
	gso  gsoRuns  // VXLAN datagrams gathered for UDP GSO sends

	icmpBufs [][]byte
	icmpUsed int
	fragBufs [][]byte // allocated on first fragmentation
	fragUsed int
	segBufs  [][]byte // allocated on the first TCP superframe
	segUsed  int
	segArea  []byte // segments bound for VXLAN over UDP GSO, back to back
	areaPos  int

	drops    [NumDropReasons]uint64
	flushing bool
	arp      bucket
}

func (r *Router) newWorker(batch, bufSize int) *worker {
	if batch < 1 {
		batch = 1
	}
	w := &worker{r: r, one: make([][]byte, 1)}
	if r.ul.GSO != nil {
		w.gso.send = r.ul.GSO()
	}
	w.bufs = make([][]byte, batch)
	for i := range w.bufs {
		w.bufs[i] = make([]byte, Headroom+bufSize)
	}
	w.sizes = make([]int, batch)
	q := 2*batch + 64
	w.under = newUnderQueue(r.ul.Sender(), q)
	w.host = hostQueue{pkts: make([][]byte, 0, q)}
	w.hostOff = hostQueue{pkts: make([][]byte, 0, q)}
	w.tun = hostQueue{pkts: make([][]byte, 0, q)}
	w.pods = newPodQueue(q)
	w.icmpBufs = make([][]byte, batch)
	for i := range w.icmpBufs {
		w.icmpBufs[i] = make([]byte, Headroom+icmpQuoteMax)
	}
	w.arp = newBucket(r.cfg.ARPRate, r.cfg.ARPBurst)
	return w
}

// begin loads the snapshots a batch is routed with.
func (w *worker) begin() {
	w.tab = w.r.fib.Load()
	w.ports = *w.r.ports.Load()
	w.pol = w.r.pol.Load() // after the ports: see publishPolicy
	w.now = flow.Now()
	w.ct = ctMemo{}
	w.fm = fibMemo{}
}

// fibMemo is the worker's last FIB lookup and last node address found in
// the batch: the FIB is one snapshot for the whole batch (begin), so the
// same address gets the same answer, and the segments of a flow, which
// come in runs, ask the table once a run.
type fibMemo struct {
	set  bool
	addr uint32
	nh   *fib.NextHop
	node [4]byte // a remote node's underlay address (zero: none yet)
}

// lookup is w.tab.Lookup through the memo.
func (w *worker) lookup(addr uint32) *fib.NextHop {
	if w.fm.set && w.fm.addr == addr {
		return w.fm.nh
	}
	nh := w.tab.Lookup(addr)
	w.fm.set, w.fm.addr, w.fm.nh = true, addr, nh
	return nh
}

// isRemoteNode is w.tab.IsNode through the memo.
func (w *worker) isRemoteNode(a [4]byte) bool {
	if a == w.fm.node && a != [4]byte{} {
		return true
	}
	if !w.tab.IsNode(a) {
		return false
	}
	w.fm.node = a
	return true
}

func (w *worker) drop(d DropReason) { w.drops[d]++ }

// flush sends everything queued and publishes the batch's drop counts.
func (w *worker) flush() {
	w.flushUnder()
	w.flushHost()
	w.flushPods()
	if w.gso.send != nil {
		w.flushGSO() // nothing should be left; the buffers are about to be reused
	}
	w.icmpUsed, w.fragUsed, w.segUsed, w.areaPos = 0, 0, 0, Headroom
	for i, n := range w.drops {
		if n != 0 {
			w.r.drops[i].Add(n)
			w.drops[i] = 0
		}
	}
}

// ipv4Drop maps a validation failure to its drop reason.
func ipv4Drop(st header.IPv4Status) DropReason {
	switch st {
	case header.IPv4TooShort:
		return DropTooShort
	case header.IPv4BadVersion:
		return DropBadVersion
	case header.IPv4BadChecksum:
		return DropBadChecksum
	}
	return DropMalformed
}

// fromPod handles one Ethernet frame from a pod at buf[off:end].
func (w *worker) fromPod(p *Port, buf []byte, off, end int) {
	if end-off < header.EthernetLen {
		w.drop(DropTooShort)
		return
	}
	eth := header.Ethernet(buf[off:end])
	switch eth.Type() {
	case header.EtherTypeARP:
		w.arpFromPod(p, buf, off, end)
		return
	case header.EtherTypeIPv4:
	case header.EtherTypeIPv6:
		w.drop(DropIPv6)
		return
	default:
		w.drop(DropUnsupportedEther)
		return
	}
	start := off + header.EthernetLen
	ip, st := header.IPv4(buf[start:end]).Check()
	if st != header.IPv4OK {
		w.drop(ipv4Drop(st))
		return
	}
	if !p.cfg.AllowSpoof && ip.Src() != p.addr {
		w.drop(DropSpoofedSource)
		return
	}
	// Pods may not originate tunnel traffic: a forged IPIP or VXLAN packet
	// would otherwise be taken for a node's by a peer.
	if ip.Protocol() == header.ProtocolIPIP ||
		(ip.Protocol() == header.ProtocolUDP && ip.IsFirstFragment() && len(ip) >= ip.HeaderLen()+header.UDPLen &&
			header.UDP(ip.Payload()).DstPort() == header.VXLANPort) {
		w.drop(DropPodEncap)
		return
	}
	w.from = p
	w.forward(fromPod, buf, start, start+len(ip))
}

// arpFromPod answers who-has 169.254.1.1 with GatewayMAC, and ignores the rest.
func (w *worker) arpFromPod(p *Port, buf []byte, off, end int) {
	a := header.ARP(buf[off+header.EthernetLen : end])
	if !a.IsValid() {
		w.drop(DropMalformed)
		return
	}
	if a.Op() != header.ARPRequest || a.TPA() != Gateway {
		w.drop(DropARPIgnored)
		return
	}
	if !w.arp.allow(time.Now().UnixNano()) {
		w.drop(DropARPRateLimited)
		return
	}
	requester := a.SHA()
	a.TurnIntoReply(GatewayMAC, Gateway)
	header.Ethernet(buf[off:]).Encode(requester, GatewayMAC, header.EtherTypeARP)
	w.writePort(p, buf, off, off+header.EthernetLen+header.ARPLen)
}

// fromHost handles one IP packet from the host TUN.
func (w *worker) fromHost(buf []byte, off, end int) {
	if end-off >= 1 && buf[off]>>4 == 6 {
		w.drop(DropIPv6)
		return
	}
	ip, st := header.IPv4(buf[off:end]).Check()
	if st != header.IPv4OK {
		w.drop(ipv4Drop(st))
		return
	}
	w.forward(fromHost, buf, off, off+len(ip))
}

// fromVXLAN handles one UDP payload received on port 4789 from src.
func (w *worker) fromVXLAN(src [4]byte, buf []byte, off, end int) {
	if !w.isRemoteNode(src) {
		w.drop(DropUnknownNode)
		return
	}
	inner, ok := w.r.vxlan.Decap(buf[off:end])
	if !ok {
		w.drop(DropDecapFailed)
		return
	}
	start := off + inner
	ip, st := header.IPv4(buf[start:end]).Check()
	if st != header.IPv4OK {
		w.drop(ipv4Drop(st))
		return
	}
	if coalesced(ip) {
		if !w.packed {
			w.fromCoalesced(fib.ModeVXLAN, buf, start, start+len(ip))
			return
		}
		// A segment joined with others by the kernel (a superframe is
		// never): no room in front for a virtio-net header, which would
		// overwrite the datagram before it. Its checksum is finished
		// here instead, and it goes on as any segment.
		finishChecksum(ip, 0, ip.HeaderLen(), header.TCPChecksumOffset)
	}
	finishPartialUDP(ip)
	w.forward(fromTunnel, buf, start, start+len(ip))
}

// fromIPIP handles one whole outer IPv4 packet of protocol 4.
func (w *worker) fromIPIP(buf []byte, off, end int) {
	outer, st := header.IPv4(buf[off:end]).Check()
	if st != header.IPv4OK || outer.Protocol() != header.ProtocolIPIP || outer.IsFragment() {
		// The kernel reassembles before raw delivery; anything else is broken.
		w.drop(DropDecapFailed)
		return
	}
	if !w.isRemoteNode(outer.Src()) {
		w.drop(DropUnknownNode)
		return
	}
	start := off + outer.HeaderLen()
	ip, st := header.IPv4(buf[start : off+len(outer)]).Check()
	if st != header.IPv4OK {
		w.drop(ipv4Drop(st))
		return
	}
	if coalesced(ip) {
		w.fromCoalesced(fib.ModeIPIP, buf, start, start+len(ip))
		return
	}
	w.forward(fromTunnel, buf, start, start+len(ip))
}

// martian applies RFC 1812 §5.3.7 and §4.2.2.11 to a packet being forwarded:
// such addresses are never valid on the wire between routers.
func martian(src, dst uint32) bool {
	return header.IsZeroNet(src) || header.IsLoopback(src) || header.IsMulticast(src) || header.IsClassE(src) ||
		header.IsLinkLocal(src) ||
		header.IsZeroNet(dst) || header.IsLoopback(dst) || header.IsLinkLocal(dst)
}

// forward routes the validated IPv4 packet at buf[start:end].
func (w *worker) forward(o origin, buf []byte, start, end int) {
	ip := header.IPv4(buf[start:end])
	src, dst := ip.SrcU32(), ip.DstU32()
	if o != fromSelf && martian(src, dst) {
		w.drop(DropMartian)
		return
	}
	if header.IsMulticast(dst) || header.IsClassE(dst) {
		w.drop(DropNotUnicast)
		return
	}
	nh := w.lookup(dst)
	if nh == nil && o == fromTunnel {
		w.drop(DropDecapNotLocal)
		return
	}
	if nh == nil {
		w.drop(DropNoRoute)
		w.icmpError(o, ip, header.ICMPDestUnreach, header.ICMPCodeNetUnreach, 0)
		return
	}
	if (nh.Kind == fib.KindLocal || nh.Kind == fib.KindRemote) && o != fromSelf {
		switch {
		case o == fromHost:
			w.trackFromHost(ip, src)
		case (o == fromPod || nh.Kind == fib.KindLocal) && w.replyViaHost(ip):
			// A reply of a flow the node translated: the kernel reverses
			// the translation and routes it back through us.
			if !w.decTTL(o, ip) {
				return
			}
			w.r.viaHost.Add(1)
			w.toHost(buf, start, end)
			return
		}
	}
	if w.pol != nil && o != fromSelf && !w.policyAllows(w.pol, o, nh, ip) {
		return
	}
	switch nh.Kind {
	case fib.KindLocal:
		if nh.Port >= uint32(len(w.ports)) || w.ports[nh.Port] == nil {
			w.drop(DropNoPort)
			return
		}
		if (o == fromPod || o == fromTunnel) && !w.decTTL(o, ip) {
			return
		}
		p := w.ports[nh.Port]
		header.Ethernet(buf[start-header.EthernetLen:]).Encode(p.cfg.MAC, GatewayMAC, header.EtherTypeIPv4)
		if w.super.on {
			// A superframe of the host or of a pod, whole (see whole):
			// behind a virtio-net header for the pod's kernel.
			if !p.cfg.Offload || o == fromSelf {
				w.drop(DropBadOffload)
				return
			}
			s := &w.super
			at := start - header.EthernetLen - header.VirtioNetHdrLen
			header.VirtioNetHdr(buf[at:]).Encode(header.VirtioNetHdrFNeedsCsum, s.gsoType, header.EthernetLen+s.hdrLen, s.mss,
				header.EthernetLen+s.csumStart, header.TCPChecksumOffset)
			w.queuePod(p, buf, start-header.EthernetLen, end, csumWhole)
		} else if p.cfg.Offload {
			csum := csumTrusted
			if (o == fromTunnel || o == fromHost) && !w.csumKnown {
				csum = csumUnchecked
			}
			w.queuePod(p, buf, start-header.EthernetLen, end, csum)
		} else {
			w.writePort(p, buf, start-header.EthernetLen, end)
		}
	case fib.KindRemote:
		if o == fromTunnel {
			w.drop(DropDecapNotLocal) // never relay: we are not an open tunnel endpoint
			return
		}
		if o == fromPod && nh.Mode == fib.ModeNative && w.nativeViaHost() {
			// The kernel forwards it (and decrements its TTL, once
			// for this node, as for a Calico pod's packet).
			w.toHostOffload(buf, start, end)
			return
		}
		if w.super.on && nh.Mode == fib.ModeVXLAN {
			// A pod's superframe that whole let through for the
			// TunnelWriter (tunnelFits): whole, for the kernel to cut.
			if !w.decTTL(o, ip) {
				return
			}
			w.toTunnel(nh, buf, start, end)
			return
		}
		if w.super.on {
			w.drop(DropBadOffload)
			return
		}
		if o == fromPod && !w.decTTL(o, ip) {
			return
		}
		w.encap(o, nh, buf, start, end)
	case fib.KindHost:
		switch {
		case o == fromHost:
			w.drop(DropHostLoop)
			return
		case o == fromTunnel && (dst != w.r.tunnel.Load() || dst == 0):
			w.drop(DropDecapNotLocal)
			return
		}
		w.toHost(buf, start, end)
	case fib.KindBlackhole:
		w.drop(DropBlackhole)
	default:
		w.drop(DropNoRoute)
	}
}

// trackFromHost records a packet the host hands us for a pod or another
// node. One whose source is not the node's own address was forwarded by
// the kernel, possibly after translating its destination (a Service's
// DNAT): its flow is marked ViaHost so that its replies go back through
// the kernel. Non-TCP flows are also recorded by addresses alone, for the
// fragments of their replies. ICMP errors start no flow.
func (w *worker) trackFromHost(ip header.IPv4, src uint32) {
	if src == w.r.nodeAddr || src == w.r.tunnel.Load() {
		return
	}
	// A pod of a natively routed block reaches our pods through the
	// kernel anyway; its replies go straight back, and the kernel of the
	// node that translated it (if any) sees them.
	if nh := w.tab.Lookup(src); nh != nil && nh.Kind == fib.KindRemote && nh.Mode == fib.ModeNative {
		return
	}
	t := w.r.flows
	p := flow.Parse(ip)
	switch p.Kind {
	case flow.Related:
	case flow.Fragment:
		t.Track(p.Key, flow.ViaHost, 0, w.now)
	default:
		t.Track(p.Key, flow.ViaHost, p.TCP, w.now)
		if p.Key.Proto != header.ProtocolTCP {
			t.Track(p.Key.Addrs(), flow.ViaHost, 0, w.now)
		}
		w.r.anyViaHost.Store(true)
	}
}

// replyViaHost reports whether a packet from a pod or a tunnel belongs to
// a ViaHost flow: a reply (its reversed key), a fragment of a reply (by
// addresses), or an ICMP error about one of the flow's packets.
func (w *worker) replyViaHost(ip header.IPv4) bool {
	if !w.r.anyViaHost.Load() {
		return false
	}
	t := w.r.flows
	p := flow.Parse(ip)
	var f flow.Flags
	var ok bool
	switch p.Kind {
	case flow.Plain:
		f, ok = t.Reply(p.Key.Reverse(), p.TCP, w.now)
	case flow.Fragment:
		f, ok = t.Lookup(p.Key.Reverse(), w.now)
	case flow.Related:
		f, ok = t.Lookup(p.Key, w.now)
	}
	return ok && f&flow.ViaHost != 0
}

// decTTL implements RFC 1812 §5.3.1: a packet whose TTL would reach zero is
// discarded with an ICMP time exceeded; otherwise TTL drops by one and the
// checksum is patched incrementally.
func (w *worker) decTTL(o origin, ip header.IPv4) bool {
	if ip.TTL() <= 1 {
		w.drop(DropTTLExceeded)
		w.icmpError(o, ip, header.ICMPTimeExceeded, header.ICMPCodeTTLExceeded, 0)
		return false
	}
	ip.DecTTL()
	return true
}

func (w *worker) writePort(p *Port, buf []byte, start, end int) {
	if p.cfg.Offload {
		// A plain frame: an all-zero virtio-net header in the headroom.
		start -= header.VirtioNetHdrLen
		header.VirtioNetHdr(buf[start:]).Clear()
	}
	w.one[0] = buf[:end]
	if _, err := p.dev.Write(w.one, start); err != nil {
		w.drop(DropTxError)
		return
	}
	p.TxPackets.Add(1)
	p.TxBytes.Add(uint64(end - start))
}

// hostQueue holds the packets for the host until the batch ends (each
// with tunOffset bytes of room in front), to be written in one call.
type hostQueue struct {
	pkts [][]byte
}

// add queues a packet and reports whether the queue is now full.
func (q *hostQueue) add(pkt []byte) bool {
	q.pkts = append(q.pkts, pkt)
	return len(q.pkts) == cap(q.pkts)
}

func (q *hostQueue) reset() {
	clear(q.pkts)
	q.pkts = q.pkts[:0]
}

// toHost queues the packet at buf[start:end] for the host: a superframe
// behind its virtio-net header, anything else for the device's Write
// (tunOffset bytes of room in front).
func (w *worker) toHost(buf []byte, start, end int) {
	if w.super.on {
		w.toHostOffload(buf, start, end)
		return
	}
	if len(w.hostOff.pkts) > 0 {
		w.flushHostOffload() // keep the order routed
	}
	if w.host.add(buf[start-tunOffset : end]) {
		w.flushHost()
	}
}

// nativeViaHost says whether natively routed packets from pods go to the
// host's kernel (behind virtio-net headers, superframes whole) rather
// than out of the underlay's raw socket one by one.
func (w *worker) nativeViaHost() bool {
	h := w.r.host.Load()
	return h != nil && h.off != nil
}

// toHostOffload queues buf[start:end] for the host's OffloadWriter behind
// a virtio-net header written into the 10 bytes in front of it (the
// Ethernet header of a pod's frame, or headroom): the superframe's GSO
// fields, or all zero.
func (w *worker) toHostOffload(buf []byte, start, end int) {
	if len(w.host.pkts) > 0 {
		w.flushHost() // keep the order routed
	}
	v := header.VirtioNetHdr(buf[start-header.VirtioNetHdrLen : start])
	if s := &w.super; s.on {
		v.Encode(header.VirtioNetHdrFNeedsCsum, s.gsoType, s.hdrLen, s.mss, s.csumStart, header.TCPChecksumOffset)
		w.r.offload.wholeToHost.Add(1)
	} else {
		v.Clear()
	}
	if w.hostOff.add(buf[start-header.VirtioNetHdrLen : end]) {
		w.flushHostOffload()
	}
}

// flushHostOffload writes the packets queued for the host's OffloadWriter.
func (w *worker) flushHostOffload() {
	q := &w.hostOff
	if len(q.pkts) == 0 {
		return
	}
	h := w.r.host.Load()
	if h == nil || h.off == nil {
		w.drops[DropTxError] += uint64(len(q.pkts))
	} else {
		var bytes uint64
		for _, b := range q.pkts {
			bytes += uint64(len(b) - header.VirtioNetHdrLen)
		}
		n, err := h.off.WriteOffload(q.pkts)
		if err != nil {
			w.drops[DropTxError] += uint64(len(q.pkts) - n)
		}
		h.TxPackets.Add(uint64(n))
		h.TxBytes.Add(bytes)
	}
	q.reset()
}

// flushHost writes what is queued for the host.
func (w *worker) flushHost() {
	w.flushHostOffload()
	q := &w.host
	if len(q.pkts) == 0 {
		return
	}
	h := w.r.host.Load()
	if h == nil {
		w.drops[DropTxError] += uint64(len(q.pkts))
	} else {
		var bytes uint64
		for _, b := range q.pkts {
			bytes += uint64(len(b) - tunOffset)
		}
		if _, err := h.dev.Write(q.pkts, tunOffset); err != nil {
			w.drops[DropTxError]++
		}
		h.TxPackets.Add(uint64(len(q.pkts)))
		h.TxBytes.Add(bytes)
	}
	q.reset()
}

// encap sends the packet at buf[start:end] toward a remote node.
func (w *worker) encap(o origin, nh *fib.NextHop, buf []byte, start, end int) {
	ip := header.IPv4(buf[start:end])
	tunnelMTU := int(w.r.pathMTU.Load()) - encap.Overhead(nh.Mode)
	if len(ip) > tunnelMTU {
		if ip.DF() {
			w.drop(DropFragNeeded)
			w.icmpError(o, ip, header.ICMPDestUnreach, header.ICMPCodeFragNeeded, uint32(tunnelMTU))
			return
		}
		w.fragment(nh, ip, tunnelMTU)
		return
	}
	w.encapFitted(nh, buf, start, end)
}

// encapFitted writes the outer headers in front of a packet known to fit.
func (w *worker) encapFitted(nh *fib.NextHop, buf []byte, start, end int) {
	o, dst := start, header.IPv4(buf[start:end]).Dst()
	switch nh.Mode {
	case fib.ModeIPIP:
		o, dst = encap.PutIPIP(buf, start, end, w.r.cfg.NodeAddr, nh.Node), nh.Node
	case fib.ModeVXLAN:
		if w.gso.send != nil {
			v := w.r.vxlan.PutInner(buf, start, nh.VTEPMAC)
			w.gsoAppend(buf, v, end, nh.Node, header.IPv4(buf[start:end]))
			return
		}
		o, dst = w.r.vxlan.Put(buf, start, end, nh.VTEPMAC, nh.Node), nh.Node
	}
	if w.under.full() {
		if w.flushing {
			// Only ICMP errors raised while flushing get here, and their
			// number is bounded by icmpBufs; the queue has room for them.
			w.drop(DropTxError)
			return
		}
		w.flushUnder()
	}
	w.under.add(buf[o:end], dst, start-o)
}

// fragment splits a too-big packet without DF into fragments of at most mtu
// bytes (RFC 791 §3.2) and encapsulates each. Options whose copy flag is
// clear are turned into NOPs in all but the first fragment, so every
// fragment keeps the same header length.
func (w *worker) fragment(nh *fib.NextHop, ip header.IPv4, mtu int) {
	hl := ip.HeaderLen()
	per := (mtu - hl) &^ 7
	if per < 8 {
		w.drop(DropMTUExceeded)
		return
	}
	if w.fragBufs == nil {
		w.fragBufs = make([][]byte, 64)
		for i := range w.fragBufs {
			w.fragBufs[i] = make([]byte, Headroom+header.IPv4MaxLen)
		}
	}
	payload := ip[hl:]
	baseOff := ip.FlagsFrag() & header.IPv4FragOffMask
	mf := ip.MF()
	df := ip.FlagsFrag() & header.IPv4FlagDF
	for off := 0; off < len(payload); off += per {
		if w.fragUsed == len(w.fragBufs) {
			if w.flushing {
				w.drop(DropTxError)
				return
			}
			w.flushUnder()
			w.fragUsed = 0
		}
		fb := w.fragBufs[w.fragUsed]
		w.fragUsed++
		chunk := payload[off:min(off+per, len(payload))]
		f := header.IPv4(fb[Headroom : Headroom+hl+len(chunk)])
		copy(f, ip[:hl])
		copy(f[hl:], chunk)
		if off > 0 {
			for i := header.IPv4MinLen; i < hl; {
				t := f[i]
				if t == 0 {
					break
				}
				if t == 1 {
					i++
					continue
				}
				l := int(f[i+1])
				if t&0x80 == 0 {
					for j := i; j < i+l; j++ {
						f[j] = 1
					}
				}
				i += l
			}
		}
		flags := df | (baseOff + uint16(off/8))
		if off+len(chunk) < len(payload) || mf {
			flags |= header.IPv4FlagMF
		}
		f.SetTotalLen(len(f))
		f.SetFlagsFrag(flags)
		f.ComputeChecksum()
		w.encapFitted(nh, fb, Headroom, Headroom+len(f))
	}
}

// underQueue holds the complete packets for the underlay until the batch
// ends, with their next hops, and the worker's own sender they leave by.
type underQueue struct {
	send  UnderlaySender
	pkts  [][]byte
	dsts  [][4]byte
	inner []int // offset of the inner packet in pkts[i], for EMSGSIZE
}

func newUnderQueue(send UnderlaySender, n int) underQueue {
	return underQueue{send: send, pkts: make([][]byte, 0, n), dsts: make([][4]byte, 0, n), inner: make([]int, 0, n)}
}

func (q *underQueue) full() bool { return len(q.pkts) == cap(q.pkts) }

func (q *underQueue) add(pkt []byte, dst [4]byte, inner int) {
	q.pkts = append(q.pkts, pkt)
	q.dsts = append(q.dsts, dst)
	q.inner = append(q.inner, inner)
}

func (q *underQueue) reset() {
	clear(q.pkts)
	q.pkts, q.dsts, q.inner = q.pkts[:0], q.dsts[:0], q.inner[:0]
}

func (w *worker) flushUnder() {
	w.flushTunnel()
	if w.gso.send != nil {
		w.flushGSO()
	}
	w.flushing = true
	defer func() { w.flushing = false }()
	q := &w.under
	for sent := 0; sent < len(q.pkts); {
		n, err := q.send.Send(q.pkts[sent:], q.dsts[sent:])
		sent += n
		if err == nil {
			break
		}
		if errors.Is(err, syscall.EAGAIN) {
			// The send buffer is full: what is left would find it full
			// too. Drop it all, as a full transmit queue would.
			w.drops[DropTxFull] += uint64(len(q.pkts) - sent)
			break
		}
		failed := sent
		sent++
		if errors.Is(err, syscall.EMSGSIZE) {
			w.learnMTU(failed)
			continue
		}
		w.drop(DropTxError)
		w.r.log.Debug("underlay send failed", zap.Error(err))
	}
	q.reset()
}

// learnMTU handles EMSGSIZE for the queued underlay packet i: the underlay's MTU shrank at run
// time. Lower the path MTU for everyone and, for a DF packet, tell its
// sender (fault 14); the next packets are fragmented or refused up front.
func (w *worker) learnMTU(i int) {
	w.drop(DropMTUExceeded)
	mtu, ok := w.r.relearnPathMTU(w.under.send)
	if !ok {
		return
	}
	pkt := w.under.pkts[i]
	inner := header.IPv4(pkt[w.under.inner[i]:])
	if inner.DF() {
		// The inner offset is the outer header length: the tunnel's whole overhead.
		overhead := w.under.inner[i]
		// The inner packet's origin is unknown here; treat it as a pod's
		// so that the error is generated under the usual rules.
		w.icmpError(fromPod, inner, header.ICMPDestUnreach, header.ICMPCodeFragNeeded, uint32(mtu-overhead))
	}
}

// icmpError sends an ICMP error about orig back to its source, following
// RFC 1812 §4.3.2.7: never about an ICMP error, a non-first fragment, a
// multicast or broadcast destination, or a source that does not name a
// single host; rate-limited by a token bucket.
func (w *worker) icmpError(o origin, orig header.IPv4, typ, code uint8, mtu uint32) {
	if o == fromSelf || !orig.IsFirstFragment() {
		return
	}
	src, dst := orig.SrcU32(), orig.DstU32()
	if header.IsZeroNet(src) || header.IsLoopback(src) || header.IsMulticast(src) || header.IsClassE(src) ||
		header.IsMulticast(dst) || header.IsClassE(dst) {
		return
	}
	if orig.Protocol() == header.ProtocolICMP {
		p := orig.Payload()
		if len(p) < 1 || header.IsICMPError(p[0]) {
			return
		}
	}
	if w.icmpUsed == len(w.icmpBufs) || !w.r.icmp.allow() {
		w.drop(DropICMPRateLimited)
		return
	}
	b := w.icmpBufs[w.icmpUsed]
	w.icmpUsed++
	quote := min(len(orig), icmpQuoteMax-header.IPv4MinLen-header.ICMPHeaderLen)
	total := header.IPv4MinLen + header.ICMPHeaderLen + quote
	pkt := b[Headroom : Headroom+total]
	copy(pkt[header.IPv4MinLen+header.ICMPHeaderLen:], orig[:quote])
	header.ICMP(pkt[header.IPv4MinLen:]).EncodeError(typ, code, mtu&0xffff)
	header.IPv4(pkt).Encode(&header.IPv4Fields{
		TotalLen: total, TTL: header.IPv4DefaultTTL, Protocol: header.ProtocolICMP,
		Src: w.r.cfg.NodeAddr, Dst: orig.Src(),
	})
	w.forward(fromSelf, b, Headroom, Headroom+total)
}
