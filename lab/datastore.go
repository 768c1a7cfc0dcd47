package lab

import (
	"errors"
	"fmt"
	"path/filepath"

	"github.com/tortie-net/tortie/config"
	"github.com/tortie-net/tortie/internal/pki"
)

// TortiedKubeconfig writes a kubeconfig for node n's tortied, with a
// client certificate of its own (user tortie-node-<node>, so the API
// server's logs tell the nodes apart), and returns its path. It names the
// API server by its address in the fabric, which the nodes' namespaces,
// where tortied runs, reach. The user is in system:masters: the lab grants
// tortied everything, where a cluster grants it deploy/'s RBAC.
func (cp *ControlPlane) TortiedKubeconfig(n *Node) (string, error) {
	name := "tortie-node-" + n.Name
	f, err := cp.ca.WriteIssuedGroups(filepath.Join(cp.Dir, "pki"), name, name, []string{"system:masters"}, pki.Client)
	if err != nil {
		return "", err
	}
	return cp.writeKubeconfig(name, f)
}

// UseKubernetesDatastore rewrites node n's tortied configuration to keep
// the cluster's state in the Kubernetes API that kubeconfig reaches
// (datastore type kubernetes, the route source unchanged); tortied reads
// it when it next starts (Start, Restart). The lab's etcd must outlive the
// switch: a lab whose etcd is embedded in n1's tortied is refused.
func (l *Lab) UseKubernetesDatastore(n *Node, kubeconfig string) error {
	if err := l.switchable(n); err != nil {
		return err
	}
	if len(l.Etcd) == 0 {
		return errors.New("lab: the lab's etcd is embedded in n1's tortied and would go with it: build the lab with Options.EtcdMembers")
	}
	f, err := l.NodeConfig(n)
	if err != nil {
		return err
	}
	d := &config.Datastore{Type: config.DatastoreKubernetes, Kubeconfig: kubeconfig}
	if old := f.Datastore; old != nil {
		d.RouteSource, d.BGPMaxPrefixes = old.RouteSource, old.BGPMaxPrefixes
	}
	f.Datastore = d
	return l.WriteNodeConfig(n, f)
}

// UseEtcdDatastore rewrites node n's tortied configuration back to the
// lab's etcd, as Up configured it; tortied reads it when it next starts.
func (l *Lab) UseEtcdDatastore(n *Node) error {
	if err := l.switchable(n); err != nil {
		return err
	}
	f, err := l.NodeConfig(n)
	if err != nil {
		return err
	}
	d := l.etcdDatastore(n)
	if old := f.Datastore; old != nil {
		d.RouteSource, d.BGPMaxPrefixes = old.RouteSource, old.BGPMaxPrefixes
	}
	f.Datastore = d
	return l.WriteNodeConfig(n, f)
}

// switchable says why node n's datastore cannot be changed, if it cannot.
func (l *Lab) switchable(n *Node) error {
	switch {
	case !l.Datastore:
		return errors.New("lab: a static lab has no datastore")
	case l.DaemonSet:
		return errors.New("lab: a DaemonSet lab's tortied is configured by deploy/")
	case n.Kernel:
		return fmt.Errorf("lab: %s is a kernel node: no tortied", n.Name)
	}
	return nil
}
