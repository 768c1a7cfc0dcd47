// Package node assembles one tortie node from its configuration: the FIB,
// the router and its devices (host TUN, underlay sockets), the endpoint
// manager, the datastore and its agent, the control API and the metrics
// server.
//
// Its life has three steps, and nothing crosses them: New constructs and
// configures everything (files, devices and sockets are opened, but no
// goroutine of ours is started, so nothing can be read while it is still
// being set); Run starts the readers, restores the pods, serves the API and
// blocks until its context ends; Close releases what New opened.
package node

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/tortie-net/tortie/agent"
	"github.com/tortie-net/tortie/api"
	"github.com/tortie-net/tortie/apiserver"
	"github.com/tortie-net/tortie/bgp"
	"github.com/tortie-net/tortie/cni"
	"github.com/tortie-net/tortie/config"
	"github.com/tortie-net/tortie/datastore"
	"github.com/tortie-net/tortie/datastore/open"
	"github.com/tortie-net/tortie/encap"
	"github.com/tortie-net/tortie/endpoint"
	"github.com/tortie-net/tortie/fib"
	"github.com/tortie-net/tortie/fwdchain"
	"github.com/tortie-net/tortie/hostif"
	"github.com/tortie-net/tortie/ipam"
	"github.com/tortie-net/tortie/kubeview"
	"github.com/tortie-net/tortie/metrics"
	"github.com/tortie-net/tortie/resources"
	"github.com/tortie-net/tortie/router"
	"github.com/tortie-net/tortie/underlay"
)

// Node is one constructed tortie node. Its methods are not safe for
// concurrent use: New, then Run once, then Close.
type Node struct {
	cfg         *config.Config
	log         *zap.Logger
	underlayMTU int
	podMTU      int
	stateFile   string

	fib        *fib.FIB
	router     *router.Router
	host       *hostif.Host
	receivers  []router.UnderlayReceiver // the router closes them once attached
	attached   bool
	endpoints  *endpoint.Manager
	agent      *agent.Agent // nil without a datastore
	api        *apiserver.Server
	apiLn      net.Listener
	metricsLn  net.Listener           // nil: no metrics server
	collectors []prometheus.Collector // metrics beyond the router's

	tunnel *hostif.Tunnel // nil: pods' superframes to VXLAN nodes are cut here
	// tunnelGSO is how tunnelGSO is used (nil without VXLAN); its status
	// line is set in New and by keepForwardOpen.
	tunnelGSO *tunnelUse

	closers []func() // in the order things were opened
}

// underlayGRO logs whether the underlay interface coalesces what it
// receives, and turns that on if it is off and the config asks
// (underlayGRO); it stays on after tortied exits. A failure is logged,
// as a warning if the config asked: the node forwards either way.
func underlayGRO(cfg *config.Config, log *zap.Logger) {
	name := zap.String("interface", cfg.Interface)
	on, err := underlay.InterfaceGRO(cfg.Interface)
	switch {
	case err != nil && cfg.UnderlayGRO:
		log.Warn("underlay GRO unknown, so not turned on", name, zap.Error(err))
	case err != nil:
		log.Info("underlay GRO unknown", name, zap.Error(err))
	case on || !cfg.UnderlayGRO:
		log.Info("underlay GRO", name, zap.Bool("on", on))
	default:
		if err := underlay.SetInterfaceGRO(cfg.Interface, true); err != nil {
			log.Warn("underlay GRO is off and could not be turned on: TCP from other nodes reaches tortie a segment at a time", name, zap.Error(err))
			return
		}
		if on, err := underlay.InterfaceGRO(cfg.Interface); err != nil || !on {
			log.Warn("underlay GRO still off after turning it on: TCP from other nodes reaches tortie a segment at a time", name, zap.Error(err))
			return
		}
		log.Info("underlay GRO turned on", name)
	}
}

// tunnelTAPName names the TAP of tunnelGSO after the host interface:
// hostInterface with "-gso", cut to fit a Linux interface name.
func tunnelTAPName(hostInterface string) string {
	return hostInterface[:min(len(hostInterface), unix.IFNAMSIZ-1-len("-gso"))] + "-gso"
}

