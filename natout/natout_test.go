package natout

import (
	"net/netip"
	"os/exec"
	"strings"
	"testing"

	"github.com/tortie-net/tortie/internal/testutil"
	"github.com/tortie-net/tortie/nsutil"
)

func TestRuleset(t *testing.T) {
	p := []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16")}
	all := append(p, netip.MustParsePrefix("10.96.0.0/12"))
	r := Ruleset(p, all)
	if !strings.Contains(r, "elements = { 10.244.0.0/16, 10.96.0.0/12 }") || !strings.Contains(r, "masquerade") {
		t.Fatal(r)
	}
	if r := Ruleset(nil, all); strings.Contains(r, "masquerade") {
		t.Fatalf("no NAT pool, yet: %s", r)
	}
}

// TestSyncInNamespace applies, replaces and removes the table in a real
// namespace.
func TestSyncInNamespace(t *testing.T) {
	ns := testutil.Netns(t)
	if _, err := exec.LookPath("nft"); err != nil {
		t.Skip("nft not installed")
	}
	list := func() string {
		out, _ := exec.Command("ip", "netns", "exec", ns, "nft", "list", "ruleset").CombinedOutput()
		return string(out)
	}
	p := []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16")}
	for _, step := range []struct {
		nat  []netip.Prefix
		want string
	}{{p, "masquerade"}, {p, "masquerade"}, {nil, ""}} {
		if err := nsutil.Do(testutil.NetnsPath(ns), func() error { return Apply(Ruleset(step.nat, p)) }); err != nil {
			t.Fatal(err)
		}
		got := list()
		if step.want == "" && strings.Contains(got, Table) || step.want != "" && !strings.Contains(got, step.want) {
			t.Fatalf("ruleset after sync:\n%s", got)
		}
	}
}
