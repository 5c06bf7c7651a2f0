package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// fakeServer is a minimal stand-in for the service: it checks the shape of
// every request (paths, JSON fields, JWS headers and proofs) as the contract
// states, and reports any deviation as a test error.
type fakeServer struct {
	t *testing.T

	mu          sync.Mutex
	activations map[string]fakeActivation // by activation_id
	devices     map[string]*fakeDevice    // by device_id
	order       []string
	jtis        map[string]bool
	enrolments  int
	next        int
}

type fakeActivation struct {
	subject, secret, code string
	used                  bool
}

type fakeDevice struct {
	info deviceInfo
	pub  *ecdsa.PublicKey
}

const testSubject = "81234567895"

func newFakeServer(t *testing.T) (*fakeServer, *httptest.Server) {
	f := &fakeServer{
		t:           t,
		activations: map[string]fakeActivation{},
		devices:     map[string]*fakeDevice{},
		jtis:        map[string]bool{},
	}
	// Two devices the enrolled one will see: one of the same practitioner,
	// one of another practitioner (invisible: 404).
	f.addDevice("dev_other", testSubject)
	f.addDevice("dev_stranger", "81111111117")
	mux := http.NewServeMux()
	mux.HandleFunc("POST /api/v1/enrollments", f.enrol)
	mux.HandleFunc("GET /api/v1/device/devices", f.auth(f.list))
	mux.HandleFunc("DELETE /api/v1/device/devices/{id}", f.auth(f.remove))
	mux.HandleFunc("PUT /api/v1/device/push-token", f.auth(f.pushToken))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		t.Errorf("unexpected request %s %s", r.Method, r.URL.Path)
		writeErr(w, http.StatusNotFound, "not_found", "no such route")
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return f, srv
}

func (f *fakeServer) addDevice(id, subject string) {
	f.devices[id] = &fakeDevice{info: deviceInfo{
		DeviceID: id, Subject: subject, Status: "active", Platform: "android",
		Model: "Pixel", AppVersion: "1.0", CreatedAt: "2026-11-01T10:00:00Z",
	}}
	f.order = append(f.order, id)
}

func (f *fakeServer) addActivation(id, secret, code string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.activations[id] = fakeActivation{subject: testSubject, secret: secret, code: code}
}

func writeErr(w http.ResponseWriter, status int, code, desc string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]string{"error": code, "error_description": desc})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

// decodeStrict decodes exactly one JSON value with no unknown fields.
func decodeStrict(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return fmt.Errorf("trailing data")
	}
	return nil
}

// parseJWS checks the exact protected header and the signature, and decodes the claims.
func parseJWS(tok string, wantHeader map[string]any, pub func(kid string) *ecdsa.PublicKey, claims any) error {
	obj, err := jose.ParseSignedCompact(tok, []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		return fmt.Errorf("parse: %v", err)
	}
	raw, err := base64.RawURLEncoding.DecodeString(strings.Split(tok, ".")[0])
	if err != nil {
		return err
	}
	var h map[string]any
	if err := json.Unmarshal(raw, &h); err != nil {
		return err
	}
	if !reflect.DeepEqual(h, wantHeader) {
		return fmt.Errorf("header %v, want %v", h, wantHeader)
	}
	key := pub(obj.Signatures[0].Header.KeyID)
	if key == nil {
		return fmt.Errorf("unknown kid")
	}
	payload, err := obj.Verify(key)
	if err != nil {
		return fmt.Errorf("verify: %v", err)
	}
	return decodeStrict(payload, claims)
}

