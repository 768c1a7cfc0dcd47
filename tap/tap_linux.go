// Package tap creates the TAP device that is a pod's eth0 and adapts its
// file descriptor to the router's batch-shaped Device interface.
//
// The device is created from inside the pod's network namespace, so it lives
// there while tortied holds its descriptor. A TAP read returns one frame per
// syscall; Read drains up to a batch of frames while they are queued, so the
// router can batch what follows (sendmmsg on the underlay).
package tap

import (
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"syscall"
	"unsafe"

	"github.com/songgao/water"
	"golang.org/x/sys/unix"
)

// BatchSize is the most frames one Read drains.
const BatchSize = 32

// Device is a TAP file descriptor held by the daemon.
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
}

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
	return d, nil
}

func (d *Device) read(fd uintptr) bool {
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

// Read reads at least one frame, and every further frame already queued,
// up to len(bufs).
func (d *Device) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	d.bufs, d.sizes, d.off, d.got, d.err = bufs, sizes, offset, 0, nil
	err := d.rc.Read(d.readFn)
	d.bufs, d.sizes = nil, nil
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

// Write writes each bufs[i][offset:] as one frame.
func (d *Device) Write(bufs [][]byte, offset int) (int, error) {
	for i, b := range bufs {
		if _, err := d.f.Write(b[offset:]); err != nil {
			return i, err
		}
	}
	return len(bufs), nil
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
func (d *Device) Close() error {
	d.closed.Store(true)
	return d.f.Close()
}
