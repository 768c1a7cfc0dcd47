// Package router is tortie's forwarding core: it reads frames from pod ports,
// packets from the host TUN and encapsulated packets from the underlay, routes
// each through the FIB, and writes it out, encapsulating toward other nodes.
//
// Each input is read in batches, and whoever reads a batch carries every
// packet of it to its output itself: no channels on the per-packet path, no
// locks (the FIB and port table are immutable snapshots behind atomic
// pointers), and no allocation. Inputs that can be polled (Config.InputLoops)
// are read on input loops, each taking one batch of each of its ready inputs
// in turn; others each have a goroutine of their own. Buffers carry Headroom
// bytes in front of every packet so that outer headers are written in place.
//
// # Network policy
//
// SetPolicy installs a compiled policy.Set; like the FIB it is an immutable
// state behind an atomic pointer, rebuilt off the packet path when the Set
// or the ports change (PortConfig.PolicyKey names a port's endpoint), and
// loaded once per batch. A packet between two endpoints that no policy or
// profile decides for (policy.Set.Subject), or with no Set installed, costs
// one pointer check and no flow lookup. Otherwise the flow table is the
// connection tracker: a flow's first packet is judged at the source pod's
// egress and the destination pod's ingress, and the verdict, with the
// state's generation, is kept in the flow's entry (the same entries as the
// Services' ViaHost flows). Later packets, replies (the reversed key) of an
// allowed flow, ICMP errors quoting one of its packets and fragments between
// its addresses ride the entry without evaluation. The node's own packets to
// its pods are allowed, as Calico allows them (kubelet's probes). Each
// install is a new generation, and a flow judged under an older one is
// judged again on its next packet, in either direction: a policy change
// applies to new flows at once and to existing ones at their next packet,
// with no walk over the table and at most one evaluation per live flow.
// Denied packets count as policy_denied and per endpoint and deciding
// policy in arrays sized when the Set is installed; Log rules' matches go
// through a bounded queue to a rate-limited logging goroutine.
package router

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/tortie-net/tortie/api"
	"github.com/tortie-net/tortie/encap"
	"github.com/tortie-net/tortie/fib"
	"github.com/tortie-net/tortie/flow"
	"github.com/tortie-net/tortie/header"
	"github.com/tortie-net/tortie/policy"
)

const (
	// Headroom is left free before every packet read, enough for the
	// outer IPv4 + UDP + VXLAN + inner Ethernet headers (50 bytes) or the
	// 10-byte virtio-net header the host TUN needs.
	Headroom = 64
	// tunOffset is the offset handed to the host TUN's Write.
	tunOffset = 16
	// maxPacket is the largest buffer any input needs.
	maxPacket = 65535
)

// Gateway is the address every pod routes through, and GatewayMAC the MAC
// tortie answers for it with (the address and MAC Calico uses).
var (
	Gateway    = [4]byte{169, 254, 1, 1}
	GatewayMAC = header.MAC{0xee, 0xee, 0xee, 0xee, 0xee, 0xee}
)

// Device is a batch-shaped packet device: pod TAPs carry Ethernet frames,
// the host TUN carries IPv4 packets. Read fills bufs[i][offset:offset+sizes[i]];
// Write sends bufs[i][offset:] for every i.
//
// Concurrency: Read is owned by the device's one reader (its worker) and
// need not be safe for concurrent use. Write, BatchSize and Close must be
// safe for concurrent use: every worker writes to every device, and Close
// comes from whoever removes the port, while the reader is still reading.
type Device interface {
	Read(bufs [][]byte, sizes []int, offset int) (int, error)
	Write(bufs [][]byte, offset int) (int, error)
	BatchSize() int
	Close() error
}

// UnderlaySender sends complete IPv4 packets (outer header included, or the
// inner packet itself when routed natively) to underlay next hops.
//
// Concurrency: an UnderlaySender is owned by one worker and need not be
// safe for concurrent use; every worker gets its own from Underlay.Sender
// (they may share a socket, but no send state).
type UnderlaySender interface {
	// Send sends pkts[i] toward dsts[i]. It returns how many were sent before
	// the first failure, and that failure. A full send buffer is
	// syscall.EAGAIN, returned at once: Send never waits for room, which
	// would hold up every input its worker serves.
	Send(pkts [][]byte, dsts [][4]byte) (int, error)
	// MTU re-reads the underlay's MTU (after EMSGSIZE).
	MTU() (int, error)
}

