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
	// be shorter) to dst; hash picks the source port.
	SendGSO(payload []byte, segSize int, dst [4]byte, hash uint32) error
	// MTU re-reads the underlay's MTU (after EMSGSIZE).
	MTU() (int, error)
}

const (
	gsoMaxBytes    = 65000 // what one UDP GSO send may carry
	gsoMaxSegments = 64
)

// SuperframeSegments is how many segments a pod's TCP superframe should
// have at most for a pod MTU of mtu: as many VXLAN datagrams as one UDP GSO
// send carries. Larger superframes leave in two sends, the second short.
func SuperframeSegments(mtu int) int {
	return min(gsoMaxSegments, gsoMaxBytes/(mtu+header.EthernetLen+header.VXLANLen))
}

// gsoRun is the run of datagrams a worker is gathering, and the worker's
// own GSO sender it leaves by (nil: no GSO, VXLAN goes to the underlay
// queue). A run starts in place, where its first datagram lies; datagrams
// that follow it directly in the same buffer (segments of a superframe
// laid out back to back) join it there, and the first one that does not
// moves the run into buf.
type gsoRun struct {
	send   GSOSender
	buf    []byte // the run, once it left its place
	n      int    // bytes of the run in buf
	ext    []byte // the run in place (nil once moved)
	seg    int
	count  int
	dst    [4]byte
	hash   uint32
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
// to the run, sending the run first if the datagram cannot join it. A run
// carries one inner flow: its hash picks the socket, and so the source
// port, and every datagram of a flow must leave from the same one, or a
// receiver that spreads flows over sockets or cores by source port (and
// an ECMP fabric) would take them apart and reorder them.
func (w *worker) gsoAppend(buf []byte, v, end int, dst [4]byte, ip header.IPv4) {
	g := &w.gso
	size := end - v
	hash := uint32(encap.SourcePort(ip))
	if g.count > 0 && (g.dst != dst || g.hash != hash || g.closed || size > g.seg || g.len()+size > gsoMaxBytes || g.count == gsoMaxSegments) {
		w.flushGSO()
	}
	d := buf[v:end]
	switch {
	case g.count == 0:
		g.dst, g.seg, g.hash = dst, size, hash
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

// flushGSO sends the gathered run. A refusal for size means the underlay
// MTU shrank: the path MTU is lowered; the run itself is counted lost.
func (w *worker) flushGSO() {
	g := &w.gso
	if g.count == 0 {
		return
	}
	run := g.ext
	if run == nil {
		run = g.buf[:g.n]
	}
	err := g.send.SendGSO(run, g.seg, g.dst, g.hash)
	switch {
	case err == nil:
	case errors.Is(err, syscall.EMSGSIZE) || errors.Is(err, syscall.EINVAL):
		w.drops[DropMTUExceeded] += uint64(g.count)
		if mtu, merr := g.send.MTU(); merr == nil {
			w.r.lowerPathMTU(mtu)
		}
	default:
		w.drops[DropTxError] += uint64(g.count)
	}
	g.n, g.ext, g.count, g.closed = 0, nil, 0, false
}
