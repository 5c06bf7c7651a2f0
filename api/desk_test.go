package api

// Tests of desk and IdP client authentication, activations created by an
// IdP, the device lifecycle seen from the desk, and the audit API.

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"image/png"
	"net/http"
	"net/url"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ecps-sante/ecps/enrollment"
)

var deskCodeRE = regexp.MustCompile(`^[0-9A-HJKMNP-TV-Z]{4}-[0-9A-HJKMNP-TV-Z]{4}-[0-9A-HJKMNP-TV-Z]{2}$`)

// deskBasic is an HTTP Basic Authorization header value.
func deskBasic(id, secret string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(id+":"+secret))
}

// deskClientActivation sends POST /api/v1/activations as an IdP client.
func deskClientActivation(t testing.TB, e *env, auth string, subject string) response {
	t.Helper()
	h := map[string]string{}
	if auth != "" {
		h["Authorization"] = auth
	}
	return do(t, e.url(), "POST", "/api/v1/activations", jsonBody(t, map[string]string{"subject": subject}), h)
}

// deskAs sends a desk request with the given operator key.
func deskAs(t testing.TB, e *env, key, method, path string, body any) response {
	t.Helper()
	var b []byte
	if body != nil {
		b = jsonBody(t, body)
	}
	return do(t, e.url(), method, path, b, map[string]string{"Authorization": "Bearer " + key})
}

// deskRawObject decodes a JSON object keeping raw members.
func deskRawObject(t testing.TB, b []byte) map[string]json.RawMessage {
	t.Helper()
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("not a JSON object: %q", b)
	}
	return m
}

func deskStr(t testing.TB, raw json.RawMessage) string {
	t.Helper()
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		t.Fatalf("not a JSON string: %s", raw)
	}
	return s
}

// deskKeys returns the sorted member names of an object.
func deskKeys(m map[string]json.RawMessage) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func deskWantKeys(t testing.TB, what string, m map[string]json.RawMessage, want ...string) {
	t.Helper()
	sort.Strings(want)
	if got := deskKeys(m); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("%s members = %v, want %v", what, got, want)
	}
}

// deskAuditPage is one page of the audit API, entries kept raw.
type deskAuditPage struct {
	Entries []json.RawMessage `json:"entries"`
	Next    *string           `json:"next"`
}

func deskGetAuditPage(t testing.TB, e *env, query string) (deskAuditPage, response) {
	t.Helper()
	r := e.desk("GET", "/api/v1/desk/audit?"+query, nil)
	r.wantStatus(t, http.StatusOK)
	m := deskRawObject(t, r.Body)
	deskWantKeys(t, "audit page", m, "entries", "next")
	var p deskAuditPage
	if err := json.Unmarshal(r.Body, &p); err != nil {
		t.Fatal(err)
	}
	if p.Entries == nil {
		t.Fatalf("entries is not an array: %s", r.Body)
	}
	return p, r
}

// deskAllAudit reads every page of a subject's audit (limit 200).
func deskAllAudit(t testing.TB, e *env, subject string) ([]map[string]json.RawMessage, []byte) {
	t.Helper()
	var all []map[string]json.RawMessage
	var raw []byte
	q := "subject=" + subject + "&limit=200"
	for i := 0; i < 100; i++ {
		p, r := deskGetAuditPage(t, e, q)
		raw = append(raw, r.Body...)
		for _, en := range p.Entries {
			all = append(all, deskRawObject(t, en))
		}
		if p.Next == nil {
			return all, raw
		}
		q = "subject=" + subject + "&limit=200&before=" + url.QueryEscape(*p.Next)
	}
	t.Fatal("audit paging does not end")
	return nil, nil
}

// deskStreamID parses a Redis stream id "ms-seq" for ordering.
func deskStreamID(t testing.TB, id string) [2]uint64 {
	t.Helper()
	ms, seq, ok := strings.Cut(id, "-")
	a, err1 := strconv.ParseUint(ms, 10, 64)
	b, err2 := strconv.ParseUint(seq, 10, 64)
	if !ok || err1 != nil || err2 != nil {
		t.Fatalf("audit id %q is not a stream id", id)
	}
	return [2]uint64{a, b}
}

func deskOlder(a, b [2]uint64) bool { return a[0] < b[0] || a[0] == b[0] && a[1] < b[1] }

