package node

import (
	"os/exec"
	"strings"
	"testing"

	"go.uber.org/zap"

	"github.com/tortie-net/tortie/fwdchain"
	"github.com/tortie-net/tortie/internal/testutil"
	"github.com/tortie-net/tortie/nsutil"
)

// TestOpenTunnel: in a namespace under a Docker-like DROP policy tortied
// opens the FORWARD chain and uses the tunnel; where a firewall's own
// chain drops by policy, unset tunnelGSO gives the tunnel up (its TAP and
// rule removed) and says why, and tunnelGSO: true keeps it, warning.
func TestOpenTunnel(t *testing.T) {
	ns := testutil.Netns(t)
	testutil.Run(t, "ip", "netns", "exec", ns, "iptables", "-P", "FORWARD", "DROP")
	open := func(explicit bool) (ok bool, state string) {
		t.Helper()
		err := nsutil.Do(testutil.NetnsPath(ns), func() error {
			tun, s := openTunnel("tt0-gso", explicit, zap.NewNop())
			state, ok = s, tun != nil
			if tun != nil {
				tun.Close()
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return ok, state
	}
	rules := func() string { return testutil.Run(t, "ip", "netns", "exec", ns, "iptables", "-S", "FORWARD") }
	if ok, state := open(false); !ok || state != tunnelGSOOn || !strings.Contains(rules(), fwdchain.Comment) {
		t.Fatalf("under a DROP policy: tunnel %v, status %q, FORWARD:\n%s", ok, state, rules())
	}
	testutil.Run(t, "ip", "netns", "exec", ns, "nft", "add table inet fw")
	testutil.Run(t, "ip", "netns", "exec", ns, "nft", "add chain inet fw filter_fwd { type filter hook forward priority 0; policy drop; }")
	ok, state := open(false)
	if ok || !strings.HasPrefix(state, "off: ") || !strings.Contains(state, "inet fw filter_fwd") || strings.Contains(rules(), fwdchain.Comment) {
		t.Fatalf("with a firewall's dropping chain, unset: tunnel %v, status %q, FORWARD:\n%s", ok, state, rules())
	}
	if out, err := exec.Command("ip", "-n", ns, "link", "show", "tt0-gso").CombinedOutput(); err == nil {
		t.Fatalf("the tunnel TAP stayed:\n%s", out)
	}
	if ok, state := open(true); !ok || !strings.HasPrefix(state, tunnelGSOChainsAt) {
		t.Fatalf("with a firewall's dropping chain, true: tunnel %v, status %q", ok, state)
	}
}
