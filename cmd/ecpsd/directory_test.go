package main

import (
	"archive/zip"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ecps-sante/ecps/directory"
	"github.com/ecps-sante/ecps/directory/directorytest"
	"github.com/ecps-sante/ecps/redistest"
)

const (
	dirTestdata = "../../directory/testdata/"
	sampleAct   = dirTestdata + "PS_LibreAcces_Personne_activite_202611150930.txt"
	sampleSF    = dirTestdata + "PS_LibreAcces_SavoirFaire_202611150930.txt"
	sample1252  = dirTestdata + "PS_LibreAcces_Personne_activite_cp1252.txt"
	idDupre     = "810001234565"
)

// dirFixture: the test Redis, a server config file pointing at it, a key
// prefix of the test's own (ECPS_REDIS_KEY_PREFIX), short grace and progress.
type dirFixture struct {
	t      *testing.T
	rdb    redis.UniversalClient
	prefix string
	config string
	env    map[string]string
	url    string
}

func newDirFixture(t *testing.T) *dirFixture {
	t.Helper()
	rdb, prefix := redistest.Client(t)
	o := rdb.(*redis.Client).Options()
	url := fmt.Sprintf("redis://%s/%d", o.Addr, o.DB)
	old, oldEvery := directoryOptions, directoryProgressEvery
	directoryOptions = directory.Options{Grace: 100 * time.Millisecond, PointerTTL: 20 * time.Millisecond}
	directoryProgressEvery = time.Millisecond
	t.Cleanup(func() { directoryOptions, directoryProgressEvery = old, oldEvery })
	return &dirFixture{t: t, rdb: rdb, prefix: prefix, url: url,
		config: writeConfig(t, edit(t, `"redis://127.0.0.1:6379/0"`, `"`+url+`"`)),
		env:    map[string]string{"ECPS_REDIS_KEY_PREFIX": prefix}}
}

// run runs `ecpsd directory ARGS` with -config inserted after the subcommand.
func (f *dirFixture) run(stdin io.Reader, args ...string) (code int, stdout, stderr string) {
	f.t.Helper()
	if stdin == nil {
		stdin = strings.NewReader("")
	}
	full := append([]string{"directory", args[0], "-config", f.config}, args[1:]...)
	var out, errb bytes.Buffer
	code = run(context.Background(), full, stdin, &out, &errb, envOf(f.env))
	return code, out.String(), errb.String()
}

func (f *dirFixture) store() *directory.Store {
	return directory.NewStore(f.rdb, directory.Options{KeyPrefix: f.prefix, PointerTTL: time.Millisecond})
}

func (f *dirFixture) keys() []string {
	f.t.Helper()
	k, err := f.rdb.Keys(context.Background(), f.prefix+"*").Result()
	if err != nil {
		f.t.Fatal(err)
	}
	return k
}

func (f *dirFixture) current() string {
	f.t.Helper()
	v, err := f.store().Loaded(context.Background())
	if err != nil {
		f.t.Fatal(err)
	}
	return v
}

// sampleZip is the published zip of the sample files, deflated as published.
func sampleZip(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "PS_LibreAcces_202611150930.zip")
	out, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	zw := zip.NewWriter(out)
	for _, name := range []string{sampleAct, sampleSF} {
		w, err := zw.Create(filepath.Base(name))
		if err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write(b); err != nil {
			t.Fatal(err)
		}
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

func mustContain(t *testing.T, what, s string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(s, w) {
			t.Errorf("%s lacks %q:\n%s", what, w, s)
		}
	}
}

