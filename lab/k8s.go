package lab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/tortie-net/tortie/config"
	"github.com/tortie-net/tortie/internal/pki"
	"github.com/tortie-net/tortie/lab/images"
)

// The lab's Kubernetes control plane runs in the fabric namespace, on the
// first subnet's router address, which every node reaches.
const (
	// APIServerAddr is where the lab's kube-apiserver listens (port 6443).
	APIServerAddr = "10.0.1.254"
	// ServiceCIDR is the Services' cluster IP range.
	ServiceCIDR = "10.96.0.0/12"
	// KubernetesServiceIP is the first address of ServiceCIDR, the
	// `kubernetes` Service in the default namespace.
	KubernetesServiceIP = "10.96.0.1"
	// ClusterDNSIP is the cluster DNS Service's address, which kubelets
	// give pods as their name server.
	ClusterDNSIP = "10.96.0.10"
	// PoolCIDR is the lab's IP pool: the cluster CIDR kube-proxy knows.
	PoolCIDR = "10.244.0.0/16"
)

// ControlPlane is a running lab control plane: kube-apiserver on the lab's
// etcd, kube-controller-manager and kube-scheduler, with a PKI of its own.
type ControlPlane struct {
	Dir        string // certificates, kubeconfigs and logs
	Server     string // https://10.0.1.254:6443
	Admin      string // kubeconfig of a cluster administrator (system:masters)
	KubectlBin string // the kubectl binary
	fabric     string
	ca         *pki.CA

	mu    sync.Mutex
	procs map[string]*proc // by log name
}

// proc is a process the control plane started, reaped by its own goroutine.
type proc struct {
	cmd  *exec.Cmd
	done chan struct{}
}

// k8sDir holds the lab's Kubernetes state.
func (l *Lab) k8sDir() string { return filepath.Join(Dir(l.Name), "k8s") }

