// Package bgp is tortie's BGP speaker: an embedded GoBGP v4 server, and
// the only package that imports GoBGP. It keeps the sessions it is given,
// advertises the prefixes it is given (the node's pod blocks) with the
// node's address as next hop, and turns peers' best paths into FIB routes
// (source BGP) whose next hops a resolver chooses (encapsulation by the
// pool's mode and the CrossSubnet rule).
//
// The best-path watcher only records the latest next hop per prefix and
// wakes one drain goroutine, which applies everything recorded since its
// last pass as one FIB snapshot: a burst of updates coalesces, forwarding
// never waits for BGP, and memory is bounded by the number of prefixes
// (itself bounded by each peer's max-prefix limit), not by the number of
// updates.
//
// Graceful restart (RFC 4724) is on for every session. A planned stop
// closes sessions without a CEASE and saves the installed routes (they are
// also saved every few seconds, so a crash restarts the same way); the next
// start within the restart time sets the Restart State and Forwarding
// State bits, installs the saved routes as stale, and sweeps the ones no
// peer re-announced once every peer has sent End-of-RIB (or the restart
// time is over).
//
// Each peer may have its own route filters (rules that accept or reject
// routes by prefix, the first match deciding) both ways and a next hop
// mode; advertised routes may carry communities by prefix. They change
// without resetting sessions: the routes already exchanged are run through
// them again.
package bgp

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	api "github.com/osrg/gobgp/v4/api"
	"github.com/osrg/gobgp/v4/pkg/apiutil"
	"github.com/osrg/gobgp/v4/pkg/packet/bgp"
	"github.com/osrg/gobgp/v4/pkg/server"
	"go.uber.org/zap"

	wire "github.com/tortie-net/tortie/api"
	"github.com/tortie-net/tortie/fib"
)

// PeerType is how a session came about, in Calico's words.
type PeerType uint8

// Peer types.
const (
	PeerMesh         PeerType = iota // node-to-node mesh
	PeerNodeSpecific                 // a BGPPeer for some nodes
	PeerGlobal                       // a BGPPeer for every node
)

func (t PeerType) String() string {
	return [...]string{"node-to-node mesh", "node specific", "global", "?"}[min(int(t), 3)]
}

// Peer is one session this node keeps.
type Peer struct {
	Address netip.Addr
	ASN     uint32
	Port    int // the peer's BGP port (0: 179)
	Type    PeerType
	Name    string // the peer node's or the BGPPeer's name
	// Password is the TCP MD5 signature key (RFC 2385); "" for none.
	Password string
	// Passive waits for the peer to connect (the mesh's higher address).
	Passive bool
	// RRClient makes the peer our route-reflector client in cluster
	// ClusterID.
	RRClient  bool
	ClusterID string
	Keepalive time.Duration // 0: 30 s (hold time is three times it)
	// RestartTime is the graceful-restart time we ask the peer to keep
	// our routes for (0: 120 s).
	RestartTime time.Duration
	// TTLSecurity > 0 accepts only packets from at most that many hops
	// away (GTSM, RFC 5082).
	TTLSecurity int
	// MaxPrefixes cuts the session when the peer sends more (0: the
	// speaker's default).
	MaxPrefixes uint32
	// AnySource lets the kernel choose the session's source address
	// (Calico's sourceAddress None); otherwise it is the router ID.
	AnySource bool
	// AllowOwnAS accepts routes whose AS path holds our AS number up to
	// that many times (0: none, BGP's loop prevention).
	AllowOwnAS uint8

	// Import and Export filter the routes learnt from and advertised to
	// the peer; NextHop is the next hop of the routes advertised to it.
	// They change without resetting the session.
	Import, Export []Rule
	NextHop        NextHopMode
}

// sameSession reports whether two peer entries need the same session:
// they differ at most in routing policy.
func sameSession(a, b Peer) bool {
	a.Import, a.Export, a.NextHop = nil, nil, NextHopAuto
	b.Import, b.Export, b.NextHop = nil, nil, NextHopAuto
	return reflect.DeepEqual(a, b)
}

// Config sets a speaker up.
type Config struct {
	RouterID   netip.Addr // the node's address; also the next hop we advertise
	ASN        uint32
	ListenPort int        // 0: 179; negative: do not listen
	ListenAddr netip.Addr // invalid: every address
	// StateFile keeps the installed routes across a planned restart
	// ("" = no restart state).
	StateFile string
	// RestartTime bounds how long saved routes stay (0: 120 s).
	RestartTime time.Duration
	// DefaultMaxPrefixes applies to peers without their own limit
	// (0: 20000).
	DefaultMaxPrefixes uint32
	// MaxRoutes bounds the BGP routes put in the FIB (0: 100000); more
	// are counted and left out.
	MaxRoutes int
	FIB       *fib.FIB
	// Resolve chooses the FIB next hop for a prefix learnt via nexthop;
	// false leaves the prefix out (counted) until Reresolve.
	Resolve func(prefix netip.Prefix, nexthop netip.Addr) (fib.NextHop, bool)
	// OnChange runs after each FIB update (kernel routes to follow it).
	OnChange func()
	Log      *zap.Logger
}

