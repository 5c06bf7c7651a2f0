package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/ecps-sante/ecps/internal/syncbuf"
)

// challengeServer is a fake service for the login part of the contract: it
// reuses fakeServer's ECPS-Proof checks and checks every decision JWS.
type challengeServer struct {
	*fakeServer
	url       string
	state     string // state file of the enrolled device dev_me
	dev       *fakeDevice
	chs       map[string]*fakeChallenge
	chOrder   []string
	qrTokens  map[string]string // qr_token → challenge id (a QR login not yet claimed)
	decisions []recordedDecision
	claims    []string // qr_tokens posted
	gets      int      // GET /challenges/{id}
	lists     int      // GET /challenges
}

type fakeChallenge struct {
	obj     challenge
	subject string
	decided bool
	gone    bool // expired: 410
}

// recordedDecision is a decision the fake server accepted (or refused with
// 409/410), with its raw claims.
type recordedDecision struct {
	id     string
	claims map[string]any
	raw    []byte
}

const testDeviceID = "dev_me"

func newChallengeServer(t *testing.T) *challengeServer {
	t.Helper()
	f := &fakeServer{
		t:           t,
		activations: map[string]fakeActivation{},
		devices:     map[string]*fakeDevice{},
		jtis:        map[string]bool{},
	}
	cs := &challengeServer{fakeServer: f, chs: map[string]*fakeChallenge{}, qrTokens: map[string]string{}}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/v1/device/challenges", f.auth(cs.list))
	mux.HandleFunc("GET /api/v1/device/challenges/{id}", f.auth(cs.get))
	mux.HandleFunc("POST /api/v1/device/challenges/claim", f.auth(cs.claim))
	mux.HandleFunc("POST /api/v1/device/challenges/{id}/response", f.auth(cs.respond))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		t.Errorf("unexpected request %s %s", r.Method, r.URL.Path)
		writeErr(w, http.StatusNotFound, "not_found", "no such route")
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	cs.url = srv.URL

	// An enrolled device, saved as the CLI would have.
	key := mustKey(t)
	f.addDevice(testDeviceID, testSubject)
	cs.dev = f.devices[testDeviceID]
	cs.dev.pub = &key.PublicKey
	cs.state = filepath.Join(t.TempDir(), "state.json")
	if err := saveState(cs.state, &deviceState{Server: srv.URL, DeviceID: testDeviceID, Subject: testSubject,
		CreatedAt: "2026-11-01T10:00:00Z", Platform: "android", key: key}); err != nil {
		t.Fatal(err)
	}
	return cs
}

// add registers a pending challenge of subject; msg nil means no binding message.
func (cs *challengeServer) add(id, subject, client string, msg *string, digits int) *fakeChallenge {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	now := time.Now().UTC()
	c := &fakeChallenge{subject: subject, obj: challenge{
		ChallengeID: id, ClientName: client, BindingMessage: msg,
		CreatedAt: now.Format(time.RFC3339), ExpiresAt: now.Add(2 * time.Minute).Format(time.RFC3339),
		Nonce: "nonce-" + id, NumberDigits: digits,
	}}
	cs.chs[id] = c
	cs.chOrder = append(cs.chOrder, id)
	return c
}

func (cs *challengeServer) visible(id string, dev *fakeDevice) *fakeChallenge {
	c := cs.chs[id]
	if c == nil || c.subject != dev.info.Subject {
		return nil
	}
	return c
}

func (cs *challengeServer) list(w http.ResponseWriter, r *http.Request, dev *fakeDevice, body []byte) {
	if len(body) != 0 || r.URL.RawQuery != "" {
		cs.t.Errorf("GET challenges with a body %q or query %q", body, r.URL.RawQuery)
	}
	cs.lists++
	out := struct {
		Challenges []challenge `json:"challenges"`
	}{Challenges: []challenge{}}
	for _, id := range cs.chOrder {
		if c := cs.visible(id, dev); c != nil && !c.decided && !c.gone {
			out.Challenges = append(out.Challenges, c.obj)
		}
	}
	writeJSON(w, http.StatusOK, out)
}