// UnderlayReceiver reads encapsulated packets addressed to this node. For
// VXLAN, bufs[i][offset:offset+sizes[i]] is the UDP payload; for IPIP it is
// the whole outer IPv4 packet. srcs[i] is the outer source address.
//
// Concurrency: Recv, Mode and BatchSize are owned by the receiver's one
// worker and need not be safe for concurrent use; Close must be safe to
// call while Recv is in progress, and makes it return os.ErrClosed.
type UnderlayReceiver interface {
	// segs[i] > 0 says message i holds several datagrams of that size
	// (UDP GRO), the last possibly shorter. Such a message's datagrams
	// each came with a UDP checksum, over the whole inner frame, that
	// the kernel verified: its GRO joins only datagrams with a nonzero
	// checksum (verified, by it or the NIC), and the other way a message
	// arrives in one piece, a UDP GSO send on this host, cannot turn
	// checksums off. The router verifies inner TCP checksums of single
	// datagrams only, which may have come without one.
	Recv(bufs [][]byte, sizes, segs []int, srcs [][4]byte, offset int) (int, error)
	Mode() fib.Mode
	BatchSize() int
	Close() error
}

// Underlay opens each worker's senders toward other nodes. The router
// calls these once per worker, when it makes the worker (before the
// worker's goroutine starts), and the worker alone uses what they return;
// the functions themselves are called from whichever goroutine attaches a
// port, so they must be safe for concurrent use.
type Underlay struct {
	// Sender opens a sender of complete IPv4 packets (required).
	Sender func() UnderlaySender
	// GSO, if set, opens a sender of VXLAN runs with UDP segmentation
	// offload; VXLAN then leaves through it instead of through Sender.
	GSO func() GSOSender
}

// Config is what the router needs to know about its node.
type Config struct {
	NodeAddr    [4]byte     // underlay address: outer source, ICMP source
	TunnelAddr  [4]byte     // this node's tunnel address (may be zero)
	VTEPMAC     header.MAC  // our VXLAN VTEP MAC
	VNI         uint32      // VXLAN network identifier (Calico: 4096)
	UnderlayMTU int         // initial path MTU toward other nodes
	ICMPRate    float64     // ICMP errors per second (default 1000)
	ICMPBurst   float64     // ICMP burst (default 50)
	ARPRate     float64     // gateway ARP replies per second per port (default 100)
	ARPBurst    float64     // (default 20)
	Flows       flow.Config // the flow table's size and timeouts
	// PolicyLogRate and PolicyLogBurst bound the records Log policy
	// rules write (default 10 a second, 100 at once); PolicyLogQueue is
	// how many wait for the logger (default 1024).
	PolicyLogRate, PolicyLogBurst float64
	PolicyLogQueue                int
	// InputLoops is how many goroutines read the inputs that can be
	// polled (PolledDevice, PolledReceiver), each input on one of them, in
	// turn with the others there (see inputLoop). 0: a goroutine per
	// input, as for inputs that cannot be polled.
	InputLoops int
	// BusyPoll is how long an input loop keeps asking its inputs, without
	// sleeping, after a turn that left them empty, before it waits for a
	// wake-up (see inputLoop.spin). 0: it waits at once.
	BusyPoll time.Duration
	Logger   *zap.Logger
}

// Counters are a port's traffic counters.
type Counters struct {
	RxPackets, RxBytes, TxPackets, TxBytes atomic.Uint64
}

// PortStats is a copy of a port's counters.
type PortStats = api.PortStats

func (c *Counters) snapshot(name string) PortStats {
	return PortStats{Name: name, RxPackets: c.RxPackets.Load(), RxBytes: c.RxBytes.Load(), TxPackets: c.TxPackets.Load(), TxBytes: c.TxBytes.Load()}
}

// PortConfig describes a pod port.
type PortConfig struct {
	Name       string
	Addr       netip.Addr // the pod's only legitimate source address
	MAC        header.MAC // the pod interface's MAC, destination of frames to the pod
	AllowSpoof bool       // skip the source check (opt-in exemption)
	// Offload: the device carries a virtio-net header before every frame
	// (TAP with IFF_VNET_HDR), and may deliver partial checksums and TCP
	// superframes, which the router finishes and segments.
	Offload bool
	// PolicyKey is the pod's key in the policy Set (policy.Endpoint.Key,
	// e.g. "<namespace>/<pod>"); empty, or not in the Set: no policy
	// applies to the port.
	PolicyKey string
}

// Port is a pod port attached to the router.
type Port struct {
	ID   uint32
	cfg  PortConfig
	addr [4]byte
	dev  Device
	// plain, when the device has it, writes queued plain frames of an
	// offload port as one batch.
	plain PlainWriter
	// vec, when the device has it, writes a coalesced superframe gathered
	// from the segments where they lie.
	vec    VectorWriter
	maxVec int
	Counters
	// readers are the port's reader goroutines, one per queue, and
	// polled its queues on input loops. AddPort holds attach from before
	// the port is in the table until it returns, and RemovePort takes it
	// first, so a removal found through Ports waits for the whole attach
	// (its route and every queue) before it undoes it.
	attach  sync.Mutex
	readers sync.WaitGroup
	polled  []loopEntry // under attach
}

