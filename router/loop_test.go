package router

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"reflect"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/tortie-net/tortie/fib"
	"github.com/tortie-net/tortie/header"
	"github.com/tortie-net/tortie/internal/testutil"
	"github.com/tortie-net/tortie/router/routertest"
)

// pipeInput is a loop input over a non-blocking pipe: each step reads one
// byte and records the input's name in a shared log.
type pipeInput struct {
	r, w int
	name string
	log  *stepLog
	step func() stepResult
}

// stepLog is what the loop's steps did, in order (written on the loop's
// goroutine, read by the test).
type stepLog struct {
	mu    sync.Mutex
	names []string
}

func (l *stepLog) add(name string) {
	l.mu.Lock()
	l.names = append(l.names, name)
	l.mu.Unlock()
}

func (l *stepLog) get() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.names...)
}

func (l *stepLog) count(name string) int {
	n := 0
	for _, s := range l.get() {
		if s == name {
			n++
		}
	}
	return n
}

func newPipeInput(t *testing.T, name string, log *stepLog) *pipeInput {
	t.Helper()
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_NONBLOCK|unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	in := &pipeInput{r: p[0], w: p[1], name: name, log: log}
	t.Cleanup(func() { unix.Close(in.r); unix.Close(in.w) })
	var b [1]byte
	in.step = func() stepResult {
		n, err := unix.Read(in.r, b[:])
		if err == unix.EAGAIN {
			return stepDrained
		}
		if err != nil || n == 0 {
			return stepDone
		}
		if in.log != nil {
			in.log.add(in.name)
		}
		return stepMore
	}
	return in
}

// newDrainingInput is a pipeInput whose step reads one byte and says the
// input was found empty, as a step that reads its input dry does.
func newDrainingInput(t *testing.T, name string, log *stepLog) *pipeInput {
	t.Helper()
	in := newPipeInput(t, name, log)
	in.step = func() stepResult {
		var b [1]byte
		if n, _ := unix.Read(in.r, b[:]); n == 1 {
			log.add(name)
		}
		return stepDrained
	}
	return in
}

// send queues n bytes on the input.
func (in *pipeInput) send(t *testing.T, n int) {
	t.Helper()
	if _, err := unix.Write(in.w, make([]byte, n)); err != nil {
		t.Fatal(err)
	}
}

// newLoop makes a loop that is not running yet and does not spin.
func newLoop(t *testing.T) *inputLoop {
	t.Helper()
	return newSpinningLoop(t, 0)
}