// StartControlPlane makes the control plane's PKI and kubeconfigs and runs
// kube-apiserver, kube-controller-manager and kube-scheduler (from binDir,
// as `make k8s-bins` builds them) in the fabric namespace, on the lab's
// etcd. It returns once the API server is ready.
func (l *Lab) StartControlPlane(binDir string) (*ControlPlane, error) {
	if !l.Datastore || l.EtcdURL == "" {
		return nil, errors.New("lab: a control plane needs a datastore lab (its etcd)")
	}
	for _, b := range []string{"kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl"} {
		if _, err := os.Stat(filepath.Join(binDir, b)); err != nil {
			return nil, fmt.Errorf("lab: %s missing in %s (make k8s-bins builds it)", b, binDir)
		}
	}
	binDir, err := filepath.Abs(binDir)
	if err != nil {
		return nil, err
	}
	cp := &ControlPlane{Dir: l.k8sDir(), Server: "https://" + APIServerAddr + ":6443", KubectlBin: filepath.Join(binDir, "kubectl"),
		fabric: l.Fabric, procs: map[string]*proc{}}
	pkiDir := filepath.Join(cp.Dir, "pki")
	ca, err := pki.NewCA("tortie-lab-kubernetes")
	if err != nil {
		return nil, err
	}
	cp.ca = ca
	serving, err := ca.WriteIssued(pkiDir, "apiserver", pki.Server, APIServerAddr, KubernetesServiceIP, "127.0.0.1", "localhost",
		"kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local")
	if err != nil {
		return nil, err
	}
	saKey, saPub := filepath.Join(pkiDir, "sa.key"), filepath.Join(pkiDir, "sa.pub")
	if err := pki.WriteKeyPair(saKey, saPub); err != nil {
		return nil, err
	}
	kubeconfig := func(file, user string, groups ...string) (string, error) {
		f, err := ca.WriteIssuedGroups(pkiDir, file, user, groups, pki.Client)
		if err != nil {
			return "", err
		}
		return cp.writeKubeconfig(file, f)
	}
	if cp.Admin, err = kubeconfig("admin", "kubernetes-admin", "system:masters"); err != nil {
		return nil, err
	}
	kcm, err := kubeconfig("kube-controller-manager", "system:kube-controller-manager")
	if err != nil {
		return nil, err
	}
	sched, err := kubeconfig("kube-scheduler", "system:kube-scheduler")
	if err != nil {
		return nil, err
	}
	kubeletClient, err := ca.WriteIssuedGroups(pkiDir, "apiserver-kubelet-client", "kube-apiserver-kubelet-client",
		[]string{"system:masters"}, pki.Client)
	if err != nil {
		return nil, err
	}
	apiArgs := []string{
		"--advertise-address", APIServerAddr, "--bind-address", APIServerAddr, "--secure-port", "6443",
		"--etcd-servers", l.EtcdURL, "--etcd-prefix", "/registry",
		"--tls-cert-file", serving.Cert, "--tls-private-key-file", serving.Key, "--client-ca-file", serving.CA,
		"--kubelet-client-certificate", kubeletClient.Cert, "--kubelet-client-key", kubeletClient.Key,
		"--kubelet-preferred-address-types", "InternalIP,Hostname",
		"--service-account-issuer", "https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file", saPub, "--service-account-signing-key-file", saKey,
		"--service-cluster-ip-range", ServiceCIDR, "--authorization-mode", "Node,RBAC", "--allow-privileged",
		"--enable-admission-plugins", "NodeRestriction", "--profiling=false",
	}
	if f := l.EtcdClientFiles(); f.Cert != "" {
		apiArgs = append(apiArgs, "--etcd-cafile", f.CA, "--etcd-certfile", f.Cert, "--etcd-keyfile", f.Key)
	}
	if err := cp.start(binDir, "kube-apiserver", apiArgs...); err != nil {
		return nil, err
	}
	if err := cp.waitReady(90 * time.Second); err != nil {
		return nil, err
	}
	if err := cp.start(binDir, "kube-controller-manager", "--kubeconfig", kcm, "--authentication-kubeconfig", kcm,
		"--authorization-kubeconfig", kcm, "--bind-address", "127.0.0.1", "--leader-elect=false",
		"--service-account-private-key-file", saKey, "--root-ca-file", serving.CA, "--use-service-account-credentials",
		"--controllers", "*,-nodeipam", "--service-cluster-ip-range", ServiceCIDR); err != nil {
		return nil, err
	}
	if err := cp.start(binDir, "kube-scheduler", "--kubeconfig", sched, "--authentication-kubeconfig", sched,
		"--authorization-kubeconfig", sched, "--bind-address", "127.0.0.1", "--leader-elect=false"); err != nil {
		return nil, err
	}
	l.K8sBinDir = binDir
	return cp, l.save()
}

// AdminKubeconfig is the kubeconfig of the cluster administrator
// (system:masters) of the lab's control plane: ControlPlane.Admin, where
// StartControlPlane writes it.
func (l *Lab) AdminKubeconfig() string { return filepath.Join(l.k8sDir(), "admin.kubeconfig") }

// KubectlCommand is the command line that runs kubectl with args as the
// administrator of the lab's cluster. It runs in the fabric namespace: the
// API server's address is reachable only from inside the lab.
func (l *Lab) KubectlCommand(args ...string) ([]string, error) {
	if l.K8sBinDir == "" {
		return nil, fmt.Errorf("lab %s runs no Kubernetes control plane (tortie-lab up --k8s starts one)", l.Name)
	}
	return append([]string{"ip", "netns", "exec", l.Fabric, filepath.Join(l.K8sBinDir, "kubectl"), "--kubeconfig", l.AdminKubeconfig()}, args...), nil
}