// MultiQueue is a pod device with more than one receive queue (a
// multi-queue TAP): each queue is read by a goroutine and worker of its
// own, so one pod's flows are forwarded on more than one core. The device
// keeps each flow on one queue, so each flow stays in order. Frames to the
// pod are written through the Device itself.
//
// Concurrency: Queues is fixed and safe for concurrent use; ReadQueue of
// one queue is owned by that queue's reader (queue 0's is Device.Read's),
// and readers of different queues run concurrently.
type MultiQueue interface {
	Queues() int
	ReadQueue(q int, bufs [][]byte, sizes []int, offset int) (int, error)
}

// PolledDevice is a Device (pod port or host) whose queues an input loop
// can read in turn with other inputs (Config.InputLoops).
//
// Concurrency: QueuePollFD is safe for concurrent use; TryReadQueue of one
// queue is owned by that queue's reader, as Read is.
type PolledDevice interface {
	// QueuePollFD returns a descriptor of queue q (0, or below
	// MultiQueue.Queues) that polls readable while frames are queued. It
	// stays valid until Close.
	QueuePollFD(q int) (int, error)
	// TryReadQueue reads queue q as Read does, but returns 0 frames and no
	// error rather than wait. drained says a read of the call found the
	// queue empty, so any frame still queued came after it and made the
	// descriptor poll readable afresh; otherwise frames may remain that no
	// new readiness announces.
	TryReadQueue(q int, bufs [][]byte, sizes []int, offset int) (n int, drained bool, err error)
}

// PolledReceiver is an UnderlayReceiver an input loop can read in turn
// with other inputs.
//
// Concurrency: PollFD is safe for concurrent use; TryRecv is owned by the
// receiver's reader, as Recv is.
type PolledReceiver interface {
	// PollFD returns a descriptor that polls readable while messages are
	// queued; it stays valid until Close.
	PollFD() (int, error)
	// TryRecv is Recv that returns 0 messages and no error rather than
	// wait; drained as PolledDevice.TryReadQueue says.
	TryRecv(bufs [][]byte, sizes, segs []int, srcs [][4]byte, offset int) (n int, drained bool, err error)
}

// PlainWriter is a pod device with virtio-net headers that supplies the
// all-zero header of a plain frame (nothing left to do) itself. Frames
// queued back to back in one buffer, as the datagrams of a GRO read lie,
// can then be written as one batch without headers written in front of
// them, which would overwrite the tail of the frame before. WritePlain
// must be safe for concurrent use, as Device.Write is.
type PlainWriter interface {
	WritePlain(frames [][]byte) (int, error)
}

// VectorWriter is a pod device that writes one frame gathered from several
// slices (a TAP's writev), so a coalesced superframe needs no copy. Both
// methods must be safe for concurrent use, as Device.Write is.
type VectorWriter interface {
	// MaxVec is the most slices one WriteVec takes (0: none now).
	MaxVec() int
	WriteVec(parts [][]byte) error
}

// Config returns what the port was attached with.
func (p *Port) Config() PortConfig { return p.cfg }

// Router forwards between pod ports, the host and the underlay.
type Router struct {
	cfg     Config
	log     *zap.Logger
	fib     *fib.FIB
	ul      Underlay
	pathMTU atomic.Int32
	tunnel  atomic.Uint32 // our tunnel address: decapsulated packets may reach the host only for it
	vxlan   encap.VXLANTunnel

	mu    sync.Mutex // serialises port table edits
	ports atomic.Pointer[[]*Port]
	host  atomic.Pointer[hostPort]
	// gsoTunnel takes pods' superframes to VXLAN nodes whole (tunnel.go).
	gsoTunnel atomic.Pointer[tunnelPort]
	// tunnelPaused keeps superframes from the attached tunnel (UseTunnel).
	tunnelPaused atomic.Bool

	drops   [NumDropReasons]atomic.Uint64
	offload offloadCounters
	icmp    sharedBucket
	readers sync.WaitGroup
	closed  atomic.Bool
	closers []func() error
	loops   []*inputLoop // fixed by New

	// flows is the router's one flow table; nodeAddr the node's address
	// (packets from it are the node's own, not forwarded ones).
	flows      *flow.Table
	nodeAddr   uint32
	anyViaHost atomic.Bool   // a ViaHost flow was ever recorded: replies are looked up
	viaHost    atomic.Uint64 // replies sent back through the host

	// Network policy (policy.go): the state in force (nil: none), what
	// it was built from and its generation (under mu), the denied
	// counters of retired states (under statMu), and the Log queue.
	pol           atomic.Pointer[policyState]
	polCfg        Policy
	polGen        uint32
	statMu        sync.Mutex
	deniedEP      map[string]uint64
	deniedBy      map[policy.Counter]uint64
	polLog        chan policyLog
	polLogOnce    sync.Once
	polLogDone    chan struct{}
	closeOnce     sync.Once
	polLogged     atomic.Uint64
	polLogDropped atomic.Uint64
}

