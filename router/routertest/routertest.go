// Package routertest provides in-memory doubles of the router's devices and
// underlay, so the forwarding core can be tested without root or kernels.
//
// The doubles are exactly as strict as the router's concurrency contracts:
// what the contract says is owned by one worker (a device's Read, an
// underlay sender, a GSO sender, a receiver's Recv) keeps its per-call
// state unguarded, as the real one does, and panics when two goroutines
// are inside it at once; only what the contract says is safe for
// concurrent use (writes to a device, what reaches the wire) takes a lock.
package routertest

import (
	"os"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/tortie-net/tortie/fib"
	"github.com/tortie-net/tortie/header"
)

// owner catches a one-owner method entered by a second goroutine while the
// first is still inside it. A lock here would hide exactly the bug the
// contract rules out (it once hid lost and duplicated packets).
type owner struct{ busy atomic.Bool }

func (o *owner) enter(what string) {
	if !o.busy.CompareAndSwap(false, true) {
		panic("routertest: " + what + " entered by two goroutines at once; it is owned by one worker")
	}
}

func (o *owner) exit() { o.busy.Store(false) }

// Device is an in-memory router.Device. Frames given to Inject are returned
// by Read; frames the router writes are recorded and can be taken with Take.
// Read is owned by one reader; everything else is safe for concurrent use.
type Device struct {
	reader  owner
	mu      sync.Mutex // the queues, as the kernel's are guarded
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

// Read blocks until frames were injected or the device is closed. It is
// owned by the device's one reader.
func (d *Device) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	d.reader.enter("Device.Read")
	defer d.reader.exit()
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

// BatchSize returns d.Batch.
func (d *Device) BatchSize() int { return d.Batch }

// Close marks the device closed and wakes blocked readers, which then get
// os.ErrClosed.
func (d *Device) Close() error {
	d.mu.Lock()
	d.closed = true
	d.mu.Unlock()
	d.cond.Broadcast()
	return nil
}

// MultiQueue is a pod Device with more receive queues (router.MultiQueue):
// queue 0 is the Device itself, each further queue an input of its own,
// owned by its own reader. Writes go to the Device; Close closes every
// queue.
type MultiQueue struct {
	*Device
	More []*Device // queues 1, 2, ...
}

// NewMultiQueue returns a device with queues queues (at least 1).
func NewMultiQueue(queues int) *MultiQueue {
	m := &MultiQueue{Device: NewDevice()}
	for range queues - 1 {
		m.More = append(m.More, NewDevice())
	}
	return m
}

// Queues is how many queues there are.
func (m *MultiQueue) Queues() int { return 1 + len(m.More) }

// ReadQueue reads queue q; each queue is owned by its own reader.
func (m *MultiQueue) ReadQueue(q int, bufs [][]byte, sizes []int, offset int) (int, error) {
	if q == 0 {
		return m.Device.Read(bufs, sizes, offset)
	}
	return m.More[q-1].Read(bufs, sizes, offset)
}

// InjectQueue queues a frame on queue q for the router to read.
func (m *MultiQueue) InjectQueue(q int, frame []byte) {
	if q == 0 {
		m.Device.Inject(frame)
		return
	}
	m.More[q-1].Inject(frame)
}

// Close closes every queue.
func (m *MultiQueue) Close() error {
	for _, d := range m.More {
		d.Close()
	}
	return m.Device.Close()
}

// OffloadHost is a host Device with virtio-net headers (router.VnetDevice)
// that also takes packets behind headers of their own
// (router.OffloadWriter). Write and WriteOffload record into the same
// list, in order: Write's packets behind an all-zero header of 10 bytes,
// so that every recorded packet starts with its header. Safe for
// concurrent use, as Device is.
type OffloadHost struct {
	*Device
	offloads int
}

// NewOffloadHost returns an empty host device.
func NewOffloadHost() *OffloadHost { return &OffloadHost{Device: NewDevice()} }

// VnetHdr reports true.
func (h *OffloadHost) VnetHdr() bool { return true }

// Write records bufs[i][offset:] behind an all-zero header.
func (h *OffloadHost) Write(bufs [][]byte, offset int) (int, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return 0, os.ErrClosed
	}
	for _, b := range bufs {
		if !h.Discard {
			h.out = append(h.out, append(make([]byte, 10, 10+len(b)-offset), b[offset:]...))
		}
	}
	return len(bufs), nil
}

