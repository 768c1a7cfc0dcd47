package router

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"
)

// inputLoop reads many inputs in turn on one goroutine, one batch of each
// ready input per turn (up to loopEvents of them), so that a packet waits
// for about one batch of each other ready input of its loop.
//
// With a goroutine per input, a packet on a quiet input waits for the
// reader of a busy one to find its queue empty and park: Go's scheduler
// looks at its network poller, which would wake the quiet input's reader,
// only when it has nothing else to run, and otherwise about every 10 ms
// from its monitor. A loop asks the kernel which of its inputs are ready
// before every turn instead.
//
// The inputs' descriptors sit on a private level-triggered epoll; the loop
// waits for that epoll's own descriptor through Go's poller, so a waiting
// loop holds no thread. After a turn, the loop asks the epoll again at once
// only if an input may still hold packets (its batch came back full) or the
// poll filled its event array; otherwise every packet not read came after
// its input was found empty, and its arrival, made readable afresh, wakes
// the loop through Go's poller. That saves a system call per turn.
//
// A step that waits holds up the loop's other inputs, and remove and stop,
// until it goes on. The router's steps do not wait: its writes to pods and
// the host never do, and an underlay send that finds its socket's buffer
// full drops what did not fit (tx_full) rather than wait for room.
//
// A loop may spin before it waits (busyPoll, Config.BusyPoll): after a turn
// that left its inputs empty it keeps asking its epoll, without sleeping,
// for up to busyPoll, and a packet that comes meanwhile (a reply to what
// the turn sent, typically) is read without the loop being woken: a thread,
// and on a virtual machine its CPU, that has gone to sleep must be woken by
// another CPU, which at low rates costs more than the work it announces.
// Each ask is preceded by sched_yield, so a thread waiting for this CPU (a
// pod on a busy node) may run first, as the kernel's own busy polling gives
// way when its CPU is wanted; but the spin keeps the goroutine's P, so with
// one Go thread the process's other goroutines wait up to busyPoll after
// the last packet, or until Go's scheduler preempts the loop (about 10 ms)
// while packets keep coming within busyPoll of each other. Go's poller
// (another thread sleeping in it, or the runtime's monitor) still watches
// the loop's epoll: a packet the spin found may leave the loop a stale
// readiness that its next wait returns at once with; the loop then finds
// nothing and waits again, without a spin.
//
// The nesting has a price: a wake-up that goes through the private epoll
// into Go's costs more than one straight from Go's poller (1-2 µs per hop
// here, measured as idle latency with labs side by side), so an idle
// round trip is a little slower than with a goroutine per input, which
// Config.InputLoops 0 keeps.
//
// Every input's descriptor must stay open until remove returns, or until
// stop: the loop takes finished inputs out of its epoll by descriptor.
//
// Concurrency: add, remove and stop are safe for concurrent use, with each
// other and with the loop; step functions run on the loop's goroutine only,
// one at a time. remove returns only once the input's step is not running
// and will not run again.
type inputLoop struct {
	ep   *os.File // the private epoll
	epfd int      // its descriptor, valid until stop closes it
	rc   syscall.RawConn

	log  *zap.Logger
	quit atomic.Bool // stop has begun: serve returns

	mu      sync.Mutex // held while a turn steps its inputs; guards ins, next, stopped
	ins     map[int32]*loopInput
	next    int32
	stopped bool
	// count is how many inputs were added and not removed (changed under
	// mu), read without it to place inputs.
	count atomic.Int32

	busyPoll time.Duration // how long to spin before waiting; 0: never

	// The loop's work, written by its goroutine, read by Stats.
	wakeups, turns, reads, fullTurns, busyPolls atomic.Uint64

	// The loop goroutine's own: what the last epoll_wait found.
	served  bool // serve ran once: later calls follow a wait
	evs     []unix.EpollEvent
	nready  int
	err     error
	serveFn func(fd uintptr) bool
	done    chan struct{} // closed when run returns
}

// loopInput is one input of a loop: a descriptor that polls readable while
// the input holds packets, and step, which reads one batch without waiting
// and forwards it.
type loopInput struct {
	fd   int
	step func() stepResult
}

// stepResult says whether an input goes on after a step.
type stepResult uint8

const (
	stepMore    stepResult = iota // the batch came back full: the input may hold more
	stepDrained                   // the input was found empty: what came after announces itself
	stepDone                      // the input is finished: closed (a TAP whose device is gone, or the router closing), or its read failed for good (the step logs why)
)

// goOn says whether the input is read again.
func (s stepResult) goOn() bool { return s == stepMore || s == stepDrained }

// loopEvents is how many ready inputs one turn takes; more wait for a
// later turn (the epoll hands out its ready inputs in rotation).
const loopEvents = 64

// newInputLoop makes a loop that spins for busyPoll before it waits (0:
// not at all).
func newInputLoop(log *zap.Logger, busyPoll time.Duration) (*inputLoop, error) {
	fd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("router: epoll: %w", err)
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("router: epoll: %w", err)
	}
	f := os.NewFile(uintptr(fd), "input-loop")
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, err
	}
	l := &inputLoop{ep: f, epfd: fd, rc: rc, log: log, ins: map[int32]*loopInput{}, evs: make([]unix.EpollEvent, loopEvents),
		busyPoll: busyPoll, done: make(chan struct{})}
	l.serveFn = l.serve
	return l, nil
}

