// Command tortied is tortie's node daemon: it forwards pod traffic in
// userspace (pod TAPs, host TUN, IPIP/VXLAN/native underlay), serves the
// control API on a unix socket and Prometheus metrics over HTTP. It only
// wires: package node builds and runs the node.
package main

import (
	"context"
	"flag"
	"fmt"
	"net/http"
	_ "net/http/pprof" // served only with --pprof
	"os"
	"os/signal"
	"runtime"
	"syscall"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/tortie-net/tortie/config"
	"github.com/tortie-net/tortie/cpuset"
	"github.com/tortie-net/tortie/node"
)

func main() {
	cfgPath := flag.String("config", "/etc/tortie/tortied.yaml", "node configuration file")
	pprofAddr := flag.String("pprof", "", "serve Go profiles (/debug/pprof/) on this address, e.g. 127.0.0.1:6060; off by default")
	flag.Parse()
	if *pprofAddr != "" {
		go func() {
			srv := &http.Server{Addr: *pprofAddr, Handler: http.DefaultServeMux, ReadHeaderTimeout: 5 * time.Second}
			fmt.Fprintln(os.Stderr, "tortied: pprof:", srv.ListenAndServe())
		}()
	}
	if err := run(*cfgPath); err != nil {
		fmt.Fprintln(os.Stderr, "tortied:", err)
		os.Exit(1)
	}
}

func newLogger(level string) (*zap.Logger, error) {
	zc := zap.NewProductionConfig()
	zc.EncoderConfig.EncodeTime = zapcore.ISO8601TimeEncoder
	if level != "" {
		l, err := zapcore.ParseLevel(level)
		if err != nil {
			return nil, err
		}
		zc.Level = zap.NewAtomicLevelAt(l)
	}
	return zc.Build()
}

func run(cfgPath string) error {
	cfg, err := config.Load(cfgPath)
	if err != nil {
		return err
	}
	log, err := newLogger(cfg.LogLevel)
	if err != nil {
		return err
	}
	defer log.Sync()
	for _, w := range cfg.Warnings {
		log.Warn(w)
	}
	if cfg.Pin != nil {
		if err := cpuset.Pin(*cfg.Pin); err != nil {
			return err
		}
		log.Info("pinned to CPUs", zap.Stringer("cpus", cfg.Pin))
	}
	if procs := cfg.Threads(); procs > 0 {
		runtime.GOMAXPROCS(procs)
	} else if cfg.RealtimePriority > 0 {
		// Setting it turns off the runtime's own updates of GOMAXPROCS
		// (when the cgroup's CPU limit changes), each of which would stop
		// the world under SCHED_FIFO; see below.
		runtime.GOMAXPROCS(runtime.GOMAXPROCS(0))
	}
	// Real-time last: threads of one real-time priority do not preempt
	// each other, so the runtime must have no more Ps than CPUs to run
	// them on (config checks that), and changing GOMAXPROCS stops the
	// world, which under SCHED_FIFO could wait forever for a thread on
	// a CPU another one spins on.
	if cfg.RealtimePriority > 0 {
		cpus, err := cpuset.Current(0)
		if err != nil {
			return fmt.Errorf("realtimePriority: the CPUs tortied may run on: %w", err)
		}
		if runtime.GOMAXPROCS(0) > cpus.Count() {
			return fmt.Errorf("realtimePriority: %d threads (cpus) but %d CPUs to run them on; real-time threads need a CPU each", runtime.GOMAXPROCS(0), cpus.Count())
		}
		if err := cpuset.Realtime(cfg.RealtimePriority); err != nil {
			return err
		}
		log.Info("threads run real-time (SCHED_FIFO)", zap.Int("priority", cfg.RealtimePriority))
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	n, err := node.New(cfg, log)
	if err != nil {
		return err
	}
	defer n.Close()
	return n.Run(ctx)
}
