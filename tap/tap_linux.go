// Package tap creates the TAP device that is a pod's eth0 and adapts its
// file descriptor to the router's batch-shaped Device interface.
//
// The device is created from inside the pod's network namespace, so it lives
// there while tortied holds its descriptor. A TAP read or write moves one
// frame per syscall; where io_uring is available, Read drains a batch of
// queued frames and Write sends a batch with one io_uring_enter each, and
// otherwise they fall back to one read or write per frame. Either way the
// router sees batches, and batches what follows (sendmmsg on the underlay).
package tap

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"unsafe"

	"github.com/songgao/water"
	"golang.org/x/sys/unix"

	"github.com/tortie-net/tortie/internal/uring"
)

// BatchSize is the most frames one Read drains.
const BatchSize = 32

// Device is a TAP file descriptor held by the daemon.
//
// Concurrency: Read is owned by one reader and is not safe for concurrent
// use (its per-call state and read ring are its own). Write, WritePlain,
// WriteVec, MaxVec, BatchSize and Close are safe for concurrent use, with
// each other and with Read: writes share the write ring under a lock.
type Device struct {
	// Offload is set when every frame carries a virtio-net header and the
	// pod's kernel may hand over partial checksums and TCP superframes.
	Offload bool
	f       *os.File
	rc      syscall.RawConn
	closed  atomic.Bool
	// per-call state of the poller callback
	bufs   [][]byte
	sizes  []int
	off    int
	got    int
	err    error
	readFn func(fd uintptr) bool

	// io_uring batching (nil rings: one syscall per frame). The read ring
	// belongs to the one reader; writers share the write ring under wmu.
	rring   *uring.Ring
	res     []int32 // per-read results of one batch
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

// Create makes (or, if a persistent one of that name exists, re-attaches
// to) a TAP device called name in the current network namespace; call it
// inside nsutil.Do. A persistent TAP outlives the daemon's descriptor, so a
// restarted daemon finds the pod's eth0 unchanged. songgao/water opens
// /dev/net/tun non-blocking, so the descriptor sits on Go's poller.
func Create(name string, persist bool) (*Device, error) {
	ifce, err := water.New(water.Config{
		DeviceType:             water.TAP,
		PlatformSpecificParams: water.PlatformSpecificParams{Name: name, Persist: persist},
	})
	if err != nil {
		return nil, fmt.Errorf("tap: create %s: %w", name, err)
	}
	f, ok := ifce.ReadWriteCloser.(*os.File)
	if !ok {
		ifce.Close()
		return nil, errors.New("tap: unexpected device type from water")
	}
	return FromFile(f)
}

// CreateOffload makes (or re-attaches to) a TAP with IFF_VNET_HDR and
// checksum and TCPv4 segmentation offload enabled: the pod's kernel then
// sends frames up to 64 KB with a virtio-net header saying what is left to
// do, so one read carries what would otherwise take dozens. songgao/water
// cannot set these flags, so this opens /dev/net/tun itself.
func CreateOffload(name string, persist bool) (*Device, error) {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("tap: open /dev/net/tun: %w", err)
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	ifr.SetUint16(unix.IFF_TAP | unix.IFF_NO_PI | unix.IFF_VNET_HDR)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("tap: create %s: %w", name, err)
	}
	p := 0
	if persist {
		p = 1
	}
	steps := []struct {
		what string
		req  uint
		val  int
	}{
		{"persist", unix.TUNSETPERSIST, p},
		{"virtio-net header size", unix.TUNSETVNETHDRSZ, 10},
		{"offloads", unix.TUNSETOFFLOAD, unix.TUN_F_CSUM | unix.TUN_F_TSO4},
	}
	for _, s := range steps {
		var err error
		if s.req == unix.TUNSETVNETHDRSZ {
			v := int32(s.val)
			_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), uintptr(s.req), uintptr(unsafe.Pointer(&v)))
			if e != 0 {
				err = e
			}
		} else {
			err = unix.IoctlSetInt(fd, s.req, s.val)
		}
		if err != nil {
			unix.Close(fd)
			return nil, fmt.Errorf("tap: %s on %s: %w", s.what, name, err)
		}
	}
	d, err := FromFile(os.NewFile(uintptr(fd), name))
	if err != nil {
		return nil, err
	}
	d.Offload = true
	return d, nil
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
			return d.got > 0 // nothing queued yet: wait on the poller
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

