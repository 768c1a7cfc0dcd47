// Package tap creates the TAP device that is a pod's eth0 and adapts its
// file descriptor to the router's batch-shaped Device interface.
//
// The device is created from inside the pod's network namespace, so it lives
// there while tortied holds its descriptor. A TAP read or write moves one
// frame per syscall; where io_uring is available, Read drains a batch of
// queued frames and Write sends a batch with one io_uring_enter each, and
// otherwise they fall back to one read or write per frame. Either way the
// router sees batches, and batches what follows (sendmmsg on the underlay).
//
// A TAP may have several queues (IFF_MULTI_QUEUE), each read on its own, so
// one pod's flows are forwarded on more than one core; a small eBPF
// steering program keeps each flow on one queue.
package tap

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/tortie-net/tortie/header"
	"github.com/tortie-net/tortie/internal/uring"
)

// BatchSize is the most frames one Read drains.
const BatchSize = 32

// Device is a TAP file descriptor held by the daemon.
//
// Concurrency: Read and TryRead, and ReadQueue and TryReadQueue of each
// queue, are owned by one reader and are not safe for concurrent use (the
// per-call state and read ring are the reader's); readers of different
// queues run concurrently. Write, WritePlain, WriteVec, MaxVec, BatchSize,
// Queues, PollFD, QueuePollFD and Close are safe for
// concurrent use, with each other and with the readers: a write takes the
// write ring of one queue under that queue's lock (queue 0's, or with
// several queues whichever is free).
type Device struct {
	// Offload is set when every frame carries a virtio-net header and the
	// pod's kernel may hand over partial checksums and TCP superframes.
	Offload bool
	f       *os.File
	rc      syscall.RawConn
	// queues are the queues after the first of a multi-queue TAP, each
	// its own descriptor, read by its own reader; fixed by Open.
	queues []*Device
	closed atomic.Bool
	// per-call state of the poller callback
	bufs   [][]byte
	sizes  []int
	off    int
	got    int
	err    error
	nowait bool // TryRead: report an empty queue rather than wait
	// drained: a read of this call found the queue empty, so every frame
	// still queued came after it
	drained bool
	readFn  func(fd uintptr) bool

	// io_uring batching (nil rings: one syscall per frame). The read ring
	// belongs to the one reader; writers share the write ring under wmu
	// (Device.writer picks the queue).
	rring *uring.Ring // under rmu; closed by Close
	rmu   sync.Mutex  // held by Read, so Close knows when no read uses rring
	res   []int32     // per-read results of one batch
	// want is how many reads the next batch queues (see readRing); the
	// reader's own, like rring.
	want    int
	resFn   func(user uint64, res int32)
	wmu     sync.Mutex
	ringW   bool        // writes go through wring; fixed before the device is handed out
	wring   *uring.Ring // under wmu (nil once closed)
	iov     []unix.Iovec
	wfd     int
	written int
	werr    error
	wresFn  func(user uint64, res int32)
}

// zeroVnetHdr is the virtio-net header of a frame with nothing left to do.
var zeroVnetHdr [10]byte

// Options say how Open makes a TAP.
type Options struct {
	// Persist sets the persistent flag: the TAP outlives the daemon's
	// descriptors, so a restarted daemon finds the pod's eth0 unchanged.
	Persist bool
	// Offload opens the TAP with IFF_VNET_HDR and checksum and TCPv4
	// segmentation offload: the pod's kernel then sends frames up to 64 KB
	// with a virtio-net header saying what is left to do, so one read
	// carries what would otherwise take dozens.
	Offload bool
	// Queues is how many queues to open: more than one makes a multi-queue
	// TAP (IFF_MULTI_QUEUE) whose flows a steering program spreads over the
	// queues by flow hash, each queue read on its own (ReadQueue). 0 is 1.
	Queues int
	// TunnelGSO (with Offload) gives the TAP the 24-byte UDP tunnel
	// virtio-net header and the UDP tunnel segmentation offload (Linux
	// 6.17+): frames written to it may be VXLAN packets carrying whole TCP
	// superframes (header.VirtioNetHdr.EncodeTunnel), which the kernel cuts
	// into datagrams where it must, inner TCP and outer UDP checksums
	// done. An older kernel refuses it (Open fails).
	TunnelGSO bool
}

