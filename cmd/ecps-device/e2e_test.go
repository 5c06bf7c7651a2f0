package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"image/png"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	qr "github.com/piglig/go-qr"

	"github.com/ecps-sante/ecps/api"
	"github.com/ecps-sante/ecps/ecpstest"
)

// End-to-end: the CLI against the real service (api.New, enrollment,
// challenges, audit) on a real Redis, driven as a desk operator, an IdP and
// a practitioner would.

const (
	e2eOperatorKey   = "e2e-operator-key-0123456789abcdef"
	e2eSubject       = "810001234565" // valid idNat (RPPS, Luhn)
	e2eClientID      = "e2e-idp"
	e2eClientName    = "Pro Santé Connect (e2e)"
	e2eClientSecret  = "e2e-client-secret-0123456789abcdef"
	e2eRedirectURI   = "https://idp.e2e.test/cb"
	e2eLongPollWaitS = 10
)

// e2eService is a running service and its desk's HTTP access.
type e2eService struct {
	t   *testing.T
	url string
}

func startE2EService(t *testing.T) *e2eService {
	t.Helper()
	url := ecpstest.Start(t, ecpstest.Options{
		Clients: func(string) []api.Client {
			return []api.Client{{ID: e2eClientID, Name: e2eClientName, SecretSHA256: sha256.Sum256([]byte(e2eClientSecret)),
				Scopes: []string{"authentication"}, RedirectURIs: []string{e2eRedirectURI}}}
		},
		Operators: []api.Operator{{Name: "desk-e2e", KeySHA256: sha256.Sum256([]byte(e2eOperatorKey))}},
	})
	return &e2eService{t: t, url: url}
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

// ---- the IdP's side of a login ----

// authCreated is the 201 answer to POST /api/v1/authentications.
type authCreated struct {
	AuthReqID          string `json:"auth_req_id"`
	ExpiresIn          int    `json:"expires_in"`
	Interval           int    `json:"interval"`
	VerificationNumber string `json:"verification_number"`
	LoginURL           string `json:"login_url"`
}

// pollAnswer is one answer to the IdP's GET /api/v1/authentications/{id}.
type pollAnswer struct {
	Status int
	Body   map[string]any
	Raw    string
	Err    error // transport error
}

// idp sends a request as the IdP client (HTTP Basic); it never fails the
// test, so that it can run in a goroutine.
func (s *e2eService) idp(method, path string, body any) pollAnswer {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return pollAnswer{Err: err}
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, s.url+path, rd)
	if err != nil {
		return pollAnswer{Err: err}
	}
	req.SetBasicAuth(e2eClientID, e2eClientSecret)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return pollAnswer{Err: err}
	}
	defer res.Body.Close()
	data, err := io.ReadAll(res.Body)
	if err != nil {
		return pollAnswer{Err: err}
	}
	a := pollAnswer{Status: res.StatusCode, Raw: string(data)}
	if len(data) > 0 {
		if err := json.Unmarshal(data, &a.Body); err != nil {
			a.Err = fmt.Errorf("body %q: %v", data, err)
		}
	}
	return a
}

// createLogin creates an authentication: a push login with a login_hint, a
// QR login without.
func (s *e2eService) createLogin(req map[string]any) authCreated {
	s.t.Helper()
	a := s.idp(http.MethodPost, "/api/v1/authentications", req)
	if a.Err != nil || a.Status != http.StatusCreated {
		s.t.Fatalf("create authentication %v: HTTP %d %s %v", req, a.Status, a.Raw, a.Err)
	}
	var c authCreated
	if err := json.Unmarshal([]byte(a.Raw), &c); err != nil || c.AuthReqID == "" || c.VerificationNumber == "" {
		s.t.Fatalf("authentication answer %s: %v", a.Raw, err)
	}
	return c
}

// poll is one IdP poll, long when wait > 0.
func (s *e2eService) poll(authReqID string, wait int) pollAnswer {
	path := "/api/v1/authentications/" + url.PathEscape(authReqID)
	if wait > 0 {
		path += fmt.Sprintf("?wait=%d", wait)
	}
	return s.idp(http.MethodGet, path, nil)
}

// longPoll starts the IdP's long-poll in the background; the answer comes on
// the channel.
func (s *e2eService) longPoll(authReqID string) <-chan pollAnswer {
	ch := make(chan pollAnswer, 1)
	go func() { ch <- s.poll(authReqID, e2eLongPollWaitS) }()
	return ch
}

