package images

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// readArchive returns the archive's files by name.
func readArchive(t *testing.T, b []byte) map[string][]byte {
	t.Helper()
	files := map[string][]byte{}
	tr := tar.NewReader(bytes.NewReader(b))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return files
		}
		if err != nil {
			t.Fatal(err)
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		files[h.Name] = data
	}
}

func blob(t *testing.T, files map[string][]byte, d Descriptor) []byte {
	t.Helper()
	b, ok := files["blobs/sha256/"+strings.TrimPrefix(d.Digest, "sha256:")]
	if !ok {
		t.Fatalf("blob %s missing", d.Digest)
	}
	if digest(b) != d.Digest || int64(len(b)) != d.Size {
		t.Fatalf("blob %s: digest %s, size %d (want %d)", d.Digest, digest(b), len(b), d.Size)
	}
	return b
}

func TestWriteArchive(t *testing.T) {
	imgs := []Image{
		{Name: "docker.io/tortie/a:1", Files: []File{{Path: "/bin/a", Mode: 0o755, Data: []byte("AAA")}}, Entrypoint: []string{"/bin/a"}},
		{Name: "docker.io/tortie/b:latest", Files: []File{{Path: "/b", Mode: 0o644, Data: []byte("B")}}, Cmd: []string{"x"}},
	}
	var buf bytes.Buffer
	if err := WriteArchive(&buf, imgs...); err != nil {
		t.Fatal(err)
	}
	var again bytes.Buffer
	if err := WriteArchive(&again, imgs...); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf.Bytes(), again.Bytes()) {
		t.Error("two archives of the same images differ")
	}
	files := readArchive(t, buf.Bytes())
	if string(files["oci-layout"]) != `{"imageLayoutVersion":"1.0.0"}` {
		t.Errorf("oci-layout %q", files["oci-layout"])
	}
	var idx Index
	if err := json.Unmarshal(files["index.json"], &idx); err != nil {
		t.Fatal(err)
	}
	if idx.SchemaVersion != 2 || len(idx.Manifests) != 2 {
		t.Fatalf("index %+v", idx)
	}
	for i, d := range idx.Manifests {
		img := imgs[i]
		if d.Annotations[AnnotationRefName] != img.Name || d.Annotations[AnnotationImageName] != img.Name || d.MediaType != MediaTypeManifest {
			t.Errorf("index entry %d: %+v", i, d)
		}
		var m Manifest
		if err := json.Unmarshal(blob(t, files, d), &m); err != nil {
			t.Fatal(err)
		}
		if m.SchemaVersion != 2 || m.Config.MediaType != MediaTypeConfig || len(m.Layers) != 1 || m.Layers[0].MediaType != MediaTypeLayer {
			t.Fatalf("manifest %+v", m)
		}
		var cfg Config
		if err := json.Unmarshal(blob(t, files, m.Config), &cfg); err != nil {
			t.Fatal(err)
		}
		if cfg.OS != "linux" || strings.Join(cfg.Config.Entrypoint, " ") != strings.Join(img.Entrypoint, " ") ||
			strings.Join(cfg.Config.Cmd, " ") != strings.Join(img.Cmd, " ") {
			t.Errorf("config %+v", cfg)
		}
		zr, err := gzip.NewReader(bytes.NewReader(blob(t, files, m.Layers[0])))
		if err != nil {
			t.Fatal(err)
		}
		raw, err := io.ReadAll(zr)
		if err != nil {
			t.Fatal(err)
		}
		if len(cfg.RootFS.DiffIDs) != 1 || cfg.RootFS.DiffIDs[0] != digest(raw) {
			t.Errorf("diff_ids %v, layer %s", cfg.RootFS.DiffIDs, digest(raw))
		}
		tr := tar.NewReader(bytes.NewReader(raw))
		var names []string
		for {
			h, err := tr.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			names = append(names, h.Name)
			if h.Typeflag == tar.TypeReg {
				data, _ := io.ReadAll(tr)
				f := img.Files[0]
				if "/"+h.Name != f.Path || string(data) != string(f.Data) || h.Mode != f.Mode || h.Uid != 0 {
					t.Errorf("layer file %s mode %o: %q", h.Name, h.Mode, data)
				}
			}
		}
		want := map[int]string{0: "bin/ bin/a", 1: "b"}[i]
		if got := strings.Join(names, " "); got != want {
			t.Errorf("layer %d holds %q, want %q", i, got, want)
		}
	}
}

