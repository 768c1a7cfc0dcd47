// Package agent is what a tortie node does with a datastore: it registers
// the node, follows pools, nodes and blocks (through dsync), keeps the
// kernel's routes to the host TUN and the pod MTU in line with the pools,
// takes a tunnel address from IPAM when a pool encapsulates, follows the
// network policy resources and workload endpoints and installs their
// compiled policy in the router, advertises over BGP what the node should
// (its blocks, the Service ranges, and the addresses of Services with local
// endpoints), and restores the node's pods after a restart, releasing the
// addresses of pods whose namespace is gone.
package agent

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/tortie-net/tortie/api"
	"github.com/tortie-net/tortie/bgp"
	"github.com/tortie-net/tortie/cni"
	"github.com/tortie-net/tortie/datastore"
	"github.com/tortie-net/tortie/dsync"
	"github.com/tortie-net/tortie/endpoint"
	"github.com/tortie-net/tortie/fib"
	"github.com/tortie-net/tortie/header"
	"github.com/tortie-net/tortie/hostif"
	"github.com/tortie-net/tortie/ipam"
	"github.com/tortie-net/tortie/kubeview"
	"github.com/tortie-net/tortie/natout"
	"github.com/tortie-net/tortie/peering"
	"github.com/tortie-net/tortie/resources"
	"github.com/tortie-net/tortie/router"
)

// Agent ties the datastore to the node's dataplane.
type Agent struct {
	Node        string
	Labels      map[string]string
	Addr        netip.Prefix
	VTEPMAC     header.MAC
	UnderlayMTU int
	Store       datastore.Store
	IPAM        *ipam.IPAM
	FIB         *fib.FIB
	Router      *router.Router
	Host        *hostif.Host
	Endpoints   *endpoint.Manager
	Log         *zap.Logger
	// Invalid collects the stored records that do not decode (shared with
	// IPAM and the API); nil: not collected.
	Invalid *resources.Invalid

	// ServiceNets are the Service cluster IP ranges the node's kernel
	// translates (router.Policy.ServiceNets); none: egress rules see
	// cluster IPs.
	ServiceNets []netip.Prefix

	// HeartbeatEvery is how often the node rewrites the claim on its name
	// (0: DefaultHeartbeatEvery); see claim.go.
	HeartbeatEvery time.Duration

	// Kube, when set, makes the Kubernetes API the source of pods' and
	// namespaces' labels, service accounts and NetworkPolicies (runPolicy
	// starts it); without it they come from the datastore's records. With
	// BGP and a View that follows Services, the node also advertises the
	// addresses of single Services (runServices).
	Kube *kubeview.View

	// BGP makes BGP the source of other nodes' routes (a speaker is
	// started after the first full sync); otherwise they are derived from
	// the datastore.
	BGP *BGPOptions

	// syncer follows the datastore. Start makes it on its own goroutine
	// while Ready and the API read it on others: it is published through
	// the atomic pointer, never as a plain field.
	syncer atomic.Pointer[dsync.Syncer]

	mu     sync.Mutex
	tunnel netip.Addr
	// The encapsulations the node record carries the tunnel address for.
	tunnelIPIP, tunnelVXLAN bool

	// routed is what the kernel routes to the host TUN since the last
	// successful sync; routedChanged fires when it changes.
	routedMu      sync.Mutex
	routed        []netip.Prefix
	routedChanged broadcast

	// natRules and natAt are the natOutgoing ruleset last applied and
	// when; only the sync goroutine (onSync) touches them.
	natRules string
	natAt    time.Time

	// pol is the policy loop's state (the Set installed in the router).
	pol policyState

	bgpMu    sync.Mutex
	speaker  *bgp.Speaker
	bgpLocal peering.Local
	// What the speaker advertises is the plan's prefixes (planAdvertise)
	// and the addresses of single Services (peering.ServiceRoutes of
	// svcRanges and kubeServices, last svcRoutes), which change with the
	// Kubernetes API rather than the datastore; svcDirty says they are
	// to be computed again.
	planAdvertise []netip.Prefix
	svcRanges     resources.ServiceRanges
	kubeServices  *kubeview.Services
	svcRoutes     []netip.Prefix
	svcDirty      bool
	// bgpWarned are the plan's warnings last logged: each is logged when
	// it appears, not at every sync.
	bgpWarned map[string]bool
	kernelMu  sync.Mutex
}