// The UDP tunnel offloads' TUNSETOFFLOAD bits (Linux 6.17's
// TUN_F_UDP_TUNNEL_GSO and TUN_F_UDP_TUNNEL_GSO_CSUM).
const (
	tunFUDPTunnelGSO     = 0x080
	tunFUDPTunnelGSOCsum = 0x100
)

// tapFlags are the flags every open of a pod TAP asks for.
const tapFlags = unix.IFF_TAP | unix.IFF_NO_PI

// Open makes (or, if a persistent one of that name exists, re-attaches to)
// a TAP device called name in the current network namespace; call it
// inside nsutil.Do. Descriptors are non-blocking, so they sit on Go's
// poller.
//
// A persistent TAP keeps the queue kind it was made with: re-attaching
// with the other kind is refused by the kernel, so Open then takes the
// kind the device has (one queue of a multi-queue TAP; a single-queue TAP
// when queues were asked for). Without a steering program (no eBPF here),
// a multi-queue TAP is read through one queue. Device.Queues says how many
// queues Open got.
func Open(name string, o Options) (*Device, error) {
	flags := uint16(tapFlags)
	if o.Offload {
		flags |= unix.IFF_VNET_HDR
	}
	multi := o.Queues > 1
	fd, err := openQueue(name, flags, multi)
	if errors.Is(err, unix.EINVAL) {
		multi = !multi // a persistent TAP of the other kind
		fd, err = openQueue(name, flags, multi)
	}
	if err != nil {
		return nil, err
	}
	if err := setup(fd, name, o); err != nil {
		unix.Close(fd)
		return nil, err
	}
	var extra []int
	if multi && o.Queues > 1 && steer(fd) == nil {
		for range o.Queues - 1 {
			q, err := openQueue(name, flags, true)
			if err != nil {
				break // fewer queues: still correct
			}
			extra = append(extra, q)
		}
	}
	d, err := fromFD(fd, name)
	if err != nil {
		for _, q := range extra {
			unix.Close(q)
		}
		return nil, err
	}
	d.Offload = o.Offload
	for _, q := range extra {
		if qd, err := fromFD(q, name); err == nil {
			d.queues = append(d.queues, qd)
		}
	}
	return d, nil
}

// fromFD adapts a descriptor Open made; on failure the descriptor is
// closed (through its file, which owns it from then on).
func fromFD(fd int, name string) (*Device, error) {
	f := os.NewFile(uintptr(fd), name)
	d, err := FromFile(f)
	if err != nil {
		f.Close()
	}
	return d, err
}

// openQueue opens one queue of the TAP called name.
func openQueue(name string, flags uint16, multi bool) (int, error) {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("tap: open /dev/net/tun: %w", err)
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		unix.Close(fd)
		return -1, err
	}
	if multi {
		flags |= unix.IFF_MULTI_QUEUE
	}
	ifr.SetUint16(flags)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("tap: create %s: %w", name, err)
	}
	return fd, nil
}

// setup sets what belongs to the device rather than to a queue: the
// persistent flag and, for offload, the header size and offloads.
func setup(fd int, name string, o Options) error {
	p := 0
	if o.Persist {
		p = 1
	}
	if err := unix.IoctlSetInt(fd, unix.TUNSETPERSIST, p); err != nil {
		return fmt.Errorf("tap: persist on %s: %w", name, err)
	}
	if !o.Offload {
		return nil
	}
	hdr := int32(header.VirtioNetHdrLen)
	offloads := unix.TUN_F_CSUM | unix.TUN_F_TSO4
	if o.TunnelGSO {
		hdr = header.VirtioNetHdrTunnelLen
		offloads |= tunFUDPTunnelGSO | tunFUDPTunnelGSOCsum
	}
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.TUNSETVNETHDRSZ, uintptr(unsafe.Pointer(&hdr))); e != 0 {
		return fmt.Errorf("tap: virtio-net header size on %s: %w", name, e)
	}
	if err := unix.IoctlSetInt(fd, unix.TUNSETOFFLOAD, offloads); err != nil {
		return fmt.Errorf("tap: offloads on %s: %w", name, err)
	}
	return nil
}