func TestDirectoryCommands(t *testing.T) {
	f := newDirFixture(t)
	code, out, _ := f.run(nil, "status")
	if code != exitOK || !strings.Contains(out, "none loaded") {
		t.Fatalf("status = %d %q", code, out)
	}

	code, out, errs := f.run(nil, "import", sampleZip(t))
	if code != exitOK {
		t.Fatalf("import zip = %d\n%s\n%s", code, out, errs)
	}
	v1 := f.current()
	mustContain(t, "import's summary", out,
		"directory: version "+v1+" is current\n",
		"  entries       5 practitioners\n",
		"  activity file PS_LibreAcces_Personne_activite_202611150930.txt (utf-8)\n",
		"    lines       13, 4 rejected\n",
		"    rejected    column_count: 1 (line 6)\n",
		"                idnat_empty: 1 (line 7)\n",
		"                idnat_invalid: 1 (line 8)\n",
		"                idnat_type_mismatch: 1 (line 11)\n",
		"  savoir-faire  PS_LibreAcces_SavoirFaire_202611150930.txt (utf-8)\n",
		"    added       2 specialties; 1 idNat(s) not in the activity file, ignored\n")
	mustContain(t, "import's stderr", errs, "directory import: reading PS_LibreAcces_Personne_activite_202611150930.txt")
	e, err := f.store().Lookup(context.Background(), idDupre)
	if err != nil || len(e.Activities) != 3 || len(e.Specialties) != 3 || e.Version != v1 {
		t.Fatalf("Lookup = %+v, %v", e, err)
	}

	code, out, _ = f.run(nil, "status")
	if code != exitOK {
		t.Fatalf("status = %d", code)
	}
	mustContain(t, "status", out, "directory: version "+v1+" is current\n", "  entries       5 practitioners\n",
		"    rejected    column_count: 1 (line 6)\n", "  imported      ")

	t.Run("header lacking a column", func(t *testing.T) {
		b, _ := os.ReadFile(sampleAct)
		bad := filepath.Join(t.TempDir(), "bad.txt")
		os.WriteFile(bad, bytes.Replace(b, []byte("|Libellé commune (coord. structure)|"), []byte("|Commune|"), 1), 0o644)
		before := len(f.keys())
		code, out, errs := f.run(nil, "import", bad)
		if code != exitFailed || out != "" {
			t.Errorf("import = %d %q, want 1", code, out)
		}
		mustContain(t, "stderr", errs, `lacks the column(s) "Libellé commune (coord. structure)"`, "nothing was written, the current version stays")
		if f.current() != v1 || len(f.keys()) != before {
			t.Errorf("current %s, %d keys (were %d)", f.current(), len(f.keys()), before)
		}
	})
	t.Run("a .txt and its savoir-faire file", func(t *testing.T) {
		code, out, errs := f.run(nil, "import", "-savoir-faire", sampleSF, sampleAct)
		if code != exitOK {
			t.Fatalf("import = %d\n%s\n%s", code, out, errs)
		}
		mustContain(t, "summary", out, "(it replaced "+v1+")", "    added       2 specialties")
		v1 = f.current()
	})
	t.Run("far fewer practitioners", func(t *testing.T) {
		code, out, errs := f.run(strings.NewReader(readSample(t, sample1252)), "import", "-")
		if code != exitFailed || f.current() != v1 {
			t.Errorf("import = %d %s", code, out)
		}
		mustContain(t, "stderr", errs, "holds 2 entries, fewer than 90% of the current one's 5", "-force switches anyway")
	})
	t.Run("stdin, Windows-1252, forced", func(t *testing.T) {
		code, out, errs := f.run(strings.NewReader(readSample(t, sample1252)), "import", "-force", "-")
		if code != exitOK {
			t.Fatalf("import = %d\n%s\n%s", code, out, errs)
		}
		mustContain(t, "summary", out, "  activity file (stdin) (windows-1252)\n", "  entries       2 practitioners\n")
	})

	code, out, _ = f.run(nil, "clear")
	if code != exitOK || !strings.Contains(out, "cleared; no directory loaded") {
		t.Errorf("clear = %d %q", code, out)
	}
	if code, out, _ = f.run(nil, "status"); code != exitOK || !strings.Contains(out, "none loaded") {
		t.Errorf("status after clear = %d %q", code, out)
	}
	if k := f.keys(); len(k) != 0 {
		t.Errorf("keys left after clear: %v", k)
	}
	if code, out, _ = f.run(nil, "clear"); code != exitOK || !strings.Contains(out, "none was loaded") {
		t.Errorf("second clear = %d %q", code, out)
	}
}