// BGPOptions tune the speaker.
type BGPOptions struct {
	StateFile          string // routes kept across a planned restart
	DefaultMaxPrefixes uint32
	// Interface is the underlay interface, through which peers are
	// reached (BGPFilter rules with an interface match against it).
	Interface string
}

// TunnelHandle is the IPAM handle of a node's tunnel address.
func TunnelHandle(node string) string { return ipam.TunnelHandlePrefix + node }

// Start registers the node (retrying until the datastore answers) and
// starts following the datastore. It returns once registered.
func (a *Agent) Start(ctx context.Context) error {
	sy := &dsync.Syncer{Store: a.Store, Me: a.Node, MyAddr: a.Addr, FIB: a.FIB, Log: a.Log.Named("dsync"), OnSync: a.onSync,
		BGP: a.BGP != nil, Invalid: a.Invalid}
	if !a.syncer.CompareAndSwap(nil, sy) {
		return errors.New("agent: started twice")
	}
	backoff := 100 * time.Millisecond
	for {
		err := a.register(ctx)
		if err == nil {
			break
		}
		if errors.Is(err, ErrNameHeld) {
			return err
		}
		a.Log.Warn("node registration failed; retrying", zap.Error(err), zap.Duration("retry", backoff))
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
	go a.beat(ctx)
	go sy.Run(ctx)
	go a.reclaim(ctx, time.Minute)
	if a.Router != nil {
		go a.runPolicy(ctx)
	}
	if a.BGP != nil && a.Kube != nil && a.Kube.FollowsServices() {
		go a.runServices(ctx)
	}
	return nil
}

// reclaim periodically removes empty blocks whose node is no longer
// registered (IPAM leaks after node deletion). Any node may do it: the
// deletes are compare-and-swap, so a block that gains an address meanwhile
// is kept.
func (a *Agent) reclaim(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		s := a.syncer.Load().Snapshot()
		if s == nil {
			continue
		}
		live := map[string]bool{}
		for _, n := range s.Nodes {
			live[n.Metadata.Name] = true
		}
		if _, err := a.IPAM.GC(ctx, a.Node, func(string) bool { return true }, live); err != nil {
			a.Log.Warn("reclaiming blocks of deleted nodes", zap.Error(err))
		}
	}
}

func (a *Agent) register(ctx context.Context) error {
	n := &resources.Node{Metadata: resources.Meta{Name: a.Node, Labels: a.Labels}, Spec: resources.NodeSpec{
		BGP:                &resources.NodeBGPSpec{IPv4Address: a.Addr},
		VXLANTunnelMACAddr: resources.MAC(a.VTEPMAC),
	}}
	a.mu.Lock()
	if a.tunnel.IsValid() && a.tunnelVXLAN {
		n.Spec.IPv4VXLANTunnelAddr = a.tunnel
	}
	if a.tunnel.IsValid() && a.tunnelIPIP {
		n.Spec.BGP.IPv4IPIPTunnelAddr = a.tunnel
	}
	a.mu.Unlock()
	// What an operator set on the node (labels such as route-reflector,
	// an AS number, a route-reflector cluster ID) survives re-registration;
	// labels from the config file win over stored ones of the same key.
	rc := resources.Client{S: a.Store, Invalid: a.Invalid}
	nodes, err := rc.Nodes(ctx)
	if err != nil {
		return err
	}
	for _, old := range nodes {
		if old.Metadata.Name != a.Node {
			continue
		}
		labels := map[string]string{}
		for k, v := range old.Metadata.Labels {
			labels[k] = v
		}
		for k, v := range a.Labels {
			labels[k] = v
		}
		n.Metadata.Labels = labels
		n.Metadata.Annotations = old.Metadata.Annotations
		if old.Spec.BGP != nil {
			n.Spec.BGP.ASNumber = old.Spec.BGP.ASNumber
			n.Spec.BGP.RouteReflectorClusterID = old.Spec.BGP.RouteReflectorClusterID
			n.Spec.BGP.IPv6Address = old.Spec.BGP.IPv6Address
			if held := old.Spec.BGP.IPv4Address; held.IsValid() && held != a.Addr {
				if err := a.claimFree(ctx, held); err != nil {
					return err
				}
			}
		}
		// Fields tortie keeps without acting on them (Calico's IPv6
		// tunnel, WireGuard, addresses, status) stay as they were set.
		o := old.Spec
		n.Spec.IPv6VXLANTunnelAddr, n.Spec.VXLANTunnelMACAddrV6 = o.IPv6VXLANTunnelAddr, o.VXLANTunnelMACAddrV6
		n.Spec.OrchRefs, n.Spec.Wireguard, n.Spec.Addresses, n.Spec.Interfaces = o.OrchRefs, o.Wireguard, o.Addresses, o.Interfaces
		n.Status = old.Status
	}
	return rc.PutNode(ctx, n)
}

