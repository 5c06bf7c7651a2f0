package api

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/ecps-sante/ecps/enrollment"
)

func TestEnrolOK(t *testing.T) {
	e := newEnv(t, 1)
	a := e.createActivation(subjectA)
	p := newPhone(t)
	r := e.enrolWith(e.url(), p.enrolBody(t, e, a))
	r.wantStatus(t, http.StatusCreated)
	m := r.json(t)
	if m["subject"] != subjectA || !strings.HasPrefix(m["device_id"].(string), "dev_") {
		t.Fatalf("enrol answer %s", r.Body)
	}
	if _, err := time.Parse(time.RFC3339, m["created_at"].(string)); err != nil {
		t.Fatalf("created_at: %v", err)
	}
	if got := e.activationStatus(a.ActivationID); got != "used" {
		t.Fatalf("activation status = %s, want used", got)
	}
	act := e.desk("GET", "/api/v1/desk/activations/"+a.ActivationID, nil).json(t)
	if act["device_id"] != m["device_id"] {
		t.Fatalf("activation device_id = %v", act["device_id"])
	}
	if strings.Contains(string(e.desk("GET", "/api/v1/desk/activations/"+a.ActivationID, nil).Body), a.Secret) {
		t.Fatal("activation read shows the secret")
	}
	events := e.auditEvents(subjectA)
	if countOf(events, "device.enrolled") != 1 || countOf(events, "activation.created") != 1 {
		t.Fatalf("audit events %v", events)
	}
	if got := e.metric(0, "enrolments", "ok"); got != 1 {
		t.Fatalf("enrolments{ok} = %v", got)
	}
}

func TestEnrolWithCode(t *testing.T) {
	e := newEnv(t, 1)
	a := e.createActivation(subjectA)
	p := newPhone(t)
	body := p.enrolBody(t, e, a)
	delete(body, "secret")
	// Typed input: lower case, spaces instead of dashes.
	body["code"] = strings.ToLower(strings.ReplaceAll(a.Code, "-", " "))
	e.enrolWith(e.url(), body).wantStatus(t, http.StatusCreated)
}

func TestEnrolWrongSecretUsesAnAttempt(t *testing.T) {
	e := newEnv(t, 1)
	a := e.createActivation(subjectA)
	p := newPhone(t)
	body := p.enrolBody(t, e, a)
	body["secret"] = base64.RawURLEncoding.EncodeToString(make([]byte, 16))
	e.enrolWith(e.url(), body).wantError(t, http.StatusBadRequest, "invalid_grant")
	if got := e.activationStatus(a.ActivationID); got != "pending" {
		t.Fatalf("status after one wrong secret = %s", got)
	}
	if n := countOf(e.auditEvents(subjectA), "activation.failed"); n != 1 {
		t.Fatalf("activation.failed entries = %d", n)
	}
	// The right secret still works, and the key was not kept by the failure.
	e.enrol(p, a)
}

func TestEnrolWrongCode(t *testing.T) {
	e := newEnv(t, 1)
	a := e.createActivation(subjectA)
	body := newPhone(t).enrolBody(t, e, a)
	delete(body, "secret")
	body["code"] = "0000-0000-00"
	e.enrolWith(e.url(), body).wantError(t, http.StatusBadRequest, "invalid_grant")
}

func TestEnrolAttemptsExhausted(t *testing.T) {
	e := newEnv(t, 1)
	a := e.createActivation(subjectA)
	for i := 1; i <= 5; i++ {
		body := newPhone(t).enrolBody(t, e, a)
		body["secret"] = "wrong-secret-" + string(rune('a'+i))
		e.enrolWith(e.url(), body).wantError(t, http.StatusBadRequest, "invalid_grant")
	}
	if got := e.activationStatus(a.ActivationID); got != "destroyed" {
		t.Fatalf("status after 5 wrong = %s", got)
	}
	// Even the right secret is now refused.
	e.enrolWith(e.url(), newPhone(t).enrolBody(t, e, a)).wantError(t, http.StatusGone, "gone")
	events := e.auditEvents(subjectA)
	if countOf(events, "activation.failed") != 5 || countOf(events, "activation.destroyed") != 1 {
		t.Fatalf("audit %v", events)
	}
}

