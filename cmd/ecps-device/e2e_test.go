package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/ecps-sante/ecps/api"
	"github.com/ecps-sante/ecps/audit"
	"github.com/ecps-sante/ecps/enrollment"
	"github.com/ecps-sante/ecps/redistest"
)

// End-to-end: the CLI against the real service (api.New, enrollment, audit)
// on a real Redis, driven as a desk operator and a practitioner would.

const (
	e2eOperatorKey = "e2e-operator-key-0123456789abcdef"
	e2eSubject     = "810001234565" // valid idNat (RPPS, Luhn)
)

// e2eService is a running service and its desk's HTTP access.
type e2eService struct {
	t   *testing.T
	url string
}

func startE2EService(t *testing.T) *e2eService {
	t.Helper()
	gin.SetMode(gin.TestMode)
	rdb, prefix := redistest.Client(t)

	// PublicURL goes into every enrol_uri (h=): it must be the address the
	// server really listens on, known only once the listener exists.
	hs := httptest.NewUnstartedServer(nil)
	publicURL := "http://" + hs.Listener.Addr().String()

	log := audit.New(rdb, prefix, 400*24*time.Hour)
	reg := prometheus.NewRegistry()
	srv, err := api.New(api.Options{
		Logger:     slog.New(slog.DiscardHandler),
		Operators:  []api.Operator{{Name: "desk-e2e", KeySHA256: sha256.Sum256([]byte(e2eOperatorKey))}},
		Registry:   reg,
		Metrics:    api.NewMetrics(reg),
		Enrollment: enrollment.New(rdb, log, enrollment.Options{KeyPrefix: prefix, PublicURL: publicURL, ProofMaxSkew: 60 * time.Second}),
		Audit:      log,
		Ready:      func(ctx context.Context) error { return rdb.Ping(ctx).Err() },
	})
	if err != nil {
		t.Fatal(err)
	}
	hs.Config.Handler = srv.Handler()
	hs.Start()
	t.Cleanup(hs.Close)
	if hs.URL != publicURL {
		t.Fatalf("server URL %s, PublicURL %s", hs.URL, publicURL)
	}
	return &e2eService{t: t, url: hs.URL}
}

// desk sends an operator request and decodes a JSON answer into out (if not nil).
func (s *e2eService) desk(method, path string, body any, wantStatus int, out any) {
	s.t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			s.t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, s.url+path, rd)
	if err != nil {
		s.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+e2eOperatorKey)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	defer res.Body.Close()
	data, err := io.ReadAll(res.Body)
	if err != nil {
		s.t.Fatal(err)
	}
	if res.StatusCode != wantStatus {
		s.t.Fatalf("desk %s %s: HTTP %d, want %d; body %s", method, path, res.StatusCode, wantStatus, data)
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			s.t.Fatalf("desk %s %s: body %q: %v", method, path, data, err)
		}
	}
}

type e2eActivation struct {
	ActivationID string `json:"activation_id"`
	Subject      string `json:"subject"`
	Code         string `json:"code"`
	EnrolURI     string `json:"enrol_uri"`
	Status       string `json:"status"`
	DeviceID     string `json:"device_id"`
}

func (s *e2eService) createActivation() e2eActivation {
	s.t.Helper()
	var a e2eActivation
	s.desk(http.MethodPost, "/api/v1/desk/activations", map[string]string{"subject": e2eSubject}, http.StatusCreated, &a)
	if a.ActivationID == "" || a.EnrolURI == "" || a.Code == "" {
		s.t.Fatalf("activation %+v", a)
	}
	return a
}

func (s *e2eService) activation(id string) e2eActivation {
	s.t.Helper()
	var a e2eActivation
	s.desk(http.MethodGet, "/api/v1/desk/activations/"+id, nil, http.StatusOK, &a)
	return a
}

// deskDevice returns the device as the desk lists it (fails if absent).
func (s *e2eService) deskDevice(id string) deviceInfo {
	s.t.Helper()
	var list struct {
		Devices []deviceInfo `json:"devices"`
	}
	s.desk(http.MethodGet, "/api/v1/desk/practitioners/"+e2eSubject+"/devices", nil, http.StatusOK, &list)
	for _, d := range list.Devices {
		if d.DeviceID == id {
			return d
		}
	}
	s.t.Fatalf("device %s not in the desk listing %+v", id, list.Devices)
	return deviceInfo{}
}