func wantApproved(t *testing.T, a pollAnswer, deviceID string) {
	t.Helper()
	if a.Err != nil || a.Status != http.StatusOK || a.Body["status"] != "approved" || a.Body["sub"] != e2eSubject ||
		a.Body["device_id"] != deviceID {
		t.Fatalf("IdP poll: HTTP %d %s %v; want 200 approved for %s by %s", a.Status, a.Raw, a.Err, e2eSubject, deviceID)
	}
	amr, _ := a.Body["amr"].([]any)
	if fmt.Sprint(amr) != "[hwk mfa pin]" {
		t.Errorf("amr %v, want [hwk mfa pin] (the CLI's default -uv pin)", amr)
	}
}

func wantPollError(t *testing.T, a pollAnswer, code, reason string) {
	t.Helper()
	if a.Err != nil || a.Status != http.StatusBadRequest || a.Body["error"] != code || (reason != "" && a.Body["reason"] != reason) {
		t.Fatalf("IdP poll: HTTP %d %s %v; want 400 %s reason %q", a.Status, a.Raw, a.Err, code, reason)
	}
}

// awaitPoll waits for a background long-poll.
func awaitPoll(t *testing.T, ch <-chan pollAnswer) pollAnswer {
	t.Helper()
	select {
	case a := <-ch:
		return a
	case <-time.After(2 * e2eLongPollWaitS * time.Second):
		t.Fatal("the IdP's long-poll did not return")
		return pollAnswer{}
	}
}

// pendingChallengeIDs lists the practitioner's pending challenges with `challenges -json`.
func pendingChallengeIDs(t *testing.T, state string) []string {
	t.Helper()
	code, out, errOut := runCLI(t, "-state", state, "challenges", "-json")
	if code != exitOK {
		t.Fatalf("challenges -json: exit %d, stderr %q", code, errOut)
	}
	var list struct {
		Challenges []challenge `json:"challenges"`
	}
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		t.Fatalf("challenges -json printed %q: %v", out, err)
	}
	var ids []string
	for _, c := range list.Challenges {
		ids = append(ids, c.ChallengeID)
	}
	return ids
}