// WriteOffload records each packet as it is (header included).
func (h *OffloadHost) WriteOffload(pkts [][]byte) (int, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return 0, os.ErrClosed
	}
	h.offloads++
	for _, p := range pkts {
		if !h.Discard {
			h.out = append(h.out, append([]byte(nil), p...))
		}
	}
	return len(pkts), nil
}

// OffloadWrites says how many WriteOffload calls there were.
func (h *OffloadHost) OffloadWrites() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.offloads
}

// Sent is one packet handed to the underlay.
type Sent struct {
	Pkt []byte
	Dst [4]byte
}

// Underlay is an in-memory underlay network: it records what the router's
// senders put on the wire, fails sends larger than its MTU with EMSGSIZE,
// as a raw socket does, and, once its room is used up, fails them with
// EAGAIN, as a socket does whose send buffer is full. Underlay is safe for
// concurrent use; the senders it opens, one per worker, are not.
type Underlay struct {
	mu      sync.Mutex // the wire and the room
	mtu     atomic.Int64
	room    room
	sent    []Sent
	Discard bool // record nothing (for benchmarks); set before use
}

// SetMTU changes the underlay's MTU (0: unlimited), as an operator
// lowering the interface's MTU at run time.
func (u *Underlay) SetMTU(mtu int) { u.mtu.Store(int64(mtu)) }

// SetRoom lets n more packets onto the wire; every send after them finds
// the send buffer full. n < 0 lifts the limit (the default).
func (u *Underlay) SetRoom(n int) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.room.set(n)
}

// Refusals is how many sends found no room for all they carried (each
// returned EAGAIN).
func (u *Underlay) Refusals() int { return u.room.refusals(&u.mu) }

// room is what a send buffer still takes, when limited. Its owner's
// mutex guards it.
type room struct {
	limited bool
	left    int
	refused int // sends that found no room for all they carried
}

func (r *room) set(n int) { r.limited, r.left = n >= 0, n }

func (r *room) refusals(mu *sync.Mutex) int {
	mu.Lock()
	defer mu.Unlock()
	return r.refused
}

// take returns how many of n fit, and uses them up; mu is the owner's
// lock. A send that finds no room for all n is counted as refused.
func (r *room) take(mu *sync.Mutex, n int) int {
	mu.Lock()
	defer mu.Unlock()
	if !r.limited {
		return n
	}
	if n > r.left {
		n = r.left
		r.refused++
	}
	r.left -= n
	return n
}

// NewSender opens one worker's sender (a router.UnderlaySender).
func (u *Underlay) NewSender() *UnderlaySender { return &UnderlaySender{u: u} }

// Take returns and forgets the packets sent so far.
func (u *Underlay) Take() []Sent {
	u.mu.Lock()
	defer u.mu.Unlock()
	s := u.sent
	u.sent = nil
	return s
}

// UnderlaySender is one worker's sender onto an Underlay. Like a real one
// it is owned by one goroutine: its batch is its own, unguarded, and it
// panics when entered by a second goroutine.
type UnderlaySender struct {
	u     *Underlay
	own   owner
	batch []Sent // copies of one call's packets, made outside any lock
}

// Send puts pkts[i] on the wire toward dsts[i], stopping at the first that
// exceeds the MTU or finds no room.
func (s *UnderlaySender) Send(pkts [][]byte, dsts [][4]byte) (int, error) {
	s.own.enter("UnderlaySender.Send")
	defer s.own.exit()
	mtu := int(s.u.mtu.Load())
	n, err := len(pkts), error(nil)
	for i, p := range pkts {
		if mtu > 0 && len(p) > mtu {
			n, err = i, syscall.EMSGSIZE
			break
		}
	}
	if fit := s.u.room.take(&s.u.mu, n); fit < n {
		n, err = fit, syscall.EAGAIN
	}
	if s.u.Discard || n == 0 {
		return n, err
	}
	s.batch = s.batch[:0]
	for i, p := range pkts[:n] {
		s.batch = append(s.batch, Sent{append([]byte(nil), p...), dsts[i]})
	}
	s.u.mu.Lock()
	s.u.sent = append(s.u.sent, s.batch...)
	s.u.mu.Unlock()
	clear(s.batch)
	return n, err
}

// MTU reads the underlay's MTU.
func (s *UnderlaySender) MTU() (int, error) {
	s.own.enter("UnderlaySender.MTU")
	defer s.own.exit()
	return int(s.u.mtu.Load()), nil
}

// GSOSend is one run of datagrams handed to UDP segmentation offload.
type GSOSend struct {
	Seg  int // datagram size; the last may be shorter
	Dst  [4]byte
	Hash uint32
	Data []byte // the run
}

