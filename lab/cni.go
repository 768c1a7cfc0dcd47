package lab

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"github.com/containernetworking/cni/libcni"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/tortie-net/tortie/cni"
)

// NetworkName is the lab's CNI network, named as Calico names its own.
const NetworkName = "k8s-pod-network"

// prepareCNI puts the plugin where libcni looks for it: a directory with
// an executable named after the config's "type".
func (l *Lab) prepareCNI(o Options) error {
	plugin := o.CNIPlugin
	if plugin == "" {
		plugin = filepath.Join(filepath.Dir(o.Tortied), "tortie-cni")
	}
	if _, err := os.Stat(plugin); err != nil {
		return fmt.Errorf("tortie-cni plugin: %w", err)
	}
	l.CNIPath = filepath.Join(Dir(o.Name), "cni-bin")
	if err := os.MkdirAll(l.CNIPath, 0o755); err != nil {
		return err
	}
	abs, err := filepath.Abs(plugin)
	if err != nil {
		return err
	}
	return os.Symlink(abs, filepath.Join(l.CNIPath, "tortie"))
}

// PoolManifest is the lab's IP pool: Calico's defaults (block size 26,
// natOutgoing) with the lab's encapsulation.
func (l *Lab) PoolManifest() string {
	ipip, vxlan := "Never", "Never"
	mode := "Always"
	if l.CrossSubnet {
		mode = "CrossSubnet"
	}
	switch l.Encap {
	case "ipip":
		ipip = mode
	case "vxlan":
		vxlan = mode
	}
	return fmt.Sprintf(`apiVersion: projectcalico.org/v3
kind: IPPool
metadata:
  name: default-ipv4-ippool
spec:
  cidr: 10.244.0.0/16
  blockSize: 26
  ipipMode: %s
  vxlanMode: %s
  natOutgoing: true
`, ipip, vxlan)
}

// ConfList is the CNI network configuration list for a node.
func (l *Lab) ConfList(n *Node, cniVersion string) (*libcni.NetworkConfigList, error) {
	b, _ := json.Marshal(map[string]any{
		"cniVersion": cniVersion,
		"name":       NetworkName,
		"plugins":    []any{map[string]any{"type": "tortie", "socket": n.Socket, "mtu": 0}},
	})
	return libcni.NetworkConfFromBytes(b)
}

// CNI returns a libcni client that finds tortie-cni and caches under the lab.
func (l *Lab) CNI() *libcni.CNIConfig {
	return libcni.NewCNIConfigWithCacheDir([]string{l.CNIPath}, filepath.Join(Dir(l.Name), "cni-cache"), nil)
}

// Runtime is the runtime configuration of a pod's attachment.
func (p *Pod) Runtime() *libcni.RuntimeConf {
	return &libcni.RuntimeConf{ContainerID: p.ContainerID, NetNS: "/var/run/netns/" + p.Netns, IfName: "eth0",
		Args: [][2]string{{"K8S_POD_NAMESPACE", p.PodNamespace()}, {"K8S_POD_NAME", p.Name}}}
}

// PodNamespace is the pod's Kubernetes namespace: Namespace, or default.
func (p *Pod) PodNamespace() string {
	if p.Namespace == "" {
		return "default"
	}
	return p.Namespace
}

// WorkloadEndpoint is "<namespace>/<name>" of the WorkloadEndpoint CNI ADD
// records for the pod in a datastore lab, as `tortiectl label
// workloadendpoint` takes it.
func (p *Pod) WorkloadEndpoint() (string, error) {
	name, err := cni.WorkloadEndpointName(p.Node, p.Name, "eth0")
	if err != nil {
		return "", err
	}
	return p.PodNamespace() + "/" + name, nil
}

// AddPodCNI attaches a pod as a container runtime would: CNI ADD of the
// node's network through libcni and tortie-cni. It records the address.
func (l *Lab) AddPodCNI(ctx context.Context, n *Node, p *Pod) error {
	if p.ContainerID == "" {
		id := make([]byte, 32)
		_, _ = rand.Read(id)
		p.ContainerID = hex.EncodeToString(id)
	}
	list, err := l.ConfList(n, "1.1.0")
	if err != nil {
		return err
	}
	res, err := l.CNI().AddNetworkList(ctx, list, p.Runtime())
	if err != nil {
		return err
	}
	r, err := current.NewResultFromResult(res)
	if err != nil {
		return err
	}
	if len(r.IPs) != 1 {
		return fmt.Errorf("CNI result has %d addresses", len(r.IPs))
	}
	p.Address = r.IPs[0].Address.IP.String()
	return nil
}
