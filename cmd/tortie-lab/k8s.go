package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/tortie-net/tortie/lab"
	"github.com/tortie-net/tortie/lab/images"
)

// k8sFlags are up's flags for a lab that is a Kubernetes cluster (--k8s).
type k8sFlags struct {
	enabled   bool
	proxyMode string
	binDir    string // the Kubernetes binaries
	coreDNS   string // the CoreDNS binary
	deploy    string // tortie's manifest
}

func (k *k8sFlags) define(fs *flag.FlagSet) {
	fs.BoolVar(&k.enabled, "k8s", false, "make the lab a Kubernetes cluster: a control plane, a kubelet, kube-proxy and containerd on every node, "+
		"tortie deployed as a DaemonSet, CoreDNS; its pods come from Kubernetes (run inside tortie's source tree, which builds the images)")
	fs.StringVar(&k.proxyMode, "proxy-mode", "iptables", "with --k8s: kube-proxy's mode, iptables or nftables")
	fs.StringVar(&k.binDir, "k8s-bin-dir", "", "with --k8s: directory of the Kubernetes binaries (default: make -s k8s-bin-dir)")
	fs.StringVar(&k.coreDNS, "coredns", "", "with --k8s: the CoreDNS binary (default: make -s coredns-bin-path)")
	fs.StringVar(&k.deploy, "deploy", "deploy/tortie.yaml", "with --k8s: the manifest that deploys tortie")
}

// k8sOnlyFlags mean something only with --k8s.
var k8sOnlyFlags = []string{"proxy-mode", "k8s-bin-dir", "coredns", "deploy"}

// apply checks up's options against --k8s (set holds the flags given on
// the command line) and, with --k8s, makes o a DaemonSet lab without lab
// pods. Only the flags are checked here: paths are checked by locate.
func (k *k8sFlags) apply(o *lab.Options, set map[string]bool) error {
	if !k.enabled {
		for _, f := range k8sOnlyFlags {
			if set[f] {
				return fmt.Errorf("--%s needs --k8s", f)
			}
		}
		return nil
	}
	for _, r := range []struct {
		refused bool
		flag    string
		why     string
	}{
		{o.Static, "static", "tortie under Kubernetes keeps the cluster's state in etcd"},
		{o.KernelNodes > 0, "kernel-nodes", "every node of a --k8s lab runs tortie from its DaemonSet"},
		{o.BirdNodes > 0, "bird-nodes", "every node of a --k8s lab runs tortie from its DaemonSet"},
		{o.EtcdTLS, "etcd-tls", "the etcd of a --k8s lab does not use TLS"},
		{set["pods"] && o.Pods > 0, "pods", "the pods of a --k8s lab come from Kubernetes (tortie-lab kubectl)"},
		{set["images"], "images", "a --k8s lab builds its own images"},
		{set["log-level"], "log-level", "tortied runs with the configuration of --deploy's ConfigMap"},
	} {
		if r.refused {
			return fmt.Errorf("--k8s and --%s: %s", r.flag, r.why)
		}
	}
	if k.proxyMode != "iptables" && k.proxyMode != "nftables" {
		return fmt.Errorf("--proxy-mode %q: iptables or nftables", k.proxyMode)
	}
	o.DaemonSet, o.Pods = true, 0
	return nil
}

// k8sCommands are the Kubernetes binaries a --k8s lab runs.
var k8sCommands = []string{"kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy", "kubectl"}

