package main

import (
	"bytes"
	"errors"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/tortie-net/tortie/lab"
)

// Every command's help lists every flag it defines, and up's the ones a
// hand-written usage once left out.
func TestHelpListsEveryFlag(t *testing.T) {
	for _, c := range commands {
		t.Run(c.name, func(t *testing.T) {
			var out bytes.Buffer
			fs, _ := c.flagSet(&out)
			if err := fs.Parse([]string{"--help"}); !errors.Is(err, flag.ErrHelp) {
				t.Fatalf("--help: %v", err)
			}
			help := out.String()
			n := 0
			fs.VisitAll(func(f *flag.Flag) {
				n++
				if !regexp.MustCompile(`(?m)^  -` + regexp.QuoteMeta(f.Name) + `\s`).MatchString(help) {
					t.Errorf("help lacks -%s:\n%s", f.Name, help)
				}
				if !strings.Contains(help, f.Usage) {
					t.Errorf("help lacks the description of -%s", f.Name)
				}
			})
			if n == 0 || !strings.Contains(help, "usage: tortie-lab "+c.name) || !strings.Contains(help, c.doc) {
				t.Fatalf("help:\n%s", help)
			}
			if c.name == "up" {
				for _, f := range []string{"bgp", "bird-nodes", "static", "mtu", "log-level", "mode", "nodes", "pods", "kernel-nodes",
					"k8s", "proxy-mode", "k8s-bin-dir", "coredns", "deploy"} {
					if fs.Lookup(f) == nil || !strings.Contains(help, "-"+f) {
						t.Errorf("up --help lacks -%s", f)
					}
				}
			}
		})
	}
	var out bytes.Buffer
	usage(&out)
	for _, c := range commands {
		if !strings.Contains(out.String(), "  "+c.name+" ") {
			t.Errorf("usage lacks %s:\n%s", c.name, out.String())
		}
	}
}

// up refuses, before building anything, what does not go with --k8s, and
// the --k8s flags without it; each error names the flags.
func TestUpK8sFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--k8s", "--static"}, "--k8s and --static"},
		{[]string{"--k8s", "--kernel-nodes", "1"}, "--k8s and --kernel-nodes"},
		{[]string{"--k8s", "--bird-nodes", "1", "--mode", "native"}, "--k8s and --bird-nodes"},
		{[]string{"--k8s", "--etcd-tls"}, "--k8s and --etcd-tls"},
		{[]string{"--k8s", "--pods", "2"}, "--k8s and --pods"},
		{[]string{"--k8s", "--images", "x.tar"}, "--k8s and --images"},
		{[]string{"--k8s", "--log-level", "debug"}, "--k8s and --log-level"},
		{[]string{"--k8s", "--proxy-mode", "ipvs"}, `--proxy-mode "ipvs": iptables or nftables`},
		{[]string{"--proxy-mode", "nftables"}, "--proxy-mode needs --k8s"},
		{[]string{"--k8s-bin-dir", "/x"}, "--k8s-bin-dir needs --k8s"},
		{[]string{"--coredns", "/x/coredns"}, "--coredns needs --k8s"},
		{[]string{"--deploy", "x.yaml"}, "--deploy needs --k8s"},
		// Valid flags; the test's directory is not tortie's source tree.
		{[]string{"--k8s", "--pods", "0", "--bgp", "--mode", "vxlan-crosssubnet", "--proxy-mode", "nftables"}, "root of tortie's source tree"},
	} {
		up := commands[slices.IndexFunc(commands, func(c command) bool { return c.name == "up" })]
		var out bytes.Buffer
		fs, run := up.flagSet(&out)
		if err := fs.Parse(tc.args); err != nil {
			t.Fatalf("%v: %v", tc.args, err)
		}
		err := run()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("up %v: %v, want an error with %q", tc.args, err, tc.want)
		}
	}
}

// --k8s makes a DaemonSet lab without lab pods, whatever --pods defaults to.
func TestK8sFlagsApply(t *testing.T) {
	o := lab.Options{Pods: 2, Mode: "vxlan"}
	k := k8sFlags{enabled: true, proxyMode: "iptables"}
	if err := k.apply(&o, map[string]bool{"mode": true}); err != nil {
		t.Fatal(err)
	}
	if !o.DaemonSet || o.Pods != 0 {
		t.Fatalf("options %+v: want a DaemonSet lab without pods", o)
	}
	o = lab.Options{Pods: 2}
	if err := (&k8sFlags{proxyMode: "iptables"}).apply(&o, map[string]bool{"pods": true}); err != nil || o.DaemonSet || o.Pods != 2 {
		t.Fatalf("without --k8s: %v, %+v", err, o)
	}
}