// Wrong attempts racing each other each count: 12 at once against 5 allowed
// give exactly 5 invalid_grant and 7 gone, and exactly 5 failures audited.
func TestEnrolWrongAttemptsRacingCountEach(t *testing.T) {
	e := newEnv(t, 2)
	a := e.createActivation(subjectA)
	const n = 12
	bodies := make([]map[string]any, n)
	for i := range bodies {
		bodies[i] = newPhone(t).enrolBody(t, e, a)
		bodies[i]["secret"] = "wrong"
	}
	statuses := make([]int, n)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			statuses[i] = e.enrolWith(e.replicas[i%2].http.URL, bodies[i]).Status
		}()
	}
	wg.Wait()
	if c := countInts(statuses, 400); c != 5 {
		t.Fatalf("400s = %d, want 5 (statuses %v)", c, statuses)
	}
	if c := countInts(statuses, 410); c != n-5 {
		t.Fatalf("410s = %d, want %d", c, n-5)
	}
	if c := countOf(e.auditEvents(subjectA), "activation.failed"); c != 5 {
		t.Fatalf("activation.failed = %d", c)
	}
}

// Many phones racing to use one activation with its right secret: exactly one wins.
func TestEnrolRacingRightSecretOneWins(t *testing.T) {
	e := newEnv(t, 2)
	a := e.createActivation(subjectA)
	const n = 20
	bodies := make([]map[string]any, n)
	for i := range bodies {
		bodies[i] = newPhone(t).enrolBody(t, e, a)
	}
	statuses := make([]int, n)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			statuses[i] = e.enrolWith(e.replicas[i%2].http.URL, bodies[i]).Status
		}()
	}
	wg.Wait()
	if c := countInts(statuses, 201); c != 1 {
		t.Fatalf("201s = %d, want 1 (%v)", c, statuses)
	}
	if c := countInts(statuses, 410); c != n-1 {
		t.Fatalf("410s = %d, want %d (%v)", c, n-1, statuses)
	}
	r := e.desk("GET", "/api/v1/desk/practitioners/"+subjectA+"/devices", nil)
	var list struct{ Devices []map[string]any }
	_ = json.Unmarshal(r.Body, &list)
	if len(list.Devices) != 1 {
		t.Fatalf("devices = %d, want 1", len(list.Devices))
	}
}

func countInts(list []int, v int) int {
	n := 0
	for _, x := range list {
		if x == v {
			n++
		}
	}
	return n
}

func TestEnrolExpired(t *testing.T) {
	e := newEnv(t, 1, func(o *enrollment.Options) { o.ActivationTTL = 2 * time.Minute })
	a := e.createActivation(subjectA)
	e.clock.Advance(2*time.Minute + time.Second)
	p := newPhone(t)
	e.enrolWith(e.url(), p.enrolBody(t, e, a)).wantError(t, http.StatusGone, "gone")
	if got := e.activationStatus(a.ActivationID); got != "expired" {
		t.Fatalf("status = %s, want expired", got)
	}
	// A wrong secret on an expired activation uses nothing and says gone.
	body := p.enrolBody(t, e, a)
	body["secret"] = "wrong"
	e.enrolWith(e.url(), body).wantError(t, http.StatusGone, "gone")
}

func TestEnrolReused(t *testing.T) {
	e := newEnv(t, 1)
	a := e.createActivation(subjectA)
	e.enrol(newPhone(t), a)
	e.enrolWith(e.url(), newPhone(t).enrolBody(t, e, a)).wantError(t, http.StatusGone, "gone")
}

func TestEnrolUnknownActivation(t *testing.T) {
	e := newEnv(t, 1)
	a := e.createActivation(subjectA)
	body := newPhone(t).enrolBody(t, e, a)
	body["activation_id"] = "act_AAAAAAAAAAAAAAAAAAAAAA"
	e.enrolWith(e.url(), body).wantError(t, http.StatusBadRequest, "invalid_grant")
	body["activation_id"] = "not-an-id{}"
	e.enrolWith(e.url(), body).wantError(t, http.StatusBadRequest, "invalid_grant")
}

func TestEnrolDeviceLimit(t *testing.T) {
	e := newEnv(t, 1, func(o *enrollment.Options) { o.DevicesPerSubject = 2 })
	first := e.newDevice(subjectA)
	second := e.newDevice(subjectA)
	// Creating a third activation is refused at the limit...
	e.desk("POST", "/api/v1/desk/activations", map[string]string{"subject": subjectA}).wantError(t, http.StatusConflict, "conflict")

	// ...and an activation made before the limit was reached cannot pass it.
	e2 := newEnvOn(t, e.rdb, e.prefix, 1, func(o *enrollment.Options) { o.DevicesPerSubject = 3 })
	a := e2.createActivation(subjectA)
	e2.newDevice(subjectA)
	p := newPhone(t)
	e.enrolWith(e.url(), p.enrolBody(t, e, a)).wantError(t, http.StatusConflict, "conflict")
	// The 409 leaves the activation usable: with three devices against a
	// limit of two, revoking one is not enough; revoking two is.
	if got := e.activationStatus(a.ActivationID); got != "pending" {
		t.Fatalf("status after limit = %s", got)
	}
	e.desk("DELETE", "/api/v1/desk/devices/"+first.deviceID, nil).wantStatus(t, http.StatusNoContent)
	e.enrolWith(e.url(), p.enrolBody(t, e, a)).wantError(t, http.StatusConflict, "conflict")
	e.desk("DELETE", "/api/v1/desk/devices/"+second.deviceID, nil).wantStatus(t, http.StatusNoContent)
	e.enrol(p, a)
}

