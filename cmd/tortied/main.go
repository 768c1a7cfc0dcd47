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
	}
	// Real-time last (cpuset.Realtime says why).
	if cfg.RealtimePriority > 0 {
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
