// Package fwdchain opens the node's FORWARD chain to the packets tortied
// hands its kernel to forward: with tunnelGSO, a pod's TCP superframe to a
// VXLAN node enters the kernel through a TAP as a VXLAN packet from the
// node's own address, and the kernel routes it out of the underlay, so it
// passes the filter table's FORWARD chain. A chain whose policy drops (as
// Docker sets it) would drop pods' bulk TCP to other nodes while pings and
// small packets, which tortied sends itself, still pass.
//
// Open puts one accept rule for the TAP at the head of iptables' FORWARD
// chain, as Calico puts its jump to cali-FORWARD there: through nft in the
// "ip filter" table that iptables-nft keeps (the rule is one iptables-nft
// reads back as "-i <tap> -m comment --comment ... -j ACCEPT"), and
// through iptables-legacy where the legacy filter table exists. It
// reports, as an error, any other base chain on the forward hook whose
// policy drops, which an accept elsewhere cannot overrule. Close removes
// the rules. The functions run nft and iptables-legacy in the calling
// thread's network namespace; they keep no state and are safe for
// concurrent use, though two callers opening the same chain at once may
// each insert a rule (the next Open leaves one).
package fwdchain

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"time"
)

// Comment marks the rules Open inserts; a rule carrying it is tortied's.
const Comment = "tortie: packets tortied forwards through the kernel"

// The iptables table and chain Open opens, as iptables-nft keeps them in
// nftables.
const (
	family = "ip"
	table  = "filter"
	chain  = "FORWARD"
)

// Chain is a base chain on the forward hook, as `nft -j list chains`
// names it.
type Chain struct {
	Family string `json:"family"`
	Table  string `json:"table"`
	Name   string `json:"name"`
	Hook   string `json:"hook"`
	Policy string `json:"policy"`
}

func (c Chain) String() string { return c.Family + " " + c.Table + " " + c.Name }

// iptablesForward is the chain Open opens in nftables.
var iptablesForward = Chain{Family: family, Table: table, Name: chain}

// is says whether c names the same chain as o.
func (c Chain) is(o Chain) bool {
	return c.Family == o.Family && c.Table == o.Table && c.Name == o.Name
}

// Rule is a rule of a chain as `nft -j list chain` gives it: its handle,
// its comment, the input interface it matches, if it matches one by name,
// and whether it drops or rejects every packet that reaches it (a verdict
// with no condition before it: only counters and logging).
type Rule struct {
	Handle  uint64
	Comment string
	IIFName string
	Drops   bool
}

// list is the shape of nft's JSON output: a list of objects of one key.
type list struct {
	Nftables []struct {
		Chain *Chain `json:"chain"`
		Rule  *struct {
			Handle  uint64            `json:"handle"`
			Comment string            `json:"comment"`
			Expr    []json.RawMessage `json:"expr"`
		} `json:"rule"`
	} `json:"nftables"`
}

// match is the one expression of a rule Open reads: `iifname "x"`.
type match struct {
	Match *struct {
		Op   string `json:"op"`
		Left struct {
			Meta *struct {
				Key string `json:"key"`
			} `json:"meta"`
		} `json:"left"`
		Right json.RawMessage `json:"right"`
	} `json:"match"`
}

// ParseChains reads the output of `nft -j list chains` and returns the
// base chains on the forward hook of the families IPv4 forwarding passes
// (ip and inet), in the order listed.
func ParseChains(out []byte) ([]Chain, error) {
	var l list
	if err := json.Unmarshal(out, &l); err != nil {
		return nil, fmt.Errorf("fwdchain: nft's chains: %w", err)
	}
	var cs []Chain
	for _, o := range l.Nftables {
		if c := o.Chain; c != nil && c.Hook == "forward" && (c.Family == "ip" || c.Family == "inet") {
			cs = append(cs, *c)
		}
	}
	return cs, nil
}

// ParseRules reads the output of `nft -j list chain` and returns its rules
// in order.
func ParseRules(out []byte) ([]Rule, error) {
	var l list
	if err := json.Unmarshal(out, &l); err != nil {
		return nil, fmt.Errorf("fwdchain: nft's rules: %w", err)
	}
	var rs []Rule
	for _, o := range l.Nftables {
		r := o.Rule
		if r == nil {
			continue
		}
		rule := Rule{Handle: r.Handle, Comment: r.Comment}
		rule.Drops = dropsAll(r.Expr)
		for _, e := range r.Expr {
			var m match
			if json.Unmarshal(e, &m) != nil || m.Match == nil || m.Match.Op != "==" ||
				m.Match.Left.Meta == nil || m.Match.Left.Meta.Key != "iifname" {
				continue
			}
			var name string
			if json.Unmarshal(m.Match.Right, &name) == nil {
				rule.IIFName = name
			}
		}
		rs = append(rs, rule)
	}
	return rs, nil
}