// writeKubeconfig writes a kubeconfig for the client certificate f and
// returns its path.
func (cp *ControlPlane) writeKubeconfig(name string, f pki.Files) (string, error) {
	path := filepath.Join(cp.Dir, name+".kubeconfig")
	body := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: tortie-lab
  cluster:
    server: %s
    certificate-authority: %s
users:
- name: %s
  user:
    client-certificate: %s
    client-key: %s
contexts:
- name: default
  context: {cluster: tortie-lab, user: %s}
current-context: default
`, cp.Server, f.CA, name, f.Cert, f.Key, name)
	return path, os.WriteFile(path, []byte(body), 0o600)
}

// start runs a control-plane binary in the fabric namespace, logging to
// <dir>/<name>.log. lab.Down ends it with the namespace's other processes.
func (cp *ControlPlane) start(binDir, name string, args ...string) error {
	return cp.run(name, append([]string{"ip", "netns", "exec", cp.fabric, filepath.Join(binDir, name)}, args...)...)
}

// run starts argv in its own session, logging to <dir>/<log>.log, and
// reaps it when it ends.
func (cp *ControlPlane) run(log string, argv ...string) error {
	logf, err := os.OpenFile(filepath.Join(cp.Dir, log+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("lab: %s: %w", log, err)
	}
	p := &proc{cmd: cmd, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		close(p.done)
	}()
	cp.mu.Lock()
	cp.procs[log] = p
	cp.mu.Unlock()
	return nil
}

// stop kills the process started under log name and waits until it ended.
func (cp *ControlPlane) stop(log string) error {
	cp.mu.Lock()
	p := cp.procs[log]
	delete(cp.procs, log)
	cp.mu.Unlock()
	if p == nil {
		return fmt.Errorf("lab: no %s running", log)
	}
	_ = p.cmd.Process.Kill()
	select {
	case <-p.done:
		return nil
	case <-time.After(30 * time.Second):
		return fmt.Errorf("lab: %s did not end within 30s of SIGKILL", log)
	}
}

// ConnectKubernetes gives every tortie node's tortied the control plane's
// API (its config's kubernetes section, with the administrator's
// kubeconfig) and restarts it (a planned restart): network policy then
// reads the Kubernetes objects, and with BGP the nodes advertise the
// addresses of Services with local endpoints. Labs whose tortied runs as
// a DaemonSet get the API from their pods instead.
func (l *Lab) ConnectKubernetes(cp *ControlPlane) error {
	if l.DaemonSet {
		return errors.New("lab: a DaemonSet lab's tortied reaches the API as its pods do")
	}
	for _, n := range l.Nodes {
		if n.Kernel {
			continue
		}
		path := filepath.Join(Dir(l.Name), n.Name+".yaml")
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		var cfg config.File
		if err := yaml.Unmarshal(b, &cfg); err != nil {
			return fmt.Errorf("lab: %s: %w", path, err)
		}
		cfg.Kubernetes = &config.Kubernetes{Kubeconfig: cp.Admin}
		if b, err = yaml.Marshal(cfg); err != nil {
			return err
		}
		if err := os.WriteFile(path, b, 0o644); err != nil {
			return err
		}
		if err := l.Restart(n, false); err != nil {
			return fmt.Errorf("lab: node %s: %w", n.Name, err)
		}
	}
	return nil
}

// StopKubelet kills node n's kubelet (as a crash or an upgrade would) and
// waits until it is gone; its pods keep running under containerd.
// StartKubelet starts it again on the same root directory.
func (cp *ControlPlane) StopKubelet(n *Node) error { return cp.stop("kubelet-" + n.Name) }

// Kubectl runs kubectl as the cluster administrator, from the fabric
// namespace, and returns its output.
func (cp *ControlPlane) Kubectl(ctx context.Context, args ...string) (string, error) {
	full := append([]string{"netns", "exec", cp.fabric, cp.KubectlBin, "--kubeconfig", cp.Admin}, args...)
	out, err := exec.CommandContext(ctx, "ip", full...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("kubectl %s: %w: %s", strings.Join(args, " "), err, tailLines(string(out), 5))
	}
	return string(out), nil
}

// WaitNodesReady polls the API server until every node of the lab is
// registered and Ready, or ctx ends.
func (cp *ControlPlane) WaitNodesReady(ctx context.Context, l *Lab) error {
	var last string
	for {
		c, cancel := context.WithTimeout(ctx, 10*time.Second)
		out, err := cp.Kubectl(c, "get", "nodes", "-o", `jsonpath={range .items[*]}{.metadata.name}={.status.conditions[?(@.type=="Ready")].status} {end}`)
		cancel()
		if err == nil {
			last = out
			if nodesReady(out, l.Nodes) {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("lab: nodes not all Ready (%q): %w", strings.TrimSpace(last), ctx.Err())
		case <-time.After(time.Second):
		}
	}
}

// nodesReady tells whether every node is "<name>=True" in out, a list of
// such words.
func nodesReady(out string, nodes []*Node) bool {
	ready := strings.Fields(out)
	for _, n := range nodes {
		if !slices.Contains(ready, n.Name+"=True") {
			return false
		}
	}
	return true
}

// waitReady polls the API server's /readyz until it answers ok.
func (cp *ControlPlane) waitReady(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var last string
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		out, err := cp.Kubectl(ctx, "get", "--raw", "/readyz")
		cancel()
		if err == nil && strings.TrimSpace(out) == "ok" {
			return nil
		}
		last = out
		time.Sleep(200 * time.Millisecond)
	}
	logTail, _ := os.ReadFile(filepath.Join(cp.Dir, "kube-apiserver.log"))
	return fmt.Errorf("lab: kube-apiserver not ready within %v: %s\nkube-apiserver log:\n%s", timeout, last, tailLines(string(logTail), 15))
}

// StartKubeProxy runs kube-proxy (from binDir) on node n in mode
// "iptables" or "nftables", as user system:kube-proxy (whose RBAC binding
// the API server creates), with the lab's pools as its cluster CIDR.
func (l *Lab) StartKubeProxy(cp *ControlPlane, binDir string, n *Node, mode string) error {
	if mode != "iptables" && mode != "nftables" {
		return fmt.Errorf("lab: kube-proxy mode %q: want iptables or nftables", mode)
	}
	f, err := cp.ca.WriteIssuedGroups(filepath.Join(cp.Dir, "pki"), "kube-proxy-"+n.Name, "system:kube-proxy", nil, pki.Client)
	if err != nil {
		return err
	}
	kc, err := cp.writeKubeconfig("kube-proxy-"+n.Name, f)
	if err != nil {
		return err
	}
	conf := filepath.Join(cp.Dir, "kube-proxy-"+n.Name+".yaml")
	body := fmt.Sprintf(`apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: %s}