// The status's words for tunnelGSO.
const (
	tunnelGSOOn       = "on: pods' TCP superframes to VXLAN nodes cut by the kernel; FORWARD chain opened"
	tunnelGSOOff      = "off (tunnelGSO: false)"
	tunnelGSOPaused   = "off for now (looked at again every 10 s): the forward chains may drop it: "
	tunnelGSOChainsAt = "on, but the forward chains may drop it: "
)

// tunnelUse is how tunnelGSO is used: whether it is set explicitly, the
// TAP's name, and what the status says.
type tunnelUse struct {
	name     string
	explicit bool // tunnelGSO: true, used whatever the forward chains
	state    atomic.Pointer[string]
}

func (u *tunnelUse) say(s string) { u.state.Store(&s) }

// check opens the FORWARD chain to the tunnel, says so in the status,
// and returns whether the tunnel is to be used, whether the chain
// changed, and what was wrong.
func (u *tunnelUse) check() (use, changed bool, err error) {
	changed, err = fwdchain.Open(u.name)
	switch {
	case err == nil:
		u.say(tunnelGSOOn)
	case u.explicit:
		u.say(tunnelGSOChainsAt + err.Error())
	default:
		u.say(tunnelGSOPaused + err.Error())
	}
	return err == nil || u.explicit, changed, err
}

// openTunnel opens the TAP of tunnelGSO and the FORWARD chain to what
// enters the kernel through it. It returns nil where the kernel refuses
// the offload; else the TAP and whether to use it now: unless tunnelGSO
// is set explicitly, not while a forward chain may drop the tunnel's
// packets (keepForwardOpen looks again).
func openTunnel(u *tunnelUse, log *zap.Logger) (*hostif.Tunnel, bool) {
	iface := zap.String("interface", u.name)
	t, err := hostif.CreateTunnel(u.name)
	if err != nil {
		log.Warn("UDP tunnel GSO unavailable: pods' TCP to VXLAN nodes is cut into datagrams here", iface, zap.Error(err))
		u.say("off: the kernel refused it: " + err.Error())
		return nil, false
	}
	use, _ := u.look(log, true, false)
	return t, use
}

// look opens the forward chains to the tunnel (check) and logs what
// differs from the look before, whose failing says whether it failed
// (first: there was none). It returns whether to use the tunnel and
// whether this look failed.
func (u *tunnelUse) look(log *zap.Logger, first, wasFailing bool) (use, failing bool) {
	use, changed, err := u.check()
	iface := zap.String("interface", u.name)
	switch {
	case err != nil && wasFailing:
	case err != nil && use:
		log.Warn("UDP tunnel GSO: the node's forward chains may drop what the kernel forwards for it (pods' bulk TCP to VXLAN nodes)", iface, zap.Error(err))
	case err != nil:
		log.Warn("UDP tunnel GSO off for now: the node's forward chains may drop what the kernel would forward for it, so pods' TCP to VXLAN nodes is cut into datagrams here; looked at again every 10 s (tunnelGSO: true uses it anyway)", iface, zap.Error(err))
	case first:
		log.Info("UDP tunnel GSO: pods' TCP to VXLAN nodes leaves whole for the kernel to cut", iface)
	case wasFailing:
		log.Info("UDP tunnel GSO: the forward chains are open to it again; pods' TCP to VXLAN nodes leaves whole for the kernel to cut", iface)
	case changed:
		log.Info("UDP tunnel GSO: FORWARD rule put back at the head of the chain", iface)
	}
	return use, err != nil
}

// forwardReassert is how often tortied looks at the forward chains again:
// it puts its FORWARD rule back at the head of the chain if another
// program removed or passed it (a firewall reloaded, Docker restarted),
// and, unless tunnelGSO is set explicitly, stops or resumes using the
// tunnel as a chain it cannot open appears or goes.
const forwardReassert = 10 * time.Second

// keepForwardOpen looks at the forward chains every forwardReassert until
// ctx ends, telling r whether to use the tunnel, logging each change.
func keepForwardOpen(ctx context.Context, u *tunnelUse, r *router.Router, log *zap.Logger) {
	failing := *u.state.Load() != tunnelGSOOn // what the last look found
	t := time.NewTicker(forwardReassert)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		var use bool
		use, failing = u.look(log, false, failing)
		r.UseTunnel(use)
	}
}