// readRing queues one non-waiting read per buffer and runs them with one
// syscall. Reads run in order, so frames arrive in order; a frame that came
// after an earlier read found the queue empty moves down to close the gap.
func (d *Device) readRing(fd int) bool {
	n := min(len(d.bufs), len(d.res))
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
		case res == -int32(unix.EAGAIN) || res == -int32(unix.EINTR):
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
	return d.got > 0 || d.err != nil
}

// Read reads at least one frame, and every further frame already queued,
// up to len(bufs).
func (d *Device) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	d.bufs, d.sizes, d.off, d.got, d.err = bufs, sizes, offset, 0, nil
	err := d.rc.Read(d.readFn)
	d.bufs, d.sizes = nil, nil
	if err != nil && d.rring != nil {
		d.rring.Close() // only this reader uses it, and it is done
		d.rring = nil
	}
	if err != nil {
		if d.closed.Load() {
			return 0, os.ErrClosed // a raw read reports the close in its own words
		}
		return 0, err
	}
	if d.err != nil && d.got == 0 {
		if d.err == unix.EBADFD {
			return 0, os.ErrClosed
		}
		return 0, d.err
	}
	return d.got, nil
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
	d.wmu.Lock()
	defer d.wmu.Unlock()
	if d.closed.Load() || d.wring == nil {
		return os.ErrClosed
	}
	if len(parts) > len(d.iov) {
		return fmt.Errorf("tap: %d parts for one frame, at most %d", len(parts), len(d.iov))
	}
	v := d.iov[:len(parts)]
	for i, b := range parts {
		v[i].Base = unsafe.SliceData(b)
		v[i].SetLen(len(b))
	}
	d.written, d.werr = 0, nil
	err := d.wring.Writev(d.wfd, v, 0)
	if err == nil {
		err = d.wring.Submit(d.wresFn)
	}
	clear(v)
	if err != nil {
		return err
	}
	return d.werr
}

func (d *Device) writeRing(bufs [][]byte, offset int, vnet bool) (int, error) {
	d.wmu.Lock()
	defer d.wmu.Unlock()
	if d.closed.Load() || d.wring == nil {
		return 0, os.ErrClosed
	}
	d.written, d.werr = 0, nil
	for len(bufs) > 0 {
		chunk := bufs[:min(len(bufs), d.wring.Size())]
		bufs = bufs[len(chunk):]
		for i, b := range chunk {
			v := d.iov[2*i : 2*i+1]
			if vnet {
				v = d.iov[2*i : 2*i+2]
				v[0].Base = &zeroVnetHdr[0]
				v[0].SetLen(len(zeroVnetHdr))
			}
			f := b[offset:]
			v[len(v)-1].Base = unsafe.SliceData(f)
			v[len(v)-1].SetLen(len(f))
			if err := d.wring.Writev(d.wfd, v, uint64(i)); err != nil {
				return d.written, err
			}
		}
		if err := d.wring.Submit(d.wresFn); err != nil {
			return d.written, err
		}
	}
	clear(d.iov) // drop references to the frames
	return d.written, d.werr
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

// Close closes the descriptor; a non-persistent TAP disappears with it.
// The rings close once no write is using them, and the read ring after the
// reader has seen the close.
func (d *Device) Close() error {
	d.closed.Store(true)
	d.wmu.Lock() // no write is between its closed check and its submit
	if d.wring != nil {
		d.wring.Close()
		d.wring = nil
	}
	d.wmu.Unlock()
	return d.f.Close()
}