func TestDeskAuth(t *testing.T) {
	e := newEnv(t, 1)
	p := e.newDevice(subjectA)
	routes := []struct {
		method, path string
		body         any
	}{
		{"POST", "/api/v1/desk/activations", map[string]string{"subject": subjectA}},
		{"GET", "/api/v1/desk/activations/act_0123456789abcdefghijkl", nil},
		{"GET", "/api/v1/desk/practitioners/" + subjectA + "/devices", nil},
		{"POST", "/api/v1/desk/devices/" + p.deviceID + "/suspend", nil},
		{"POST", "/api/v1/desk/devices/" + p.deviceID + "/resume", nil},
		{"DELETE", "/api/v1/desk/devices/" + p.deviceID, nil},
		{"GET", "/api/v1/desk/audit?subject=" + subjectA, nil},
	}
	auths := []struct{ name, value string }{
		{"none", ""},
		{"wrong-key", "Bearer operator-key-wrong-0123456789ab"},
		{"empty-bearer", "Bearer "},
		{"basic-scheme", deskBasic("desk-1", testOperatorKey)},
		{"key-without-scheme", testOperatorKey},
		{"client-secret", "Bearer " + testActClientSec},
		{"device-proof", "ECPS-Proof " + p.proof(t, e.clock.Now(), "GET", "/api/v1/desk/audit", nil)},
	}
	before := e.auditEvents(subjectA)
	for _, rt := range routes {
		for _, a := range auths {
			t.Run("fail/"+a.name+"/"+rt.method+" "+rt.path, func(t *testing.T) {
				var b []byte
				if rt.body != nil {
					b = jsonBody(t, rt.body)
				}
				h := map[string]string{}
				if a.value != "" {
					h["Authorization"] = a.value
				}
				do(t, e.url(), rt.method, rt.path, b, h).wantError(t, http.StatusUnauthorized, "invalid_client")
			})
		}
	}
	t.Run("no-side-effect", func(t *testing.T) {
		if after := e.auditEvents(subjectA); len(after) != len(before) {
			t.Fatalf("refused desk calls wrote audit entries: %v -> %v", before, after)
		}
		d := proofDeskDevice(t, e, subjectA, p.deviceID)
		if deskStr(t, d["status"]) != "active" {
			t.Fatalf("refused desk calls changed the device: %s", d["status"])
		}
	})
	t.Run("ok/desk-1", func(t *testing.T) {
		deskAs(t, e, testOperatorKey, "GET", "/api/v1/desk/practitioners/"+subjectA+"/devices", nil).wantStatus(t, http.StatusOK)
	})
	t.Run("ok/desk-2", func(t *testing.T) {
		deskAs(t, e, testOperatorKeyTwo, "GET", "/api/v1/desk/practitioners/"+subjectA+"/devices", nil).wantStatus(t, http.StatusOK)
	})
}

