package cpuset

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"
)

func TestParse(t *testing.T) {
	good := map[string]string{
		"0":           "0",
		"3":           "3",
		"0-3":         "0-3",
		"0,2-3, 5":    "0,2-3,5",
		"4-4":         "4",
		"1,0":         "0-1",
		"1023":        "1023",
		"0-2,1-5,9-9": "0-5,9",
	}
	for in, want := range good {
		s, err := Parse(in)
		if err != nil {
			t.Errorf("Parse(%q): %v", in, err)
			continue
		}
		if s.String() != want {
			t.Errorf("Parse(%q) = %s, want %s", in, s, want)
		}
	}
	for _, in := range []string{"", " ", "a", "-1", "3-1", "1024", "0-1024", "1,", ",1", "1--2", "+1", "0x1", "1-"} {
		if s, err := Parse(in); err == nil {
			t.Errorf("Parse(%q) = %s, want an error", in, s)
		}
	}
}

func TestCount(t *testing.T) {
	s, err := Parse("0-3,8")
	if err != nil || s.Count() != 5 || fmt.Sprint(s.CPUs()) != "[0 1 2 3 8]" {
		t.Fatalf("Parse(0-3,8): %v, count %d, CPUs %v", err, s.Count(), s.CPUs())
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"0", "0-3,6", "1023", "3-1", "", "1,,2", "9999999999999999999999"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		s, err := Parse(in)
		if err != nil {
			return
		}
		again, err := Parse(s.String())
		if err != nil || again != s {
			t.Fatalf("%q printed as %q reads back as %v (%v)", in, s.String(), again, err)
		}
	})
}

// TestPinEveryThread pins a child process (this test binary again) and
// checks, from the kernel's view in /proc, that every thread it had and
// every thread it starts afterwards runs only on the chosen CPU.
func TestPinEveryThread(t *testing.T) {
	if os.Getenv("CPUSET_PIN_CHILD") == "1" {
		pinChild()
		return
	}
	cur, err := Current(0)
	if err != nil {
		t.Fatal(err)
	}
	// The last CPU this process may use: a set that differs from the
	// default wherever there is more than one CPU.
	target := ""
	for c := maxCPU - 1; c >= 0 && target == ""; c-- {
		if cur.mask.IsSet(c) {
			target = strconv.Itoa(c)
		}
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestPinEveryThread$")
	cmd.Env = append(os.Environ(), "CPUSET_PIN_CHILD=1", "CPUSET_PIN_TARGET="+target)
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "pinned ") {
		t.Fatalf("child: %v\n%s", err, out)
	}
	t.Logf("%s", strings.TrimSpace(string(out)))
}

func pinChild() {
	target := os.Getenv("CPUSET_PIN_TARGET")
	want, err := Parse(target)
	if err != nil {
		childFail("target %q: %v", target, err)
	}
	hold := make(chan struct{})
	lockThreads := threadStarter(hold)
	lockThreads(4)
	if err := Pin(want); err != nil {
		childFail("Pin: %v", err)
	}
	lockThreads(4) // threads started after Pin inherit the mask
	tids, err := threads()
	if err != nil {
		childFail("%v", err)
	}
	for _, tid := range tids {
		got, err := Current(tid)
		if err != nil {
			childFail("thread %d: %v", tid, err)
		}
		if got != want {
			childFail("thread %d runs on CPUs %s, want %s", tid, got, want)
		}
	}
	close(hold)
	fmt.Fprintf(os.Stdout, "pinned %d threads to CPU %s\n", len(tids), want)
	os.Exit(0)
}

// TestRealtimeEveryThread puts a child process (this test binary again)
// under SCHED_FIFO and checks, thread by thread, that every thread it had
// and every thread it starts afterwards has the policy and priority; and
// that a priority out of range is refused before anything changes.
func TestRealtimeEveryThread(t *testing.T) {
	if os.Getenv("CPUSET_RT_CHILD") == "1" {
		realtimeChild()
		return
	}
	for _, p := range []int{0, 100, -1} {
		if err := Realtime(p); err == nil || !strings.Contains(err.Error(), "want 1 to 99") {
			t.Errorf("Realtime(%d): %v", p, err)
		}
	}
	if policy, _, err := Policy(0); err != nil || policy == unix.SCHED_FIFO {
		t.Fatalf("this test's thread is already real-time (policy %d), or: %v", policy, err)
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root (CAP_SYS_NICE)")
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestRealtimeEveryThread$")
	cmd.Env = append(os.Environ(), "CPUSET_RT_CHILD=1")
	out, err := cmd.CombinedOutput()
	if err == nil && strings.HasPrefix(string(out), "SKIP: ") {
		t.Skip(strings.TrimSpace(string(out)))
	}
	if err != nil || !strings.Contains(string(out), "real-time ") {
		t.Fatalf("child: %v\n%s", err, out)
	}
	t.Logf("%s", strings.TrimSpace(string(out)))
}

func realtimeChild() {
	const prio = 3
	hold := make(chan struct{})
	lockThreads := threadStarter(hold)
	lockThreads(4)
	if err := Realtime(prio); errors.Is(err, unix.EPERM) {
		// Root without CAP_SYS_NICE (a container), or a cgroup with no
		// real-time runtime: nothing this test can check.
		fmt.Fprintf(os.Stdout, "SKIP: %v\n", err)
		os.Exit(0)
	} else if err != nil {
		childFail("Realtime: %v", err)
	}
	lockThreads(4) // threads started afterwards inherit the policy
	tids, err := threads()
	if err != nil {
		childFail("%v", err)
	}
	for _, tid := range tids {
		policy, priority, err := Policy(tid)
		if err != nil {
			childFail("thread %d: %v", tid, err)
		}
		if policy != unix.SCHED_FIFO || priority != prio {
			childFail("thread %d: policy %d priority %d, want SCHED_FIFO (%d) at %d", tid, policy, priority, unix.SCHED_FIFO, prio)
		}
	}
	close(hold)
	fmt.Fprintf(os.Stdout, "real-time at %d: %d threads\n", prio, len(tids))
	os.Exit(0)
}

// childFail reports a child process's failure to the parent test, which
// reads its output, and ends the child.
func childFail(format string, args ...any) {
	os.Stdout.WriteString("FAIL: " + strings.TrimSpace(fmt.Sprintf(format, args...)) + "\n")
	os.Exit(1)
}

// threadStarter returns a function that starts n goroutines, each locked
// to an OS thread of its own until hold is closed, and returns once all
// of them run.
func threadStarter(hold <-chan struct{}) func(n int) {
	var started sync.WaitGroup
	return func(n int) {
		for range n {
			started.Add(1)
			go func() {
				runtime.LockOSThread()
				started.Done()
				<-hold
			}()
		}
		started.Wait()
	}
}
