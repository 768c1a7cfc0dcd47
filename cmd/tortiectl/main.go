// Command tortiectl is the operator's CLI for a tortie node: status,
// endpoints, FIB routes, counters and the flow table, read from tortied's
// unix socket, and traces of what it would do with a packet; and, opening
// the datastores themselves, the migration of a cluster's state between
// etcd and the Kubernetes API.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/signal"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/tortie-net/tortie/api"
)

const usage = `usage: tortiectl [--socket PATH] [-o table|json] COMMAND

commands:
  status                          node summary
  node status                     BGP sessions (PEER ADDRESS, PEER TYPE, STATE, SINCE, INFO)
  endpoints                       pod endpoints on this node
  routes                          the FIB (longest-prefix-match table)
  counters                        port counters and drops by reason
  endpoint add NAME NETNS ADDR    attach a pod (netns path, IPv4 address)
  endpoint del NAME               detach a pod (NAMESPACE/NAME for a Kubernetes pod's)
  apply -f FILE                   create or update resources: IPPool, IPReservation, Node,
                                  BGPConfiguration, BGPPeer, BGPFilter, FelixConfiguration,
                                  ClusterInformation, NetworkPolicy, GlobalNetworkPolicy, Tier,
                                  NetworkSet, GlobalNetworkSet, Profile, WorkloadEndpoint (YAML
                                  or JSON; - for stdin): documents, --- streams, a List or
                                  <Kind>List, or a sequence; apiVersion projectcalico.org/v3,
                                  crd.projectcalico.org/v1 or tortie.io/v1; a warning on stderr
                                  names each field set that tortie keeps but does not act on yet
  get KIND [-o yaml|json]         list ippools, ipreservations, nodes, bgpconfigurations,
                                  bgppeers, bgpfilters, felixconfigurations,
                                  clusterinformations, networkpolicies, globalnetworkpolicies,
                                  tiers, networksets, globalnetworksets, profiles or
                                  workloadendpoints (as projectcalico.org/v3; the output
                                  applies back unchanged)
  delete KIND NAME                remove a resource (NAMESPACE/NAME for networkpolicies,
                                  networksets and workloadendpoints; NAME alone: namespace
                                  default)
  label workloadendpoint NAMESPACE/NAME KEY=VALUE... KEY-...
                                  set (KEY=VALUE) or remove (KEY-) a pod's labels, which
                                  policy selectors match
  trace --from POD|IP --to POD|IP [--proto tcp|udp|icmp] [--port N] [--src-port N]
        [--icmp-type T] [--icmp-code C]
                                  what tortied would do with such a packet, without sending
                                  one: the FIB route and network policy at the source's egress
                                  and the destination's ingress, rule by rule (POD:
                                  NAMESPACE/NAME or an endpoint name)
  flows [--limit N]               the flow table: 5-tuple, state, flags (viaHost,
                                  policyAllowed, policyDenied), time to expiry (1000 flows
                                  unless --limit)
  ipam                            IPAM blocks (affinity, use) and handles
  invalid                         datastore records skipped because they do not decode
  datastore migrate --from etcd|kubernetes --to kubernetes|etcd --etcd-endpoints URL[,URL]
        [--etcd-ca-cert-file F] [--etcd-cert-file F --etcd-key-file F] [--kubeconfig F]
        [--overwrite] [--dry-run]
                                  copy the cluster's state (pools, nodes, BGP and Felix
                                  resources, IPAM, policy, workload endpoints; not the nodes'
                                  heartbeats) between etcd and the Kubernetes API (Calico's
                                  CRDs, deploy/crds.yaml, installed first), opening both
                                  directly, not through tortied; --kubeconfig defaults to
                                  $KUBECONFIG. Records already the same are skipped, so it can
                                  run again; one that differs in the destination stops it
                                  before it writes, unless --overwrite; --dry-run prints what
                                  it would copy. Stop every tortied first (writes made during
                                  the copy may be lost), migrate, set each node's
                                  datastore.type (and kubeconfig), start them again
`