// locate checks that up --k8s can run from dir: it is tortie's source
// tree (the lab's images are built from it), and everything the cluster
// runs is there. The Kubernetes binaries and CoreDNS are by default where
// the Makefile builds them; tortie's image is made of the programs next
// to tortied.
func (k *k8sFlags) locate(dir, tortied string) error {
	if !inSourceTree(dir) {
		return errors.New("--k8s builds the lab's images (pause, echo) from tortie's source: run it at the root of tortie's source tree")
	}
	var err error
	if k.binDir == "" {
		if k.binDir, err = makeOutput(dir, "k8s-bin-dir"); err != nil {
			return fmt.Errorf("finding the Kubernetes binaries (or give --k8s-bin-dir): %w", err)
		}
	}
	if k.coreDNS == "" {
		if k.coreDNS, err = makeOutput(dir, "coredns-bin-path"); err != nil {
			return fmt.Errorf("finding CoreDNS (or give --coredns): %w", err)
		}
	}
	var missing []string
	for _, c := range k8sCommands {
		if !isFile(filepath.Join(k.binDir, c)) {
			missing = append(missing, c)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("%s missing in %s (make k8s-bins builds them)", strings.Join(missing, ", "), k.binDir)
	}
	if !isFile(k.coreDNS) {
		return fmt.Errorf("no CoreDNS at %s (make coredns-bin builds it)", k.coreDNS)
	}
	if !isFile(k.deploy) {
		return fmt.Errorf("no manifest at %s (--deploy)", k.deploy)
	}
	for _, b := range images.TortiePrograms {
		p := filepath.Join(filepath.Dir(tortied), b)
		if !isFile(p) {
			return fmt.Errorf("no %s at %s: tortie's image is made of %s from one directory (make build puts them in bin/)",
				b, p, strings.Join(images.TortiePrograms, ", "))
		}
	}
	return nil
}

// inSourceTree tells whether dir is the root of tortie's module.
func inSourceTree(dir string) bool {
	b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) == 2 && f[0] == "module" {
			return f[1] == "github.com/tortie-net/tortie"
		}
	}
	return false
}

// makeOutput is what a printing target of the Makefile in dir prints.
func makeOutput(dir, target string) (string, error) {
	cmd := exec.Command("make", "-s", "--no-print-directory", target)
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("make -s %s: %v: %s", target, err, strings.TrimSpace(stderr.String()))
	}
	s := strings.TrimSpace(string(out))
	if s == "" || strings.ContainsAny(s, "\n") {
		return "", fmt.Errorf("make -s %s printed %q, want one path", target, s)
	}
	return s, nil
}

func isFile(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular()
}

// upK8s builds a --k8s lab: the images (pause and echo from source,
// tortie's from the binaries next to tortied, CoreDNS), the lab with a
// containerd per node, the control plane, a kubelet and kube-proxy per
// node, tortie from its manifest, and CoreDNS once every node is Ready.
// The cluster's processes run in sessions of their own and outlive this
// one; `tortie-lab down` ends them.
func upK8s(o lab.Options, k k8sFlags, out io.Writer) error {
	start := time.Now()
	step := func(format string, a ...any) {
		fmt.Fprintf(out, "== %s  [%v]\n", fmt.Sprintf(format, a...), time.Since(start).Round(time.Second))
	}
	if err := k.locate(".", o.Tortied); err != nil {
		return err
	}
	ctx := context.Background()
	work, err := os.MkdirTemp("", "tortie-lab-images-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	step("images: %s, %s, %s, %s", images.Pause, images.Echo, images.Tortie, images.CoreDNS)
	tortie, err := images.TortieImage(ctx, filepath.Dir(o.Tortied))
	if err != nil {
		return err
	}
	dns, err := images.BinaryImage(images.CoreDNS, k.coreDNS)
	if err != nil {
		return err
	}
	o.Images = filepath.Join(work, "images.tar")
	if err := images.Lab(ctx, ".", work, o.Images, tortie, dns); err != nil {
		return err
	}
	step("lab %s: %d nodes, %s, a containerd on each", o.Name, o.Nodes, o.Mode)
	l, err := lab.Up(o) // removes what it built if it fails
	if err != nil {
		return err
	}
	// Interrupted from here on, the lab is left for its logs.
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	cp, err := startCluster(ctx, l, k, step)
	if err != nil {
		return fmt.Errorf("%w\nthe lab is left as it is for its logs (%s); remove it with: %s down --name %s",
			err, lab.Dir(l.Name), os.Args[0], l.Name)
	}
	fmt.Fprintf(out, "\ncluster up in %v\n\n", time.Since(start).Round(time.Second))
	show(l)
	for _, args := range [][]string{{"get", "nodes", "-o", "wide"}, {"get", "pods", "-A", "-o", "wide"}, {"get", "services", "-A"}} {
		c, cancel := context.WithTimeout(ctx, 30*time.Second)
		text, err := cp.Kubectl(c, args...)
		cancel()
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "\n$ kubectl %s\n%s", strings.Join(args, " "), text)
	}
	argv, err := l.KubectlCommand("get", "pods", "-A")
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "\nkubectl as the cluster's administrator, from the lab's fabric namespace (where the API server is):\n"+
		"  %s kubectl --name %s -- get pods -A\n  %s\nremove the lab with: %s down --name %s\n",
		os.Args[0], l.Name, strings.Join(argv, " "), os.Args[0], l.Name)
	return nil
}

