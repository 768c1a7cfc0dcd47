package fwdchain

import (
	"os/exec"
	"slices"
	"strings"
	"testing"

	"github.com/tortie-net/tortie/internal/testutil"
	"github.com/tortie-net/tortie/nsutil"
)

func TestParseChains(t *testing.T) {
	out := `{"nftables": [{"metainfo": {"version": "1.0.6", "json_schema_version": 1}},
{"chain": {"family": "ip", "table": "filter", "name": "FORWARD", "handle": 1, "type": "filter", "hook": "forward", "prio": 0, "policy": "drop"}},
{"chain": {"family": "ip", "table": "filter", "name": "INPUT", "handle": 2, "type": "filter", "hook": "input", "prio": 0, "policy": "drop"}},
{"chain": {"family": "inet", "table": "fw", "name": "fwd", "handle": 1, "type": "filter", "hook": "forward", "prio": 0, "policy": "accept"}},
{"chain": {"family": "bridge", "table": "br", "name": "fwd", "handle": 1, "type": "filter", "hook": "forward", "prio": 0, "policy": "drop"}},
{"chain": {"family": "ip", "table": "filter", "name": "DOCKER", "handle": 3}}]}`
	cs, err := ParseChains([]byte(out))
	if err != nil {
		t.Fatal(err)
	}
	want := []Chain{{"ip", "filter", "FORWARD", "forward", "drop"}, {"inet", "fw", "fwd", "forward", "accept"}}
	if !slices.Equal(cs, want) {
		t.Fatalf("got %+v, want %+v", cs, want)
	}
	if _, err := ParseChains([]byte(`{"nftables": [{"chain": 3}]}`)); err == nil {
		t.Fatal("a chain that is not an object was taken")
	}
}

func TestParseRules(t *testing.T) {
	out := `{"nftables": [{"metainfo": {}}, {"chain": {"family": "ip", "table": "filter", "name": "FORWARD", "handle": 1}},
{"rule": {"family": "ip", "table": "filter", "chain": "FORWARD", "handle": 4, "comment": "` + Comment + `", "expr": [
  {"match": {"op": "==", "left": {"meta": {"key": "iifname"}}, "right": "t0-gso"}}, {"counter": {"packets": 0, "bytes": 0}}, {"accept": null}]}},
{"rule": {"family": "ip", "table": "filter", "chain": "FORWARD", "handle": 2, "expr": [
  {"match": {"op": "!=", "left": {"meta": {"key": "iifname"}}, "right": "x"}}, {"match": {"op": "==", "left": {"payload": {}}, "right": {"set": [1]}}}, {"drop": null}]}},
{"rule": {"family": "inet", "table": "firewalld", "chain": "filter_FORWARD", "handle": 7, "expr": [
  {"counter": null}, {"log": {"prefix": "x"}}, {"reject": {"type": "icmpx", "expr": "admin-prohibited"}}]}},
{"rule": {"family": "inet", "table": "t", "chain": "c", "handle": 8, "expr": [{"limit": {"rate": 1}}, {"drop": null}]}}]}`
	rs, err := ParseRules([]byte(out))
	if err != nil {
		t.Fatal(err)
	}
	want := []Rule{{4, Comment, "t0-gso", false}, {2, "", "", false}, {7, "", "", true}, {8, "", "", false}}
	if !slices.Equal(rs, want) {
		t.Fatalf("got %+v, want %+v", rs, want)
	}
}

func TestParseIptables(t *testing.T) {
	out := "-P FORWARD DROP\n-A FORWARD -j DOCKER-USER\n-A FORWARD -i t0-gso -m comment --comment \"" + Comment + "\" -j ACCEPT\n-A FORWARD -i eth0 -j DROP\n-A OTHER -j ACCEPT\n"
	want := []Rule{{Handle: 1}, {Handle: 2, Comment: Comment, IIFName: "t0-gso"}, {Handle: 3, IIFName: "eth0"}}
	if got := ParseIptables(out); !slices.Equal(got, want) {
		t.Fatalf("got %+v, want %+v", got, want)
	}
}