func TestEnrolDuplicateKey(t *testing.T) {
	e := newEnv(t, 1)
	p := e.newDevice(subjectA)
	// The same key, for another practitioner too, is refused, and the
	// activation stays usable.
	a := e.createActivation(subjectB)
	e.enrolWith(e.url(), p.enrolBody(t, e, a)).wantError(t, http.StatusConflict, "conflict")
	if got := e.activationStatus(a.ActivationID); got != "pending" {
		t.Fatalf("status after duplicate key = %s", got)
	}
	// Even after the device is revoked, its key is never enrolled again.
	e.desk("DELETE", "/api/v1/desk/devices/"+p.deviceID, nil).wantStatus(t, http.StatusNoContent)
	e.enrolWith(e.url(), p.enrolBody(t, e, a)).wantError(t, http.StatusConflict, "conflict")
	e.enrol(newPhone(t), a)
}

func TestEnrolKeyNotOnCurve(t *testing.T) {
	e := newEnv(t, 1)
	a := e.createActivation(subjectA)
	p := newPhone(t)
	body := p.enrolBody(t, e, a)
	var jwk map[string]string
	_ = json.Unmarshal(p.jwk(), &jwk)
	y, _ := base64.RawURLEncoding.DecodeString(jwk["y"])
	y[31] ^= 1
	jwk["y"] = base64.RawURLEncoding.EncodeToString(y)
	body["public_key"] = jwk
	e.enrolWith(e.url(), body).wantError(t, http.StatusBadRequest, "invalid_request")
	// A shape error uses no attempt.
	e.enrol(p, a)
	if n := countOf(e.auditEvents(subjectA), "activation.failed"); n != 0 {
		t.Fatalf("attempts used by a bad key: %d", n)
	}
}

func TestEnrolBadKeys(t *testing.T) {
	e := newEnv(t, 1)
	a := e.createActivation(subjectA)
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	p384JWK, _ := jose.JSONWebKey{Key: &p384.PublicKey}.MarshalJSON()
	cases := map[string]any{
		"fail/p384":        json.RawMessage(p384JWK),
		"fail/not-object":  "a string",
		"fail/oct":         map[string]string{"kty": "oct", "k": "AAAA"},
		"fail/missing-x":   map[string]string{"kty": "EC", "crv": "P-256", "y": "AAAA"},
		"fail/private-key": nil, // filled below
	}
	p := newPhone(t)
	var priv map[string]string
	_ = json.Unmarshal(p.jwk(), &priv)
	d, err := p.key.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	priv["d"] = base64.RawURLEncoding.EncodeToString(d)
	cases["fail/private-key"] = priv
	for name, key := range cases {
		t.Run(name, func(t *testing.T) {
			body := p.enrolBody(t, e, a)
			body["public_key"] = key
			e.enrolWith(e.url(), body).wantError(t, http.StatusBadRequest, "invalid_request")
		})
	}
	if got := e.activationStatus(a.ActivationID); got != "pending" {
		t.Fatalf("status = %s", got)
	}
}

func TestEnrolBadProofLeavesActivationUsable(t *testing.T) {
	e := newEnv(t, 1)
	a := e.createActivation(subjectA)
	p := newPhone(t)
	other := newPhone(t)
	cases := map[string]string{
		"fail/signed-by-another-key": other.enrolProof(t, a.ActivationID, e.clock.Now()),
		"fail/other-activation":      p.enrolProof(t, "act_BBBBBBBBBBBBBBBBBBBBBB", e.clock.Now()),
		"fail/stale-iat":             p.enrolProof(t, a.ActivationID, e.clock.Now().Add(-2*time.Minute)),
		"fail/typ-request-proof": p.sign(t, "ecps-proof+jwt", "", map[string]any{
			"activation_id": a.ActivationID, "iat": e.clock.Now().Unix()}),
		"fail/not-a-jws": "abc",
	}
	for name, proof := range cases {
		t.Run(name, func(t *testing.T) {
			body := p.enrolBody(t, e, a)
			body["proof"] = proof
			e.enrolWith(e.url(), body).wantError(t, http.StatusBadRequest, "invalid_request")
		})
	}
	e.enrol(p, a)
}