// Synced says whether the first full sync with the datastore is done. It
// is safe for concurrent use, before, during and after Start.
func (a *Agent) Synced() bool {
	sy := a.syncer.Load()
	return sy != nil && sy.Ready()
}

// Ready says whether CNI ADD can be served: synced, and the store answers.
// It is safe for concurrent use, before, during and after Start.
func (a *Agent) Ready(ctx context.Context) error {
	if !a.Synced() {
		return errors.New("the datastore has not been synced yet")
	}
	// The store bounds the call with its own timeout.
	if _, err := a.Store.Get(ctx, resources.Prefix+"nodes/"+a.Node); err != nil {
		return fmt.Errorf("the datastore does not answer (no etcd quorum, or etcd out of reach): %w", err)
	}
	return nil
}

// onSync applies a snapshot to the kernel side of the node.
func (a *Agent) onSync(s *dsync.Snapshot) {
	var cluster, nat []netip.Prefix
	for _, p := range s.Pools {
		cluster = append(cluster, p.Prefix())
		if p.Spec.NATOutgoing {
			nat = append(nat, p.Prefix())
		}
	}
	a.syncNAT(nat, cluster)
	podMTU := a.UnderlayMTU - s.MaxOverhead()
	a.Endpoints.SetMTU(podMTU)
	if err := a.Host.SyncClusterRoutes(cluster, podMTU); err != nil {
		a.Log.Warn("kernel routes to the host TUN", zap.Error(err))
	} else {
		a.setRouted(cluster)
	}
	a.syncNativeRoutes()
	if a.BGP != nil {
		a.syncBGP(s)
	}
	labels := a.Labels
	if me := s.Node(a.Node); me != nil {
		labels = me.Metadata.Labels
	}
	ipip, vxlan, pools := TunnelNeeds(s.Pools, labels)
	a.ensureTunnelAddr(ipip, vxlan, pools, labels)
}

// natReassert is how often the natOutgoing rules are written again although
// the pools did not change, in case something flushed them.
const natReassert = time.Minute

// syncNAT writes the natOutgoing rules when they change. Snapshots follow
// every IPAM block write, so a burst of pods would otherwise run nft for
// each of them.
func (a *Agent) syncNAT(nat, cluster []netip.Prefix) {
	rules := natout.Ruleset(nat, cluster)
	if rules == a.natRules && time.Since(a.natAt) < natReassert {
		return
	}
	if err := natout.Apply(rules); err != nil {
		a.Log.Warn("natOutgoing rules", zap.Error(err))
		a.natRules = ""
		return
	}
	a.natRules, a.natAt = rules, time.Now()
}

// TunnelNeeds says, as Calico's tunnel address allocator does, which
// tunnel addresses a node with these labels needs: IPIP when an enabled
// pool selecting it and allowing Tunnel addresses has ipipMode other than
// Never, VXLAN likewise for vxlanMode. pools names those pools (the
// address comes from one of them, even one in Manual assignment mode, as
// they are named).
func TunnelNeeds(all []*resources.IPPool, labels map[string]string) (ipip, vxlan bool, pools []string) {
	on := func(m string) bool { return m != "" && m != resources.ModeNever }
	for _, p := range all {
		if p.Spec.Disabled || !p.Selects(labels) || !p.Allows(resources.UseTunnel) {
			continue
		}
		i, v := on(p.Spec.IPIPMode), on(p.Spec.VXLANMode)
		ipip, vxlan = ipip || i, vxlan || v
		if i || v {
			pools = append(pools, p.Metadata.Name)
		}
	}
	return ipip, vxlan, pools
}

func (a *Agent) setRouted(cidrs []netip.Prefix) {
	a.routedMu.Lock()
	a.routed = cidrs
	a.routedMu.Unlock()
	a.routedChanged.fire()
}

