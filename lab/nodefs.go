package lab

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
)

// NodePaths are the host paths a Kubernetes node's runtime and its CNI
// keep per node, where deploy/tortie.yaml's hostPath volumes point. Lab
// nodes share this machine's file system, so each node of a DaemonSet lab
// gets a mount namespace of its own (its "file system view") in which
// each of these paths is a bind mount of the node's own directory:
// containerd, the kubelet and every container they start see the node's
// CNI configuration, tortie socket and state, and pod network namespaces,
// as on a machine of its own. The kubelet's device-plugin directory is
// one of them although tortie does not use it: its path is fixed, and
// every kubelet empties it when it starts, then binds its socket there, so
// kubelets starting together on one file system make each other fail.
var NodePaths = []string{"/etc/cni/net.d", "/opt/cni/bin", "/run/tortie", "/var/lib/tortie", "/run/netns", DevicePluginDir}

// DevicePluginDir is where a kubelet serves device plugins (a path fixed
// in the kubelet, not under its --root-dir).
const DevicePluginDir = "/var/lib/kubelet/device-plugins"

// nodeRoot holds a node's own copies of NodePaths.
func nodeRoot(lab, node string) string { return filepath.Join(Dir(lab), node+"-root") }

// HostPath is where a path of node n's view (one of NodePaths, or under
// one) lies on the host.
func (l *Lab) HostPath(n *Node, p string) string { return filepath.Join(nodeRoot(l.Name, n.Name), p) }

// mountNSDir holds the files that pin the nodes' mount namespaces. It is a
// private mount: a namespace file may not be bound on a shared one.
func mountNSDir(lab string) string { return filepath.Join(Dir(lab), "mntns") }

// makeNodeView creates node n's mount namespace, pinned at
// <lab>/mntns/<node>, with NodePaths bound to the node's directories and
// shared (so that what containerd mounts there later, pod network
// namespaces, reaches containers that mount them with HostToContainer
// propagation, as tortied does). The rest of the view is a copy of the
// host's that receives the host's mounts where the host shares them, and
// sends none back.
func (l *Lab) makeNodeView(n *Node) error {
	dir := mountNSDir(l.Name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if !isMountPoint(dir) {
		if err := syscall.Mount(dir, dir, "", syscall.MS_BIND, ""); err != nil {
			return fmt.Errorf("bind mount %s: %w", dir, err)
		}
		if err := syscall.Mount("", dir, "", syscall.MS_PRIVATE, ""); err != nil {
			return fmt.Errorf("make %s private: %w", dir, err)
		}
	}
	pin := filepath.Join(dir, n.Name)
	if err := os.WriteFile(pin, nil, 0o644); err != nil {
		return err
	}
	if out, err := exec.Command("unshare", "--mount="+pin, "--propagation", "slave", "true").CombinedOutput(); err != nil {
		return fmt.Errorf("unshare --mount=%s: %v: %s", pin, err, strings.TrimSpace(string(out)))
	}
	n.MountNS = pin
	// "/" shared in the view (its own peer group): the runtime accepts
	// HostToContainer propagation only from a shared or slave mount, and
	// /var/run/netns is on "/" for it (it does not resolve /var/run).
	var script strings.Builder
	script.WriteString("mount --make-rshared / && ")
	for _, p := range NodePaths {
		own := l.HostPath(n, p)
		if err := os.MkdirAll(own, 0o755); err != nil {
			return err
		}
		// The mount point is created on the host as on any node that
		// runs a CNI; it stays empty there.
		if err := os.MkdirAll(p, 0o755); err != nil {
			return err
		}
		fmt.Fprintf(&script, "mount --bind %q %q && mount --make-shared %q && ", own, p, p)
	}
	script.WriteString("true")
	if out, err := exec.Command("nsenter", "--mount="+pin, "sh", "-c", script.String()).CombinedOutput(); err != nil {
		return fmt.Errorf("node %s view: %v: %s", n.Name, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// inNode is the command prefix that runs a program on node n: in its
// network namespace, and in its own mount namespace when it has one.
func inNode(n *Node) []string {
	argv := []string{"nsenter", "--net=/var/run/netns/" + n.Netns}
	if n.MountNS != "" {
		argv = append(argv, "--mount="+n.MountNS)
	}
	return argv
}

// isMountPoint tells whether dir is itself a mount point.
func isMountPoint(dir string) bool {
	for _, m := range mountsUnder(dir) {
		if m.point == dir {
			return true
		}
	}
	return false
}
