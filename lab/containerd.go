package lab

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	cri "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/tortie-net/tortie/lab/images"
)

// CRINamespace is the containerd namespace of the CRI (and so Kubernetes).
const CRINamespace = "k8s.io"

// Containerd is a node's container runtime: a containerd of its own,
// started in the node's network namespace, whose CRI plugin creates pod
// networks through the lab's tortie-cni and the node's conflist.
type Containerd struct {
	Dir     string `json:"dir"`
	Socket  string `json:"socket"`
	PID     int    `json:"pid"`
	Log     string `json:"log"`
	ConfDir string `json:"confDir"`
}

// containerdDir is where a node's containerd keeps its root, state, socket,
// config and CNI conflist; Down unmounts and removes it.
func containerdDir(lab, node string) string { return filepath.Join(Dir(lab), node+"-containerd") }

// containerdConfig is containerd's configuration (version 2) for a node:
//   - restrict_oom_score_adj: this machine lacks CAP_SYS_RESOURCE, and a
//     pod sandbox asking for a lower oom_score_adj fails in runc;
//   - sandbox_image: our pause image, under its fully qualified name (the
//     CRI would otherwise try to pull it);
//   - netns_mounts_under_state_dir: pod network namespaces live under the
//     node's state directory, so Down finds them even after a crash;
//   - runc's root under the node's directory too, and CNI from the lab's
//     plugin directory with this node's conflist only.
//
// A node with a file system view of its own (DaemonSet labs) keeps the
// defaults a real node has instead: CNI in /opt/cni/bin and
// /etc/cni/net.d, pod network namespaces in /run/netns, which its view
// binds to the node's own directories.
func containerdConfig(c *Containerd, cniBin string, ownView bool) string {
	q := strconv.Quote
	return fmt.Sprintf(`version = 2
root = %s
state = %s
oom_score = 0
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs"]

[grpc]
  address = %s

[ttrpc]
  address = %s

[plugins."io.containerd.grpc.v1.cri"]
  restrict_oom_score_adj = true
  sandbox_image = %s
  netns_mounts_under_state_dir = %t
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        Root = %s
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = %s
    conf_dir = %s
    max_conf_num = 1
`, q(filepath.Join(c.Dir, "root")), q(filepath.Join(c.Dir, "state")), q(c.Socket), q(c.Socket+".ttrpc"),
		q(images.Pause), !ownView, q(filepath.Join(c.Dir, "runc")), q(cniBin), q(c.ConfDir))
}

// LoopbackPlugins are where the CNI project's loopback plugin is looked
// for (Debian's containernetworking-plugins, then the CNI default): the
// CRI brings every pod's lo up through it before the pod network.
var LoopbackPlugins = []string{"/usr/lib/cni/loopback", "/opt/cni/bin/loopback"}

// linkLoopback puts the loopback plugin in the CNI plugin directory dir.
func linkLoopback(dir string) error {
	dst := filepath.Join(dir, "loopback")
	if _, err := os.Stat(dst); err == nil {
		return nil
	}
	for _, p := range LoopbackPlugins {
		if _, err := os.Stat(p); err == nil {
			return os.Symlink(p, dst)
		}
	}
	return fmt.Errorf("no CNI loopback plugin in %v (Debian: containernetworking-plugins)", LoopbackPlugins)
}

