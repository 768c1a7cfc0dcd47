// Package images writes container images as OCI image layouts, packed in a
// tar as `ctr images import` reads them: an oci-layout file, index.json
// naming each image, and content-addressed blobs for every image's config,
// manifest and single gzipped layer. No registry is reachable where the
// labs run, so the lab's images (a pause image for pod sandboxes and a test
// workload) are built here from static Go binaries of our own.
//
// Archives are deterministic: the same files give the same digests.
package images

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"
)

// The lab's images, under fully qualified names: the CRI normalises a
// short name ("tortie/pause") to docker.io/... and would try to pull it.
const (
	Pause   = "docker.io/tortie/pause:3.10"
	Echo    = "docker.io/tortie/echo:latest"
	CoreDNS = "docker.io/tortie/coredns:latest"
	// Tortie is tortie's own image (deploy/tortie.yaml runs it):
	// tortied, tortie-cni and tortiectl at the root.
	Tortie = "docker.io/tortie/tortie:latest"
)

// Media types of the OCI image specification (image-spec v1.1).
const (
	MediaTypeIndex    = "application/vnd.oci.image.index.v1+json"
	MediaTypeManifest = "application/vnd.oci.image.manifest.v1+json"
	MediaTypeConfig   = "application/vnd.oci.image.config.v1+json"
	MediaTypeLayer    = "application/vnd.oci.image.layer.v1.tar+gzip"
)

// Annotations naming an image in index.json: the OCI one, and containerd's
// full name, which `ctr images import` takes as is.
const (
	AnnotationRefName   = "org.opencontainers.image.ref.name"
	AnnotationImageName = "io.containerd.image.name"
)

// File is one regular file of an image's only layer.
type File struct {
	Path string // absolute, e.g. "/pause"
	Mode int64  // permission bits
	Data []byte
}

// Image is one single-layer image.
type Image struct {
	Name       string // fully qualified: registry/repository:tag
	Files      []File
	Entrypoint []string
	Cmd        []string
	Env        []string
}

// Descriptor is an OCI content descriptor.
type Descriptor struct {
	MediaType   string            `json:"mediaType"`
	Digest      string            `json:"digest"`
	Size        int64             `json:"size"`
	Annotations map[string]string `json:"annotations,omitempty"`
	Platform    *Platform         `json:"platform,omitempty"`
}

// Platform is the platform of a manifest.
type Platform struct {
	Architecture string `json:"architecture"`
	OS           string `json:"os"`
}

// Index is an OCI image index (index.json).
type Index struct {
	SchemaVersion int          `json:"schemaVersion"`
	MediaType     string       `json:"mediaType"`
	Manifests     []Descriptor `json:"manifests"`
}

// Manifest is an OCI image manifest.
type Manifest struct {
	SchemaVersion int          `json:"schemaVersion"`
	MediaType     string       `json:"mediaType"`
	Config        Descriptor   `json:"config"`
	Layers        []Descriptor `json:"layers"`
}

// Config is the part of an OCI image configuration this package writes.
type Config struct {
	Architecture string          `json:"architecture"`
	OS           string          `json:"os"`
	Config       ContainerConfig `json:"config"`
	RootFS       RootFS          `json:"rootfs"`
}

// ContainerConfig is how a container of the image runs by default.
type ContainerConfig struct {
	Entrypoint []string `json:"Entrypoint,omitempty"`
	Cmd        []string `json:"Cmd,omitempty"`
	Env        []string `json:"Env,omitempty"`
	WorkingDir string   `json:"WorkingDir,omitempty"`
}

// RootFS lists the digests of the uncompressed layers.
type RootFS struct {
	Type    string   `json:"type"`
	DiffIDs []string `json:"diff_ids"`
}

