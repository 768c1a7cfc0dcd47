package open

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"k8s.io/client-go/rest"

	"github.com/tortie-net/tortie/datastore"
)

const kubeconfig = `apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://10.0.1.254:6443"}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: x, context: {cluster: c, user: u}}]
current-context: x
`

func TestKubernetes(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(path, []byte(kubeconfig), 0o600); err != nil {
		t.Fatal(err)
	}
	orig := newKubeStore
	t.Cleanup(func() { newKubeStore = orig })

	var got *rest.Config
	mem := datastore.NewMemory()
	newKubeStore = func(rc *rest.Config) (datastore.Store, error) { got = rc; return mem, nil }
	s, err := Kubernetes(path, "tortied/n1")
	if err != nil || s != datastore.Store(mem) {
		t.Fatalf("Kubernetes: %v %v", s, err)
	}
	if got.Host != "https://10.0.1.254:6443" || got.UserAgent != "tortied/n1" {
		t.Fatalf("rest config: host %q, user agent %q", got.Host, got.UserAgent)
	}

	// A failing constructor gives a nil Store, whatever it returned.
	newKubeStore = func(*rest.Config) (datastore.Store, error) {
		return (*datastore.Memory)(nil), errors.New("the CRDs are not installed")
	}
	if s, err := Kubernetes(path, ""); s != nil || err == nil || !strings.Contains(err.Error(), "kubernetes datastore: the CRDs are not installed") {
		t.Fatalf("failing store: %v %v", s, err)
	}
	if _, err := Kubernetes(filepath.Join(t.TempDir(), "missing"), ""); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Fatalf("missing kubeconfig: %v", err)
	}
}
