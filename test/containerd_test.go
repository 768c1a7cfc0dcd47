package test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"

	cri "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/tortie-net/tortie/api"
	"github.com/tortie-net/tortie/internal/testutil"
	"github.com/tortie-net/tortie/lab"
	"github.com/tortie-net/tortie/lab/images"
)

// criPod is a pod made through a node's CRI: a sandbox and one container
// of the echo image.
type criPod struct {
	name, sandbox, container, ip string
	node                         *lab.Node
	rt                           cri.RuntimeServiceClient
}

// runEchoPod creates a pod sandbox and starts the echo server in it, as
// the kubelet would through the CRI.
func runEchoPod(ctx context.Context, t *testing.T, l *lab.Lab, n *lab.Node, rt cri.RuntimeServiceClient, name, logDir string) *criPod {
	t.Helper()
	cfg := &cri.PodSandboxConfig{
		Metadata:     &cri.PodSandboxMetadata{Name: name, Namespace: "default", Uid: name + "-uid"},
		Hostname:     name,
		LogDirectory: filepath.Join(logDir, name),
		Linux:        &cri.LinuxPodSandboxConfig{CgroupParent: l.CgroupParent(n)},
	}
	sb, err := rt.RunPodSandbox(ctx, &cri.RunPodSandboxRequest{Config: cfg})
	if err != nil {
		t.Fatalf("run pod sandbox %s on %s: %v", name, n.Name, err)
	}
	p := &criPod{name: name, sandbox: sb.PodSandboxId, node: n, rt: rt}
	st, err := rt.PodSandboxStatus(ctx, &cri.PodSandboxStatusRequest{PodSandboxId: p.sandbox})
	if err != nil {
		t.Fatal(err)
	}
	p.ip = st.GetStatus().GetNetwork().GetIp()
	if net.ParseIP(p.ip) == nil {
		t.Fatalf("pod %s: no address in the sandbox status: %+v", name, st.GetStatus().GetNetwork())
	}
	c, err := rt.CreateContainer(ctx, &cri.CreateContainerRequest{PodSandboxId: p.sandbox, SandboxConfig: cfg,
		Config: &cri.ContainerConfig{Metadata: &cri.ContainerMetadata{Name: "echo"}, Image: &cri.ImageSpec{Image: images.Echo},
			LogPath: "echo.log", Linux: &cri.LinuxContainerConfig{}}})
	if err != nil {
		t.Fatalf("create container in %s: %v", name, err)
	}
	p.container = c.ContainerId
	if _, err := rt.StartContainer(ctx, &cri.StartContainerRequest{ContainerId: p.container}); err != nil {
		t.Fatalf("start container in %s: %v", name, err)
	}
	return p
}

// exec runs the echo binary's client inside the pod's container.
func (p *criPod) exec(ctx context.Context, args ...string) (string, error) {
	r, err := p.rt.ExecSync(ctx, &cri.ExecSyncRequest{ContainerId: p.container, Cmd: append([]string{"/tortie-echo"}, args...), Timeout: 15})
	if err != nil {
		return "", err
	}
	if r.ExitCode != 0 {
		return "", fmt.Errorf("exit %d: %s%s", r.ExitCode, r.Stdout, r.Stderr)
	}
	return string(r.Stdout), nil
}

// handle is the pod's IPAM handle on its node, or nil.
func (p *criPod) handle(t *testing.T) *api.IPAMHandle {
	t.Helper()
	v, err := api.NewClient(p.node.Socket).IPAM()
	if err != nil {
		t.Fatal(err)
	}
	for i, h := range v.Handles {
		if h.ID == "k8s-pod-network."+p.sandbox {
			return &v.Handles[i]
		}
	}
	return nil
}