// qrLoginURI reads the login page's QR code from its pixels, as a phone's camera would.
func (s *e2eService) qrLoginURI(loginURL string) string {
	s.t.Helper()
	res, err := http.Get(loginURL + "/qr.png")
	if err != nil {
		s.t.Fatal(err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK || res.Header.Get("Content-Type") != "image/png" {
		s.t.Fatalf("GET %s/qr.png: HTTP %d, Content-Type %q", loginURL, res.StatusCode, res.Header.Get("Content-Type"))
	}
	img, err := png.Decode(res.Body)
	if err != nil {
		s.t.Fatalf("qr.png: %v", err)
	}
	text, err := qr.Decode(img)
	if err != nil {
		s.t.Fatalf("decode the QR code of qr.png: %v", err)
	}
	return text
}

func TestE2ELoginThroughCLI(t *testing.T) {
	svc := startE2EService(t)
	state := filepath.Join(t.TempDir(), "phone", "state.json")
	a := svc.createActivation()
	if code, _, errOut := runCLI(t, "-state", state, "enrol", a.EnrolURI); code != exitOK {
		t.Fatalf("enrol: exit %d, stderr %q", code, errOut)
	}
	dev := mustLoadState(t, state)

	step := func(name string, f func(t *testing.T)) {
		t.Helper()
		if !t.Run(name, f) {
			t.FailNow()
		}
	}

	step("push login approved with the IdP's number", func(t *testing.T) {
		const binding = "Connexion au DMP (e2e)"
		login := svc.createLogin(map[string]any{"login_hint": e2eSubject, "binding_message": binding})
		if login.LoginURL != "" {
			t.Errorf("a push login has login_url %q", login.LoginURL)
		}
		ids := pendingChallengeIDs(t, state)
		if len(ids) != 1 {
			t.Fatalf("pending challenges %q, want one", ids)
		}
		id := ids[0]

		code, out, errOut := runCLI(t, "-state", state, "challenges")
		if code != exitOK || !strings.Contains(out, id) || !strings.Contains(out, e2eClientName) || !strings.Contains(out, binding) {
			t.Fatalf("challenges: exit %d, stdout %q, stderr %q; want %s, %q and %q", code, out, errOut, id, e2eClientName, binding)
		}
		code, out, errOut = runCLI(t, "-state", state, "show", id)
		if code != exitOK || !hasLine(out, "client:", e2eClientName) || !hasLine(out, "binding message:", binding) ||
			!strings.Contains(out, fmt.Sprintf("%d-digit number", len(login.VerificationNumber))) {
			t.Fatalf("show: exit %d, stdout %q, stderr %q", code, out, errOut)
		}
		if strings.Contains(out, login.VerificationNumber+"\n") {
			t.Errorf("show seems to print the verification number:\n%s", out)
		}

		// The IdP long-polls before the phone answers; the decision ends it.
		poll := svc.longPoll(login.AuthReqID)
		code, out, errOut = runCLI(t, "-state", state, "approve", id, "--number", login.VerificationNumber)
		if code != exitOK || strings.TrimSpace(out) != "approved challenge "+id {
			t.Fatalf("approve: exit %d, stdout %q, stderr %q", code, out, errOut)
		}
		wantApproved(t, awaitPoll(t, poll), dev.DeviceID)
		// Exactly once: a later read is invalid_grant.
		wantPollError(t, svc.poll(login.AuthReqID, 0), "invalid_grant", "")
		if ids := pendingChallengeIDs(t, state); len(ids) != 0 {
			t.Errorf("challenges after the approval: %q, want none", ids)
		}
		// A second decision on the same challenge is refused.
		code, _, errOut = runCLI(t, "-state", state, "deny", id)
		if code != exitError || !strings.Contains(errOut, "already decided or cancelled (HTTP 409)") {
			t.Errorf("deny after approve: exit %d, stderr %q; want 1 and a 409", code, errOut)
		}
	})

	step("push login denied", func(t *testing.T) {
		login := svc.createLogin(map[string]any{"login_hint": e2eSubject, "binding_message": "Connexion refusée (e2e)"})
		ids := pendingChallengeIDs(t, state)
		if len(ids) != 1 {
			t.Fatalf("pending challenges %q, want one", ids)
		}
		code, out, errOut := runCLI(t, "-state", state, "deny", ids[0])
		if code != exitOK || strings.TrimSpace(out) != "denied challenge "+ids[0] {
			t.Fatalf("deny: exit %d, stdout %q, stderr %q", code, out, errOut)
		}
		wantPollError(t, svc.poll(login.AuthReqID, 0), "access_denied", "denied")
	})

	step("QR login claimed from the page's QR code, then approved", func(t *testing.T) {
		login := svc.createLogin(map[string]any{"binding_message": "Connexion par QR code (e2e)", "redirect_uri": e2eRedirectURI})
		if !strings.HasPrefix(login.LoginURL, svc.url+"/login/") {
			t.Fatalf("login_url %q, want under %s/login/", login.LoginURL, svc.url)
		}
		// Nothing is pushed, nothing is pending for the practitioner until the claim.
		if ids := pendingChallengeIDs(t, state); len(ids) != 0 {
			t.Fatalf("pending challenges before the claim: %q", ids)
		}
		// The page's QR code must be a URI the phone accepts: PROTOCOL.md
		// ("Details": `t` is base64url without padding, `h` query-escaped).
		uri := svc.qrLoginURI(login.LoginURL)
		link, err := parseLoginURI(uri)
		if err != nil {
			t.Fatalf("the login page's QR code %q is refused by the phone client: %v\n"+
				"(PROTOCOL.md: in the login QR's URI, t is base64url without padding)", uri, err)
		}
		if link.Server != svc.url {
			t.Fatalf("QR code %q names the service %s, want %s", uri, link.Server, svc.url)
		}

		code, out, errOut := runCLI(t, "-state", state, "claim", uri)
		if code != exitOK || !hasLine(out, "client:", e2eClientName) {
			t.Fatalf("claim: exit %d, stdout %q, stderr %q", code, out, errOut)
		}
		var id string
		for _, l := range strings.Split(out, "\n") {
			if rest, ok := strings.CutPrefix(l, "challenge:"); ok {
				id = strings.TrimSpace(rest)
			}
		}
		if id == "" {
			t.Fatalf("claim printed no challenge id:\n%s", out)
		}
		// The token is single use.
		if code, _, errOut := runCLI(t, "-state", state, "claim", uri); code != exitError || !strings.Contains(errOut, "invalid_grant") {
			t.Errorf("second claim: exit %d, stderr %q; want 1 and invalid_grant", code, errOut)
		}

		poll := svc.longPoll(login.AuthReqID)
		code, out, errOut = runCLI(t, "-state", state, "approve", id, "--number", login.VerificationNumber)
		if code != exitOK || strings.TrimSpace(out) != "approved challenge "+id {
			t.Fatalf("approve: exit %d, stdout %q, stderr %q", code, out, errOut)
		}
		wantApproved(t, awaitPoll(t, poll), dev.DeviceID)
	})
}

// hasLine reports whether one line of s contains every want.
func hasLine(s string, want ...string) bool {
	for _, l := range strings.Split(s, "\n") {
		ok := true
		for _, w := range want {
			if !strings.Contains(l, w) {
				ok = false
				break
			}
		}
		if ok {
			return true
		}
	}
	return false
}