func TestDeskClientActivation(t *testing.T) {
	const publicURL = "https://ecps.example.fr:8443/e-cps"
	e := newEnv(t, 1, func(o *enrollment.Options) { o.PublicURL = publicURL })

	t.Run("forbidden/no-activation-scope", func(t *testing.T) {
		deskClientActivation(t, e, deskBasic("idp", testClientSecret), subjectA).wantError(t, http.StatusForbidden, "forbidden")
		if n := countOf(e.auditEvents(subjectA), "activation.created"); n != 0 {
			t.Fatalf("a refused client created %d activations", n)
		}
	})

	t.Run("ok", func(t *testing.T) {
		r := deskClientActivation(t, e, deskBasic("idp-act", testActClientSec), subjectA)
		r.wantStatus(t, http.StatusCreated)
		m := deskRawObject(t, r.Body)
		deskWantKeys(t, "activation", m, "activation_id", "subject", "code", "qr_png", "enrol_uri", "expires_at")

		id := deskStr(t, m["activation_id"])
		if id == "" {
			t.Fatal("empty activation_id")
		}
		if s := deskStr(t, m["subject"]); s != subjectA {
			t.Errorf("subject = %q, want %q", s, subjectA)
		}
		if c := deskStr(t, m["code"]); !deskCodeRE.MatchString(c) {
			t.Errorf("code %q is not XXXX-XXXX-XX in Crockford base32", c)
		}

		qr := deskStr(t, m["qr_png"])
		if strings.HasPrefix(qr, "data:") {
			t.Errorf("qr_png has a data: prefix")
		}
		pngBytes, err := base64.StdEncoding.Strict().DecodeString(qr)
		if err != nil {
			t.Fatalf("qr_png is not standard padded base64: %v", err)
		}
		img, err := png.Decode(bytes.NewReader(pngBytes))
		if err != nil {
			t.Fatalf("qr_png is not a PNG: %v", err)
		}
		if b := img.Bounds(); b.Dx() < 21 || b.Dy() < 21 {
			t.Errorf("qr_png is %v, too small for a QR code", b)
		}

		uri := deskStr(t, m["enrol_uri"])
		rawQuery, ok := strings.CutPrefix(uri, "ecps://enrol?")
		if !ok {
			t.Fatalf("enrol_uri %q does not start with ecps://enrol?", uri)
		}
		params := map[string]string{}
		for _, kv := range strings.Split(rawQuery, "&") {
			k, v, _ := strings.Cut(kv, "=")
			if _, dup := params[k]; dup {
				t.Fatalf("enrol_uri repeats %s: %s", k, uri)
			}
			params[k] = v
		}
		if len(params) != 3 {
			t.Errorf("enrol_uri parameters = %v, want a, s, h", params)
		}
		if params["a"] != id {
			t.Errorf("enrol_uri a = %q, want the activation_id %q", params["a"], id)
		}
		s := params["s"]
		if strings.ContainsAny(s, "=+/%") {
			t.Errorf("enrol_uri s = %q is not base64url without padding", s)
		}
		secret, err := base64.RawURLEncoding.Strict().DecodeString(s)
		if err != nil {
			t.Errorf("enrol_uri s = %q is not base64url without padding: %v", s, err)
		} else if len(secret) < 16 {
			t.Errorf("enrol_uri s holds %d bytes, want ≥ 16 (128 bits)", len(secret))
		}
		if want := url.QueryEscape(publicURL); params["h"] != want {
			t.Errorf("enrol_uri h = %q, want %q exactly", params["h"], want)
		}

		exp := deskStr(t, m["expires_at"])
		at, err := time.Parse(time.RFC3339, exp)
		if err != nil {
			t.Fatalf("expires_at %q is not RFC 3339: %v", exp, err)
		}
		if !strings.HasSuffix(exp, "Z") {
			t.Errorf("expires_at %q is not UTC", exp)
		}
		if d := at.Sub(e.clock.Now().Add(10 * time.Minute)); d < -2*time.Second || d > 2*time.Second {
			t.Errorf("expires_at %s is %v away from now + 10 min", exp, d)
		}

		// The desk sees it pending, and the answer holds neither secret nor code.
		g := e.desk("GET", "/api/v1/desk/activations/"+id, nil)
		g.wantStatus(t, http.StatusOK)
		if st := g.json(t)["status"]; st != "pending" {
			t.Errorf("status = %v, want pending", st)
		}
		code := deskStr(t, m["code"])
		if bytes.Contains(g.Body, []byte(s)) || bytes.Contains(g.Body, []byte(code)) || bytes.Contains(g.Body, []byte(strings.ReplaceAll(code, "-", ""))) {
			t.Errorf("a later read shows the secret or code: %s", g.Body)
		}

		// Audited once, with the client as actor.
		entries, _ := deskAllAudit(t, e, subjectA)
		n := 0
		for _, en := range entries {
			if deskStr(t, en["event"]) == "activation.created" {
				n++
				if string(en["actor"]) != `{"type":"client","id":"idp-act"}` {
					t.Errorf("activation.created actor = %s", en["actor"])
				}
			}
		}
		if n != 1 {
			t.Errorf("%d activation.created entries, want 1", n)
		}
	})

	t.Run("ok/enrolable", func(t *testing.T) {
		r := deskClientActivation(t, e, deskBasic("idp-act", testActClientSec), subjectB)
		r.wantStatus(t, http.StatusCreated)
		var a activation
		if err := json.Unmarshal(r.Body, &a); err != nil {
			t.Fatal(err)
		}
		q, err := parseURIQuery(a.EnrolURI)
		if err != nil {
			t.Fatal(err)
		}
		a.Secret = q.Get("s")
		if h := q.Get("h"); h != publicURL {
			t.Errorf("h decodes to %q, want %q", h, publicURL)
		}
		e.enrol(newPhone(t), a)
	})

	unauth := []struct{ name, auth string }{
		{"wrong-secret", deskBasic("idp-act", testActClientSec+"x")},
		{"other-clients-secret", deskBasic("idp-act", testClientSecret)},
		{"unknown-client", deskBasic("nobody", testActClientSec)},
		{"empty-client-id", deskBasic("", testActClientSec)},
		{"no-auth", ""},
		{"bearer-scheme", "Bearer " + testActClientSec},
		{"operator-key", "Bearer " + testOperatorKey},
		{"basic-garbage", "Basic !!!"},
	}
	for _, u := range unauth {
		t.Run("fail/"+u.name, func(t *testing.T) {
			deskClientActivation(t, e, u.auth, subjectC).wantError(t, http.StatusUnauthorized, "invalid_client")
		})
	}
	t.Run("no-side-effect", func(t *testing.T) {
		if n := len(e.auditEvents(subjectC)); n != 0 {
			t.Fatalf("refused clients wrote %d audit entries", n)
		}
	})

	bad := []struct{ name, subject string }{
		{"bad-luhn", "810001234566"},
		{"leading-space", " " + subjectA},
		{"inner-space", "8100 01234565"},
		{"trailing-space", subjectA + " "},
		{"empty", ""},
		{"too-short", "81000123456"},
		{"too-long", "8100012345650"},
		{"letters", "81000123456A"},
		{"adeli-too-long", "07512345678"},
		{"wrong-kind-digit", "910001234565"},
	}
	for _, b := range bad {
		t.Run("invalid-subject/client/"+b.name, func(t *testing.T) {
			deskClientActivation(t, e, deskBasic("idp-act", testActClientSec), b.subject).wantError(t, http.StatusBadRequest, "invalid_request")
		})
		t.Run("invalid-subject/desk/"+b.name, func(t *testing.T) {
			e.desk("POST", "/api/v1/desk/activations", map[string]string{"subject": b.subject}).wantError(t, http.StatusBadRequest, "invalid_request")
		})
	}
	t.Run("invalid-subject/missing", func(t *testing.T) {
		do(t, e.url(), "POST", "/api/v1/activations", []byte(`{}`), map[string]string{"Authorization": deskBasic("idp-act", testActClientSec)}).
			wantError(t, http.StatusBadRequest, "invalid_request")
		e.desk("POST", "/api/v1/desk/activations", map[string]string{}).wantError(t, http.StatusBadRequest, "invalid_request")
	})
	t.Run("invalid-subject/not-a-string", func(t *testing.T) {
		e.desk("POST", "/api/v1/desk/activations", map[string]any{"subject": 810001234565}).wantError(t, http.StatusBadRequest, "invalid_request")
	})
}