// FromFile adapts an open TAP file.
func FromFile(f *os.File) (*Device, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, err
	}
	d := &Device{f: f, rc: rc}
	d.readFn = d.read
	d.resFn = func(user uint64, res int32) { d.res[user] = res }
	d.wresFn = func(_ uint64, res int32) {
		if res < 0 {
			if d.werr == nil {
				d.werr = unix.Errno(-res)
			}
			return
		}
		d.written++
	}
	d.setupRings()
	return d, nil
}

// setupRings turns on io_uring batching where the kernel allows it (it may
// be disabled by sysctl or a seccomp filter; then frames go one by one).
func (d *Device) setupRings() {
	r, err := uring.New(BatchSize)
	if err != nil {
		return
	}
	w, err := uring.New(BatchSize)
	if err != nil {
		r.Close()
		return
	}
	d.rring, d.wring = r, w
	d.res = make([]int32, r.Size())
	d.iov = make([]unix.Iovec, 2*w.Size())
	if err := d.rc.Control(func(fd uintptr) { d.wfd = int(fd) }); err != nil {
		d.closeRings()
		return
	}
	d.ringW = true
}

func (d *Device) closeRings() {
	if d.rring != nil {
		d.rring.Close()
		d.wring.Close()
		d.rring, d.wring = nil, nil
	}
}

// Batched reports whether reads and writes go through io_uring. Reads may
// fall back to one frame per call later; ask before the reader starts.
func (d *Device) Batched() bool { return d.rring != nil }

func (d *Device) read(fd uintptr) bool {
	if d.rring != nil {
		return d.readRing(int(fd))
	}
	for d.got < len(d.bufs) {
		n, err := unix.Read(int(fd), d.bufs[d.got][d.off:])
		switch {
		case err == unix.EAGAIN:
			d.drained = true
			return d.got > 0 || d.nowait // nothing queued yet: wait on the poller
		case err == unix.EINTR:
			continue
		case err != nil:
			d.err = err
			return true
		}
		d.sizes[d.got] = n
		d.got++
	}
	return true
}

// readRing queues non-waiting reads and runs them with one syscall. Reads
// run in order, so frames arrive in order; a frame that came after an
// earlier read found the queue empty moves down to close the gap.
//
// A read that finds the queue empty costs about what one that carries a
// frame does (about 0.45 µs each here), so a full batch on a queue holding
// one frame costs more than the frame: 32 reads (the host TUN's batch) took
// 15.6 µs, 8 (a pod TAP's with offload) 4.2 µs, one 0.9 µs; and a Read pays
// it twice when idle, before it waits and after it wakes. So a batch queues
// as many reads as the last one found frames, plus one, and twice as many
// after a batch came back full, up to len(bufs). A Read that leaves frames
// queued loses nothing: the next one reads before it waits.
func (d *Device) readRing(fd int) bool {
	n := min(len(d.bufs), len(d.res), max(1, d.want))
	for i := 0; i < n; i++ {
		if err := d.rring.Read(fd, d.bufs[i][d.off:], true, uint64(i)); err != nil {
			d.err = err
			return true
		}
	}
	if err := d.rring.Submit(d.resFn); err != nil {
		d.err = err
		return true
	}
	for i := 0; i < n; i++ {
		switch res := d.res[i]; {
		case res >= 0:
			if d.got != i {
				copy(d.bufs[d.got][d.off:], d.bufs[i][d.off:d.off+int(res)])
			}
			d.sizes[d.got] = int(res)
			d.got++
		case res == -int32(unix.EAGAIN):
			d.drained = true
		case res == -int32(unix.EINTR):
		case res == -int32(unix.EOPNOTSUPP) || res == -int32(unix.EINVAL):
			// This kernel's TAP cannot read without waiting: go back to
			// one read per frame.
			d.rring.Close()
			d.rring = nil
			return d.read(uintptr(fd))
		default:
			if d.got == 0 && d.err == nil {
				d.err = unix.Errno(-res)
			}
		}
	}
	if d.got == n {
		d.want = 2 * n
	} else {
		d.want = d.got + 1
	}
	return d.got > 0 || d.err != nil || d.nowait
}