mode: %s
clusterCIDR: %s
hostnameOverride: %s
bindAddress: %s
metricsBindAddress: 127.0.0.1:10249
healthzBindAddress: 127.0.0.1:10256
conntrack: {maxPerCore: 0, min: 0}
`, kc, mode, PoolCIDR, n.Name, n.Addr())
	if err := os.WriteFile(conf, []byte(body), 0o644); err != nil {
		return err
	}
	return cp.run("kube-proxy-"+n.Name, "ip", "netns", "exec", n.Netns, filepath.Join(binDir, "kube-proxy"), "--config", conf)
}

// StartKubelet runs a kubelet (from binDir) for node n in the node's
// network namespace, with its own root directory and the container runtime
// at criSocket (a containerd of the node's own). Several kubelets share
// this machine: each has its own root, and none manages QoS cgroups or
// node-allocatable enforcement (cgroupsPerQOS false), which would make
// them fight over the machine's cgroup tree. cgroup v1 is allowed
// (failCgroupV1 false), as are swap and a nearly full disk (no eviction).
func (l *Lab) StartKubelet(cp *ControlPlane, binDir string, n *Node, criSocket string) error {
	dir := filepath.Join(cp.Dir, "kubelet-"+n.Name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	pkiDir := filepath.Join(cp.Dir, "pki")
	client, err := cp.ca.WriteIssuedGroups(pkiDir, "kubelet-"+n.Name, "system:node:"+n.Name, []string{"system:nodes"}, pki.Client)
	if err != nil {
		return err
	}
	kc, err := cp.writeKubeconfig("kubelet-"+n.Name, client)
	if err != nil {
		return err
	}
	serving, err := cp.ca.WriteIssued(pkiDir, "kubelet-serving-"+n.Name, pki.Server, n.Addr(), n.Name)
	if err != nil {
		return err
	}
	conf := filepath.Join(dir, "config.yaml")
	body := fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: %s}
authorization: {mode: Webhook}
tlsCertFile: %s
tlsPrivateKeyFile: %s
address: %s
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
containerRuntimeEndpoint: unix://%s
cgroupDriver: cgroupfs
cgroupsPerQOS: false
enforceNodeAllocatable: []
failSwapOn: false
failCgroupV1: false
clusterDomain: cluster.local
clusterDNS: [%s]
resolvConf: ""
evictionHard: {memory.available: "0%%", nodefs.available: "0%%", nodefs.inodesFree: "0%%", imagefs.available: "0%%"}
imageGCHighThresholdPercent: 100
serializeImagePulls: false
`, client.CA, serving.Cert, serving.Key, n.Addr(), criSocket, ClusterDNSIP)
	if err := os.WriteFile(conf, []byte(body), 0o644); err != nil {
		return err
	}
	// nsenter, not `ip netns exec`: the latter gives the kubelet a mount
	// namespace of its own with a fresh /sys, where the cgroup hierarchy it
	// manages is not mounted (and where containerd's pod namespaces would
	// not be seen). On a node with a view of its own, the kubelet shares
	// it with its containerd: the host paths of pods' volumes are the same
	// for both.
	argv := append(inNode(n), filepath.Join(binDir, "kubelet"), "--config", conf,
		"--kubeconfig", kc, "--root-dir", filepath.Join(dir, "root"), "--hostname-override", n.Name, "--node-ip", n.Addr())
	started := time.Now()
	if err := cp.run("kubelet-"+n.Name, argv...); err != nil {
		return err
	}
	if n.MountNS == "" {
		// Without a view of its own the node shares the device-plugin
		// directory with every other kubelet here: the next one starts
		// only once this one has bound its socket there (or a minute has
		// passed), so that none empties the directory between another's
		// clean-up and bind.
		sock := filepath.Join(DevicePluginDir, "kubelet.sock")
		for deadline := started.Add(time.Minute); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
			if fi, err := os.Stat(sock); err == nil && !fi.ModTime().Before(started.Truncate(time.Second)) {
				break
			}
		}
	}
	return nil
}