// New constructs the node described by cfg. It opens the devices, sockets
// and the datastore, but starts no goroutine of its own.
func New(cfg *config.Config, log *zap.Logger) (n *Node, err error) {
	n = &Node{cfg: cfg, log: log}
	defer func() {
		if err != nil {
			n.Close()
			n = nil
		}
	}()
	if n.underlayMTU = cfg.UnderlayMTU; n.underlayMTU == 0 {
		if n.underlayMTU, err = underlay.InterfaceMTU(cfg.Interface); err != nil {
			return nil, err
		}
	}
	n.podMTU = cfg.PodMTU(n.underlayMTU)
	underlayGRO(cfg, log)
	n.stateFile = filepath.Join(cfg.StateDir, "endpoints.json")
	withStore := cfg.Datastore != nil

	if n.fib, err = staticFIB(cfg); err != nil {
		return nil, err
	}
	sender, err := underlay.NewSender(cfg.Interface)
	if err != nil {
		return nil, err
	}
	n.closers = append(n.closers, func() { sender.Close() })
	// Each router worker gets its own writers on the shared sockets.
	ul := router.Underlay{Sender: func() router.UnderlaySender { return sender.NewWriter() }}
	if withStore || cfg.Mode == fib.ModeVXLAN {
		// VXLAN leaves through UDP sockets with segmentation offload. With a
		// datastore every pool chooses its encapsulation: be ready for both.
		g, err := underlay.NewGSOSender(cfg.Addr.Addr(), 8, cfg.Interface)
		if err != nil {
			return nil, err
		}
		n.closers = append(n.closers, func() { g.Close() })
		ul.GSO = func() router.GSOSender { return g.NewWriter() }
		// One socket per thread, each read by a router worker of its own.
		rxs, err := underlay.ListenVXLANQueues(cfg.Addr.Addr(), vxlanQueues(cfg))
		if err != nil {
			return nil, err
		}
		for _, rx := range rxs {
			n.receivers = append(n.receivers, rx)
		}
	}
	rcfg := router.Config{
		NodeAddr:    cfg.Addr.Addr().As4(),
		VTEPMAC:     cfg.VTEPMAC,
		VNI:         encap.VNI,
		UnderlayMTU: n.underlayMTU,
		Logger:      log.Named("router"),
	}
	if cfg.Loops() {
		// One per thread, each reading its inputs in turn; as many as
		// the VXLAN sockets at most, so a large machine's loops still
		// share inputs (each loop's wake-up costs the same however many
		// it serves).
		rcfg.InputLoops = min(cfg.RunThreads(), maxVXLANQueues)
		rcfg.BusyPoll = cfg.BusyPoll
	}
	if cfg.TunnelAddr.IsValid() {
		rcfg.TunnelAddr = cfg.TunnelAddr.As4()
	}
	useTunnel := false
	if vxlan := withStore || cfg.Mode == fib.ModeVXLAN; vxlan {
		n.tunnelGSO = &tunnelUse{name: tunnelTAPName(cfg.HostInterface), explicit: cfg.TunnelGSO != nil}
		n.tunnelGSO.say(tunnelGSOOff)
	}
	if n.tunnelGSO != nil && (cfg.TunnelGSO == nil || *cfg.TunnelGSO) {
		// Opened before the router, so that it closes after the router
		// has stopped writing to it.
		n.tunnel, useTunnel = openTunnel(n.tunnelGSO, log)
		if n.tunnel != nil {
			n.closers = append(n.closers, func() {
				n.tunnel.Close()
				if err := fwdchain.Close(); err != nil {
					log.Warn("removing the FORWARD rule of UDP tunnel GSO", zap.Error(err))
				}
			})
		}
	}
	if n.tunnel == nil {
		// A rule a previous run left, if any.
		if err := fwdchain.Close(); err != nil {
			log.Debug("removing a FORWARD rule of UDP tunnel GSO", zap.Error(err))
		}
	}
	n.router = router.New(rcfg, n.fib, ul)
	n.router.UseTunnel(useTunnel)
	n.closers = append(n.closers, func() { n.router.Close() })
	if withStore || cfg.Mode == fib.ModeIPIP {
		rx, err := underlay.ListenIPIP()
		if err != nil {
			return nil, err
		}
		n.receivers = append(n.receivers, rx)
	}

	var cluster []netip.Prefix
	if !withStore {
		cluster = cfg.Cluster
	}
	if n.host, err = hostif.Create(hostif.Config{Name: cfg.HostInterface, MTU: n.podMTU, TunnelAddr: cfg.TunnelAddr,
		ClusterCIDRs: cluster, Underlay: cfg.Interface}); err != nil {
		return nil, err
	}
	if !withStore {
		var native []hostif.NativeRoute
		for _, p := range cfg.Peers {
			if p.Mode == fib.ModeNative {
				native = append(native, hostif.NativeRoute{Prefix: p.PodCIDR, Via: p.Addr})
			}
		}
		if err := n.host.SyncNativeRoutes(native); err != nil {
			return nil, err
		}
	}

	n.endpoints = endpoint.New(log.Named("endpoint"), n.router, n.podMTU, n.stateFile)
	n.endpoints.Offload = cfg.Offload()
	n.endpoints.Queues = cfg.Queues()
	n.api = &apiserver.Server{Endpoints: n.endpoints, Router: n.router, Status: n.status}
	if withStore {
		store, closeStore, err := openStore(cfg, log)
		if err != nil {
			return nil, err
		}
		n.closers = append(n.closers, closeStore)
		invalid := resources.NewInvalid(log.Named("datastore"))
		ipm := &ipam.IPAM{S: store, Invalid: invalid}
		n.agent = &agent.Agent{Node: cfg.NodeName, Labels: cfg.Labels, Addr: cfg.Addr, VTEPMAC: cfg.VTEPMAC,
			UnderlayMTU: n.underlayMTU, Store: store, IPAM: ipm, FIB: n.fib, Router: n.router, Host: n.host,
			Endpoints: n.endpoints, Log: log.Named("agent"), Invalid: invalid, ServiceNets: cfg.ServiceNets}
		if k := cfg.Kubernetes; k != nil {
			rc, err := kubeview.RESTConfig(k.Kubeconfig)
			if err != nil {
				return nil, err
			}
			rc.UserAgent = "tortied/" + cfg.NodeName
			clients, err := kubeview.NewClients(rc)
			if err != nil {
				return nil, err
			}
			// Services and EndpointSlices are followed only for what BGP
			// advertises: without it nothing reads them, and they are the
			// objects of a cluster that change most.
			bgp := cfg.Datastore.RouteSource == config.RouteSourceBGP
			if n.agent.Kube, err = kubeview.New(clients, log.Named("kube"), kubeview.Options{Services: bgp}); err != nil {
				return nil, err
			}
		}
		n.api.Invalid = n.agent.InvalidRecords
		n.collectors = append(n.collectors, metrics.InvalidRecords(invalid.Counts), metrics.PolicyCompilations(n.agent.PolicyCounts))
		if cfg.Datastore.RouteSource == config.RouteSourceBGP {
			n.agent.BGP = &agent.BGPOptions{StateFile: filepath.Join(cfg.StateDir, "bgp-routes.json"),
				DefaultMaxPrefixes: cfg.Datastore.BGPMaxPrefixes, Interface: cfg.Interface}
			n.api.BGP = n.agent.BGPStatus
		}
		n.api.CNI = &cni.Service{Node: cfg.NodeName, NodeLabels: cfg.Labels, Endpoints: n.endpoints, IPAM: ipm,
			Router: n.router, Ready: n.agent.Ready, Routed: n.agent.WaitRouted,
			PolicyReady: n.agent.WaitPolicy, Log: log.Named("cni")}
		n.api.Resources = &resources.Client{S: store, Invalid: invalid}
		n.api.IPAM = ipm
	}
	if n.apiLn, err = apiserver.Listen(cfg.Socket); err != nil {
		return nil, err
	}
	n.closers = append(n.closers, func() { n.apiLn.Close() })
	if cfg.MetricsAddress != "" {
		if n.metricsLn, err = net.Listen("tcp", cfg.MetricsAddress); err != nil {
			return nil, fmt.Errorf("metrics: %w", err)
		}
		n.closers = append(n.closers, func() { n.metricsLn.Close() })
	}
	return n, nil
}

