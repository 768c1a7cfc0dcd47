package test

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/tortie-net/tortie/cpuset"
	"github.com/tortie-net/tortie/lab"
)

// TestRealtimeTortied: with realtimePriority set, every thread of each
// node's tortied runs under SCHED_FIFO at that priority, as the kernel
// reports it per thread, and the lab's pods reach each other and their
// nodes through it.
func TestRealtimeTortied(t *testing.T) {
	const prio = 2
	l := up(t, lab.Options{Name: "trt", Nodes: 2, Pods: 1, Mode: "vxlan", Static: true, RealtimePriority: prio})
	checkAll(t, l)
	for _, n := range l.Nodes {
		tasks, err := os.ReadDir(filepath.Join("/proc", strconv.Itoa(n.PID), "task"))
		if err != nil {
			t.Fatalf("%s: %v", n.Name, err)
		}
		if len(tasks) < 2 {
			t.Fatalf("%s: tortied has %d threads", n.Name, len(tasks))
		}
		for _, task := range tasks {
			tid, _ := strconv.Atoi(task.Name())
			policy, priority, err := cpuset.Policy(tid)
			if errors.Is(err, unix.ESRCH) {
				continue // the thread ended
			}
			if err != nil {
				t.Fatalf("%s: thread %d: %v", n.Name, tid, err)
			}
			if policy != unix.SCHED_FIFO || priority != prio {
				t.Errorf("%s: thread %d: policy %d priority %d, want SCHED_FIFO (%d) at %d", n.Name, tid, policy, priority, unix.SCHED_FIFO, prio)
			}
		}
		t.Logf("%s: %d threads real-time at %d", n.Name, len(tasks), prio)
	}
}