func TestDeskDeviceLifecycle(t *testing.T) {
	e := newEnv(t, 1)
	p := e.newDevice(subjectA)
	devPath := "/api/v1/desk/devices/" + p.deviceID
	var suspended []byte

	checkDevice := func(t *testing.T, r response, status string) map[string]json.RawMessage {
		t.Helper()
		r.wantStatus(t, http.StatusOK)
		m := deskRawObject(t, r.Body)
		deskWantKeys(t, "device", m, "device_id", "subject", "status", "platform", "model", "app_version", "created_at", "last_used_at", "push")
		for k, want := range map[string]string{"device_id": p.deviceID, "subject": subjectA, "status": status,
			"platform": "android", "model": "Pixel 9", "app_version": "1.2.3"} {
			if got := deskStr(t, m[k]); got != want {
				t.Errorf("%s = %q, want %q", k, got, want)
			}
		}
		ca := deskStr(t, m["created_at"])
		if _, err := time.Parse(time.RFC3339, ca); err != nil || !strings.HasSuffix(ca, "Z") {
			t.Errorf("created_at %q is not an RFC 3339 UTC time", ca)
		}
		if string(m["last_used_at"]) != "null" {
			t.Errorf("last_used_at = %s, want null (never used)", m["last_used_at"])
		}
		if string(m["push"]) != "false" {
			t.Errorf("push = %s, want false", m["push"])
		}
		return m
	}

	t.Run("suspend", func(t *testing.T) {
		r := e.desk("POST", devPath+"/suspend", nil)
		checkDevice(t, r, "suspended")
		suspended = r.Body
	})
	t.Run("suspend-again", func(t *testing.T) {
		r := e.desk("POST", devPath+"/suspend", nil)
		checkDevice(t, r, "suspended")
		if !bytes.Equal(r.Body, suspended) {
			t.Errorf("second suspend answered %s, first %s", r.Body, suspended)
		}
	})
	t.Run("listed-suspended", func(t *testing.T) {
		if st := deskStr(t, proofDeskDevice(t, e, subjectA, p.deviceID)["status"]); st != "suspended" {
			t.Fatalf("listed status = %q", st)
		}
	})
	t.Run("resume", func(t *testing.T) {
		checkDevice(t, e.desk("POST", devPath+"/resume", nil), "active")
	})
	t.Run("resume-again", func(t *testing.T) {
		checkDevice(t, e.desk("POST", devPath+"/resume", nil), "active")
	})
	t.Run("revoke", func(t *testing.T) {
		r := e.desk("DELETE", devPath, nil)
		r.wantStatus(t, http.StatusNoContent)
		if len(r.Body) != 0 {
			t.Errorf("204 with a body: %q", r.Body)
		}
		if st := deskStr(t, proofDeskDevice(t, e, subjectA, p.deviceID)["status"]); st != "revoked" {
			t.Fatalf("listed status after DELETE = %q, want revoked", st)
		}
	})
	t.Run("revoke-again", func(t *testing.T) {
		e.desk("DELETE", devPath, nil).wantStatus(t, http.StatusNoContent)
	})
	t.Run("conflict/suspend-revoked", func(t *testing.T) {
		e.desk("POST", devPath+"/suspend", nil).wantError(t, http.StatusConflict, "conflict")
	})
	t.Run("conflict/resume-revoked", func(t *testing.T) {
		e.desk("POST", devPath+"/resume", nil).wantError(t, http.StatusConflict, "conflict")
	})
	t.Run("still-revoked", func(t *testing.T) {
		if st := deskStr(t, proofDeskDevice(t, e, subjectA, p.deviceID)["status"]); st != "revoked" {
			t.Fatalf("status = %q, want revoked", st)
		}
	})

	t.Run("audit", func(t *testing.T) {
		entries, _ := deskAllAudit(t, e, subjectA)
		counts := map[string]int{}
		for _, en := range entries {
			ev := deskStr(t, en["event"])
			switch ev {
			case "device.suspended", "device.resumed", "device.revoked":
			default:
				continue
			}
			counts[ev]++
			if string(en["actor"]) != `{"type":"operator","id":"desk-1"}` {
				t.Errorf("%s actor = %s, want {\"type\":\"operator\",\"id\":\"desk-1\"}", ev, en["actor"])
			}
			if s := deskStr(t, en["subject"]); s != subjectA {
				t.Errorf("%s subject = %q", ev, s)
			}
			var details map[string]any
			if err := json.Unmarshal(en["details"], &details); err != nil || details["device_id"] != p.deviceID {
				t.Errorf("%s details = %s, want device_id %s", ev, en["details"], p.deviceID)
			}
			deskWantKeys(t, ev+" entry", en, "id", "time", "event", "subject", "actor", "details")
		}
		for _, ev := range []string{"device.suspended", "device.resumed", "device.revoked"} {
			if counts[ev] != 1 {
				t.Errorf("%d %s entries, want exactly 1 (no-op repeats write none)", counts[ev], ev)
			}
		}
	})

	t.Run("audit/actor-is-the-operator-who-acted", func(t *testing.T) {
		q := e.newDevice(subjectA)
		deskAs(t, e, testOperatorKeyTwo, "POST", "/api/v1/desk/devices/"+q.deviceID+"/suspend", nil).wantStatus(t, http.StatusOK)
		entries, _ := deskAllAudit(t, e, subjectA)
		for _, en := range entries {
			var details map[string]any
			_ = json.Unmarshal(en["details"], &details)
			if deskStr(t, en["event"]) == "device.suspended" && details["device_id"] == q.deviceID {
				if string(en["actor"]) != `{"type":"operator","id":"desk-2"}` {
					t.Fatalf("actor = %s, want desk-2", en["actor"])
				}
				return
			}
		}
		t.Fatal("no device.suspended entry for the second device")
	})

	for _, id := range []string{"dev_" + randomJTI(), "dev_x", "nope"} {
		t.Run("not-found/"+id, func(t *testing.T) {
			e.desk("POST", "/api/v1/desk/devices/"+id+"/suspend", nil).wantError(t, http.StatusNotFound, "not_found")
			e.desk("POST", "/api/v1/desk/devices/"+id+"/resume", nil).wantError(t, http.StatusNotFound, "not_found")
			e.desk("DELETE", "/api/v1/desk/devices/"+id, nil).wantError(t, http.StatusNotFound, "not_found")
		})
	}
}

