package router

import (
	"bytes"

	"github.com/tortie-net/tortie/header"
)

// podOut is a frame waiting in the batch for an offload port.
type podOut struct {
	p          *Port
	buf        []byte
	start, end int
	csum       csumState
}

// csumState says what is known of a queued frame's TCP checksum. A
// superframe is written CHECKSUM_PARTIAL, which the pod's kernel does not
// verify, so a segment nobody vouches for (from another node, where a
// kernel VXLAN peer may send without an outer UDP checksum; from the host
// unchecked) joins one only once its checksum is verified here.
type csumState uint8

const (
	csumTrusted   csumState = iota // computed here, or verified by a kernel
	csumUnchecked                  // to verify before joining a superframe
	csumBad                        // verified, and wrong: written alone
	// csumWhole: a superframe passed on whole, its virtio-net header
	// already in front of it; written alone.
	csumWhole
)

// podQueue holds the frames for offload ports until the batch ends, so
// that consecutive segments of one TCP flow can be written as one
// superframe, with what coalescing needs.
type podQueue struct {
	frames  []podOut
	plain   [][]byte // plain frames for plainTo, written as one batch
	plainTo *Port
	groBuf  []byte // allocated on the first superframe copied together
	vnet    [header.VirtioNetHdrLen]byte
	vec     [][]byte // the parts of one gathered superframe
}

func newPodQueue(n int) podQueue {
	return podQueue{frames: make([]podOut, 0, n), plain: make([][]byte, 0, n), vec: make([][]byte, 0, gsoMaxSegments+2)}
}

// queuePod holds a frame for an offload port until the batch ends.
func (w *worker) queuePod(p *Port, buf []byte, start, end int, csum csumState) {
	q := &w.pods
	if len(q.frames) == cap(q.frames) {
		w.flushPods()
	}
	q.frames = append(q.frames, podOut{p, buf, start, end, csum})
}

// checksumOK says whether the segment of o may be joined into a
// superframe: its TCP checksum needs no check, or is right. A wrong one
// is counted, and the segment is written alone, for the pod's kernel to
// verify and drop.
func (w *worker) checksumOK(o *podOut, s tcpSeg) bool {
	if o.csum == csumUnchecked {
		o.csum = csumTrusted
		if header.Checksum(s.tcp, header.PseudoHeaderSum(s.ip.Src(), s.ip.Dst(), header.ProtocolTCP, len(s.tcp))) != 0xffff {
			o.csum = csumBad
			w.r.offload.groBadChecksums.Add(1)
		}
	}
	return o.csum == csumTrusted
}

// tcpSeg is what coalescing compares about one queued frame.
type tcpSeg struct {
	ip      header.IPv4
	tcp     header.TCP
	payload int
}

// asSeg returns the frame as a TCP segment that may be coalesced: plain
// IPv4 without options, not a fragment, TCP with data and at most ACK|PSH.
func asSeg(frame []byte) (tcpSeg, bool) {
	if len(frame) < header.EthernetLen+header.IPv4MinLen+header.TCPMinLen {
		return tcpSeg{}, false
	}
	ip := header.IPv4(frame[header.EthernetLen:])
	if ip[0] != 0x45 || ip.Protocol() != header.ProtocolTCP || ip.IsFragment() || ip.TotalLen() != len(ip) {
		return tcpSeg{}, false
	}
	tcp := header.TCP(ip[header.IPv4MinLen:])
	thl := tcp.HeaderLen()
	if thl < header.TCPMinLen || thl > len(tcp) || tcp.Flags()&^(header.TCPFlagACK|header.TCPFlagPSH) != 0 || len(tcp) == thl {
		return tcpSeg{}, false
	}
	return tcpSeg{ip, tcp, len(tcp) - thl}, true
}

// follows reports whether b continues a in the same flow, so that their
// payloads may be joined: same addresses, ports, TOS, TTL, DF, ACK number,
// header length and options (timestamps included), and b's sequence number
// right after a's data. a must not carry PSH: it ends a burst.
func follows(a, b tcpSeg) bool {
	return a.tcp.Flags()&header.TCPFlagPSH == 0 &&
		bytes.Equal(a.ip[12:20], b.ip[12:20]) && // addresses
		a.ip[1] == b.ip[1] && a.ip[8] == b.ip[8] && a.ip.DF() == b.ip.DF() &&
		bytes.Equal(a.tcp[0:4], b.tcp[0:4]) && // ports
		bytes.Equal(a.tcp[8:12], b.tcp[8:12]) && // acknowledgment number
		a.tcp.HeaderLen() == b.tcp.HeaderLen() &&
		bytes.Equal(a.tcp[header.TCPMinLen:a.tcp.HeaderLen()], b.tcp[header.TCPMinLen:b.tcp.HeaderLen()]) &&
		b.tcp.Seq() == a.tcp.Seq()+uint32(a.payload)
}