type hostPort struct {
	dev  Device
	vnet bool // packets come behind a virtio-net header
	// off, when the device has it, takes packets behind their own
	// virtio-net headers: natively routed packets from pods, and pods'
	// superframes for the kernel, leave through it.
	off OffloadWriter
	Counters
}

// OffloadWriter is a host device that takes IPv4 packets each behind its
// own virtio-net header, so a pod's TCP superframe can be handed to the
// kernel whole (GSO TCPv4, checksum partial) for the kernel, or the
// underlay's NIC, to segment. Packets are written in order, in one batch
// where the device can. WriteOffload must be safe for concurrent use.
type OffloadWriter interface {
	WriteOffload(pkts [][]byte) (int, error)
}

// VnetDevice is a host device that may deliver each packet behind a
// virtio-net header (checksums left to finish, TCP superframes to cut).
// VnetHdr must be safe for concurrent use (it reports a fixed property).
type VnetDevice interface {
	VnetHdr() bool
}

// New makes a router over f, sending to the underlay through the senders
// ul opens, one set per worker. Nothing about the router's outputs changes
// after New: every worker is made from what it was given.
func New(cfg Config, f *fib.FIB, ul Underlay) *Router {
	if ul.Sender == nil {
		panic("router: New without an underlay sender")
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	if cfg.VNI == 0 {
		cfg.VNI = 4096
	}
	if cfg.UnderlayMTU == 0 {
		cfg.UnderlayMTU = 1500
	}
	if cfg.ICMPRate == 0 {
		cfg.ICMPRate, cfg.ICMPBurst = 1000, 50
	}
	if cfg.ARPRate == 0 {
		cfg.ARPRate, cfg.ARPBurst = 100, 20
	}
	if cfg.PolicyLogRate <= 0 {
		cfg.PolicyLogRate, cfg.PolicyLogBurst = 10, 100
	}
	if cfg.PolicyLogBurst < 1 {
		cfg.PolicyLogBurst = 1
	}
	if cfg.PolicyLogQueue <= 0 {
		cfg.PolicyLogQueue = 1024
	}
	r := &Router{cfg: cfg, log: cfg.Logger, fib: f, ul: ul,
		vxlan: encap.VXLANTunnel{VNI: cfg.VNI, SrcMAC: cfg.VTEPMAC, SrcAddr: cfg.NodeAddr}}
	r.flows = flow.New(cfg.Flows)
	r.polLog, r.polLogDone = make(chan policyLog, cfg.PolicyLogQueue), make(chan struct{})
	r.nodeAddr = uint32(cfg.NodeAddr[0])<<24 | uint32(cfg.NodeAddr[1])<<16 | uint32(cfg.NodeAddr[2])<<8 | uint32(cfg.NodeAddr[3])
	r.icmp.b = newBucket(cfg.ICMPRate, cfg.ICMPBurst)
	r.pathMTU.Store(int32(cfg.UnderlayMTU))
	r.SetTunnelAddr(cfg.TunnelAddr)
	empty := []*Port{}
	r.ports.Store(&empty)
	for range cfg.InputLoops {
		l, err := newInputLoop(r.log, cfg.BusyPoll)
		if err != nil {
			r.log.Warn("input loops unavailable: a goroutine per input", zap.Error(err))
			for _, l := range r.loops {
				l.stop()
			}
			r.loops = nil
			break
		}
		r.loops = append(r.loops, l)
		r.readers.Add(1)
		go func() {
			defer r.readers.Done()
			l.run()
		}()
	}
	return r
}

// SetTunnelAddr changes this node's tunnel address (assigned by IPAM after
// start, when the first encapsulated pool appears).
func (r *Router) SetTunnelAddr(a [4]byte) {
	r.tunnel.Store(uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3]))
}

// Flows returns the router's flow table.
func (r *Router) Flows() *flow.Table { return r.flows }

// FIB returns the router's FIB.
func (r *Router) FIB() *fib.FIB { return r.fib }

// PathMTU is the current underlay MTU toward other nodes.
func (r *Router) PathMTU() int { return int(r.pathMTU.Load()) }