// demoExtract is the directory that `make run` loads (import -if-none).
const demoExtract = "../../deploy/dev/PS_LibreAcces_Personne_activite_demo.txt"

// TestDirectoryDemo: make run's demo directory imports cleanly when none
// is loaded and has the walk-through's and the screenshots' practitioners;
// -if-none never replaces a directory already loaded.
func TestDirectoryDemo(t *testing.T) {
	f := newDirFixture(t)
	code, out, errs := f.run(nil, "import", "-if-none", demoExtract)
	if code != exitOK {
		t.Fatalf("import -if-none = %d\n%s\n%s", code, out, errs)
	}
	demo := f.current()
	mustContain(t, "summary", out, "directory: version "+demo+" is current\n", "  entries       7 practitioners\n",
		"    lines       11, 0 rejected\n")
	ctx := context.Background()
	for idNat, name := range map[string]string{idDupre: "DUPRÉ-LEFÈVRE", "810101847258": "ROUSSEAU", "0751234567": "N'DIAYE"} {
		e, err := f.store().Lookup(ctx, idNat)
		if err != nil || string(e.FamilyName) != name || len(e.Activities) == 0 {
			t.Errorf("Lookup(%s) = %+v, %v; want %s with places of activity", idNat, e, err, name)
		}
	}

	// Loaded: -if-none reads nothing (not even a file that does not exist).
	code, out, errs = f.run(nil, "import", "-if-none", filepath.Join(t.TempDir(), "absent.txt"))
	if code != exitOK || out != "directory: version "+demo+" is loaded; nothing imported (-if-none)\n" || f.current() != demo {
		t.Fatalf("import -if-none with a directory loaded = %d %q %q", code, out, errs)
	}
}

