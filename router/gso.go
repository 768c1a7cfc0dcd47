package router

import (
	"errors"
	"syscall"

	"github.com/tortie-net/tortie/encap"
	"github.com/tortie-net/tortie/router/header"
)

// GSOSender sends runs of equal-sized VXLAN datagrams (VXLAN header and
// inner frame; the kernel adds outer IPv4 and UDP) to one node in one call.
type GSOSender interface {
	SendGSO(payload []byte, segSize int, dst [4]byte, hash uint32) error
	MTU() (int, error)
}

// SetGSO routes VXLAN through s instead of the raw socket. Call before
// traffic flows.
func (r *Router) SetGSO(s GSOSender) { r.gso = s }

const (
	gsoMaxBytes    = 65000 // what one UDP GSO send may carry
	gsoMaxSegments = 64
)

// gsoRun is the run of datagrams a worker is gathering.
type gsoRun struct {
	buf    []byte
	n      int
	seg    int
	count  int
	dst    [4]byte
	hash   uint32
	closed bool // a shorter datagram ended the run
}

// gsoAppend adds one VXLAN datagram (buf[v:end], inner packet ip) for dst
// to the run, sending the run first if the datagram cannot join it. The
// run's first packet picks the socket, and so the source port.
func (w *worker) gsoAppend(buf []byte, v, end int, dst [4]byte, ip header.IPv4) {
	g := &w.gso
	size := end - v
	if g.count > 0 && (g.dst != dst || g.closed || size > g.seg || g.n+size > gsoMaxBytes || g.count == gsoMaxSegments) {
		w.flushGSO()
	}
	if g.buf == nil {
		g.buf = make([]byte, gsoMaxBytes)
	}
	if g.count == 0 {
		g.dst, g.seg, g.hash = dst, size, uint32(encap.SourcePort(ip))
	}
	g.n += copy(g.buf[g.n:], buf[v:end])
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
	err := w.r.gso.SendGSO(g.buf[:g.n], g.seg, g.dst, g.hash)
	switch {
	case err == nil:
	case errors.Is(err, syscall.EMSGSIZE) || errors.Is(err, syscall.EINVAL):
		w.drops[DropMTUExceeded] += uint64(g.count)
		if mtu, merr := w.r.gso.MTU(); merr == nil {
			w.r.lowerPathMTU(mtu)
		}
	default:
		w.drops[DropTxError] += uint64(g.count)
	}
	g.n, g.count, g.closed = 0, 0, false
}
