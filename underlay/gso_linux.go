package underlay

import (
	"fmt"
	"net/netip"
	"os"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/tortie-net/tortie/header"
)

// GSOSender sends VXLAN through UDP sockets with UDP generic segmentation
// offload (UDP_SEGMENT): a run of equal-sized VXLAN datagrams to one node
// goes down as one buffer and crosses the kernel's stack as one skb, cut
// into datagrams only where it must be (or never, across veths). The
// kernel builds the outer IPv4 and UDP headers; flows are spread over a few
// sockets bound to different source ports, so the source port still
// carries flow entropy for ECMP and receive-side scaling.
//
// GSOSender is safe for concurrent use. The sending is done by GSOWriters,
// one per goroutine, which share the sockets but nothing else.
type GSOSender struct {
	socks  []gsoSock
	ifname string
}

type gsoSock struct {
	f    *os.File
	rc   syscall.RawConn
	port uint16 // the source port it was bound to
}

// NewGSOSender opens n UDP sockets on local, each on its own ephemeral port.
func NewGSOSender(local netip.Addr, n int, ifname string) (*GSOSender, error) {
	if n < 1 {
		return nil, fmt.Errorf("underlay: %d VXLAN sender sockets", n)
	}
	g := &GSOSender{ifname: ifname}
	for i := 0; i < n; i++ {
		f, rc, err := socketFile(unix.AF_INET, unix.SOCK_DGRAM, unix.IPPROTO_UDP, "underlay-vxlan-gso")
		if err != nil {
			g.Close()
			return nil, err
		}
		fd := int(f.Fd())
		setBuffer(fd, unix.SO_SNDBUFFORCE, unix.SO_SNDBUF)
		// DF on the outer header, so that a lowered underlay MTU is
		// reported (EMSGSIZE) instead of fragmenting silently.
		_ = unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_MTU_DISCOVER, unix.IP_PMTUDISC_PROBE)
		if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: local.As4()}); err != nil {
			f.Close()
			g.Close()
			return nil, fmt.Errorf("underlay: bind VXLAN sender on %s: %w", local, err)
		}
		sa, err := unix.Getsockname(fd)
		if err != nil {
			f.Close()
			g.Close()
			return nil, fmt.Errorf("underlay: VXLAN sender's port: %w", err)
		}
		g.socks = append(g.socks, gsoSock{f: f, rc: rc, port: uint16(sa.(*unix.SockaddrInet4).Port)})
	}
	return g, nil
}

// NewWriter returns a writer with its own message header, for one
// goroutine. It allocates it here, so that SendGSO allocates nothing.
func (g *GSOSender) NewWriter() *GSOWriter {
	w := &GSOWriter{g: g, oob: make([]byte, unix.CmsgSpace(2))}
	w.msg.Iov = &w.iov
	w.msg.SetIovlen(1)
	w.msg.Name = (*byte)(unsafe.Pointer(&w.name))
	w.msg.Namelen = unix.SizeofSockaddrInet4
	w.name.Family = unix.AF_INET
	w.name.Port = uint16(header.VXLANPort>>8) | uint16(header.VXLANPort&0xff)<<8 // network order
	h := (*unix.Cmsghdr)(unsafe.Pointer(&w.oob[0]))
	h.Level, h.Type = unix.SOL_UDP, unix.UDP_SEGMENT
	h.SetLen(unix.CmsgLen(2))
	w.fn = w.send
	return w
}

// MTU reads the underlay interface's MTU.
func (g *GSOSender) MTU() (int, error) { return InterfaceMTU(g.ifname) }

// Close closes every socket; later sends of its writers fail.
func (g *GSOSender) Close() error {
	for _, s := range g.socks {
		s.f.Close()
	}
	return nil
}

// GSOWriter sends runs of VXLAN datagrams through its GSOSender's sockets.
// It is owned by one goroutine and not safe for concurrent use: the
// message header, address, segment size and result are its own.
type GSOWriter struct {
	g    *GSOSender
	msg  unix.Msghdr
	iov  unix.Iovec
	name unix.RawSockaddrInet4
	oob  []byte
	err  error
	fn   func(fd uintptr) bool
}

func (w *GSOWriter) send(fd uintptr) bool {
	// Raw: the socket is non-blocking, so the call never waits; see the package comment.
	_, _, e := unix.RawSyscall(unix.SYS_SENDMSG, fd, uintptr(unsafe.Pointer(&w.msg)), 0)
	if e != 0 { // EAGAIN included: a full buffer is reported, not waited for
		w.err = e
	}
	return true
}

// SendGSO sends payload to dst:4789 as datagrams of segSize bytes (the last
// may be shorter); hash picks the socket, and so the source port. A full
// socket buffer is syscall.EAGAIN, at once, and nothing of the run went.
func (w *GSOWriter) SendGSO(payload []byte, segSize int, dst [4]byte, hash uint32) error {
	if len(payload) == 0 || segSize <= 0 {
		return fmt.Errorf("underlay: GSO run of %d bytes in segments of %d", len(payload), segSize)
	}
	s := &w.g.socks[w.Source(hash)]
	w.iov.Base = &payload[0]
	w.iov.SetLen(len(payload))
	w.name.Addr = dst
	if len(payload) > segSize {
		*(*uint16)(unsafe.Pointer(&w.oob[unix.CmsgLen(0)])) = uint16(segSize)
		w.msg.Control = &w.oob[0]
		w.msg.SetControllen(len(w.oob))
	} else {
		w.msg.Control = nil
		w.msg.SetControllen(0)
	}
	w.err = nil
	err := s.rc.Write(w.fn)
	w.iov.Base = nil // hold no payload past the call
	if err != nil {
		return err
	}
	return w.err
}

// Source is the socket a hash picks, and so its source port.
func (w *GSOWriter) Source(hash uint32) int { return int(hash % uint32(len(w.g.socks))) }

// SourcePort is the port a source's datagrams leave from.
func (w *GSOWriter) SourcePort(source int) uint16 { return w.g.socks[source].port }

// MTU reads the underlay interface's MTU.
func (w *GSOWriter) MTU() (int, error) { return w.g.MTU() }
