// Package kubetest runs a real kube-apiserver for tests of what tortie keeps
// in the Kubernetes API: the API server alone (no controller manager, no
// scheduler, no kubelet) on an embedded etcd of its own, with the
// CustomResourceDefinitions of deploy.CRDs installed. It uses Kubernetes'
// own binaries, as `make k8s-bins` builds them.
package kubetest

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/yaml"

	"github.com/tortie-net/tortie/datastore"
	"github.com/tortie-net/tortie/datastore/etcdtest"
	"github.com/tortie-net/tortie/deploy"
	"github.com/tortie-net/tortie/internal/pki"
)

// BinDirEnv names the directory of Kubernetes' binaries. When it is set, a
// test that needs kube-apiserver fails if it is not there; when it is not,
// the directory is the one `make -s k8s-bin-dir` prints in the module's
// root, and the test is skipped if the binaries have not been built.
const BinDirEnv = "TORTIE_K8S_BIN"

// ServiceCIDR is the API server's Service cluster IP range.
const ServiceCIDR = "10.96.0.0/12"

// How long Start waits for the API server to be ready, and then for the
// CRDs to be served. Far more than either takes on an idle machine: the
// test machines are small and shared.
const (
	readyTimeout = 90 * time.Second
	crdTimeout   = 60 * time.Second
)

// CRDResource is the resource of CustomResourceDefinitions.
var CRDResource = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}

// APIServer is a running kube-apiserver.
type APIServer struct {
	// Config is a client configuration of a cluster administrator (a
	// client certificate in group system:masters), without rate limits.
	// Callers that change it should change a rest.CopyConfig of it.
	Config *rest.Config
	// Kubeconfig is a kubeconfig file of the same administrator, for
	// kubectl --kubeconfig.
	Kubeconfig string
	// BinDir holds kube-apiserver and kubectl.
	BinDir string
	// URL is where the API server listens: https://127.0.0.1:<port>.
	URL string
	// Log is the API server's log file.
	Log string
	// CRDs are the resources of deploy.CRDs, all served.
	CRDs []CRD
}

// CRD is one resource that deploy.CRDs defines.
type CRD struct {
	Resource   schema.GroupVersionResource
	Kind       string
	Namespaced bool
}

// Kubectl is the path of the kubectl binary next to kube-apiserver.
func (s *APIServer) Kubectl() string { return filepath.Join(s.BinDir, "kubectl") }

// Start runs a kube-apiserver (no other control-plane parts) on its own
// etcd, with the CRDs of deploy.CRDs installed and Established, and
// returns a rest.Config of a cluster administrator. Stopped by tb.Cleanup.
// It skips the test when the binaries are not found and TORTIE_K8S_BIN is
// unset, and fails it when TORTIE_K8S_BIN is set and kube-apiserver is
// missing there.
func Start(tb testing.TB) *APIServer {
	tb.Helper()
	return startOn(tb, etcdtest.FreePort)
}

// startOn is Start with the API server's port chosen by pickPort (a test
// hands it a port that is taken).
func startOn(tb testing.TB, pickPort func(testing.TB) int) *APIServer {
	tb.Helper()
	binDir := findBinDir(tb)
	crds, err := parseCRDs(deploy.CRDs)
	if err != nil {
		tb.Fatalf("kubetest: deploy.CRDs: %v", err)
	}
	etcd := etcdtest.StartMember(tb, datastore.EmbeddedConfig{})
	dir := tb.TempDir()
	s := &APIServer{BinDir: binDir, Log: filepath.Join(dir, "kube-apiserver.log"), CRDs: make([]CRD, len(crds))}
	for i, c := range crds {
		s.CRDs[i] = c.CRD
	}
	begin := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
	defer cancel()
	// The port is free when chosen and bound a moment later, by which
	// time another process may have taken it: then kube-apiserver exits
	// saying so, and it starts again on another port.
	var p *process
	for attempt := 1; ; attempt++ {
		port := pickPort(tb)
		s.URL = "https://127.0.0.1:" + strconv.Itoa(port)
		if p, err = s.start(dir, port, etcd.URL); err != nil {
			tb.Fatalf("kubetest: %v", err)
		}
		err = s.waitReady(ctx, p)
		if err == nil || attempt == maxAttempts || !p.exited() || !strings.Contains(logTail(s.Log, 30), "address already in use") {
			break
		}
		tb.Logf("kubetest: port %d was taken before kube-apiserver bound it; trying another", port)
		_ = os.Rename(s.Log, fmt.Sprintf("%s.%d", s.Log, attempt))
	}
	tb.Cleanup(func() {
		exited, err := p.stop(30 * time.Second)
		if err != nil {
			tb.Errorf("kubetest: %v", err)
		}
		// A crash during the test would otherwise show only as the
		// test's own failures, if any.
		if exited && !tb.Failed() {
			tb.Errorf("kubetest: kube-apiserver exited before the test ended (%v)\nkube-apiserver log (%s), last lines:\n%s",
				p.err, s.Log, logTail(s.Log, 30))
		}
	})
	if err != nil {
		tb.Fatalf("kubetest: %v\nkube-apiserver log (%s), last lines:\n%s", err, s.Log, logTail(s.Log, 30))
	}
	ready := time.Now()
	ctx, cancel = context.WithTimeout(context.Background(), crdTimeout)
	defer cancel()
	if err := s.installCRDs(ctx, crds); err != nil {
		tb.Fatalf("kubetest: installing the CRDs: %v\nkube-apiserver log (%s), last lines:\n%s", err, s.Log, logTail(s.Log, 30))
	}
	tb.Logf("kubetest: kube-apiserver at %s ready in %v, its %d CRDs served %v later",
		s.URL, ready.Sub(begin).Round(time.Millisecond), len(crds), time.Since(ready).Round(time.Millisecond))
	return s
}