func (f *fakeServer) enrol(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	if ct := r.Header.Get("Content-Type"); ct != "application/json" {
		f.t.Errorf("enrol: Content-Type %q", ct)
	}
	if r.Header.Get("Authorization") != "" {
		f.t.Errorf("enrol: unexpected Authorization header")
	}
	var req struct {
		ActivationID string          `json:"activation_id"`
		Secret       *string         `json:"secret"`
		Code         *string         `json:"code"`
		PublicKey    json.RawMessage `json:"public_key"`
		Proof        string          `json:"proof"`
		Platform     string          `json:"platform"`
		Model        string          `json:"model"`
		AppVersion   string          `json:"app_version"`
		Push         *pushTokenBody  `json:"push"`
	}
	if err := decodeStrict(body, &req); err != nil {
		f.t.Errorf("enrol: body %s: %v", body, err)
		writeErr(w, 400, "invalid_request", "malformed body")
		return
	}
	if (req.Secret == nil) == (req.Code == nil) || req.Model == "" || req.AppVersion == "" ||
		(req.Platform != "android" && req.Platform != "ios") ||
		(req.Push != nil && (req.Push.Provider != "fcm" || req.Push.Token == "")) {
		f.t.Errorf("enrol: bad fields %s", body)
		writeErr(w, 400, "invalid_request", "bad fields")
		return
	}
	var jwkFields map[string]string
	if err := json.Unmarshal(req.PublicKey, &jwkFields); err != nil || len(jwkFields) != 4 {
		f.t.Errorf("enrol: public_key %s", req.PublicKey)
	}
	var jwk jose.JSONWebKey
	if err := json.Unmarshal(req.PublicKey, &jwk); err != nil || !jwk.IsPublic() {
		f.t.Errorf("enrol: public_key %s: %v", req.PublicKey, err)
		writeErr(w, 400, "invalid_request", "bad public key")
		return
	}
	pub, ok := jwk.Key.(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P256() {
		f.t.Errorf("enrol: key %T not P-256", jwk.Key)
		writeErr(w, 400, "invalid_request", "bad public key")
		return
	}

	f.mu.Lock()
	defer f.mu.Unlock()
	f.enrolments++
	act, ok := f.activations[req.ActivationID]
	if !ok {
		writeErr(w, 400, "invalid_grant", "unknown activation")
		return
	}
	if act.used {
		writeErr(w, 410, "gone", "activation ended")
		return
	}
	norm := func(s string) string { return strings.ToUpper(strings.NewReplacer("-", "", " ", "").Replace(s)) }
	if (req.Secret != nil && *req.Secret != act.secret) || (req.Code != nil && norm(*req.Code) != norm(act.code)) {
		writeErr(w, 400, "invalid_grant", "wrong secret or code")
		return
	}
	var claims enrolClaims
	err := parseJWS(req.Proof, map[string]any{"alg": "ES256", "typ": "ecps-enrol+jwt"},
		func(string) *ecdsa.PublicKey { return pub }, &claims)
	if err != nil || claims.ActivationID != req.ActivationID || absDiff(time.Now().Unix(), claims.Iat) > 60 {
		f.t.Errorf("enrol: proof %+v: %v", claims, err)
		writeErr(w, 400, "invalid_request", "bad proof")
		return
	}
	act.used = true
	f.activations[req.ActivationID] = act
	f.next++
	id := fmt.Sprintf("dev_%d", f.next)
	f.devices[id] = &fakeDevice{pub: pub, info: deviceInfo{
		DeviceID: id, Subject: act.subject, Status: "active", Platform: req.Platform, Model: req.Model,
		AppVersion: req.AppVersion, CreatedAt: time.Now().UTC().Format(time.RFC3339), Push: req.Push != nil,
	}}
	f.order = append(f.order, id)
	writeJSON(w, http.StatusCreated, enrolResponse{DeviceID: id, Subject: act.subject, CreatedAt: f.devices[id].info.CreatedAt})
}

func absDiff(a, b int64) int64 {
	if a > b {
		return a - b
	}
	return b - a
}

// auth checks the ECPS-Proof of a device request; next runs with f.mu held.
func (f *fakeServer) auth(next func(w http.ResponseWriter, r *http.Request, dev *fakeDevice, body []byte)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		f.mu.Lock()
		defer f.mu.Unlock()
		tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "ECPS-Proof ")
		if !ok {
			f.t.Errorf("%s %s: Authorization %q", r.Method, r.URL.Path, r.Header.Get("Authorization"))
			writeErr(w, 401, "invalid_client", "no proof")
			return
		}
		obj, err := jose.ParseSignedCompact(tok, []jose.SignatureAlgorithm{jose.ES256})
		if err != nil {
			f.t.Errorf("proof: %v", err)
			writeErr(w, 401, "invalid_client", "bad proof")
			return
		}
		kid := obj.Signatures[0].Header.KeyID
		dev := f.devices[kid]
		if dev == nil || dev.pub == nil || dev.info.Status != "active" {
			writeErr(w, 401, "invalid_client", "unknown or inactive device") // expected after removal
			return
		}
		var c proofClaims
		err = parseJWS(tok, map[string]any{"alg": "ES256", "typ": "ecps-proof+jwt", "kid": kid},
			func(string) *ecdsa.PublicKey { return dev.pub }, &c)
		if err != nil {
			f.t.Errorf("proof: %v", err)
			writeErr(w, 401, "invalid_client", "bad proof")
			return
		}
		jti, jerr := base64.RawURLEncoding.DecodeString(c.Jti)
		if c.Htm != r.Method || c.Htu != r.URL.Path || c.Bh != bodyHash(body) ||
			absDiff(time.Now().Unix(), c.Iat) > 60 || jerr != nil || len(jti) < 12 || f.jtis[c.Jti] {
			f.t.Errorf("proof claims %+v for %s %s body %q", c, r.Method, r.URL.Path, body)
			writeErr(w, 401, "invalid_client", "bad proof")
			return
		}
		f.jtis[c.Jti] = true
		next(w, r, dev, body)
	}
}