// WaitRouted returns once the node's kernel routes addr to the host TUN (a
// synced pool contains it), or an error when ctx ends first. The CNI
// service calls it so that ADD never succeeds before the node can reach
// the new pod.
func (a *Agent) WaitRouted(ctx context.Context, addr netip.Addr) error {
	for {
		changed := a.routedChanged.next()
		a.routedMu.Lock()
		covered := false
		for _, p := range a.routed {
			covered = covered || p.Contains(addr)
		}
		a.routedMu.Unlock()
		if covered {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("no IP pool containing %s is routed to the host interface yet", addr)
		case <-changed:
		}
	}
}

// syncNativeRoutes gives the kernel a route for every natively routed
// remote prefix in the FIB (from the datastore or BGP), so that what tortie
// sends through the raw socket, and what the node itself sends, goes to
// the right neighbour.
func (a *Agent) syncNativeRoutes() {
	a.kernelMu.Lock()
	defer a.kernelMu.Unlock()
	var native []hostif.NativeRoute
	for _, r := range a.FIB.Load().Routes() {
		if (r.Source == fib.SourceDatastore || r.Source == fib.SourceBGP) && r.NextHop.Kind == fib.KindRemote && r.NextHop.Mode == fib.ModeNative {
			native = append(native, hostif.NativeRoute{Prefix: r.Prefix, Via: netip.AddrFrom4(r.NextHop.Node)})
		}
	}
	if err := a.Host.SyncNativeRoutes(native); err != nil {
		a.Log.Warn("kernel routes to natively routed prefixes", zap.Error(err))
	}
}

// syncBGP starts the speaker at the first sync and keeps its sessions and
// advertisements in line with the datastore.
func (a *Agent) syncBGP(s *dsync.Snapshot) {
	plan, err := peering.For(a.Node, s, a.BGP.Interface)
	if err != nil {
		a.Log.Warn("BGP plan", zap.Error(err))
		return
	}
	a.bgpMu.Lock()
	defer a.bgpMu.Unlock()
	warned := make(map[string]bool, len(plan.Warnings))
	for _, w := range plan.Warnings {
		if !a.bgpWarned[w] {
			a.Log.Warn(w)
		}
		warned[w] = true
	}
	a.bgpWarned = warned
	if a.speaker == nil {
		sp, err := bgp.Start(bgp.Config{
			RouterID: a.Addr.Addr(), ASN: plan.Local.ASN, ListenPort: plan.Local.ListenPort, ListenAddr: plan.Local.ListenAddr,
			StateFile: a.BGP.StateFile, DefaultMaxPrefixes: a.BGP.DefaultMaxPrefixes, FIB: a.FIB,
			Resolve: func(p netip.Prefix, nh netip.Addr) (fib.NextHop, bool) {
				return a.syncer.Load().Snapshot().Resolve(a.Addr, p, nh)
			},
			OnChange: a.syncNativeRoutes,
			Log:      a.Log.Named("bgp"),
		})
		if err != nil {
			a.Log.Error("BGP speaker not started", zap.Error(err))
			return
		}
		a.speaker, a.bgpLocal = sp, plan.Local
		a.Log.Info("BGP speaker running", zap.Uint32("asn", plan.Local.ASN), zap.Int("port", plan.Local.ListenPort),
			zap.String("clusterID", plan.Local.ClusterID), zap.Bool("restarting", sp.Restarting()))
	} else if plan.Local.ASN != a.bgpLocal.ASN || plan.Local.ListenPort != a.bgpLocal.ListenPort || plan.Local.ListenAddr != a.bgpLocal.ListenAddr {
		a.Log.Warn("BGP AS number, listen port or bind mode changed: takes effect at the next restart of tortied",
			zap.Uint32("asn", plan.Local.ASN), zap.Int("port", plan.Local.ListenPort), zap.Stringer("listen", plan.Local.ListenAddr))
	}
	a.bgpLocal.ClusterID = plan.Local.ClusterID
	if err := a.speaker.SetPeers(plan.Peers); err != nil {
		a.Log.Warn("BGP peers", zap.Error(err))
	}
	a.speaker.KeepOut(plan.Services)
	if err := a.speaker.SetCommunities(plan.Communities); err != nil {
		a.Log.Warn("BGP communities", zap.Error(err))
	}
	if !reflect.DeepEqual(plan.ServiceRanges, a.svcRanges) {
		a.svcRanges, a.svcDirty = plan.ServiceRanges, true
	}
	a.planAdvertise = plan.Advertise
	a.advertiseLocked()
	a.speaker.Reresolve()
}

