package main

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"debug/elf"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/ecps-sante/ecps/internal/syncbuf"
	"github.com/ecps-sante/ecps/redistest"
)

// TestImage builds the image as `make image` does, reads the tarball back
// both as an OCI layout and as a `docker save` archive, checks its config
// and files, and runs its entrypoint from the unpacked root filesystem
// against a real Redis until /readyz answers 200, then stops it with SIGTERM.
func TestImage(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	dir := t.TempDir()
	o := Options{
		Out:      filepath.Join(dir, "ecpsd-image.tar"),
		Version:  "v9.8.7-test",
		Revision: "0123456789abcdef0123456789abcdef01234567",
		Created:  time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC),
	}
	if err := o.fill(ctx); err != nil {
		t.Fatal(err)
	}
	o.CACerts = "/etc/ssl/certs/ca-certificates.crt"
	digest, err := Build(ctx, o)
	if err != nil {
		t.Fatalf("build: %v", err)
	}

	// 1. The tarball as an OCI image layout.
	unpacked := filepath.Join(dir, "layout")
	untar(t, o.Out, unpacked)
	idx, err := layout.ImageIndexFromPath(unpacked)
	if err != nil {
		t.Fatalf("not an OCI layout: %v", err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(im.Manifests) != 1 {
		t.Fatalf("index.json: %d manifests, want 1", len(im.Manifests))
	}
	desc := im.Manifests[0]
	if desc.MediaType != types.OCIManifestSchema1 || desc.Digest.String() != digest {
		t.Errorf("index.json: manifest %s %s, want %s %s", desc.MediaType, desc.Digest, types.OCIManifestSchema1, digest)
	}
	if got := desc.Annotations["io.containerd.image.name"]; got != "ecpsd:v9.8.7-test" {
		t.Errorf("image name annotation %q, want ecpsd:v9.8.7-test", got)
	}
	img, err := idx.Image(desc.Digest)
	if err != nil {
		t.Fatal(err)
	}

	// 2. The same tarball as `docker load` reads it (manifest.json).
	dimg, err := tarball.ImageFromPath(o.Out, nil)
	if err != nil {
		t.Fatalf("not a docker save archive: %v", err)
	}
	// It synthesizes its own manifest: compare what it points to.
	if a, b := configAndLayers(t, dimg), configAndLayers(t, img); !slices.Equal(a, b) {
		t.Errorf("manifest.json: config and layers %v, want %v (as in index.json)", a, b)
	}

	// 3. Its config.
	if mt, _ := img.MediaType(); mt != types.OCIManifestSchema1 {
		t.Errorf("manifest media type %s", mt)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	c := cf.Config
	if cf.OS != "linux" || cf.Architecture != "amd64" {
		t.Errorf("platform %s/%s, want linux/amd64", cf.OS, cf.Architecture)
	}
	if c.User != "65532:65532" {
		t.Errorf("user %q, want 65532:65532 (numeric: runAsNonRoot can check it)", c.User)
	}
	if !slices.Equal(c.Entrypoint, []string{"/ecpsd"}) || !slices.Equal(c.Cmd, []string{"-config", "/etc/ecps/config.yaml"}) {
		t.Errorf("entrypoint %q cmd %q", c.Entrypoint, c.Cmd)
	}
	if ports := slices.Sorted(maps.Keys(c.ExposedPorts)); !slices.Equal(ports, []string{"8080/tcp", "9090/tcp"}) {
		t.Errorf("exposed ports %v", ports)
	}
	wantLabels := map[string]string{
		"org.opencontainers.image.title":    "ecpsd",
		"org.opencontainers.image.version":  "v9.8.7-test",
		"org.opencontainers.image.revision": o.Revision,
		"org.opencontainers.image.source":   DefaultSource,
		"org.opencontainers.image.created":  "2026-11-01T12:00:00Z",
	}
	for k, v := range wantLabels {
		if c.Labels[k] != v {
			t.Errorf("label %s = %q, want %q", k, c.Labels[k], v)
		}
	}
	if c.Labels["org.opencontainers.image.description"] == "" {
		t.Error("no org.opencontainers.image.description label")
	}
	if !cf.Created.Time.Equal(o.Created) {
		t.Errorf("created %v, want %v", cf.Created, o.Created)
	}

	// 4. Its files: exactly these, no shell, a static binary.
	rootfs := filepath.Join(dir, "rootfs")
	files := extract(t, img, rootfs)
	want := map[string]string{
		"ecpsd": "-rwxr-xr-x 0", "etc": "drwxr-xr-x 0", "etc/ecps": "drwxr-xr-x 0",
		"etc/group": "-rw-r--r-- 0", "etc/nsswitch.conf": "-rw-r--r-- 0", "etc/passwd": "-rw-r--r-- 0",
		"etc/ssl": "drwxr-xr-x 0", "etc/ssl/certs": "drwxr-xr-x 0", "etc/ssl/certs/ca-certificates.crt": "-rw-r--r-- 0",
		"home": "drwxr-xr-x 0", "home/nonroot": "drwx------ 65532", "tmp": "dtrwxrwxrwx 0",
	}
	if !maps.Equal(files, want) {
		t.Errorf("files in the image:\n got %v\nwant %v", files, want)
	}
	for name := range files {
		if base := path.Base(name); base == "sh" || base == "bash" || base == "busybox" || name == "bin" || strings.HasPrefix(name, "bin/") {
			t.Errorf("the image has %s: it must have no shell", name)
		}
	}
	if _, err := os.Lstat(filepath.Join(rootfs, "bin/sh")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("/bin/sh: %v, want absent", err)
	}
	passwd, _ := os.ReadFile(filepath.Join(rootfs, "etc/passwd"))
	if !regexp.MustCompile(`(?m)^nonroot:x:65532:65532:`).Match(passwd) {
		t.Errorf("/etc/passwd has no user 65532:\n%s", passwd)
	}
	pem, _ := os.ReadFile(filepath.Join(rootfs, "etc/ssl/certs/ca-certificates.crt"))
	if pool := x509.NewCertPool(); !pool.AppendCertsFromPEM(pem) {
		t.Error("etc/ssl/certs/ca-certificates.crt holds no certificate")
	}
	checkStatic(t, filepath.Join(rootfs, "ecpsd"))

	// 5. It runs, from that root filesystem, against a real Redis.
	runImage(t, rootfs, cf)
}

// TestImageReproducible: the same inputs give the same digest.
func TestImageReproducible(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "ecpsd")
	if err := os.WriteFile(bin, []byte("\x7fELF not really"), 0o755); err != nil {
		t.Fatal(err)
	}
	o := Options{Version: "v1", Revision: "abc", Source: DefaultSource, Arch: "amd64", Tag: "ecpsd:v1",
		Created: time.Unix(1_800_000_000, 0).UTC(), CACerts: "/etc/ssl/certs/ca-certificates.crt"}
	var digests []string
	for i := range 2 {
		o.Out = filepath.Join(dir, fmt.Sprintf("%d.tar", i))
		img, err := Image(o, bin)
		if err != nil {
			t.Fatal(err)
		}
		if err := WriteArchive(o.Out, img, o.Tag); err != nil {
			t.Fatal(err)
		}
		d, _ := img.Digest()
		digests = append(digests, d.String())
	}
	a, _ := os.ReadFile(filepath.Join(dir, "0.tar"))
	b, _ := os.ReadFile(filepath.Join(dir, "1.tar"))
	if digests[0] != digests[1] || !bytes.Equal(a, b) {
		t.Errorf("two builds differ: %v, tarballs equal: %v", digests, bytes.Equal(a, b))
	}
}

// TestTagSafe: a git describe becomes a valid tag.
func TestTagSafe(t *testing.T) {
	for in, want := range map[string]string{"v1.2.3": "v1.2.3", "a70567d-dirty": "a70567d-dirty",
		"feature/x+y": "feature-x-y", "-x": "x", "": "dev", strings.Repeat("a", 200): strings.Repeat("a", 128)} {
		if got := tagSafe(in); got != want {
			t.Errorf("tagSafe(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestDockerfile: deploy/Dockerfile builds the same image: same files, user,
// ports, entrypoint, labels and build flags.
func TestDockerfile(t *testing.T) {
	raw, err := os.ReadFile("../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	// Join continued lines; drop comments.
	var lines []string
	var cur string
	for _, l := range strings.Split(string(raw), "\n") {
		if strings.HasPrefix(strings.TrimSpace(l), "#") {
			continue
		}
		if s, ok := strings.CutSuffix(l, "\\"); ok {
			cur += s + " "
			continue
		}
		lines = append(lines, strings.TrimSpace(cur+l))
		cur = ""
	}
	final := -1 // the final stage's first line
	for i, l := range lines {
		if strings.HasPrefix(l, "FROM ") {
			final = i
		}
	}
	if final < 0 || lines[final] != "FROM scratch" {
		t.Fatalf("the final stage must be FROM scratch (nothing but our files), got %q", lines[max(final, 0)])
	}
	stage := strings.Join(lines[final:], "\n")
	build := strings.Join(lines[:final], "\n")
	entry, _ := json.Marshal(Entrypoint)
	cmd, _ := json.Marshal(Cmd)
	mustHave := func(where, what string) {
		t.Helper()
		if !strings.Contains(where, what) {
			t.Errorf("deploy/Dockerfile lacks %q", what)
		}
	}
	for _, want := range []string{
		"USER " + User,
		"EXPOSE 8080 9090",
		"ENTRYPOINT " + strings.ReplaceAll(string(entry), ",", ", "),
		"CMD " + strings.ReplaceAll(string(cmd), ",", ", "),
		"STOPSIGNAL SIGTERM",
		"ENV PATH=/",
		"WORKDIR /",
	} {
		if !regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(want) + `$`).MatchString(stage) {
			t.Errorf("the final stage of deploy/Dockerfile lacks the line %q", want)
		}
	}
	for k := range Labels(Options{}) {
		mustHave(stage, k+"=")
	}
	mustHave(build, "CGO_ENABLED=0")
	mustHave(build, "-trimpath")
	mustHave(build, "-X main.version=${VERSION} -X main.revision=${REVISION}")
	mustHave(build, "deploy/image/rootfs/.")
	mustHave(build, CACertPath)
	mustHave(build, "chmod 1777 /rootfs/tmp")
	mustHave(build, "chmod 0700 /rootfs/home/nonroot")
	mustHave(stage, "COPY --from=build --chown=65532:65532 /rootfs/home/nonroot /home/nonroot")
}

// configAndLayers are the digests of an image's config and layers.
func configAndLayers(t *testing.T, img v1.Image) []string {
	t.Helper()
	c, err := img.ConfigName()
	if err != nil {
		t.Fatal(err)
	}
	out := []string{c.String()}
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range layers {
		d, err := l.Digest()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, d.String())
	}
	return out
}

// untar unpacks a tar file into dir.
func untar(t *testing.T, file, dir string) {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, filepath.FromSlash(h.Name))
		if !strings.HasPrefix(p, dir+string(filepath.Separator)) {
			t.Fatalf("tar entry %q escapes", h.Name)
		}
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(p, 0o755); err != nil {
				t.Fatal(err)
			}
		case tar.TypeReg:
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
			b, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, b, 0o644); err != nil {
				t.Fatal(err)
			}
		default:
			t.Fatalf("tarball entry %q: unexpected type %c", h.Name, h.Typeflag)
		}
	}
}