func digest(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// layer is an image's files as a tar with their parent directories, all
// owned by root with a zero time, then gzipped (fastest level).
func layer(files []File) (tarBytes, gz []byte, err error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	dirs := map[string]bool{}
	var epoch time.Time
	for _, f := range files {
		p := path.Clean(f.Path)
		if !path.IsAbs(p) || p == "/" {
			return nil, nil, fmt.Errorf("image file %q: need an absolute path to a file", f.Path)
		}
		var parents []string
		for d := path.Dir(p); d != "/"; d = path.Dir(d) {
			parents = append(parents, d)
		}
		slices.Reverse(parents)
		for _, d := range parents {
			if dirs[d] {
				continue
			}
			dirs[d] = true
			if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: strings.TrimPrefix(d, "/") + "/", Mode: 0o755, ModTime: epoch, Format: tar.FormatPAX}); err != nil {
				return nil, nil, err
			}
		}
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: strings.TrimPrefix(p, "/"), Mode: f.Mode & 0o7777, Size: int64(len(f.Data)), ModTime: epoch, Format: tar.FormatPAX}); err != nil {
			return nil, nil, err
		}
		if _, err := tw.Write(f.Data); err != nil {
			return nil, nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, nil, err
	}
	var z bytes.Buffer
	// The fastest level: the archive goes from this machine to its own
	// containerds, and the race detector's tests make it too, where the
	// default level spent minutes on tortie's binaries.
	zw, err := gzip.NewWriterLevel(&z, gzip.BestSpeed)
	if err != nil {
		return nil, nil, err
	}
	if _, err := zw.Write(buf.Bytes()); err != nil {
		return nil, nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, nil, err
	}
	return buf.Bytes(), z.Bytes(), nil
}

// WriteArchive writes the images as one OCI image layout in a tar.
func WriteArchive(w io.Writer, imgs ...Image) error {
	if len(imgs) == 0 {
		return errors.New("no images")
	}
	plat := &Platform{Architecture: runtime.GOARCH, OS: "linux"}
	blobs := map[string][]byte{}
	var order []string
	add := func(b []byte) string {
		d := digest(b)
		if _, ok := blobs[d]; !ok {
			blobs[d] = b
			order = append(order, d)
		}
		return d
	}
	idx := Index{SchemaVersion: 2, MediaType: MediaTypeIndex}
	names := map[string]bool{}
	for _, img := range imgs {
		if !strings.Contains(img.Name, "/") || !strings.Contains(path.Base(img.Name), ":") {
			return fmt.Errorf("image name %q: need registry/repository:tag", img.Name)
		}
		if names[img.Name] {
			return fmt.Errorf("image %q twice", img.Name)
		}
		names[img.Name] = true
		raw, gz, err := layer(img.Files)
		if err != nil {
			return fmt.Errorf("image %s: %w", img.Name, err)
		}
		cfg, err := json.Marshal(Config{Architecture: plat.Architecture, OS: plat.OS,
			Config: ContainerConfig{Entrypoint: img.Entrypoint, Cmd: img.Cmd, Env: img.Env, WorkingDir: "/"},
			RootFS: RootFS{Type: "layers", DiffIDs: []string{digest(raw)}}})
		if err != nil {
			return err
		}
		m, err := json.Marshal(Manifest{SchemaVersion: 2, MediaType: MediaTypeManifest,
			Config: Descriptor{MediaType: MediaTypeConfig, Digest: add(cfg), Size: int64(len(cfg))},
			Layers: []Descriptor{{MediaType: MediaTypeLayer, Digest: add(gz), Size: int64(len(gz))}}})
		if err != nil {
			return err
		}
		idx.Manifests = append(idx.Manifests, Descriptor{MediaType: MediaTypeManifest, Digest: add(m), Size: int64(len(m)), Platform: plat,
			Annotations: map[string]string{AnnotationRefName: img.Name, AnnotationImageName: img.Name}})
	}
	index, err := json.Marshal(idx)
	if err != nil {
		return err
	}
	tw := tar.NewWriter(w)
	file := func(name string, b []byte) error {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: int64(len(b)), Format: tar.FormatPAX}); err != nil {
			return err
		}
		_, err := tw.Write(b)
		return err
	}
	if err := file("oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`)); err != nil {
		return err
	}
	if err := file("index.json", index); err != nil {
		return err
	}
	for _, d := range order {
		if err := file("blobs/sha256/"+strings.TrimPrefix(d, "sha256:"), blobs[d]); err != nil {
			return err
		}
	}
	return tw.Close()
}

// StaticBinary builds a Go main package (an import path of a module the
// go command sees from dir) as a static binary: no cgo, so it runs in an
// image with nothing else in it.
func StaticBinary(ctx context.Context, dir, pkg, out string) error {
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags=-s -w", "-o", out, pkg)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %v\n%s", pkg, err, b)
	}
	return nil
}

