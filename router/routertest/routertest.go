// Package routertest provides in-memory doubles of the router's devices and
// underlay, so the forwarding core can be tested without root or kernels.
package routertest

import (
	"os"
	"sync"
	"syscall"

	"github.com/tortie-net/tortie/fib"
)

// Device is an in-memory router.Device. Frames given to Inject are returned
// by Read; frames the router writes are recorded and can be taken with Take.
type Device struct {
	mu      sync.Mutex
	cond    *sync.Cond
	in      [][]byte
	out     [][]byte
	closed  bool
	plains  int
	Batch   int
	Discard bool // drop written frames instead of recording them (for benchmarks)
	NoVec   bool // refuse gathered writes (MaxVec 0), as a device without them
}

// NewDevice returns an empty device with a batch size of 16.
func NewDevice() *Device {
	d := &Device{Batch: 16}
	d.cond = sync.NewCond(&d.mu)
	return d
}

// Inject queues a frame for the router to read.
func (d *Device) Inject(frame []byte) {
	d.mu.Lock()
	d.in = append(d.in, append([]byte(nil), frame...))
	d.mu.Unlock()
	d.cond.Signal()
}

// Read blocks until frames were injected or the device is closed.
func (d *Device) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for len(d.in) == 0 && !d.closed {
		d.cond.Wait()
	}
	if d.closed {
		return 0, os.ErrClosed
	}
	n := 0
	for n < len(bufs) && len(d.in) > 0 {
		sizes[n] = copy(bufs[n][offset:], d.in[0])
		d.in = d.in[1:]
		n++
	}
	return n, nil
}

// Write records bufs[i][offset:].
func (d *Device) Write(bufs [][]byte, offset int) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return 0, os.ErrClosed
	}
	if !d.Discard {
		for _, b := range bufs {
			d.out = append(d.out, append([]byte(nil), b[offset:]...))
		}
	}
	return len(bufs), nil
}

// WritePlain records each frame behind an all-zero virtio-net header, as
// a TAP with virtio-net headers receives it (router.PlainWriter).
func (d *Device) WritePlain(frames [][]byte) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return 0, os.ErrClosed
	}
	d.plains++
	if !d.Discard {
		for _, f := range frames {
			d.out = append(d.out, append(make([]byte, 10, 10+len(f)), f...))
		}
	}
	return len(frames), nil
}

// MaxVec is how many parts WriteVec takes: 64, or 0 with NoVec.
func (d *Device) MaxVec() int {
	if d.NoVec {
		return 0
	}
	return 64
}

// WriteVec records the frame gathered from parts (router.VectorWriter).
func (d *Device) WriteVec(parts [][]byte) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return os.ErrClosed
	}
	if !d.Discard {
		var f []byte
		for _, p := range parts {
			f = append(f, p...)
		}
		d.out = append(d.out, f)
	}
	return nil
}

// PlainWrites says how many WritePlain calls there were.
func (d *Device) PlainWrites() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.plains
}

// Take returns and forgets the frames written so far.
func (d *Device) Take() [][]byte {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := d.out
	d.out = nil
	return out
}

func (d *Device) BatchSize() int { return d.Batch }

func (d *Device) Close() error {
	d.mu.Lock()
	d.closed = true
	d.mu.Unlock()
	d.cond.Broadcast()
	return nil
}

// Sent is one packet handed to the underlay.
type Sent struct {
	Pkt []byte
	Dst [4]byte
}

// Underlay records what the router sends; it fails sends larger than MTU
// with EMSGSIZE, as a raw socket does.
type Underlay struct {
	mu      sync.Mutex
	MTUNow  int
	sent    []Sent
	Discard bool
}

func (u *Underlay) Send(pkts [][]byte, dsts [][4]byte) (int, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	for i, p := range pkts {
		if u.MTUNow > 0 && len(p) > u.MTUNow {
			return i, syscall.EMSGSIZE
		}
		if !u.Discard {
			u.sent = append(u.sent, Sent{append([]byte(nil), p...), dsts[i]})
		}
	}
	return len(pkts), nil
}

func (u *Underlay) MTU() (int, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.MTUNow, nil
}

// Take returns and forgets the packets sent so far.
func (u *Underlay) Take() []Sent {
	u.mu.Lock()
	defer u.mu.Unlock()
	s := u.sent
	u.sent = nil
	return s
}

// Receiver is an in-memory router.UnderlayReceiver.
type Receiver struct {
	Device
	M fib.Mode
}

// NewReceiver returns a receiver of the given mode.
func NewReceiver(m fib.Mode) *Receiver {
	r := &Receiver{M: m}
	r.Batch = 16
	r.cond = sync.NewCond(&r.mu)
	return r
}

// InjectFrom queues a payload as if received from src.
func (r *Receiver) InjectFrom(src [4]byte, payload []byte) { r.InjectGRO(src, payload, 0) }

// InjectGRO queues several datagrams of seg bytes (the last may be
// shorter) as one message, as a socket with UDP GRO delivers them. The
// source and segment size ride in the first six bytes of the queued copy.
func (r *Receiver) InjectGRO(src [4]byte, payload []byte, seg int) {
	r.Inject(append(append(src[:], byte(seg>>8), byte(seg)), payload...))
}

func (r *Receiver) Recv(bufs [][]byte, sizes, segs []int, srcs [][4]byte, offset int) (int, error) {
	n, err := r.Read(bufs, sizes, offset)
	for i := 0; i < n; i++ {
		b := bufs[i][offset:]
		srcs[i] = [4]byte(b[:4])
		segs[i] = int(b[4])<<8 | int(b[5])
		copy(b, b[6:sizes[i]])
		sizes[i] -= 6
	}
	return n, err
}

func (r *Receiver) Mode() fib.Mode { return r.M }
