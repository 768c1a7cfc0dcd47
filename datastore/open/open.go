// Package open connects to a tortie datastore by its type, etcd v3 or the
// Kubernetes API, so that tortied and tortiectl's migration reach a
// Kubernetes datastore the same way.
package open

import (
	"fmt"

	"k8s.io/client-go/rest"

	"github.com/tortie-net/tortie/datastore"
	"github.com/tortie-net/tortie/datastore/kubestore"
	"github.com/tortie-net/tortie/kubeview"
)

// Kubernetes opens the datastore kept in the Kubernetes API as Calico's
// custom resources (crd.projectcalico.org/v1; deploy/crds.yaml must be
// installed). An empty kubeconfig means the in-cluster configuration of a
// pod. userAgent names the client in the API server's logs and audit.
func Kubernetes(kubeconfig, userAgent string) (datastore.Store, error) {
	rc, err := kubeview.RESTConfig(kubeconfig)
	if err != nil {
		return nil, err
	}
	if userAgent != "" {
		rc.UserAgent = userAgent
	}
	s, err := newKubeStore(rc)
	if err != nil {
		return nil, fmt.Errorf("kubernetes datastore: %w", err)
	}
	return s, nil
}

// newKubeStore builds the Store on the API server rc reaches; tests
// replace it.
var newKubeStore = func(rc *rest.Config) (datastore.Store, error) { return kubestore.New(rc) }
