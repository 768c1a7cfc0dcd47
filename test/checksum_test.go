package test

import (
	"bufio"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"github.com/tortie-net/tortie/api"
	"github.com/tortie-net/tortie/internal/labtest"
	"github.com/tortie-net/tortie/internal/testutil"
	"github.com/tortie-net/tortie/lab"
	"github.com/tortie-net/tortie/nsutil"
)

// TestCorruptSegmentFromKernelVXLAN: a Linux kernel node sends VXLAN with
// no outer UDP checksum (the kernel's default for IPv4, as Calico's
// vxlan.calico), so a payload byte changed on the wire is caught only by
// the inner TCP checksum. tortie joins segments into CHECKSUM_PARTIAL
// superframes, which the pod's kernel does not verify: it must verify them
// itself and keep a bad one out, or the pod takes corrupted data.
//
// The kernel node's pod computes its checksums in software (tx
// checksumming off), so every segment leaves with its checksum final, and
// an nftables rule on the node sets one payload byte of every 40th VXLAN
// packet after that. The data that reaches tortie's pod must be exactly
// what was sent, also once the tortie node's underlay coalesces (GRO):
// tortie trusts the inner checksums of datagrams the kernel joined, which
// holds only because the kernel joins none without a UDP checksum.
func TestCorruptSegmentFromKernelVXLAN(t *testing.T) {
	l := up(t, lab.Options{Name: "tcs", Nodes: 2, Pods: 1, KernelNodes: 1, Mode: "vxlan"})
	kernel, sender := l.Nodes[1], l.Pod("n2p1")
	if !kernel.Kernel || sender == nil {
		t.Fatal("n2 should be a kernel node with pod n2p1")
	}
	if out, err := exec.Command("ip", "netns", "exec", sender.Netns, "ethtool", "-K", "eth0", "tx", "off").CombinedOutput(); err != nil {
		t.Fatalf("ethtool: %v\n%s", err, out)
	}
	// Every 40th VXLAN packet the node sends gets the byte 180 bytes
	// into its UDP packet set: inside the TCP payload of a full segment
	// (UDP 8, VXLAN 8, inner Ethernet 14, IP 20, TCP 32 bytes of
	// headers). The outer checksum is 0, so nothing else changes.
	nft := exec.Command("ip", "netns", "exec", kernel.Netns, "nft", "-f", "-")
	nft.Stdin = strings.NewReader(`table ip corrupt {
	chain post {
		type filter hook postrouting priority 0; policy accept;
		udp dport 4789 numgen inc mod 40 == 0 @th,1440,8 set 0xaa counter
	}
}
`)
	if out, err := nft.CombinedOutput(); err != nil {
		t.Fatalf("nft: %v\n%s", err, out)
	}
	receiver := l.Pod("n1p1")
	client := api.NewClient(l.Nodes[0].Socket)
	// First as the node's underlay comes; then with its GRO on, where the
	// kernel coalesces VXLAN datagrams into the messages tortie reads and
	// whose inner checksums tortie leaves unverified: it must not join
	// datagrams that came without a UDP checksum.
	for _, gro := range []bool{false, true} {
		name := "plain"
		if gro {
			name = "underlay-gro"
			if out, err := exec.Command("ip", "netns", "exec", l.Nodes[0].Netns, "ethtool", "-K", "eth0", "gro", "on").CombinedOutput(); err != nil {
				t.Fatalf("ethtool: %v\n%s", err, out)
			}
		}
		t.Run(name, func(t *testing.T) { sendIntact(t, client, sender, receiver) })
	}
}

// sendIntact sends 64 MiB from one pod to another and fails unless they
// arrive intact and some segment was corrupted on the way (kept out of
// superframes by the receiving node, client, and dropped by the pod).
func sendIntact(t *testing.T, client *api.Client, sender, receiver *lab.Pod) {
	counters := func() api.OffloadStats {
		s, err := client.Counters()
		if err != nil {
			t.Fatal(err)
		}
		return s.Offload
	}
	csumErrors := func() uint64 { return tcpInCsumErrors(t, receiver.Netns) }
	before, offBefore := csumErrors(), counters()
	const size = 64 << 20
	labtest.SendAll(t, sender, receiver, 1, size, false)
	o := counters()
	bad, dropped := o.GROBadChecksums-offBefore.GROBadChecksums, csumErrors()-before
	t.Logf("%d MiB intact; tortie kept %d segments with bad checksums out of superframes; the pod dropped %d (TcpInCsumErrors); %d superframes carried %d segments",
		size>>20, bad, dropped, o.GROFrames-offBefore.GROFrames, o.GROSegments-offBefore.GROSegments)
	if bad == 0 || dropped == 0 {
		t.Fatalf("no corrupted segment was seen (tortie %d, pod %d): the test corrupted nothing", bad, dropped)
	}
}

// tcpInCsumErrors reads the TCP checksum errors of a namespace's stack.
func tcpInCsumErrors(t *testing.T, netns string) uint64 {
	t.Helper()
	var v uint64
	err := nsutil.Do(testutil.NetnsPath(netns), func() error {
		f, err := os.Open("/proc/thread-self/net/snmp")
		if err != nil {
			return err
		}
		defer f.Close()
		var names []string
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			if len(fields) == 0 || fields[0] != "Tcp:" {
				continue
			}
			if names == nil {
				names = fields
				continue
			}
			for i, n := range names {
				if n == "InCsumErrors" && i < len(fields) {
					v, err = strconv.ParseUint(fields[i], 10, 64)
					return err
				}
			}
		}
		return sc.Err()
	})
	if err != nil {
		t.Fatal(err)
	}
	return v
}
