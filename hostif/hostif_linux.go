// Package hostif connects the node's own network stack to the router.
//
// A TUN device ("tortie0", from golang.zx2c4.com/wireguard/tun, with virtio
// offloads so the kernel hands over TCP superframes that it splits) carries
// IPv4 packets between the kernel and the router. The kernel routes the
// cluster's pod CIDRs to tortie0, so the node reaches its pods (kubelet
// probes), host-originated traffic to remote pods is tunnelled by the router,
// and natively routed traffic from other nodes reaches local pods. Remote
// blocks that are routed natively get a kernel route via the remote node, as
// Calico programs them, so the router's native sends leave on the underlay.
//
// Reads do not go through the TUN library, which reads one packet per
// system call: natively routed traffic from other nodes arrives here one
// packet at a time. The Host reads its descriptor in batches instead
// (io_uring, through the tap package) and hands the router each packet
// behind its virtio-net header; the router finishes checksums and cuts
// superframes as it does for pods. Most writes stay with the library,
// which coalesces TCP segments into superframes for the kernel; the
// router's natively routed packets, and pods' superframes passed on whole
// (the kernel, or the underlay's NIC, segments them), go through the
// batched writer behind virtio-net headers of the router's own
// (WriteOffload).
//
// With tunnelGSO a second device joins the node's stack: a TAP (Tunnel)
// through which the router hands the kernel pods' TCP superframes to VXLAN
// nodes as whole VXLAN packets, for it or the NIC to cut (UDP tunnel GSO).
package hostif

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/tun"

	"github.com/tortie-net/tortie/tap"
)

// txQueueLen is the TUN's queue toward tortied, in packets.
const txQueueLen = 2000

// RouteProtocol marks the kernel routes tortie owns (see "ip route show proto 201").
const RouteProtocol = netlink.RouteProtocol(201)

// Config describes the host side.
type Config struct {
	Name         string         // TUN name, e.g. tortie0
	MTU          int            // pod MTU
	TunnelAddr   netip.Addr     // optional /32 on the TUN (Calico's tunnel address)
	ClusterCIDRs []netip.Prefix // routed to the TUN
	Underlay     string         // underlay interface, for native routes
}

// Host is the TUN device plus the kernel state around it.
//
// Concurrency: Read and TryReadQueue are owned by one reader (the router's
// host worker) and are not safe for concurrent use. Write (the TUN
// library's, which takes its own lock around its coalescing tables),
// WriteOffload (the batched writer's, under its own lock), BatchSize,
// VnetHdr, QueuePollFD and Close are safe for concurrent use, as are the
// kernel-programming methods.
type Host struct {
	tun.Device
	cfg  Config
	link netlink.Link
	rx   *tap.Device // batched reads of the same descriptor
	vnet bool        // packets come behind a virtio-net header
}

// Create makes the TUN in the current network namespace and programs the
// kernel: TUN up with its MTU and address, cluster CIDRs routed to it,
// forwarding on, reverse-path filtering off on the TUN (pod sources arrive
// there although the kernel routes them back through it too).
func Create(cfg Config) (*Host, error) {
	dev, err := tun.CreateTUN(cfg.Name, cfg.MTU)
	if err != nil {
		return nil, fmt.Errorf("hostif: create TUN %s: %w", cfg.Name, err)
	}
	go func() {
		for range dev.Events() { // the device blocks if nobody listens
		}
	}()
	h := &Host{Device: dev, cfg: cfg}
	if err := h.program(); err != nil {
		dev.Close()
		return nil, err
	}
	// The library turns the virtio-net header on where the kernel has it
	// (and then reads in batches of more than one).
	h.vnet = dev.BatchSize() > 1
	if h.rx, err = batchedReader(dev.File(), h.vnet); err != nil {
		dev.Close()
		return nil, err
	}
	return h, nil
}

// batchedReader reads f's packets in batches. With the virtio-net header,
// the kernel is told to hand over only what the router finishes: partial
// checksums and TCPv4 superframes (not TCPv6 or UDP ones, which the
// library would accept).
func batchedReader(f *os.File, vnet bool) (*tap.Device, error) {
	if vnet {
		rc, err := f.SyscallConn()
		if err != nil {
			return nil, err
		}
		var serr error
		if err := rc.Control(func(fd uintptr) {
			serr = unix.IoctlSetInt(int(fd), unix.TUNSETOFFLOAD, unix.TUN_F_CSUM|unix.TUN_F_TSO4)
		}); err != nil {
			return nil, err
		}
		if serr != nil {
			return nil, fmt.Errorf("hostif: TUN offloads: %w", serr)
		}
	}
	return tap.FromFile(f)
}

// VnetHdr says whether Read hands over each packet behind its virtio-net
// header.
func (h *Host) VnetHdr() bool { return h.vnet }

// Read reads a batch of packets: all that are queued, up to len(bufs).
func (h *Host) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	return h.rx.Read(bufs, sizes, offset)
}

// TryReadQueue is Read that never waits (0 packets and no error when none
// are queued; drained as tap.Device.TryRead says); the TUN has one queue,
// q is 0.
func (h *Host) TryReadQueue(_ int, bufs [][]byte, sizes []int, offset int) (int, bool, error) {
	return h.rx.TryRead(bufs, sizes, offset)
}

