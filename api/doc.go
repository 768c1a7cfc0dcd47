// Package api is the contract of tortied's control API: the JSON types that
// travel over its root-only unix socket, and a client for it. The CNI
// plugin, tortiectl and the lab speak to the daemon through it; the server
// side lives in package apiserver.
//
// The package imports only the standard library, so the programs that use
// it do not link the daemon (its datastore, BGP speaker or netlink code).
// Every type here is a wire type: its JSON shape is the contract, and the
// daemon's packages alias or convert to it.
package api