// extract unpacks the image's flattened filesystem into dir and returns
// each entry's "mode uid".
func extract(t *testing.T, img v1.Image, dir string) map[string]string {
	t.Helper()
	rc := mutate.Extract(img)
	defer rc.Close()
	tr := tar.NewReader(rc)
	files := map[string]string{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		name := strings.TrimPrefix(h.Name, "./")
		files[name] = fmt.Sprintf("%s %d", h.FileInfo().Mode(), h.Uid)
		p := filepath.Join(dir, filepath.FromSlash(name))
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(p, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(p, h.FileInfo().Mode().Perm()|os.FileMode(h.Mode)&os.ModeSticky); err != nil {
				t.Fatal(err)
			}
			if os.Geteuid() == 0 {
				_ = os.Lchown(p, h.Uid, h.Gid)
			}
		case tar.TypeReg:
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
			f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, h.FileInfo().Mode().Perm())
			if err != nil {
				t.Fatal(err)
			}
			if _, err := io.Copy(f, tr); err != nil {
				t.Fatal(err)
			}
			f.Close()
		default:
			files[name] += " type " + string(h.Typeflag) // links and devices are unexpected
		}
	}
	// /tmp must be sticky and world-writable for the non-root user.
	if err := os.Chmod(filepath.Join(dir, "tmp"), 0o777|os.ModeSticky); err != nil {
		t.Fatal(err)
	}
	return files
}