// Counters of the route pipeline.
type Counters = wire.BGPCounters

// Speaker is a running BGP speaker.
type Speaker struct {
	cfg Config
	srv *server.BgpServer
	log *zap.Logger

	mu         sync.Mutex
	dirty      map[netip.Prefix]learnt // latest best path; invalid next hop = withdrawn
	reresolve  bool
	sweep      bool
	peers      map[netip.Addr]Peer
	eor        map[netip.Addr]bool
	restarting bool
	keepOut    []netip.Prefix // learnt prefixes inside these stay out of the FIB
	wake       chan struct{}

	advMu sync.Mutex
	adv   map[netip.Prefix]bool

	// polMu serialises policy changes: policy is what GoBGP was last
	// given, comms the communities it was built with.
	polMu  sync.Mutex
	policy *api.SetPoliciesRequest
	comms  []PrefixCommunities

	// Owned by the drain goroutine.
	known     map[netip.Prefix]learnt         // every peer's best path
	installed map[netip.Prefix]installedRoute // what is in the FIB
	perPeer   map[netip.Addr]int              // installed routes per peer
	stale     map[netip.Prefix]bool           // saved routes not yet re-announced

	events, drains, unresolved, overLimit, swept atomic.Uint64
	nInstalled                                   atomic.Int64

	cancel  context.CancelFunc
	done    chan struct{}
	stopped atomic.Bool
}

// learnt is a best path: its next hop and the peer it came from.
type learnt struct{ nh, peer netip.Addr }

// installedRoute is a best path and the FIB next hop it resolved to.
type installedRoute struct {
	learnt
	hop fib.NextHop
}

// savedState is the restart state file.
type savedState struct {
	Version int                         `json:"version"`
	Saved   time.Time                   `json:"saved"`
	Routes  map[netip.Prefix]netip.Addr `json:"routes"`
}

const stateVersion = 1

// Start runs a speaker.
func Start(cfg Config) (*Speaker, error) {
	if !cfg.RouterID.Is4() {
		return nil, errors.New("bgp: the router ID must be an IPv4 address")
	}
	if cfg.ASN == 0 {
		return nil, errors.New("bgp: AS number required")
	}
	if cfg.RestartTime == 0 {
		cfg.RestartTime = 120 * time.Second
	}
	if cfg.DefaultMaxPrefixes == 0 {
		cfg.DefaultMaxPrefixes = 20000
	}
	if cfg.MaxRoutes == 0 {
		cfg.MaxRoutes = 100000
	}
	if cfg.Log == nil {
		cfg.Log = zap.NewNop()
	}
	if cfg.FIB == nil || cfg.Resolve == nil {
		return nil, errors.New("bgp: FIB and Resolve required")
	}
	port := int32(cfg.ListenPort)
	if port == 0 {
		port = 179
	}
	var listen []string
	if cfg.ListenAddr.IsValid() {
		listen = []string{cfg.ListenAddr.String()}
	} else if port > 0 {
		listen = []string{"0.0.0.0"}
	}
	lv := new(slog.LevelVar)
	lv.Set(slog.LevelDebug) // the zap core filters
	srv := server.NewBgpServer(server.LoggerOption(slog.New(&zapHandler{log: cfg.Log.Named("gobgp")}), lv))
	go srv.Serve()
	if err := srv.StartBgp(context.Background(), &api.StartBgpRequest{Global: &api.Global{
		Asn: cfg.ASN, RouterId: cfg.RouterID.String(), ListenPort: port, ListenAddresses: listen,
	}}); err != nil {
		srv.Stop()
		return nil, fmt.Errorf("bgp: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Speaker{cfg: cfg, srv: srv, log: cfg.Log, dirty: map[netip.Prefix]learnt{}, peers: map[netip.Addr]Peer{},
		eor: map[netip.Addr]bool{}, wake: make(chan struct{}, 1), adv: map[netip.Prefix]bool{},
		known: map[netip.Prefix]learnt{}, installed: map[netip.Prefix]installedRoute{}, perPeer: map[netip.Addr]int{},
		stale:  map[netip.Prefix]bool{},
		cancel: cancel, done: make(chan struct{})}
	s.loadState()
	if err := s.assignPolicies(ctx); err != nil {
		cancel()
		_ = srv.StopBgp(context.Background(), &api.StopBgpRequest{})
		srv.Stop()
		return nil, fmt.Errorf("bgp: route policies: %w", err)
	}
	if err := srv.WatchEvent(ctx, server.WatchEventMessageCallbacks{OnBestPath: s.onBest, OnPathEor: s.onEOR},
		server.WatchBestPath(true), server.WatchEor(true)); err != nil {
		cancel()
		_ = srv.StopBgp(context.Background(), &api.StopBgpRequest{})
		srv.Stop()
		return nil, fmt.Errorf("bgp: %w", err)
	}
	go s.drain(ctx)
	if s.restarting {
		go func() {
			select {
			case <-ctx.Done():
			case <-time.After(cfg.RestartTime):
				s.requestSweep("restart time over")
			}
		}()
	}
	return s, nil
}

// Restarting reports whether this start resumed a planned restart (and
// still waits for peers' End-of-RIB).
func (s *Speaker) Restarting() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.restarting
}