func TestPlan(t *testing.T) {
	ours := func(h uint64, iface string) Rule { return Rule{Handle: h, Comment: Comment, IIFName: iface} }
	other := Rule{Handle: 9}
	for _, c := range []struct {
		name   string
		rules  []Rule
		insert bool
		remove []uint64
	}{
		{"empty", nil, true, nil},
		{"first", []Rule{ours(1, "t"), other}, false, nil},
		{"passed", []Rule{other, ours(1, "t")}, true, []uint64{1}},
		{"another interface", []Rule{ours(1, "u"), other}, true, []uint64{1}},
		{"twice", []Rule{ours(1, "t"), ours(2, "t"), other, ours(3, "u")}, false, []uint64{2, 3}},
	} {
		insert, remove := Plan(c.rules, "t")
		if insert != c.insert || !slices.Equal(remove, c.remove) {
			t.Errorf("%s: insert %v remove %v, want %v %v", c.name, insert, remove, c.insert, c.remove)
		}
	}
}

// checkPlan holds for any rules: after the plan, exactly one rule of
// tortied's is left, the first, for iface.
// (Handles are unique in a chain; the fuzzers make any.)
func checkPlan(t *testing.T, rules []Rule, iface string) {
	seen := map[uint64]bool{}
	for _, r := range rules {
		if seen[r.Handle] {
			return
		}
		seen[r.Handle] = true
	}
	insert, remove := Plan(rules, iface)
	left := 0
	for _, r := range rules {
		if r.Comment == Comment && !slices.Contains(remove, r.Handle) {
			left++
			if insert || r.Handle != rules[0].Handle || r.IIFName != iface {
				t.Fatalf("plan %v %v for %+v keeps %+v", insert, remove, rules, r)
			}
		}
	}
	if insert && left != 0 || !insert && left != 1 {
		t.Fatalf("plan %v %v for %+v leaves %d of tortied's rules besides an insert", insert, remove, rules, left)
	}
}