// AddPort attaches a pod device, installs the pod's /32 in the FIB and
// starts reading from it.
func (r *Router) AddPort(cfg PortConfig, dev Device) (*Port, error) {
	if !cfg.Addr.Is4() {
		return nil, fmt.Errorf("router: port %q: %v is not an IPv4 address", cfg.Name, cfg.Addr)
	}
	if r.closed.Load() {
		return nil, errors.New("router: closed")
	}
	p := &Port{cfg: cfg, addr: cfg.Addr.As4(), dev: dev}
	p.attach.Lock() // before the port is in the table: see Port.attach
	defer p.attach.Unlock()
	r.mu.Lock()
	old := *r.ports.Load()
	if pw, ok := dev.(PlainWriter); ok && cfg.Offload {
		p.plain = pw
	}
	if vw, ok := dev.(VectorWriter); ok && cfg.Offload && vw.MaxVec() >= 3 {
		p.vec, p.maxVec = vw, vw.MaxVec()
	}
	// Reuse the first free slot so IDs stay dense.
	p.ID = uint32(len(old))
	for i, q := range old {
		if q == nil {
			p.ID = uint32(i)
			break
		}
	}
	next := append([]*Port(nil), old...)
	if int(p.ID) == len(next) {
		next = append(next, p)
	} else {
		next[p.ID] = p
	}
	r.publishPolicy(next) // before the port: see publishPolicy
	r.ports.Store(&next)
	r.mu.Unlock()
	err := r.fib.Update(func(tx fib.Tx) error {
		return tx.Set(fib.Route{Prefix: netip.PrefixFrom(cfg.Addr, 32), Source: fib.SourceEndpoint,
			NextHop: fib.NextHop{Kind: fib.KindLocal, Port: p.ID}})
	})
	if err != nil {
		r.dropPort(p)
		return nil, err
	}
	// One reader per queue: on an input loop if the device can be polled,
	// else a goroutine. The workers' buffers are allocated here, not in
	// the readers: once AddPort returns, they allocate nothing more.
	read := waiting(func(_ int, bufs [][]byte, sizes []int, offset int) (int, error) { return dev.Read(bufs, sizes, offset) })
	queues := 1
	if mq, ok := dev.(MultiQueue); ok && mq.Queues() > 1 {
		read, queues = waiting(mq.ReadQueue), mq.Queues()
	}
	pd, _ := dev.(PolledDevice)
	for q := range queues {
		w := r.portWorker(p)
		if pd != nil {
			try := pd.TryReadQueue
			e, added := r.addInput(func() (int, error) { return pd.QueuePollFD(q) }, p.polled, func() stepResult { return r.portBatch(p, w, q, try) })
			if added == inputStopped {
				// Close began after the check above: nobody would
				// read or close the port. Take it back, earlier
				// queues off loops not stopped yet first; the caller
				// closes the device (and so ends any reader of an
				// earlier queue).
				for _, e := range p.polled {
					e.l.remove(e.id)
				}
				r.withdrawPort(p)
				return nil, errors.New("router: closed")
			}
			if added == inputAdded {
				p.polled = append(p.polled, e)
				continue
			}
		}
		p.readers.Add(1)
		r.spawn(func() {
			defer p.readers.Done()
			for r.portBatch(p, w, q, read).goOn() {
			}
		})
	}
	return p, nil
}

// loopEntry is an input on a loop, for its removal.
type loopEntry struct {
	l  *inputLoop
	id int32
}

// inputPlace says where addInput put an input.
type inputPlace uint8

const (
	inputAdded     inputPlace = iota // on a loop
	inputNotPolled                   // on no loop: the caller reads it on a goroutine of its own
	inputStopped                     // the router is closing: nobody reads it
)

// addInput puts an input, whose descriptor pollFD gives, on the loop with
// the fewest inputs, leaving out the loops of taken (the other queues of
// the same device) while any other loop is left, so that a device's queues
// are read on different threads (while there are loops enough) however
// uneven removals left the loops.
func (r *Router) addInput(pollFD func() (int, error), taken []loopEntry, step func() stepResult) (loopEntry, inputPlace) {
	if len(r.loops) == 0 {
		return loopEntry{}, inputNotPolled
	}
	fd, err := pollFD()
	if err != nil {
		r.log.Warn("input cannot be polled: read on its own goroutine", zap.Error(err))
		return loopEntry{}, inputNotPolled
	}
	l := leastLoaded(r.loops, taken)
	id, err := l.add(&loopInput{fd: fd, step: step})
	if errors.Is(err, errLoopStopped) {
		return loopEntry{}, inputStopped
	}
	if err != nil {
		r.log.Warn("input cannot be polled: read on its own goroutine", zap.Error(err))
		return loopEntry{}, inputNotPolled
	}
	return loopEntry{l, id}, inputAdded
}

// leastLoaded is the loop with the fewest inputs among those no entry of
// taken is on, or among all if taken covers every loop; the first such on
// a tie.
func leastLoaded(loops []*inputLoop, taken []loopEntry) *inputLoop {
	var best *inputLoop
	bestFree := false
	for _, l := range loops {
		free := true
		for _, e := range taken {
			if e.l == l {
				free = false
				break
			}
		}
		if best == nil || free && !bestFree || free == bestFree && l.size() < best.size() {
			best, bestFree = l, free
		}
	}
	return best
}

