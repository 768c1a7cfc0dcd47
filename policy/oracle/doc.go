// Package oracle checks package policy against an independent engine:
// cyclonus' matcher, on the conformance cases its generator makes. It has
// tests only; one of them writes those cases, with cyclonus' verdicts, for
// the cluster test of NetworkPolicy (test/k8s/testdata/np-matrix.json).
package oracle

//go:generate go test -run TestMatrixFile -update .
