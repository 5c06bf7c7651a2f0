package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestStateSaveLoad(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "new", "folder")
	path := filepath.Join(dir, "state.json")
	key := mustKey(t)
	st := &deviceState{
		Server: "http://127.0.0.1:8080", DeviceID: "dev_1", Subject: "81234567895",
		CreatedAt: "2026-11-25T10:00:00Z", Platform: "android", key: key,
	}
	if err := checkStateWritable(path, false); err != nil {
		t.Fatal(err)
	}
	if err := saveState(path, st); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o600 {
		t.Fatalf("state file mode %04o, want 0600", perm)
	}
	di, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if perm := di.Mode().Perm(); perm != 0o700 {
		t.Fatalf("state folder mode %04o, want 0700", perm)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Fatalf("temporary files left: %v", entries)
	}

	var warned []string
	got, err := loadState(path, func(m string) { warned = append(warned, m) })
	if err != nil {
		t.Fatal(err)
	}
	if len(warned) != 0 {
		t.Fatalf("warnings %v", warned)
	}
	if got.Server != st.Server || got.DeviceID != st.DeviceID || got.Subject != st.Subject ||
		got.CreatedAt != st.CreatedAt || got.Platform != st.Platform || !got.key.Equal(key) {
		t.Fatalf("loaded %+v", got)
	}

	// One device per state file, unless forced.
	if err := checkStateWritable(path, false); err == nil || !strings.Contains(err.Error(), "already holds a device") {
		t.Fatalf("checkStateWritable on an existing file: %v", err)
	}
	if err := checkStateWritable(path, true); err != nil {
		t.Fatal(err)
	}

	// Overwriting keeps 0600, even over a file someone loosened.
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := loadState(path, func(m string) { warned = append(warned, m) }); err != nil || len(warned) != 1 {
		t.Fatalf("no warning for a 0644 state file: %v %v", warned, err)
	}
	if err := saveState(path, st); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Fatalf("rewritten state file mode %04o, want 0600", fi.Mode().Perm())
	}
}

func TestLoadStateErrors(t *testing.T) {
	dir := t.TempDir()
	pemKey, err := encodePrivateKey(mustKey(t))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct{ name, content, wantErr string }{
		{"not JSON", "{", "malformed JSON"},
		{"no device", `{"server":"http://x","private_key":""}`, "no device_id"},
		{"bad server", `{"server":"ftp://x","device_id":"d"}`, "server"},
		{"no key", `{"server":"http://x","device_id":"d","private_key":""}`, "PKCS#8 PEM"},
		{"bad key", `{"server":"http://x","device_id":"d","private_key":"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"}`, "malformed PKCS#8"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "_"))
			if err := os.WriteFile(p, []byte(tc.content), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := loadState(p, nil)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error %v, want %q", err, tc.wantErr)
			}
			if err != nil && strings.Contains(err.Error(), pemKey) {
				t.Fatal("error shows the key")
			}
		})
	}
	if _, err := loadState(filepath.Join(dir, "missing"), nil); err == nil || !strings.Contains(err.Error(), "run enrol first") {
		t.Fatalf("missing state: %v", err)
	}
}

func TestDefaultStatePath(t *testing.T) {
	env := map[string]string{"ECPS_DEVICE_STATE": "/tmp/x.json", "HOME": "/home/u"}
	getenv := func(k string) string { return env[k] }
	if p, _ := defaultStatePath(getenv); p != "/tmp/x.json" {
		t.Fatalf("got %q", p)
	}
	delete(env, "ECPS_DEVICE_STATE")
	if p, _ := defaultStatePath(getenv); p != "/home/u/.config/ecps-device/state.json" {
		t.Fatalf("got %q", p)
	}
}