// RemovePort withdraws the pod's route, closes its device and waits for its
// reader to stop.
func (r *Router) RemovePort(p *Port) error {
	p.attach.Lock() // waits for an AddPort of p still placing its queues
	defer p.attach.Unlock()
	r.withdrawPort(p)
	for _, e := range p.polled {
		e.l.remove(e.id) // before the close: the descriptor leaves the loop's epoll
	}
	err := p.dev.Close()
	p.readers.Wait()
	return err
}

// withdrawPort deletes the pod's route and takes the port out of the table.
func (r *Router) withdrawPort(p *Port) {
	_ = r.fib.Update(func(tx fib.Tx) error {
		tx.Delete(fib.SourceEndpoint, netip.PrefixFrom(p.cfg.Addr, 32))
		return nil
	})
	r.dropPort(p)
}

func (r *Router) dropPort(p *Port) {
	r.mu.Lock()
	defer r.mu.Unlock()
	old := *r.ports.Load()
	next := append([]*Port(nil), old...)
	if int(p.ID) < len(next) && next[p.ID] == p {
		next[p.ID] = nil
	}
	r.ports.Store(&next)
	r.publishPolicy(next)
}

// Ports returns the attached pod ports.
func (r *Router) Ports() []*Port {
	var out []*Port
	for _, p := range *r.ports.Load() {
		if p != nil {
			out = append(out, p)
		}
	}
	return out
}

// AttachHost connects the node's own stack (a TUN carrying IPv4 packets;
// behind a virtio-net header each if dev is a VnetDevice that says so).
func (r *Router) AttachHost(dev Device) {
	h := &hostPort{dev: dev}
	size := maxPacket
	if v, ok := dev.(VnetDevice); ok && v.VnetHdr() {
		h.vnet, size = true, header.VirtioNetHdrLen+maxPacket
		h.off, _ = dev.(OffloadWriter)
	}
	r.host.Store(h)
	r.closers = append(r.closers, dev.Close)
	w := r.newWorker(dev.BatchSize(), size)
	if pd, ok := dev.(PolledDevice); ok {
		try := pd.TryReadQueue
		if _, added := r.addInput(func() (int, error) { return pd.QueuePollFD(0) }, nil, func() stepResult { return r.hostBatch(h, w, try) }); added != inputNotPolled {
			return
		}
	}
	read := waiting(func(_ int, bufs [][]byte, sizes []int, offset int) (int, error) { return dev.Read(bufs, sizes, offset) })
	r.spawn(func() {
		for r.hostBatch(h, w, read).goOn() {
		}
	})
}

// AttachUnderlay starts reading encapsulated packets from rx.
func (r *Router) AttachUnderlay(rx UnderlayReceiver) {
	r.closers = append(r.closers, rx.Close)
	u := &underlayReader{rx: rx, w: r.newWorker(rx.BatchSize(), maxPacket), mode: rx.Mode()}
	u.srcs, u.segs = make([][4]byte, len(u.w.bufs)), make([]int, len(u.w.bufs))
	if pr, ok := rx.(PolledReceiver); ok {
		try := pr.TryRecv
		if _, added := r.addInput(pr.PollFD, nil, func() stepResult { return r.underlayBatch(u, try) }); added != inputNotPolled {
			return
		}
	}
	recv := func(bufs [][]byte, sizes, segs []int, srcs [][4]byte, offset int) (int, bool, error) {
		n, err := rx.Recv(bufs, sizes, segs, srcs, offset)
		return n, false, err
	}
	r.spawn(func() {
		for r.underlayBatch(u, recv).goOn() {
		}
	})
}

// spawn starts a reader goroutine that Close waits for.
func (r *Router) spawn(read func()) {
	r.readers.Add(1)
	go func() {
		defer r.readers.Done()
		read()
	}()
}

// relearnPathMTU reads the underlay's MTU from s after the underlay
// refused a packet's size, and lowers the path MTU to it: later packets
// are fragmented or refused with ICMP up front. The path MTU is loaded
// before the MTU is read, so that a newer one UnderlayMTUChanged stored
// meanwhile is not overwritten by a stale read. It returns the MTU read,
// and false if none could be.
func (r *Router) relearnPathMTU(s interface{ MTU() (int, error) }) (int, bool) {
	seen := r.pathMTU.Load()
	mtu, err := s.MTU()
	if err != nil || mtu < 68 {
		return 0, false
	}
	if int32(mtu) < seen && r.pathMTU.CompareAndSwap(seen, int32(mtu)) {
		r.log.Info("underlay path MTU lowered", zap.Int("mtu", mtu))
	}
	return mtu, true
}

