// Package metrics exports the router's counters to Prometheus. Counters are
// read from the router at scrape time; nothing on the packet path knows
// about Prometheus.
package metrics

import (
	"net/http"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/tortie-net/tortie/router"
)

var (
	dropsDesc = prometheus.NewDesc("tortie_router_drops_total", "Packets dropped by the router, by reason.", []string{"reason"}, nil)
	rxPkts    = prometheus.NewDesc("tortie_port_rx_packets_total", "Packets received on a port.", []string{"port"}, nil)
	rxBytes   = prometheus.NewDesc("tortie_port_rx_bytes_total", "Bytes received on a port.", []string{"port"}, nil)
	txPkts    = prometheus.NewDesc("tortie_port_tx_packets_total", "Packets sent on a port.", []string{"port"}, nil)
	txBytes   = prometheus.NewDesc("tortie_port_tx_bytes_total", "Bytes sent on a port.", []string{"port"}, nil)
	fibDesc   = prometheus.NewDesc("tortie_fib_routes", "Routes in the current FIB snapshot.", nil, nil)
	mtuDesc   = prometheus.NewDesc("tortie_underlay_path_mtu_bytes", "Current underlay path MTU.", nil, nil)
	flowsDesc = prometheus.NewDesc("tortie_flow_table_entries", "Entries in use in the router's flow table.", nil, nil)
	flowsCap  = prometheus.NewDesc("tortie_flow_table_capacity", "Entries the router's flow table holds at most.", nil, nil)
	flowEvt   = prometheus.NewDesc("tortie_flow_table_events_total", "Flow table events: flows inserted, evicted before expiring, refused (bucket full of established flows), expired entries reused.", []string{"event"}, nil)
	viaHost   = prometheus.NewDesc("tortie_flow_replies_via_host_total", "Replies of flows the node translated (Services) sent back through the host.", nil, nil)
	polGen    = prometheus.NewDesc("tortie_policy_generation", "Generation of the network policy state in force (0: none).", nil, nil)
	polEP     = prometheus.NewDesc("tortie_policy_denied_total", "Packets network policy denied, by local endpoint.", []string{"endpoint"}, nil)
	polBy     = prometheus.NewDesc("tortie_policy_denied_by_total", "Packets network policy denied, by what decided: a policy or profile rule, the end of a tier or of the profiles.", []string{"decider", "tier", "policy"}, nil)
	polLogs   = prometheus.NewDesc("tortie_policy_logs_total", "Log rule records written, or dropped (over the rate or the queue full).", []string{"outcome"}, nil)
	loopIns   = prometheus.NewDesc("tortie_input_loop_inputs", "Inputs (pod TAP queues, the host TUN, underlay sockets) an input loop reads.", []string{"loop"}, nil)
	loopWake  = prometheus.NewDesc("tortie_input_loop_wakeups_total", "Times an input loop woke because one of its inputs turned readable.", []string{"loop"}, nil)
	loopTurns = prometheus.NewDesc("tortie_input_loop_turns_total", "Turns an input loop took, each reading one batch of every input it found ready.", []string{"loop"}, nil)
	loopReads = prometheus.NewDesc("tortie_input_loop_reads_total", "Batch reads an input loop made (one per ready input per turn; a read may find the input empty).", []string{"loop"}, nil)
	loopFull  = prometheus.NewDesc("tortie_input_loop_full_turns_total", "Turns after which an input came back with a full batch, so another turn followed at once.", []string{"loop"}, nil)
	loopBusy  = prometheus.NewDesc("tortie_input_loop_busy_polls_total", "Times an input loop spinning after its inputs ran dry (busyPoll) found one ready, so it took another turn without being woken.", []string{"loop"}, nil)
	offDesc   = prometheus.NewDesc("tortie_offload_total", "TCP superframes from pods and the host segmented (tso), passed on whole to the host's kernel, to pods, or to VXLAN nodes through the tunnel TAP for the kernel to cut (whole), coalesced toward pods (gro), or taken whole from the underlay (underlay_gro), and the segments involved.", []string{"kind", "unit"}, nil)
)