func TestDeskDeviceList(t *testing.T) {
	e := newEnv(t, 1)
	t.Run("empty-is-an-array", func(t *testing.T) {
		r := e.desk("GET", "/api/v1/desk/practitioners/"+subjectC+"/devices", nil)
		r.wantStatus(t, http.StatusOK)
		m := deskRawObject(t, r.Body)
		deskWantKeys(t, "device list", m, "devices")
		if string(m["devices"]) != "[]" {
			t.Fatalf("devices = %s, want []", m["devices"])
		}
	})
	t.Run("invalid-subject", func(t *testing.T) {
		e.desk("GET", "/api/v1/desk/practitioners/810001234566/devices", nil).wantError(t, http.StatusBadRequest, "invalid_request")
		e.desk("GET", "/api/v1/desk/practitioners/abc/devices", nil).wantError(t, http.StatusBadRequest, "invalid_request")
	})
	t.Run("lists-that-practitioner-only", func(t *testing.T) {
		a := e.newDevice(subjectA)
		b := e.newDevice(subjectB)
		r := e.desk("GET", "/api/v1/desk/practitioners/"+subjectA+"/devices", nil)
		r.wantStatus(t, http.StatusOK)
		if !bytes.Contains(r.Body, []byte(a.deviceID)) || bytes.Contains(r.Body, []byte(b.deviceID)) {
			t.Fatalf("A's listing: %s", r.Body)
		}
	})
}