// startContainerd starts a node's containerd, waits until its CRI answers
// and imports the lab's images into the CRI's namespace.
func (l *Lab) startContainerd(o Options, n *Node) error {
	dir := containerdDir(l.Name, n.Name)
	c := &Containerd{Dir: dir, Socket: filepath.Join(dir, "containerd.sock"), Log: filepath.Join(dir, "containerd.log"),
		ConfDir: filepath.Join(dir, "net.d")}
	ownView := n.MountNS != ""
	cniBin := l.CNIPath
	if ownView {
		// deploy/'s install-cni puts tortie-cni and its conflist there.
		c.ConfDir, cniBin = "/etc/cni/net.d", "/opt/cni/bin"
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		if err := linkLoopback(l.HostPath(n, cniBin)); err != nil {
			return err
		}
	} else {
		if err := os.MkdirAll(c.ConfDir, 0o755); err != nil {
			return err
		}
		if err := linkLoopback(l.CNIPath); err != nil {
			return err
		}
		list, err := json.MarshalIndent(map[string]any{
			"cniVersion": "1.0.0",
			"name":       NetworkName,
			"plugins":    []any{map[string]any{"type": "tortie", "socket": n.Socket, "mtu": 0}},
		}, "", "  ")
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(c.ConfDir, "10-tortie.conflist"), list, 0o644); err != nil {
			return err
		}
	}
	cfg := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(cfg, []byte(containerdConfig(c, cniBin, ownView)), 0o644); err != nil {
		return err
	}
	logf, err := os.OpenFile(c.Log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	// Only the network namespace is the node's: "ip netns exec" would
	// also give containerd a mount namespace of its own, and the pod
	// network namespaces it mounts would be invisible to tortied, which
	// enters them to attach pods (and to Down, which unmounts them).
	argv := append(inNode(n), "containerd", "--config", cfg)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start containerd: %w", err)
	}
	c.PID = cmd.Process.Pid
	n.Containerd = c
	// The pid file lets Down stop it without the lab's state.
	if err := os.WriteFile(filepath.Join(dir, "containerd.pid"), []byte(strconv.Itoa(c.PID)), 0o644); err != nil {
		return err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	conn, err := c.Dial()
	if err != nil {
		return err
	}
	defer conn.Close()
	rt := cri.NewRuntimeServiceClient(conn)
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		st, err := rt.Status(ctx, &cri.StatusRequest{})
		cancel()
		// On a node of a DaemonSet lab, the network becomes ready only
		// once tortie's install-cni has run.
		if err == nil && runtimeReady(st, !ownView) {
			break
		}
		select {
		case err := <-exited:
			logTail, _ := os.ReadFile(c.Log)
			return fmt.Errorf("containerd exited (%v):\n%s", err, tailLines(string(logTail), 30))
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			logTail, _ := os.ReadFile(c.Log)
			return fmt.Errorf("containerd on %s not ready within 30s (%v):\n%s", n.Name, err, tailLines(string(logTail), 30))
		}
	}
	if o.Images != "" {
		if err := run("ctr", "--address", c.Socket, "--namespace", CRINamespace, "images", "import", o.Images); err != nil {
			return err
		}
	}
	return nil
}

// shareMounts makes dir a mount point with shared propagation, as
// iproute2 does with /run/netns: tortied runs in a mount namespace of its
// own ("ip netns exec" makes one), and the network namespaces containerd
// mounts later under dir must reach it, or tortied cannot enter a pod's
// namespace to attach it.
func shareMounts(dir string) error {
	if err := syscall.Mount(dir, dir, "", syscall.MS_BIND|syscall.MS_REC, ""); err != nil {
		return fmt.Errorf("bind mount %s: %w", dir, err)
	}
	if err := syscall.Mount("", dir, "", syscall.MS_SHARED|syscall.MS_REC, ""); err != nil {
		return fmt.Errorf("make %s shared: %w", dir, err)
	}
	return nil
}

// runtimeReady is whether the CRI reports its runtime (and, with network,
// its network) ready.
func runtimeReady(st *cri.StatusResponse, network bool) bool {
	var rt, nw bool
	for _, c := range st.GetStatus().GetConditions() {
		switch c.Type {
		case cri.RuntimeReady:
			rt = c.Status
		case cri.NetworkReady:
			nw = c.Status
		}
	}
	return rt && (nw || !network)
}

