package lab

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/tortie-net/tortie/api"
)

// BirdPool is the range BIRD nodes' pods use: an IP pool that selects no
// node, so that tortie's IPAM never hands its addresses out, while tortie
// still knows it as a cluster range (routed natively, exported over BGP).
const BirdPool = "10.245.0.0/16"

// birdPoolManifest registers the BIRD nodes and their pool.
func (l *Lab) birdManifest() string {
	var b strings.Builder
	fmt.Fprintf(&b, `apiVersion: projectcalico.org/v3
kind: IPPool
metadata:
  name: bird-nodes
spec:
  cidr: %s
  blockSize: 26
  ipipMode: Never
  vxlanMode: Never
  nodeSelector: "!all()"
`, BirdPool)
	for _, n := range l.Nodes {
		if n.Bird {
			fmt.Fprintf(&b, `---
apiVersion: projectcalico.org/v3
kind: Node
metadata:
  name: %s
  labels:
    tortie.io/bird: "true"
spec:
  bgp:
    ipv4Address: %s
`, n.Name, n.Address)
		}
	}
	return b.String()
}

// birdConfig is BIRD 2's configuration for a node, shaped as Calico's
// confd writes it for a mesh member: a static blackhole for its block,
// routes learnt over BGP exported to the kernel, pool routes exported to
// peers, graceful restart, and passive toward lower addresses.
func (l *Lab) birdConfig(n *Node) string {
	var b strings.Builder
	fmt.Fprintf(&b, `router id %s;
log "%s" all;

filter calico_export_to_bgp_peers {
  if ( net ~ 10.244.0.0/16 ) then accept;
  if ( net ~ %s ) then accept;
  reject;
}

protocol device { scan time 2; }
protocol direct { ipv4; interface -"cali*", "*"; }

protocol kernel {
  learn;
  persist;
  scan time 2;
  graceful restart;
  ipv4 {
    import none;
    export filter { if source = RTS_DEVICE then reject; if proto = "static_blk" then reject; accept; };
  };
}

protocol static static_blk {
  ipv4;
  route %s blackhole;
}

template bgp bgp_template {
  description "Connection to BGP peer";
  local as 64512;
  ipv4 {
    import all;
    export filter calico_export_to_bgp_peers;
    gateway recursive;
    add paths on;
  };
  graceful restart;
  connect delay time 2;
  connect retry time 5;
  error wait time 5,30;
}
`, n.Addr(), filepath.Join(Dir(l.Name), n.Name+"-bird.log"), BirdPool, n.PodCIDR)
	for _, m := range l.Nodes {
		if m == n {
			continue
		}
		fmt.Fprintf(&b, "\nprotocol bgp Mesh_%s from bgp_template {\n  local %s as 64512;\n  neighbor %s as 64512;\n",
			strings.ReplaceAll(m.Addr(), ".", "_"), n.Addr(), m.Addr())
		if ipLess(m.Addr(), n.Addr()) {
			b.WriteString("  passive on; # Mesh is unidirectional, peer will connect to us.\n")
		}
		b.WriteString("}\n")
	}
	return b.String()
}

func ipLess(a, b string) bool {
	var x, y [4]int
	fmt.Sscanf(a, "%d.%d.%d.%d", &x[0], &x[1], &x[2], &x[3])
	fmt.Sscanf(b, "%d.%d.%d.%d", &y[0], &y[1], &y[2], &y[3])
	for i := range x {
		if x[i] != y[i] {
			return x[i] < y[i]
		}
	}
	return false
}

// BirdSocket is the control socket of a BIRD node's daemon.
func (l *Lab) BirdSocket(n *Node) string { return filepath.Join(Dir(l.Name), n.Name+"-bird.ctl") }

