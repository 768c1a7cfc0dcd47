// Package npmatrix is the format of the NetworkPolicy matrix file: the
// cases of cyclonus' generator with cyclonus' verdict for every pod-to-pod
// probe. The oracle module (policy/oracle) writes it, since only it may
// import cyclonus; the cluster test in test/k8s reads it and applies each
// case to real pods.
package npmatrix

import (
	"bytes"
	"encoding/json"
	"fmt"

	networkingv1 "k8s.io/api/networking/v1"
)

// Matrix is the file's content.
type Matrix struct {
	// Source says what made the file.
	Source string `json:"source"`
	// Namespaces and Pods are the world every case starts from: labels
	// by namespace, and by "namespace/pod".
	Namespaces map[string]map[string]string `json:"namespaces"`
	Pods       map[string]map[string]string `json:"pods"`
	Ports      []int                        `json:"ports"`
	Protocols  []string                     `json:"protocols"`
	// PodIP is cyclonusPodIP. RelativeCIDRs are the prefix lengths of
	// the cases' CIDRs that contain it (other than /0); FixedCIDRs are the
	// others, which no pod's address may fall in.
	PodIP         string   `json:"podIP"`
	RelativeCIDRs []int    `json:"relativeCIDRs"`
	FixedCIDRs    []string `json:"fixedCIDRs"`
	Cases         []Case   `json:"cases"`
}

// Case is one of cyclonus' cases.
type Case struct {
	Name  string   `json:"name"`
	Tags  []string `json:"tags"`
	Steps []Step   `json:"steps"`
}

// Step is a step's actions and cyclonus' verdicts after them.
//
// Pods lists the pods that exist then ("namespace/pod", sorted). Allowed
// holds one character per probe, '1' allowed and '0' denied, for every
// source pod, destination pod, port and protocol in that order (index
// ((from*len(Pods)+to)*len(Ports)+port)*len(Protocols)+protocol),
// from-to-self included. A pod's address matters only to ipBlock rules,
// and only through its class: the longest of RelativeCIDRs it shares with
// x/a (0 if none). Allowed is keyed by "<source class>/<destination
// class>", or "*" alone when the classes do not matter.
type Step struct {
	Actions []Action          `json:"actions"`
	Pods    []string          `json:"pods"`
	Allowed map[string]string `json:"allowed"`
}

// Action is one action; exactly one field is set. Namespace actions
// name the namespace in Name.
type Action struct {
	// Apply creates or updates a policy (a complete object, as kubectl
	// apply takes it).
	Apply              *networkingv1.NetworkPolicy `json:"apply,omitempty"`
	DeletePolicy       *ObjectRef                  `json:"deletePolicy,omitempty"`
	CreateNamespace    *ObjectRef                  `json:"createNamespace,omitempty"`
	SetNamespaceLabels *ObjectRef                  `json:"setNamespaceLabels,omitempty"`
	DeleteNamespace    *ObjectRef                  `json:"deleteNamespace,omitempty"`
	CreatePod          *ObjectRef                  `json:"createPod,omitempty"`
	SetPodLabels       *ObjectRef                  `json:"setPodLabels,omitempty"`
	DeletePod          *ObjectRef                  `json:"deletePod,omitempty"`
}

// ObjectRef names an object, with the labels an action gives it.
type ObjectRef struct {
	Namespace string            `json:"namespace,omitempty"`
	Name      string            `json:"name"`
	Labels    map[string]string `json:"labels,omitempty"`
}

// Encode writes m as compact JSON with one case per line, so that a change
// of cases shows as a change of lines.
func (m *Matrix) Encode() ([]byte, error) {
	head := *m
	head.Cases = nil
	h, err := json.Marshal(head)
	if err != nil {
		return nil, err
	}
	// {"source":...,"cases":null} -> {"source":...,"cases":[ <cases> ]}
	const tail = `"cases":null}`
	if !bytes.HasSuffix(h, []byte(tail)) {
		return nil, fmt.Errorf("matrix header %q does not end in %s", h, tail)
	}
	var b bytes.Buffer
	b.Write(h[:len(h)-len(tail)])
	b.WriteString(`"cases":[` + "\n")
	for i, c := range m.Cases {
		j, err := json.Marshal(c)
		if err != nil {
			return nil, err
		}
		b.Write(j)
		if i < len(m.Cases)-1 {
			b.WriteByte(',')
		}
		b.WriteByte('\n')
	}
	b.WriteString("]}\n")
	return b.Bytes(), nil
}
