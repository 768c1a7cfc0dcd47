package metrics

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tortie-net/tortie/bgp"
)

// BGPSource reports the BGP speaker (ok false: BGP is not running).
type BGPSource func() (peers []bgp.PeerStatus, c bgp.Counters, ok bool)

var (
	bgpPeerUp       = prometheus.NewDesc("tortie_bgp_peer_up", "1 when the BGP session is established.", []string{"peer", "type"}, nil)
	bgpPeerAccepted = prometheus.NewDesc("tortie_bgp_peer_prefixes_accepted", "Prefixes accepted from the peer.", []string{"peer"}, nil)
	bgpInstalled    = prometheus.NewDesc("tortie_bgp_routes_installed", "BGP routes in the FIB.", nil, nil)
	bgpEvents       = prometheus.NewDesc("tortie_bgp_best_path_events_total", "Best-path events from the speaker.", nil, nil)
	bgpDrains       = prometheus.NewDesc("tortie_bgp_fib_updates_total", "FIB updates from BGP (each coalesces a burst of events).", nil, nil)
	bgpOverLimit    = prometheus.NewDesc("tortie_bgp_routes_over_limit_total", "Routes left out of the FIB by a peer's prefix limit or the route bound.", nil, nil)
	bgpUnresolved   = prometheus.NewDesc("tortie_bgp_routes_unresolved_total", "Routes left out for lack of a usable next hop.", nil, nil)
	bgpSwept        = prometheus.NewDesc("tortie_bgp_stale_routes_swept_total", "Routes kept across a restart and swept because no peer announced them again.", nil, nil)
)

type bgpCollector struct{ src BGPSource }

func (c bgpCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{bgpPeerUp, bgpPeerAccepted, bgpInstalled, bgpEvents, bgpDrains, bgpOverLimit, bgpUnresolved, bgpSwept} {
		ch <- d
	}
}

func (c bgpCollector) Collect(ch chan<- prometheus.Metric) {
	peers, k, ok := c.src()
	if !ok {
		return
	}
	for _, p := range peers {
		up := 0.0
		if p.State == "up" {
			up = 1
		}
		ch <- prometheus.MustNewConstMetric(bgpPeerUp, prometheus.GaugeValue, up, p.Address, p.Type)
		ch <- prometheus.MustNewConstMetric(bgpPeerAccepted, prometheus.GaugeValue, float64(p.Accepted), p.Address)
	}
	ch <- prometheus.MustNewConstMetric(bgpInstalled, prometheus.GaugeValue, float64(k.Installed))
	ch <- prometheus.MustNewConstMetric(bgpEvents, prometheus.CounterValue, float64(k.BestPathEvents))
	ch <- prometheus.MustNewConstMetric(bgpDrains, prometheus.CounterValue, float64(k.Drains))
	ch <- prometheus.MustNewConstMetric(bgpOverLimit, prometheus.CounterValue, float64(k.OverLimit))
	ch <- prometheus.MustNewConstMetric(bgpUnresolved, prometheus.CounterValue, float64(k.Unresolved))
	ch <- prometheus.MustNewConstMetric(bgpSwept, prometheus.CounterValue, float64(k.StaleSwept))
}
