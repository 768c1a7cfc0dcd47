package plugin

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestInstall(t *testing.T) {
	dir := t.TempDir()
	self := filepath.Join(dir, "tortie-cni")
	if err := os.WriteFile(self, []byte("plugin v1"), 0o755); err != nil {
		t.Fatal(err)
	}
	bin, conf := filepath.Join(dir, "opt/cni/bin"), filepath.Join(dir, "etc/cni/net.d")
	list := []byte(`{"cniVersion":"1.1.0","name":"k8s-pod-network","plugins":[{"type":"tortie","ipam":{"type":"calico-ipam"}}]}`)
	if err := Install(self, bin, conf, "10-tortie.conflist", list); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(bin, "tortie")); string(b) != "plugin v1" {
		t.Fatalf("installed plugin %q", b)
	}
	if st, err := os.Stat(filepath.Join(bin, "tortie")); err != nil || st.Mode().Perm() != 0o755 {
		t.Fatalf("plugin mode: %v %v", st, err)
	}
	if b, _ := os.ReadFile(filepath.Join(conf, "10-tortie.conflist")); string(b) != string(list) {
		t.Fatalf("conflist %q", b)
	}
	// An upgrade replaces the plugin; no temporary files are left behind.
	if err := os.WriteFile(self, []byte("plugin v2"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := Install(self, bin, conf, "10-tortie.conflist", list); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(bin, "tortie")); string(b) != "plugin v2" {
		t.Fatalf("upgraded plugin %q", b)
	}
	for _, d := range []string{bin, conf} {
		es, _ := os.ReadDir(d)
		if len(es) != 1 {
			t.Fatalf("%s holds %d files", d, len(es))
		}
	}
	for _, bad := range []string{`{`, `{"name":"x","plugins":[{"type":"bridge"}]}`, `{"plugins":[{"type":"tortie"}]}`} {
		if err := Install(self, bin, conf, "bad.conflist", []byte(bad)); err == nil || !strings.Contains(err.Error(), "install:") {
			t.Fatalf("Install(%s) = %v", bad, err)
		}
	}
}
