// Command image builds the ecpsd container image without a Docker engine
// (`make image`), with go-containerregistry:
//
//	go run ./deploy/image [-out bin/ecpsd-image.tar] [-arch amd64] [-version V] [-revision R]
//
// It compiles a static ecpsd (CGO_ENABLED=0, -trimpath, the version and
// revision stamped in), lays out one layer (the binary, CA certificates, a
// passwd/group with the non-root user 65532, /etc/ecps, /tmp; no shell, no
// package manager) and writes an OCI image layout as a tar that also holds
// Docker's manifest.json, so that `docker load`, `podman load`,
// `skopeo copy oci-archive:…` and `crane push` all take it.
//
// It lives here, beside deploy/Dockerfile, rather than under cmd/, because it
// is build tooling, not something we ship: deploy/Dockerfile builds the same
// image (same files from deploy/image/rootfs, user, ports, entrypoint and
// labels), and image_test.go holds the two to each other.
//
// Version and revision default to `git describe --tags --always --dirty` and
// `git rev-parse HEAD`, the creation time to the last commit's time: two
// builds of one clean commit give the same image digest.
package main

import (
	"archive/tar"
	"bytes"
	"context"
	"embed"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// What the image is; deploy/Dockerfile says the same (image_test.go checks).
const (
	// User is the numeric user and group the server runs as (distroless's
	// "nonroot"): numeric, so that Kubernetes' runAsNonRoot can verify it.
	User       = "65532:65532"
	UID        = 65532
	BinaryPath = "/ecpsd"
	ConfigPath = "/etc/ecps/config.yaml"
	CACertPath = "/etc/ssl/certs/ca-certificates.crt"
	Title      = "ecpsd"
	// DefaultSource is the repository named by the org.opencontainers.image.source label.
	DefaultSource = "https://github.com/ecps-sante/ecps"
)

var (
	// Entrypoint and Cmd: `docker run IMAGE` serves with the mounted config;
	// other arguments replace Cmd (`IMAGE hash-secret`, `IMAGE directory
	// import -config … FILE`).
	Entrypoint = []string{BinaryPath}
	Cmd        = []string{"-config", ConfigPath}
	// ExposedPorts: 8080 the API, pages and probes; 9090 /metrics (metrics_listen).
	ExposedPorts = []string{"8080/tcp", "9090/tcp"}
)

// rootfs holds the files taken as they are (passwd, group, nsswitch.conf);
// deploy/Dockerfile copies the same directory.
//
//go:embed rootfs
var rootfs embed.FS

// Options say what to build.
type Options struct {
	Out      string    // the tarball written
	Binary   string    // a static ecpsd already built; empty: build one
	Arch     string    // GOARCH of the image
	Version  string    // org.opencontainers.image.version, and ecpsd's version
	Revision string    // org.opencontainers.image.revision (commit)
	Source   string    // org.opencontainers.image.source
	Created  time.Time // image and file times
	Tag      string    // the name given to the image in the tarball (repo:tag)
	CACerts  string    // CA bundle copied to CACertPath
	ModRoot  string    // the module's root directory (to build ecpsd and ask git)
}

func main() {
	os.Exit(run(context.Background(), os.Args[1:], os.Stdout, os.Stderr))
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("image", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o Options
	fs.StringVar(&o.Out, "out", "bin/ecpsd-image.tar", "the OCI image tarball to write")
	fs.StringVar(&o.Binary, "binary", "", "use this static ecpsd instead of building one")
	fs.StringVar(&o.Arch, "arch", "amd64", "GOARCH of the image (amd64, arm64)")
	fs.StringVar(&o.Version, "version", "", "image and ecpsd version (default: git describe --tags --always --dirty)")
	fs.StringVar(&o.Revision, "revision", "", "commit (default: git rev-parse HEAD)")
	fs.StringVar(&o.Source, "source", DefaultSource, "source repository URL (label)")
	created := fs.String("created", "", "creation time, RFC 3339 (default: SOURCE_DATE_EPOCH, else the last commit's time)")
	fs.StringVar(&o.Tag, "tag", "", "image name in the tarball (default ecpsd:VERSION)")
	fs.StringVar(&o.CACerts, "ca-certs", "/etc/ssl/certs/ca-certificates.crt", "CA bundle to include (Debian: package ca-certificates)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintln(stderr, "image: unexpected arguments:", fs.Args())
		return 2
	}
	if *created != "" {
		t, err := time.Parse(time.RFC3339, *created)
		if err != nil {
			fmt.Fprintln(stderr, "image: -created:", err)
			return 2
		}
		o.Created = t
	}
	if err := o.fill(ctx); err != nil {
		fmt.Fprintln(stderr, "image:", err)
		return 1
	}
	digest, err := Build(ctx, o)
	if err != nil {
		fmt.Fprintln(stderr, "image:", err)
		return 1
	}
	fmt.Fprintf(stdout, "%s: %s %s (linux/%s, version %s, revision %s)\n", o.Out, o.Tag, digest, o.Arch, o.Version, o.Revision)
	return 0
}

// fill completes the defaults from the environment and git.
func (o *Options) fill(ctx context.Context) error {
	if o.ModRoot == "" {
		out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
		gomod := strings.TrimSpace(string(out))
		if err != nil || gomod == "" || gomod == os.DevNull {
			return errors.New("run it inside the module (go env GOMOD is empty)")
		}
		o.ModRoot = filepath.Dir(gomod)
	}
	git := func(args ...string) string {
		cmd := exec.CommandContext(ctx, "git", args...)
		cmd.Dir = o.ModRoot
		out, err := cmd.Output()
		if err != nil {
			return ""
		}
		return strings.TrimSpace(string(out))
	}
	if o.Version == "" {
		o.Version = git("describe", "--tags", "--always", "--dirty")
	}
	if o.Version == "" {
		o.Version = "dev"
	}
	if o.Revision == "" {
		o.Revision = git("rev-parse", "HEAD")
	}
	if o.Created.IsZero() {
		secs := os.Getenv("SOURCE_DATE_EPOCH")
		if secs == "" {
			secs = git("log", "-1", "--format=%ct")
		}
		if n, err := strconv.ParseInt(secs, 10, 64); err == nil {
			o.Created = time.Unix(n, 0)
		} else {
			o.Created = time.Now()
		}
	}
	o.Created = o.Created.UTC().Truncate(time.Second)
	if o.Tag == "" {
		o.Tag = "ecpsd:" + tagSafe(o.Version)
	}
	if o.Source == "" {
		o.Source = DefaultSource
	}
	if o.Arch == "" {
		o.Arch = "amd64"
	}
	return nil
}

var notTagChars = regexp.MustCompile(`[^A-Za-z0-9_.-]`)

// tagSafe makes a version usable as an image tag ([A-Za-z0-9_][A-Za-z0-9_.-]{0,127}).
func tagSafe(v string) string {
	v = notTagChars.ReplaceAllString(v, "-")
	v = strings.TrimLeft(v, ".-")
	if len(v) > 128 {
		v = v[:128]
	}
	if v == "" {
		return "dev"
	}
	return v
}

// Labels are the image's OCI annotations (as labels in its config).
func Labels(o Options) map[string]string {
	return map[string]string{
		"org.opencontainers.image.title":         Title,
		"org.opencontainers.image.description":   "e-CPS mobile authentication backend (ecpsd)",
		"org.opencontainers.image.version":       o.Version,
		"org.opencontainers.image.revision":      o.Revision,
		"org.opencontainers.image.source":        o.Source,
		"org.opencontainers.image.created":       o.Created.Format(time.RFC3339),
		"org.opencontainers.image.documentation": o.Source + "/blob/main/docs/operations.md",
	}
}

// Build writes the image tarball and returns the image's digest.
func Build(ctx context.Context, o Options) (string, error) {
	bin := o.Binary
	if bin == "" {
		tmp, err := os.MkdirTemp("", "ecps-image-")
		if err != nil {
			return "", err
		}
		defer os.RemoveAll(tmp)
		bin = filepath.Join(tmp, "ecpsd")
		if err := BuildBinary(ctx, o, bin); err != nil {
			return "", err
		}
	}
	img, err := Image(o, bin)
	if err != nil {
		return "", err
	}
	if err := WriteArchive(o.Out, img, o.Tag); err != nil {
		return "", err
	}
	d, err := img.Digest()
	if err != nil {
		return "", err
	}
	return d.String(), nil
}

// BuildBinary compiles a static ecpsd for linux/o.Arch into out.
func BuildBinary(ctx context.Context, o Options, out string) error {
	ldflags := fmt.Sprintf("-s -w -X main.version=%s -X main.revision=%s", o.Version, o.Revision)
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags", ldflags, "-o", out, "./cmd/ecpsd")
	cmd.Dir = o.ModRoot
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+o.Arch)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go build ./cmd/ecpsd: %w", err)
	}
	return nil
}