func TestDeskUnknownActivation(t *testing.T) {
	e := newEnv(t, 1)
	for _, id := range []string{"act_" + randomJTI()[:22], "act_x", "nope"} {
		t.Run(id, func(t *testing.T) {
			e.desk("GET", "/api/v1/desk/activations/"+id, nil).wantError(t, http.StatusNotFound, "not_found")
		})
	}
}

func TestDeskAuditPaging(t *testing.T) {
	e := newEnv(t, 1)
	const n = 7
	for i := 0; i < n; i++ {
		e.createActivation(subjectB)
	}
	full, _ := deskGetAuditPage(t, e, "subject="+subjectB+"&limit=200")
	if len(full.Entries) != n || full.Next != nil {
		t.Fatalf("full read: %d entries, next %v; want %d and null", len(full.Entries), full.Next, n)
	}
	var fullIDs []string
	for _, en := range full.Entries {
		fullIDs = append(fullIDs, deskStr(t, deskRawObject(t, en)["id"]))
	}

	var ids []string
	seen := map[string]bool{}
	q := "subject=" + subjectB + "&limit=3"
	pages := 0
	for {
		pages++
		if pages > n+1 {
			t.Fatal("paging does not end")
		}
		p, r := deskGetAuditPage(t, e, q)
		if len(p.Entries) > 3 {
			t.Fatalf("page of %d entries with limit=3", len(p.Entries))
		}
		for _, en := range p.Entries {
			m := deskRawObject(t, en)
			id := deskStr(t, m["id"])
			if seen[id] {
				t.Fatalf("entry %s seen twice", id)
			}
			seen[id] = true
			ids = append(ids, id)
			if deskStr(t, m["subject"]) != subjectB {
				t.Fatalf("entry of another subject: %s", en)
			}
		}
		if p.Next == nil {
			if !bytes.Contains(r.Body, []byte(`"next":null`)) {
				t.Fatalf("last page: next is not null: %s", r.Body)
			}
			break
		}
		if len(p.Entries) != 3 {
			t.Fatalf("a page with next holds %d entries, want 3", len(p.Entries))
		}
		q = "subject=" + subjectB + "&limit=3&before=" + url.QueryEscape(*p.Next)
	}
	if pages != 3 {
		t.Errorf("%d pages, want 3 (3+3+1)", pages)
	}
	if len(ids) != n {
		t.Fatalf("paged through %d entries, want %d", len(ids), n)
	}
	if strings.Join(ids, ",") != strings.Join(fullIDs, ",") {
		t.Fatalf("paged order %v differs from the full read %v", ids, fullIDs)
	}
	for i := 1; i < len(ids); i++ {
		if !deskOlder(deskStreamID(t, ids[i]), deskStreamID(t, ids[i-1])) {
			t.Fatalf("not newest first: %s after %s", ids[i], ids[i-1])
		}
	}
	var times []time.Time
	for _, en := range full.Entries {
		ts := deskStr(t, deskRawObject(t, en)["time"])
		tm, err := time.Parse(time.RFC3339, ts)
		if err != nil || !strings.HasSuffix(ts, "Z") {
			t.Fatalf("time %q is not RFC 3339 UTC", ts)
		}
		times = append(times, tm)
	}
	for i := 1; i < len(times); i++ {
		if times[i].After(times[i-1]) {
			t.Fatalf("times not newest first: %v", times)
		}
	}

	t.Run("default-limit-50", func(t *testing.T) {
		for i := 0; i < 51; i++ {
			e.createActivation(subjectC)
		}
		p, _ := deskGetAuditPage(t, e, "subject="+subjectC)
		if len(p.Entries) != 50 || p.Next == nil {
			t.Fatalf("default page: %d entries, next %v; want 50 and a cursor", len(p.Entries), p.Next)
		}
		p, _ = deskGetAuditPage(t, e, "subject="+subjectC+"&before="+url.QueryEscape(*p.Next))
		if len(p.Entries) != 1 || p.Next != nil {
			t.Fatalf("page after the 50: %d entries, next %v; want 1 and null", len(p.Entries), p.Next)
		}
	})

	t.Run("empty-subject-page", func(t *testing.T) {
		p, r := deskGetAuditPage(t, e, "subject="+subjectA)
		if len(p.Entries) != 0 || p.Next != nil || !bytes.Contains(r.Body, []byte(`"entries":[]`)) {
			t.Fatalf("audit of a practitioner without entries: %s", r.Body)
		}
	})

	for _, q := range []string{"limit=0", "limit=201", "limit=x", "limit=-1", "limit=1.5", "before=garbage", "before=1-x", "before=%3Cscript%3E"} {
		t.Run("invalid/"+q, func(t *testing.T) {
			e.desk("GET", "/api/v1/desk/audit?subject="+subjectB+"&"+q, nil).wantError(t, http.StatusBadRequest, "invalid_request")
		})
	}
	t.Run("ok/limit-1-and-200", func(t *testing.T) {
		p, _ := deskGetAuditPage(t, e, "subject="+subjectB+"&limit=1")
		if len(p.Entries) != 1 || p.Next == nil {
			t.Fatalf("limit=1: %d entries, next %v", len(p.Entries), p.Next)
		}
		deskGetAuditPage(t, e, "subject="+subjectB+"&limit=200")
	})
	t.Run("invalid/missing-subject", func(t *testing.T) {
		e.desk("GET", "/api/v1/desk/audit", nil).wantError(t, http.StatusBadRequest, "invalid_request")
		e.desk("GET", "/api/v1/desk/audit?limit=3", nil).wantError(t, http.StatusBadRequest, "invalid_request")
	})
	t.Run("invalid/bad-subject", func(t *testing.T) {
		e.desk("GET", "/api/v1/desk/audit?subject=810001234566", nil).wantError(t, http.StatusBadRequest, "invalid_request")
		e.desk("GET", "/api/v1/desk/audit?subject=*", nil).wantError(t, http.StatusBadRequest, "invalid_request")
	})
}