// dropsAll says whether a rule's expressions drop or reject every packet:
// a drop or reject verdict after nothing but counters and logging.
func dropsAll(exprs []json.RawMessage) bool {
	for _, e := range exprs {
		var m map[string]json.RawMessage
		if json.Unmarshal(e, &m) != nil || len(m) != 1 {
			return false
		}
		for k := range m {
			switch k {
			case "counter", "log":
			case "drop", "reject":
				return true
			default:
				return false
			}
		}
	}
	return false
}

// Plan says what makes a chain's rules (in order) begin with tortied's
// one rule accepting packets in from iface: whether to insert it, and the
// handles of tortied's rules to delete (any not first, or for another
// interface). With iface empty it inserts nothing and deletes them all.
func Plan(rules []Rule, iface string) (insert bool, remove []uint64) {
	keep := iface != "" && len(rules) > 0 && rules[0].Comment == Comment && rules[0].IIFName == iface
	for i, r := range rules {
		if r.Comment == Comment && (i > 0 || !keep) {
			remove = append(remove, r.Handle)
		}
	}
	return iface != "" && !keep, remove
}

// Open puts tortied's accept rule for packets in from iface at the head of
// iptables' FORWARD chain (nftables' and, where its filter table exists,
// iptables-legacy's), and leaves no other rule of tortied's there. It
// returns an error if it could not, or if another base chain on the
// forward hook drops by policy; the rules it could put stay. changed
// says whether it changed a chain.
func Open(iface string) (changed bool, err error) {
	if err := validName(iface); err != nil {
		return false, err
	}
	var errs []error
	chains, err := nftChains()
	if err != nil {
		return false, err
	}
	for _, c := range chains {
		switch {
		case c.is(iptablesForward):
			ch, err := openNFT(iface)
			changed = changed || ch
			if err != nil {
				errs = append(errs, err)
			}
		case c.Policy == "drop":
			errs = append(errs, fmt.Errorf("fwdchain: chain %s drops forwarded packets by policy, and tortied opens only iptables' FORWARD chain", c))
		default:
			rules, err := nftRules(c)
			if err != nil {
				errs = append(errs, err)
			} else if slices.ContainsFunc(rules, func(r Rule) bool { return r.Drops }) {
				errs = append(errs, fmt.Errorf("fwdchain: chain %s ends in a rule that drops or rejects every forwarded packet left, and tortied opens only iptables' FORWARD chain", c))
			}
		}
	}
	if legacyFilter() {
		ch, err := openLegacy(iface)
		changed = changed || ch
		if err != nil {
			errs = append(errs, err)
		}
	}
	return changed, errors.Join(errs...)
}