type collector struct{ r *router.Router }

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{dropsDesc, rxPkts, rxBytes, txPkts, txBytes, fibDesc, mtuDesc, offDesc, flowsDesc, flowsCap, flowEvt, viaHost, polGen, polEP, polBy, polLogs, loopIns, loopWake, loopTurns, loopReads, loopFull, loopBusy} {
		ch <- d
	}
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	s := c.r.Stats()
	for reason, n := range s.Drops {
		ch <- prometheus.MustNewConstMetric(dropsDesc, prometheus.CounterValue, float64(n), reason)
	}
	for _, p := range append(s.Ports, s.Host) {
		ch <- prometheus.MustNewConstMetric(rxPkts, prometheus.CounterValue, float64(p.RxPackets), p.Name)
		ch <- prometheus.MustNewConstMetric(rxBytes, prometheus.CounterValue, float64(p.RxBytes), p.Name)
		ch <- prometheus.MustNewConstMetric(txPkts, prometheus.CounterValue, float64(p.TxPackets), p.Name)
		ch <- prometheus.MustNewConstMetric(txBytes, prometheus.CounterValue, float64(p.TxBytes), p.Name)
	}
	for i, l := range s.Loops {
		loop := strconv.Itoa(i)
		ch <- prometheus.MustNewConstMetric(loopIns, prometheus.GaugeValue, float64(l.Inputs), loop)
		ch <- prometheus.MustNewConstMetric(loopWake, prometheus.CounterValue, float64(l.Wakeups), loop)
		ch <- prometheus.MustNewConstMetric(loopTurns, prometheus.CounterValue, float64(l.Turns), loop)
		ch <- prometheus.MustNewConstMetric(loopReads, prometheus.CounterValue, float64(l.Reads), loop)
		ch <- prometheus.MustNewConstMetric(loopFull, prometheus.CounterValue, float64(l.FullTurns), loop)
		ch <- prometheus.MustNewConstMetric(loopBusy, prometheus.CounterValue, float64(l.BusyPolls), loop)
	}
	ch <- prometheus.MustNewConstMetric(fibDesc, prometheus.GaugeValue, float64(s.FIBSize))
	ch <- prometheus.MustNewConstMetric(mtuDesc, prometheus.GaugeValue, float64(s.PathMTU))
	ch <- prometheus.MustNewConstMetric(flowsDesc, prometheus.GaugeValue, float64(s.Flows.Entries))
	ch <- prometheus.MustNewConstMetric(flowsCap, prometheus.GaugeValue, float64(s.Flows.Capacity))
	for ev, v := range map[string]uint64{"insert": s.Flows.Inserts, "evict": s.Flows.Evictions, "refuse": s.Flows.Refusals, "expire": s.Flows.Expired} {
		ch <- prometheus.MustNewConstMetric(flowEvt, prometheus.CounterValue, float64(v), ev)
	}
	ch <- prometheus.MustNewConstMetric(viaHost, prometheus.CounterValue, float64(s.Flows.RepliesViaHost))
	ch <- prometheus.MustNewConstMetric(polGen, prometheus.GaugeValue, float64(s.Policy.Generation))
	for _, d := range s.Policy.DeniedByEndpoint {
		ch <- prometheus.MustNewConstMetric(polEP, prometheus.CounterValue, float64(d.Packets), d.Endpoint)
	}
	for _, d := range s.Policy.DeniedByPolicy {
		ch <- prometheus.MustNewConstMetric(polBy, prometheus.CounterValue, float64(d.Packets), d.Decider, d.Tier, d.Policy)
	}
	ch <- prometheus.MustNewConstMetric(polLogs, prometheus.CounterValue, float64(s.Policy.Logged), "written")
	ch <- prometheus.MustNewConstMetric(polLogs, prometheus.CounterValue, float64(s.Policy.LogsDropped), "dropped")
	for _, o := range []struct {
		kind, unit string
		v          uint64
	}{{"tso", "superframes", s.Offload.TSOFrames}, {"tso", "segments", s.Offload.TSOSegments},
		{"gro", "superframes", s.Offload.GROFrames}, {"gro", "segments", s.Offload.GROSegments},
		{"gro", "bad_checksum_segments", s.Offload.GROBadChecksums},
		{"whole", "to_host", s.Offload.WholeToHost}, {"whole", "to_pods", s.Offload.WholeToPods},
		{"whole", "to_tunnel", s.Offload.WholeToTunnel},
		{"underlay_gro", "superframes", s.Offload.FromUnderlay}} {
		ch <- prometheus.MustNewConstMetric(offDesc, prometheus.CounterValue, float64(o.v), o.kind, o.unit)
	}
}

// Handler serves /metrics for r and the extra collectors, plus /healthz
// and /readyz (ready reports whether ready() holds).
func Handler(r *router.Router, ready func() bool, bgpSrc BGPSource, extra ...prometheus.Collector) http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collector{r}, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	reg.MustRegister(extra...)
	if bgpSrc != nil {
		reg.MustRegister(bgpCollector{bgpSrc})
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !ready() {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	})
	return mux
}