// staticFIB is a FIB holding the routes of the configuration file.
func staticFIB(cfg *config.Config) (*fib.FIB, error) {
	f := fib.New()
	err := f.Update(func(tx fib.Tx) error {
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
	})
	return f, err
}

// Run starts forwarding, restores the pods of a previous run, follows the
// datastore, serves the API and metrics, and returns when ctx ends. A
// planned stop leaves the pods' persistent TAPs for the next run.
func (n *Node) Run(ctx context.Context) error {
	// Background work ends before Run returns: the FORWARD rule's keeper
	// before Close removes the rule.
	var background sync.WaitGroup
	defer background.Wait()
	bctx, stop := context.WithCancel(ctx)
	defer stop()
	if n.tunnel != nil {
		n.router.AttachTunnel(n.tunnel)
		background.Go(func() { keepForwardOpen(bctx, n.tunnelGSO, n.router, n.log) })
	}
	// The path MTU follows the underlay's at once, rather than after a
	// packet is refused.
	background.Go(func() {
		underlay.WatchMTU(bctx, n.cfg.Interface, n.router.UnderlayMTUChanged, func(err error) {
			n.log.Warn("underlay MTU not watched for now: a change is learnt when a packet is refused", zap.Error(err))
		})
	})
	n.router.AttachHost(n.host)
	for _, rx := range n.receivers {
		n.router.AttachUnderlay(rx)
	}
	n.attached = true
	// fatal carries what ends the node before ctx does: another live node
	// holds its name.
	fatal := make(chan error, 1)
	if n.agent != nil {
		if n.agent.BGP != nil {
			// A planned stop is a graceful restart for our peers: no CEASE.
			defer n.agent.Stop(true)
		}
		// Pods come back first: forwarding must not wait for the datastore.
		n.agent.Restore(ctx, n.stateFile)
		go func() {
			err := n.agent.Start(ctx)
			switch {
			case errors.Is(err, agent.ErrNameHeld):
				fatal <- err
			case err != nil && ctx.Err() == nil:
				n.log.Error("agent", zap.Error(err))
			}
		}()
	} else {
		specs, err := endpoint.LoadState(n.stateFile)
		if err != nil {
			n.log.Warn("endpoint state not trusted", zap.Error(err))
		}
		n.endpoints.Restore(specs)
	}
	apiSrv := apiserver.Serve(ctx, n.apiLn, n.api.Handler())
	defer apiSrv.Close()
	if n.metricsLn != nil {
		var bgpSrc metrics.BGPSource
		if n.api.BGP != nil {
			bgpSrc = func() ([]bgp.PeerStatus, bgp.Counters, bool) {
				st, err := n.api.BGP()
				return st.Peers, st.Counters, err == nil && st.Running
			}
		}
		ms := &http.Server{Handler: metrics.Handler(n.router, n.ready, bgpSrc, n.collectors...), ReadHeaderTimeout: 5 * time.Second}
		go func() {
			if err := ms.Serve(n.metricsLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
				n.log.Error("metrics server", zap.Error(err))
			}
		}()
		defer ms.Close()
	}
	n.logStart()
	var err error
	select {
	case <-ctx.Done():
	case err = <-fatal:
	}
	n.log.Info("shutting down; pod interfaces stay for the next start")
	n.endpoints.Detach()
	return err
}

