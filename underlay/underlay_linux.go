// Package underlay is tortie's batched socket I/O toward other nodes.
//
// Sender writes complete IPv4 packets through one IPPROTO_RAW socket with
// sendmmsg: the router builds the outer IPIP or VXLAN headers itself (so the
// VXLAN source port can carry flow entropy, as Linux's own VXLAN does), and
// natively routed packets go out as they are, routed by the node's kernel.
// GSOSender sends runs of VXLAN datagrams through UDP sockets with
// segmentation offload. ListenVXLAN (UDP port 4789; ListenVXLANQueues for
// several sockets sharing it by flow) and ListenIPIP (raw, IP protocol 4)
// return Receivers that read with recvmmsg. All of them sit on Go's
// poller, so no goroutine blocks a thread while idle.
//
// Concurrency: a socket is shared, its send state is not. Sender and
// GSOSender are safe for concurrent use and hand out Writers and
// GSOWriters, each owned by one goroutine (a router worker) with its own
// message vectors, addresses and results, as wireguard-go's bind keeps
// its message buffers apart per call. A Receiver has one reader; Close
// may come from any goroutine.
//
// A send that finds its socket's buffer full fails at once with
// syscall.EAGAIN rather than wait for room: the buffer fills only when
// the path beyond drains slower than it is fed (a shaped or congested
// underlay), and a router thread that waited there would hold up every
// other input it serves, pods on this node included. The caller drops
// what did not go, as a full transmit queue does.
//
// The sends and receives themselves are raw system calls: every
// socket is non-blocking, so a call never waits, and the scheduler's
// bookkeeping around an ordinary system call costs more than it saves here.
// A long send (64 KB of UDP GSO, whose delivery through a veth runs the
// receiver's softirq in the same call) made the scheduler hand the
// goroutine's P to another thread and take it back on nearly every send.
package underlay

import (
	"fmt"
	"net/netip"
	"os"
	"sync/atomic"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/tortie-net/tortie/fib"
	"github.com/tortie-net/tortie/header"
)

// BatchSize is how many packets one sendmmsg/recvmmsg call carries at most.
const BatchSize = 64

// batch holds the message vectors of one direction, allocated once.
type batch struct {
	msgs  []unix.Mmsghdr
	iovs  []unix.Iovec
	names []unix.RawSockaddrInet4
}

func newBatch(n int) batch {
	b := batch{msgs: make([]unix.Mmsghdr, n), iovs: make([]unix.Iovec, n), names: make([]unix.RawSockaddrInet4, n)}
	for i := range b.msgs {
		b.msgs[i].Hdr.Iov = &b.iovs[i]
		b.msgs[i].Hdr.SetIovlen(1)
		b.msgs[i].Hdr.Name = (*byte)(unsafe.Pointer(&b.names[i]))
		b.msgs[i].Hdr.Namelen = unix.SizeofSockaddrInet4
	}
	return b
}

// socketBuffer is the send or receive buffer each underlay socket asks for.
const socketBuffer = 8 << 20

// setBuffer sizes a socket buffer. The FORCE option (root) passes over
// net.core.rmem_max/wmem_max, which would otherwise cap it near 200 KiB and
// make bursts overflow; the plain option is the fallback.
func setBuffer(fd, force, plain int) {
	if unix.SetsockoptInt(fd, unix.SOL_SOCKET, force, socketBuffer) != nil {
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, plain, socketBuffer)
	}
}

func socketFile(domain, typ, proto int, name string) (*os.File, syscall.RawConn, error) {
	fd, err := unix.Socket(domain, typ|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, proto)
	if err != nil {
		return nil, nil, fmt.Errorf("underlay: %s socket: %w", name, err)
	}
	f := os.NewFile(uintptr(fd), name)
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	return f, rc, nil
}

// Sender is the raw socket that complete IPv4 packets leave through. It is
// safe for concurrent use; the sending itself is done by Writers, one per
// goroutine, which share the socket (a socket's sends are serialised by the
// kernel) but nothing else.
type Sender struct {
	f      *os.File
	rc     syscall.RawConn
	ifname string
}

// NewSender opens the raw send socket. ifname is the underlay interface whose
// MTU is re-read after EMSGSIZE.
func NewSender(ifname string) (*Sender, error) {
	f, rc, err := socketFile(unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_RAW, "underlay-raw")
	if err != nil {
		return nil, err
	}
	fd := int(f.Fd())
	// Large send buffer: a batch of superframes must find room.
	setBuffer(fd, unix.SO_SNDBUFFORCE, unix.SO_SNDBUF)
	return &Sender{f: f, rc: rc, ifname: ifname}, nil
}