// Read reads at least one frame, and further frames already queued, up to
// len(bufs): about as many as the previous Read found (see readRing), so
// frames may stay queued for the next Read, which takes them without
// waiting.
func (d *Device) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	n, _, err := d.readBatch(bufs, sizes, offset, false)
	return n, err
}

// TryRead is Read that never waits: with no frame queued it returns 0 and
// no error. A reader that reads several devices in turn calls it once the
// device's PollFD polls readable. drained says a read of the call found
// the queue empty: any frame still queued came after it, and so made the
// descriptor poll readable afresh. Otherwise frames may remain that no
// new readiness announces.
func (d *Device) TryRead(bufs [][]byte, sizes []int, offset int) (n int, drained bool, err error) {
	return d.readBatch(bufs, sizes, offset, true)
}

// PollFD returns the device's descriptor (queue 0's), to watch for
// readability beside Go's poller: it is readable while a frame is queued.
// It is valid until Close; take it out of any epoll set before then.
func (d *Device) PollFD() (int, error) {
	fd := -1
	if err := d.rc.Control(func(f uintptr) { fd = int(f) }); err != nil {
		return -1, err
	}
	return fd, nil
}

func (d *Device) readBatch(bufs [][]byte, sizes []int, offset int, nowait bool) (int, bool, error) {
	d.rmu.Lock()
	defer d.rmu.Unlock()
	d.bufs, d.sizes, d.off, d.got, d.err, d.nowait, d.drained = bufs, sizes, offset, 0, nil, nowait, false
	err := d.rc.Read(d.readFn)
	d.bufs, d.sizes = nil, nil
	if err != nil {
		if d.closed.Load() {
			return 0, false, os.ErrClosed // a raw read reports the close in its own words
		}
		return 0, false, err
	}
	if d.err != nil && d.got == 0 {
		if d.err == unix.EBADFD {
			return 0, false, os.ErrClosed
		}
		return 0, false, d.err
	}
	return d.got, d.drained, nil
}

// Write writes each bufs[i][offset:] as one frame and returns how many
// were written, with the first error.
func (d *Device) Write(bufs [][]byte, offset int) (int, error) {
	if !d.ringW {
		for i, b := range bufs {
			if _, err := d.f.Write(b[offset:]); err != nil {
				return i, err
			}
		}
		return len(bufs), nil
	}
	return d.writeRing(bufs, offset, false)
}

// WritePlain writes each frame behind an all-zero virtio-net header (a
// frame with nothing left to do) supplied by the device, so frames lying
// back to back in one buffer need no room in front. Offload devices only.
func (d *Device) WritePlain(frames [][]byte) (int, error) {
	if !d.Offload {
		return d.Write(frames, 0)
	}
	if !d.ringW {
		for i, f := range frames {
			if _, err := d.f.Write(append(zeroVnetHdr[:len(zeroVnetHdr):len(zeroVnetHdr)], f...)); err != nil {
				return i, err
			}
		}
		return len(frames), nil
	}
	return d.writeRing(frames, 0, true)
}

// MaxVec is the most slices one WriteVec takes: 0 without io_uring.
func (d *Device) MaxVec() int {
	if !d.ringW {
		return 0
	}
	return len(d.iov)
}

// WriteVec writes one frame gathered from parts (at most MaxVec of them).
func (d *Device) WriteVec(parts [][]byte) error {
	w := d.writer()
	defer w.wmu.Unlock()
	if d.closed.Load() || w.closed.Load() || w.wring == nil {
		return os.ErrClosed
	}
	if len(parts) > len(w.iov) {
		return fmt.Errorf("tap: %d parts for one frame, at most %d", len(parts), len(w.iov))
	}
	v := w.iov[:len(parts)]
	for i, b := range parts {
		v[i].Base = unsafe.SliceData(b)
		v[i].SetLen(len(b))
	}
	w.written, w.werr = 0, nil
	err := w.wring.Writev(w.wfd, v, 0)
	if err == nil {
		err = w.wring.Submit(w.wresFn)
	}
	clear(v)
	if err != nil {
		return err
	}
	return w.werr
}