// tailLines is the last n lines of s.
func tailLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// Dial connects to the containerd's gRPC socket, which serves the CRI
// (cri.NewRuntimeServiceClient, cri.NewImageServiceClient) among others.
// The connection is made lazily; Close it when done.
func (c *Containerd) Dial() (*grpc.ClientConn, error) {
	return grpc.NewClient("unix://"+c.Socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
}

// CgroupParent is the cgroup under which pods on a node should run, so
// that Down finds and removes what is left of them.
func (l *Lab) CgroupParent(n *Node) string { return "/tortie-lab/" + l.Name + "/" + n.Name }

// stopContainerds ends what containerds of a lab left running, found from
// their directories alone (it works after a crash): containerd by its pid
// file, every process in a pod network namespace under a node's state
// directory, then the lab's cgroups.
func stopContainerds(name string) []error {
	var errs []error
	dirs, _ := filepath.Glob(filepath.Join(Dir(name), "*-containerd"))
	for _, d := range dirs {
		if b, err := os.ReadFile(filepath.Join(d, "containerd.pid")); err == nil {
			if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && pid > 1 && isContainerd(pid) {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}
	errs = append(errs, killContainers(name)...)
	// Pods' processes are in network namespaces the lab did not name;
	// containerd bind-mounts them under its state directory.
	nsInodes := map[uint64]bool{}
	for _, m := range mountsUnder(Dir(name)) {
		var st syscall.Stat_t
		if m.fstype == "nsfs" && syscall.Stat(m.point, &st) == nil {
			nsInodes[st.Ino] = true
		}
	}
	if len(nsInodes) > 0 {
		procs, _ := os.ReadDir("/proc")
		for _, p := range procs {
			pid, err := strconv.Atoi(p.Name())
			if err != nil || pid <= 1 {
				continue
			}
			// A pod's network namespace, or a node's own mount namespace
			// (DaemonSet labs: its kubelet, containerd and shims).
			for _, kind := range []string{"ns/net", "ns/mnt"} {
				var st syscall.Stat_t
				if syscall.Stat(filepath.Join("/proc", p.Name(), kind), &st) == nil && nsInodes[st.Ino] {
					_ = syscall.Kill(pid, syscall.SIGKILL)
				}
			}
		}
	}
	errs = append(errs, removeCgroups("tortie-lab/"+name)...)
	return errs
}

// RuncRoots are where runc keeps container state, one directory per
// containerd namespace: containerd's default for runtimes without a root
// of their own (containers made with ctr), besides each node's own.
var RuncRoots = []string{"/run/containerd/runc"}

// runcState is the part of runc's state.json that Down reads.
type runcState struct {
	InitPID   int               `json:"init_process_pid"`
	InitStart uint64            `json:"init_process_start"`
	Cgroups   map[string]string `json:"cgroup_paths"`
	Config    struct {
		Rootfs string `json:"rootfs"`
	} `json:"config"`
}

// killContainers ends the containers of a lab's containerds, found from
// runc's state (which survives containerd and its shims): a container
// whose root file system is under the lab's directory is the lab's. It
// kills the container's init (its PID namespace dies with it), removes
// its cgroups and runc's state of it.
func killContainers(name string) []error {
	var errs []error
	dirs, _ := filepath.Glob(filepath.Join(Dir(name), "*-containerd", "runc", "*", "*", "state.json"))
	for _, r := range RuncRoots {
		more, _ := filepath.Glob(filepath.Join(r, "*", "*", "state.json"))
		dirs = append(dirs, more...)
	}
	for _, f := range dirs {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		var st runcState
		if json.Unmarshal(b, &st) != nil || !strings.HasPrefix(st.Config.Rootfs, Dir(name)+"/") {
			continue
		}
		if st.InitPID > 1 && procStart(st.InitPID) == st.InitStart {
			_ = syscall.Kill(st.InitPID, syscall.SIGKILL)
		}
		for _, cg := range st.Cgroups {
			if strings.HasPrefix(cg, "/sys/fs/cgroup/") {
				if err := rmdirCgroup(cg); err != nil {
					errs = append(errs, err)
				}
				_ = syscall.Rmdir(filepath.Dir(cg)) // ctr's per-namespace cgroup, when empty
			}
		}
		if err := os.RemoveAll(filepath.Dir(f)); err != nil {
			errs = append(errs, err)
		}
	}
	return errs
}

// procStart is a process's start time (field 22 of /proc/<pid>/stat), or
// 0 if there is no such process: a pid from a state file is the same
// process only if it started at the same time.
func procStart(pid int) uint64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// The command name, field 2, is in parentheses and may hold spaces.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 20 {
		return 0
	}
	v, _ := strconv.ParseUint(f[19], 10, 64)
	return v
}

// isContainerd tells whether a pid (from a pid file that may be stale) is a
// containerd.
func isContainerd(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	return err == nil && strings.TrimSpace(string(b)) == "containerd"
}

// removeCgroups removes a cgroup and its children in every cgroup v1
// hierarchy (or the v2 one), after killing what is left in them, and
// tortie-lab itself when empty.
func removeCgroups(rel string) []error {
	var errs []error
	roots, _ := filepath.Glob("/sys/fs/cgroup/*")
	roots = append(roots, "/sys/fs/cgroup")
	for _, root := range roots {
		top := filepath.Join(root, rel)
		if _, err := os.Stat(top); err != nil {
			continue
		}
		var dirs []string
		_ = filepath.WalkDir(top, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		slices.Reverse(dirs) // children first
		for _, d := range dirs {
			if err := rmdirCgroup(d); err != nil {
				errs = append(errs, err)
			}
		}
		_ = syscall.Rmdir(filepath.Dir(top)) // tortie-lab, if no other lab uses it
	}
	return errs
}

func rmdirCgroup(d string) error {
	deadline := time.Now().Add(5 * time.Second)
	for {
		b, _ := os.ReadFile(filepath.Join(d, "cgroup.procs"))
		for _, f := range strings.Fields(string(b)) {
			if pid, err := strconv.Atoi(f); err == nil && pid > 1 {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		err := syscall.Rmdir(d)
		if err == nil || errors.Is(err, syscall.ENOENT) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("remove cgroup %s: %w", d, err)
		}
		time.Sleep(10 * time.Millisecond) // killed processes take a moment to leave
	}
}

type mount struct{ point, fstype string }

// mountsUnder lists the mounts at or under dir, deepest first.
func mountsUnder(dir string) []mount {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []mount
	s := bufio.NewScanner(f)
	s.Buffer(make([]byte, 64*1024), 1024*1024)
	for s.Scan() {
		// id parent major:minor root mountpoint options [optional...] - fstype source super
		fields := strings.Fields(s.Text())
		if len(fields) < 10 {
			continue
		}
		sep := slices.Index(fields, "-")
		if sep < 0 || sep+1 >= len(fields) {
			continue
		}
		p := unescapeMount(fields[4])
		if p == dir || strings.HasPrefix(p, dir+"/") {
			out = append(out, mount{point: p, fstype: fields[sep+1]})
		}
	}
	// Deeper paths first; among equal paths the later mount is on top.
	slices.Reverse(out)
	slices.SortStableFunc(out, func(a, b mount) int { return strings.Count(b.point, "/") - strings.Count(a.point, "/") })
	return out
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space...).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// unmountUnder detaches every mount at or under dir (containerd's
// snapshots, pods' rootfs and network namespaces, shm), so that removing
// dir removes only the lab's files.
func unmountUnder(dir string) []error {
	var errs []error
	for _, m := range mountsUnder(dir) {
		if err := syscall.Unmount(m.point, syscall.MNT_DETACH); err != nil && !errors.Is(err, syscall.EINVAL) && !errors.Is(err, syscall.ENOENT) {
			errs = append(errs, fmt.Errorf("unmount %s: %w", m.point, err))
		}
	}
	if left := mountsUnder(dir); len(left) > 0 {
		errs = append(errs, fmt.Errorf("still mounted under %s: %v", dir, left))
	}
	return errs
}