// maxAttempts is how many ports Start tries.
const maxAttempts = 5

// start writes the API server's certificates and kubeconfig for port and
// starts it; s.Config is the kubeconfig's.
func (s *APIServer) start(dir string, port int, etcdURL string) (*process, error) {
	args, err := s.prepare(dir, port, etcdURL)
	if err != nil {
		return nil, err
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", s.Kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", s.Kubeconfig, err)
	}
	// Tests make bursts of requests; client-go's default of 5 a second
	// would make them slow, not more faithful.
	cfg.QPS, cfg.Burst = -1, 0
	cfg.UserAgent = "tortie-kubetest"
	s.Config = cfg
	return startProcess(filepath.Join(s.BinDir, "kube-apiserver"), args, s.Log)
}

// The binary directory is looked up once per test binary: `make` takes a
// moment, and its answer does not change.
var (
	binDirOnce sync.Once
	binDirMake string
	binDirErr  error
)

// BinDir is the directory of Kubernetes' binaries, for tests that run
// them otherwise than Start does (a lab's control plane): as for Start, it
// skips the test when they are not found and TORTIE_K8S_BIN is unset, and
// fails it when TORTIE_K8S_BIN names a directory without kube-apiserver.
func BinDir(tb testing.TB) string {
	tb.Helper()
	return findBinDir(tb)
}

// findBinDir returns the directory of kube-apiserver, or ends the test.
func findBinDir(tb testing.TB) string {
	tb.Helper()
	dir, skip, err := binDir(os.Getenv(BinDirEnv), func() (string, error) {
		binDirOnce.Do(func() { binDirMake, binDirErr = makeBinDir() })
		return binDirMake, binDirErr
	})
	if err != nil {
		tb.Fatalf("kubetest: %v", err)
	}
	if skip != "" {
		tb.Skipf("kubetest: %s", skip)
	}
	return dir
}

// binDir decides where kube-apiserver is, from the value of BinDirEnv
// (env) or else the Makefile's directory (fromMake): it returns the
// directory, or why the test is to be skipped, or why it fails.
func binDir(env string, fromMake func() (string, error)) (dir, skip string, err error) {
	if env != "" {
		if !isExecutable(filepath.Join(env, "kube-apiserver")) {
			return "", "", fmt.Errorf("no kube-apiserver in %s=%s (make k8s-bins builds it)", BinDirEnv, env)
		}
		return env, "", nil
	}
	dir, err = fromMake()
	if err != nil {
		return "", fmt.Sprintf("no Kubernetes binaries (%v); make k8s-bins builds them, %s names a directory of them", err, BinDirEnv), nil
	}
	if !isExecutable(filepath.Join(dir, "kube-apiserver")) {
		return "", fmt.Sprintf("no kube-apiserver in %s; make k8s-bins builds it, %s names another directory", dir, BinDirEnv), nil
	}
	return dir, "", nil
}

// makeBinDir asks the Makefile at the module's root where `make k8s-bins`
// puts the binaries.
func makeBinDir() (string, error) {
	root, err := moduleRoot()
	if err != nil {
		return "", err
	}
	var stderr bytes.Buffer
	cmd := exec.Command("make", "-s", "-C", root, "k8s-bin-dir")
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("make -s k8s-bin-dir: %w: %s", err, strings.TrimSpace(stderr.String()))
	}
	dir := strings.TrimSpace(string(out))
	if dir == "" || strings.Contains(dir, "\n") {
		return "", fmt.Errorf("make -s k8s-bin-dir printed %q, not a directory", out)
	}
	return dir, nil
}

// moduleRoot finds the directory of the go.mod above the working
// directory, which go test sets to the package's.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory")
		}
		dir = parent
	}
}