// fakeTree is a directory that looks like tortie's source tree, with the
// Kubernetes binaries, CoreDNS, a manifest and tortie's binaries as empty
// files.
func fakeTree(t *testing.T) (dir string, k k8sFlags, tortied string) {
	t.Helper()
	dir = t.TempDir()
	files := []string{"go.mod", "deploy/tortie.yaml", "coredns", "bin/tortied", "bin/tortie-cni", "bin/tortiectl"}
	for _, c := range k8sCommands {
		files = append(files, "k8s/"+c)
	}
	for _, f := range files {
		p := filepath.Join(dir, f)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, nil, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte("// tortie\nmodule github.com/tortie-net/tortie\n\ngo 1.26\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	k = k8sFlags{enabled: true, proxyMode: "iptables", binDir: filepath.Join(dir, "k8s"),
		coreDNS: filepath.Join(dir, "coredns"), deploy: filepath.Join(dir, "deploy/tortie.yaml")}
	return dir, k, filepath.Join(dir, "bin/tortied")
}

func TestLocate(t *testing.T) {
	dir, k, tortied := fakeTree(t)
	if err := k.locate(dir, tortied); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		remove, want string // want: DIR is the tree
	}{
		{"k8s/kubelet", "kubelet missing in DIR/k8s (make k8s-bins builds them)"},
		{"coredns", "no CoreDNS at DIR/coredns (make coredns-bin builds it)"},
		{"deploy/tortie.yaml", "no manifest at DIR/deploy/tortie.yaml (--deploy)"},
		{"bin/tortiectl", "no tortiectl at DIR/bin/tortiectl"},
		{"go.mod", "root of tortie's source tree"},
	} {
		t.Run(tc.remove, func(t *testing.T) {
			dir, k, tortied := fakeTree(t)
			if err := os.Remove(filepath.Join(dir, tc.remove)); err != nil {
				t.Fatal(err)
			}
			want := strings.ReplaceAll(tc.want, "DIR", dir)
			if err := k.locate(dir, tortied); err == nil || !strings.Contains(err.Error(), want) {
				t.Fatalf("without %s: %v, want %q", tc.remove, err, want)
			}
		})
	}
}

func TestInSourceTree(t *testing.T) {
	for mod, want := range map[string]bool{
		"module github.com/tortie-net/tortie\n":                true,
		"// x\nmodule github.com/tortie-net/tortie\ngo 1.26\n": true,
		"module github.com/tortie-net/tortie/k8s/tools\n":      false,
		"module example.com/other\n":                           false,
		"":                                                     false,
	} {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte(mod), 0o644); err != nil {
			t.Fatal(err)
		}
		if got := inSourceTree(dir); got != want {
			t.Errorf("go.mod %q: %v, want %v", mod, got, want)
		}
	}
	if inSourceTree(t.TempDir()) {
		t.Error("a directory without go.mod")
	}
}

func TestEchoHost(t *testing.T) {
	for reply, want := range map[string]string{
		`{"client":"10.244.0.5:40000","hostname":"echo-5d8f-abc"}` + "\n": "echo-5d8f-abc",
		`{"client":"10.244.0.5:40000"}`:                                   "",
		`<html>502</html>`:                                                "",
		``:                                                                "",
	} {
		if got := echoHost(reply); got != want {
			t.Errorf("echoHost(%q) = %q, want %q", reply, got, want)
		}
	}
}

// The Makefile's printing targets give one path each; a target it lacks
// is an error that says so.
func TestMakeOutput(t *testing.T) {
	if _, err := exec.LookPath("make"); err != nil {
		t.Skip("no make")
	}
	for _, target := range []string{"k8s-bin-dir", "coredns-bin-path"} {
		p, err := makeOutput("../..", target)
		if err != nil || !filepath.IsAbs(p) {
			t.Errorf("%s: %q, %v", target, p, err)
		}
	}
	if p, err := makeOutput("../..", "no-such-target"); err == nil || !strings.Contains(err.Error(), "no-such-target") {
		t.Errorf("no-such-target: %q, %v", p, err)
	}
}

// A program's exit status, or the signal that ended it, becomes
// tortie-lab's own.
func TestPassThroughExitCode(t *testing.T) {
	for _, tc := range []struct {
		script string
		want   int
	}{
		{"exit 3", 3},
		{"kill -PIPE $$", 128 + 13},
	} {
		err := passThrough([]string{"sh", "-c", tc.script})
		var code exitCode
		if !errors.As(err, &code) || int(code) != tc.want {
			t.Errorf("%s: %v, want exit status %d", tc.script, err, tc.want)
		}
	}
	if err := passThrough([]string{"true"}); err != nil {
		t.Errorf("true: %v", err)
	}
	if err := passThrough([]string{"/no/such/program"}); err == nil || errors.As(err, new(exitCode)) {
		t.Errorf("a missing program: %v, want an error that says so", err)
	}
}

// A descriptor inherited without close-on-exec (as flock(1) passes its
// lock) is not passed on to what tortie-lab starts.
func TestCloseInheritedOnExec(t *testing.T) {
	fd, err := syscall.Open(os.DevNull, syscall.O_RDONLY, 0) // no O_CLOEXEC
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(fd)
	cloexec := func() bool {
		flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
		if err != nil {
			t.Fatal(err)
		}
		return flags&unix.FD_CLOEXEC != 0
	}
	if cloexec() {
		t.Fatal("the descriptor is close-on-exec from the start")
	}
	closeInheritedOnExec()
	if !cloexec() {
		t.Fatal("the descriptor is still passed on to children")
	}
}