// coreDNSManifest is CoreDNS as kubeadm deploys it, trimmed to what a lab
// needs: its RBAC, its Corefile (the kubernetes plugin for cluster.local,
// health and readiness), two replicas, and the kube-dns Service at
// ClusterDNSIP. CoreDNS reaches the API server through the `kubernetes`
// Service, so kube-proxy must run on the nodes.
const coreDNSManifest = `apiVersion: v1
kind: ServiceAccount
metadata: {name: coredns, namespace: kube-system}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: "system:coredns"}
rules:
  - apiGroups: [""]
    resources: [endpoints, services, pods, namespaces]
    verbs: [list, watch]
  - apiGroups: [discovery.k8s.io]
    resources: [endpointslices]
    verbs: [list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: "system:coredns"}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "system:coredns"}
subjects: [{kind: ServiceAccount, name: coredns, namespace: kube-system}]
---
apiVersion: v1
kind: ConfigMap
metadata: {name: coredns, namespace: kube-system}
data:
  Corefile: |
    .:53 {
        errors
        health :8080
        ready :8181
        kubernetes cluster.local in-addr.arpa ip6.arpa {
            pods insecure
            fallthrough in-addr.arpa ip6.arpa
        }
        cache 30
    }
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: coredns, namespace: kube-system, labels: {k8s-app: kube-dns}}
spec:
  replicas: 2
  selector: {matchLabels: {k8s-app: kube-dns}}
  template:
    metadata: {labels: {k8s-app: kube-dns}}
    spec:
      serviceAccountName: coredns
      dnsPolicy: Default
      containers:
        - name: coredns
          image: %s
          imagePullPolicy: Never
          args: [-conf, /etc/coredns/Corefile]
          ports:
            - {name: dns, containerPort: 53, protocol: UDP}
            - {name: dns-tcp, containerPort: 53, protocol: TCP}
          readinessProbe:
            httpGet: {path: /ready, port: 8181}
            periodSeconds: 2
          livenessProbe:
            httpGet: {path: /health, port: 8080}
          volumeMounts: [{name: config, mountPath: /etc/coredns, readOnly: true}]
      volumes:
        - name: config
          configMap: {name: coredns, items: [{key: Corefile, path: Corefile}]}
---
apiVersion: v1
kind: Service
metadata: {name: kube-dns, namespace: kube-system, labels: {k8s-app: kube-dns}}
spec:
  selector: {k8s-app: kube-dns}
  clusterIP: %s
  ports:
    - {name: dns, port: 53, protocol: UDP}
    - {name: dns-tcp, port: 53, protocol: TCP}
`