// NewWriter returns a writer with its own message vectors, for one
// goroutine. It allocates them here, so that Send allocates nothing.
func (s *Sender) NewWriter() *Writer {
	w := &Writer{s: s, b: newBatch(BatchSize)}
	w.writeFn = w.write
	return w
}

// MTU reads the underlay interface's current MTU.
func (s *Sender) MTU() (int, error) { return InterfaceMTU(s.ifname) }

// Close closes the socket; later sends of its writers fail.
func (s *Sender) Close() error { return s.f.Close() }

// Writer sends complete IPv4 packets through its Sender's socket with
// sendmmsg. It is owned by one goroutine and not safe for concurrent use:
// the message vectors, addresses and per-call results are its own.
type Writer struct {
	s *Sender
	b batch
	// per-call state for the poller callback, set before each call
	n, sent int
	err     error
	writeFn func(fd uintptr) bool
}

func (w *Writer) write(fd uintptr) bool {
	// Raw: the socket is non-blocking, so the call never waits; see the package comment.
	r, _, e := unix.RawSyscall6(unix.SYS_SENDMMSG, fd, uintptr(unsafe.Pointer(&w.b.msgs[0])), uintptr(w.n), 0, 0, 0)
	if e != 0 { // EAGAIN included: a full buffer is reported, not waited for
		w.err = e
		return true
	}
	w.sent = int(r)
	return true
}

// Send sends pkts[i] to dsts[i], in batches of BatchSize, and reports how
// many went before the first failure; a full socket buffer is
// syscall.EAGAIN, at once.
func (w *Writer) Send(pkts [][]byte, dsts [][4]byte) (int, error) {
	total, err := w.send(pkts, dsts)
	for i := range w.b.iovs {
		w.b.iovs[i].Base = nil // hold no packet past the call
	}
	return total, err
}

func (w *Writer) send(pkts [][]byte, dsts [][4]byte) (int, error) {
	total := 0
	for total < len(pkts) {
		n := min(len(pkts)-total, len(w.b.msgs))
		for i := 0; i < n; i++ {
			p := pkts[total+i]
			w.b.iovs[i].Base = &p[0]
			w.b.iovs[i].SetLen(len(p))
			w.b.names[i].Family = unix.AF_INET
			w.b.names[i].Addr = dsts[total+i]
		}
		w.n, w.sent, w.err = n, 0, nil
		if err := w.s.rc.Write(w.writeFn); err != nil {
			return total, err
		}
		if w.err != nil {
			return total, w.err
		}
		// sendmmsg stops early only on an error it reports on the next
		// call; the loop makes that call now so the caller sees it.
		total += w.sent
	}
	return total, nil
}

// MTU reads the underlay interface's current MTU.
func (w *Writer) MTU() (int, error) { return w.s.MTU() }

// ethtoolValue is the kernel's struct ethtool_value: a command and its
// one value.
type ethtoolValue struct {
	cmd, data uint32
}

// ethtool runs one ETHTOOL_G*/ETHTOOL_S* command of a single value on the
// named interface.
func ethtool(name string, cmd, data uint32) (uint32, error) {
	if len(name) >= unix.IFNAMSIZ {
		return 0, fmt.Errorf("interface name %q too long", name)
	}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, err
	}
	defer unix.Close(fd)
	v := ethtoolValue{cmd: cmd, data: data}
	// struct ifreq: the name, then a pointer to the command (ifr_data).
	var ifr struct {
		name [unix.IFNAMSIZ]byte
		data unsafe.Pointer
		_    [24 - unsafe.Sizeof(uintptr(0))]byte
	}
	copy(ifr.name[:], name)
	ifr.data = unsafe.Pointer(&v)
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCETHTOOL, uintptr(unsafe.Pointer(&ifr))); e != 0 {
		return 0, e
	}
	return v.data, nil
}

// InterfaceGRO reports whether the named interface coalesces what it
// receives (generic receive offload, as `ethtool -k` shows it). Natively
// routed and IPIP TCP reach tortie as superframes only where the underlay
// coalesces; a NIC has GRO on by default.
func InterfaceGRO(name string) (bool, error) {
	v, err := ethtool(name, unix.ETHTOOL_GGRO, 0)
	if err != nil {
		return false, fmt.Errorf("underlay: GRO of %s: %w", name, err)
	}
	return v != 0, nil
}