func FuzzParseRules(f *testing.F) {
	f.Add([]byte(`{"nftables": [{"rule": {"handle": 4, "comment": "` + Comment + `", "expr": [{"match": {"op": "==", "left": {"meta": {"key": "iifname"}}, "right": "t"}}]}}]}`))
	f.Add([]byte(`{"nftables": [{"chain": {"family": "ip", "hook": "forward", "policy": "drop"}}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		ParseChains(b)
		if rs, err := ParseRules(b); err == nil {
			checkPlan(t, rs, "t")
		}
	})
}

func FuzzParseIptables(f *testing.F) {
	f.Add("-P FORWARD DROP\n-A FORWARD -i t -m comment --comment \"" + Comment + "\" -j ACCEPT\n-A FORWARD -i t -j DROP\n")
	f.Add("-A FORWARD -i\n")
	f.Fuzz(func(t *testing.T, s string) {
		rs := ParseIptables(s)
		for i, r := range rs {
			if r.Handle != uint64(i+1) {
				t.Fatalf("rule %d has position %d", i, r.Handle)
			}
		}
		checkPlan(t, rs, "t")
	})
}

// TestOpenInNamespace opens a fresh namespace's FORWARD chains, by
// nftables (as iptables-nft keeps them) and iptables-legacy, with a
// Docker-like DROP policy, other rules put before tortied's, and a
// firewall's own chain that drops, and closes them again.
func TestOpenInNamespace(t *testing.T) {
	for _, bin := range []string{"nft", "iptables-nft", "iptables-legacy"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Fatalf("%s not installed (make test installs it)", bin)
		}
	}
	ns := testutil.Netns(t)
	in := func(cmd ...string) string {
		t.Helper()
		out, err := exec.Command("ip", append([]string{"netns", "exec", ns}, cmd...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("%s: %v\n%s", strings.Join(cmd, " "), err, out)
		}
		return string(out)
	}
	open := func(iface string) (changed bool, err error) {
		err = nsutil.Do(testutil.NetnsPath(ns), func() (err error) { changed, err = Open(iface); return err })
		return changed, err
	}
	ours := `-A FORWARD -i t0-gso -m comment --comment "` + Comment + `" -j ACCEPT`

	// No filter table: nothing to open, nothing drops.
	if changed, err := open("t0-gso"); err != nil || changed {
		t.Fatalf("open in an empty namespace: changed %v, %v", changed, err)
	}
	in("iptables-nft", "-P", "FORWARD", "DROP")
	in("iptables-nft", "-A", "FORWARD", "-j", "DROP")
	for i, want := range []bool{true, false} {
		if changed, err := open("t0-gso"); err != nil || changed != want {
			t.Fatalf("open %d: changed %v (want %v), %v", i, changed, want, err)
		}
		if rules := in("iptables-nft", "-S", "FORWARD"); !strings.HasPrefix(rules, "-P FORWARD DROP\n"+ours+"\n-A FORWARD -j DROP\n") {
			t.Fatalf("open %d: FORWARD reads\n%s", i, rules)
		}
	}
	// Another program puts its rule first: tortied's goes back to the head.
	in("iptables-nft", "-I", "FORWARD", "1", "-j", "ACCEPT", "-s", "10.9.9.9")
	if changed, err := open("t0-gso"); err != nil || !changed {
		t.Fatalf("open after a rule was put first: changed %v, %v", changed, err)
	}
	if rules := in("iptables-nft", "-S", "FORWARD"); !strings.HasPrefix(rules, "-P FORWARD DROP\n"+ours+"\n-A FORWARD -s 10.9.9.9/32 -j ACCEPT\n-A FORWARD -j DROP\n") {
		t.Fatalf("FORWARD reads\n%s", rules)
	}

	// The legacy table, once it exists, gets the rule too.
	in("iptables-legacy", "-P", "FORWARD", "DROP")
	for i, want := range []bool{true, false} {
		if changed, err := open("t0-gso"); err != nil || changed != want {
			t.Fatalf("legacy open %d: changed %v (want %v), %v", i, changed, want, err)
		}
	}
	if rules := in("iptables-legacy", "-S", "FORWARD"); rules != "-P FORWARD DROP\n"+ours+"\n" {
		t.Fatalf("legacy FORWARD reads\n%s", rules)
	}
	in("iptables-legacy", "-I", "FORWARD", "1", "-s", "10.9.9.9", "-j", "ACCEPT")
	if changed, err := open("t0-gso"); err != nil || !changed {
		t.Fatalf("legacy open after a rule was put first: changed %v, %v", changed, err)
	}
	if rules := in("iptables-legacy", "-S", "FORWARD"); rules != "-P FORWARD DROP\n"+ours+"\n-A FORWARD -s 10.9.9.9/32 -j ACCEPT\n" {
		t.Fatalf("legacy FORWARD reads\n%s", rules)
	}

	// A firewall's chain of its own that accepts by policy but ends in a
	// reject (as firewalld's), named with a word of nft's, cannot be
	// opened either: an error names it.
	// (nft's command line cannot name a chain "forward"; its JSON can.)
	nftJSON := func(cmds string) {
		t.Helper()
		cmd := exec.Command("ip", "netns", "exec", ns, "nft", "-j", "-f", "-")
		cmd.Stdin = strings.NewReader(`{"nftables": [` + cmds + `]}`)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("nft %s: %v\n%s", cmds, err, out)
		}
	}
	nftJSON(`{"add": {"table": {"family": "inet", "name": "fw"}}},
		{"add": {"chain": {"family": "inet", "table": "fw", "name": "forward", "type": "filter", "hook": "forward", "prio": 0, "policy": "accept"}}}`)
	if _, err := open("t0-gso"); err != nil {
		t.Fatalf("open with an accepting chain of another table: %v", err)
	}
	nftJSON(`{"add": {"rule": {"family": "inet", "table": "fw", "chain": "forward", "expr": [{"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": "established"}}, {"accept": null}]}}},
		{"add": {"rule": {"family": "inet", "table": "fw", "chain": "forward", "expr": [{"counter": null}, {"reject": {"type": "icmpx", "expr": "admin-prohibited"}}]}}}`)
	if _, err := open("t0-gso"); err == nil || !strings.Contains(err.Error(), "inet fw forward ends in a rule") {
		t.Fatalf("open with a rejecting chain of another table: %v", err)
	}
	nftJSON(`{"delete": {"chain": {"family": "inet", "table": "fw", "name": "forward"}}}`)
	// One that drops by policy: an error names it, and the rest stays
	// open.
	in("nft", "add chain inet fw filter_fwd { type filter hook forward priority 0; policy drop; }")
	if _, err := open("t0-gso"); err == nil || !strings.Contains(err.Error(), "inet fw filter_fwd drops") {
		t.Fatalf("open with a dropping chain of another table: %v", err)
	}
	if _, err := open(`t0"x`); err == nil {
		t.Fatal("an interface name with a quote went into a rule")
	}
	if err := nsutil.Do(testutil.NetnsPath(ns), Close); err != nil {
		t.Fatal(err)
	}
	for _, bin := range []string{"iptables-nft", "iptables-legacy"} {
		if rules := in(bin, "-S", "FORWARD"); strings.Contains(rules, Comment) {
			t.Fatalf("%s FORWARD after Close:\n%s", bin, rules)
		}
	}
}
