package router

// DropReason says why the router discarded a packet. Every reason has exactly
// one counter (Router.Drops), exported as tortie_router_drops_total{reason}.
type DropReason uint8

// Drop reasons.
const (
	DropTooShort         DropReason = iota // frame < 14 bytes or IPv4 < 20 bytes
	DropMalformed                          // IHL/total length inconsistent, bad options, bad ARP
	DropBadChecksum                        // IPv4 header checksum does not verify
	DropBadVersion                         // IP version field is not 4
	DropIPv6                               // IPv6 while IPv6 is off
	DropUnsupportedEther                   // ethertype other than IPv4 and ARP
	DropARPIgnored                         // ARP that is not a request for the gateway
	DropARPRateLimited                     // gateway ARP requests beyond the per-port rate
	DropSpoofedSource                      // pod sent from an address not its own
	DropPodEncap                           // pod originated IPIP or VXLAN
	DropMartian                            // loopback, 0.0.0.0/8, link-local or multicast source; bad destination
	DropNotUnicast                         // multicast or broadcast destination
	DropNoRoute                            // no FIB entry (ICMP net unreachable sent)
	DropBlackhole                          // FIB says blackhole (our block, unused address)
	DropTTLExceeded                        // TTL <= 1 when forwarding (ICMP time exceeded sent)
	DropFragNeeded                         // DF packet too big for the tunnel (ICMP frag needed sent)
	DropMTUExceeded                        // underlay refused the size (EMSGSIZE); path MTU lowered
	DropICMPRateLimited                    // an ICMP error was due but the bucket was empty
	DropUnknownNode                        // encapsulated packet from an address that is not a node
	DropDecapFailed                        // VXLAN flag/VNI/inner MAC/inner type wrong, or inner too short
	DropDecapNotLocal                      // decapsulated packet not for a local pod: never relayed
	DropHostLoop                           // host sent us a packet the FIB routes back to the host
	DropNoPort                             // route names a pod port that is gone
	DropTxError                            // a device or socket write failed
	DropTxFull                             // the underlay socket's send buffer was full (the path beyond drains slower than it is fed)
	DropBadOffload                         // virtio-net header we cannot honour (unknown GSO type, checksum offsets outside the frame)
	DropPolicyDenied                       // network policy denied the packet's flow (SetPolicy)
	NumDropReasons
)

var dropNames = [NumDropReasons]string{
	"too_short", "malformed", "bad_checksum", "bad_version", "ipv6", "unsupported_ethertype",
	"arp_ignored", "arp_ratelimited", "spoofed_source", "pod_encap", "martian", "not_unicast",
	"no_route", "blackhole", "ttl_exceeded", "frag_needed", "mtu_exceeded", "icmp_ratelimited",
	"unknown_node", "decap_failed", "decap_not_local", "host_loop", "no_port", "tx_error", "tx_full", "bad_offload", "policy_denied",
}

func (d DropReason) String() string {
	if d < NumDropReasons {
		return dropNames[d]
	}
	return "unknown"
}