func mustLoadState(t *testing.T, path string) *deviceState {
	t.Helper()
	st, err := loadState(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func TestE2EAgainstRealServer(t *testing.T) {
	svc := startE2EService(t)
	dir := t.TempDir()
	firstState := filepath.Join(dir, "first", "state.json")
	secondState := filepath.Join(dir, "second", "state.json")
	var first, second *deviceState

	step := func(name string, f func(t *testing.T)) {
		t.Helper()
		if !t.Run(name, f) {
			t.FailNow() // later steps build on this one
		}
	}

	step("enrol by URI marks the activation used and the desk lists the device", func(t *testing.T) {
		a := svc.createActivation()
		if link, err := parseEnrolURI(a.EnrolURI); err != nil || link.Server != svc.url || link.ActivationID != a.ActivationID {
			t.Fatalf("enrol_uri %q: %+v, %v; want h=%s", a.EnrolURI, link, err, svc.url)
		}
		code, out, errOut := runCLI(t, "-state", firstState, "enrol", a.EnrolURI)
		if code != exitOK {
			t.Fatalf("enrol: exit %d, stderr %q", code, errOut)
		}
		fi, err := os.Stat(firstState)
		if err != nil {
			t.Fatal(err)
		}
		if perm := fi.Mode().Perm(); perm != 0o600 {
			t.Fatalf("state file mode %04o, want 0600", perm)
		}
		first = mustLoadState(t, firstState)
		if first.DeviceID == "" || first.Subject != e2eSubject || first.Server != svc.url {
			t.Fatalf("state %+v", first)
		}
		if !strings.Contains(out, first.DeviceID) {
			t.Fatalf("enrol output %q does not name device %s", out, first.DeviceID)
		}
		if got := svc.activation(a.ActivationID); got.Status != "used" || got.DeviceID != first.DeviceID {
			t.Fatalf("desk sees activation %+v, want used by %s", got, first.DeviceID)
		}
		if d := svc.deskDevice(first.DeviceID); d.Status != "active" || d.Push {
			t.Fatalf("desk sees device %+v", d)
		}
	})

	step("devices lists the device and push-token registers a token", func(t *testing.T) {
		code, out, errOut := runCLI(t, "-state", firstState, "devices")
		if code != exitOK || !strings.Contains(out, first.DeviceID) {
			t.Fatalf("devices: exit %d, stdout %q, stderr %q", code, out, errOut)
		}
		code, _, errOut = runCLI(t, "-state", firstState, "push-token", "tok-123")
		if code != exitOK {
			t.Fatalf("push-token: exit %d, stderr %q", code, errOut)
		}
		if d := svc.deskDevice(first.DeviceID); !d.Push {
			t.Fatalf("desk sees device %+v, want push true", d)
		}
	})

	step("enrol by lower-case code", func(t *testing.T) {
		a := svc.createActivation()
		code, _, errOut := runCLI(t, "-state", secondState, "enrol",
			"-code", strings.ToLower(a.Code), "-activation", a.ActivationID, "-server", svc.url)
		if code != exitOK {
			t.Fatalf("enrol by code: exit %d, stderr %q", code, errOut)
		}
		second = mustLoadState(t, secondState)
		if second.DeviceID == "" || second.DeviceID == first.DeviceID {
			t.Fatalf("second state %+v", second)
		}
		if got := svc.activation(a.ActivationID); got.Status != "used" || got.DeviceID != second.DeviceID {
			t.Fatalf("desk sees activation %+v, want used by %s", got, second.DeviceID)
		}
		if d := svc.deskDevice(second.DeviceID); d.Status != "active" {
			t.Fatalf("desk sees device %+v", d)
		}
	})

	step("remove from another device revokes it and its key stops working", func(t *testing.T) {
		code, out, errOut := runCLI(t, "-state", firstState, "remove", second.DeviceID)
		if code != exitOK || !strings.Contains(out, second.DeviceID) {
			t.Fatalf("remove: exit %d, stdout %q, stderr %q", code, out, errOut)
		}
		if d := svc.deskDevice(second.DeviceID); d.Status != "revoked" {
			t.Fatalf("desk sees removed device %+v, want revoked", d)
		}
		code, _, errOut = runCLI(t, "-state", secondState, "devices")
		if code != exitError || !strings.Contains(errOut, "invalid_client") {
			t.Fatalf("devices with the revoked key: exit %d, stderr %q; want 1 and invalid_client", code, errOut)
		}
		// The remover is unaffected.
		if code, _, errOut := runCLI(t, "-state", firstState, "devices"); code != exitOK {
			t.Fatalf("devices with the first key: exit %d, stderr %q", code, errOut)
		}
	})

	t.Run("enrol errors", func(t *testing.T) {
		t.Run("used URI is gone", func(t *testing.T) {
			a := svc.createActivation()
			if code, _, errOut := runCLI(t, "-state", filepath.Join(dir, "used-1.json"), "enrol", a.EnrolURI); code != exitOK {
				t.Fatalf("first enrol: exit %d, stderr %q", code, errOut)
			}
			path := filepath.Join(dir, "used-2.json")
			code, _, errOut := runCLI(t, "-state", path, "enrol", a.EnrolURI)
			if code != exitError || !strings.Contains(errOut, "gone") {
				t.Fatalf("second enrol: exit %d, stderr %q; want 1 and gone", code, errOut)
			}
			wantNoFile(t, path)
		})
		t.Run("tampered secret is invalid_grant", func(t *testing.T) {
			a := svc.createActivation()
			u, err := url.Parse(a.EnrolURI)
			if err != nil {
				t.Fatal(err)
			}
			q := u.Query()
			s := q.Get("s")
			// Change the first character: still valid base64url of the same length.
			repl := "A"
			if s[0] == 'A' {
				repl = "B"
			}
			q.Set("s", repl+s[1:])
			u.RawQuery = q.Encode()
			path := filepath.Join(dir, "tampered.json")
			code, _, errOut := runCLI(t, "-state", path, "enrol", u.String())
			if code != exitError || !strings.Contains(errOut, "invalid_grant") {
				t.Fatalf("enrol: exit %d, stderr %q; want 1 and invalid_grant", code, errOut)
			}
			wantNoFile(t, path)
			// One wrong attempt leaves the activation usable.
			if got := svc.activation(a.ActivationID); got.Status != "pending" {
				t.Fatalf("activation after one wrong secret: %+v", got)
			}
		})
		t.Run("malformed URI is a usage error", func(t *testing.T) {
			path := filepath.Join(dir, "malformed.json")
			code, _, errOut := runCLI(t, "-state", path, "enrol", "https://ecps.example/enrol?a=x&s=y")
			if code != exitUsage || !strings.Contains(errOut, `enrol URI: scheme must be "ecps"`) {
				t.Fatalf("enrol: exit %d, stderr %q; want 2 and a scheme message", code, errOut)
			}
			wantNoFile(t, path)
		})
	})

	step("desk suspend blocks the device and resume restores it", func(t *testing.T) {
		var d deviceInfo
		svc.desk(http.MethodPost, "/api/v1/desk/devices/"+first.DeviceID+"/suspend", nil, http.StatusOK, &d)
		if d.Status != "suspended" {
			t.Fatalf("suspend answered %+v", d)
		}
		code, _, errOut := runCLI(t, "-state", firstState, "devices")
		if code != exitError || !strings.Contains(errOut, "invalid_client") {
			t.Fatalf("devices while suspended: exit %d, stderr %q; want 1 and invalid_client", code, errOut)
		}
		svc.desk(http.MethodPost, "/api/v1/desk/devices/"+first.DeviceID+"/resume", nil, http.StatusOK, &d)
		if d.Status != "active" {
			t.Fatalf("resume answered %+v", d)
		}
		code, out, errOut := runCLI(t, "-state", firstState, "devices")
		if code != exitOK || !strings.Contains(out, first.DeviceID) {
			t.Fatalf("devices after resume: exit %d, stdout %q, stderr %q", code, out, errOut)
		}
	})
}

func wantNoFile(t *testing.T, path string) {
	t.Helper()
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatalf("state file %s written after a refusal: %v", path, err)
	}
}