// UnderlayMTUChanged takes the underlay interface's MTU as the kernel
// reports a change of it: the path MTU follows it at once, never above the
// configured UnderlayMTU, so that no packet has to be refused first (with
// tunnelGSO a refused superframe costs its flow a retransmission
// timeout). It is safe for concurrent use.
func (r *Router) UnderlayMTUChanged(mtu int) {
	mtu = min(mtu, r.cfg.UnderlayMTU)
	if mtu < 68 {
		return
	}
	if old := r.pathMTU.Swap(int32(mtu)); old != int32(mtu) {
		r.log.Info("underlay MTU changed", zap.Int("pathMTU", mtu), zap.Int32("was", old))
	}
}

// Close stops every reader and closes every device.
func (r *Router) Close() error {
	r.closed.Store(true)
	r.closeOnce.Do(func() { close(r.polLogDone) })
	for _, l := range r.loops {
		l.stop() // before the devices close: no turn reads a closed one
	}
	var errs []error
	for _, c := range r.closers {
		errs = append(errs, c())
	}
	for _, p := range r.Ports() {
		errs = append(errs, r.RemovePort(p))
	}
	r.readers.Wait()
	return errors.Join(errs...)
}

// offloadCounters say how much the virtio-net offloads save.
type offloadCounters struct {
	tsoFrames, tsoSegments, groFrames, groSegments atomic.Uint64
	// groBadChecksums counts segments kept out of superframes because
	// their TCP checksum is wrong (the pod's kernel drops them).
	groBadChecksums atomic.Uint64
	// Superframes passed on whole (WholeToHost, WholeToPods,
	// WholeToTunnel).
	wholeToHost, wholeToPods, wholeToTunnel atomic.Uint64
	// underlaySuperframes: TCP superframes in IPIP or VXLAN (FromUnderlay).
	underlaySuperframes atomic.Uint64
}

// OffloadStats is a copy of the offload counters: superframes from pods
// and the host segmented (and the segments they became), superframes
// written to pods (and the segments they carried).
type OffloadStats = api.OffloadStats

// Stats is a snapshot of the router's counters.
type Stats = api.Counters

// LoopStats count an input loop's work.
type LoopStats = api.LoopStats

// Stats copies every counter.
func (r *Router) Stats() Stats {
	s := Stats{Drops: map[string]uint64{}, FIBSize: r.fib.Load().Len(), PathMTU: r.PathMTU(),
		Offload: OffloadStats{TSOFrames: r.offload.tsoFrames.Load(), TSOSegments: r.offload.tsoSegments.Load(),
			GROFrames: r.offload.groFrames.Load(), GROSegments: r.offload.groSegments.Load(),
			GROBadChecksums: r.offload.groBadChecksums.Load(),
			WholeToHost:     r.offload.wholeToHost.Load(), WholeToPods: r.offload.wholeToPods.Load(),
			WholeToTunnel: r.offload.wholeToTunnel.Load(),
			FromUnderlay:  r.offload.underlaySuperframes.Load()}}
	fs := r.flows.Stats()
	s.Flows = api.FlowStats{Entries: fs.Entries, Capacity: fs.Capacity, Inserts: fs.Inserts, Evictions: fs.Evictions,
		Refusals: fs.Refusals, Expired: fs.Expired, RepliesViaHost: r.viaHost.Load()}
	for i := range r.drops {
		s.Drops[DropReason(i).String()] = r.drops[i].Load()
	}
	s.Policy = r.policyStats()
	for _, p := range r.Ports() {
		s.Ports = append(s.Ports, p.snapshot(p.cfg.Name))
	}
	if h := r.host.Load(); h != nil {
		s.Host = h.snapshot("host")
	}
	for _, l := range r.loops {
		s.Loops = append(s.Loops, l.stats())
	}
	return s
}

// Drops returns the counter of one reason.
func (r *Router) Drops(d DropReason) uint64 { return r.drops[d].Load() }

func isClosed(err error) bool {
	return errors.Is(err, os.ErrClosed)
}

// portWorker sizes a pod port's buffers.
func (r *Router) portWorker(p *Port) *worker {
	batch, size := p.dev.BatchSize(), maxFrameFor(r)
	if p.cfg.Offload {
		// Superframes are up to 64 KB: fewer, larger buffers.
		batch, size = min(batch, 8), header.VirtioNetHdrLen+header.EthernetLen+header.IPv4MaxLen
	}
	return r.newWorker(batch, size)
}

// readFunc reads one batch of queue q into bufs; drained as
// PolledDevice.TryReadQueue says.
type readFunc func(q int, bufs [][]byte, sizes []int, offset int) (n int, drained bool, err error)