// run serves the inputs until stop.
func (l *inputLoop) run() {
	defer close(l.done)
	// One Read for the loop's life: Read clears the poller's readiness of
	// the epoll once, when it begins; after that a wake-up that came
	// during a turn is kept for the next wait (see serve).
	err := l.rc.Read(l.serveFn) // returns when stop closes the epoll
	if l.err != nil {
		err = l.err
	}
	if err != nil && !l.quit.Load() {
		l.log.Error("input loop stopped: its inputs are no longer read", zap.Error(err))
	}
}

// serve is the poller callback that runs the loop: it takes the ready
// inputs without waiting, steps each once, and goes on while inputs may
// hold more, or while spinning finds more. It returns false to wait on
// Go's poller for the epoll to poll readable, and true to end the loop:
// on stop, or if the epoll fails.
func (l *inputLoop) serve(fd uintptr) bool {
	if l.served {
		l.wakeups.Add(1)
	}
	l.served = true
	if !l.poll(fd) {
		// Woken (or started) with nothing to read: wait again without
		// a spin, which a stale readiness from Go's poller would
		// otherwise start after every spin.
		return l.err != nil
	}
	for {
		if l.quit.Load() {
			return true
		}
		more := l.turn() || l.nready == len(l.evs)
		if !(more && l.poll(fd)) && !l.spin(fd) {
			return l.err != nil || l.quit.Load()
		}
	}
}

// spin asks the epoll for ready inputs, yielding the CPU between asks,
// until one is found (true), busyPoll has passed, stop begins or the
// epoll fails. It returns false at once if the loop does not spin.
func (l *inputLoop) spin(fd uintptr) bool {
	if l.busyPoll <= 0 || l.err != nil {
		return false
	}
	start := time.Now()
	for !l.quit.Load() && time.Since(start) < l.busyPoll {
		// Raw, as poll: sched_yield never sleeps; it lets a task
		// waiting for this CPU run first and returns at once if none is.
		unix.RawSyscall(unix.SYS_SCHED_YIELD, 0, 0, 0)
		if l.poll(fd) {
			l.busyPolls.Add(1)
			return true
		}
		if l.err != nil {
			return false
		}
	}
	return false
}

// poll takes the ready inputs without waiting; false: none (or the epoll
// failed, l.err).
func (l *inputLoop) poll(fd uintptr) bool {
	for {
		// Raw: a zero timeout never waits, so the call need not tell Go's
		// scheduler it may block (as the inputs' own reads do not).
		n, _, e := unix.RawSyscall6(unix.SYS_EPOLL_PWAIT, fd, uintptr(unsafe.Pointer(&l.evs[0])), uintptr(len(l.evs)), 0, 0, 0)
		switch {
		case e == unix.EINTR:
			continue
		case e != 0:
			l.err, l.nready = e, 0
			return false
		}
		l.nready = int(n)
		return n > 0
	}
}

// turn steps each input the last poll found ready once, and says whether
// one may hold more.
func (l *inputLoop) turn() (more bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	reads := 0
	for _, ev := range l.evs[:l.nready] {
		in := l.ins[ev.Fd] // Fd holds the input's id, not its descriptor
		if in == nil {
			continue // removed after the poll found it
		}
		reads++
		switch in.step() {
		case stepMore:
			more = true
		case stepDrained:
		case stepDone:
			l.removeLocked(ev.Fd, in)
		}
	}
	l.turns.Add(1)
	l.reads.Add(uint64(reads))
	if more {
		l.fullTurns.Add(1)
	}
	return more
}

// errLoopStopped: the loop was stopped; the input was not added.
var errLoopStopped = errors.New("router: input loop stopped")

// add registers an input and returns its id for remove. The input's step
// may run before add returns.
func (l *inputLoop) add(in *loopInput) (int32, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.stopped {
		return 0, errLoopStopped
	}
	id := l.next
	for l.ins[id] != nil {
		id++
	}
	l.next = id + 1
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: id}
	if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, in.fd, &ev); err != nil {
		return 0, fmt.Errorf("router: watch input: %w", err)
	}
	l.ins[id] = in
	l.count.Add(1)
	return id, nil
}

// remove takes an input out: when it returns, the input's step is not
// running and will not run again, and its descriptor may be closed.
// Removing an input twice, or from a stopped loop, does nothing.
func (l *inputLoop) remove(id int32) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if in := l.ins[id]; in != nil {
		l.removeLocked(id, in)
	}
}

func (l *inputLoop) removeLocked(id int32, in *loopInput) {
	delete(l.ins, id)
	if !l.stopped {
		// The descriptor is still open: its owner closes it after remove
		// (or after stop).
		_ = unix.EpollCtl(l.epfd, unix.EPOLL_CTL_DEL, in.fd, nil)
	}
	l.count.Add(-1) // after the epoll: size is read without the lock
}

// size is how many inputs the loop reads; it does not wait for a turn.
func (l *inputLoop) size() int { return int(l.count.Load()) }

// stats is a snapshot of the loop's counters; it does not wait for a turn.
func (l *inputLoop) stats() LoopStats {
	return LoopStats{Inputs: l.size(), Wakeups: l.wakeups.Load(), Turns: l.turns.Load(), Reads: l.reads.Load(),
		FullTurns: l.fullTurns.Load(), BusyPolls: l.busyPolls.Load()}
}

// stop ends run (waiting for its turn to finish) and closes the epoll; the
// inputs' descriptors are their owners' to close. Later adds fail and
// removes do nothing.
func (l *inputLoop) stop() {
	l.quit.Store(true) // a loop that never waits ends at its next turn
	l.mu.Lock()
	l.stopped = true
	l.mu.Unlock()
	l.ep.Close() // a loop waiting on the poller wakes with an error
	<-l.done
	l.mu.Lock()
	clear(l.ins)
	l.count.Store(0)
	l.mu.Unlock()
}