func (f *fakeServer) list(w http.ResponseWriter, _ *http.Request, dev *fakeDevice, body []byte) {
	if len(body) != 0 {
		f.t.Errorf("GET with a body %q", body)
	}
	out := struct {
		Devices []deviceInfo `json:"devices"`
	}{Devices: []deviceInfo{}}
	for _, id := range f.order {
		if d := f.devices[id]; d.info.Subject == dev.info.Subject {
			out.Devices = append(out.Devices, d.info)
		}
	}
	writeJSON(w, http.StatusOK, out)
}

func (f *fakeServer) remove(w http.ResponseWriter, r *http.Request, dev *fakeDevice, body []byte) {
	d := f.devices[r.PathValue("id")]
	if d == nil || d.info.Subject != dev.info.Subject {
		writeErr(w, http.StatusNotFound, "not_found", "no such device")
		return
	}
	d.info.Status = "revoked"
	w.WriteHeader(http.StatusNoContent)
}

func (f *fakeServer) pushToken(w http.ResponseWriter, r *http.Request, dev *fakeDevice, body []byte) {
	var p pushTokenBody
	if err := decodeStrict(body, &p); err != nil || p.Provider != "fcm" || p.Token == "" {
		f.t.Errorf("push-token body %q: %v", body, err)
		writeErr(w, 400, "invalid_request", "bad body")
		return
	}
	dev.info.Push = true
	w.WriteHeader(http.StatusNoContent)
}

