// Package header provides zero-copy views over the packet headers tortie's
// dataplane reads and writes: Ethernet, ARP, IPv4, ICMPv4, UDP and VXLAN.
//
// A view is a byte slice type with named field offsets. Callers validate a
// view once (IPv4.Check, ARP.IsValid, ...) and then use the getters, which do
// no further bounds checking beyond what Go itself enforces. Nothing in this
// package allocates.
package header