// startCluster runs Kubernetes on a DaemonSet lab and deploys tortie and
// CoreDNS on it.
func startCluster(ctx context.Context, l *lab.Lab, k k8sFlags, step func(string, ...any)) (*lab.ControlPlane, error) {
	step("control plane in %s: kube-apiserver, kube-controller-manager, kube-scheduler", l.Fabric)
	cp, err := l.StartControlPlane(k.binDir)
	if err != nil {
		return nil, err
	}
	step("every node: a kubelet, kube-proxy (%s)", k.proxyMode)
	for _, n := range l.Nodes {
		if err := l.StartKubelet(cp, k.binDir, n, n.Containerd.Socket); err != nil {
			return nil, err
		}
		if err := l.StartKubeProxy(cp, k.binDir, n, k.proxyMode); err != nil {
			return nil, err
		}
	}
	step("tortie from %s: the DaemonSet on every node, then the IP pool", k.deploy)
	if err := cp.DeployTortie(ctx, l, k.deploy); err != nil {
		return nil, err
	}
	step("waiting for every node to be Ready")
	c, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	if err := cp.WaitNodesReady(c, l); err != nil {
		return nil, err
	}
	step("CoreDNS behind the kube-dns Service (%s)", lab.ClusterDNSIP)
	return cp, cp.DeployCoreDNS(ctx, images.CoreDNS)
}

// kubectl runs kubectl against a lab's cluster, its output and exit
// status passed on.
func kubectl(name string, args []string) error {
	l, err := lab.Load(name)
	if err != nil {
		return err
	}
	argv, err := l.KubectlCommand(args...)
	if err != nil {
		return err
	}
	return passThrough(argv)
}

// exitCode is the exit status of a program whose output went to the
// user: tortie-lab exits with it and adds nothing.
type exitCode int

func (e exitCode) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

// passThrough runs argv on this process's standard input and output.
func passThrough(argv []string) error {
	c := exec.Command(argv[0], argv[1:]...)
	c.Stdin, c.Stdout, c.Stderr = os.Stdin, os.Stdout, os.Stderr
	err := c.Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		return err
	}
	if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return exitCode(128 + int(ws.Signal())) // as a shell reports it
	}
	return exitCode(ee.ExitCode())
}

// echoManifest is the demonstration's workload: one echo pod per node
// (the topology spread) behind the Service echo, port 80 to their 8080.
// The image is in every node's containerd already: never pulled.
const echoManifest = `apiVersion: apps/v1
kind: Deployment
metadata: {name: echo, namespace: default}
spec:
  replicas: %d
  selector: {matchLabels: {app: echo}}
  template:
    metadata: {labels: {app: echo}}
    spec:
      topologySpreadConstraints:
        - {maxSkew: 1, topologyKey: kubernetes.io/hostname, whenUnsatisfiable: DoNotSchedule, labelSelector: {matchLabels: {app: echo}}}
      containers:
        - name: echo
          image: %s
          imagePullPolicy: Never
          ports: [{containerPort: 8080}]
          readinessProbe:
            httpGet: {path: /healthz, port: 8080}
            periodSeconds: 2
---
apiVersion: v1
kind: Service
metadata: {name: echo, namespace: default}
spec:
  selector: {app: echo}
  ports: [{port: 80, targetPort: 8080}]
`