// runCLI runs the command in-process and returns its exit code and outputs.
func runCLI(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var stdout, stderr bytes.Buffer
	code := run(ctx, args, strings.NewReader(""), &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

func TestRunAgainstFakeServer(t *testing.T) {
	f, srv := newFakeServer(t)
	f.addActivation("act_1", testSecret, "ABCD-EFGH-JK")
	statePath := filepath.Join(t.TempDir(), "cfg", "state.json")
	uri := "ecps://enrol?a=act_1&s=" + testSecret + "&h=" + url.QueryEscape(srv.URL)

	// Flags after the URI are parsed too.
	code, out, errOut := runCLI(t, "-state", statePath, "enrol", uri, "-platform", "ios", "-model", "iPhone 15")
	if code != 0 {
		t.Fatalf("enrol: exit %d, stderr %q", code, errOut)
	}
	if !strings.Contains(out, "enrolled device dev_1 for subject "+testSubject) {
		t.Fatalf("enrol stdout %q", out)
	}
	if strings.Contains(out+errOut, testSecret) {
		t.Fatal("the secret was printed")
	}
	fi, err := os.Stat(statePath)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("state file mode %04o", fi.Mode().Perm())
	}
	if di, _ := os.Stat(filepath.Dir(statePath)); di.Mode().Perm() != 0o700 {
		t.Fatalf("state folder mode %04o", di.Mode().Perm())
	}
	st, err := loadState(statePath, nil)
	if err != nil {
		t.Fatal(err)
	}
	if st.Server != srv.URL || st.DeviceID != "dev_1" || st.Subject != testSubject || st.Platform != "ios" {
		t.Fatalf("state %+v", st)
	}
	if !st.key.PublicKey.Equal(f.devices["dev_1"].pub) {
		t.Fatal("saved key is not the enrolled one")
	}

	// devices --json: raw server answer.
	code, out, errOut = runCLI(t, "-state", statePath, "devices", "--json")
	if code != 0 {
		t.Fatalf("devices: exit %d, stderr %q", code, errOut)
	}
	var list struct {
		Devices []deviceInfo `json:"devices"`
	}
	if err := json.Unmarshal([]byte(out), &list); err != nil || len(list.Devices) != 2 {
		t.Fatalf("devices --json %q: %v", out, err)
	}
	if d := list.Devices[1]; d.DeviceID != "dev_1" || d.Model != "iPhone 15" || d.Platform != "ios" || d.Push {
		t.Fatalf("own device %+v", d)
	}

	// push-token, then the table shows push yes for this device.
	code, out, errOut = runCLI(t, "-state", statePath, "push-token", "fcm-token:APA91b_x-y")
	if code != 0 || !strings.Contains(out, "push token set") {
		t.Fatalf("push-token: exit %d, %q %q", code, out, errOut)
	}
	code, out, errOut = runCLI(t, "-state", statePath, "devices")
	if code != 0 {
		t.Fatalf("devices: exit %d, stderr %q", code, errOut)
	}
	var own string
	for _, line := range strings.Split(out, "\n") {
		if strings.Contains(line, "dev_1") {
			own = line
		}
	}
	if f := strings.Fields(own); len(f) < 9 || f[0] != "*" || f[1] != "dev_1" || !strings.Contains(own, "  yes  ") {
		t.Fatalf("devices table:\n%s", out)
	}

	// Another practitioner's device: the server's error, exit 1.
	code, _, errOut = runCLI(t, "-state", statePath, "remove", "dev_stranger")
	if code != 1 || errOut != "error: not_found: no such device (HTTP 404)\n" {
		t.Fatalf("remove stranger: exit %d, stderr %q", code, errOut)
	}
	code, out, errOut = runCLI(t, "-state", statePath, "remove", "dev_other")
	if code != 0 || out != "removed device dev_other\n" {
		t.Fatalf("remove other: exit %d, %q %q", code, out, errOut)
	}

	// Whoami shows the device, never the key.
	code, out, _ = runCLI(t, "-state", statePath, "whoami", "-json")
	if code != 0 || !strings.Contains(out, `"device_id": "dev_1"`) || strings.Contains(out, "PRIVATE") {
		t.Fatalf("whoami: exit %d, %q", code, out)
	}

	// One device per state file: refused before anything is sent.
	before := f.enrolments
	code, _, errOut = runCLI(t, "-state", statePath, "enrol", uri)
	if code != 1 || !strings.Contains(errOut, "already holds a device") || f.enrolments != before {
		t.Fatalf("second enrol: exit %d, stderr %q", code, errOut)
	}

	// Removing itself: later requests are refused by the server.
	if code, _, errOut = runCLI(t, "-state", statePath, "remove", "dev_1"); code != 0 {
		t.Fatalf("remove self: exit %d, %q", code, errOut)
	}
	code, _, errOut = runCLI(t, "-state", statePath, "devices")
	if code != 1 || errOut != "error: invalid_client: unknown or inactive device (HTTP 401)\n" {
		t.Fatalf("devices after removal: exit %d, stderr %q", code, errOut)
	}
}

func TestRunEnrolByCode(t *testing.T) {
	f, srv := newFakeServer(t)
	f.addActivation("act_2", testSecret, "ABCD-EFGH-JK")
	statePath := filepath.Join(t.TempDir(), "state.json")
	t.Setenv("ECPS_DEVICE_STATE", statePath) // the default path

	code, _, errOut := runCLI(t, "enrol", "--code", "abcd efgh-jk", "--activation", "act_2", "--server", srv.URL+"/",
		"--push-token", "tok-1", "--app-version", "9.9")
	if code != 0 {
		t.Fatalf("enrol by code: exit %d, stderr %q", code, errOut)
	}
	st, err := loadState(statePath, nil)
	if err != nil {
		t.Fatal(err)
	}
	d := f.devices[st.DeviceID]
	if d == nil || !d.info.Push || d.info.Platform != "android" || d.info.Model != "ecps-device" || d.info.AppVersion != "9.9" {
		t.Fatalf("enrolled %+v", d)
	}
	if st.Server != srv.URL {
		t.Fatalf("server %q saved with its trailing slash", st.Server)
	}

	// The activation is used: 410 from the server, nothing saved.
	other := filepath.Join(t.TempDir(), "other.json")
	code, _, errOut = runCLI(t, "-state", other, "enrol", "--code", "ABCD-EFGH-JK", "--activation", "act_2", "--server", srv.URL)
	if code != 1 || errOut != "error: gone: activation ended (HTTP 410)\n" {
		t.Fatalf("used activation: exit %d, stderr %q", code, errOut)
	}
	if _, err := os.Stat(other); !os.IsNotExist(err) {
		t.Fatalf("state written after a refusal: %v", err)
	}
}

func TestRunEnrolWrongSecret(t *testing.T) {
	f, srv := newFakeServer(t)
	f.addActivation("act_3", "QUJDREVGR0hJSktMTU5PUA", "")
	statePath := filepath.Join(t.TempDir(), "state.json")
	uri := "ecps://enrol?a=act_3&s=" + testSecret + "&h=" + url.QueryEscape(srv.URL)
	code, _, errOut := runCLI(t, "-state", statePath, "enrol", uri)
	if code != 1 || errOut != "error: invalid_grant: wrong secret or code (HTTP 400)\n" {
		t.Fatalf("wrong secret: exit %d, stderr %q", code, errOut)
	}
	if _, err := os.Stat(statePath); !os.IsNotExist(err) {
		t.Fatalf("state written after a refusal: %v", err)
	}
}

func TestRunEnrolURIFromStdin(t *testing.T) {
	f, srv := newFakeServer(t)
	f.addActivation("act_4", testSecret, "")
	statePath := filepath.Join(t.TempDir(), "state.json")
	uri := "ecps://enrol?a=act_4&s=" + testSecret + "&h=" + url.QueryEscape(srv.URL)
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), []string{"-state", statePath, "enrol", "-"}, strings.NewReader(uri+"\n"), &stdout, &stderr)
	if code != 0 {
		t.Fatalf("enrol -: exit %d, stderr %q", code, stderr.String())
	}
	if _, err := loadState(statePath, nil); err != nil {
		t.Fatal(err)
	}
}