// SetInterfaceGRO turns the named interface's GRO on or off (as `ethtool
// -K NAME gro on|off`); it needs CAP_NET_ADMIN.
func SetInterfaceGRO(name string, on bool) error {
	var v uint32
	if on {
		v = 1
	}
	if _, err := ethtool(name, unix.ETHTOOL_SGRO, v); err != nil {
		return fmt.Errorf("underlay: set GRO of %s: %w", name, err)
	}
	return nil
}

// InterfaceMTU returns the MTU of the named interface.
func InterfaceMTU(name string) (int, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, err
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return 0, err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFMTU, ifr); err != nil {
		return 0, fmt.Errorf("underlay: MTU of %s: %w", name, err)
	}
	return int(ifr.Uint32()), nil
}

// Receiver reads a socket with recvmmsg; it implements router.UnderlayReceiver.
// Recv and TryRecv are owned by one goroutine and not safe for concurrent
// use; PollFD and Close are safe from any goroutine.
type Receiver struct {
	closed atomic.Bool
	gro    bool     // UDP_GRO: a message may hold several datagrams of one size
	oobs   [][]byte // per-message control buffers (GRO only)
	f      *os.File
	rc     syscall.RawConn
	b      batch
	mode   fib.Mode
	n, got int
	err    error
	nowait bool // TryRecv: report an empty queue rather than wait
	readFn func(fd uintptr) bool
}

func newReceiver(f *os.File, rc syscall.RawConn, mode fib.Mode) *Receiver {
	r := &Receiver{f: f, rc: rc, b: newBatch(BatchSize), mode: mode}
	r.readFn = r.read
	return r
}

func (r *Receiver) read(fd uintptr) bool {
	// Raw: MSG_DONTWAIT, the call never waits; see the package comment.
	n, _, e := unix.RawSyscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&r.b.msgs[0])), uintptr(r.n), unix.MSG_DONTWAIT, 0, 0)
	if e == unix.EAGAIN {
		return r.nowait
	}
	if e != 0 {
		r.err = e
		return true
	}
	r.got = int(n)
	return true
}

// Recv fills bufs[i][offset:offset+sizes[i]] and srcs[i] for each message.
// With UDP GRO, a message may hold several datagrams of segs[i] bytes each
// (the last may be shorter); segs[i] is 0 for a single datagram.
func (r *Receiver) Recv(bufs [][]byte, sizes, segs []int, srcs [][4]byte, offset int) (int, error) {
	return r.recv(bufs, sizes, segs, srcs, offset, false)
}

// TryRecv is Recv that never waits: with no message queued it returns 0
// and no error. drained says the call took fewer messages than it had
// room for: recvmmsg stops short when the socket is found empty, so any
// message still queued came after and made the descriptor poll readable
// afresh (it also stops short on an error after the first message, which
// it reports on the next call; none of those can happen here with valid
// buffers).
func (r *Receiver) TryRecv(bufs [][]byte, sizes, segs []int, srcs [][4]byte, offset int) (n int, drained bool, err error) {
	n, err = r.recv(bufs, sizes, segs, srcs, offset, true)
	return n, err == nil && n < r.n, err
}

// PollFD returns the socket's descriptor, to watch for readability beside
// Go's poller. It is valid until Close; take it out of any epoll set
// before then.
func (r *Receiver) PollFD() (int, error) {
	fd := -1
	if err := r.rc.Control(func(f uintptr) { fd = int(f) }); err != nil {
		return -1, err
	}
	return fd, nil
}

func (r *Receiver) recv(bufs [][]byte, sizes, segs []int, srcs [][4]byte, offset int, nowait bool) (int, error) {
	n := min(len(bufs), len(r.b.msgs))
	for i := 0; i < n; i++ {
		b := bufs[i][offset:]
		r.b.iovs[i].Base = &b[0]
		r.b.iovs[i].SetLen(len(b))
		r.b.msgs[i].Hdr.Namelen = unix.SizeofSockaddrInet4
		r.b.msgs[i].Len = 0
		if r.gro {
			r.b.msgs[i].Hdr.Control = &r.oobs[i][0]
			r.b.msgs[i].Hdr.SetControllen(len(r.oobs[i]))
		}
	}
	r.n, r.got, r.err, r.nowait = n, 0, nil, nowait
	for r.got == 0 {
		if err := r.rc.Read(r.readFn); err != nil {
			if r.closed.Load() {
				return 0, os.ErrClosed
			}
			return 0, err
		}
		if r.err != nil {
			if r.err == unix.EINTR {
				r.err = nil
				continue
			}
			return 0, r.err
		}
		if nowait {
			break // nothing queued: r.got is 0
		}
	}
	for i := 0; i < r.got; i++ {
		sizes[i] = int(r.b.msgs[i].Len)
		srcs[i] = r.b.names[i].Addr
		segs[i] = 0
		if r.gro {
			segs[i] = groSize(r.oobs[i][:r.b.msgs[i].Hdr.Controllen])
		}
	}
	return r.got, nil
}