// writer locks and returns the queue to write through: with several
// queues, the first whose write ring is free, so that writers to one pod
// do not wait for each other; else queue 0, once it is free. Frames one
// goroutine writes in turn keep their order whichever queues they take:
// each write returns once the pod's kernel has taken the frame in. (A pod
// that sets RPS differently per receive queue of its eth0 could see one
// flow's frames handled on different CPUs.)
func (d *Device) writer() *Device {
	if len(d.queues) > 0 {
		if d.wmu.TryLock() {
			return d
		}
		for _, q := range d.queues {
			if q.ringW && q.wmu.TryLock() {
				return q
			}
		}
	}
	d.wmu.Lock()
	return d
}

func (d *Device) writeRing(bufs [][]byte, offset int, vnet bool) (int, error) {
	w := d.writer()
	defer w.wmu.Unlock()
	if d.closed.Load() || w.closed.Load() || w.wring == nil {
		return 0, os.ErrClosed
	}
	w.written, w.werr = 0, nil
	for len(bufs) > 0 {
		chunk := bufs[:min(len(bufs), w.wring.Size())]
		bufs = bufs[len(chunk):]
		for i, b := range chunk {
			v := w.iov[2*i : 2*i+1]
			if vnet {
				v = w.iov[2*i : 2*i+2]
				v[0].Base = &zeroVnetHdr[0]
				v[0].SetLen(len(zeroVnetHdr))
			}
			f := b[offset:]
			v[len(v)-1].Base = unsafe.SliceData(f)
			v[len(v)-1].SetLen(len(f))
			if err := w.wring.Writev(w.wfd, v, uint64(i)); err != nil {
				return w.written, err
			}
		}
		if err := w.wring.Submit(w.wresFn); err != nil {
			return w.written, err
		}
	}
	clear(w.iov) // drop references to the frames
	return w.written, w.werr
}

// Queues is how many queues the device reads from: 1, or more for a
// multi-queue TAP.
func (d *Device) Queues() int { return 1 + len(d.queues) }

// ReadQueue is Read from queue q (0 ≤ q < Queues; queue 0 is Read's).
func (d *Device) ReadQueue(q int, bufs [][]byte, sizes []int, offset int) (int, error) {
	if q == 0 {
		return d.Read(bufs, sizes, offset)
	}
	return d.queues[q-1].Read(bufs, sizes, offset)
}

// TryReadQueue is TryRead from queue q.
func (d *Device) TryReadQueue(q int, bufs [][]byte, sizes []int, offset int) (int, bool, error) {
	if q == 0 {
		return d.TryRead(bufs, sizes, offset)
	}
	return d.queues[q-1].TryRead(bufs, sizes, offset)
}

// QueuePollFD is PollFD of queue q.
func (d *Device) QueuePollFD(q int) (int, error) {
	if q == 0 {
		return d.PollFD()
	}
	return d.queues[q-1].PollFD()
}

// Unpersist clears the persistent flag, so the device disappears when the
// descriptor closes (a pod being deleted).
func (d *Device) Unpersist() error {
	var err error
	cerr := d.rc.Control(func(fd uintptr) { err = unix.IoctlSetInt(int(fd), unix.TUNSETPERSIST, 0) })
	return errors.Join(cerr, err)
}

// BatchSize is the most frames one Read returns.
func (d *Device) BatchSize() int { return BatchSize }

// Close closes the descriptor (every queue's); a non-persistent TAP
// disappears with it. The rings close once no write and no read is using
// them: closing the descriptor wakes a Read waiting for frames, and Close
// waits for it to return.
func (d *Device) Close() error {
	d.closed.Store(true)
	d.wmu.Lock() // no write is between its closed check and its submit
	if d.wring != nil {
		d.wring.Close()
		d.wring = nil
	}
	d.wmu.Unlock()
	errs := []error{d.f.Close()}
	d.rmu.Lock()
	if d.rring != nil {
		d.rring.Close()
		d.rring = nil
	}
	d.rmu.Unlock()
	for _, q := range d.queues {
		errs = append(errs, q.Close())
	}
	return errors.Join(errs...)
}