// buildBirdNode plumbs a node as Calico's kernel dataplane with BIRD does.
func (l *Lab) buildBirdNode(n *Node) error {
	conf := filepath.Join(Dir(l.Name), n.Name+"-bird.conf")
	if err := os.WriteFile(conf, []byte(l.birdConfig(n)), 0o644); err != nil {
		return err
	}
	cmd := exec.Command("ip", "netns", "exec", n.Netns, "bird", "-f", "-c", conf, "-s", l.BirdSocket(n))
	logf, err := os.OpenFile(filepath.Join(Dir(l.Name), n.Name+"-bird.out"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("bird: %w", err)
	}
	n.PID = cmd.Process.Pid
	go cmd.Wait()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := l.Birdc(n, "show status"); err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			out, _ := os.ReadFile(filepath.Join(Dir(l.Name), n.Name+"-bird.out"))
			return fmt.Errorf("bird on %s did not start: %s", n.Name, out)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Birdc runs a birdc command against a BIRD node.
func (l *Lab) Birdc(n *Node, command string) (string, error) {
	out, err := exec.Command("birdc", append([]string{"-s", l.BirdSocket(n)}, strings.Fields(command)...)...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("birdc %s: %v: %s", command, err, out)
	}
	return string(out), nil
}

// Apply applies a manifest through the first tortie node.
func (l *Lab) Apply(manifest string) error {
	for _, n := range l.Nodes {
		if !n.Kernel {
			_, err := api.NewClient(n.Socket).Apply(manifest)
			return err
		}
	}
	return fmt.Errorf("lab %s has no tortie node", l.Name)
}

// FRR is a BGP daemon from FRRouting (bgpd alone, without zebra) running
// in the fabric namespace as a top-of-rack router.
type FRR struct {
	Dir string
	PID int
}

// FRRConfig describes the top-of-rack router.
type FRRConfig struct {
	ASN      uint32
	RouterID string
	Listen   string
	Peers    map[string]uint32 // address -> AS
	Password string
	Networks []string // originated (also put on the fabric's loopback, so they answer ping)
}

// StartFRR runs bgpd in the fabric namespace.
func (l *Lab) StartFRR(c FRRConfig) (*FRR, error) {
	dir := filepath.Join(Dir(l.Name), "frr")
	if err := os.MkdirAll(dir, 0o777); err != nil {
		return nil, err
	}
	_ = os.Chmod(dir, 0o777)
	var b strings.Builder
	fmt.Fprintf(&b, "frr defaults datacenter\nhostname tor\n!\nrouter bgp %d\n bgp router-id %s\n no bgp ebgp-requires-policy\n no bgp network import-check\n", c.ASN, c.RouterID)
	for addr, asn := range c.Peers {
		fmt.Fprintf(&b, " neighbor %s remote-as %d\n neighbor %s timers connect 2\n", addr, asn, addr)
		if c.Password != "" {
			fmt.Fprintf(&b, " neighbor %s password %s\n", addr, c.Password)
		}
	}
	b.WriteString(" address-family ipv4 unicast\n")
	for _, n := range c.Networks {
		fmt.Fprintf(&b, "  network %s\n", n)
	}
	b.WriteString(" exit-address-family\n!\n")
	conf := filepath.Join(dir, "bgpd.conf")
	if err := os.WriteFile(conf, []byte(b.String()), 0o644); err != nil {
		return nil, err
	}
	for _, n := range c.Networks {
		_ = run("ip", "-n", l.Fabric, "route", "replace", "local", n, "dev", "lo")
	}
	cmd := exec.Command("ip", "netns", "exec", l.Fabric, "/usr/lib/frr/bgpd", "-f", conf, "-i", filepath.Join(dir, "bgpd.pid"),
		"--vty_socket", dir, "-Z", "-S", "-n", "-l", c.Listen, "-P", "0", "--log", "file:"+filepath.Join(dir, "bgpd.log"))
	logf, err := os.OpenFile(filepath.Join(dir, "bgpd.out"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("bgpd: %w", err)
	}
	go cmd.Wait()
	f := &FRR{Dir: dir, PID: cmd.Process.Pid}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := f.Vtysh("show bgp summary"); err == nil {
			return f, nil
		}
		if time.Now().After(deadline) {
			out, _ := os.ReadFile(filepath.Join(dir, "bgpd.out"))
			return nil, fmt.Errorf("bgpd did not start: %s", out)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Vtysh runs a command against bgpd.
func (f *FRR) Vtysh(command string) (string, error) {
	out, err := exec.Command("vtysh", "--vty_socket", f.Dir, "-c", command).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("vtysh %q: %v: %s", command, err, out)
	}
	return string(out), nil
}

// Stop ends bgpd.
func (f *FRR) Stop() { _ = syscall.Kill(f.PID, syscall.SIGKILL) }