// advertiseLocked gives the speaker the plan's prefixes and the
// addresses of single Services, computing these again when their inputs
// changed. The caller holds bgpMu.
func (a *Agent) advertiseLocked() {
	if a.svcDirty {
		routes := peering.ServiceRoutes(a.Node, a.svcRanges, a.kubeServices)
		if !slices.Equal(routes, a.svcRoutes) {
			a.Log.Debug("BGP Service addresses", zap.Stringers("prefixes", routes))
		}
		a.svcRoutes, a.svcDirty = routes, false
	}
	if a.speaker == nil {
		return // the first sync starts it, and advertises these
	}
	if err := a.speaker.Advertise(slices.Concat(a.planAdvertise, a.svcRoutes)); err != nil {
		a.Log.Warn("BGP advertisements", zap.Error(err))
	}
}

// runServices follows the Kubernetes Services and EndpointSlices and keeps
// the addresses of single Services the node advertises in line with them
// (peering.ServiceRoutes): a /32 appears when the node gets a ready
// endpoint of a Service with externalTrafficPolicy Local and goes with the
// last one. Until the first full list it advertises none.
func (a *Agent) runServices(ctx context.Context) {
	a.Kube.Start(ctx)
	for {
		select {
		case <-ctx.Done():
			return
		case <-a.Kube.ServicesChanged():
		}
		// A rollout moves many endpoints at once: one computation for the
		// burst.
		t := time.NewTimer(20 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		svcs := a.Kube.Services()
		a.bgpMu.Lock()
		a.kubeServices, a.svcDirty = svcs, true
		a.advertiseLocked()
		a.bgpMu.Unlock()
	}
}

// BGPStatus reports the speaker for the API.
func (a *Agent) BGPStatus() (api.BGPStatus, error) {
	a.bgpMu.Lock()
	sp, local := a.speaker, a.bgpLocal
	a.bgpMu.Unlock()
	st := api.BGPStatus{Peers: []bgp.PeerStatus{}, Advertised: []string{}}
	if sp == nil {
		return st, nil
	}
	peers, err := sp.Status()
	if err != nil {
		return st, err
	}
	st.Running, st.ASN, st.RouterID, st.ClusterID, st.Restarting = true, local.ASN, a.Addr.Addr().String(), local.ClusterID, sp.Restarting()
	if peers != nil {
		st.Peers = peers
	}
	for _, p := range sp.Advertised() {
		st.Advertised = append(st.Advertised, p.String())
	}
	st.Counters = sp.Counters()
	return st, nil
}

// Stop ends the BGP speaker: planned (a restart) keeps peers' copies of our
// routes through graceful restart; otherwise sessions end with a CEASE.
func (a *Agent) Stop(planned bool) {
	a.bgpMu.Lock()
	sp := a.speaker
	a.speaker = nil
	a.bgpMu.Unlock()
	if sp != nil {
		sp.Stop(planned)
	}
}

// ensureTunnelAddr takes the node's tunnel address from IPAM (as Calico
// does for vxlan.calico and tunl0) when a pool encapsulates, puts it on the
// host TUN, and records it in the node for the encapsulations in use
// (ipv4IPIPTunnelAddr only with an IPIP pool, ipv4VXLANTunnelAddr only
// with a VXLAN pool). An address no longer needed stays on the TUN (a pod
// must not get it while it is there) but leaves the node record.
func (a *Agent) ensureTunnelAddr(ipip, vxlan bool, pools []string, labels map[string]string) {
	a.mu.Lock()
	have, recorded := a.tunnel.IsValid(), a.tunnelIPIP == ipip && a.tunnelVXLAN == vxlan
	a.mu.Unlock()
	if (have || !(ipip || vxlan)) && recorded {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if !have && (ipip || vxlan) {
		addr, err := a.IPAM.Assign(ctx, ipam.Request{Handle: TunnelHandle(a.Node), Node: a.Node, NodeLabels: labels, Pools: pools,
			Use: resources.UseTunnel})
		if err != nil {
			a.Log.Warn("no tunnel address yet", zap.Error(err))
			return
		}
		if err := a.Host.SetTunnelAddr(addr); err != nil {
			a.Log.Warn("tunnel address", zap.Error(err))
			return
		}
		a.Router.SetTunnelAddr(addr.As4())
		_ = a.FIB.Update(func(tx fib.Tx) error {
			return tx.Set(fib.Route{Prefix: netip.PrefixFrom(addr, 32), Source: fib.SourceHost, NextHop: fib.NextHop{Kind: fib.KindHost}})
		})
		a.mu.Lock()
		a.tunnel = addr
		a.mu.Unlock()
		a.Log.Info("tunnel address assigned", zap.Stringer("address", addr), zap.Bool("ipip", ipip), zap.Bool("vxlan", vxlan))
	}
	a.mu.Lock()
	a.tunnelIPIP, a.tunnelVXLAN = ipip, vxlan
	a.mu.Unlock()
	if err := a.register(ctx); err != nil {
		a.Log.Warn("node tunnel address not recorded", zap.Error(err))
		a.mu.Lock()
		a.tunnelIPIP, a.tunnelVXLAN = !ipip, !vxlan // try again at the next sync
		a.mu.Unlock()
	}
}

// InvalidRecords reads every record once, so that kinds the node does not
// follow (IPAM handles and affinities) are checked too, and returns those
// that do not decode.
func (a *Agent) InvalidRecords(ctx context.Context) ([]api.InvalidRecord, error) {
	rc := resources.Client{S: a.Store, Invalid: a.Invalid}
	if _, err := rc.Pools(ctx); err != nil {
		return nil, err
	}
	if _, err := rc.Nodes(ctx); err != nil {
		return nil, err
	}
	if _, err := rc.BGPConfigurations(ctx); err != nil {
		return nil, err
	}
	if _, err := rc.BGPPeers(ctx); err != nil {
		return nil, err
	}
	for _, kind := range []string{resources.KindBGPFilter, resources.KindIPReservation, resources.KindFelixConfiguration, resources.KindClusterInformation} {
		if _, err := rc.List(ctx, kind); err != nil {
			return nil, err
		}
	}
	if _, err := rc.PolicyResourcesAt(ctx); err != nil {
		return nil, err
	}
	if err := a.IPAM.CheckRecords(ctx); err != nil {
		return nil, err
	}
	out := []api.InvalidRecord{}
	for _, r := range a.Invalid.List() {
		out = append(out, api.InvalidRecord{Key: r.Key, Kind: r.Kind, Error: r.Error, Revision: r.Rev})
	}
	return out, nil
}

// Restore re-attaches the endpoints of a previous run from the state file,
// or, if it is corrupt or of another version, from the IPAM handles of this
// node. Pods whose namespace is gone have their addresses released once the
// datastore answers.
func (a *Agent) Restore(ctx context.Context, stateFile string) {
	specs, err := endpoint.LoadState(stateFile)
	if err != nil {
		a.Log.Warn("endpoint state not trusted; rebuilding from the datastore", zap.Error(err))
		specs = a.specsFromIPAM(ctx)
	}
	gone := a.Endpoints.Restore(specs)
	if len(gone) == 0 {
		return
	}
	go func() {
		for _, s := range gone {
			for ctx.Err() == nil {
				err := a.IPAM.Release(ctx, s.Handle)
				if err == nil && s.PodNamespace != "" {
					// Its WorkloadEndpoint would keep the address in
					// policy's view after another pod gets it.
					err = resources.Client{S: a.Store}.DeleteWorkloadEndpoint(ctx, s.PodNamespace, s.Name, s.ContainerID)
				}
				if err == nil {
					a.Log.Info("released the address of a pod that is gone", zap.String("endpoint", s.Name), zap.Stringer("address", s.Address))
					break
				}
				time.Sleep(time.Second)
			}
		}
	}()
}

func (a *Agent) specsFromIPAM(ctx context.Context) []endpoint.Spec {
	for ctx.Err() == nil {
		hs, err := a.IPAM.Handles(ctx)
		if err != nil {
			a.Log.Warn("reading IPAM handles", zap.Error(err))
			time.Sleep(time.Second)
			continue
		}
		var specs []endpoint.Spec
		for _, h := range hs {
			if h.Node != a.Node {
				continue
			}
			if s, ok := cni.SpecFromHandle(h); ok {
				specs = append(specs, s)
			}
		}
		return specs
	}
	return nil
}