// TestDeskAuditIsolation: one practitioner's audit never shows another's entries.
func TestDeskAuditIsolation(t *testing.T) {
	e := newEnv(t, 1)
	a := e.newDevice(subjectA)
	b := e.newDevice(subjectB)
	actB := e.createActivation(subjectB)
	e.desk("POST", "/api/v1/desk/devices/"+b.deviceID+"/suspend", nil).wantStatus(t, http.StatusOK)
	e.desk("DELETE", "/api/v1/desk/devices/"+b.deviceID, nil).wantStatus(t, http.StatusNoContent)
	e.desk("POST", "/api/v1/desk/devices/"+a.deviceID+"/suspend", nil).wantStatus(t, http.StatusOK)

	entriesA, rawA := deskAllAudit(t, e, subjectA)
	if len(entriesA) == 0 {
		t.Fatal("no entries for A")
	}
	for _, en := range entriesA {
		if s := deskStr(t, en["subject"]); s != subjectA {
			t.Errorf("A's audit holds an entry of %s: %v", s, en)
		}
	}
	for _, leak := range []string{subjectB, b.deviceID, actB.ActivationID} {
		if bytes.Contains(rawA, []byte(leak)) {
			t.Errorf("A's audit mentions %q", leak)
		}
	}
	entriesB, _ := deskAllAudit(t, e, subjectB)
	for _, en := range entriesB {
		if s := deskStr(t, en["subject"]); s != subjectB {
			t.Errorf("B's audit holds an entry of %s", s)
		}
	}
	if countOf(e.auditEvents(subjectB), "device.revoked") != 1 || countOf(e.auditEvents(subjectA), "device.revoked") != 0 {
		t.Errorf("revocations: A %v, B %v", e.auditEvents(subjectA), e.auditEvents(subjectB))
	}
}

