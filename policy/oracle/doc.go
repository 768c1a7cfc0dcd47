// Package oracle checks package policy against an independent engine:
// cyclonus' matcher, on the conformance cases its generator makes. It has
// tests only.
package oracle