// Lab builds the lab's images (Pause from lab/images/pause, Echo from
// cmd/tortie-echo) and writes them, with extra ones, as one archive at out.
// dir is any directory inside tortie's module; work holds the binaries.
func Lab(ctx context.Context, dir, work, out string, extra ...Image) error {
	bins := []struct{ pkg, bin, image string }{
		{"github.com/tortie-net/tortie/lab/images/pause", "pause", Pause},
		{"github.com/tortie-net/tortie/cmd/tortie-echo", "tortie-echo", Echo},
	}
	var imgs []Image
	for _, b := range bins {
		p := path.Join(work, b.bin)
		if err := StaticBinary(ctx, dir, b.pkg, p); err != nil {
			return err
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		imgs = append(imgs, Image{Name: b.image, Files: []File{{Path: "/" + b.bin, Mode: 0o755, Data: data}}, Entrypoint: []string{"/" + b.bin}})
	}
	imgs = append(imgs, extra...)
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	if err := WriteArchive(f, imgs...); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// BinaryImage is an image named name holding only the executable at bin,
// as /<its file name>, which is also its entrypoint (e.g. CoreDNS built by
// `make coredns-bin`).
func BinaryImage(name, bin string) (Image, error) {
	data, err := os.ReadFile(bin)
	if err != nil {
		return Image{}, err
	}
	p := "/" + path.Base(bin)
	return Image{Name: name, Files: []File{{Path: p, Mode: 0o755, Data: data}}, Entrypoint: []string{p}}, nil
}

// ProgramsImage is an image named name holding the executables bins, each
// as /<its file name>, and the shared libraries they load (as ldd finds
// them on this machine, at the same paths): a program built with cgo, or
// with the race detector, runs in it as on the host. env is the image's
// environment.
func ProgramsImage(ctx context.Context, name string, env []string, bins ...string) (Image, error) {
	img := Image{Name: name, Env: env}
	seen := map[string]bool{}
	for _, bin := range bins {
		data, err := os.ReadFile(bin)
		if err != nil {
			return Image{}, err
		}
		img.Files = append(img.Files, File{Path: "/" + path.Base(bin), Mode: 0o755, Data: data})
		libs, err := sharedLibraries(ctx, bin)
		if err != nil {
			return Image{}, err
		}
		for _, lib := range libs {
			if seen[lib] {
				continue
			}
			seen[lib] = true
			data, err := os.ReadFile(lib) // through symbolic links: the image holds the file
			if err != nil {
				return Image{}, err
			}
			img.Files = append(img.Files, File{Path: lib, Mode: 0o755, Data: data})
		}
	}
	return img, nil
}

// TortiePrograms are the programs of tortie's own image, from one
// directory (make build puts them in bin/).
var TortiePrograms = []string{"tortied", "tortie-cni", "tortiectl"}

// TortieImage is tortie's image (Tortie) for a lab: TortiePrograms from
// dir and this machine's nft, which tortied runs to program natOutgoing
// and to open the FORWARD chain to its tunnel TAP,
// each at the root with the libraries it loads; the root is first on the
// image's PATH. env is added to the image's environment.
func TortieImage(ctx context.Context, dir string, env ...string) (Image, error) {
	var bins []string
	for _, b := range TortiePrograms {
		bins = append(bins, filepath.Join(dir, b))
	}
	nft, err := exec.LookPath("nft")
	if err != nil {
		return Image{}, errors.New("nft not found (Debian package nftables): tortie's image carries it for natOutgoing and the FORWARD chain")
	}
	bins = append(bins, nft)
	env = append([]string{"PATH=/:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}, env...)
	return ProgramsImage(ctx, Tortie, env, bins...)
}

// sharedLibraries lists the absolute paths of the libraries (and the
// loader) a dynamic executable needs; none for a static one.
func sharedLibraries(ctx context.Context, bin string) ([]string, error) {
	out, err := exec.CommandContext(ctx, "ldd", bin).CombinedOutput()
	if err != nil {
		if bytes.Contains(out, []byte("not a dynamic executable")) {
			return nil, nil
		}
		return nil, fmt.Errorf("ldd %s: %v: %s", bin, err, out)
	}
	return parseLdd(string(out))
}

// parseLdd reads ldd's output: "name => /path (0x...)" for a library,
// "/path (0x...)" for the loader, and "linux-vdso.so.1 (0x...)" for the
// kernel's own, which is not a file.
func parseLdd(out string) ([]string, error) {
	var libs []string
	for _, line := range strings.Split(out, "\n") {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		if _, target, ok := strings.Cut(line, "=>"); ok {
			line = strings.TrimSpace(target)
		}
		if strings.HasPrefix(line, "not found") {
			return nil, fmt.Errorf("ldd: a library is missing: %s", line)
		}
		if p, _, _ := strings.Cut(line, " "); path.IsAbs(p) {
			libs = append(libs, p)
		}
	}
	return libs, nil
}