func (cs *challengeServer) get(w http.ResponseWriter, r *http.Request, dev *fakeDevice, body []byte) {
	if len(body) != 0 {
		cs.t.Errorf("GET challenge with a body %q", body)
	}
	cs.gets++
	c := cs.visible(r.PathValue("id"), dev)
	if c == nil {
		writeErr(w, http.StatusNotFound, "not_found", "no such challenge")
		return
	}
	writeJSON(w, http.StatusOK, c.obj)
}

func (cs *challengeServer) claim(w http.ResponseWriter, r *http.Request, dev *fakeDevice, body []byte) {
	var req struct {
		QRToken string `json:"qr_token"`
	}
	if err := decodeStrict(body, &req); err != nil || req.QRToken == "" {
		cs.t.Errorf("claim body %q: %v", body, err)
		writeErr(w, 400, "invalid_request", "bad body")
		return
	}
	cs.claims = append(cs.claims, req.QRToken)
	id, ok := cs.qrTokens[req.QRToken]
	if !ok {
		writeErr(w, 400, "invalid_grant", "unknown qr_token")
		return
	}
	delete(cs.qrTokens, req.QRToken) // single use
	c := cs.chs[id]
	c.subject = dev.info.Subject // bound to this practitioner
	writeJSON(w, http.StatusOK, c.obj)
}

func (cs *challengeServer) respond(w http.ResponseWriter, r *http.Request, dev *fakeDevice, body []byte) {
	id := r.PathValue("id")
	var req decisionBody
	if err := decodeStrict(body, &req); err != nil || req.Response == "" {
		cs.t.Errorf("response body %q: %v", body, err)
		writeErr(w, 400, "invalid_request", "bad body")
		return
	}
	c := cs.visible(id, dev)
	if c == nil {
		writeErr(w, http.StatusNotFound, "not_found", "no such challenge")
		return
	}
	// Exact header, signature by the device key, exact claim set.
	var claims struct {
		ChallengeID string  `json:"challenge_id"`
		Nonce       string  `json:"nonce"`
		Decision    string  `json:"decision"`
		Number      *string `json:"number"`
		UV          string  `json:"uv"`
		Iat         int64   `json:"iat"`
	}
	err := parseJWS(req.Response, map[string]any{"alg": "ES256", "typ": "ecps-decision+jwt", "kid": dev.info.DeviceID},
		func(kid string) *ecdsa.PublicKey {
			if kid != dev.info.DeviceID {
				return nil
			}
			return dev.pub
		}, &claims)
	if err != nil {
		cs.t.Errorf("decision JWS: %v", err)
		writeErr(w, 400, "invalid_grant", "bad decision")
		return
	}
	okDecision := claims.Decision == "approve" || claims.Decision == "deny" || claims.Decision == "fraud"
	if claims.ChallengeID != id || claims.Nonce != c.obj.Nonce || !okDecision ||
		(claims.Decision == "approve" && c.obj.NumberDigits > 0) != (claims.Number != nil) ||
		absDiff(time.Now().Unix(), claims.Iat) > 60 || checkUV(claims.UV) != nil {
		cs.t.Errorf("decision claims %+v for challenge %s", claims, id)
		writeErr(w, 400, "invalid_grant", "bad decision")
		return
	}
	obj, _ := jose.ParseSignedCompact(req.Response, []jose.SignatureAlgorithm{jose.ES256})
	raw, _ := obj.Verify(dev.pub)
	var m map[string]any
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if err := dec.Decode(&m); err != nil {
		cs.t.Errorf("claims %s: %v", raw, err)
	}
	cs.decisions = append(cs.decisions, recordedDecision{id: id, claims: m, raw: raw})
	switch {
	case c.gone:
		writeErr(w, http.StatusGone, "gone", "challenge expired")
	case c.decided:
		writeErr(w, http.StatusConflict, "conflict", "already decided")
	default:
		c.decided = true
		w.WriteHeader(http.StatusNoContent)
	}
}