// k8sDemo shows a --k8s lab at work: a Deployment of echo pods, one per
// node, behind a Service; from one of them, the names kubernetes.default
// and echo resolved through CoreDNS, and the Service reached by name,
// which answers from pods on other nodes. It fails if a name does not
// resolve or the Service does not answer.
func k8sDemo(name string, out io.Writer) error {
	l, err := lab.Load(name)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	// kc runs kubectl (stdin, if not empty, on its standard input); shown,
	// it prints the command and its output.
	kc := func(shown bool, stdin string, args ...string) (string, error) {
		argv, err := l.KubectlCommand(args...)
		if err != nil {
			return "", err
		}
		c, cancel := context.WithTimeout(ctx, 3*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(c, argv[0], argv[1:]...)
		cmd.Stdin = strings.NewReader(stdin)
		b, err := cmd.CombinedOutput()
		if shown {
			fmt.Fprintf(out, "$ kubectl %s\n%s", strings.Join(args, " "), b)
		}
		if err != nil {
			return string(b), fmt.Errorf("kubectl %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(b)))
		}
		return string(b), nil
	}
	fmt.Fprintf(out, "== a Deployment of %d echo pods (%s), one per node, behind the Service echo (port 80 to 8080)\n", len(l.Nodes), images.Echo)
	if _, err := kc(true, fmt.Sprintf(echoManifest, len(l.Nodes), images.Echo), "apply", "-f", "-"); err != nil {
		return err
	}
	if _, err := kc(true, "", "rollout", "status", "deployment/echo", "--timeout=180s"); err != nil {
		return err
	}
	if _, err := kc(true, "", "get", "pods", "-l", "app=echo", "-o", "wide"); err != nil {
		return err
	}
	if _, err := kc(true, "", "get", "service", "echo"); err != nil {
		return err
	}
	pods, err := kc(false, "", "get", "pods", "-l", "app=echo", "--field-selector", "status.phase=Running", "-o",
		`jsonpath={range .items[*]}{.metadata.name} {.spec.nodeName} {.status.podIP}{"\n"}{end}`)
	if err != nil {
		return err
	}
	client := strings.Fields(pods)
	if len(client) < 3 {
		return fmt.Errorf("no echo pod running: %q", pods)
	}
	fmt.Fprintf(out, "\n== from pod %s on %s (%s): names through CoreDNS, then the Service by name\n", client[0], client[1], client[2])
	inPod := func(args ...string) (string, error) {
		return kc(true, "", append([]string{"exec", client[0], "--", "/tortie-echo"}, args...)...)
	}
	ip, err := inPod("resolve", "kubernetes.default")
	if err != nil {
		return err
	}
	if strings.TrimSpace(ip) != lab.KubernetesServiceIP {
		return fmt.Errorf("kubernetes.default resolved to %q, want %s", strings.TrimSpace(ip), lab.KubernetesServiceIP)
	}
	if _, err := inPod("resolve", "echo"); err != nil {
		return err
	}
	answered := map[string]bool{}
	for range 2 * len(l.Nodes) {
		reply, err := inPod("get", "http://echo/")
		if err != nil {
			return err
		}
		host := echoHost(reply)
		if !strings.HasPrefix(host, "echo-") {
			return fmt.Errorf("the Service echo answered %q, not an echo pod", strings.TrimSpace(reply))
		}
		answered[host] = true
	}
	fmt.Fprintf(out, "\nthe Service echo answered from %d of its %d pods, by name, through kube-proxy and tortie\n",
		len(answered), strings.Count(pods, "\n"))
	return nil
}

// echoHost is the pod that wrote tortie-echo's reply, or "" if it is not
// one.
func echoHost(reply string) string {
	var r struct {
		Hostname string `json:"hostname"`
	}
	if json.Unmarshal([]byte(reply), &r) != nil {
		return ""
	}
	return r.Hostname
}