func TestEnrolShapeErrorsUseNoAttempt(t *testing.T) {
	e := newEnv(t, 1)
	a := e.createActivation(subjectA)
	p := newPhone(t)
	mutations := map[string]func(map[string]any){
		"fail/missing-secret-and-code": func(b map[string]any) { delete(b, "secret") },
		"fail/secret-and-code":         func(b map[string]any) { b["code"] = a.Code },
		"fail/missing-activation":      func(b map[string]any) { delete(b, "activation_id") },
		"fail/missing-key":             func(b map[string]any) { delete(b, "public_key") },
		"fail/missing-proof":           func(b map[string]any) { delete(b, "proof") },
		"fail/platform-windows":        func(b map[string]any) { b["platform"] = "windows" },
		"fail/missing-model":           func(b map[string]any) { delete(b, "model") },
		"fail/model-control-char":      func(b map[string]any) { b["model"] = "Pixel\u0007" },
		"fail/push-provider-apns":      func(b map[string]any) { b["push"] = map[string]string{"provider": "apns", "token": "x"} },
		"fail/push-empty-token":        func(b map[string]any) { b["push"] = map[string]string{"provider": "fcm", "token": ""} },
		"fail/secret-wrong-type":       func(b map[string]any) { b["secret"] = 42 },
	}
	for name, mutate := range mutations {
		t.Run(name, func(t *testing.T) {
			body := p.enrolBody(t, e, a)
			body["secret"] = "wrong-but-shape-comes-first"
			mutate(body)
			e.enrolWith(e.url(), body).wantError(t, http.StatusBadRequest, "invalid_request")
		})
	}
	t.Run("fail/malformed-json", func(t *testing.T) {
		do(t, e.url(), "POST", "/api/v1/enrollments", []byte(`{"activation_id":`), nil).wantError(t, http.StatusBadRequest, "invalid_request")
	})
	t.Run("fail/trailing-data", func(t *testing.T) {
		do(t, e.url(), "POST", "/api/v1/enrollments", []byte(`{} {}`), nil).wantError(t, http.StatusBadRequest, "invalid_request")
	})
	if n := countOf(e.auditEvents(subjectA), "activation.failed"); n != 0 {
		t.Fatalf("shape errors used %d attempts", n)
	}
	body := p.enrolBody(t, e, a)
	body["push"] = map[string]string{"provider": "fcm", "token": "fcm-token-1"}
	e.enrolWith(e.url(), body).wantStatus(t, http.StatusCreated)
}

func TestEnrolDeviceObject(t *testing.T) {
	e := newEnv(t, 1)
	a := e.createActivation(subjectA)
	p := newPhone(t)
	body := p.enrolBody(t, e, a)
	body["platform"] = "ios"
	body["push"] = map[string]string{"provider": "fcm", "token": "tok-secret-123"}
	e.enrolWith(e.url(), body).wantStatus(t, http.StatusCreated)
	r := e.desk("GET", "/api/v1/desk/practitioners/"+subjectA+"/devices", nil)
	r.wantStatus(t, http.StatusOK)
	if strings.Contains(string(r.Body), "tok-secret-123") {
		t.Fatal("the push token is shown")
	}
	var list struct{ Devices []map[string]any }
	_ = json.Unmarshal(r.Body, &list)
	d := list.Devices[0]
	want := map[string]any{"subject": subjectA, "status": "active", "platform": "ios", "model": "Pixel 9",
		"app_version": "1.2.3", "push": true, "last_used_at": nil}
	for k, v := range want {
		if d[k] != v {
			t.Errorf("%s = %v, want %v", k, d[k], v)
		}
	}
	for _, k := range []string{"device_id", "created_at"} {
		if _, ok := d[k]; !ok {
			t.Errorf("missing %s", k)
		}
	}
}

func TestActivationCreatedByIdPClient(t *testing.T) {
	e := newEnv(t, 1)
	basic := func(id, secret string) map[string]string {
		return map[string]string{"Authorization": "Basic " + base64.StdEncoding.EncodeToString([]byte(id+":"+secret))}
	}
	b := jsonBody(t, map[string]string{"subject": subjectC})
	r := do(t, e.url(), "POST", "/api/v1/activations", b, basic("idp-act", testActClientSec))
	r.wantStatus(t, http.StatusCreated)
	do(t, e.url(), "POST", "/api/v1/activations", b, basic("idp", testClientSecret)).wantError(t, http.StatusForbidden, "forbidden")
	do(t, e.url(), "POST", "/api/v1/activations", b, basic("idp-act", "nope")).wantError(t, http.StatusUnauthorized, "invalid_client")
	// The audit names the client.
	if !strings.Contains(string(e.desk("GET", "/api/v1/desk/audit?subject="+subjectC, nil).Body), `"actor":{"type":"client","id":"idp-act"}`) {
		t.Fatal("audit entry does not name the client")
	}
}
