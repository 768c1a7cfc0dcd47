package router

import (
	"errors"
	"syscall"

	"github.com/tortie-net/tortie/encap"
	"github.com/tortie-net/tortie/header"
)

// GSOSender sends runs of equal-sized VXLAN datagrams (VXLAN header and
// inner frame; the kernel adds outer IPv4 and UDP) to one node in one call.
//
// Concurrency: a GSOSender is owned by one worker and need not be safe for
// concurrent use; every worker gets its own from Underlay.GSO.
type GSOSender interface {
	// SendGSO sends payload as datagrams of segSize bytes (the last may
	// be shorter) to dst; hash picks the source port. A full send buffer
	// is syscall.EAGAIN, returned at once with nothing sent, as for
	// UnderlaySender.Send.
	SendGSO(payload []byte, segSize int, dst [4]byte, hash uint32) error
	// Source says which source (a socket, and so a source port) a hash
	// leaves from, a number from 0: datagrams whose hashes share a
	// source may share a run.
	Source(hash uint32) int
	// SourcePort is the UDP source port a source's datagrams carry, for
	// a flow's datagrams that leave another way (TunnelWriter) to carry
	// it too.
	SourcePort(source int) uint16
	// MTU re-reads the underlay's MTU (after EMSGSIZE).
	MTU() (int, error)
}

const (
	gsoMaxBytes    = 65000 // what one UDP GSO send may carry
	gsoMaxSegments = 64
	// gsoLanes is how many runs a worker gathers at once, one per
	// source (sources beyond share lanes, and flush each other's runs).
	gsoLanes = 8
)

// SuperframeSegments is how many segments a pod's TCP superframe should
// have at most for a pod MTU of mtu: as many VXLAN datagrams as one UDP GSO
// send carries. Larger superframes leave in two sends, the second short.
func SuperframeSegments(mtu int) int {
	return min(gsoMaxSegments, gsoMaxBytes/(mtu+header.EthernetLen+header.VXLANLen))
}

// gsoRuns are the runs of datagrams a worker is gathering, one per lane,
// and the worker's own GSO sender they leave by (nil: no GSO, VXLAN goes
// to the underlay queue). Every datagram of an inner flow must leave from
// one source port, or a receiver that spreads VXLAN over sockets or cores
// by source port (and an ECMP fabric) would take the flow apart and
// reorder it: a run holds datagrams of one source only, and a lane per
// source lets datagrams of many flows, interleaved, still leave in runs.
type gsoRuns struct {
	send GSOSender
	lane [gsoLanes]gsoRun
}

// gsoRun is one lane's run. A run starts in place, where its first
// datagram lies; datagrams that follow it directly in the same buffer
// (segments of a superframe laid out back to back) join it there, and the
// first one that does not moves the run into buf.
type gsoRun struct {
	buf    []byte // the run, once it left its place
	n      int    // bytes of the run in buf
	ext    []byte // the run in place (nil once moved)
	seg    int
	count  int
	dst    [4]byte
	hash   uint32 // the first datagram's: it picks the source
	src    int
	closed bool // a shorter datagram ended the run
}

func (g *gsoRun) len() int {
	if g.ext != nil {
		return len(g.ext)
	}
	return g.n
}

// follows reports whether b starts right where the in-place run ends.
func (g *gsoRun) follows(b []byte) bool {
	l := len(g.ext)
	return cap(g.ext) > l && len(b) > 0 && &g.ext[:l+1][l] == &b[0]
}

// gsoAppend adds one VXLAN datagram (buf[v:end], inner packet ip) for dst
// to the run of its flow's source, sending that run first if the datagram
// cannot join it.
func (w *worker) gsoAppend(buf []byte, v, end int, dst [4]byte, ip header.IPv4) {
	if len(w.tun.pkts) > 0 {
		w.flushTunnel() // keep the order routed
	}
	hash := uint32(encap.SourcePort(ip))
	src := w.gso.send.Source(hash)
	g := &w.gso.lane[src%gsoLanes]
	size := end - v
	if g.count > 0 && (g.dst != dst || g.src != src || g.closed || size > g.seg || g.len()+size > gsoMaxBytes || g.count == gsoMaxSegments) {
		w.flushRun(g)
	}
	d := buf[v:end]
	switch {
	case g.count == 0:
		g.dst, g.seg, g.hash, g.src = dst, size, hash, src
		g.ext = d
	case g.ext != nil && g.follows(d):
		g.ext = g.ext[:len(g.ext)+size]
	default:
		if g.buf == nil {
			g.buf = make([]byte, gsoMaxBytes)
		}
		if g.ext != nil {
			g.n = copy(g.buf, g.ext)
			g.ext = nil
		}
		g.n += copy(g.buf[g.n:], d)
	}
	g.count++
	g.closed = size < g.seg
}

// gsoPending says whether some run is being gathered.
func (w *worker) gsoPending() bool {
	for i := range w.gso.lane {
		if w.gso.lane[i].count > 0 {
			return true
		}
	}
	return false
}

// flushGSO sends every gathered run.
func (w *worker) flushGSO() {
	for i := range w.gso.lane {
		w.flushRun(&w.gso.lane[i])
	}
}

// flushRun sends one gathered run. A refusal for size means the underlay
// MTU shrank: the path MTU is lowered; the run itself is counted lost. A
// full send buffer loses the run too (tx_full).
func (w *worker) flushRun(g *gsoRun) {
	if g.count == 0 {
		return
	}
	run := g.ext
	if run == nil {
		run = g.buf[:g.n]
	}
	err := w.gso.send.SendGSO(run, g.seg, g.dst, g.hash)
	switch {
	case err == nil:
	case errors.Is(err, syscall.EAGAIN):
		w.drops[DropTxFull] += uint64(g.count)
	case errors.Is(err, syscall.EMSGSIZE) || errors.Is(err, syscall.EINVAL):
		w.drops[DropMTUExceeded] += uint64(g.count)
		w.r.relearnPathMTU(w.gso.send)
	default:
		w.drops[DropTxError] += uint64(g.count)
	}
	g.n, g.ext, g.count, g.closed = 0, nil, 0, false
}