// Image assembles the image around the ecpsd binary at bin.
func Image(o Options, bin string) (v1.Image, error) {
	layerTar, err := rootLayer(o, bin)
	if err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, err
	}
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err = mutate.Append(img, mutate.Addendum{
		Layer:     layer,
		MediaType: types.OCILayer,
		History: v1.History{
			Created:   v1.Time{Time: o.Created},
			CreatedBy: "deploy/image: ecpsd, CA certificates, passwd and group (user 65532)",
		},
	})
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.Architecture = o.Arch
	cf.OS = "linux"
	cf.Created = v1.Time{Time: o.Created}
	ports := map[string]struct{}{}
	for _, p := range ExposedPorts {
		ports[p] = struct{}{}
	}
	cf.Config = v1.Config{
		User:         User,
		Entrypoint:   Entrypoint,
		Cmd:          Cmd,
		ExposedPorts: ports,
		Labels:       Labels(o),
		WorkingDir:   "/",
		StopSignal:   "SIGTERM",
		Env:          []string{"PATH=/"},
	}
	return mutate.ConfigFile(img, cf)
}

// rootLayer is the one layer's tar: every file root-owned and read-only but
// /tmp and the user's home, all dated o.Created, in a fixed order.
func rootLayer(o Options, bin string) ([]byte, error) {
	type entry struct {
		hdr  tar.Header
		body []byte
	}
	var entries []entry
	dir := func(name string, mode int64, uid int) {
		entries = append(entries, entry{hdr: tar.Header{Typeflag: tar.TypeDir, Name: name + "/", Mode: mode, Uid: uid, Gid: uid}})
	}
	file := func(name string, mode int64, body []byte) {
		entries = append(entries, entry{hdr: tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Size: int64(len(body))}, body: body})
	}
	binary, err := os.ReadFile(bin)
	if err != nil {
		return nil, err
	}
	certs, err := os.ReadFile(o.CACerts)
	if err != nil {
		return nil, fmt.Errorf("CA certificates: %w (Debian: apt-get install ca-certificates)", err)
	}
	file(strings.TrimPrefix(BinaryPath, "/"), 0o755, binary)
	for _, d := range []string{"etc", "etc/ecps", "etc/ssl", "etc/ssl/certs", "home"} {
		dir(d, 0o755, 0)
	}
	dir("home/nonroot", 0o700, UID)
	dir("tmp", 0o1777, 0)
	file(strings.TrimPrefix(CACertPath, "/"), 0o644, certs)
	err = fs.WalkDir(rootfs, "rootfs", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		body, err := rootfs.ReadFile(p)
		if err != nil {
			return err
		}
		file(strings.TrimPrefix(p, "rootfs/"), 0o644, body)
		return nil
	})
	if err != nil {
		return nil, err
	}
	sort.Slice(entries, func(i, j int) bool { return entries[i].hdr.Name < entries[j].hdr.Name })

	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := e.hdr
		h.ModTime = o.Created
		h.Format = tar.FormatPAX
		if err := tw.WriteHeader(&h); err != nil {
			return nil, err
		}
		if _, err := tw.Write(e.body); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// WriteArchive writes img as an OCI image layout in a tar, plus Docker's