// TestContainerd runs pods through containerd's CRI, as the kubelet does,
// on two VXLAN nodes: each node's containerd creates the pod network
// through tortie-cni, the pods reach each other's echo server across
// nodes from their own addresses, and removing a pod releases its address.
func TestContainerd(t *testing.T) {
	testutil.RequireRoot(t)
	for _, tool := range []string{"containerd", "ctr", "runc"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s is not installed (make deps installs Debian's containerd, runc and containernetworking-plugins)", tool)
		}
	}
	if !slices.ContainsFunc(lab.LoopbackPlugins, func(p string) bool { _, err := os.Stat(p); return err == nil }) {
		t.Skipf("no CNI loopback plugin in %v (make deps installs Debian's containernetworking-plugins)", lab.LoopbackPlugins)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	work := t.TempDir()
	archive := filepath.Join(work, "images.tar")
	if err := images.Lab(ctx, ".", work, archive); err != nil {
		t.Fatal(err)
	}
	l := up(t, lab.Options{Name: "tcd", Nodes: 2, Mode: "vxlan", Containerd: true, Images: archive})

	var pods []*criPod
	for _, n := range l.Nodes {
		conn, err := n.Containerd.Dial()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		img, err := cri.NewImageServiceClient(conn).ImageStatus(ctx, &cri.ImageStatusRequest{Image: &cri.ImageSpec{Image: images.Echo}})
		if err != nil || img.Image == nil {
			t.Fatalf("image %s on %s: %v %+v", images.Echo, n.Name, err, img)
		}
		pods = append(pods, runEchoPod(ctx, t, l, n, cri.NewRuntimeServiceClient(conn), "echo-"+n.Name, work))
	}
	for _, p := range pods {
		h := p.handle(t)
		if h == nil || h.Node != p.node.Name || !slices.Contains(h.IPs, p.ip) {
			t.Fatalf("pod %s (%s): IPAM handle k8s-pod-network.%s is %+v", p.name, p.ip, p.sandbox, h)
		}
	}
	// Each pod asks the other's echo server, on the other node, over TCP
	// and UDP: the server sees the client pod's own address.
	for i, from := range pods {
		to := pods[1-i]
		testutil.WaitFor(t, time.Minute, fmt.Sprintf("%s's echo server from %s", to.name, from.name), func() bool {
			_, err := from.exec(ctx, "get", "http://"+net.JoinHostPort(to.ip, "8080")+"/healthz")
			return err == nil
		})
		for _, args := range [][]string{{"get", "http://" + net.JoinHostPort(to.ip, "8080") + "/"}, {"udp", net.JoinHostPort(to.ip, "8080"), "hello"}} {
			out, err := from.exec(ctx, args...)
			if err != nil {
				t.Fatalf("%s -> %s %v: %v", from.name, to.name, args, err)
			}
			var r struct{ Client, Hostname, Data string }
			if err := json.Unmarshal([]byte(out), &r); err != nil {
				t.Fatalf("%s -> %s %v: %v: %q", from.name, to.name, args, err, out)
			}
			if host, _, _ := net.SplitHostPort(r.Client); host != from.ip || r.Hostname != to.name {
				t.Errorf("%s (%s) -> %s %s: server saw %s, hostname %q", from.name, from.ip, to.name, args[0], r.Client, r.Hostname)
			}
			if args[0] == "udp" && r.Data != "hello" {
				t.Errorf("%s -> %s udp: data %q", from.name, to.name, r.Data)
			}
		}
	}
	// Removing a pod is CNI DEL: its handle and address are released.
	p := pods[1]
	if _, err := p.rt.StopPodSandbox(ctx, &cri.StopPodSandboxRequest{PodSandboxId: p.sandbox}); err != nil {
		t.Fatal(err)
	}
	if _, err := p.rt.RemovePodSandbox(ctx, &cri.RemovePodSandboxRequest{PodSandboxId: p.sandbox}); err != nil {
		t.Fatal(err)
	}
	if h := p.handle(t); h != nil {
		t.Errorf("pod %s removed, its IPAM handle remains: %+v", p.name, h)
	}
	v, err := api.NewClient(p.node.Socket).IPAM()
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range v.Handles {
		if slices.Contains(h.IPs, p.ip) {
			t.Errorf("pod %s removed, its address %s is still held by %s", p.name, p.ip, h.ID)
		}
	}
	if pods[0].handle(t) == nil {
		t.Errorf("pod %s lost its handle when %s was removed", pods[0].name, p.name)
	}
}