// QueuePollFD returns the TUN's descriptor, readable while a packet is
// queued (q is 0); valid until Close.
func (h *Host) QueuePollFD(int) (int, error) { return h.rx.PollFD() }

// WriteOffload writes each packet as it is, behind its own virtio-net
// header (a TCP superframe's GSO fields for the kernel to segment, or all
// zero), in one batch through io_uring; it returns how many were written,
// with the first error. Without the virtio-net header it writes nothing
// and says so. Safe for concurrent use.
func (h *Host) WriteOffload(pkts [][]byte) (int, error) {
	if !h.vnet {
		return 0, errors.New("hostif: the TUN has no virtio-net header")
	}
	return h.rx.Write(pkts, 0)
}

// BatchSize is the most packets one Read returns.
func (h *Host) BatchSize() int { return h.rx.BatchSize() }

// Close closes the TUN; a Read in progress returns os.ErrClosed. The
// descriptor is the library's too, and it closes it once more.
func (h *Host) Close() error {
	h.rx.Close()
	if err := h.Device.Close(); err != nil && !errors.Is(err, os.ErrClosed) {
		return err
	}
	return nil
}

func (h *Host) program() error {
	link, err := netlink.LinkByName(h.cfg.Name)
	if err != nil {
		return err
	}
	h.link = link
	// Natively routed packets from other nodes wait in the TUN's queue for
	// tortied, one per TCP segment: the default 500 drops a few windows'
	// bursts (TCP retransmits), where a NIC's ring holds them.
	if err := netlink.LinkSetTxQLen(link, txQueueLen); err != nil {
		return fmt.Errorf("hostif: %s queue length: %w", h.cfg.Name, err)
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return fmt.Errorf("hostif: %s up: %w", h.cfg.Name, err)
	}
	if h.cfg.TunnelAddr.IsValid() {
		if err := h.SetTunnelAddr(h.cfg.TunnelAddr); err != nil {
			return err
		}
	}
	if err := h.SyncClusterRoutes(h.cfg.ClusterCIDRs, h.cfg.MTU); err != nil {
		return err
	}
	for path, v := range map[string]string{
		"/proc/sys/net/ipv4/ip_forward":                           "1",
		"/proc/sys/net/ipv4/conf/" + h.cfg.Name + "/rp_filter":    "0",
		"/proc/sys/net/ipv4/conf/all/rp_filter":                   "0",
		"/proc/sys/net/ipv4/conf/" + h.cfg.Name + "/accept_local": "1",
	} {
		if err := os.WriteFile(path, []byte(v), 0o644); err != nil {
			return fmt.Errorf("hostif: sysctl %s: %w", path, err)
		}
	}
	return nil
}

// SetTunnelAddr places this node's tunnel address on the TUN.
func (h *Host) SetTunnelAddr(a netip.Addr) error {
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(32, 32)}}
	if err := netlink.AddrReplace(h.link, addr); err != nil {
		return fmt.Errorf("hostif: tunnel address %s: %w", a, err)
	}
	return nil
}

// SyncClusterRoutes makes the kernel route exactly these pod ranges (the
// IP pools) to the TUN, with the pod MTU; stale ones are removed.
func (h *Host) SyncClusterRoutes(cidrs []netip.Prefix, mtu int) error {
	var want []*netlink.Route
	for _, p := range cidrs {
		want = append(want, &netlink.Route{Dst: ipnet(p), Scope: netlink.SCOPE_LINK, MTU: mtu})
	}
	return syncRoutes(h.link.Attrs().Index, want)
}

// NativeRoute is a remote block reached natively through a node.
type NativeRoute struct {
	Prefix netip.Prefix
	Via    netip.Addr
}

// SyncNativeRoutes makes the kernel's tortie routes via other nodes equal to
// want: "<block> via <node> dev <underlay> onlink", as Calico programs
// CrossSubnet and native BGP routes. Routes of ours not in want are removed.
func (h *Host) SyncNativeRoutes(want []NativeRoute) error {
	ul, err := netlink.LinkByName(h.cfg.Underlay)
	if err != nil {
		return fmt.Errorf("hostif: underlay %s: %w", h.cfg.Underlay, err)
	}
	var routes []*netlink.Route
	for _, w := range want {
		routes = append(routes, &netlink.Route{Dst: ipnet(w.Prefix), Gw: w.Via.AsSlice(), Flags: int(netlink.FLAG_ONLINK)})
	}
	return syncRoutes(ul.Attrs().Index, routes)
}

// syncRoutes makes tortie's routes (RouteProtocol) out of one link exactly
// want: each is replaced, and ours that are not wanted are deleted.
func syncRoutes(link int, want []*netlink.Route) error {
	keep := map[string]bool{}
	var errs []error
	for _, r := range want {
		r.LinkIndex, r.Protocol = link, RouteProtocol
		if err := netlink.RouteReplace(r); err != nil {
			errs = append(errs, fmt.Errorf("hostif: route %s: %w", r, err))
		}
		keep[r.Dst.String()] = true
	}
	have, err := netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Protocol: RouteProtocol, LinkIndex: link},
		netlink.RT_FILTER_PROTOCOL|netlink.RT_FILTER_OIF)
	if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
		return errors.Join(append(errs, err)...)
	}
	for _, r := range have {
		if r.Dst != nil && !keep[r.Dst.String()] {
			if err := netlink.RouteDel(&r); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

func ipnet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Masked().Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}