// flushPods writes the queued frames, joining runs of segments of one flow
// to the same port into superframes: the pod's kernel takes one 64 KB
// frame with a GSO header where it would take dozens of writes.
func (w *worker) flushPods() {
	pq := &w.pods
	q := pq.frames
	for i := 0; i < len(q); {
		if q[i].csum == csumWhole {
			w.flushPlain()
			w.writeWhole(&q[i])
			i++
			continue
		}
		first, ok := asSeg(q[i].buf[q[i].start:q[i].end])
		j := i + 1
		if ok {
			last, total := first, len(first.ip)
			for j < len(q) && q[j].p == q[i].p && q[j].csum != csumWhole && last.payload == first.payload {
				s, ok := asSeg(q[j].buf[q[j].start:q[j].end])
				if !ok || s.payload > first.payload || total+s.payload > header.IPv4MaxLen || !follows(last, s) {
					break
				}
				// Checksums only of segments that are joined: a frame
				// written alone is verified by the pod's kernel.
				if (j == i+1 && !w.checksumOK(&q[i], first)) || !w.checksumOK(&q[j], s) {
					break
				}
				last, total = s, total+s.payload
				j++
			}
		}
		switch {
		case j > i+1:
			w.flushPlain() // frames leave in the order they came
			w.writeSuper(q[i:j], first)
		case q[i].p.plain != nil:
			if pq.plainTo != q[i].p {
				w.flushPlain()
				pq.plainTo = q[i].p
			}
			pq.plain = append(pq.plain, q[i].buf[q[i].start:q[i].end])
		default:
			w.flushPlain()
			w.writePort(q[i].p, q[i].buf, q[i].start, q[i].end)
		}
		i = j
	}
	w.flushPlain()
	clear(pq.frames)
	pq.frames = pq.frames[:0]
}

// writeWhole writes a superframe passed on whole, behind the virtio-net
// header that lies in front of it.
func (w *worker) writeWhole(o *podOut) {
	w.one[0] = o.buf[:o.end]
	if _, err := o.p.dev.Write(w.one, o.start-header.VirtioNetHdrLen); err != nil {
		w.drop(DropTxError)
		return
	}
	o.p.TxPackets.Add(1)
	o.p.TxBytes.Add(uint64(o.end - o.start))
	w.r.offload.wholeToPods.Add(1)
}

// flushPlain writes the plain frames queued for one port in one call.
func (w *worker) flushPlain() {
	q := &w.pods
	if len(q.plain) == 0 {
		return
	}
	p := q.plainTo
	n, _ := p.plain.WritePlain(q.plain)
	var bytes uint64
	for _, f := range q.plain[:n] {
		bytes += uint64(len(f) + header.VirtioNetHdrLen)
	}
	p.TxPackets.Add(uint64(n))
	p.TxBytes.Add(bytes)
	w.drops[DropTxError] += uint64(len(q.plain) - n)
	clear(q.plain)
	q.plain, q.plainTo = q.plain[:0], nil
}

// writeSuper joins the payloads of run (segments of one flow, in order)
// after the first segment's headers and writes the result with a GSO
// header: CHECKSUM_PARTIAL over the TCP segment, TCPv4 with the first
// segment's payload size as MSS. Where the device gathers, the payloads
// are written from where they lie; otherwise they are copied together.
func (w *worker) writeSuper(run []podOut, first tcpSeg) {
	q := &w.pods
	p := run[0].p
	hdrs := header.EthernetLen + header.IPv4MinLen + first.tcp.HeaderLen()
	var flags uint8
	n := run[0].end - run[0].start
	for _, o := range run[1:] {
		n += o.end - o.start - hdrs
		flags |= o.buf[o.start+header.EthernetLen+header.IPv4MinLen+13]
	}
	var err error
	if p.vec != nil && len(run)+1 <= min(p.maxVec, cap(q.vec)) {
		// The first segment's headers become the superframe's, in place.
		super := run[0].buf[run[0].start:run[0].end]
		q.superHeaders(super, n, hdrs, flags, first.payload)
		q.vec = append(q.vec[:0], q.vnet[:], super)
		for _, o := range run[1:] {
			q.vec = append(q.vec, o.buf[o.start+hdrs:o.end])
		}
		err = p.vec.WriteVec(q.vec)
		clear(q.vec)
	} else {
		if q.groBuf == nil {
			q.groBuf = make([]byte, Headroom+header.VirtioNetHdrLen+header.EthernetLen+header.IPv4MaxLen)
		}
		start := Headroom + header.VirtioNetHdrLen
		at := start + copy(q.groBuf[start:], run[0].buf[run[0].start:run[0].end])
		for _, o := range run[1:] {
			at += copy(q.groBuf[at:], o.buf[o.start+hdrs:o.end])
		}
		q.superHeaders(q.groBuf[start:at], n, hdrs, flags, first.payload)
		copy(q.groBuf[Headroom:], q.vnet[:])
		w.one[0] = q.groBuf[:at]
		_, err = p.dev.Write(w.one, Headroom)
	}
	if err != nil {
		w.drops[DropTxError] += uint64(len(run))
		return
	}
	p.TxPackets.Add(uint64(len(run)))
	p.TxBytes.Add(uint64(n))
	w.r.offload.groFrames.Add(1)
	w.r.offload.groSegments.Add(uint64(len(run)))
}

// superHeaders rewrites the headers at the front of frame for a superframe
// of n bytes and fills q.vnet: IP length and checksum, PSH if any segment
// had it, the TCP checksum field holding the pseudo-header sum.
func (q *podQueue) superHeaders(frame []byte, n, hdrs int, flags uint8, mss int) {
	ip := header.IPv4(frame[header.EthernetLen:])
	ip.SetTotalLen(n - header.EthernetLen)
	ip.ComputeChecksum()
	tcp := header.TCP(ip[header.IPv4MinLen:])
	tcp.SetFlags(tcp.Flags() | flags&header.TCPFlagPSH)
	tcp.SetChecksum(header.PartialChecksum(ip.Src(), ip.Dst(), header.ProtocolTCP, n-header.EthernetLen-header.IPv4MinLen))
	csumStart := header.EthernetLen + header.IPv4MinLen
	header.VirtioNetHdr(q.vnet[:]).Encode(header.VirtioNetHdrFNeedsCsum, header.VirtioGSOTCPv4, hdrs, mss, csumStart, 16)
}