func isExecutable(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
}

// prepare writes the PKI and the administrator's kubeconfig into dir and
// returns kube-apiserver's arguments.
func (s *APIServer) prepare(dir string, port int, etcdURL string) ([]string, error) {
	pkiDir := filepath.Join(dir, "pki")
	ca, err := pki.NewCA("tortie-kubetest")
	if err != nil {
		return nil, err
	}
	serving, err := ca.WriteIssued(pkiDir, "apiserver", pki.Server, "127.0.0.1", "localhost")
	if err != nil {
		return nil, err
	}
	admin, err := ca.WriteIssuedGroups(pkiDir, "admin", "kubetest-admin", []string{"system:masters"}, pki.Client)
	if err != nil {
		return nil, err
	}
	saKey, saPub := filepath.Join(pkiDir, "sa.key"), filepath.Join(pkiDir, "sa.pub")
	if err := pki.WriteKeyPair(saKey, saPub); err != nil {
		return nil, err
	}
	s.Kubeconfig = filepath.Join(dir, "admin.kubeconfig")
	kubeconfig := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: kubetest
  cluster:
    server: %s
    certificate-authority: %s
users:
- name: admin
  user:
    client-certificate: %s
    client-key: %s
contexts:
- name: kubetest
  context: {cluster: kubetest, user: admin}
current-context: kubetest
`, s.URL, admin.CA, admin.Cert, admin.Key)
	if err := os.WriteFile(s.Kubeconfig, []byte(kubeconfig), 0o600); err != nil {
		return nil, err
	}
	// A prefix of its own, so that the data of one API server can never be
	// taken for another's, whatever etcd they are given.
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, err
	}
	return []string{
		"--bind-address", "127.0.0.1", "--advertise-address", "127.0.0.1", "--secure-port", strconv.Itoa(port),
		"--etcd-servers", etcdURL, "--etcd-prefix", "/kubetest-" + hex.EncodeToString(b[:]),
		"--tls-cert-file", serving.Cert, "--tls-private-key-file", serving.Key, "--client-ca-file", serving.CA,
		"--service-account-issuer", "https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file", saPub, "--service-account-signing-key-file", saKey,
		"--service-cluster-ip-range", ServiceCIDR,
		"--authorization-mode", "RBAC",
		// As clusters that run tortie do (kubeadm's too): its DaemonSet
		// is privileged.
		"--allow-privileged",
		"--profiling=false",
	}, nil
}

// process is a running kube-apiserver.
type process struct {
	cmd  *exec.Cmd
	done chan struct{} // closed once it has been reaped
	err  error         // how it ended, once done is closed
}

// exited tells whether the process has ended.
func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// startProcess runs path with args, its output appended to logPath. The
// process is started from an OS thread that stays locked for as long as
// it runs, with the parent-death signal set: should the test binary die
// without its cleanups (a timeout's panic), the kernel kills the API
// server too, instead of leaving it running. (The signal follows the
// thread that started the child, not the process, hence the lock.)
func startProcess(path string, args []string, logPath string) (*process, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	p := &process{done: make(chan struct{})}
	started := make(chan error, 1)
	go func() {
		// Never unlocked: the thread ends with this goroutine, after
		// the child is reaped.
		runtime.LockOSThread()
		defer logf.Close()
		p.cmd = exec.Command(path, args...)
		p.cmd.Stdout, p.cmd.Stderr = logf, logf
		p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := p.cmd.Start(); err != nil {
			started <- fmt.Errorf("starting %s: %w", path, err)
			return
		}
		started <- nil
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	if err := <-started; err != nil {
		return nil, err
	}
	return p, nil
}

// stop kills the process and waits until it has been reaped. exited
// tells whether it had ended before.
func (p *process) stop(timeout time.Duration) (exited bool, err error) {
	select {
	case <-p.done:
		return true, nil
	default:
	}
	if err := p.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return false, fmt.Errorf("killing kube-apiserver: %w", err)
	}
	select {
	case <-p.done:
		return false, nil
	case <-time.After(timeout):
		return false, fmt.Errorf("kube-apiserver (pid %d) not reaped %v after SIGKILL", p.cmd.Process.Pid, timeout)
	}
}

// waitReady polls the API server's /readyz until it answers ok, the
// process ends, or ctx does. The default namespace must exist too: the
// API server makes it right after it starts, and tests put objects in it.
func (s *APIServer) waitReady(ctx context.Context, p *process) error {
	client, err := rest.HTTPClientFor(s.Config)
	if err != nil {
		return err
	}
	defer client.CloseIdleConnections()
	last := "no answer yet"
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		ok := true
		for _, path := range []string{"/readyz", "/api/v1/namespaces/default"} {
			if ok, last = get(ctx, client, s.URL+path); !ok {
				last = path + ": " + last
				break
			}
		}
		if ok {
			return nil
		}
		select {
		case <-p.done:
			return fmt.Errorf("kube-apiserver exited: %v", p.err)
		case <-ctx.Done():
			return fmt.Errorf("kube-apiserver not ready: %s", last)
		case <-tick.C:
		}
	}
}

// get tells whether a GET of url answers 200, and otherwise what it got.
func get(ctx context.Context, client *http.Client, url string) (bool, string) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return false, err.Error()
	}
	resp, err := client.Do(req)
	if err != nil {
		return false, err.Error()
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		return false, fmt.Sprintf("%s: %s", resp.Status, strings.TrimSpace(string(body)))
	}
	return true, ""
}

// crdObject is one CRD of deploy.CRDs: the object to create and what it
// defines.
type crdObject struct {
	CRD
	obj *unstructured.Unstructured
}

// parseCRDs reads a YAML stream of CustomResourceDefinitions, each of one
// version.
func parseCRDs(stream []byte) ([]crdObject, error) {
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(stream)))
	var crds []crdObject
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return crds, nil
		}
		if err != nil {
			return nil, err
		}
		js, err := yaml.YAMLToJSON(doc)
		if err != nil {
			return nil, err
		}
		if s := strings.TrimSpace(string(js)); s == "null" || s == "" {
			continue // nothing but comments
		}
		obj := &unstructured.Unstructured{}
		if err := obj.UnmarshalJSON(js); err != nil {
			return nil, err
		}
		if obj.GetKind() != "CustomResourceDefinition" {
			return nil, fmt.Errorf("%s %s is not a CustomResourceDefinition", obj.GetKind(), obj.GetName())
		}
		group, _, _ := unstructured.NestedString(obj.Object, "spec", "group")
		plural, _, _ := unstructured.NestedString(obj.Object, "spec", "names", "plural")
		kind, _, _ := unstructured.NestedString(obj.Object, "spec", "names", "kind")
		scope, _, _ := unstructured.NestedString(obj.Object, "spec", "scope")
		versions, _, _ := unstructured.NestedSlice(obj.Object, "spec", "versions")
		if group == "" || plural == "" || kind == "" || len(versions) != 1 {
			return nil, fmt.Errorf("CRD %s: want a group, a plural, a kind and one version", obj.GetName())
		}
		version, _, _ := unstructured.NestedString(versions[0].(map[string]any), "name")
		crds = append(crds, crdObject{
			CRD: CRD{Resource: schema.GroupVersionResource{Group: group, Version: version, Resource: plural},
				Kind: kind, Namespaced: scope == "Namespaced"},
			obj: obj,
		})
	}
}

// installCRDs creates the CRDs and waits until each is Established and a
// list of its resource answers.
func (s *APIServer) installCRDs(ctx context.Context, crds []crdObject) error {
	dyn, err := dynamic.NewForConfig(s.Config)
	if err != nil {
		return err
	}
	for _, c := range crds {
		if _, err := dyn.Resource(CRDResource).Create(ctx, c.obj, metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("creating %s: %w", c.obj.GetName(), err)
		}
	}
	// The lists go through a plain HTTP client: a resource's first list
	// is refused (429) until the API server's watch cache of it has been
	// filled, and client-go would retry only after the second the answer
	// asks for, where a new poll finds it served within milliseconds.
	client, err := rest.HTTPClientFor(s.Config)
	if err != nil {
		return err
	}
	defer client.CloseIdleConnections()
	pending := crds
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		var errs []error
		var left []crdObject
		for _, c := range pending {
			if err := s.served(ctx, dyn, client, c); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", c.obj.GetName(), err))
				left = append(left, c)
			}
		}
		if pending = left; len(pending) == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return errors.Join(errs...)
		case <-tick.C:
		}
	}
}

// served tells (by a nil error) whether c is Established and its
// resource can be listed.
func (s *APIServer) served(ctx context.Context, dyn dynamic.Interface, client *http.Client, c crdObject) error {
	got, err := dyn.Resource(CRDResource).Get(ctx, c.obj.GetName(), metav1.GetOptions{})
	if err != nil {
		return err
	}
	conds, _, _ := unstructured.NestedSlice(got.Object, "status", "conditions")
	established := false
	for _, cond := range conds {
		m, _ := cond.(map[string]any)
		if m["type"] == "Established" && m["status"] == "True" {
			established = true
		}
	}
	if !established {
		return errors.New("not Established")
	}
	r := c.Resource
	if ok, why := get(ctx, client, s.URL+"/apis/"+r.Group+"/"+r.Version+"/"+r.Resource); !ok {
		return fmt.Errorf("listing %s: %s", r.Resource, why)
	}
	return nil
}

// logTail returns the last n lines of the file at path.
func logTail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