func TestRunNonJSONError(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "<html>bad gateway</html>", http.StatusBadGateway)
	}))
	defer srv.Close()
	statePath := filepath.Join(t.TempDir(), "state.json")
	uri := "ecps://enrol?a=x&s=" + testSecret + "&h=" + url.QueryEscape(srv.URL)
	code, _, errOut := runCLI(t, "-state", statePath, "enrol", uri)
	if code != 1 || errOut != "error: unexpected response (HTTP 502)\n" {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
}

func TestRunUsage(t *testing.T) {
	state := filepath.Join(t.TempDir(), "state.json")
	uri := "ecps://enrol?a=x&s=" + testSecret + "&h=" + testServer
	tests := []struct {
		name    string
		args    []string
		code    int
		wantErr string
	}{
		{"no command", []string{"-state", state}, 2, "no command"},
		{"unknown command", []string{"-state", state, "frobnicate"}, 2, "unknown command"},
		{"unknown global flag", []string{"-bogus", "devices"}, 2, "not defined"},
		{"bad timeout", []string{"-timeout", "0s", "devices"}, 2, "-timeout"},
		{"help", []string{"-h"}, 0, ""},
		{"help command", []string{"help"}, 0, ""},
		{"enrol nothing", []string{"-state", state, "enrol"}, 2, "give an enrol URI"},
		{"enrol bad URI", []string{"-state", state, "enrol", "ecps://login?t=x"}, 2, "ecps://enrol?"},
		{"enrol two URIs", []string{"-state", state, "enrol", uri, uri}, 2, "one enrol URI"},
		{"enrol URI and code", []string{"-state", state, "enrol", uri, "-code", "ABCD"}, 2, "not both"},
		{"enrol code without server", []string{"-state", state, "enrol", "-code", "ABCD", "-activation", "x"}, 2, "-server"},
		{"enrol code without activation", []string{"-state", state, "enrol", "-code", "ABCD", "-server", "https://x.fr"}, 2, "-activation"},
		{"enrol bad platform", []string{"-state", state, "enrol", uri, "-platform", "symbian"}, 2, "-platform"},
		{"enrol bad push token", []string{"-state", state, "enrol", uri, "-push-token", "a b"}, 2, "-push-token"},
		{"enrol unknown flag", []string{"-state", state, "enrol", uri, "-nope"}, 2, "not defined"},
		{"enrol help", []string{"-state", state, "enrol", "-h"}, 0, "usage:"},
		{"devices extra arg", []string{"-state", state, "devices", "x"}, 2, "no argument"},
		{"devices without state", []string{"-state", state, "devices"}, 1, "run enrol first"},
		{"remove no id", []string{"-state", state, "remove"}, 2, "one device id"},
		{"remove bad id", []string{"-state", state, "remove", "../x"}, 2, "device id"},
		{"push-token no token", []string{"-state", state, "push-token"}, 2, "one token"},
		{"push-token after --", []string{"-state", state, "push-token", "--", "-tok"}, 1, "run enrol first"},
		{"whoami without state", []string{"-state", state, "whoami"}, 1, "run enrol first"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, _, errOut := runCLI(t, tc.args...)
			if code != tc.code || !strings.Contains(errOut, tc.wantErr) {
				t.Fatalf("exit %d, stderr %q; want %d and %q", code, errOut, tc.code, tc.wantErr)
			}
		})
	}
	if _, err := os.Stat(state); !os.IsNotExist(err) {
		t.Fatalf("a state file was created: %v", err)
	}
}
