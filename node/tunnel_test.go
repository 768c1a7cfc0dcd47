package node

import (
	"strings"
	"testing"

	"go.uber.org/zap"

	"github.com/tortie-net/tortie/fwdchain"
	"github.com/tortie-net/tortie/internal/testutil"
	"github.com/tortie-net/tortie/nsutil"
)

// TestOpenTunnel: in a namespace under a Docker-like DROP policy tortied
// opens the FORWARD chain and uses the tunnel; where a firewall's own
// chain drops by policy, unset tunnelGSO keeps the TAP but does not use it
// (the status says why), and tunnelGSO: true uses it, saying what may
// drop it. Once the firewall's chain is gone, the next look uses it.
func TestOpenTunnel(t *testing.T) {
	ns := testutil.Netns(t)
	testutil.Run(t, "ip", "netns", "exec", ns, "iptables", "-P", "FORWARD", "DROP")
	open := func(explicit bool) (ok, use bool, state string) {
		t.Helper()
		u := &tunnelUse{name: "tt0-gso", explicit: explicit}
		err := nsutil.Do(testutil.NetnsPath(ns), func() error {
			tun, used := openTunnel(u, zap.NewNop())
			ok, use = tun != nil, used
			if tun != nil {
				tun.Close()
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return ok, use, *u.state.Load()
	}
	rules := func() string { return testutil.Run(t, "ip", "netns", "exec", ns, "iptables", "-S", "FORWARD") }
	if ok, use, state := open(false); !ok || !use || state != tunnelGSOOn || !strings.Contains(rules(), fwdchain.Comment) {
		t.Fatalf("under a DROP policy: tunnel %v, used %v, status %q, FORWARD:\n%s", ok, use, state, rules())
	}
	testutil.Run(t, "ip", "netns", "exec", ns, "nft", "add table inet fw")
	testutil.Run(t, "ip", "netns", "exec", ns, "nft", "add chain inet fw filter_fwd { type filter hook forward priority 0; policy drop; }")
	if ok, use, state := open(false); !ok || use || !strings.HasPrefix(state, tunnelGSOPaused) || !strings.Contains(state, "inet fw filter_fwd") {
		t.Fatalf("with a firewall's dropping chain, unset: tunnel %v, used %v, status %q", ok, use, state)
	}
	if ok, use, state := open(true); !ok || !use || !strings.HasPrefix(state, tunnelGSOChainsAt) {
		t.Fatalf("with a firewall's dropping chain, true: tunnel %v, used %v, status %q", ok, use, state)
	}
	testutil.Run(t, "ip", "netns", "exec", ns, "nft", "delete table inet fw")
	u := &tunnelUse{name: "tt0-gso"}
	var use bool
	if err := nsutil.Do(testutil.NetnsPath(ns), func() (err error) { use, _, err = u.check(); return err }); err != nil || !use || *u.state.Load() != tunnelGSOOn {
		t.Fatalf("the firewall's chain gone: used %v, status %q, %v", use, *u.state.Load(), err)
	}
}