// DeployCoreDNS applies CoreDNS (image, e.g. images.CoreDNS) with its
// Service at ClusterDNSIP and waits until its replicas are ready.
func (cp *ControlPlane) DeployCoreDNS(ctx context.Context, image string) error {
	path := filepath.Join(cp.Dir, "coredns.yaml")
	if err := os.WriteFile(path, []byte(fmt.Sprintf(coreDNSManifest, image, ClusterDNSIP)), 0o644); err != nil {
		return err
	}
	if _, err := cp.Kubectl(ctx, "apply", "-f", path); err != nil {
		return err
	}
	_, err := cp.Kubectl(ctx, "-n", "kube-system", "rollout", "status", "deployment/coredns", "--timeout=120s")
	return err
}

// RenderDeploy adapts deploy/tortie.yaml to the lab as its comments tell
// a user to: the ConfigMap's etcd endpoints become the lab's, and its
// route source is bgp in a BGP lab. Everything else is applied as shipped.
func (l *Lab) RenderDeploy(manifest []byte) ([]byte, error) {
	if !bytes.Contains(manifest, []byte("image: "+images.Tortie)) {
		return nil, fmt.Errorf("lab: the manifest does not run %s", images.Tortie)
	}
	endpoints := []string{l.EtcdURL}
	if len(l.Etcd) > 0 {
		endpoints = endpoints[:0]
		for _, m := range l.Etcd {
			endpoints = append(endpoints, m.ClientURL)
		}
	}
	source := config.RouteSourceDatastore
	if l.BGP {
		source = config.RouteSourceBGP
	}
	for _, r := range []struct {
		re    *regexp.Regexp
		value string
	}{
		{etcdEndpointsLine, "[" + strings.Join(endpoints, ", ") + "]"},
		{routeSourceLine, source},
	} {
		if n := len(r.re.FindAllIndex(manifest, -1)); n != 1 {
			return nil, fmt.Errorf("lab: the manifest has %d lines matching %s, want 1", n, r.re)
		}
		manifest = r.re.ReplaceAll(manifest, []byte("${1} "+r.value))
	}
	return manifest, nil
}

var (
	etcdEndpointsLine = regexp.MustCompile(`(?m)^(\s+etcdEndpoints:) .*$`)
	routeSourceLine   = regexp.MustCompile(`(?m)^(\s+routeSource:) .*$`)
)

// DeployTortie runs tortie on the nodes of a DaemonSet lab as users run
// it: it applies manifest (deploy/tortie.yaml, through RenderDeploy) with
// kubectl, waits until the DaemonSet's pods are ready on every node, and
// then creates the lab's IP pool (and Options.Manifest) through n1's
// tortied. The nodes become Ready once install-cni has written their CNI
// configuration; the tortie image (images.Tortie) must be in the lab's
// images.
func (cp *ControlPlane) DeployTortie(ctx context.Context, l *Lab, manifest string) error {
	if !l.DaemonSet {
		return errors.New("lab: DeployTortie needs a DaemonSet lab (Options.DaemonSet)")
	}
	b, err := os.ReadFile(manifest)
	if err != nil {
		return err
	}
	if b, err = l.RenderDeploy(b); err != nil {
		return err
	}
	path := filepath.Join(cp.Dir, "tortie.yaml")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		return err
	}
	if _, err := cp.Kubectl(ctx, "apply", "-f", path); err != nil {
		return err
	}
	if _, err := cp.Kubectl(ctx, "-n", "kube-system", "rollout", "status", "daemonset/tortie-node", "--timeout=180s"); err != nil {
		return err
	}
	for _, m := range []string{l.PoolManifest(), l.Manifest} {
		if m == "" {
			continue
		}
		if err := l.Apply(m); err != nil {
			return err
		}
	}
	return nil
}