// waiting adapts a read that waits for a batch (drained is then unknown,
// and no matter: the reader reads again at once).
func waiting(read func(q int, bufs [][]byte, sizes []int, offset int) (int, error)) readFunc {
	return func(q int, bufs [][]byte, sizes []int, offset int) (int, bool, error) {
		n, err := read(q, bufs, sizes, offset)
		return n, false, err
	}
}

// batchResult is a read batch's stepResult: an input found empty waits
// for new readiness; one that filled its batch may hold more.
func batchResult(drained bool) stepResult {
	if drained {
		return stepDrained
	}
	return stepMore
}

// portBatch reads one batch of queue q of a pod port with read and
// forwards it.
func (r *Router) portBatch(p *Port, w *worker, q int, read readFunc) stepResult {
	n, drained, err := read(q, w.bufs, w.sizes, Headroom)
	if err != nil {
		if isClosed(err) || r.closed.Load() {
			return stepDone
		}
		r.log.Warn("pod port read failed", zap.String("port", p.cfg.Name), zap.Int("queue", q), zap.Error(err))
		return stepDone
	}
	if n == 0 {
		return batchResult(drained)
	}
	w.begin()
	var bytes uint64
	for i := 0; i < n; i++ {
		bytes += uint64(w.sizes[i])
		if p.cfg.Offload {
			w.fromOffload(podIngress(p), w.bufs[i], Headroom, Headroom+w.sizes[i])
		} else {
			w.fromPod(p, w.bufs[i], Headroom, Headroom+w.sizes[i])
		}
	}
	p.RxPackets.Add(uint64(n))
	p.RxBytes.Add(bytes)
	w.flush()
	return batchResult(drained)
}

// maxFrameFor sizes pod read buffers: a pod's frames are bounded by its MTU,
// which never exceeds the underlay's; a jumbo margin keeps truncation visible
// as a malformed drop rather than silent.
func maxFrameFor(r *Router) int { return max(r.cfg.UnderlayMTU, 1500) + header.EthernetLen + 256 }

// hostBatch reads one batch from the host with read and forwards it.
func (r *Router) hostBatch(h *hostPort, w *worker, read readFunc) stepResult {
	n, drained, err := read(0, w.bufs, w.sizes, Headroom)
	if err != nil {
		if isClosed(err) || r.closed.Load() {
			return stepDone
		}
		// The TUN reports malformed offload metadata as an error for
		// that read only; keep going.
		w.begin()
		w.drop(DropMalformed)
		w.flush()
		return stepMore
	}
	if n == 0 {
		return batchResult(drained)
	}
	w.begin()
	var bytes uint64
	for i := 0; i < n; i++ {
		bytes += uint64(w.sizes[i])
		if h.vnet {
			w.fromOffload(hostIngress, w.bufs[i], Headroom, Headroom+w.sizes[i])
		} else {
			w.fromHost(w.bufs[i], Headroom, Headroom+w.sizes[i])
		}
	}
	h.RxPackets.Add(uint64(n))
	h.RxBytes.Add(bytes)
	w.flush()
	return batchResult(drained)
}

// underlayReader is one underlay receiver's reader state.
type underlayReader struct {
	rx   UnderlayReceiver
	w    *worker
	srcs [][4]byte
	segs []int
	mode fib.Mode
}

// underlayBatch reads one batch of encapsulated packets with recv and
// forwards it.
func (r *Router) underlayBatch(u *underlayReader, recv func(bufs [][]byte, sizes, segs []int, srcs [][4]byte, offset int) (int, bool, error)) stepResult {
	w := u.w
	n, drained, err := recv(w.bufs, w.sizes, u.segs, u.srcs, Headroom)
	if err != nil {
		if isClosed(err) || r.closed.Load() {
			return stepDone
		}
		r.log.Warn("underlay read failed", zap.Stringer("mode", u.mode), zap.Error(err))
		return stepDone
	}
	if n == 0 {
		return batchResult(drained)
	}
	w.begin()
	for i := 0; i < n; i++ {
		if u.mode == fib.ModeVXLAN {
			// Datagrams of a GRO message are handled where they lie:
			// writes in front of one touch only its own VXLAN header
			// room, and frames are written in the order they came.
			end, step := Headroom+w.sizes[i], w.sizes[i]
			if u.segs[i] > 0 {
				step = u.segs[i]
			}
			// A GRO message's inner frames came under a UDP checksum
			// the kernel verified (see UnderlayReceiver): their TCP
			// checksums need no second pass.
			w.csumKnown = u.segs[i] > 0
			for d := Headroom; d < end; d += step {
				w.packed = d > Headroom
				w.fromVXLAN(u.srcs[i], w.bufs[i], d, min(d+step, end))
			}
			w.csumKnown, w.packed = false, false
		} else {
			w.fromIPIP(w.bufs[i], Headroom, Headroom+w.sizes[i])
		}
	}
	w.flush()
	return batchResult(drained)
}
