package main

import (
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/tortie-net/tortie/api"
)

// parseTrace reads trace's flags: --from, --to, --proto, --port,
// --src-port, --icmp-type, --icmp-code.
func parseTrace(args []string) (api.TraceRequest, error) {
	var q api.TraceRequest
	fs := flag.NewFlagSet("trace", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&q.From, "from", "", "source pod (namespace/name or endpoint name) or IPv4 address")
	fs.StringVar(&q.To, "to", "", "destination pod or IPv4 address")
	fs.StringVar(&q.Proto, "proto", "tcp", "tcp, udp or icmp")
	port := fs.Uint("port", 0, "destination port (tcp, udp)")
	sport := fs.Uint("src-port", 0, "source port (tcp, udp)")
	typ := fs.Int("icmp-type", -1, "ICMP type (default echo request)")
	code := fs.Uint("icmp-code", 0, "ICMP code")
	if err := fs.Parse(args); err != nil {
		return q, fmt.Errorf("trace: %w", err)
	}
	if fs.NArg() != 0 {
		return q, fmt.Errorf("trace: unexpected arguments %q", fs.Args())
	}
	if q.From == "" || q.To == "" {
		return q, fmt.Errorf("trace needs --from and --to")
	}
	if *port > 65535 || *sport > 65535 {
		return q, fmt.Errorf("trace: a port is at most 65535")
	}
	if *typ > 255 || *code > 255 {
		return q, fmt.Errorf("trace: ICMP type and code are at most 255")
	}
	q.Port, q.SrcPort, q.ICMPCode = uint16(*port), uint16(*sport), uint8(*code)
	if *typ >= 0 {
		t := uint8(*typ)
		q.ICMPType = &t
	}
	return q, nil
}

// end shows one end of a trace.
func end(e api.TraceEnd) string {
	switch {
	case e.Endpoint != "":
		return fmt.Sprintf("%s (%s)", e.Address, e.Endpoint)
	case e.Node:
		return e.Address + " (this node)"
	}
	return e.Address
}

// routeKind says where a route leads, in words.
func routeKind(r *api.Route) string {
	switch r.Kind {
	case "local":
		return "local pod on " + r.Port
	case "remote":
		how := "encapsulated " + r.Mode
		if r.Mode == "native" {
			how = "native (routed as is)"
		}
		return fmt.Sprintf("node %s (%s), %s", r.Node, r.NodeName, how)
	case "host":
		return "this node's host stack"
	}
	return r.Kind
}

// printTrace writes a trace for people.
func printTrace(w io.Writer, t api.Trace) {
	what := t.Proto
	if t.Proto == "icmp" {
		what = fmt.Sprintf("icmp type %d code %d", t.ICMPType, t.ICMPCode)
	}
	src, dst := end(t.From), end(t.To)
	if t.Proto != "icmp" {
		src, dst = fmt.Sprintf("%s port %d", src, t.SrcPort), fmt.Sprintf("%s port %d", dst, t.DstPort)
	}
	fmt.Fprintf(w, "packet: %s from %s to %s\n", what, src, dst)
	if t.Route == nil {
		fmt.Fprintln(w, "route:  none")
	} else {
		fmt.Fprintf(w, "route:  %s via %s (source %s)\n", t.Route.Prefix, routeKind(t.Route), t.Route.Source)
	}
	side := func(name string, p api.TracePolicy) {
		who := ""
		if p.Endpoint != "" {
			who = " of " + p.Endpoint
		}
		if !p.Evaluated {
			fmt.Fprintf(w, "%s%s: %s\n", name, who, p.Note)
			return
		}
		fmt.Fprintf(w, "%s%s: %s by %s", name, who, p.Action, p.Decider)
		if p.Policy != "" {
			fmt.Fprintf(w, " %s", p.Policy)
		}
		if p.Tier != "" {
			fmt.Fprintf(w, " (tier %s)", p.Tier)
		}
		if p.Rule >= 0 {
			fmt.Fprintf(w, " rule %d", p.Rule)
		}
		fmt.Fprintln(w)
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "  TIER\tPOLICY\tRULE\tACTION\tRESULT")
		for _, s := range p.Steps {
			rule := "end"
			if s.Rule >= 0 {
				rule = fmt.Sprint(s.Rule)
			}
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\n", dash(s.Tier), dash(s.Policy), rule, dash(s.Action), s.Note)
		}
		tw.Flush()
	}
	side("egress", t.Egress)
	side("ingress", t.Ingress)
	fmt.Fprintf(w, "verdict: %s (%s)\n", strings.ToUpper(t.Verdict), t.Reason)
}

// printFlows writes the flow table for people.
func printFlows(w io.Writer, f api.Flows) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PROTO\tSOURCE\tDESTINATION\tSTATE\tFLAGS\tEXPIRES IN")
	for _, e := range f.Flows {
		src, dst := e.Src, e.Dst
		if e.SrcPort != 0 || e.DstPort != 0 {
			src, dst = fmt.Sprintf("%s:%d", src, e.SrcPort), fmt.Sprintf("%s:%d", dst, e.DstPort)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", e.Proto, src, dst, e.State, dash(strings.Join(e.Flags, ",")), e.ExpiresIn.Round(time.Second))
	}
	tw.Flush()
	if f.More {
		fmt.Fprintf(w, "(%d shown; more flows in the table: --limit N shows more)\n", len(f.Flows))
	}
}
