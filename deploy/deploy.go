// Package deploy holds the manifests that install tortie in a Kubernetes
// cluster, embedded so that programs and tests use the very files users
// apply: the CustomResourceDefinitions of the Kubernetes API datastore
// (crds.yaml) and the DaemonSet with its RBAC and configuration
// (tortie.yaml).
package deploy

import _ "embed"

// CRDs is crds.yaml: a stream of apiextensions.k8s.io/v1
// CustomResourceDefinitions, one per kind that tortie keeps in the
// Kubernetes API (group crd.projectcalico.org, version v1).
//
//go:embed crds.yaml
var CRDs []byte

// Manifest is tortie.yaml, which deploys tortie as a DaemonSet.
//
//go:embed tortie.yaml
var Manifest []byte