// Mode returns the encapsulation mode the receiver was opened for.
func (r *Receiver) Mode() fib.Mode { return r.mode }

// BatchSize returns how many messages one Recv can return.
func (r *Receiver) BatchSize() int { return len(r.b.msgs) }

// Close closes the socket; a blocked or later Recv returns os.ErrClosed.
func (r *Receiver) Close() error {
	r.closed.Store(true)
	return r.f.Close()
}

// groSize finds the UDP_GRO segment size in a message's control data.
func groSize(oob []byte) int {
	for len(oob) >= unix.SizeofCmsghdr {
		h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
		l := int(h.Len)
		if l < unix.SizeofCmsghdr || l > len(oob) {
			return 0
		}
		if h.Level == unix.SOL_UDP && h.Type == unix.UDP_GRO && l >= unix.CmsgLen(4) {
			return int(*(*int32)(unsafe.Pointer(&oob[unix.CmsgLen(0)])))
		}
		oob = oob[min(unix.CmsgSpace(l-unix.CmsgLen(0)), len(oob)):]
	}
	return 0
}

// ListenVXLAN binds UDP port 4789 on addr (the node's underlay address).
func ListenVXLAN(addr netip.Addr) (*Receiver, error) {
	return listenVXLAN(addr, false)
}

// ListenVXLANQueues binds n sockets (at least one) to UDP port 4789 on
// addr, in one SO_REUSEPORT group when n > 1: the kernel hands each
// datagram to one of them by a hash of its addresses and ports, so the
// datagrams of one outer flow (a VXLAN sender derives its source port
// from the inner flow) always reach the same socket, in order, and
// several readers can share the work. The sockets are returned in the
// order opened; on error none stays open.
func ListenVXLANQueues(addr netip.Addr, n int) ([]*Receiver, error) {
	if n <= 1 {
		r, err := listenVXLAN(addr, false)
		if err != nil {
			return nil, err
		}
		return []*Receiver{r}, nil
	}
	out := make([]*Receiver, 0, n)
	for range n {
		r, err := listenVXLAN(addr, true)
		if err != nil {
			for _, o := range out {
				o.Close()
			}
			return nil, err
		}
		out = append(out, r)
	}
	return out, nil
}

func listenVXLAN(addr netip.Addr, reusePort bool) (*Receiver, error) {
	f, rc, err := socketFile(unix.AF_INET, unix.SOCK_DGRAM, unix.IPPROTO_UDP, "underlay-vxlan")
	if err != nil {
		return nil, err
	}
	fd := int(f.Fd())
	setBuffer(fd, unix.SO_RCVBUFFORCE, unix.SO_RCVBUF)
	if reusePort {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1); err != nil {
			f.Close()
			return nil, fmt.Errorf("underlay: SO_REUSEPORT: %w", err)
		}
	}
	if err := unix.Bind(fd, &unix.SockaddrInet4{Port: header.VXLANPort, Addr: addr.As4()}); err != nil {
		f.Close()
		return nil, fmt.Errorf("underlay: bind %s:%d: %w", addr, header.VXLANPort, err)
	}
	r := newReceiver(f, rc, fib.ModeVXLAN)
	// UDP GRO: runs of datagrams of one flow (a sender's GSO run) arrive in
	// one message instead of being cut apart by the kernel.
	if unix.SetsockoptInt(fd, unix.SOL_UDP, unix.UDP_GRO, 1) == nil {
		r.gro = true
		r.oobs = make([][]byte, len(r.b.msgs))
		for i := range r.oobs {
			r.oobs[i] = make([]byte, unix.CmsgSpace(4)*2)
		}
	}
	return r, nil
}

// ListenIPIP opens a raw socket for IP protocol 4. The kernel delivers the
// whole outer packet, header included.
func ListenIPIP() (*Receiver, error) {
	f, rc, err := socketFile(unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_IPIP, "underlay-ipip")
	if err != nil {
		return nil, err
	}
	setBuffer(int(f.Fd()), unix.SO_RCVBUFFORCE, unix.SO_RCVBUF)
	return newReceiver(f, rc, fib.ModeIPIP), nil
}