func main() {
	socket := flag.String("socket", "/run/tortie/tortied.sock", "tortied control socket")
	output := flag.String("o", "table", "output format: table, json, or yaml (get)")
	flag.Usage = func() { fmt.Fprint(os.Stderr, usage) }
	flag.Parse()
	if err := run(api.NewClient(*socket), *output, flag.Args()); err != nil {
		fmt.Fprintln(os.Stderr, "tortiectl:", err)
		os.Exit(1)
	}
}

func run(c *api.Client, output string, args []string) error {
	// -o may also follow the command, as in `tortiectl get bgppeers -o yaml`.
	var rest []string
	for i := 0; i < len(args); i++ {
		switch a := args[i]; {
		case (a == "-o" || a == "--o") && i+1 < len(args):
			output = args[i+1]
			i++
		case strings.HasPrefix(a, "-o="):
			output = strings.TrimPrefix(a, "-o=")
		default:
			rest = append(rest, a)
		}
	}
	args = rest
	if len(args) == 0 {
		flag.Usage()
		return fmt.Errorf("no command")
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	defer tw.Flush()
	emit := func(v any, table func()) error {
		if output == "json" {
			e := json.NewEncoder(os.Stdout)
			e.SetIndent("", "  ")
			return e.Encode(v)
		}
		table()
		return nil
	}
	switch args[0] {
	case "datastore":
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		return datastoreCmd(ctx, args[1:], output, os.Stdout, os.Stderr)
	case "apply":
		if len(args) != 3 || args[1] != "-f" {
			break
		}
		var b []byte
		var err error
		if args[2] == "-" {
			b, err = io.ReadAll(os.Stdin)
		} else {
			b, err = os.ReadFile(args[2])
		}
		if err != nil {
			return err
		}
		res, err := c.ApplyReport(string(b))
		if err != nil {
			return err
		}
		fmt.Fprintf(tw, "applied %d resource(s)\n", res.Applied)
		for _, w := range res.Warnings {
			fmt.Fprintf(os.Stderr, "warning: %s\n", w)
		}
		return nil
	case "get":
		if len(args) != 2 {
			break
		}
		var objs []map[string]any
		if err := c.Get(args[1], &objs); err != nil {
			return err
		}
		switch output {
		case "json":
			return emit(objs, nil)
		case "yaml":
			for _, o := range objs {
				b, err := yaml.Marshal(o)
				if err != nil {
					return err
				}
				fmt.Printf("---\n%s", b)
			}
			return nil
		}
		fmt.Fprintln(tw, "NAME\tDETAILS")
		for _, o := range objs {
			md, _ := o["metadata"].(map[string]any)
			spec, _ := json.Marshal(o["spec"])
			name := fmt.Sprint(md["name"])
			if ns, ok := md["namespace"].(string); ok && ns != "" {
				name = ns + "/" + name
			}
			fmt.Fprintf(tw, "%s\t%s\n", name, spec)
		}
		return nil
	case "delete":
		if len(args) != 3 {
			break
		}
		return c.DeleteResource(args[1], args[2])
	case "ipam":
		v, err := c.IPAM()
		if err != nil {
			return err
		}
		return emit(v, func() {
			fmt.Fprintln(tw, "BLOCK\tAFFINITY\tIN USE\tBORROWED BY OTHERS")
			for _, b := range v.Blocks {
				owner := strings.TrimPrefix(b.Affinity, "host:")
				inUse, borrowed := 0, 0
				for _, a := range b.Allocs {
					if a.Handle == "" {
						continue
					}
					inUse++
					if a.Node != owner {
						borrowed++
					}
				}
				fmt.Fprintf(tw, "%s\t%s\t%d/%d\t%d\n", b.CIDR, dash(owner), inUse, len(b.Allocs), borrowed)
			}
			fmt.Fprintln(tw, "\nHANDLE\tNODE\tADDRESS")
			for _, h := range v.Handles {
				fmt.Fprintf(tw, "%s\t%s\t%s\n", h.ID, h.Node, strings.Join(h.IPs, ","))
			}
		})
	case "invalid":
		recs, err := c.InvalidRecords()
		if err != nil {
			return err
		}
		return emit(recs, func() {
			if len(recs) == 0 {
				fmt.Fprintln(tw, "no invalid datastore records")
				return
			}
			fmt.Fprintln(tw, "KIND\tKEY\tREVISION\tERROR")
			for _, r := range recs {
				fmt.Fprintf(tw, "%s\t%s\t%d\t%s\n", r.Kind, r.Key, r.Revision, r.Error)
			}
		})
	case "node":
		if len(args) < 2 || args[1] != "status" {
			return fmt.Errorf("usage: tortiectl node status [-o json]")
		}
		b, err := c.BGP()
		if err != nil {
			return fmt.Errorf("tortie process is not running or not answering: %w", err)
		}
		return emit(b, func() { nodeStatus(tw, b) })
	case "status":
		s, err := c.Status()
		if err != nil {
			return err
		}
		return emit(s, func() {
			mode := s.Mode
			if s.CrossSubnet {
				mode += " (CrossSubnet)"
			}
			ready := "yes"
			if !s.Ready {
				ready = "no (datastore not synced)"
			}
			fmt.Fprintf(tw, "tortie process is running.\n\nNODE\t%s\nADDRESS\t%s\nENCAPSULATION\t%s\nREADY\t%s\nPOD MTU\t%d\nPATH MTU\t%d\nVTEP MAC\t%s\nFIB ROUTES\t%d\nENDPOINTS\t%d\n",
				s.Node, s.Address, mode, ready, s.PodMTU, s.PathMTU, s.VTEPMAC, s.FIBRoutes, s.Endpoints)
			if s.TunnelGSO != "" {
				fmt.Fprintf(tw, "TUNNEL GSO\t%s\n", s.TunnelGSO)
			}
		})
	case "endpoints":
		eps, err := c.Endpoints()
		if err != nil {
			return err
		}
		return emit(eps, func() {
			fmt.Fprintln(tw, "NAME\tPOD\tADDRESS\tMAC\tMTU\tPORT\tQUEUES\tNETNS")
			for _, e := range eps {
				pod := "-"
				if e.PodName != "" {
					pod = e.PodNamespace + "/" + e.PodName
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\t%d\t%s\n", e.Name, pod, e.Address, e.MAC, e.MTU, e.Port, e.Queues, e.Netns)
			}
		})
	case "routes":
		rs, err := c.Routes()
		if err != nil {
			return err
		}
		return emit(rs, func() {
			fmt.Fprintln(tw, "PREFIX\tKIND\tVIA\tMODE\tSOURCE")
			for _, r := range rs {
				via := r.Port
				if r.Kind == "remote" {
					via = fmt.Sprintf("%s (%s)", r.Node, r.NodeName)
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", r.Prefix, r.Kind, dash(via), dash(r.Mode), r.Source)
			}
		})
	case "counters":
		s, err := c.Counters()
		if err != nil {
			return err
		}
		return emit(s, func() {
			fmt.Fprintln(tw, "PORT\tRX PACKETS\tRX BYTES\tTX PACKETS\tTX BYTES")
			for _, p := range append(s.Ports, s.Host) {
				fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\n", p.Name, p.RxPackets, p.RxBytes, p.TxPackets, p.TxBytes)
			}
			if len(s.Loops) > 0 {
				fmt.Fprintln(tw, "\nINPUT LOOP\tINPUTS\tWAKE-UPS\tTURNS\tREADS PER TURN\tFULL TURNS\tBUSY POLLS")
				for i, l := range s.Loops {
					per := 0.0
					if l.Turns > 0 {
						per = float64(l.Reads) / float64(l.Turns)
					}
					fmt.Fprintf(tw, "%d\t%d\t%d\t%d\t%.2f\t%d\t%d\n", i, l.Inputs, l.Wakeups, l.Turns, per, l.FullTurns, l.BusyPolls)
				}
			}
			o := s.Offload
			fmt.Fprintf(tw, "\nOFFLOAD\tSUPERFRAMES\tSEGMENTS\n")
			fmt.Fprintf(tw, "tso (from pods and host, segmented)\t%d\t%d\n", o.TSOFrames, o.TSOSegments)
			fmt.Fprintf(tw, "whole (from pods to the host's kernel)\t%d\t\n", o.WholeToHost)
			fmt.Fprintf(tw, "whole (to pods: from the host's kernel, other pods, the underlay)\t%d\t\n", o.WholeToPods)
			fmt.Fprintf(tw, "underlay (IPIP or VXLAN coalesced, or sent whole)\t%d\t\n", o.FromUnderlay)
			fmt.Fprintf(tw, "whole (from pods to VXLAN nodes, cut by the kernel)\t%d\t\n", o.WholeToTunnel)
			fmt.Fprintf(tw, "gro (to pods, coalesced)\t%d\t%d\n", o.GROFrames, o.GROSegments)
			fmt.Fprintf(tw, "gro: bad TCP checksums, not coalesced\t\t%d\n", o.GROBadChecksums)
			f := s.Flows
			fmt.Fprintf(tw, "\nFLOWS\tENTRIES\tCAPACITY\tINSERTS\tEVICTIONS\tREFUSALS\tEXPIRED\tREPLIES VIA HOST\n")
			fmt.Fprintf(tw, "\t%d\t%d\t%d\t%d\t%d\t%d\t%d\n", f.Entries, f.Capacity, f.Inserts, f.Evictions, f.Refusals, f.Expired, f.RepliesViaHost)
			fmt.Fprintln(tw, "\nDROP REASON\tPACKETS")
			reasons := make([]string, 0, len(s.Drops))
			for r := range s.Drops {
				reasons = append(reasons, r)
			}
			sort.Strings(reasons)
			for _, r := range reasons {
				if s.Drops[r] != 0 {
					fmt.Fprintf(tw, "%s\t%d\n", r, s.Drops[r])
				}
			}
		})
	case "label":
		if len(args) < 4 {
			break
		}
		set, remove, err := parseLabels(args[3:])
		if err != nil {
			return err
		}
		var out map[string]any
		if err := c.Label(api.LabelRequest{Kind: args[1], Name: args[2], Set: set, Remove: remove}, &out); err != nil {
			return err
		}
		return emit(out, func() {
			md, _ := out["metadata"].(map[string]any)
			labels, _ := json.Marshal(md["labels"])
			fmt.Fprintf(tw, "%s labelled: %s\n", args[2], labels)
		})
	case "trace":
		q, err := parseTrace(args[1:])
		if err != nil {
			return err
		}
		t, err := c.Trace(q)
		if err != nil {
			return err
		}
		return emit(t, func() { printTrace(os.Stdout, t) })
	case "flows":
		limit := 0
		switch {
		case len(args) == 3 && args[1] == "--limit":
			n, err := strconv.Atoi(args[2])
			if err != nil || n < 1 {
				return fmt.Errorf("flows: bad --limit %q", args[2])
			}
			limit = n
		case len(args) != 1:
			flag.Usage()
			return fmt.Errorf("usage: tortiectl flows [--limit N]")
		}
		f, err := c.Flows(limit)
		if err != nil {
			return err
		}
		return emit(f, func() { printFlows(os.Stdout, f) })
	case "endpoint":
		if len(args) >= 5 && args[1] == "add" {
			addr, err := netip.ParseAddr(args[4])
			if err != nil {
				return err
			}
			info, err := c.AddEndpoint(api.EndpointSpec{Name: args[2], Netns: args[3], Address: addr})
			if err != nil {
				return err
			}
			return emit(info, func() { fmt.Fprintf(tw, "added %s %s (mac %s, mtu %d)\n", info.Name, info.Address, info.MAC, info.MTU) })
		}
		if len(args) == 3 && args[1] == "del" {
			return c.DeleteEndpoint(args[2])
		}
	}
	flag.Usage()
	return fmt.Errorf("unknown command %q", args)
}

// parseLabels reads kubectl label's arguments: k=v sets a label, k-
// removes one.
func parseLabels(args []string) (set map[string]string, remove []string, err error) {
	set = map[string]string{}
	for _, a := range args {
		if k, v, ok := strings.Cut(a, "="); ok {
			if k == "" {
				return nil, nil, fmt.Errorf("label %q: no key", a)
			}
			set[k] = v
			continue
		}
		if k, ok := strings.CutSuffix(a, "-"); ok && k != "" {
			remove = append(remove, k)
			continue
		}
		return nil, nil, fmt.Errorf("label %q: want KEY=VALUE to set or KEY- to remove", a)
	}
	return set, remove, nil
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// nodeStatus prints BGP sessions the way `calicoctl node status` does.
func nodeStatus(w *tabwriter.Writer, b api.BGPStatus) {
	fmt.Fprintln(w, "tortie process is running.")
	fmt.Fprintln(w)
	if !b.Running {
		fmt.Fprintln(w, "BGP is not this node's route source (routes come from the datastore).")
		return
	}
	fmt.Fprintf(w, "IPv4 BGP status (AS %d, router ID %s", b.ASN, b.RouterID)
	if b.ClusterID != "" {
		fmt.Fprintf(w, ", route reflector cluster %s", b.ClusterID)
	}
	if b.Restarting {
		fmt.Fprint(w, ", graceful restart in progress")
	}
	fmt.Fprintln(w, ")")
	if len(b.Peers) == 0 {
		fmt.Fprintln(w, "No IPv4 peers found.")
	} else {
		w.Flush()
		rows := [][]string{{"PEER ADDRESS", "PEER TYPE", "STATE", "SINCE", "INFO"}}
		for _, p := range b.Peers {
			since := ""
			if !p.Since.IsZero() {
				since = p.Since.Local().Format("15:04:05")
				if time.Since(p.Since) > 24*time.Hour {
					since = p.Since.Local().Format("2006-01-02")
				}
			}
			typ := p.Type
			if p.RRClient {
				typ += " (rr client)"
			}
			rows = append(rows, []string{p.Address, typ, p.State, since, p.Info})
		}
		printGrid(os.Stdout, rows)
	}
	fmt.Fprintf(os.Stdout, "\nAdvertised: %d prefixes; learnt routes in the FIB: %d\n", len(b.Advertised), b.Counters.Installed)
	fmt.Fprintln(os.Stdout, "\nIPv6 BGP status\nNo IPv6 peers found.")
}

// printGrid draws rows as Calico's ASCII table.
func printGrid(out io.Writer, rows [][]string) {
	widths := make([]int, len(rows[0]))
	for _, r := range rows {
		for i, c := range r {
			widths[i] = max(widths[i], len(c))
		}
	}
	line := "+"
	for _, wd := range widths {
		line += strings.Repeat("-", wd+2) + "+"
	}
	fmt.Fprintln(out, line)
	for n, r := range rows {
		s := "|"
		for i, c := range r {
			s += " " + c + strings.Repeat(" ", widths[i]-len(c)) + " |"
		}
		fmt.Fprintln(out, s)
		if n == 0 {
			fmt.Fprintln(out, line)
		}
	}
	fmt.Fprintln(out, line)
}