func (cs *challengeServer) snapshot() []recordedDecision {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	return append([]recordedDecision(nil), cs.decisions...)
}

// counts returns the numbers of GET one challenge, GET list, and the posted qr_tokens.
func (cs *challengeServer) counts() (gets, lists int, claims []string) {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	return cs.gets, cs.lists, append([]string(nil), cs.claims...)
}

// with runs f with the fake server's lock held.
func (cs *challengeServer) with(f func()) {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	f()
}

func (cs *challengeServer) run(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	return runCLI(t, append([]string{"-state", cs.state}, args...)...)
}

func (cs *challengeServer) runStdin(t *testing.T, stdin string, args ...string) (int, string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var stdout, stderr bytes.Buffer
	code := run(ctx, append([]string{"-state", cs.state}, args...), strings.NewReader(stdin), &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

func ptr(s string) *string { return &s }

// wantDecision checks the exact claim set of one recorded decision.
func wantDecision(t *testing.T, d recordedDecision, id, decision, number, uv string) {
	t.Helper()
	want := map[string]any{"challenge_id": id, "nonce": "nonce-" + id, "decision": decision, "uv": uv}
	if number != "" {
		want["number"] = number
	}
	iat, ok := d.claims["iat"].(json.Number)
	if !ok {
		t.Fatalf("decision %s: iat %v is not a number", d.raw, d.claims["iat"])
	}
	if n, err := iat.Int64(); err != nil || absDiff(n, time.Now().Unix()) > 60 {
		t.Fatalf("decision %s: iat %v", d.raw, iat)
	}
	got := map[string]any{}
	for k, v := range d.claims {
		if k != "iat" {
			got[k] = v
		}
	}
	if d.id != id || !reflect.DeepEqual(got, want) {
		t.Fatalf("decision on %s: claims %s; want %v on %s", d.id, d.raw, want, id)
	}
}

func TestChallengesTable(t *testing.T) {
	cs := newChallengeServer(t)
	cs.add("ch_1", testSubject, "Pro Santé Connect", ptr("Connexion au DMP"), 2)
	cs.add("ch_2", testSubject, "Evil\x1b[31m IdP", ptr("pay\u202e now\nplease"), 6)
	cs.add("ch_3", testSubject, "Hôpital", nil, 2)
	cs.add("ch_stranger", "81111111117", "Other", nil, 2)

	code, out, errOut := cs.run(t, "challenges")
	if code != exitOK {
		t.Fatalf("challenges: exit %d, stderr %q", code, errOut)
	}
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	if len(lines) != 4 {
		t.Fatalf("table:\n%s", out)
	}
	if f := strings.Fields(lines[0]); !reflect.DeepEqual(f, []string{"CHALLENGE_ID", "CLIENT", "BINDING_MESSAGE", "DIGITS", "EXPIRES", "CREATED_AT"}) {
		t.Fatalf("header %q", lines[0])
	}
	columns := regexp.MustCompile(` {2,}`)
	for i, want := range []string{"ch_1|Pro Santé Connect|Connexion au DMP|2|in 1", "ch_2|Evil?[31m IdP|pay? now?please|6|in 1", "ch_3|Hôpital|-|2|in 1"} {
		if !strings.Contains(columns.ReplaceAllString(lines[i+1], "|"), want) {
			t.Fatalf("line %d %q, want it to contain %q", i+1, lines[i+1], want)
		}
	}
	if strings.ContainsAny(out, "\x1b\u202e") || strings.Contains(out, "ch_stranger") {
		t.Fatalf("table:\n%q", out)
	}

	code, out, errOut = cs.run(t, "challenges", "-json")
	var list struct {
		Challenges []challenge `json:"challenges"`
	}
	if code != exitOK || json.Unmarshal([]byte(out), &list) != nil || len(list.Challenges) != 3 || list.Challenges[2].BindingMessage != nil {
		t.Fatalf("challenges -json: exit %d, %q %q", code, out, errOut)
	}

	cs2 := newChallengeServer(t)
	if code, out, _ := cs2.run(t, "challenges"); code != exitOK || out != "no pending challenge\n" {
		t.Fatalf("empty list: exit %d, %q", code, out)
	}
}

func TestShowChallenge(t *testing.T) {
	cs := newChallengeServer(t)
	cs.add("ch_1", testSubject, "Pro Santé Connect", ptr("Connexion\tau DMP"), 2)
	cs.add("ch_6", testSubject, "Hôpital", nil, 6)
	cs.add("ch_stranger", "81111111117", "Other", nil, 2)

	code, out, errOut := cs.run(t, "show", "ch_1")
	if code != exitOK {
		t.Fatalf("show: exit %d, stderr %q", code, errOut)
	}
	for _, want := range []string{"challenge:       ch_1\n", "client:          Pro Santé Connect\n",
		"binding message: Connexion?au DMP\n", "expires:         in 1", "type the 2-digit number shown by the service\n"} {
		if !strings.Contains(out, want) {
			t.Fatalf("show output %q lacks %q", out, want)
		}
	}
	if strings.Contains(out, "nonce") {
		t.Fatalf("show prints the nonce: %q", out)
	}
	code, out, _ = cs.run(t, "show", "ch_6")
	if code != exitOK || !strings.Contains(out, "binding message: -\n") || !strings.Contains(out, "type the 6-digit number") {
		t.Fatalf("show ch_6: exit %d, %q", code, out)
	}
	code, out, _ = cs.run(t, "show", "ch_1", "-json")
	var ch challenge
	if code != exitOK || json.Unmarshal([]byte(out), &ch) != nil || ch.Nonce != "nonce-ch_1" {
		t.Fatalf("show -json: exit %d, %q", code, out)
	}
	code, _, errOut = cs.run(t, "show", "ch_stranger")
	if code != exitError || errOut != "error: not_found: no such challenge (HTTP 404)\n" {
		t.Fatalf("show stranger: exit %d, %q", code, errOut)
	}
}

func TestApproveDenyFraud(t *testing.T) {
	cs := newChallengeServer(t)
	cs.add("ch_a", testSubject, "PSC", nil, 2)
	cs.add("ch_b", testSubject, "PSC", nil, 2)
	cs.add("ch_c", testSubject, "PSC", nil, 2)
	cs.add("ch_d", testSubject, "PSC", nil, 6)

	code, out, errOut := cs.run(t, "approve", "ch_a", "--number", "07")
	if code != exitOK || out != "approved challenge ch_a\n" {
		t.Fatalf("approve: exit %d, %q %q", code, out, errOut)
	}
	code, out, errOut = cs.run(t, "deny", "ch_b")
	if code != exitOK || out != "denied challenge ch_b\n" {
		t.Fatalf("deny: exit %d, %q %q", code, out, errOut)
	}
	code, out, errOut = cs.run(t, "fraud", "-uv", "fingerprint", "ch_c")
	if code != exitOK || !strings.HasPrefix(out, "reported challenge ch_c as fraud") {
		t.Fatalf("fraud: exit %d, %q %q", code, out, errOut)
	}
	code, _, errOut = cs.run(t, "approve", "ch_d", "-number=000042", "-uv", "face")
	if code != exitOK {
		t.Fatalf("approve 6 digits: exit %d, %q", code, errOut)
	}
	d := cs.snapshot()
	if gets, _, _ := cs.counts(); len(d) != 4 || gets != 4 {
		t.Fatalf("%d decisions after %d GETs", len(d), gets)
	}
	wantDecision(t, d[0], "ch_a", "approve", "07", "pin")
	wantDecision(t, d[1], "ch_b", "deny", "", "pin")
	wantDecision(t, d[2], "ch_c", "fraud", "", "fingerprint")
	wantDecision(t, d[3], "ch_d", "approve", "000042", "face")

	// Decided already: 409.
	code, _, errOut = cs.run(t, "deny", "ch_a")
	if code != exitError || errOut != "error: challenge ch_a: already decided or cancelled (HTTP 409)\n" {
		t.Fatalf("deny decided: exit %d, %q", code, errOut)
	}
	// Expired: 410.
	e := cs.add("ch_e", testSubject, "PSC", nil, 2)
	cs.with(func() { e.gone = true })
	code, _, errOut = cs.run(t, "approve", "ch_e", "-number", "12")
	if code != exitError || errOut != "error: challenge ch_e: expired (HTTP 410)\n" {
		t.Fatalf("approve expired: exit %d, %q", code, errOut)
	}
	// Another practitioner's challenge: the server's 404, nothing posted.
	cs.add("ch_s", "81111111117", "PSC", nil, 2)
	before := len(cs.snapshot())
	code, _, errOut = cs.run(t, "deny", "ch_s")
	if code != exitError || errOut != "error: not_found: no such challenge (HTTP 404)\n" || len(cs.snapshot()) != before {
		t.Fatalf("deny stranger: exit %d, %q", code, errOut)
	}
}

// A challenge with number_digits 0 (a Keycloak login whose binding message
// is not a number) is approved without a number.
func TestApproveWithoutNumber(t *testing.T) {
	cs := newChallengeServer(t)
	cs.add("ch_0", testSubject, "Keycloak", ptr("Connexion-DMP"), 0)
	cs.add("ch_1", testSubject, "Keycloak", nil, 0)
	cs.add("ch_2", testSubject, "PSC", nil, 2)

	code, out, _ := cs.run(t, "show", "ch_0")
	if code != exitOK || !strings.Contains(out, "binding message: Connexion-DMP\n") || !strings.Contains(out, "no number to type") {
		t.Fatalf("show: exit %d, %q", code, out)
	}
	code, _, errOut := cs.run(t, "approve", "ch_0", "--number", "12")
	if code != exitUsage || !strings.Contains(errOut, "no number to type") || !strings.Contains(errOut, "nothing was sent") {
		t.Fatalf("approve with a number: exit %d, %q", code, errOut)
	}
	code, _, errOut = cs.run(t, "approve", "ch_2")
	if code != exitUsage || !strings.Contains(errOut, "needs -number: the 2-digit number") {
		t.Fatalf("approve without a number: exit %d, %q", code, errOut)
	}
	if len(cs.snapshot()) != 0 {
		t.Fatalf("%d decisions sent", len(cs.snapshot()))
	}
	code, out, errOut = cs.run(t, "approve", "ch_0", "-uv", "face")
	if code != exitOK || out != "approved challenge ch_0\n" {
		t.Fatalf("approve: exit %d, %q %q", code, out, errOut)
	}
	// watch: y approves, a number is not an answer.
	code, out, errOut = cs.runStdin(t, "42\n", "watch", "-once")
	if code != exitOK || !strings.Contains(out, watchPromptNoNumber) || !strings.Contains(errOut, "answer y to approve") {
		t.Fatalf("watch with a number: exit %d, %q %q", code, out, errOut)
	}
	cs2 := newChallengeServer(t)
	cs2.add("ch_1", testSubject, "Keycloak", nil, 0)
	if code, out, errOut = cs2.runStdin(t, "y\n", "watch", "-once"); code != exitOK || !strings.Contains(out, "approved challenge ch_1") {
		t.Fatalf("watch y: exit %d, %q %q", code, out, errOut)
	}
	d := append(cs.snapshot(), cs2.snapshot()...)
	if len(d) != 2 {
		t.Fatalf("%d decisions", len(d))
	}
	wantDecision(t, d[0], "ch_0", "approve", "", "face")
	wantDecision(t, d[1], "ch_1", "approve", "", "pin")
}

func TestDecisionUsage(t *testing.T) {
	cs := newChallengeServer(t)
	cs.add("ch_1", testSubject, "PSC", nil, 2)
	tests := []struct {
		name    string
		args    []string
		wantErr string
	}{
		{"approve without number", []string{"approve", "ch_1"}, "needs -number"},
		{"approve empty number", []string{"approve", "ch_1", "--number", ""}, "needs -number"},
		{"approve letters", []string{"approve", "ch_1", "--number", "4a"}, "digits only"},
		{"approve signed", []string{"approve", "ch_1", "--number", "-7"}, "digits only"},
		{"approve spaces", []string{"approve", "ch_1", "--number", " 42"}, "digits only"},
		{"approve non-ASCII digits", []string{"approve", "ch_1", "--number", "٤٢"}, "digits only"},
		{"approve wrong length", []string{"approve", "ch_1", "--number", "123"}, "2-digit number, got 3 digits (nothing was sent)"},
		{"approve bad uv", []string{"approve", "ch_1", "--number", "12", "--uv", "iris"}, "-uv: must be one of pin, fingerprint, face"},
		{"approve no id", []string{"approve", "--number", "12"}, "one challenge id"},
		{"approve two ids", []string{"approve", "ch_1", "ch_2", "--number", "12"}, "one challenge id"},
		{"approve bad id", []string{"approve", "../x", "--number", "12"}, "challenge id: only letters"},
		{"deny with number", []string{"deny", "ch_1", "--number", "12"}, "not defined"},
		{"fraud no id", []string{"fraud"}, "one challenge id"},
		{"show bad id", []string{"show", "ch_1/response"}, "challenge id"},
		{"challenges extra", []string{"challenges", "x"}, "no argument"},
		{"claim nothing", []string{"claim"}, "one login URI"},
		{"claim enrol URI", []string{"claim", "ecps://enrol?a=x&s=" + testSecret + "&h=" + testServer}, "ecps://login?"},
		{"watch extra", []string{"watch", "x"}, "no argument"},
		{"watch tiny interval", []string{"watch", "-interval", "1ms"}, "-interval"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errOut := cs.run(t, tc.args...)
			if code != exitUsage || !strings.Contains(errOut, tc.wantErr) || out != "" {
				t.Fatalf("exit %d, stdout %q, stderr %q; want 2 and %q", code, out, errOut, tc.wantErr)
			}
		})
	}
	if _, _, claims := cs.counts(); len(cs.snapshot()) != 0 || len(claims) != 0 {
		t.Fatalf("sent %d decisions, %d claims", len(cs.snapshot()), len(claims))
	}
}

func TestClaim(t *testing.T) {
	cs := newChallengeServer(t)
	cs.add("ch_qr", "", "Pro Santé Connect", ptr("QR login"), 2) // not bound yet
	cs.with(func() { cs.qrTokens[testQRToken] = "ch_qr" })

	// Another service's QR code: refused, nothing sent.
	for _, h := range []string{"https://ecps.example.fr", strings.Replace(cs.url, "127.0.0.1", "localhost", 1), cs.url + "/other"} {
		uri := "ecps://login?t=" + testQRToken + "&h=" + url.QueryEscape(h)
		code, _, errOut := cs.run(t, "claim", uri)
		if code != exitError || !strings.Contains(errOut, "but this device is enrolled on "+cs.url) {
			t.Fatalf("claim for %s: exit %d, %q", h, code, errOut)
		}
	}
	if _, _, claims := cs.counts(); len(claims) != 0 {
		t.Fatalf("claims sent despite the server check: %v", claims)
	}

	// The enrolled server, with a trailing slash and an upper-case scheme: claimed.
	uri := "ecps://login?t=" + testQRToken + "&h=" + url.QueryEscape("HTTP"+strings.TrimPrefix(cs.url, "http")+"/")
	code, out, errOut := cs.run(t, "claim", uri)
	if code != exitOK {
		t.Fatalf("claim: exit %d, %q", code, errOut)
	}
	for _, want := range []string{"challenge:       ch_qr\n", "client:          Pro Santé Connect\n", "binding message: QR login\n",
		"type the 2-digit number shown by the service\n", "approve ch_qr --number NN"} {
		if !strings.Contains(out, want) {
			t.Fatalf("claim output %q lacks %q", out, want)
		}
	}
	if _, _, claims := cs.counts(); !reflect.DeepEqual(claims, []string{testQRToken}) {
		t.Fatalf("claims %v", claims)
	}
	// Bound to this practitioner: it can now be approved.
	if code, _, errOut := cs.run(t, "approve", "ch_qr", "--number", "55"); code != exitOK {
		t.Fatalf("approve claimed: exit %d, %q", code, errOut)
	}
	wantDecision(t, cs.snapshot()[0], "ch_qr", "approve", "55", "pin")

	// Single use: the same token again is invalid_grant; from stdin.
	code, _, errOut = cs.runStdin(t, formatLoginURI(loginLink{testQRToken, cs.url})+"\n", "claim", "-")
	if code != exitError || !strings.Contains(errOut, "invalid_grant: unknown qr_token (HTTP 400)") || !strings.Contains(errOut, "scan the current one") {
		t.Fatalf("claim used token: exit %d, %q", code, errOut)
	}
	if _, _, claims := cs.counts(); len(claims) != 2 || claims[1] != testQRToken {
		t.Fatalf("claims %v", claims)
	}

	// From stdin, a malformed URI is a usage error.
	code, _, errOut = cs.runStdin(t, "ecps://login?t=a%2Fb&h="+url.QueryEscape(cs.url)+"\n", "claim", "-")
	if code != exitUsage || !strings.Contains(errOut, "t: not base64url") {
		t.Fatalf("claim bad token: exit %d, %q", code, errOut)
	}
}

func TestWatchOnce(t *testing.T) {
	cs := newChallengeServer(t)
	cs.add("ch_1", testSubject, "PSC", ptr("first"), 2)
	cs.add("ch_2", testSubject, "PSC", ptr("second"), 2)
	cs.add("ch_3", testSubject, "PSC", nil, 2)
	cs.add("ch_x", "81111111117", "PSC", nil, 2)

	code, out, errOut := cs.runStdin(t, "42\n\nf\n", "watch", "-once")
	if code != exitOK {
		t.Fatalf("watch -once: exit %d, %q", code, errOut)
	}
	d := cs.snapshot()
	if len(d) != 3 {
		t.Fatalf("%d decisions, stdout %q", len(d), out)
	}
	wantDecision(t, d[0], "ch_1", "approve", "42", "pin")
	wantDecision(t, d[1], "ch_2", "deny", "", "pin")
	wantDecision(t, d[2], "ch_3", "fraud", "", "pin")
	if n := strings.Count(out, watchPrompt); n != 3 {
		t.Fatalf("%d prompts in %q", n, out)
	}
	for _, want := range []string{"binding message: first", "approved challenge ch_1", "denied challenge ch_2", "reported challenge ch_3 as fraud"} {
		if !strings.Contains(out, want) {
			t.Fatalf("watch output %q lacks %q", out, want)
		}
	}
	if gets, lists, _ := cs.counts(); lists != 1 || gets != 0 {
		t.Fatalf("%d lists, %d gets", lists, gets)
	}

	// Nothing pending.
	code, out, _ = cs.runStdin(t, "", "watch", "-once")
	if code != exitOK || out != "no pending challenge\n" {
		t.Fatalf("watch -once, nothing pending: exit %d, %q", code, out)
	}
}

func TestWatchOnceBadAnswersAndEOF(t *testing.T) {
	cs := newChallengeServer(t)
	cs.add("ch_1", testSubject, "PSC", nil, 2)
	cs.add("ch_2", testSubject, "PSC", nil, 2)
	cs.add("ch_3", testSubject, "PSC", nil, 2)
	// A wrong-length number and a word are not answers; then stdin ends.
	code, out, errOut := cs.runStdin(t, "123\nyes\n", "watch", "-once")
	if code != exitOK || len(cs.snapshot()) != 0 {
		t.Fatalf("exit %d, %d decisions, %q %q", code, len(cs.snapshot()), out, errOut)
	}
	for _, want := range []string{"2-digit number, got 3 digits: challenge ch_1 left unanswered", "digits only: challenge ch_2 left unanswered",
		"end of input: challenge ch_3 left unanswered"} {
		if !strings.Contains(errOut, want) {
			t.Fatalf("stderr %q lacks %q", errOut, want)
		}
	}
	// A challenge decided elsewhere meanwhile: the 409 is reported, the next one is asked.
	cs2 := newChallengeServer(t)
	cs2.add("ch_1", testSubject, "PSC", nil, 2)
	cs2.add("ch_2", testSubject, "PSC", nil, 2)
	cs2.with(func() { cs2.chOrder = append(cs2.chOrder, "ch_1") }) // listed twice: asked once
	pr, pw := io.Pipe()
	go func() {
		pw.Write([]byte("11\n"))
		cs2.with(func() { cs2.chs["ch_2"].decided = true }) // another device wins ch_2
		pw.Write([]byte("22\n"))
		pw.Close()
	}()
	var stdout, stderr bytes.Buffer
	code = run(context.Background(), []string{"-state", cs2.state, "watch", "-once"}, pr, &stdout, &stderr)
	if code != exitOK || !strings.Contains(stderr.String(), "error: challenge ch_2: already decided or cancelled (HTTP 409)") {
		t.Fatalf("exit %d, %q %q", code, stdout.String(), stderr.String())
	}
	if n := strings.Count(stdout.String(), watchPrompt); n != 2 {
		t.Fatalf("%d prompts: %q", n, stdout.String())
	}
	d := cs2.snapshot()
	if len(d) != 2 {
		t.Fatalf("%d decisions", len(d))
	}
	wantDecision(t, d[0], "ch_1", "approve", "11", "pin")
	wantDecision(t, d[1], "ch_2", "approve", "22", "pin")
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestWatchLoop(t *testing.T) {
	cs := newChallengeServer(t)
	cs.add("ch_1", testSubject, "PSC", nil, 2)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pr, pw := io.Pipe()
	defer pw.Close()
	var stdout, stderr syncbuf.Buffer
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"-state", cs.state, "watch", "-interval", "100ms"}, pr, &stdout, &stderr)
	}()

	// ch_1 gets an invalid answer: it stays pending but is never asked again.
	waitFor(t, "the first prompt", func() bool { return strings.Count(stdout.String(), watchPrompt) == 1 })
	pw.Write([]byte("abc\n"))
	_, start, _ := cs.counts()
	waitFor(t, "three more polls", func() bool { _, n, _ := cs.counts(); return n >= start+3 })
	if n := strings.Count(stdout.String(), watchPrompt); n != 1 {
		t.Fatalf("asked %d times about ch_1: %q", n, stdout.String())
	}

	// A new challenge appears: asked, approved.
	cs.add("ch_2", testSubject, "PSC", nil, 2)
	waitFor(t, "the second prompt", func() bool { return strings.Count(stdout.String(), watchPrompt) == 2 })
	pw.Write([]byte("09\n"))
	waitFor(t, "the decision", func() bool { return len(cs.snapshot()) == 1 })
	wantDecision(t, cs.snapshot()[0], "ch_2", "approve", "09", "pin")

	// A third one: cancelled while waiting for the answer: exit 0.
	cs.add("ch_3", testSubject, "PSC", nil, 2)
	waitFor(t, "the third prompt", func() bool { return strings.Count(stdout.String(), watchPrompt) == 3 })
	cancel()
	select {
	case code := <-done:
		if code != exitOK {
			t.Fatalf("exit %d, stderr %q", code, stderr.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("watch did not stop on cancel")
	}
	if len(cs.snapshot()) != 1 {
		t.Fatalf("decisions %v", cs.snapshot())
	}
}

func TestWatchStopsWhenRevoked(t *testing.T) {
	cs := newChallengeServer(t)
	cs.with(func() { cs.dev.info.Status = "revoked" })
	code, _, errOut := cs.runStdin(t, "", "watch", "-interval", "100ms")
	if code != exitError || !strings.Contains(errOut, "invalid_client") {
		t.Fatalf("exit %d, %q", code, errOut)
	}
}