// TestDeskAuditHoldsNoSecrets: no activation secret, code, proof or push
// token ever appears in the audit, through the API or in Redis.
func TestDeskAuditHoldsNoSecrets(t *testing.T) {
	e := newEnv(t, 1)
	var secrets []string
	addActivation := func(a activation) {
		secrets = append(secrets, a.Secret, a.Code, strings.ReplaceAll(a.Code, "-", ""))
	}

	// Desk activation, enrolled with a push token given at enrolment.
	a1 := e.createActivation(subjectA)
	addActivation(a1)
	p1 := newPhone(t)
	enrolToken := "fcm-enrol-token-" + randomJTI()
	body := p1.enrolBody(t, e, a1)
	body["push"] = map[string]string{"provider": "fcm", "token": enrolToken}
	secrets = append(secrets, enrolToken, body["proof"].(string))
	r := e.enrolWith(e.url(), body)
	r.wantStatus(t, http.StatusCreated)
	p1.deviceID, p1.subject = deskStr(t, deskRawObject(t, r.Body)["device_id"]), subjectA

	// A push token set later.
	putToken := "fcm-put-token-" + randomJTI()
	secrets = append(secrets, putToken)
	putBody := jsonBody(t, map[string]string{"provider": "fcm", "token": putToken})
	e.call(e.url(), p1, "PUT", "/api/v1/device/push-token", putBody).wantStatus(t, http.StatusNoContent)

	// An IdP activation, with a failed attempt (wrong secret) and one with the code.
	r = deskClientActivation(t, e, deskBasic("idp-act", testActClientSec), subjectA)
	r.wantStatus(t, http.StatusCreated)
	var a2 activation
	if err := json.Unmarshal(r.Body, &a2); err != nil {
		t.Fatal(err)
	}
	q, _ := parseURIQuery(a2.EnrolURI)
	a2.Secret = q.Get("s")
	addActivation(a2)
	p2 := newPhone(t)
	wrong := p2.enrolBody(t, e, a2)
	wrongSecret := a2.Secret[:len(a2.Secret)-2] + "AA"
	if wrongSecret == a2.Secret {
		wrongSecret = a2.Secret[:len(a2.Secret)-2] + "BB"
	}
	wrong["secret"] = wrongSecret
	secrets = append(secrets, wrongSecret)
	e.enrolWith(e.url(), wrong).wantError(t, http.StatusBadRequest, "invalid_grant")
	withCode := p2.enrolBody(t, e, a2)
	delete(withCode, "secret")
	withCode["code"] = strings.ToLower(a2.Code)
	secrets = append(secrets, withCode["proof"].(string))
	e.enrolWith(e.url(), withCode).wantStatus(t, http.StatusCreated)

	// Lifecycle changes: revocation clears the push token.
	e.desk("POST", "/api/v1/desk/devices/"+p1.deviceID+"/suspend", nil).wantStatus(t, http.StatusOK)
	e.desk("DELETE", "/api/v1/desk/devices/"+p1.deviceID, nil).wantStatus(t, http.StatusNoContent)

	_, raw := deskAllAudit(t, e, subjectA)
	events := e.auditEvents(subjectA)
	for _, ev := range []string{"activation.created", "activation.failed", "device.enrolled", "device.suspended", "device.revoked"} {
		if countOf(events, ev) == 0 {
			t.Errorf("no %s entry: %v", ev, events)
		}
	}
	check := func(where string, data []byte) {
		t.Helper()
		for _, s := range secrets {
			if s != "" && bytes.Contains(data, []byte(s)) {
				t.Errorf("%s holds a secret value %q", where, s)
			}
		}
	}
	check("the audit API", raw)

	// And the streams in Redis.
	ctx := context.Background()
	iter := e.rdb.Scan(ctx, 0, e.prefix+"*", 1000).Iterator()
	streams := 0
	for iter.Next(ctx) {
		k := iter.Val()
		if typ, _ := e.rdb.Type(ctx, k).Result(); typ != "stream" {
			continue
		}
		streams++
		msgs, err := e.rdb.XRange(ctx, k, "-", "+").Result()
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range msgs {
			check("stream "+k, jsonBody(t, m.Values))
		}
	}
	if err := iter.Err(); err != nil {
		t.Fatal(err)
	}
	if streams == 0 {
		t.Fatal("no audit stream found in Redis")
	}
}
