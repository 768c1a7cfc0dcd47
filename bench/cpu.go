package bench

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// userHZ is the unit of /proc's CPU times: USER_HZ, 100 on every Linux
// architecture Go runs on.
const userHZ = 100

// procCPUSeconds returns the CPU time process pid has used, user and
// system, over all its threads, in seconds.
func procCPUSeconds(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	utime, stime, err := parseProcStat(string(b))
	if err != nil {
		return 0, fmt.Errorf("/proc/%d/stat: %w", pid, err)
	}
	return float64(utime+stime) / userHZ, nil
}

// parseProcStat reads utime and stime (fields 14 and 15, in USER_HZ
// ticks) from a /proc/<pid>/stat line. The command name (field 2) is in
// parentheses and may hold spaces and parentheses itself, so fields are
// counted from the last ')'.
func parseProcStat(s string) (utime, stime uint64, err error) {
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, 0, fmt.Errorf("no command name in %q", firstLine(s))
	}
	f := strings.Fields(s[i+1:]) // f[0] is field 3, the state
	if len(f) < 13 {
		return 0, 0, fmt.Errorf("%d fields after the command name, want at least 13", len(f))
	}
	if utime, err = strconv.ParseUint(f[11], 10, 64); err != nil {
		return 0, 0, fmt.Errorf("utime: %w", err)
	}
	if stime, err = strconv.ParseUint(f[12], 10, 64); err != nil {
		return 0, 0, fmt.Errorf("stime: %w", err)
	}
	return utime, stime, nil
}

// procName is the command name of process pid.
func procName(pid int) string {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	return strings.TrimSpace(string(b))
}

// cpuMeter reads, before and after a test, the CPU time of each node's
// tortied (none for kernel nodes: their forwarding runs in softirqs and
// in the senders' system calls, which no process or network namespace
// owns) and the busy time of the whole machine.
type cpuMeter struct {
	pids []int // per node; 0: not measured
}

type cpuReading struct {
	nodes   []float64 // seconds, per node
	machine float64   // seconds
}

func (m cpuMeter) read() cpuReading {
	r := cpuReading{nodes: make([]float64, len(m.pids))}
	for i, pid := range m.pids {
		if pid > 0 {
			r.nodes[i], _ = procCPUSeconds(pid)
		}
	}
	t, _ := busy()
	r.machine = float64(t) / userHZ
	return r
}

// cpuPerGbit is the CPU seconds used between two readings per Gbit
// moved, per node (-1 where not measured) and for the machine.
func (m cpuMeter) cpuPerGbit(before, after cpuReading, bits float64) (nodes []float64, machine float64) {
	gbit := bits / 1e9
	if gbit <= 0 {
		return nil, 0
	}
	for i, pid := range m.pids {
		if pid > 0 {
			nodes = append(nodes, (after.nodes[i]-before.nodes[i])/gbit)
		} else {
			nodes = append(nodes, -1)
		}
	}
	return nodes, (after.machine - before.machine) / gbit
}