// Close removes tortied's rules from the FORWARD chains.
func Close() error {
	chains, err := nftChains()
	if err != nil {
		return err
	}
	var errs []error
	if slices.ContainsFunc(chains, iptablesForward.is) {
		if _, err := openNFT(""); err != nil {
			errs = append(errs, err)
		}
	}
	if legacyFilter() {
		if _, err := openLegacy(""); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func nftChains() ([]Chain, error) {
	out, err := nft("", "-j", "list", "chains")
	if err != nil {
		return nil, err
	}
	return ParseChains(out)
}

// nftRules lists a chain's rules. The command goes to nft as JSON, so
// that any name is read as a name (nft's command line reads a chain named
// "forward" as a keyword, and takes no quoted names there).
func nftRules(c Chain) ([]Rule, error) {
	type ref struct {
		Family string `json:"family"`
		Table  string `json:"table"`
		Name   string `json:"name"`
	}
	type list struct {
		List struct {
			Chain ref `json:"chain"`
		} `json:"list"`
	}
	var cmd list
	cmd.List.Chain = ref{c.Family, c.Table, c.Name}
	in, err := json.Marshal(map[string][]list{"nftables": {cmd}})
	if err != nil {
		return nil, err
	}
	out, err := nft(string(in), "-j", "-f", "-")
	if err != nil {
		return nil, err
	}
	return ParseRules(out)
}

// openNFT makes nftables' FORWARD chain begin with tortied's one rule
// for iface, inserting it and deleting the others in one transaction;
// with iface empty it only removes tortied's rules.
func openNFT(iface string) (changed bool, err error) {
	rules, err := nftRules(iptablesForward)
	if err != nil {
		return false, err
	}
	insert, remove := Plan(rules, iface)
	var b strings.Builder
	if insert {
		fmt.Fprintf(&b, "insert rule %s %s %s iifname %q counter accept comment %q\n", family, table, chain, iface, Comment)
	}
	for _, h := range remove {
		fmt.Fprintf(&b, "delete rule %s %s %s handle %d\n", family, table, chain, h)
	}
	if b.Len() == 0 {
		return false, nil
	}
	_, err = nft(b.String(), "-f", "-")
	return err == nil, err
}

func nft(stdin string, args ...string) ([]byte, error) { return run(stdin, "nft", args...) }

// validName refuses an interface name that could not go into a rule as
// it is: Linux allows any byte but '/', ':' and whitespace in one, nft and
// iptables-restore read fewer.
func validName(iface string) error {
	if iface == "" || len(iface) > 15 {
		return fmt.Errorf("fwdchain: interface name %q: want 1 to 15 characters", iface)
	}
	for _, r := range iface {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("._-@+", r)) {
			return fmt.Errorf("fwdchain: interface name %q: only letters, digits and ._-@+ go into a rule here", iface)
		}
	}
	return nil
}

// legacyFilter says whether the legacy iptables filter table exists in
// this network namespace.
func legacyFilter() bool {
	b, err := os.ReadFile("/proc/thread-self/net/ip_tables_names")
	if err != nil {
		return false
	}
	for _, name := range strings.Fields(string(b)) {
		if name == table {
			return true
		}
	}
	return false
}

// ParseIptables reads the output of `iptables -S FORWARD` and returns the
// chain's rules in order, each with its position (from 1) as its handle.
func ParseIptables(out string) []Rule {
	var rs []Rule
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) < 2 || f[0] != "-A" || f[1] != chain {
			continue
		}
		r := Rule{Handle: uint64(len(rs) + 1)}
		if strings.Contains(line, ` --comment "`+Comment+`"`) {
			r.Comment = Comment
		}
		for i := 2; i+1 < len(f); i++ {
			if f[i] == "-i" {
				r.IIFName = f[i+1]
			}
		}
		rs = append(rs, r)
	}
	return rs
}

// openLegacy does for iptables-legacy's FORWARD chain what openNFT does
// for nftables', in one iptables-legacy-restore transaction that deletes
// tortied's rules by their specification (not their position, which
// another program may change meanwhile) and inserts the new one; with
// iface empty it only removes tortied's rules.
func openLegacy(iface string) (changed bool, err error) {
	out, err := run("", "iptables-legacy", "-w", lockWait, "-S", chain)
	if err != nil {
		return false, err
	}
	rules := ParseIptables(string(out))
	insert, remove := Plan(rules, iface)
	if !insert && len(remove) == 0 {
		return false, nil
	}
	var b strings.Builder
	b.WriteString("*filter\n")
	for _, r := range rules {
		if slices.Contains(remove, r.Handle) {
			fmt.Fprintf(&b, "-D %s %s\n", chain, legacySpec(r.IIFName))
		}
	}
	if insert {
		fmt.Fprintf(&b, "-I %s 1 %s\n", chain, legacySpec(iface))
	}
	b.WriteString("COMMIT\n")
	if _, err := run(b.String(), "iptables-legacy-restore", "-w", lockWait, "--noflush"); err != nil {
		return false, err
	}
	return true, nil
}

// legacySpec is tortied's rule for iface as iptables-restore reads it,
// after "-D FORWARD" or "-I FORWARD 1".
func legacySpec(iface string) string {
	return fmt.Sprintf("-i %s -m comment --comment %q -j ACCEPT", iface, Comment)
}

// lockWait is how long iptables waits for the xtables lock (seconds), and
// runTimeout how long any program run here may take.
const (
	lockWait   = "5"
	runTimeout = 15 * time.Second
)

// run runs a program with stdin (if any), returning its output; an error
// carries what it wrote to stderr.
func run(stdin, name string, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), runTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("fwdchain: %s %s: %v: %s", name, strings.Join(args, " "), err, bytes.TrimSpace(stderr.Bytes()))
	}
	return out, nil
}