// manifest.json (what `docker save` writes since Docker 25).
func WriteArchive(out string, img v1.Image, tag string) error {
	tmp, err := os.MkdirTemp("", "ecps-image-layout-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	p, err := layout.Write(tmp, empty.Index)
	if err != nil {
		return err
	}
	refName := tag
	if i := strings.LastIndex(tag, ":"); i >= 0 {
		refName = tag[i+1:]
	}
	if err := p.AppendImage(img, layout.WithAnnotations(map[string]string{
		"org.opencontainers.image.ref.name": refName,
		"io.containerd.image.name":          tag,
	})); err != nil {
		return err
	}
	cfgName, err := img.ConfigName()
	if err != nil {
		return err
	}
	layers, err := img.Layers()
	if err != nil {
		return err
	}
	dm := []map[string]any{{"Config": blobPath(cfgName), "RepoTags": []string{tag}, "Layers": []string{}}}
	for _, l := range layers {
		d, err := l.Digest()
		if err != nil {
			return err
		}
		dm[0]["Layers"] = append(dm[0]["Layers"].([]string), blobPath(d))
	}
	manifest, err := json.Marshal(dm)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(tmp, "manifest.json"), manifest, 0o644); err != nil {
		return err
	}
	if dir := filepath.Dir(out); dir != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
	}
	return tarDir(tmp, out)
}

func blobPath(h v1.Hash) string { return path.Join("blobs", h.Algorithm, h.Hex) }

// tarDir writes the files under dir to the tar file out, sorted, with fixed
// times and owners, atomically (a temporary file renamed).
func tarDir(dir, out string) error {
	var names []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p != dir {
			names = append(names, p)
		}
		return nil
	})
	if err != nil {
		return err
	}
	sort.Strings(names)
	f, err := os.CreateTemp(filepath.Dir(out), ".ecpsd-image-*.tar")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	tw := tar.NewWriter(f)
	for _, n := range names {
		fi, err := os.Stat(n)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, n)
		h := &tar.Header{Name: filepath.ToSlash(rel), Mode: 0o644, ModTime: time.Unix(0, 0), Format: tar.FormatPAX}
		if fi.IsDir() {
			h.Typeflag, h.Name, h.Mode = tar.TypeDir, h.Name+"/", 0o755
			if err := tw.WriteHeader(h); err != nil {
				return err
			}
			continue
		}
		h.Typeflag, h.Size = tar.TypeReg, fi.Size()
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		src, err := os.Open(n)
		if err != nil {
			return err
		}
		_, err = io.Copy(tw, src)
		src.Close()
		if err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Chmod(f.Name(), 0o644); err != nil {
		return err
	}
	return os.Rename(f.Name(), out)
}
