//go:build tools

// Package tools pins CoreDNS, whose main package is its module root, for
// `make coredns-bin`; it is never compiled (build tag tools), only read by
// go mod tidy.
package tools

import (
	_ "github.com/coredns/coredns"
)
