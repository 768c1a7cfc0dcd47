// Package natout implements IP pools' natOutgoing on a node: traffic from a
// NAT-enabled pool to destinations outside every pool leaves with the
// node's address (masquerade), while traffic between pools is never NATed.
// Pods reach the outside through the host TUN, so the node's kernel does
// the translation; this package keeps its nftables table in step with the
// pools, replacing it in one atomic transaction.
package natout

import (
	"bytes"
	"fmt"
	"net/netip"
	"os/exec"
	"strings"
)

// Table is the nftables table tortie owns.
const Table = "tortie-nat"

// Ruleset renders the table for the given pools; with no NAT pool it only
// removes the table.
func Ruleset(natPools, allPools []netip.Prefix) string {
	var b strings.Builder
	// "table" then "delete table" makes the delete succeed whether or not
	// the table existed; the whole file is one transaction.
	fmt.Fprintf(&b, "table ip %s\ndelete table ip %s\n", Table, Table)
	if len(natPools) == 0 {
		return b.String()
	}
	set := func(name string, ps []netip.Prefix) {
		fmt.Fprintf(&b, "  set %s { type ipv4_addr; flags interval;", name)
		if len(ps) > 0 {
			s := make([]string, len(ps))
			for i, p := range ps {
				s[i] = p.Masked().String()
			}
			fmt.Fprintf(&b, " elements = { %s };", strings.Join(s, ", "))
		}
		b.WriteString(" }\n")
	}
	fmt.Fprintf(&b, "table ip %s {\n", Table)
	set("nat-pools", natPools)
	set("all-pools", allPools)
	b.WriteString("  chain postrouting {\n    type nat hook postrouting priority srcnat; policy accept;\n")
	b.WriteString("    ip saddr @nat-pools ip daddr != @all-pools masquerade\n  }\n}\n")
	return b.String()
}

// Apply loads a ruleset made by Ruleset into the current network namespace.
func Apply(ruleset string) error {
	cmd := exec.Command("nft", "-f", "-")
	cmd.Stdin = strings.NewReader(ruleset)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("natout: nft: %v: %s", err, strings.TrimSpace(out.String()))
	}
	return nil
}
