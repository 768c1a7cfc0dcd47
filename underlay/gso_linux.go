package underlay

import (
	"fmt"
	"net/netip"
	"os"
	"sync"
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
type GSOSender struct {
	socks  []*gsoSock
	ifname string
}

type gsoSock struct {
	mu   sync.Mutex
	f    *os.File
	rc   syscall.RawConn
	msg  unix.Msghdr
	iov  unix.Iovec
	name unix.RawSockaddrInet4
	oob  []byte
	err  error
	fn   func(fd uintptr) bool
}

// NewGSOSender opens n UDP sockets on local, each on its own ephemeral port.
func NewGSOSender(local netip.Addr, n int, ifname string) (*GSOSender, error) {
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
		s := &gsoSock{f: f, rc: rc, oob: make([]byte, unix.CmsgSpace(2))}
		s.msg.Iov = &s.iov
		s.msg.SetIovlen(1)
		s.msg.Name = (*byte)(unsafe.Pointer(&s.name))
		s.msg.Namelen = unix.SizeofSockaddrInet4
		s.name.Family = unix.AF_INET
		s.name.Port = uint16(header.VXLANPort>>8) | uint16(header.VXLANPort&0xff)<<8 // network order
		h := (*unix.Cmsghdr)(unsafe.Pointer(&s.oob[0]))
		h.Level, h.Type = unix.SOL_UDP, unix.UDP_SEGMENT
		h.SetLen(unix.CmsgLen(2))
		s.fn = s.send
		g.socks = append(g.socks, s)
	}
	return g, nil
}

func (s *gsoSock) send(fd uintptr) bool {
	// Raw: the socket is non-blocking, so the call never waits; see the package comment.
	_, _, e := unix.RawSyscall(unix.SYS_SENDMSG, fd, uintptr(unsafe.Pointer(&s.msg)), 0)
	if e == unix.EAGAIN {
		return false
	}
	if e != 0 {
		s.err = e
	}
	return true
}

// SendGSO sends payload to dst:4789 as datagrams of segSize bytes (the last
// may be shorter); hash picks the socket, and so the source port.
func (g *GSOSender) SendGSO(payload []byte, segSize int, dst [4]byte, hash uint32) error {
	s := g.socks[hash%uint32(len(g.socks))]
	s.mu.Lock()
	defer s.mu.Unlock()
	s.iov.Base = &payload[0]
	s.iov.SetLen(len(payload))
	s.name.Addr = dst
	if len(payload) > segSize {
		*(*uint16)(unsafe.Pointer(&s.oob[unix.CmsgLen(0)])) = uint16(segSize)
		s.msg.Control = &s.oob[0]
		s.msg.SetControllen(len(s.oob))
	} else {
		s.msg.Control = nil
		s.msg.SetControllen(0)
	}
	s.err = nil
	if err := s.rc.Write(s.fn); err != nil {
		return err
	}
	s.iov.Base = nil
	return s.err
}

// MTU reads the underlay interface's MTU.
func (g *GSOSender) MTU() (int, error) { return InterfaceMTU(g.ifname) }

// Close closes every socket.
func (g *GSOSender) Close() error {
	for _, s := range g.socks {
		s.f.Close()
	}
	return nil
}