// newSpinningLoop makes a loop that is not running yet and spins for
// busyPoll before it waits.
func newSpinningLoop(t *testing.T, busyPoll time.Duration) *inputLoop {
	t.Helper()
	l, err := newInputLoop(zap.NewNop(), busyPoll)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func startLoop(t *testing.T) *inputLoop {
	t.Helper()
	l := newLoop(t)
	go l.run()
	t.Cleanup(l.stop)
	return l
}

func addInput(t *testing.T, l *inputLoop, in *pipeInput) int32 {
	t.Helper()
	id, err := l.add(&loopInput{fd: in.r, step: in.step})
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// waitFor polls cond for up to 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// busyAndQuiet makes a loop, not yet running, of two inputs: "busy" with
// 50 packets queued and "quiet" with 1.
func busyAndQuiet(t *testing.T, log *stepLog) (*inputLoop, *pipeInput) {
	t.Helper()
	busy, quiet := newPipeInput(t, "busy", log), newPipeInput(t, "quiet", log)
	busy.send(t, 50)
	quiet.send(t, 1)
	l := newLoop(t)
	addInput(t, l, busy)
	addInput(t, l, quiet)
	return l, quiet
}

// TestInputLoopTakesTurns: an input with one packet queued is read after
// at most one batch of a busy input, not after the busy input runs dry.
func TestInputLoopTakesTurns(t *testing.T) {
	log := &stepLog{}
	l, _ := busyAndQuiet(t, log)
	go l.run()
	defer l.stop()
	waitFor(t, "51 steps", func() bool { return len(log.get()) == 51 })
	got := log.get()
	i := 0
	for i < len(got) && got[i] != "quiet" {
		i++
	}
	if i > 1 {
		t.Fatalf("the quiet input was read after %d batches of the busy one; want at most 1", i)
	}
}

// TestInputLoopStats: the counters say what the loop did. A busy input
// of 50 packets and a quiet one of 1, both ready when the loop starts: a
// first turn reading both, then 49 turns of the busy one alone, every one
// of them full (each step reads one packet, a full batch). Then packets
// sent to the quiet input one at a time, each once the loop is done with
// the one before: each wakes the loop for one turn.
func TestInputLoopStats(t *testing.T) {
	l, quiet := busyAndQuiet(t, nil)
	if st := l.stats(); st != (LoopStats{Inputs: 2}) {
		t.Fatalf("before the loop runs: %+v", st)
	}
	go l.run()
	defer l.stop()
	locked := func() LoopStats { // a turn updates them under mu
		l.mu.Lock()
		defer l.mu.Unlock()
		return l.stats()
	}
	check := func(want LoopStats) LoopStats {
		t.Helper()
		waitFor(t, fmt.Sprint(want.Turns, " turns"), func() bool { return locked().Turns >= want.Turns })
		st := locked()
		wakeups := st.Wakeups
		if st.Wakeups = 0; st != want {
			t.Fatalf("loop stats %+v (wake-ups not compared), want %+v", st, want)
		}
		st.Wakeups = wakeups
		return st
	}
	check(LoopStats{Inputs: 2, Turns: 50, Reads: 51, FullTurns: 50})
	for i := range uint64(5) {
		quiet.send(t, 1)
		check(LoopStats{Inputs: 2, Turns: 51 + i, Reads: 52 + i, FullTurns: 51 + i})
	}
	// A wake-up may race a turn's end (the packet is then found by the
	// poll after the turn), and Go's poller may report one that finds
	// nothing; but packets sent to a waiting loop wake it.
	if st := locked(); st.Wakeups < 1 {
		t.Fatalf("loop stats %+v: five packets sent one at a time woke the loop 0 times", st)
	}
}

// TestInputLoopRemove: remove waits for a step in progress, takes the
// input's descriptor out of the epoll, and a removed input is not stepped
// again although it stays readable.
func TestInputLoopRemove(t *testing.T) {
	log := &stepLog{}
	a, b := newPipeInput(t, "a", log), newPipeInput(t, "b", log)
	l := startLoop(t)
	var running atomic.Bool
	entered, hold := make(chan struct{}), make(chan struct{})
	var buf [1]byte
	a.step = func() stepResult {
		running.Store(true)
		defer running.Store(false)
		entered <- struct{}{}
		<-hold
		if n, _ := unix.Read(a.r, buf[:]); n == 1 {
			log.add("a")
		}
		return stepDrained
	}
	idA := addInput(t, l, a)
	addInput(t, l, b)
	if n := watched(t, l); n != 2 {
		t.Fatalf("the epoll watches %d descriptors, want 2", n)
	}
	a.send(t, 1)
	select {
	case <-entered: // a's step is running and holds
	case <-time.After(10 * time.Second):
		t.Fatal("a was not stepped")
	}
	var stepRunning atomic.Bool
	removed := make(chan struct{})
	go func() {
		l.remove(idA)
		stepRunning.Store(running.Load())
		close(removed)
	}()
	// A remove that did not wait would return now, with the step held.
	select {
	case <-removed:
		t.Fatal("remove returned while the input's step was running")
	case <-time.After(100 * time.Millisecond):
	}
	close(hold)
	<-removed
	if stepRunning.Load() {
		t.Fatal("remove returned while the input's step was running")
	}
	if n := watched(t, l); n != 1 {
		t.Fatalf("after remove the epoll watches %d descriptors, want 1", n)
	}
	before := log.count("a")
	a.send(t, 5)
	b.send(t, 1)
	// The wait that found b ready came after the write to a: a, were it
	// still watched, would have been found with it.
	waitFor(t, "b's step", func() bool { return log.count("b") == 1 })
	if n := log.count("a"); n != before {
		t.Fatalf("a removed, then stepped %d times more", n-before)
	}
	if n := l.size(); n != 1 {
		t.Fatalf("loop holds %d inputs after one of two was removed, want 1", n)
	}
}

// watched counts the descriptors l's epoll watches (its fdinfo's tfd lines).
func watched(t *testing.T, l *inputLoop) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/self/fdinfo/%d", l.epfd))
	if err != nil {
		t.Fatal(err)
	}
	return strings.Count(string(b), "tfd:")
}

// TestInputLoopFailedInput: an input whose step fails is taken out of the
// loop and its epoll.
func TestInputLoopFailedInput(t *testing.T) {
	in := newPipeInput(t, "x", nil)
	other := newPipeInput(t, "y", &stepLog{})
	l := startLoop(t)
	var steps atomic.Int64
	in.step = func() stepResult {
		steps.Add(1)
		return stepDone
	}
	addInput(t, l, in)
	addInput(t, l, other)
	in.send(t, 1)
	waitFor(t, "the failed input to leave the loop", func() bool { return l.size() == 1 })
	if n := watched(t, l); n != 1 {
		t.Fatalf("the epoll watches %d descriptors after one of two failed, want 1", n)
	}
	// Still readable: a later turn must not step it.
	other.send(t, 1)
	waitFor(t, "the other input's step", func() bool { return other.log.count("y") == 1 })
	if n := steps.Load(); n != 1 {
		t.Fatalf("failed input stepped %d times, want 1", n)
	}
}

// TestInputLoopStop: stop ends run; later adds fail and removes do nothing.
func TestInputLoopStop(t *testing.T) {
	l := newLoop(t)
	in := newPipeInput(t, "x", &stepLog{})
	id := addInput(t, l, in)
	go l.run()
	l.stop() // returns once run has
	if _, err := l.add(&loopInput{fd: in.r, step: in.step}); !errors.Is(err, errLoopStopped) {
		t.Fatalf("add after stop: %v, want errLoopStopped", err)
	}
	l.remove(id)
	if n := l.size(); n != 0 {
		t.Fatalf("stopped loop holds %d inputs", n)
	}
}

// TestInputLoopTurnAllocatesNothing: a wait and a turn over ready inputs
// allocate nothing.
func TestInputLoopTurnAllocatesNothing(t *testing.T) {
	l := newLoop(t)
	defer func() { go l.run(); l.stop() }()
	a, b := newPipeInput(t, "a", nil), newPipeInput(t, "b", nil)
	addInput(t, l, a)
	addInput(t, l, b)
	a.send(t, 300) // 101 turns of each AllocsPerRun below, one byte each
	b.send(t, 300)
	allocs := testing.AllocsPerRun(100, func() {
		if !l.poll(uintptr(l.epfd)) || l.nready != 2 {
			t.Fatalf("poll: %v, %d ready; want 2", l.err, l.nready)
		}
		l.turn()
	})
	if allocs != 0 {
		t.Errorf("%v allocations per turn, want 0", allocs)
	}
	l.busyPoll = time.Second
	allocs = testing.AllocsPerRun(100, func() {
		if !l.spin(uintptr(l.epfd)) || l.nready != 2 {
			t.Fatalf("spin: %v, %d ready; want 2", l.err, l.nready)
		}
		l.turn()
	})
	l.busyPoll = 0
	if allocs != 0 {
		t.Errorf("%v allocations per spin and turn, want 0", allocs)
	}
}

// TestInputLoopBusyPoll: a loop that spins reads a packet that comes
// after its inputs ran dry without waiting for a wake-up, and stop ends the
// spin. The spin here would last an hour, so the loop never waits: every
// packet after the first is found by spinning.
func TestInputLoopBusyPoll(t *testing.T) {
	log := &stepLog{}
	in := newDrainingInput(t, "a", log)
	l := newSpinningLoop(t, time.Hour)
	addInput(t, l, in)
	in.send(t, 1) // before the loop runs: its first poll finds it
	go l.run()
	t.Cleanup(l.stop) // after a failure; stopping twice does nothing
	for i := 1; i <= 5; i++ {
		if i > 1 {
			in.send(t, 1)
		}
		waitFor(t, fmt.Sprint(i, " steps"), func() bool { return log.count("a") == i })
	}
	if st := l.stats(); st.Wakeups != 0 || st.BusyPolls != 4 {
		t.Errorf("loop stats %+v: want no wake-ups and 4 busy polls (every packet after the first)", st)
	}
	stopped := make(chan struct{})
	go func() { l.stop(); close(stopped) }()
	waitFor(t, "stop to end the spin", func() bool {
		select {
		case <-stopped:
			return true
		default:
			return false
		}
	})
}

// TestInputLoopSpinEnds: a spin ends when its time is up and the loop
// waits in Go's poller; a packet sent then wakes it and is read.
func TestInputLoopSpinEnds(t *testing.T) {
	log := &stepLog{}
	in := newDrainingInput(t, "a", log)
	l := newSpinningLoop(t, time.Millisecond)
	addInput(t, l, in)
	go l.run()
	t.Cleanup(l.stop)
	for i := 1; i <= 5; i++ {
		waitFor(t, "the loop to wait in Go's poller", loopWaits)
		in.send(t, 1)
		waitFor(t, fmt.Sprint(i, " steps"), func() bool { return log.count("a") == i })
	}
	// Each packet came while the loop waited: none was found spinning.
	if st := l.stats(); st.Wakeups < 5 || st.BusyPolls != 0 {
		t.Fatalf("loop stats %+v: want 5 wake-ups or more and no busy polls", st)
	}
}

// TestInputLoopWakeDuringTurn: a packet that reaches another input while a
// turn runs, after that input was polled, is read although the turn's
// inputs all came back drained: its readiness wakes the loop.
func TestInputLoopWakeDuringTurn(t *testing.T) {
	log := &stepLog{}
	a, b := newPipeInput(t, "a", log), newPipeInput(t, "b", log)
	l := startLoop(t)
	var buf [1]byte
	a.step = func() stepResult {
		if n, _ := unix.Read(a.r, buf[:]); n == 1 {
			log.add("a")
			unix.Write(b.w, buf[:]) // b is ready only now
		}
		return stepDrained
	}
	addInput(t, l, a)
	addInput(t, l, b)
	for i := 1; i <= 20; i++ {
		a.send(t, 1)
		waitFor(t, "b's step after a's", func() bool { return log.count("b") == i })
	}
}

// TestInputLoopStopWhileBusy: stop ends a loop whose inputs never run dry.
func TestInputLoopStopWhileBusy(t *testing.T) {
	l := newLoop(t)
	in := newPipeInput(t, "x", nil)
	in.send(t, 1)
	var steps atomic.Int64
	in.step = func() stepResult { steps.Add(1); return stepMore } // never reads: always ready
	addInput(t, l, in)
	go l.run()
	waitFor(t, "the input's steps", func() bool { return steps.Load() > 10 })
	stopped := make(chan struct{})
	go func() { l.stop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(10 * time.Second):
		t.Fatal("stop did not end a loop whose input never runs dry")
	}
}

// TestInputLoopManyReady: more inputs ready at once than one poll takes
// are all read, although every step comes back drained: a poll that fills
// its event array is followed by another.
func TestInputLoopManyReady(t *testing.T) {
	log := &stepLog{}
	const n = loopEvents + 6
	ins := make([]*pipeInput, n)
	for i := range ins {
		in := newPipeInput(t, fmt.Sprint(i), log)
		in.send(t, 1)
		var buf [1]byte
		in.step = func() stepResult {
			if n, _ := unix.Read(in.r, buf[:]); n == 1 {
				log.add(in.name)
			}
			return stepDrained // each input's only byte: found empty
		}
		ins[i] = in
	}
	l := newLoop(t)
	for _, in := range ins {
		addInput(t, l, in)
	}
	go l.run()
	defer l.stop()
	waitFor(t, fmt.Sprintf("all %d inputs read", n), func() bool { return len(log.get()) == n })
}

// polledDevice is a pod or host device an input loop can read: frames
// queue in memory, each with a byte on a pipe whose read end is the
// descriptor the loop watches. Writes go to the embedded double.
type polledDevice struct {
	*routertest.Device
	mu          sync.Mutex
	frames      [][]byte
	r, w        int
	tok         []byte
	closed      atomic.Bool
	beforeClose func() // if set, called by Close before the pipe closes
}

func newPolledDevice(t *testing.T) *polledDevice {
	t.Helper()
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_NONBLOCK|unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	return &polledDevice{Device: routertest.NewDevice(), r: p[0], w: p[1], tok: make([]byte, 256)}
}

func (d *polledDevice) inject(frame []byte) {
	d.mu.Lock()
	d.frames = append(d.frames, append([]byte(nil), frame...))
	d.mu.Unlock()
	unix.Write(d.w, []byte{0})
}

func (d *polledDevice) QueuePollFD(int) (int, error) { return d.r, nil }

func (d *polledDevice) TryReadQueue(_ int, bufs [][]byte, sizes []int, offset int) (int, bool, error) {
	if d.closed.Load() {
		return 0, false, os.ErrClosed
	}
	if len(bufs) > len(d.tok) {
		d.tok = make([]byte, len(bufs)) // first call only: the router's batches are fixed
	}
	n, err := unix.Read(d.r, d.tok[:len(bufs)])
	switch {
	case err == unix.EAGAIN:
		return 0, true, nil
	case err != nil:
		return 0, false, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for i := 0; i < n; i++ {
		sizes[i] = copy(bufs[i][offset:], d.frames[i])
	}
	d.frames = d.frames[n:]
	return n, n < len(bufs), nil
}

func (d *polledDevice) Close() error {
	if d.beforeClose != nil {
		d.beforeClose()
	}
	d.closed.Store(true)
	unix.Close(d.r)
	unix.Close(d.w)
	return d.Device.Close()
}

// TestRouterInputLoop: a router with an input loop reads polled pods and
// host on it (and nothing else on goroutines of their own): frames from a
// pod and from the host reach another pod; RemovePort takes the pod's
// descriptor off the loop's epoll before closing the device, and Close
// stops the loop.
func TestRouterInputLoop(t *testing.T) {
	f := fib.New()
	r := New(Config{NodeAddr: nodeA, VTEPMAC: ourVTEP, UnderlayMTU: 1500, InputLoops: 1}, f, testUnderlay(&routertest.Underlay{}, nil))
	if len(r.loops) != 1 {
		t.Fatalf("%d input loops, want 1", len(r.loops))
	}
	t.Cleanup(func() { r.Close() })
	l := r.loops[0]
	host, devA, devB := newPolledDevice(t), newPolledDevice(t), newPolledDevice(t)
	r.AttachHost(host)
	pA, err := r.AddPort(PortConfig{Name: "a", Addr: netip.AddrFrom4(podA), MAC: macA}, devA)
	if err != nil {
		t.Fatal(err)
	}
	pB, err := r.AddPort(PortConfig{Name: "b", Addr: netip.AddrFrom4(podB), MAC: macB}, devB)
	if err != nil {
		t.Fatal(err)
	}
	if n := l.size(); n != 3 {
		t.Fatalf("the loop reads %d inputs, want 3 (host, a, b)", n)
	}
	if n := watched(t, l); n != 3 {
		t.Fatalf("the loop's epoll watches %d descriptors, want 3", n)
	}
	devA.inject(eth(header.EtherTypeIPv4, pkt{src: podA, dst: podB, proto: 253, payload: 10}.ip()))
	host.inject(pkt{src: nodeA, dst: podB, proto: 253, payload: 20}.ip())
	got := 0
	testutil.WaitFor(t, 30*time.Second, "two frames at pod B", func() bool { got += len(devB.Take()); return got >= 2 })
	if got != 2 || pA.RxPackets.Load() != 1 {
		t.Fatalf("pod B got %d frames of 2; port a read %d of 1", got, pA.RxPackets.Load())
	}
	l.mu.Lock() // the turn that forwarded the frames has counted them
	st := r.Stats().Loops
	l.mu.Unlock()
	if len(st) != 1 || st[0].Inputs != 3 || st[0].Reads < 2 || st[0].Turns < 1 {
		t.Fatalf("the router's loop stats %+v: want one loop of 3 inputs that took a turn and read at least 2 batches", st)
	}
	// When RemovePort closes the device, its descriptor is already off
	// the loop (closing it would take it off the epoll by itself).
	atClose := -1
	devB.beforeClose = func() { atClose = watched(t, l) }
	if err := r.RemovePort(pB); err != nil {
		t.Fatal(err)
	}
	if atClose != 2 || l.size() != 2 {
		t.Fatalf("RemovePort closed the device with %d descriptors watched, then the loop read %d inputs; want 2 and 2", atClose, l.size())
	}
	closed := make(chan error, 1)
	go func() { closed <- r.Close() }()
	select {
	case <-closed:
	case <-time.After(30 * time.Second):
		t.Fatal("Close did not return: the loop kept running")
	}
	select {
	case <-l.done:
	default:
		t.Fatal("Close returned with the loop still running")
	}
}

// TestAddPortWhileClosing: a port added after the loops stopped (Close
// under way) is refused and leaves no route or table entry behind, since
// nobody would read or close it.
func TestAddPortWhileClosing(t *testing.T) {
	r := New(Config{NodeAddr: nodeA, VTEPMAC: ourVTEP, UnderlayMTU: 1500, InputLoops: 1}, fib.New(), testUnderlay(&routertest.Underlay{}, nil))
	t.Cleanup(func() { r.Close() })
	for _, l := range r.loops {
		l.stop() // as Close does first
	}
	dev := newPolledDevice(t)
	t.Cleanup(func() { dev.Close() })
	if _, err := r.AddPort(PortConfig{Name: "a", Addr: netip.AddrFrom4(podA), MAC: macA}, dev); err == nil {
		t.Fatal("AddPort after the loops stopped succeeded")
	}
	if nh := r.FIB().Load().Lookup(fib.AddrU32(netip.AddrFrom4(podA))); nh != nil {
		t.Fatalf("the refused port's route stayed: %+v", nh)
	}
	if ps := r.Ports(); len(ps) != 0 {
		t.Fatalf("the refused port stayed in the table: %v", ps)
	}
}

// queuedDevice is a polled pod device of several queues, each a
// polledDevice of its own. If placing is set, QueuePollFD of queue 1 sends
// on it and waits for release.
type queuedDevice struct {
	*polledDevice // queue 0, and the device's writes
	qs            []*polledDevice
	placing       chan struct{}
	release       chan struct{}
}

func newQueuedDevice(t *testing.T, queues int) *queuedDevice {
	d := &queuedDevice{}
	for range queues {
		d.qs = append(d.qs, newPolledDevice(t))
	}
	d.polledDevice = d.qs[0]
	return d
}

func (d *queuedDevice) Queues() int { return len(d.qs) }

func (d *queuedDevice) ReadQueue(int, [][]byte, []int, int) (int, error) {
	return 0, errors.New("queuedDevice: read on an input loop only")
}

func (d *queuedDevice) QueuePollFD(q int) (int, error) {
	if q == 1 && d.placing != nil {
		d.placing <- struct{}{}
		<-d.release
	}
	return d.qs[q].QueuePollFD(0)
}

func (d *queuedDevice) TryReadQueue(q int, bufs [][]byte, sizes []int, offset int) (int, bool, error) {
	return d.qs[q].TryReadQueue(0, bufs, sizes, offset)
}

func (d *queuedDevice) Close() error {
	for _, q := range d.qs[1:] {
		q.Close()
	}
	return d.qs[0].Close()
}

// TestPortQueuesSpread: a pod's queues go to different loops even when
// removals left one loop emptier by two: the least loaded loop this pod's
// queues are not on yet.
func TestPortQueuesSpread(t *testing.T) {
	r := New(Config{NodeAddr: nodeA, VTEPMAC: ourVTEP, UnderlayMTU: 1500, InputLoops: 2}, fib.New(), testUnderlay(&routertest.Underlay{}, nil))
	t.Cleanup(func() { r.Close() })
	var ports []*Port
	for i, a := range [][4]byte{podA, podB, podC} {
		p, err := r.AddPort(PortConfig{Name: fmt.Sprint(i), Addr: netip.AddrFrom4(a), MAC: macA}, newPolledDevice(t))
		if err != nil {
			t.Fatal(err)
		}
		ports = append(ports, p)
	}
	if err := r.RemovePort(ports[1]); err != nil { // the second loop's only input
		t.Fatal(err)
	}
	if a, b := r.loops[0].size(), r.loops[1].size(); a != 2 || b != 0 {
		t.Fatalf("loops read %d and %d inputs, want 2 and 0", a, b)
	}
	p, err := r.AddPort(PortConfig{Name: "mq", Addr: netip.AddrFrom4(podB), MAC: macB}, newQueuedDevice(t, 2))
	if err != nil {
		t.Fatal(err)
	}
	if len(p.polled) != 2 || p.polled[0].l == p.polled[1].l {
		t.Fatalf("the pod's 2 queues are on %d loops' entries %v, want one on each loop", len(p.polled), p.polled)
	}
	if p.polled[0].l != r.loops[1] {
		t.Fatal("the first queue did not go to the emptier loop")
	}
}

// TestRemovePortWhileAdding: RemovePort of a port found through Ports
// while its AddPort is still placing queues waits for the placing, then
// takes every queue off the loops: none is left on a loop, reading a
// closed device, and no route stays.
func TestRemovePortWhileAdding(t *testing.T) {
	r := New(Config{NodeAddr: nodeA, VTEPMAC: ourVTEP, UnderlayMTU: 1500, InputLoops: 1}, fib.New(), testUnderlay(&routertest.Underlay{}, nil))
	t.Cleanup(func() { r.Close() })
	l := r.loops[0]
	dev := newQueuedDevice(t, 3)
	dev.placing, dev.release = make(chan struct{}), make(chan struct{})
	var release sync.Once
	letGo := func() { release.Do(func() { close(dev.release) }) }
	t.Cleanup(letGo) // before Close (cleanups run last first): a failed test must not leave AddPort holding the port
	added := make(chan error, 1)
	go func() {
		_, err := r.AddPort(PortConfig{Name: "a", Addr: netip.AddrFrom4(podA), MAC: macA}, dev)
		added <- err
	}()
	<-dev.placing // queue 0 is on the loop; the port is in the table
	ps := r.Ports()
	if len(ps) != 1 {
		t.Fatalf("%d ports in the table while the first is placing its queues, want 1", len(ps))
	}
	removed := make(chan error, 1)
	go func() { removed <- r.RemovePort(ps[0]) }()
	// RemovePort must come to wait for the port's lock, not return.
	testutil.WaitFor(t, time.Minute, "RemovePort to wait for the port", func() bool {
		select {
		case err := <-removed:
			t.Fatalf("RemovePort returned (%v) while AddPort was still placing the port's queues", err)
		case <-added:
			t.Fatal("AddPort returned before its second queue was placed")
		default:
		}
		return waitsToLock(runtime.FuncForPC(reflect.ValueOf((*Router).RemovePort).Pointer()).Name())
	})
	letGo()
	if err := <-added; err != nil {
		t.Fatal(err)
	}
	if err := <-removed; err != nil {
		t.Fatal(err)
	}
	if n, w := l.size(), watched(t, l); n != 0 || w != 0 {
		t.Fatalf("after RemovePort the loop reads %d inputs and watches %d descriptors, want 0 and 0", n, w)
	}
	if nh := r.FIB().Load().Lookup(fib.AddrU32(netip.AddrFrom4(podA))); nh != nil {
		t.Fatalf("the removed port's route stayed: %+v", nh)
	}
}

// goroutines returns every goroutine's stack as runtime.Stack shows it.
func goroutines() []string {
	buf := make([]byte, 1<<20)
	n := runtime.Stack(buf, true)
	for n == len(buf) { // cut short: every goroutine must be seen
		buf = make([]byte, 2*len(buf))
		n = runtime.Stack(buf, true)
	}
	return strings.Split(string(buf[:n]), "\n\n")
}

// loopWaits reports whether an input loop's goroutine is parked in Go's
// poller, waiting for its epoll to turn readable (not spinning, nor
// running a turn).
func loopWaits() bool {
	for _, g := range goroutines() {
		if strings.Contains(g, "[IO wait") && strings.Contains(g, "router.(*inputLoop).run(") {
			return true
		}
	}
	return false
}

// waitsToLock reports whether a goroutine is blocked in sync.Mutex.Lock
// called by the function fn itself (its frame right below Lock), as
// runtime.Stack shows every goroutine; fn is the full name the runtime
// gives it.
func waitsToLock(fn string) bool {
	for _, g := range goroutines() {
		if !strings.Contains(g, "[sync.Mutex.Lock") {
			continue
		}
		lines := strings.Split(g, "\n")
		for i := 0; i+2 < len(lines); i++ {
			if strings.HasPrefix(lines[i], "sync.(*Mutex).Lock(") && strings.HasPrefix(lines[i+2], fn+"(") {
				return true
			}
		}
	}
	return false
}

// TestAddPortWhileClosingQueues: Close stops the loops one by one; a pod
// whose first queue went on a loop still running and whose second found
// its loop stopped is refused, and its first queue is taken off the
// running loop before the caller closes the device.
func TestAddPortWhileClosingQueues(t *testing.T) {
	r := New(Config{NodeAddr: nodeA, VTEPMAC: ourVTEP, UnderlayMTU: 1500, InputLoops: 2}, fib.New(), testUnderlay(&routertest.Underlay{}, nil))
	t.Cleanup(func() { r.Close() })
	live := r.loops[0]
	r.loops[1].stop() // as Close does, one loop at a time
	dev := newQueuedDevice(t, 2)
	t.Cleanup(func() { dev.Close() })
	if _, err := r.AddPort(PortConfig{Name: "a", Addr: netip.AddrFrom4(podA), MAC: macA}, dev); err == nil {
		t.Fatal("AddPort with a loop stopped succeeded")
	}
	if n, w := live.size(), watched(t, live); n != 0 || w != 0 {
		t.Fatalf("the refused pod left the running loop reading %d inputs and watching %d descriptors, want 0 and 0", n, w)
	}
	if ps := r.Ports(); len(ps) != 0 {
		t.Fatalf("the refused port stayed in the table: %v", ps)
	}
}
