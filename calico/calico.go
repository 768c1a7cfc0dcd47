// Package calico holds the rules tortie follows because Calico follows
// them, apart from any wire format: which way a peer is reached (the
// CrossSubnet rule), how a node's VTEP MAC is derived, and what MTU pods
// get. Static configuration, the datastore sync and the lab's kernel nodes
// all decide the same way through it.
package calico

import (
	"crypto/sha1"
	"fmt"
	"net/netip"

	"github.com/tortie-net/tortie/encap"
	"github.com/tortie-net/tortie/fib"
	"github.com/tortie-net/tortie/header"
)

// PodMTU is the MTU pods get on an underlay of underlayMTU: what is left
// after the largest overhead in use (1480 IPIP, 1450 VXLAN on 1500).
func PodMTU(underlayMTU int, m fib.Mode) int { return underlayMTU - encap.Overhead(m) }

// VTEPMAC is the MAC of a node's VXLAN tunnel endpoint as Calico derives it:
// 0x66 followed by the first five bytes of sha1(node name).
func VTEPMAC(nodeName string) header.MAC {
	sum := sha1.Sum([]byte(nodeName))
	return header.MAC{0x66, sum[0], sum[1], sum[2], sum[3], sum[4]}
}

// ModeFor applies Calico's CrossSubnet rule: with crossSubnet set, a peer
// whose underlay address lies inside our node's configured address CIDR is
// reached natively, everyone else through the tunnel. Without it, the pool's
// mode applies to every peer.
func ModeFor(poolMode fib.Mode, crossSubnet bool, ours netip.Prefix, peer netip.Addr) fib.Mode {
	if poolMode == fib.ModeNative || !crossSubnet {
		return poolMode
	}
	if ours.Masked().Contains(peer) {
		return fib.ModeNative
	}
	return poolMode
}

// CrossSubnetWarning explains the common surprise of a node address
// recorded as a /32: every peer is then "outside the subnet" and tunnelled.
func CrossSubnetWarning(ours netip.Prefix) string {
	if ours.Bits() == 32 {
		return fmt.Sprintf("node address %s is a /32: CrossSubnet will tunnel to every peer; configure the address with its subnet (e.g. /24)", ours)
	}
	return ""
}
