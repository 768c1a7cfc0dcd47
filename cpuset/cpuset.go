// Package cpuset reads Linux CPU lists ("0-3,6", as in cpuset cgroups and
// taskset -c) and pins every thread of the running process to such a set:
// the placement a node gives its vRouter, so that forwarding keeps its
// caches and does not chase the pods' work from CPU to CPU. It also puts
// every thread under the real-time scheduler (Realtime), the other half
// of how a node gives its vRouter CPU.
package cpuset

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// maxCPU is one past the highest CPU number a set may name.
const maxCPU = 1024

// Set is a set of CPU numbers.
type Set struct{ mask unix.CPUSet }

// Parse reads a CPU list: comma-separated CPU numbers and inclusive
// ranges, e.g. "0", "2-3", "0,4-7". It rejects an empty list, reversed
// ranges and numbers of 1024 or more.
func Parse(s string) (Set, error) {
	var set Set
	if strings.TrimSpace(s) == "" {
		return set, errors.New("empty CPU list")
	}
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		lo, hi, isRange := strings.Cut(part, "-")
		a, err := cpuNumber(lo)
		if err != nil {
			return Set{}, fmt.Errorf("CPU list %q: %w", s, err)
		}
		b := a
		if isRange {
			if b, err = cpuNumber(hi); err != nil {
				return Set{}, fmt.Errorf("CPU list %q: %w", s, err)
			}
			if b < a {
				return Set{}, fmt.Errorf("CPU list %q: range %s runs backwards", s, part)
			}
		}
		for c := a; c <= b; c++ {
			set.mask.Set(c)
		}
	}
	return set, nil
}

func cpuNumber(s string) (int, error) {
	n, err := strconv.Atoi(s)
	switch {
	case err != nil || s == "" || s[0] == '+' || s[0] == '-':
		return 0, fmt.Errorf("%q is not a CPU number", s)
	case n >= maxCPU:
		return 0, fmt.Errorf("CPU %d: the highest is %d", n, maxCPU-1)
	}
	return n, nil
}

// Count is how many CPUs the set holds.
func (s Set) Count() int { return s.mask.Count() }

// CPUs lists the set's CPU numbers in ascending order.
func (s Set) CPUs() []int {
	var cpus []int
	for c := 0; c < maxCPU; c++ {
		if s.mask.IsSet(c) {
			cpus = append(cpus, c)
		}
	}
	return cpus
}

// String prints the set as a CPU list, runs of CPUs joined: "0-2,5".
func (s Set) String() string {
	var b strings.Builder
	cpus := s.CPUs()
	for i := 0; i < len(cpus); {
		j := i
		for j+1 < len(cpus) && cpus[j+1] == cpus[j]+1 {
			j++
		}
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.Itoa(cpus[i]))
		if j > i {
			b.WriteByte('-')
			b.WriteString(strconv.Itoa(cpus[j]))
		}
		i = j + 1
	}
	return b.String()
}

// Pin confines every thread of this process to s. Threads started later
// inherit the mask from the thread that starts them; Pin goes over the
// process's threads until a pass finds none it has not pinned, so a thread
// started while it runs is not missed.
func Pin(s Set) error {
	return eachThread(func(tid int) error {
		err := unix.SchedSetaffinity(tid, &s.mask)
		switch {
		case errors.Is(err, unix.EINVAL):
			return fmt.Errorf("pin to CPUs %s: none of them is online", s)
		case err != nil:
			return fmt.Errorf("pin thread %d to CPUs %s: %w", tid, s, err)
		}
		return nil
	})
}

// Realtime puts every thread of this process under SCHED_FIFO at
// priority (1 to 99). Threads started later inherit the policy from the
// thread that starts them; like Pin, it goes over the threads until a pass
// finds none new. It fails without CAP_SYS_NICE, or where the process's
// cgroup has no real-time runtime.
//
// Threads of one real-time priority do not preempt each other, and the Go
// runtime expects its threads to take turns: Realtime refuses when the
// runtime has more Ps (GOMAXPROCS) than the CPUs this thread may run on,
// and fixes GOMAXPROCS first, which stops the runtime's own later changes
// of it (each stops the world, which under SCHED_FIFO could wait for good
// for a thread on a CPU another spins on). Call it after Pin and after
// setting GOMAXPROCS.
func Realtime(priority int) error {
	if priority < 1 || priority > 99 {
		return fmt.Errorf("real-time priority %d: want 1 to 99", priority)
	}
	cpus, err := Current(0)
	if err != nil {
		return fmt.Errorf("real-time priority %d: the CPUs this process may run on: %w", priority, err)
	}
	procs := runtime.GOMAXPROCS(0)
	if procs > cpus.Count() {
		return fmt.Errorf("real-time priority %d: %d threads run Go code (GOMAXPROCS) but %d CPUs can run them; real-time threads need a CPU each", priority, procs, cpus.Count())
	}
	runtime.GOMAXPROCS(procs)
	attr := unix.SchedAttr{Size: unix.SizeofSchedAttr, Policy: unix.SCHED_FIFO, Priority: uint32(priority)}
	return eachThread(func(tid int) error {
		if err := unix.SchedSetAttr(tid, &attr, 0); err != nil {
			if errors.Is(err, unix.EPERM) {
				err = fmt.Errorf("%w (it needs CAP_SYS_NICE, and real-time runtime in the cgroup where the kernel has real-time group scheduling)", err)
			}
			return fmt.Errorf("real-time priority %d for thread %d: %w", priority, tid, err)
		}
		return nil
	})
}

// eachThread calls set once for every thread of this process, passing
// over them until a pass finds none it has not done, so that a thread
// started meanwhile is not missed. A thread that ended (ESRCH) is skipped.
func eachThread(set func(tid int) error) error {
	done := map[int]bool{}
	for {
		tids, err := threads()
		if err != nil {
			return err
		}
		fresh := false
		for _, tid := range tids {
			if done[tid] {
				continue
			}
			fresh = true
			done[tid] = true
			if err := set(tid); err != nil && !errors.Is(err, unix.ESRCH) {
				return err
			}
		}
		if !fresh {
			return nil
		}
	}
}

// Policy returns thread tid's scheduling policy (unix.SCHED_NORMAL,
// unix.SCHED_FIFO, ...) and real-time priority; 0 is the calling thread.
func Policy(tid int) (policy, priority int, err error) {
	attr, err := unix.SchedGetAttr(tid, 0)
	if err != nil {
		return 0, 0, err
	}
	return int(attr.Policy), int(attr.Priority), nil
}

// Current returns the CPUs thread tid (0: the calling thread) may run on.
func Current(tid int) (Set, error) {
	var s Set
	err := unix.SchedGetaffinity(tid, &s.mask)
	return s, err
}

func threads() ([]int, error) {
	ents, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return nil, err
	}
	tids := make([]int, 0, len(ents))
	for _, e := range ents {
		if tid, err := strconv.Atoi(e.Name()); err == nil {
			tids = append(tids, tid)
		}
	}
	return tids, nil
}
