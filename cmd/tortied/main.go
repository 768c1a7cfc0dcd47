// Command tortied is tortie's node daemon: it forwards pod traffic in
// userspace (pod TAPs, host TUN, IPIP/VXLAN/native underlay), serves the
// control API on a unix socket and Prometheus metrics over HTTP.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	_ "net/http/pprof" // served only with --pprof
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"syscall"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/tortie-net/tortie/agent"
	"github.com/tortie-net/tortie/api"
	"github.com/tortie-net/tortie/bgp"
	"github.com/tortie-net/tortie/cni"
	"github.com/tortie-net/tortie/config"
	"github.com/tortie-net/tortie/cpuset"
	"github.com/tortie-net/tortie/datastore"
	"github.com/tortie-net/tortie/encap"
	"github.com/tortie-net/tortie/endpoint"
	"github.com/tortie-net/tortie/fib"
	"github.com/tortie-net/tortie/hostif"
	"github.com/tortie-net/tortie/ipam"
	"github.com/tortie-net/tortie/metrics"
	"github.com/tortie-net/tortie/resources"
	"github.com/tortie-net/tortie/router"
	"github.com/tortie-net/tortie/underlay"
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
	procs := cfg.CPUs
	if cfg.Pin != nil {
		if err := cpuset.Pin(*cfg.Pin); err != nil {
			return err
		}
		if procs == 0 {
			procs = cfg.Pin.Count()
		}
		log.Info("pinned to CPUs", zap.Stringer("cpus", cfg.Pin))
	}
	if procs > 0 {
		runtime.GOMAXPROCS(procs)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	ulMTU := cfg.UnderlayMTU
	if ulMTU == 0 {
		if ulMTU, err = underlay.InterfaceMTU(cfg.Interface); err != nil {
			return err
		}
	}
	withStore := cfg.Datastore != nil
	podMTU := cfg.PodMTU(ulMTU)
	var cluster []netip.Prefix
	if !withStore {
		cluster = cfg.Cluster
	}

	f := fib.New()
	if err := f.Update(func(tx fib.Tx) error {
		var host, static []fib.Route
		for _, r := range cfg.Routes() {
			if r.Source == fib.SourceHost {
				host = append(host, r)
			} else {
				static = append(static, r)
			}
		}
		if err := tx.ReplaceSource(fib.SourceHost, host); err != nil {
			return err
		}
		return tx.ReplaceSource(fib.SourceStatic, static)
	}); err != nil {
		return err
	}

	sender, err := underlay.NewSender(cfg.Interface)
	if err != nil {
		return err
	}
	defer sender.Close()
	// Each router worker gets its own writers on the shared sockets.
	ul := router.Underlay{Sender: func() router.UnderlaySender { return sender.NewWriter() }}
	if withStore || cfg.Mode == fib.ModeVXLAN {
		// VXLAN leaves through UDP sockets with segmentation offload.
		g, err := underlay.NewGSOSender(cfg.Addr.Addr(), 8, cfg.Interface)
		if err != nil {
			return err
		}
		defer g.Close()
		ul.GSO = func() router.GSOSender { return g.NewWriter() }
	}
	r := router.New(router.Config{
		NodeAddr:    cfg.Addr.Addr().As4(),
		TunnelAddr:  tunnelAddr(cfg),
		VTEPMAC:     cfg.VTEPMAC,
		VNI:         encap.VNI,
		UnderlayMTU: ulMTU,
		Logger:      log.Named("router"),
	}, f, ul)
	defer r.Close()

	host, err := hostif.Create(hostif.Config{Name: cfg.HostInterface, MTU: podMTU, TunnelAddr: cfg.TunnelAddr,
		ClusterCIDRs: cluster, Underlay: cfg.Interface})
	if err != nil {
		return err
	}
	r.AttachHost(host)
	if !withStore {
		var native []hostif.NativeRoute
		for _, p := range cfg.Peers {
			if p.Mode == fib.ModeNative {
				native = append(native, hostif.NativeRoute{Prefix: p.PodCIDR, Via: p.Addr})
			}
		}
		if err := host.SyncNativeRoutes(native); err != nil {
			return err
		}
	}
	// With a datastore every pool chooses its encapsulation: listen for both.
	if withStore || cfg.Mode == fib.ModeVXLAN {
		rx, err := underlay.ListenVXLAN(cfg.Addr.Addr())
		if err != nil {
			return err
		}
		r.AttachUnderlay(rx)
	}
	if withStore || cfg.Mode == fib.ModeIPIP {
		rx, err := underlay.ListenIPIP()
		if err != nil {
			return err
		}
		r.AttachUnderlay(rx)
	}

	stateFile := filepath.Join(cfg.StateDir, "endpoints.json")
	eps := endpoint.New(log.Named("endpoint"), r, podMTU, stateFile)
	eps.Offload = cfg.Offload()
	srv := &api.Server{Endpoints: eps, Router: r}
	ready := func() bool { return true }
	if withStore {
		store, stop, err := openStore(ctx, cfg, log)
		if err != nil {
			return err
		}
		defer stop()
		ipm := &ipam.IPAM{S: store}
		ag := &agent.Agent{Node: cfg.NodeName, Labels: cfg.Labels, Addr: cfg.Addr, VTEPMAC: cfg.VTEPMAC, UnderlayMTU: ulMTU,
			Store: store, IPAM: ipm, FIB: f, Router: r, Host: host, Endpoints: eps, Log: log.Named("agent")}
		if cfg.Datastore.RouteSource == config.RouteSourceBGP {
			ag.BGP = &agent.BGPOptions{StateFile: filepath.Join(cfg.StateDir, "bgp-routes.json"), DefaultMaxPrefixes: cfg.Datastore.BGPMaxPrefixes}
			srv.BGP = ag.BGPStatus
			// A planned stop is a graceful restart for our peers: no CEASE.
			defer ag.Stop(true)
		}
		// Pods come back first: forwarding must not wait for the datastore.
		ag.Restore(ctx, stateFile)
		go func() {
			if err := ag.Start(ctx); err != nil && ctx.Err() == nil {
				log.Error("agent", zap.Error(err))
			}
		}()
		srv.CNI = &cni.Service{Node: cfg.NodeName, NodeLabels: cfg.Labels, Endpoints: eps, IPAM: ipm, Router: r,
			Ready: ag.Ready, Log: log.Named("cni")}
		srv.Resources = &resources.Client{S: store}
		srv.IPAM = ipm
		ready = ag.Synced
	} else {
		specs, err := endpoint.LoadState(stateFile)
		if err != nil {
			log.Warn("endpoint state not trusted", zap.Error(err))
		}
		eps.Restore(specs)
	}
	srv.Status = func() api.Status {
		mode := cfg.Mode.String()
		if withStore {
			mode = "per IP pool; routes from " + cfg.Datastore.RouteSource
		}
		return api.Status{Node: cfg.NodeName, Address: cfg.Addr.String(), Mode: mode, CrossSubnet: cfg.CrossSubnet,
			PodMTU: podMTUNow(eps, podMTU), PathMTU: r.PathMTU(), FIBRoutes: f.Load().Len(), Endpoints: len(eps.List()),
			VTEPMAC: cfg.VTEPMAC.String(), Ready: ready()}
	}
	apiSrv, err := api.Listen(ctx, cfg.Socket, srv.Handler())
	if err != nil {
		return err
	}
	defer apiSrv.Close()
	if cfg.MetricsAddress != "" {
		l, err := net.Listen("tcp", cfg.MetricsAddress)
		if err != nil {
			return fmt.Errorf("metrics: %w", err)
		}
		var bgpSrc metrics.BGPSource
		if srv.BGP != nil {
			bgpSrc = func() ([]bgp.PeerStatus, bgp.Counters, bool) {
				st, err := srv.BGP()
				return st.Peers, st.Counters, err == nil && st.Running
			}
		}
		ms := &http.Server{Handler: metrics.Handler(r, ready, bgpSrc), ReadHeaderTimeout: 5 * time.Second}
		go func() {
			if err := ms.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error("metrics server", zap.Error(err))
			}
		}()
		defer ms.Close()
	}
	log.Info("tortied running", zap.String("node", cfg.NodeName), zap.Stringer("address", cfg.Addr),
		zap.Bool("datastore", withStore), zap.Stringer("mode", cfg.Mode), zap.Bool("crossSubnet", cfg.CrossSubnet),
		zap.Int("underlayMTU", ulMTU), zap.String("socket", cfg.Socket), zap.Int("routes", f.Load().Len()))
	<-ctx.Done()
	// A planned stop leaves the pods' persistent TAPs in place for the next run.
	log.Info("shutting down; pod interfaces stay for the next start")
	eps.Detach()
	return nil
}