// checkStatic fails unless bin is a static ELF executable (no interpreter,
// no shared library): the image has no libc.
func checkStatic(t *testing.T, bin string) {
	t.Helper()
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatalf("%s: %v", bin, err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Errorf("%s has a program interpreter: not static (CGO_ENABLED=0?)", bin)
		}
	}
	if libs, _ := f.ImportedLibraries(); len(libs) > 0 {
		t.Errorf("%s needs shared libraries %v", bin, libs)
	}
}

// runImage starts the image's entrypoint and command from rootfs. As root it
// runs as the container would: chrooted into rootfs (no /proc, no /dev, no
// libc, nothing but the image's files) as the image's user 65532. Otherwise
// it runs the same binary with the same arguments, config path moved into
// rootfs, as the current user.
func runImage(t *testing.T, rootfs string, cf *v1.ConfigFile) {
	t.Helper()
	redisURL := os.Getenv("ECPS_TEST_REDIS_URL")
	if redisURL == "" {
		redisURL = redistest.Start(t).URL()
	}
	port, mport := redistest.FreePort(t), redistest.FreePort(t)
	secret := sha256.Sum256([]byte("image-test-client-secret-0123456789"))
	desk := sha256.Sum256([]byte("image-test-desk-key-0123456789abcd"))
	config := fmt.Sprintf(`listen: "127.0.0.1:%d"
metrics_listen: "127.0.0.1:%d"
public_url: "https://ecps.example.test"
redis:
  url: %q
  key_prefix: %q
clients:
  - id: "idp"
    name: "Test IdP"
    secret_sha256: %q
    scopes: ["authentication"]
desk_operators:
  - name: "desk-1"
    key_sha256: %q
push:
  provider: "none"
`, port, mport, redisURL, redistest.Prefix(), hex.EncodeToString(secret[:]), hex.EncodeToString(desk[:]))
	if err := os.WriteFile(filepath.Join(rootfs, "etc/ecps/config.yaml"), []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}

	args := append(slices.Clone(cf.Config.Entrypoint), cf.Config.Cmd...)
	cmd := exec.Command(filepath.Join(rootfs, args[0]), args[1:]...)
	cmd.Env = cf.Config.Env
	if os.Geteuid() == 0 {
		cmd.Path = args[0]
		cmd.Dir = cf.Config.WorkingDir
		var uid, gid uint32
		if _, err := fmt.Sscanf(cf.Config.User, "%d:%d", &uid, &gid); err != nil {
			t.Fatalf("user %q: %v", cf.Config.User, err)
		}
		cmd.SysProcAttr = &syscall.SysProcAttr{Chroot: rootfs, Credential: &syscall.Credential{Uid: uid, Gid: gid}}
		t.Logf("running %q chrooted into the image's root filesystem as %s", args, cf.Config.User)
	} else {
		cmd.Args[2] = filepath.Join(rootfs, cmd.Args[2])
		t.Logf("not root: running %q from the unpacked root filesystem without chroot", cmd.Args)
	}
	logs := &syncbuf.Buffer{}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %v: %v", args, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("ecpsd's log:\n%s", logs.String())
		}
	}()

	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get(base + "/readyz")
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				if !strings.Contains(string(body), `"status":"ready"`) {
					t.Errorf("/readyz 200 with body %s", body)
				}
				break
			}
		}
		select {
		case err := <-exited:
			t.Fatalf("ecpsd exited before /readyz answered 200: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz did not answer 200 within 60 s (last: %v)", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if resp, err := http.Get(base + "/healthz"); err != nil || resp.StatusCode != http.StatusOK {
		t.Errorf("/healthz: %v %v", resp, err)
	}
	// The version stamped by the build is the one running.
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", mport))
	if err != nil {
		t.Fatalf("/metrics: %v", err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if want := `ecps_build_info{revision="0123456789abcdef0123456789abcdef01234567",version="v9.8.7-test"} 1`; !strings.Contains(string(metrics), want) {
		t.Errorf("/metrics (%d) lacks %s", resp.StatusCode, want)
	}

	// SIGTERM: it drains and exits 0.
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("after SIGTERM: %v, want exit status 0", err)
		}
	case <-time.After(45 * time.Second):
		t.Error("still running 45 s after SIGTERM")
	}
}