// loadState installs the routes a planned stop saved, as stale, and puts
// the speaker in restarting mode. A missing, old or corrupt file means a
// fresh start.
func (s *Speaker) loadState() {
	if s.cfg.StateFile == "" {
		return
	}
	b, err := os.ReadFile(s.cfg.StateFile)
	_ = os.Remove(s.cfg.StateFile) // used once
	if err != nil {
		return
	}
	var st savedState
	if err := json.Unmarshal(b, &st); err != nil || st.Version != stateVersion {
		s.log.Warn("BGP restart state not trusted; starting fresh", zap.Error(err))
		return
	}
	if age := time.Since(st.Saved); age < 0 || age > s.cfg.RestartTime {
		s.log.Info("BGP restart state too old; starting fresh", zap.Duration("age", age))
		return
	}
	s.restarting = true
	for p, nh := range st.Routes {
		if !p.Addr().Is4() || !nh.Is4() || len(s.stale) >= s.cfg.MaxRoutes {
			continue
		}
		s.stale[p] = true
		s.known[p] = learnt{nh: nh}
	}
	s.apply(map[netip.Prefix]learnt{}, true)
	s.log.Info("graceful restart: kept routes until peers re-announce them", zap.Int("routes", len(s.installed)))
}

func (s *Speaker) saveState() error {
	if s.cfg.StateFile == "" {
		return nil
	}
	st := savedState{Version: stateVersion, Saved: time.Now(), Routes: map[netip.Prefix]netip.Addr{}}
	// Called from the drain goroutine, or after it stopped: installed is
	// ours to read.
	for p, l := range s.installed {
		st.Routes[p] = l.nh
	}
	b, err := json.Marshal(st)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(s.cfg.StateFile), 0o700); err != nil {
		return err
	}
	tmp := s.cfg.StateFile + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, s.cfg.StateFile)
}