func podMTUNow(eps *endpoint.Manager, fallback int) int {
	if m := eps.MTU(); m > 0 {
		return m
	}
	return fallback
}

// openStore starts the embedded etcd member if configured and connects to
// the datastore.
func openStore(ctx context.Context, cfg *config.Config, log *zap.Logger) (datastore.Store, func(), error) {
	d := cfg.Datastore
	endpoints := d.EtcdEndpoints
	var member *datastore.Embedded
	if e := d.Embedded; e != nil {
		var err error
		if member, err = datastore.StartEmbedded(e.DataDir, cfg.NodeName, e.ClientURL, e.PeerURL); err != nil {
			return nil, nil, err
		}
		log.Info("embedded etcd running", zap.String("clientURL", e.ClientURL))
		if len(endpoints) == 0 {
			endpoints = []string{e.ClientURL}
		}
	}
	store, err := datastore.DialEtcd(datastore.EtcdConfig{Endpoints: endpoints, Logger: log.Named("etcd").WithOptions(zap.IncreaseLevel(zap.WarnLevel))})
	if err != nil {
		if member != nil {
			member.Close()
		}
		return nil, nil, err
	}
	return store, func() {
		store.Close()
		if member != nil {
			member.Close()
		}
	}, nil
}
func tunnelAddr(c *config.Config) [4]byte {
	if c.TunnelAddr.IsValid() {
		return c.TunnelAddr.As4()
	}
	return [4]byte{}
}
