package main

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/tortie-net/tortie/api"
)

func TestParseLabels(t *testing.T) {
	set, remove, err := parseLabels([]string{"app=web", "tier=", "old-", "a=b=c"})
	if err != nil {
		t.Fatal(err)
	}
	if want := map[string]string{"app": "web", "tier": "", "a": "b=c"}; !reflect.DeepEqual(set, want) {
		t.Errorf("set %v, want %v", set, want)
	}
	if !reflect.DeepEqual(remove, []string{"old"}) {
		t.Errorf("remove %v", remove)
	}
	for _, bad := range []string{"app", "=v", "-"} {
		if _, _, err := parseLabels([]string{bad}); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestParseTrace(t *testing.T) {
	q, err := parseTrace([]string{"--from", "ns/a", "--to=10.0.0.1", "--proto", "udp", "--port", "53", "--src-port", "5353"})
	if err != nil {
		t.Fatal(err)
	}
	if q.From != "ns/a" || q.To != "10.0.0.1" || q.Proto != "udp" || q.Port != 53 || q.SrcPort != 5353 || q.ICMPType != nil {
		t.Errorf("parsed %+v", q)
	}
	q, err = parseTrace([]string{"--from", "a", "--to", "b", "--proto", "icmp", "--icmp-type", "0"})
	if err != nil || q.ICMPType == nil || *q.ICMPType != 0 {
		t.Errorf("icmp type 0: %+v, %v", q, err)
	}
	for _, bad := range [][]string{
		{"--to", "b"}, {"--from", "a"}, {"--from", "a", "--to", "b", "--port", "70000"},
		{"--from", "a", "--to", "b", "--icmp-type", "256"}, {"--from", "a", "--to", "b", "extra"}, {"--nope"},
	} {
		if _, err := parseTrace(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestPrintTrace(t *testing.T) {
	var b strings.Builder
	printTrace(&b, api.Trace{
		From: api.TraceEnd{Address: "10.244.1.2", Endpoint: "ns/a"}, To: api.TraceEnd{Address: "10.244.1.3", Endpoint: "ns/b"},
		Proto: "tcp", SrcPort: 40000, DstPort: 22,
		Route:   &api.Route{Prefix: "10.244.1.3/32", Kind: "local", Port: "tap-b", Source: "endpoint"},
		Verdict: "drop", Reason: "denied at the destination's ingress",
		Egress: api.TracePolicy{Endpoint: "ns/a", Note: "not subject: no policy or profile decides for it", Rule: -1},
		Ingress: api.TracePolicy{Endpoint: "ns/b", Evaluated: true, Action: "Deny", Decider: "rule", Tier: "default", Policy: "b-in", Rule: 0,
			Steps: []api.TraceStep{{Tier: "default", Policy: "b-in", Rule: 0, Action: "Deny", Matched: true, Note: "deny"}}},
	})
	out := b.String()
	for _, want := range []string{
		"packet: tcp from 10.244.1.2 (ns/a) port 40000 to 10.244.1.3 (ns/b) port 22",
		"route:  10.244.1.3/32 via local pod on tap-b (source endpoint)",
		"egress of ns/a: not subject",
		"ingress of ns/b: Deny by rule b-in (tier default) rule 0",
		"verdict: DROP (denied at the destination's ingress)",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

func TestPrintFlows(t *testing.T) {
	var b strings.Builder
	printFlows(&b, api.Flows{More: true, Flows: []api.Flow{
		{Proto: "tcp", Src: "10.244.1.2", Dst: "10.96.0.10", SrcPort: 40000, DstPort: 443, State: "established", Flags: []string{"viaHost", "policyAllowed"}, ExpiresIn: 90 * time.Second},
	}})
	out := b.String()
	for _, want := range []string{"10.244.1.2:40000", "10.96.0.10:443", "established", "viaHost,policyAllowed", "1m30s", "1 shown"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}