// Stop ends the speaker. A planned stop (a restart) closes every session
// that negotiated graceful restart without a NOTIFICATION, so peers keep
// our routes for the restart time, and saves the installed routes for the
// next start; otherwise sessions end with a CEASE.
func (s *Speaker) Stop(planned bool) {
	if s.stopped.Swap(true) {
		return
	}
	s.cancel()
	<-s.done
	if planned {
		if err := s.saveState(); err != nil {
			s.log.Warn("BGP restart state not saved", zap.Error(err))
		}
	} else if s.cfg.StateFile != "" {
		_ = os.Remove(s.cfg.StateFile) // sessions end with a CEASE: not a restart
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.srv.StopBgp(ctx, &api.StopBgpRequest{AllowGracefulRestart: planned}); err != nil {
		s.log.Warn("stopping BGP", zap.Error(err))
	}
}

// onBest runs on GoBGP's watcher goroutine: record and wake, nothing more.
func (s *Speaker) onBest(paths []*apiutil.Path, _ time.Time) {
	s.mu.Lock()
	for _, p := range paths {
		pfx, ok := prefixOf(p)
		if !ok {
			continue
		}
		var nh netip.Addr
		if !p.Withdrawal && fromPeer(p) {
			nh = nextHop(p)
		}
		s.dirty[pfx] = learnt{nh: nh, peer: p.PeerAddress}
	}
	s.mu.Unlock()
	s.events.Add(1)
	s.kick()
}

func (s *Speaker) kick() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func (s *Speaker) onEOR(p *apiutil.Path, _ time.Time) {
	s.mu.Lock()
	s.eor[p.PeerAddress] = true
	all := s.restarting
	for a := range s.peers {
		all = all && s.eor[a]
	}
	s.mu.Unlock()
	if all {
		s.requestSweep("End-of-RIB from every peer")
	}
}

func (s *Speaker) requestSweep(why string) {
	s.mu.Lock()
	if !s.restarting {
		s.mu.Unlock()
		return
	}
	s.restarting, s.sweep = false, true
	s.mu.Unlock()
	s.log.Info("graceful restart done; sweeping stale routes", zap.String("because", why))
	s.kick()
}

func prefixOf(p *apiutil.Path) (netip.Prefix, bool) {
	if p.Family != bgp.RF_IPv4_UC {
		return netip.Prefix{}, false
	}
	n, ok := p.Nlri.(*bgp.IPAddrPrefix)
	if !ok || !n.Prefix.Addr().Is4() {
		return netip.Prefix{}, false
	}
	return n.Prefix.Masked(), true
}

// fromPeer tells a peer's path from one we originated.
func fromPeer(p *apiutil.Path) bool {
	return p.PeerAddress.IsValid() && !p.PeerAddress.IsUnspecified()
}

func nextHop(p *apiutil.Path) netip.Addr {
	for _, a := range p.Attrs {
		switch a := a.(type) {
		case *bgp.PathAttributeNextHop:
			return a.Value
		case *bgp.PathAttributeMpReachNLRI:
			return a.Nexthop
		}
	}
	return netip.Addr{}
}

func (s *Speaker) drain(ctx context.Context) {
	defer close(s.done)
	// The installed routes are also saved every few seconds (when they
	// changed, or to keep the file fresh), so that a crash comes back as a
	// graceful restart too.
	tick := time.NewTicker(2 * time.Second)
	defer tick.Stop()
	var saved time.Time
	changed := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			if s.cfg.StateFile != "" && (changed || time.Since(saved) > s.cfg.RestartTime/4) {
				if err := s.saveState(); err != nil {
					s.log.Warn("BGP restart state not saved", zap.Error(err))
				}
				saved, changed = time.Now(), false
			}
			continue
		case <-s.wake:
		}
		changed = true
		s.mu.Lock()
		batch, rr, sweep := s.dirty, s.reresolve, s.sweep
		s.dirty, s.reresolve, s.sweep = map[netip.Prefix]learnt{}, false, false
		s.mu.Unlock()
		for p := range batch {
			delete(s.stale, p) // a peer spoke of it again: no longer stale
		}
		if sweep {
			for p := range s.stale {
				if _, fresh := batch[p]; !fresh {
					batch[p] = learnt{}
					s.swept.Add(1)
				}
			}
			clear(s.stale)
		}
		s.apply(batch, rr)
	}
}

// apply puts one batch into the FIB as one snapshot; with all, every known
// prefix is resolved again. Only what changed is edited, and a batch that
// changes nothing publishes no snapshot (a re-resolve after every datastore
// sync usually changes nothing). Each peer's routes are bounded by its
// prefix limit, and all of them by MaxRoutes, whatever GoBGP's RIB holds (it
// keeps a peer's routes as stale when the session drops, even one cut for
// sending too many).
func (s *Speaker) apply(batch map[netip.Prefix]learnt, all bool) {
	if all {
		for p, l := range s.known {
			if _, ok := batch[p]; !ok {
				batch[p] = l
			}
		}
	}
	s.mu.Lock()
	limits := make(map[netip.Addr]int, len(s.peers))
	for a, p := range s.peers {
		limits[a] = int(cmp.Or(p.MaxPrefixes, s.cfg.DefaultMaxPrefixes))
	}
	keepOut := s.keepOut
	s.mu.Unlock()
	var edits []fib.Route // NextHop.Kind == KindNone: delete
	remove := func(p netip.Prefix) {
		if old, ok := s.installed[p]; ok {
			edits = append(edits, fib.Route{Prefix: p})
			delete(s.installed, p)
			if s.perPeer[old.peer]--; s.perPeer[old.peer] <= 0 {
				delete(s.perPeer, old.peer)
			}
		}
	}
	for p, l := range batch {
		if !l.nh.IsValid() {
			delete(s.known, p)
			remove(p)
			continue
		}
		s.known[p] = l
		if within(p, keepOut) {
			remove(p)
			continue
		}
		hop, ok := s.cfg.Resolve(p, l.nh)
		if !ok {
			s.unresolved.Add(1)
			remove(p)
			continue
		}
		old, had := s.installed[p]
		if had && old.learnt == l && old.hop == hop {
			continue
		}
		if !had || old.peer != l.peer {
			limit, known := limits[l.peer]
			if !known {
				limit = s.cfg.MaxRoutes // saved routes, or a peer just removed
			}
			if s.perPeer[l.peer] >= limit || (!had && len(s.installed) >= s.cfg.MaxRoutes) {
				s.overLimit.Add(1)
				remove(p)
				continue
			}
		}
		if had {
			s.perPeer[old.peer]--
		}
		s.installed[p] = installedRoute{learnt: l, hop: hop}
		s.perPeer[l.peer]++
		edits = append(edits, fib.Route{Prefix: p, NextHop: hop, Source: fib.SourceBGP})
	}
	s.nInstalled.Store(int64(len(s.installed)))
	if len(edits) == 0 {
		return
	}
	s.drains.Add(1)
	_ = s.cfg.FIB.Update(func(tx fib.Tx) error {
		for _, e := range edits {
			if e.NextHop.Kind == fib.KindNone {
				tx.Delete(fib.SourceBGP, e.Prefix)
			} else if err := tx.Set(e); err != nil {
				s.log.Warn("BGP route not installed", zap.Stringer("prefix", e.Prefix), zap.Error(err))
			}
		}
		return nil
	})
	if s.cfg.OnChange != nil {
		s.cfg.OnChange()
	}
}