// Close releases what New opened, newest first. It is safe to call after a
// failed New and after Run.
func (n *Node) Close() {
	if !n.attached {
		for _, rx := range n.receivers {
			rx.Close()
		}
	}
	for i := len(n.closers) - 1; i >= 0; i-- {
		n.closers[i]()
	}
	n.closers = nil
}

// ready says whether the node serves CNI: at once without a datastore,
// after the first full sync with one.
func (n *Node) ready() bool {
	return n.agent == nil || n.agent.Synced()
}

// mode says how the node encapsulates, as the API and the log show it.
func (n *Node) mode() string {
	if n.cfg.Datastore != nil {
		return "per IP pool; routes from " + n.cfg.Datastore.RouteSource
	}
	return n.cfg.Mode.String()
}

func (n *Node) status() api.Status {
	podMTU := n.endpoints.MTU()
	if podMTU <= 0 {
		podMTU = n.podMTU
	}
	return api.Status{Node: n.cfg.NodeName, Address: n.cfg.Addr.String(), Mode: n.mode(), CrossSubnet: n.cfg.CrossSubnet,
		PodMTU: podMTU, PathMTU: n.router.PathMTU(), FIBRoutes: n.fib.Load().Len(), Endpoints: len(n.endpoints.List()),
		VTEPMAC: n.cfg.VTEPMAC.String(), Ready: n.ready(), TunnelGSO: n.tunnelGSOState()}
}

