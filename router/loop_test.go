package router

import (
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"
)

// pipeInput is a loop input over a non-blocking pipe: each step reads one
// byte and records the input's name in a shared log.
type pipeInput struct {
	r, w  int
	name  string
	log   *stepLog
	step  func() stepResult
	entry chan struct{} // if set, a step signals it, then waits for release
	hold  chan struct{}
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
		if in.entry != nil {
			in.entry <- struct{}{}
			<-in.hold
		}
		n, err := unix.Read(in.r, b[:])
		if err == unix.EAGAIN {
			return stepDrained
		}
		if err != nil || n == 0 {
			return stepFailed
		}
		if in.log != nil {
			in.log.add(in.name)
		}
		return stepMore
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

func startLoop(t *testing.T) *inputLoop {
	t.Helper()
	l, err := newInputLoop(zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
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

// TestInputLoopTakesTurns: an input with one packet queued is read after
// at most one batch of a busy input, not after the busy input runs dry.
func TestInputLoopTakesTurns(t *testing.T) {
	log := &stepLog{}
	busy, quiet := newPipeInput(t, "busy", log), newPipeInput(t, "quiet", log)
	busy.send(t, 50)
	quiet.send(t, 1)
	l, err := newInputLoop(zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	addInput(t, l, busy)
	addInput(t, l, quiet)
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

// TestInputLoopRemove: remove waits for a step in progress, and a removed
// input is not stepped again although it stays readable.
func TestInputLoopRemove(t *testing.T) {
	log := &stepLog{}
	l := startLoop(t)
	a, b := newPipeInput(t, "a", log), newPipeInput(t, "b", log)
	a.entry, a.hold = make(chan struct{}), make(chan struct{})
	idA := addInput(t, l, a)
	addInput(t, l, b)
	a.send(t, 1)
	select {
	case <-a.entry: // a's step is running and holds
	case <-time.After(10 * time.Second):
		t.Fatal("a was not stepped")
	}
	removed := make(chan struct{})
	go func() {
		l.remove(idA)
		close(removed)
	}()
	// remove cannot return while a's step runs.
	select {
	case <-removed:
		t.Fatal("remove returned while the input's step was running")
	default:
	}
	close(a.hold)
	<-removed
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

// TestInputLoopFailedInput: an input whose step fails is taken out.
func TestInputLoopFailedInput(t *testing.T) {
	l := startLoop(t)
	in := newPipeInput(t, "x", nil)
	var steps int
	var mu sync.Mutex
	in.step = func() stepResult {
		mu.Lock()
		steps++
		mu.Unlock()
		return stepFailed
	}
	addInput(t, l, in)
	in.send(t, 1)
	waitFor(t, "the failed input to leave the loop", func() bool { return l.size() == 0 })
	// Still readable: a later turn must not step it.
	other := newPipeInput(t, "y", &stepLog{})
	addInput(t, l, other)
	other.send(t, 1)
	waitFor(t, "the other input's step", func() bool { return other.log.count("y") == 1 })
	mu.Lock()
	defer mu.Unlock()
	if steps != 1 {
		t.Fatalf("failed input stepped %d times, want 1", steps)
	}
}

// TestInputLoopStop: stop ends run; later adds fail and removes do nothing.
func TestInputLoopStop(t *testing.T) {
	l, err := newInputLoop(zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
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
	l, err := newInputLoop(zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { go l.run(); l.stop() }()
	a, b := newPipeInput(t, "a", nil), newPipeInput(t, "b", nil)
	addInput(t, l, a)
	addInput(t, l, b)
	a.send(t, 200)
	b.send(t, 200)
	allocs := testing.AllocsPerRun(100, func() {
		if !l.poll(uintptr(l.epfd)) || l.nready != 2 {
			t.Fatalf("poll: %v, %d ready; want 2", l.err, l.nready)
		}
		l.turn()
	})
	if allocs != 0 {
		t.Errorf("%v allocations per turn, want 0", allocs)
	}
}

// TestInputLoopWakeDuringTurn: a packet that reaches another input while a
// turn runs, after that input was polled, is read although the turn's
// inputs all came back drained: its readiness wakes the loop.
func TestInputLoopWakeDuringTurn(t *testing.T) {
	log := &stepLog{}
	l := startLoop(t)
	a, b := newPipeInput(t, "a", log), newPipeInput(t, "b", log)
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
	l, err := newInputLoop(zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	in := newPipeInput(t, "x", nil)
	in.send(t, 1)
	var steps atomic.Int64
	in.step = func() stepResult { steps.Add(1); return stepMore } // never reads: always ready
	addInput(t, l, in)
	go l.run()
	waitFor(t, "the input's steps", func() bool { return steps.Load() > 10 })
	l.stop()
}