func TestWriteArchiveRejects(t *testing.T) {
	for _, imgs := range [][]Image{
		nil,
		{{Name: "pause"}},
		{{Name: "docker.io/tortie/pause"}},
		{{Name: "docker.io/x/y:1"}, {Name: "docker.io/x/y:1"}},
		{{Name: "docker.io/x/y:1", Files: []File{{Path: "relative"}}}},
		{{Name: "docker.io/x/y:1", Files: []File{{Path: "/"}}}},
	} {
		if err := WriteArchive(io.Discard, imgs...); err == nil {
			t.Errorf("%+v: no error", imgs)
		}
	}
}

func TestParseLdd(t *testing.T) {
	out := "\tlinux-vdso.so.1 (0x00007ffd)\n" +
		"\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f00)\n" +
		"\t/lib64/ld-linux-x86-64.so.2 (0x00007f11)\n"
	libs, err := parseLdd(out)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"/lib/x86_64-linux-gnu/libc.so.6", "/lib64/ld-linux-x86-64.so.2"}
	if !slices.Equal(libs, want) {
		t.Fatalf("libraries %v, want %v", libs, want)
	}
	if _, err := parseLdd("\tlibfoo.so.1 => not found\n"); err == nil {
		t.Fatal("a missing library was not reported")
	}
}

func FuzzParseLdd(f *testing.F) {
	f.Add("\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x1)\n\t/lib64/ld.so (0x2)\n")
	f.Add("libx => not found")
	f.Fuzz(func(t *testing.T, s string) {
		libs, err := parseLdd(s)
		for _, l := range libs {
			if err == nil && !path.IsAbs(l) {
				t.Fatalf("relative library path %q", l)
			}
		}
	})
}

// A program that loads shared libraries brings them into its image.
func TestProgramsImage(t *testing.T) {
	bin, err := exec.LookPath("ls")
	if err != nil {
		t.Skip("no ls")
	}
	img, err := ProgramsImage(context.Background(), "x/y:z", []string{"A=1"}, bin)
	if err != nil {
		t.Fatal(err)
	}
	var paths []string
	for _, f := range img.Files {
		paths = append(paths, f.Path)
	}
	if paths[0] != "/ls" || !slices.ContainsFunc(paths, func(p string) bool { return strings.Contains(p, "libc.so") }) {
		t.Fatalf("image files %v: want /ls and libc", paths)
	}
}

// tortie's image holds its programs and nft, which tortied runs for
// natOutgoing, at the root, which is on its PATH; a missing program is
// an error.
func TestTortieImage(t *testing.T) {
	if _, err := exec.LookPath("nft"); err != nil {
		t.Skip("no nft")
	}
	prog, err := exec.LookPath("true")
	if err != nil {
		t.Skip("no true")
	}
	data, err := os.ReadFile(prog)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for _, p := range TortiePrograms {
		if err := os.WriteFile(filepath.Join(dir, p), data, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	img, err := TortieImage(context.Background(), dir, "A=1")
	if err != nil {
		t.Fatal(err)
	}
	var paths []string
	for _, f := range img.Files {
		paths = append(paths, f.Path)
	}
	for _, want := range []string{"/tortied", "/tortie-cni", "/tortiectl", "/nft"} {
		if !slices.Contains(paths, want) {
			t.Errorf("image files %v: no %s", paths, want)
		}
	}
	if !slices.ContainsFunc(paths, func(p string) bool { return strings.Contains(p, "libnftables.so") }) {
		t.Errorf("image files %v: no libnftables for nft", paths)
	}
	if img.Name != Tortie || len(img.Env) != 2 || !strings.HasPrefix(img.Env[0], "PATH=/:") || img.Env[1] != "A=1" {
		t.Errorf("image %s, environment %q", img.Name, img.Env)
	}
	if err := os.Remove(filepath.Join(dir, "tortie-cni")); err != nil {
		t.Fatal(err)
	}
	if _, err := TortieImage(context.Background(), dir); err == nil || !strings.Contains(err.Error(), "tortie-cni") {
		t.Errorf("without tortie-cni: %v", err)
	}
}