// tunnelGSOState is the status's line for tunnelGSO ("" without VXLAN).
func (n *Node) tunnelGSOState() string {
	if n.tunnelGSO == nil {
		return ""
	}
	if s := n.tunnelGSO.state.Load(); s != nil {
		return *s
	}
	return ""
}

func (n *Node) logStart() {
	store := "none"
	if n.cfg.Datastore != nil {
		store = n.cfg.Datastore.Type
	}
	fields := []zap.Field{zap.String("node", n.cfg.NodeName), zap.Stringer("address", n.cfg.Addr), zap.String("datastore", store)}
	if n.cfg.Datastore != nil {
		// Encapsulation and CrossSubnet are then per IP pool: the static
		// settings say nothing.
		fields = append(fields, zap.String("mode", "per IP pool"), zap.String("routeSource", n.cfg.Datastore.RouteSource))
	} else {
		fields = append(fields, zap.Stringer("mode", n.cfg.Mode), zap.Bool("crossSubnet", n.cfg.CrossSubnet))
	}
	n.log.Info("tortied running", append(fields, zap.Int("underlayMTU", n.underlayMTU), zap.String("socket", n.cfg.Socket),
		zap.Int("routes", n.fib.Load().Len()))...)
}

// openStore connects to the datastore of cfg's type: the Kubernetes API,
// or etcd, after starting the embedded member if one is configured. The
// returned func closes what it opened.
func openStore(cfg *config.Config, log *zap.Logger) (datastore.Store, func(), error) {
	d := cfg.Datastore
	if d.Type == config.DatastoreKubernetes {
		store, err := open.Kubernetes(d.Kubeconfig, "tortied/"+cfg.NodeName)
		if err != nil {
			return nil, nil, err
		}
		kubeconfig := d.Kubeconfig
		if kubeconfig == "" {
			kubeconfig = "in-cluster"
		}
		log.Info("datastore: Kubernetes API", zap.String("type", d.Type), zap.String("kubeconfig", kubeconfig))
		return store, func() { store.Close() }, nil
	}
	endpoints := d.EtcdEndpoints
	var member *datastore.Embedded
	if e := d.Embedded; e != nil {
		var err error
		if member, err = datastore.StartEmbedded(datastore.EmbeddedConfig{
			Dir: e.DataDir, Name: cfg.NodeName, ClientURL: e.ClientURL, PeerURL: e.PeerURL,
			CertFile: e.CertFile, KeyFile: e.KeyFile, CAFile: e.TrustedCAFile,
			CompactionMode: e.AutoCompactionMode, CompactionRetention: e.AutoCompactionRetention,
			DefragInterval: cfg.DefragInterval, QuotaBytes: e.QuotaBackendBytes, Logger: log.Named("etcd"),
		}); err != nil {
			return nil, nil, err
		}
		log.Info("embedded etcd running", zap.String("clientURL", e.ClientURL))
		if len(endpoints) == 0 {
			endpoints = []string{e.ClientURL}
		}
	}
	store, err := datastore.DialEtcd(datastore.EtcdConfig{Endpoints: endpoints,
		TLS:    datastore.ClientTLS{CAFile: d.EtcdCACertFile, CertFile: d.EtcdCertFile, KeyFile: d.EtcdKeyFile},
		Logger: log.Named("etcd").WithOptions(zap.IncreaseLevel(zap.WarnLevel))})
	if err != nil {
		if member != nil {
			member.Close()
		}
		return nil, nil, err
	}
	log.Info("datastore: etcd", zap.String("type", d.Type), zap.Strings("endpoints", endpoints))
	return store, func() {
		store.Close()
		if member != nil {
			member.Close()
		}
	}, nil
}

// maxVXLANQueues bounds the VXLAN sockets a node opens.
const maxVXLANQueues = 8

// vxlanQueues is how many VXLAN sockets share the node's port 4789: one
// for each thread tortied runs Go code on.
func vxlanQueues(cfg *config.Config) int {
	return min(cfg.RunThreads(), maxVXLANQueues)
}