// GSO is an in-memory underlay for UDP GSO runs: it records them, and
// once its room is used up, fails them with EAGAIN. GSO is safe for
// concurrent use; the writers it opens, one per worker, are not.
type GSO struct {
	// Order, when set (before the router sends), hears "gso" for each
	// run sent.
	Order *Order
	mu    sync.Mutex // the wire and the room
	room  room
	sends []GSOSend
}

// Order records, across the doubles that share it, which of them was
// written to in which order. Safe for concurrent use.
type Order struct {
	mu     sync.Mutex
	events []string
}

func (o *Order) add(e string) {
	if o == nil {
		return
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	o.events = append(o.events, e)
}

// Take returns and forgets what was recorded.
func (o *Order) Take() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	e := o.events
	o.events = nil
	return e
}

// SetRoom lets n more runs onto the wire; every send after them finds the
// send buffer full. n < 0 lifts the limit (the default).
func (g *GSO) SetRoom(n int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.room.set(n)
}

// Refusals is how many runs found no room (each returned EAGAIN).
func (g *GSO) Refusals() int { return g.room.refusals(&g.mu) }

// NewWriter opens one worker's GSO sender (a router.GSOSender).
func (g *GSO) NewWriter() *GSOWriter { return &GSOWriter{g: g} }

// Take returns and forgets the runs sent so far.
func (g *GSO) Take() []GSOSend {
	g.mu.Lock()
	defer g.mu.Unlock()
	s := g.sends
	g.sends = nil
	return s
}

// GSOWriter is one worker's sender of runs onto a GSO. It is owned by one
// goroutine and panics when entered by a second.
type GSOWriter struct {
	g   *GSO
	own owner
}

// SendGSO records the run, or finds no room for it.
func (w *GSOWriter) SendGSO(p []byte, seg int, dst [4]byte, hash uint32) error {
	w.own.enter("GSOWriter.SendGSO")
	defer w.own.exit()
	if w.g.room.take(&w.g.mu, 1) == 0 {
		return syscall.EAGAIN
	}
	s := GSOSend{seg, dst, hash, append([]byte(nil), p...)}
	w.g.Order.add("gso")
	w.g.mu.Lock()
	w.g.sends = append(w.g.sends, s)
	w.g.mu.Unlock()
	return nil
}

// GSOSources is how many sources (as sockets) a GSOWriter has.
const GSOSources = 4

// Source is the hash modulo GSOSources.
func (w *GSOWriter) Source(hash uint32) int { return int(hash % GSOSources) }

// SourcePort is 40000 plus the source.
func (w *GSOWriter) SourcePort(source int) uint16 { return 40000 + uint16(source) }

// MTU is 1500.
func (w *GSOWriter) MTU() (int, error) {
	w.own.enter("GSOWriter.MTU")
	defer w.own.exit()
	return 1500, nil
}

// Receiver is an in-memory router.UnderlayReceiver. Recv is owned by one
// reader (through Device.Read); Close and the Inject methods are safe for
// concurrent use.
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

// Recv reads queued messages like Device.Read and unpacks the source
// address and GRO segment size that InjectGRO stored in front of each.
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

// Mode returns r.M.
func (r *Receiver) Mode() fib.Mode { return r.M }

// Tunnel is an in-memory router.TunnelWriter: it records each frame with
// its 24-byte header (unless Discard). Safe for concurrent use; set
// Discard before the router writes.
type Tunnel struct {
	Discard bool   // count writes, keep no frames
	Order   *Order // when set, hears "tunnel" for each frame written
	mu      sync.Mutex
	frames  [][]byte
	writes  int
}

// TunnelMAC is the address a Tunnel reports.
var TunnelMAC = header.MAC{0x02, 0x74, 0x75, 0x6e, 0, 1}

// MAC returns TunnelMAC.
func (t *Tunnel) MAC() header.MAC { return TunnelMAC }

// WriteTunnel records copies of the frames.
func (t *Tunnel) WriteTunnel(frames [][]byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.writes++
	for range frames {
		t.Order.add("tunnel")
	}
	if t.Discard {
		return len(frames), nil
	}
	for _, f := range frames {
		t.frames = append(t.frames, append([]byte(nil), f...))
	}
	return len(frames), nil
}

// Take returns and forgets the frames written so far, and how many
// WriteTunnel calls wrote them.
func (t *Tunnel) Take() ([][]byte, int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	f, n := t.frames, t.writes
	t.frames, t.writes = nil, 0
	return f, n
}