func readSample(t *testing.T, name string) string {
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestDirectoryUsage(t *testing.T) {
	for _, args := range [][]string{
		{"directory"}, {"directory", "load"}, {"directory", "import"}, {"directory", "import", "a.txt", "b.txt"},
		{"directory", "status", "extra"}, {"directory", "clear", "-nope"}, {"directory", "status", "-force"},
	} {
		var out, errb bytes.Buffer
		if code := run(context.Background(), args, strings.NewReader(""), &out, &errb, envOf(nil)); code != exitConfig || errb.Len() == 0 {
			t.Errorf("run(%q) = %d, stderr %q; want 2 and a usage", args, code, errb.String())
		}
	}
	t.Run("-savoir-faire with a zip", func(t *testing.T) {
		f := newDirFixture(t)
		code, _, errs := f.run(nil, "import", "-savoir-faire", sampleSF, sampleZip(t))
		if code != exitConfig || !strings.Contains(errs, "a .zip brings its own") {
			t.Errorf("= %d %q", code, errs)
		}
	})
	t.Run("missing file", func(t *testing.T) {
		f := newDirFixture(t)
		if code, _, errs := f.run(nil, "import", "/nonexistent.txt"); code != exitFailed || !strings.Contains(errs, "/nonexistent.txt") {
			t.Errorf("= %d %q", code, errs)
		}
	})
}

// Without -config, Redis comes from ECPS_REDIS_URL; without that either,
// the command says what to give.
func TestDirectoryWithoutConfig(t *testing.T) {
	f := newDirFixture(t)
	var out, errb bytes.Buffer
	env := envOf(map[string]string{"ECPS_REDIS_URL": f.url, "ECPS_REDIS_KEY_PREFIX": f.prefix})
	if code := run(context.Background(), []string{"directory", "status"}, nil, &out, &errb, env); code != exitOK || !strings.Contains(out.String(), "none loaded") {
		t.Errorf("status with ECPS_REDIS_URL = %d %q %q", code, out.String(), errb.String())
	}
	out.Reset()
	errb.Reset()
	if code := run(context.Background(), []string{"directory", "status"}, nil, &out, &errb, envOf(nil)); code != exitConfig ||
		!strings.Contains(errb.String(), "give -config FILE, or ECPS_REDIS_URL") {
		t.Errorf("status without Redis = %d %q", code, errb.String())
	}
	out.Reset()
	errb.Reset()
	if code := run(context.Background(), []string{"directory", "status", "-config", "/nonexistent.yaml"}, nil, &out, &errb, envOf(nil)); code != exitConfig ||
		!strings.Contains(errb.String(), "/nonexistent.yaml") {
		t.Errorf("status with a missing config = %d %q", code, errb.String())
	}
}

// An import process killed (SIGKILL) while writing leaves the current
// version serving; once its lock has expired, the next import removes what
// it left.
func TestDirectoryImportKilled(t *testing.T) {
	f := newDirFixture(t)
	if code, out, errs := f.run(nil, "import", sampleZip(t)); code != exitOK {
		t.Fatalf("import = %d %s %s", code, out, errs)
	}
	v1 := f.current()
	big := filepath.Join(t.TempDir(), "PS_LibreAcces_Personne_activite_big.txt")
	w, err := os.Create(big)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := directorytest.Write(w, directorytest.Options{Lines: 60000, Seed: 5}); err != nil {
		t.Fatal(err)
	}
	w.Close()

	cmd := exec.Command(os.Args[0], "directory", "import", "-config", f.config, big)
	cmd.Env = append(os.Environ(), "ECPSD_TEST_MAIN=1", "ECPS_REDIS_KEY_PREFIX="+f.prefix)
	var cmdErr bytes.Buffer
	cmd.Stderr = &cmdErr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	// Kill it as soon as it has written some buckets of its version.
	var killed string
	deadline := time.Now().Add(60 * time.Second)
	for killed == "" {
		if time.Now().After(deadline) {
			t.Fatal("the import wrote nothing within 60 s")
		}
		vs, _ := f.rdb.SMembers(context.Background(), f.prefix+"{dir}:versions").Result()
		for _, v := range vs {
			if v == v1 {
				continue
			}
			if n, _ := f.rdb.Keys(context.Background(), f.prefix+"{dir:*}:"+v).Result(); len(n) >= 50 {
				killed = v
			}
		}
		time.Sleep(2 * time.Millisecond)
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	err = <-exited
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("the import ended before the kill (%v); stderr:\n%s", err, cmdErr.String())
	}

	if f.current() != v1 {
		t.Fatalf("current %q after the kill, want %q", f.current(), v1)
	}
	if e, err := f.store().Lookup(context.Background(), idDupre); err != nil || e.Version != v1 {
		t.Fatalf("Lookup after the kill = %v, %v", e.Version, err)
	}
	code, _, errs := f.run(nil, "import", big)
	if code != exitFailed || !strings.Contains(errs, "another import or clear is running") {
		t.Errorf("import while the killed one's lock lives = %d %q", code, errs)
	}
	// Its lock expires one LockTTL (1 min) after its last renewal: expire it now.
	if err := f.rdb.Del(context.Background(), f.prefix+"{dir}:lock").Err(); err != nil {
		t.Fatal(err)
	}
	code, out, errs := f.run(nil, "import", big)
	if code != exitOK {
		t.Fatalf("next import = %d\n%s\n%s", code, out, errs)
	}
	mustContain(t, "progress", errs, "directory import: activity file: ", " practitioners written, ", " lines/s\n")
	mustContain(t, "summary", out, "(it replaced "+v1+")", "    lines       60000, 0 rejected\n")
	for _, k := range f.keys() {
		if strings.HasSuffix(k, killed) || strings.HasSuffix(k, v1) {
			t.Errorf("key %s left", k)
		}
	}
}
