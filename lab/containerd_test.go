package lab

import (
	"os"
	"strings"
	"testing"
)

func TestUnescapeMount(t *testing.T) {
	for in, want := range map[string]string{
		`/run/a`:           "/run/a",
		`/run/a\040b`:      "/run/a b",
		`/x\011y\134z`:     "/x\ty\\z",
		`/short\04`:        `/short\04`,
		`/not\999octal`:    `/not\999octal`,
		`/trailing\`:       `/trailing\`,
		`\040`:             " ",
		`/run/tortie-lab/`: "/run/tortie-lab/",
	} {
		if got := unescapeMount(in); got != want {
			t.Errorf("unescapeMount(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestProcStart(t *testing.T) {
	if procStart(os.Getpid()) == 0 {
		t.Error("no start time for this process")
	}
	if procStart(1<<30) != 0 {
		t.Error("a start time for a process that cannot exist")
	}
}

func TestContainerdConfig(t *testing.T) {
	c := &Containerd{Dir: "/run/tortie-lab/x/n1-containerd", Socket: "/run/tortie-lab/x/n1-containerd/containerd.sock", ConfDir: "/run/tortie-lab/x/n1-containerd/net.d"}
	cfg := containerdConfig(c, "/run/tortie-lab/x/cni-bin", false)
	for _, want := range []string{
		"version = 2\n",
		`restrict_oom_score_adj = true`,
		`sandbox_image = "docker.io/tortie/pause:3.10"`,
		`netns_mounts_under_state_dir = true`,
		`address = "/run/tortie-lab/x/n1-containerd/containerd.sock"`,
		`bin_dir = "/run/tortie-lab/x/cni-bin"`,
		`conf_dir = "/run/tortie-lab/x/n1-containerd/net.d"`,
		`Root = "/run/tortie-lab/x/n1-containerd/runc"`,
	} {
		if !strings.Contains(cfg, want) {
			t.Errorf("config lacks %q:\n%s", want, cfg)
		}
	}
}

// A node with a view of its own keeps a real node's paths and pod network
// namespaces in /run/netns, where deploy/'s tortied looks for them.
func TestContainerdConfigOwnView(t *testing.T) {
	c := &Containerd{Dir: "/run/tortie-lab/x/n1-containerd", Socket: "/run/tortie-lab/x/n1-containerd/containerd.sock", ConfDir: "/etc/cni/net.d"}
	cfg := containerdConfig(c, "/opt/cni/bin", true)
	for _, want := range []string{`netns_mounts_under_state_dir = false`, `bin_dir = "/opt/cni/bin"`, `conf_dir = "/etc/cni/net.d"`} {
		if !strings.Contains(cfg, want) {
			t.Errorf("config lacks %q:\n%s", want, cfg)
		}
	}
}
