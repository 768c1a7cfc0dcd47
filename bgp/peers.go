package bgp

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sort"
	"strings"
	"time"

	api "github.com/osrg/gobgp/v4/api"
	"go.uber.org/zap"

	wire "github.com/tortie-net/tortie/api"
)

// SetPeers makes the speaker's sessions exactly peers: new ones are added,
// gone ones removed (with a CEASE), changed ones re-created. A change of
// routing policy alone (filters, next hop) keeps the session and runs its
// routes through the new policy (a soft reset).
func (s *Speaker) SetPeers(peers []Peer) error {
	want := map[netip.Addr]Peer{}
	for _, p := range peers {
		if p.Address.Is4() && p.Address != s.cfg.RouterID {
			if _, dup := want[p.Address]; !dup {
				want[p.Address] = p
			}
		}
	}
	s.polMu.Lock()
	defer s.polMu.Unlock()
	s.mu.Lock()
	have := s.peers
	restarting := s.restarting
	s.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var errs []error
	// The policies first, so that new sessions start under them; kept
	// sessions are soft-reset below.
	changed, err := s.setPolicies(ctx, want, s.comms)
	if err != nil {
		errs = append(errs, err)
	}
	next := map[netip.Addr]Peer{}
	var kept []netip.Addr
	for a, old := range have {
		if p, ok := want[a]; ok && sameSession(p, old) {
			next[a] = p
			kept = append(kept, a)
			continue
		}
		if err := s.srv.DeletePeer(ctx, &api.DeletePeerRequest{Address: a.String()}); err != nil {
			errs = append(errs, fmt.Errorf("removing peer %s: %w", a, err))
			next[a] = old
			continue
		}
		s.log.Info("BGP peer removed", zap.Stringer("peer", a), zap.String("name", old.Name))
	}
	for a, p := range want {
		if _, ok := next[a]; ok {
			continue
		}
		if err := s.srv.AddPeer(ctx, &api.AddPeerRequest{Peer: s.apiPeer(p, restarting)}); err != nil {
			errs = append(errs, fmt.Errorf("adding peer %s: %w", a, err))
			continue
		}
		next[a] = p
		s.log.Info("BGP peer added", zap.Stringer("peer", a), zap.Uint32("asn", p.ASN), zap.Stringer("type", p.Type),
			zap.String("name", p.Name), zap.Bool("passive", p.Passive), zap.Bool("rrClient", p.RRClient))
	}
	s.mu.Lock()
	s.peers = next
	s.mu.Unlock()
	if changed && len(kept) > 0 {
		if err := s.softReset(ctx, kept); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (s *Speaker) apiPeer(p Peer, restarting bool) *api.Peer {
	ka := p.Keepalive
	if ka <= 0 {
		ka = 30 * time.Second
	}
	rt := p.RestartTime
	if rt <= 0 {
		rt = s.cfg.RestartTime
	}
	maxp := p.MaxPrefixes
	if maxp == 0 {
		maxp = s.cfg.DefaultMaxPrefixes
	}
	port := p.Port
	if port == 0 {
		port = 179
	}
	fam := &api.Family{Afi: api.Family_AFI_IP, Safi: api.Family_SAFI_UNICAST}
	ap := &api.Peer{
		Conf: &api.PeerConf{NeighborAddress: p.Address.String(), PeerAsn: p.ASN, AuthPassword: p.Password,
			Description: p.Type.String() + " " + p.Name},
		Timers: &api.Timers{Config: &api.TimersConfig{
			ConnectRetry: 3, KeepaliveInterval: uint64(ka / time.Second), HoldTime: uint64(3 * ka / time.Second),
			IdleHoldTimeAfterReset: 5,
		}},
		Transport: &api.Transport{PassiveMode: p.Passive, RemotePort: uint32(port), LocalAddress: s.cfg.RouterID.String()},
		GracefulRestart: &api.GracefulRestart{Enabled: true, RestartTime: uint32(rt / time.Second),
			LocalRestarting: restarting, DeferralTime: 10},
		AfiSafis: []*api.AfiSafi{{
			Config:            &api.AfiSafiConfig{Family: fam, Enabled: true},
			MpGracefulRestart: &api.MpGracefulRestart{Config: &api.MpGracefulRestartConfig{Enabled: true}},
			PrefixLimits:      &api.PrefixLimit{Family: fam, MaxPrefixes: maxp, ShutdownThresholdPct: 80},
		}},
	}
	if p.RRClient {
		ap.RouteReflector = &api.RouteReflector{RouteReflectorClient: true, RouteReflectorClusterId: p.ClusterID}
	}
	if p.AnySource {
		ap.Transport.LocalAddress = ""
	}
	if p.AllowOwnAS > 0 {
		ap.Conf.AllowOwnAsn = uint32(p.AllowOwnAS)
	}
	if p.TTLSecurity > 0 {
		ap.TtlSecurity = &api.TtlSecurity{Enabled: true, TtlMin: uint32(256 - p.TTLSecurity)}
	}
	return ap
}

// PeerStatus is one row of `tortiectl node status`.
type PeerStatus = wire.PeerStatus

// Status lists every configured session, sorted by address.
func (s *Speaker) Status() ([]PeerStatus, error) {
	s.mu.Lock()
	peers := make(map[string]Peer, len(s.peers))
	for a, p := range s.peers {
		peers[a.String()] = p
	}
	s.mu.Unlock()
	var out []PeerStatus
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := s.srv.ListPeer(ctx, &api.ListPeerRequest{}, func(ap *api.Peer) {
		if ap.Conf == nil || ap.State == nil {
			return
		}
		cfg := peers[ap.Conf.NeighborAddress]
		st := PeerStatus{Address: ap.Conf.NeighborAddress, Type: cfg.Type.String(), Name: cfg.Name, ASN: ap.Conf.PeerAsn,
			RRClient: cfg.RRClient}
		state := strings.TrimPrefix(ap.State.SessionState.String(), "SESSION_STATE_")
		state = strings.ToUpper(state[:1]) + strings.ToLower(state[1:])
		switch {
		case ap.State.SessionState == api.PeerState_SESSION_STATE_ESTABLISHED:
			st.State = "up"
		case ap.State.AdminState == api.PeerState_ADMIN_STATE_DOWN:
			st.State = "down"
		default:
			st.State = "start"
		}
		st.Info = state
		if m := ap.State.DisconnectMessage; m != "" && st.State != "up" {
			st.Info += " (" + m + ")"
		}
		if ts := ap.Timers.GetState(); ts != nil {
			if st.State == "up" && ts.Uptime != nil {
				st.Since = ts.Uptime.AsTime()
			} else if ts.Downtime != nil {
				st.Since = ts.Downtime.AsTime()
			}
		}
		for _, af := range ap.AfiSafis {
			if af.State != nil {
				st.Received += af.State.Received
				st.Accepted += af.State.Accepted
			}
		}
		out = append(out, st)
	})
	sort.Slice(out, func(i, j int) bool {
		a, _ := netip.ParseAddr(out[i].Address)
		b, _ := netip.ParseAddr(out[j].Address)
		return a.Less(b)
	})
	return out, err
}