// within reports whether prefix p lies inside one of ranges.
func within(p netip.Prefix, ranges []netip.Prefix) bool {
	for _, r := range ranges {
		if r.Bits() <= p.Bits() && r.Contains(p.Addr()) {
			return true
		}
	}
	return false
}

// KeepOut keeps the learnt prefixes inside ranges out of the FIB (and
// puts back those of the previous ranges). These are the Service address
// ranges every node advertises: Calico keeps its peers' copies of them out
// of the kernel too, for each node handles Service addresses itself.
func (s *Speaker) KeepOut(ranges []netip.Prefix) {
	var out []netip.Prefix
	for _, r := range ranges {
		if r.Addr().Is4() {
			out = append(out, r.Masked())
		}
	}
	s.mu.Lock()
	s.keepOut = out
	s.reresolve = true
	s.mu.Unlock()
	s.kick()
}

// Reresolve resolves every learnt prefix again (pools or nodes changed).
func (s *Speaker) Reresolve() {
	s.mu.Lock()
	s.reresolve = true
	s.mu.Unlock()
	s.kick()
}

// Counters returns the route pipeline's counters.
func (s *Speaker) Counters() Counters {
	return Counters{BestPathEvents: s.events.Load(), Drains: s.drains.Load(), Unresolved: s.unresolved.Load(),
		OverLimit: s.overLimit.Load(), StaleSwept: s.swept.Load(), Installed: uint64(s.nInstalled.Load())}
}

// Advertise makes the advertised set exactly prefixes: new ones are
// announced, missing ones withdrawn.
func (s *Speaker) Advertise(prefixes []netip.Prefix) error {
	s.advMu.Lock()
	defer s.advMu.Unlock()
	want := map[netip.Prefix]bool{}
	var add, del []*apiutil.Path
	for _, p := range prefixes {
		p = p.Masked()
		if !p.Addr().Is4() || want[p] {
			continue
		}
		want[p] = true
		if !s.adv[p] {
			add = append(add, s.path(p))
		}
	}
	for p := range s.adv {
		if !want[p] {
			del = append(del, s.path(p))
		}
	}
	var errs []error
	if len(add) > 0 {
		if _, err := s.srv.AddPath(apiutil.AddPathRequest{Paths: add}); err != nil {
			errs = append(errs, err)
		}
	}
	if len(del) > 0 {
		if err := s.srv.DeletePath(apiutil.DeletePathRequest{Paths: del}); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("bgp: advertising: %w", err)
	}
	s.adv = want
	return nil
}

// Advertised lists what is advertised.
func (s *Speaker) Advertised() []netip.Prefix {
	s.advMu.Lock()
	defer s.advMu.Unlock()
	out := make([]netip.Prefix, 0, len(s.adv))
	for p := range s.adv {
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].String() < out[j].String() })
	return out
}

func (s *Speaker) path(p netip.Prefix) *apiutil.Path {
	nlri, _ := bgp.NewIPAddrPrefix(p)
	nh, _ := bgp.NewPathAttributeNextHop(s.cfg.RouterID)
	return &apiutil.Path{Family: bgp.RF_IPv4_UC, Nlri: nlri, Age: time.Now().Unix(),
		Attrs: []bgp.PathAttributeInterface{bgp.NewPathAttributeOrigin(bgp.BGP_ORIGIN_ATTR_TYPE_IGP), nh}}
}
