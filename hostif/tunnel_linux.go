package hostif

import (
	"fmt"
	"os"

	"github.com/vishvananda/netlink"

	"github.com/tortie-net/tortie/header"
	"github.com/tortie-net/tortie/tap"
)

// Tunnel is a TAP through which the router hands the node's kernel VXLAN
// packets that carry whole TCP superframes, each behind a UDP tunnel
// virtio-net header (Linux 6.17+). The kernel takes them in as frames
// from a neighbour, routes them to the underlay like any forwarded
// packet, and cuts them into VXLAN datagrams where it must: in the
// underlay's NIC (tunnel segmentation offload) or in software, inner TCP
// and outer UDP checksums done; a veth carries them whole. Nothing is
// read from it: the kernel sends nothing its way.
//
// Concurrency: WriteTunnel is safe for concurrent use (writes take the
// TAP's write lock); MAC is fixed from Create on; Close once.
type Tunnel struct {
	dev *tap.Device
	mac header.MAC
}

// CreateTunnel makes the TAP called name in the current network
// namespace and readies the kernel to forward what comes in on it:
// packets from the node's own address (accept_local), no reverse-path
// filter, no IPv6. It fails where the kernel has no UDP tunnel
// segmentation for TAPs.
func CreateTunnel(name string) (*Tunnel, error) {
	dev, err := tap.Open(name, tap.Options{Offload: true, TunnelGSO: true})
	if err != nil {
		return nil, fmt.Errorf("hostif: tunnel TAP %s: %w", name, err)
	}
	t := &Tunnel{dev: dev}
	if err := t.program(name); err != nil {
		dev.Close()
		return nil, err
	}
	return t, nil
}

func (t *Tunnel) program(name string) error {
	link, err := netlink.LinkByName(name)
	if err != nil {
		return fmt.Errorf("hostif: tunnel TAP %s: %w", name, err)
	}
	if len(link.Attrs().HardwareAddr) != len(t.mac) {
		return fmt.Errorf("hostif: tunnel TAP %s has no Ethernet address", name)
	}
	copy(t.mac[:], link.Attrs().HardwareAddr)
	for path, v := range map[string]string{
		"/proc/sys/net/ipv6/conf/" + name + "/disable_ipv6": "1",
		"/proc/sys/net/ipv4/conf/" + name + "/rp_filter":    "0",
		"/proc/sys/net/ipv4/conf/" + name + "/accept_local": "1",
		"/proc/sys/net/ipv4/conf/" + name + "/forwarding":   "1",
	} {
		if err := os.WriteFile(path, []byte(v), 0o644); err != nil && !os.IsNotExist(err) {
			return fmt.Errorf("hostif: sysctl %s: %w", path, err)
		}
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return fmt.Errorf("hostif: %s up: %w", name, err)
	}
	return nil
}

// MAC is the TAP's Ethernet address, which frames written to it carry as
// their destination, so that the kernel takes them as its own to route.
func (t *Tunnel) MAC() header.MAC { return t.mac }

// WriteTunnel writes each frame as it is, behind its own 24-byte UDP
// tunnel virtio-net header, in one batch through io_uring; it returns how
// many were written, with the first error.
func (t *Tunnel) WriteTunnel(frames [][]byte) (int, error) { return t.dev.Write(frames, 0) }

// Close closes the TAP, which then goes away.
func (t *Tunnel) Close() error { return t.dev.Close() }
