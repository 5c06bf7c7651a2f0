package api

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"image/png"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	qr "github.com/piglig/go-qr"

	"github.com/ecps-sante/ecps/challenge"
	"github.com/ecps-sante/ecps/enrollment"
)

func basicAuth(id, secret string) map[string]string {
	return map[string]string{"Authorization": "Basic " + base64.StdEncoding.EncodeToString([]byte(id+":"+secret))}
}

// idp sends an IdP request as client "idp" to replica i.
func (e *env) idp(i int, method, path string, body any) response {
	e.t.Helper()
	var b []byte
	if body != nil {
		b = jsonBody(e.t, body)
	}
	return do(e.t, e.replicas[i].http.URL, method, path, b, basicAuth("idp", testClientSecret))
}

type created struct {
	AuthReqID          string `json:"auth_req_id"`
	ExpiresIn          int    `json:"expires_in"`
	Interval           int    `json:"interval"`
	VerificationNumber string `json:"verification_number"`
	LoginURL           string `json:"login_url"`
}

func (e *env) createAuth(body map[string]any) created {
	e.t.Helper()
	r := e.idp(0, "POST", "/api/v1/authentications", body)
	r.wantStatus(e.t, http.StatusCreated)
	var c created
	if err := json.Unmarshal(r.Body, &c); err != nil {
		e.t.Fatal(err)
	}
	return c
}

func (e *env) poll(i int, c created, query string) response {
	e.t.Helper()
	return e.idp(i, "GET", "/api/v1/authentications/"+c.AuthReqID+query, nil)
}

// challengeOf returns the phone's view of the challenge of a push login.
func (e *env) pendingChallenge(p *phone) map[string]any {
	e.t.Helper()
	r := e.call(e.url(), p, "GET", "/api/v1/device/challenges", nil)
	r.wantStatus(e.t, http.StatusOK)
	var list struct{ Challenges []map[string]any }
	_ = json.Unmarshal(r.Body, &list)
	if len(list.Challenges) == 0 {
		e.t.Fatalf("no pending challenge: %s", r.Body)
	}
	return list.Challenges[len(list.Challenges)-1]
}

// decision signs a decision for a challenge object.
func (p *phone) decision(t testing.TB, now time.Time, ch map[string]any, decision, number string) string {
	claims := map[string]any{"challenge_id": ch["challenge_id"], "nonce": ch["nonce"], "decision": decision,
		"uv": "fingerprint", "iat": now.Unix()}
	if number != "" {
		claims["number"] = number
	}
	return p.sign(t, "ecps-decision+jwt", p.deviceID, claims)
}

func (e *env) respond(i int, p *phone, challengeID, jws string) response {
	e.t.Helper()
	path := "/api/v1/device/challenges/" + challengeID + "/response"
	return e.call(e.replicas[i].http.URL, p, "POST", path, jsonBody(e.t, map[string]string{"response": jws}))
}

// newPushDevice enrols a phone with a push token.
func (e *env) newPushDevice(subject string) *phone {
	e.t.Helper()
	p := e.newDevice(subject)
	e.call(e.url(), p, "PUT", "/api/v1/device/push-token", jsonBody(e.t, map[string]string{"provider": "fcm", "token": "tok-" + p.deviceID})).
		wantStatus(e.t, http.StatusNoContent)
	return p
}

var idRE = regexp.MustCompile(`^[A-Za-z0-9_-]{16}\.[A-Za-z0-9_-]{22}$`)

func TestLoginApprovedOnce(t *testing.T) {
	e := newEnv(t, 1)
	p := e.newPushDevice(subjectA)
	c := e.createAuth(map[string]any{"login_hint": subjectA, "binding_message": "Connexion à Ameli Pro"})
	if !idRE.MatchString(c.AuthReqID) || c.ExpiresIn != 120 || c.Interval != 2 || len(c.VerificationNumber) != 2 || c.LoginURL != "" {
		t.Fatalf("created %+v", c)
	}
	job := <-e.pushes.Jobs()
	if job.DeviceID != p.deviceID || !strings.HasPrefix(job.ChallengeID, "chl_") || job.Token != "tok-"+p.deviceID {
		t.Fatalf("push job %+v", job)
	}
	e.poll(0, c, "").wantError(t, http.StatusBadRequest, "authorization_pending")

	ch := e.pendingChallenge(p)
	if ch["challenge_id"] != job.ChallengeID || ch["client_name"] != "Test IdP" || ch["binding_message"] != "Connexion à Ameli Pro" ||
		ch["number_digits"] != float64(2) {
		t.Fatalf("challenge %v", ch)
	}
	one := e.call(e.url(), p, "GET", "/api/v1/device/challenges/"+job.ChallengeID, nil)
	one.wantStatus(t, http.StatusOK)
	if strings.Contains(string(one.Body), `"`+c.VerificationNumber+`"`) || strings.Contains(string(one.Body), "verification") {
		t.Fatalf("the challenge tells the number: %s", one.Body)
	}
	e.respond(0, p, job.ChallengeID, p.decision(t, e.clock.Now(), ch, "approve", c.VerificationNumber)).wantStatus(t, http.StatusNoContent)

	e.clock.Advance(3 * time.Second)
	r := e.poll(0, c, "")
	r.wantStatus(t, http.StatusOK)
	m := r.json(t)
	amr, _ := json.Marshal(m["amr"])
	if m["status"] != "approved" || m["sub"] != subjectA || m["device_id"] != p.deviceID || string(amr) != `["hwk","mfa","fpt"]` {
		t.Fatalf("result %s", r.Body)
	}
	if at, _ := m["auth_time"].(float64); int64(at) != e.clock.Now().Add(-3*time.Second).Unix() {
		t.Fatalf("auth_time %v", m["auth_time"])
	}
	e.clock.Advance(3 * time.Second)
	e.poll(0, c, "").wantError(t, http.StatusBadRequest, "invalid_grant")
	e.poll(0, c, "").wantError(t, http.StatusBadRequest, "invalid_grant") // whatever the interval
	events := e.auditEvents(subjectA)
	if countOf(events, "authentication.created") != 1 || countOf(events, "authentication.approved") != 1 {
		t.Fatalf("audit %v", events)
	}
	// Decided: no longer pending for the phone.
	r = e.call(e.url(), p, "GET", "/api/v1/device/challenges", nil)
	if !strings.Contains(string(r.Body), `"challenges":[]`) {
		t.Fatalf("still pending: %s", r.Body)
	}
	e.call(e.url(), p, "GET", "/api/v1/device/challenges/"+job.ChallengeID, nil).wantError(t, http.StatusConflict, "conflict")
}

func TestLoginNoBindingMessageIsNull(t *testing.T) {
	e := newEnv(t, 1)
	p := e.newDevice(subjectA) // no push token: the phone polls
	e.createAuth(map[string]any{"login_hint": subjectA})
	ch := e.pendingChallenge(p)
	if v, ok := ch["binding_message"]; !ok || v != nil {
		t.Fatalf("binding_message = %v (present %v), want null", v, ok)
	}
	select {
	case j := <-e.pushes.Jobs():
		t.Fatalf("pushed to a device without a token: %+v", j)
	default:
	}
}

func TestLoginDenials(t *testing.T) {
	cases := []struct {
		name, decision, number, reason string
	}{
		{"wrong_number", "approve", "wrong", "wrong_number"},
		{"denied", "deny", "", "denied"},
		{"fraud", "fraud", "", "fraud"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, 1)
			p := e.newDevice(subjectA)
			c := e.createAuth(map[string]any{"login_hint": subjectA})
			ch := e.pendingChallenge(p)
			number := tc.number
			if number == "wrong" {
				number = "00"
				if c.VerificationNumber == "00" {
					number = "01"
				}
			}
			decision := p.decision(t, e.clock.Now(), ch, tc.decision, number)
			e.respond(0, p, ch["challenge_id"].(string), decision).wantStatus(t, http.StatusNoContent)
			// The same decision sent again (a lost reply) is counted once.
			e.respond(0, p, ch["challenge_id"].(string), decision).wantStatus(t, http.StatusNoContent)
			if n := e.metric(0, "decisions", tc.reason); n != 1 {
				t.Fatalf("ecps_decisions_total{outcome=%q} = %v, want 1", tc.reason, n)
			}
			r := e.poll(0, c, "")
			r.wantError(t, http.StatusBadRequest, "access_denied")
			if reason := r.json(t)["reason"]; reason != tc.reason {
				t.Fatalf("reason = %v, want %s", reason, tc.reason)
			}
			events := e.auditEvents(subjectA)
			if countOf(events, "authentication.denied") != 1 {
				t.Fatalf("audit %v", events)
			}
			if tc.reason == "fraud" {
				if countOf(events, "fraud.reported") != 1 {
					t.Fatalf("no fraud report: %v", events)
				}
				// Pushes are blocked: the next login is refused with Retry-After.
				r := e.idp(0, "POST", "/api/v1/authentications", map[string]any{"login_hint": subjectA})
				r.wantError(t, http.StatusTooManyRequests, "too_many_requests")
				if ra := r.Header.Get("Retry-After"); ra == "" || ra == "0" {
					t.Fatalf("Retry-After = %q", ra)
				}
				if countOf(e.auditEvents(subjectA), "limit.hit") != 1 {
					t.Fatal("limit hit not audited")
				}
			}
		})
	}
}

func TestDecisionOnlyOnce(t *testing.T) {
	e := newEnv(t, 1)
	p := e.newDevice(subjectA)
	c := e.createAuth(map[string]any{"login_hint": subjectA})
	ch := e.pendingChallenge(p)
	id := ch["challenge_id"].(string)
	e.respond(0, p, id, p.decision(t, e.clock.Now(), ch, "approve", c.VerificationNumber)).wantStatus(t, http.StatusNoContent)
	e.respond(0, p, id, p.decision(t, e.clock.Now(), ch, "deny", "")).wantError(t, http.StatusConflict, "conflict")
	if a, d := e.metric(0, "decisions", "approved"), e.metric(0, "decisions", "denied"); a != 1 || d != 0 {
		t.Fatalf("ecps_decisions_total approved %v denied %v, want 1 and 0", a, d)
	}
}

func TestDecisionAfterCancelIsConflict(t *testing.T) {
	e := newEnv(t, 1)
	p := e.newDevice(subjectA)
	c := e.createAuth(map[string]any{"login_hint": subjectA})
	ch := e.pendingChallenge(p)
	e.idp(0, "DELETE", "/api/v1/authentications/"+c.AuthReqID, nil).wantStatus(t, http.StatusNoContent)
	e.respond(0, p, ch["challenge_id"].(string), p.decision(t, e.clock.Now(), ch, "approve", c.VerificationNumber)).
		wantError(t, http.StatusConflict, "conflict")
	r := e.poll(0, c, "")
	r.wantError(t, http.StatusBadRequest, "access_denied")
	if r.json(t)["reason"] != "cancelled" {
		t.Fatalf("reason %s", r.Body)
	}
	if countOf(e.auditEvents(subjectA), "authentication.cancelled") != 1 {
		t.Fatal("cancel not audited")
	}
	// DELETE again: nothing to cancel, still 204.
	e.idp(0, "DELETE", "/api/v1/authentications/"+c.AuthReqID, nil).wantStatus(t, http.StatusNoContent)
}

func TestCancelUnknownOrForeignIsInvalidGrant(t *testing.T) {
	e := newEnv(t, 1)
	e.newDevice(subjectA)
	c := e.createAuth(map[string]any{"login_hint": subjectA})
	e.idp(0, "DELETE", "/api/v1/authentications/AAAAAAAAAAAAAAAA.AAAAAAAAAAAAAAAAAAAAAA", nil).wantError(t, http.StatusBadRequest, "invalid_grant")
	do(t, e.url(), "DELETE", "/api/v1/authentications/"+c.AuthReqID, nil, basicAuth("idp-2", testClientSecret2)).
		wantError(t, http.StatusBadRequest, "invalid_grant")
	e.poll(0, c, "").wantError(t, http.StatusBadRequest, "authorization_pending")
}

func TestDecisionExpiredIsGone(t *testing.T) {
	e := newEnv(t, 1)
	p := e.newDevice(subjectA)
	c := e.createAuth(map[string]any{"login_hint": subjectA, "requested_expiry": 30})
	ch := e.pendingChallenge(p)
	e.clock.Advance(31 * time.Second)
	e.respond(0, p, ch["challenge_id"].(string), p.decision(t, e.clock.Now(), ch, "approve", c.VerificationNumber)).
		wantError(t, http.StatusGone, "gone")
	e.poll(0, c, "").wantError(t, http.StatusBadRequest, "expired_token")
	e.call(e.url(), p, "GET", "/api/v1/device/challenges/"+ch["challenge_id"].(string), nil).wantError(t, http.StatusGone, "gone")
}

func TestDecisionRejected(t *testing.T) {
	e := newEnv(t, 1)
	p := e.newDevice(subjectA)
	other := e.newDevice(subjectA) // same practitioner, another key
	c := e.createAuth(map[string]any{"login_hint": subjectA})
	ch := e.pendingChallenge(p)
	id := ch["challenge_id"].(string)
	now := e.clock.Now()
	withClaims := func(mutate func(map[string]any)) string {
		claims := map[string]any{"challenge_id": id, "nonce": ch["nonce"], "decision": "approve", "number": c.VerificationNumber, "uv": "pin", "iat": now.Unix()}
		mutate(claims)
		return p.sign(t, "ecps-decision+jwt", p.deviceID, claims)
	}
	grant := map[string]string{
		"fail/signed-by-another-device": other.sign(t, "ecps-decision+jwt", p.deviceID, map[string]any{"challenge_id": id, "nonce": ch["nonce"], "decision": "approve", "number": c.VerificationNumber, "uv": "pin", "iat": now.Unix()}),
		"fail/kid-of-another-device":    p.sign(t, "ecps-decision+jwt", other.deviceID, map[string]any{"challenge_id": id, "nonce": ch["nonce"], "decision": "approve", "number": c.VerificationNumber, "uv": "pin", "iat": now.Unix()}),
		"fail/nonce":                    withClaims(func(m map[string]any) { m["nonce"] = "other-nonce" }),
		"fail/challenge-id":             withClaims(func(m map[string]any) { m["challenge_id"] = "chl_AAAAAAAAAAAAAAAA" }),
		"fail/stale-iat":                withClaims(func(m map[string]any) { m["iat"] = now.Add(-2 * time.Minute).Unix() }),
		"fail/typ-proof":                p.sign(t, "ecps-proof+jwt", p.deviceID, map[string]any{"challenge_id": id, "nonce": ch["nonce"], "decision": "approve", "number": c.VerificationNumber, "uv": "pin", "iat": now.Unix()}),
		"fail/not-a-jws":                "garbage",
	}
	for name, jws := range grant {
		t.Run(name, func(t *testing.T) {
			e.respond(0, p, id, jws).wantError(t, http.StatusBadRequest, "invalid_grant")
		})
	}
	shape := map[string]string{
		"fail/approve-without-number": withClaims(func(m map[string]any) { delete(m, "number") }),
		"fail/unknown-decision":       withClaims(func(m map[string]any) { m["decision"] = "maybe" }),
		"fail/bad-uv":                 withClaims(func(m map[string]any) { m["uv"] = "retina" }),
		"fail/empty-response":         "",
	}
	for name, jws := range shape {
		t.Run(name, func(t *testing.T) {
			e.respond(0, p, id, jws).wantError(t, http.StatusBadRequest, "invalid_request")
		})
	}
	// None of these decided anything.
	e.respond(0, p, id, p.decision(t, now, ch, "approve", c.VerificationNumber)).wantStatus(t, http.StatusNoContent)
}

func TestAnotherPractitionersChallengeIsNotFound(t *testing.T) {
	e := newEnv(t, 1)
	a := e.newDevice(subjectA)
	b := e.newDevice(subjectB)
	c := e.createAuth(map[string]any{"login_hint": subjectA})
	ch := e.pendingChallenge(a)
	id := ch["challenge_id"].(string)
	e.call(e.url(), b, "GET", "/api/v1/device/challenges/"+id, nil).wantError(t, http.StatusNotFound, "not_found")
	e.respond(0, b, id, b.decision(t, e.clock.Now(), ch, "approve", c.VerificationNumber)).wantError(t, http.StatusNotFound, "not_found")
	r := e.call(e.url(), b, "GET", "/api/v1/device/challenges", nil)
	if !strings.Contains(string(r.Body), `"challenges":[]`) {
		t.Fatalf("B sees A's challenge: %s", r.Body)
	}
}

func TestPollSlowDown(t *testing.T) {
	e := newEnv(t, 1)
	e.newDevice(subjectA)
	c := e.createAuth(map[string]any{"login_hint": subjectA})
	e.poll(0, c, "").wantError(t, http.StatusBadRequest, "authorization_pending") // the first poll may come at once
	e.poll(0, c, "").wantError(t, http.StatusBadRequest, "slow_down")
	// The interval grew to 7 s: 3 s later is still too soon, and it grows again to 12 s.
	e.clock.Advance(3 * time.Second)
	r := e.poll(0, c, "")
	r.wantError(t, http.StatusBadRequest, "slow_down")
	if !strings.Contains(string(r.Body), "12 s") {
		t.Fatalf("interval not grown to 12 s: %s", r.Body)
	}
	e.clock.Advance(11 * time.Second)
	e.poll(0, c, "").wantError(t, http.StatusBadRequest, "slow_down")
	e.clock.Advance(17 * time.Second)
	e.poll(0, c, "").wantError(t, http.StatusBadRequest, "authorization_pending")
	// Another client's polls are invalid_grant and do not count toward the interval.
	e.clock.Advance(17 * time.Second)
	do(t, e.url(), "GET", "/api/v1/authentications/"+c.AuthReqID, nil, basicAuth("idp-2", testClientSecret2)).
		wantError(t, http.StatusBadRequest, "invalid_grant")
	e.poll(0, c, "").wantError(t, http.StatusBadRequest, "authorization_pending")
}

func TestPollBadRequests(t *testing.T) {
	e := newEnv(t, 1)
	e.newDevice(subjectA)
	c := e.createAuth(map[string]any{"login_hint": subjectA})
	for _, q := range []string{"?wait=0", "?wait=31", "?wait=x"} {
		e.poll(0, c, q).wantError(t, http.StatusBadRequest, "invalid_request")
	}
	e.idp(0, "GET", "/api/v1/authentications/nope", nil).wantError(t, http.StatusBadRequest, "invalid_grant")
	// A client without scope authentication.
	do(t, e.url(), "GET", "/api/v1/authentications/"+c.AuthReqID, nil, basicAuth("idp-actonly", testActClientSec)).
		wantError(t, http.StatusForbidden, "forbidden")
}

func TestCreateAuthenticationValidation(t *testing.T) {
	e := newEnv(t, 1)
	e.newDevice(subjectA)
	suspended := e.newDevice(subjectB)
	e.desk("POST", "/api/v1/desk/devices/"+suspended.deviceID+"/suspend", nil).wantStatus(t, http.StatusOK)
	cases := []struct {
		name   string
		body   map[string]any
		status int
		code   string
	}{
		{"fail/expiry-29", map[string]any{"login_hint": subjectA, "requested_expiry": 29}, 400, "invalid_request"},
		{"fail/expiry-301", map[string]any{"login_hint": subjectA, "requested_expiry": 301}, 400, "invalid_request"},
		{"fail/binding-65", map[string]any{"login_hint": subjectA, "binding_message": strings.Repeat("é", 65)}, 400, "invalid_binding_message"},
		{"fail/binding-control", map[string]any{"login_hint": subjectA, "binding_message": "a\nb"}, 400, "invalid_binding_message"},
		{"fail/login-hint-not-idnat", map[string]any{"login_hint": "810001234566"}, 400, "invalid_request"},
		{"fail/unknown-user", map[string]any{"login_hint": subjectC}, 400, "unknown_user_id"},
		{"fail/no-active-device", map[string]any{"login_hint": subjectB}, 400, "no_active_device"},
		{"fail/redirect-not-registered", map[string]any{"redirect_uri": "https://evil.test/cb"}, 400, "invalid_request"},
		{"ok/binding-64", map[string]any{"login_hint": subjectA, "binding_message": strings.Repeat("é", 64), "requested_expiry": 300}, 201, ""},
		{"ok/qr-with-redirect", map[string]any{"redirect_uri": "https://idp.test/cb", "requested_expiry": 30}, 201, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := e.idp(0, "POST", "/api/v1/authentications", tc.body)
			if tc.code == "" {
				r.wantStatus(t, tc.status)
				return
			}
			r.wantError(t, tc.status, tc.code)
		})
	}
}

func TestLimitPendingPerSubject(t *testing.T) {
	e := newEnv(t, 1)
	e.newDevice(subjectA)
	for i := 0; i < 3; i++ {
		e.createAuth(map[string]any{"login_hint": subjectA, "requested_expiry": 60})
	}
	r := e.idp(0, "POST", "/api/v1/authentications", map[string]any{"login_hint": subjectA})
	r.wantError(t, http.StatusTooManyRequests, "too_many_requests")
	if r.Header.Get("Retry-After") != "60" {
		t.Fatalf("Retry-After = %q, want 60", r.Header.Get("Retry-After"))
	}
	// Once they expire, logins are accepted again.
	e.clock.Advance(61 * time.Second)
	e.createAuth(map[string]any{"login_hint": subjectA})
}

func TestLimitPushesPerWindow(t *testing.T) {
	rdb, prefix := redisClient(t)
	e := newEnvWith(t, rdb, prefix, 1, func(_ *enrollment.Options, o *challenge.Options) {
		o.PendingPerSubject = 100
		o.PushesPerSubject = 2
		o.PushesWindow = time.Minute
	})
	e.newDevice(subjectA)
	e.createAuth(map[string]any{"login_hint": subjectA})
	e.clock.Advance(10 * time.Second)
	e.createAuth(map[string]any{"login_hint": subjectA})
	r := e.idp(0, "POST", "/api/v1/authentications", map[string]any{"login_hint": subjectA})
	r.wantError(t, http.StatusTooManyRequests, "too_many_requests")
	if r.Header.Get("Retry-After") != "50" {
		t.Fatalf("Retry-After = %q, want 50", r.Header.Get("Retry-After"))
	}
	// A refused login did not count as a push: 50 s later one is free again.
	e.clock.Advance(50 * time.Second)
	e.createAuth(map[string]any{"login_hint": subjectA})
	if e.metricLimit("pushes_per_subject") != 1 {
		t.Fatal("limit hit not counted")
	}
}

func TestLimitConsecutiveDenialsBlock(t *testing.T) {
	rdb, prefix := redisClient(t)
	e := newEnvWith(t, rdb, prefix, 1, func(_ *enrollment.Options, o *challenge.Options) {
		o.DenialsBeforeBlock = 3
		o.BlockDuration = 2 * time.Minute
	})
	p := e.newDevice(subjectA)
	for i := 0; i < 3; i++ {
		e.createAuth(map[string]any{"login_hint": subjectA})
		ch := e.pendingChallenge(p)
		e.respond(0, p, ch["challenge_id"].(string), p.decision(t, e.clock.Now(), ch, "deny", "")).wantStatus(t, http.StatusNoContent)
	}
	r := e.idp(0, "POST", "/api/v1/authentications", map[string]any{"login_hint": subjectA})
	r.wantError(t, http.StatusTooManyRequests, "too_many_requests")
	if ra := r.Header.Get("Retry-After"); ra != "120" && ra != "119" {
		t.Fatalf("Retry-After = %q", ra)
	}
}

func TestApprovalResetsDenials(t *testing.T) {
	rdb, prefix := redisClient(t)
	e := newEnvWith(t, rdb, prefix, 1, func(_ *enrollment.Options, o *challenge.Options) { o.DenialsBeforeBlock = 2 })
	p := e.newDevice(subjectA)
	decide := func(decision string) {
		c := e.createAuth(map[string]any{"login_hint": subjectA})
		ch := e.pendingChallenge(p)
		e.respond(0, p, ch["challenge_id"].(string), p.decision(t, e.clock.Now(), ch, decision, c.VerificationNumber)).wantStatus(t, http.StatusNoContent)
	}
	decide("deny")
	decide("approve")
	decide("deny")
	e.createAuth(map[string]any{"login_hint": subjectA}) // not blocked: the denials were not consecutive
}

// Long-poll on one replica, decision on the other: the result arrives.
func TestLongPollAcrossReplicas(t *testing.T) {
	e := newEnv(t, 2)
	p := e.newDevice(subjectA)
	c := e.createAuth(map[string]any{"login_hint": subjectA})
	ch := e.pendingChallenge(p)
	got := make(chan response, 1)
	start := time.Now()
	go func() { got <- e.poll(0, c, "?wait=20") }()
	waitFor(t, func() bool { return e.replicas[0].hub.Waiting() == 1 })
	e.respond(1, p, ch["challenge_id"].(string), p.decision(t, e.clock.Now(), ch, "approve", c.VerificationNumber)).wantStatus(t, http.StatusNoContent)
	r := <-got
	r.wantStatus(t, http.StatusOK)
	if time.Since(start) > 10*time.Second {
		t.Fatal("the long-poll was not woken: it answered on its timeout")
	}
	if e.replicas[0].hub.Waiting() != 0 {
		t.Fatal("waiter left behind")
	}
}

func waitFor(t testing.TB, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in 5 s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// A long-poll that times out answers authorization_pending; one that waited
// counts as respecting the interval.
func TestLongPollTimeoutAndInterval(t *testing.T) {
	e := newEnv(t, 1)
	e.newDevice(subjectA)
	c := e.createAuth(map[string]any{"login_hint": subjectA})
	done := make(chan response, 1)
	go func() { done <- e.poll(0, c, "?wait=1") }()
	waitFor(t, func() bool { return e.replicas[0].hub.Waiting() == 1 })
	e.clock.Advance(2 * time.Second) // the wait, as the service's clock sees it
	(<-done).wantError(t, http.StatusBadRequest, "authorization_pending")
	e.poll(0, c, "").wantError(t, http.StatusBadRequest, "authorization_pending")
}

func TestConcurrentDecisionsOneWins(t *testing.T) {
	e := newEnv(t, 2)
	p := e.newDevice(subjectA)
	c := e.createAuth(map[string]any{"login_hint": subjectA})
	ch := e.pendingChallenge(p)
	const n = 50
	jws := make([]string, n)
	for i := range jws {
		d := "approve"
		if i%2 == 1 {
			d = "deny"
		}
		jws[i] = p.decision(t, e.clock.Now(), ch, d, c.VerificationNumber)
	}
	statuses := make([]int, n)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			statuses[i] = e.respond(i%2, p, ch["challenge_id"].(string), jws[i]).Status
		}()
	}
	wg.Wait()
	if countInts(statuses, 204) != 1 || countInts(statuses, 409) != n-1 {
		t.Fatalf("statuses %v", statuses)
	}
	events := e.auditEvents(subjectA)
	if countOf(events, "authentication.approved")+countOf(events, "authentication.denied") != 1 {
		t.Fatalf("audit %v", events)
	}
}

func TestConcurrentPollsOneResult(t *testing.T) {
	e := newEnv(t, 2)
	p := e.newDevice(subjectA)
	c := e.createAuth(map[string]any{"login_hint": subjectA})
	ch := e.pendingChallenge(p)
	e.respond(0, p, ch["challenge_id"].(string), p.decision(t, e.clock.Now(), ch, "approve", c.VerificationNumber)).wantStatus(t, http.StatusNoContent)
	const n = 50
	statuses := make([]int, n)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			statuses[i] = e.poll(i%2, c, "").Status
		}()
	}
	wg.Wait()
	if countInts(statuses, 200) != 1 || countInts(statuses, 400) != n-1 {
		t.Fatalf("statuses %v", statuses)
	}
}

func TestQRLogin(t *testing.T) {
	e := newEnv(t, 1)
	p := e.newDevice(subjectA)
	c := e.createAuth(map[string]any{"redirect_uri": "https://idp.test/cb", "binding_message": "QR"})
	u, err := url.Parse(c.LoginURL)
	if err != nil || !strings.HasPrefix(c.LoginURL, "https://ecps.test/login/") {
		t.Fatalf("login_url %q", c.LoginURL)
	}
	loginID := strings.TrimPrefix(u.Path, "/login/")
	if !idRE.MatchString(loginID) || strings.Contains(c.LoginURL, c.AuthReqID) {
		t.Fatalf("login_id %q", loginID)
	}
	state := func() map[string]any {
		r := do(t, e.url(), "GET", "/login/"+loginID+"/state", nil, nil)
		r.wantStatus(t, http.StatusOK)
		return r.json(t)
	}
	if st := state(); st["status"] != "pending" {
		t.Fatalf("state %v", st)
	}
	token := e.qrToken(loginID)
	if st := state(); st["qr_expires_at"] == nil {
		t.Fatalf("no qr_expires_at after a QR code: %v", st)
	}
	claim := func(tok string) response {
		return e.call(e.url(), p, "POST", "/api/v1/device/challenges/claim", jsonBody(t, map[string]string{"qr_token": tok}))
	}
	r := claim(token)
	r.wantStatus(t, http.StatusOK)
	ch := r.json(t)
	if ch["client_name"] != "Test IdP" || ch["binding_message"] != "QR" {
		t.Fatalf("claimed challenge %v", ch)
	}
	claim(token).wantError(t, http.StatusBadRequest, "invalid_grant") // single use
	if st := state(); st["status"] != "claimed" || st["qr_expires_at"] != nil {
		t.Fatalf("state after claim %v", st)
	}
	do(t, e.url(), "GET", "/login/"+loginID+"/qr.png", nil, nil).wantError(t, http.StatusGone, "gone")
	e.respond(0, p, ch["challenge_id"].(string), p.decision(t, e.clock.Now(), ch, "approve", c.VerificationNumber)).wantStatus(t, http.StatusNoContent)
	if st := state(); st["status"] != "approved" {
		t.Fatalf("state after approval %v", st)
	}
	r = e.poll(0, c, "")
	r.wantStatus(t, http.StatusOK)
	if r.json(t)["sub"] != subjectA {
		t.Fatalf("result %s", r.Body)
	}
	do(t, e.url(), "GET", "/login/AAAAAAAAAAAAAAAA.AAAAAAAAAAAAAAAAAAAAAA/state", nil, nil).wantError(t, http.StatusNotFound, "not_found")
	do(t, e.url(), "GET", "/login/AAAAAAAAAAAAAAAA.AAAAAAAAAAAAAAAAAAAAAA/qr.png", nil, nil).wantError(t, http.StatusNotFound, "not_found")
}

func TestQRTokenExpiresAndRotates(t *testing.T) {
	e := newEnv(t, 1)
	p := e.newDevice(subjectA)
	c := e.createAuth(map[string]any{})
	loginID := strings.TrimPrefix(c.LoginURL, "https://ecps.test/login/")
	old := e.qrToken(loginID)
	e.clock.Advance(25 * time.Second)
	fresh := e.qrToken(loginID)
	if fresh == old {
		t.Fatal("QR token did not change")
	}
	e.clock.Advance(6 * time.Second) // old is 31 s old, fresh 6 s
	claim := func(tok string) response {
		return e.call(e.url(), p, "POST", "/api/v1/device/challenges/claim", jsonBody(t, map[string]string{"qr_token": tok}))
	}
	claim(old).wantError(t, http.StatusBadRequest, "invalid_grant")
	claim("").wantError(t, http.StatusBadRequest, "invalid_request")
	claim(fresh).wantStatus(t, http.StatusOK)
}

// qrToken fetches qr.png and decodes the token from the image.
func (e *env) qrToken(loginID string) string {
	e.t.Helper()
	r := do(e.t, e.url(), "GET", "/login/"+loginID+"/qr.png", nil, nil)
	r.wantStatus(e.t, http.StatusOK)
	if r.Header.Get("Cache-Control") != "no-store" || r.Header.Get("Content-Type") != "image/png" {
		e.t.Fatalf("qr.png headers %v", r.Header)
	}
	img, err := png.Decode(bytes.NewReader(r.Body))
	if err != nil {
		e.t.Fatal(err)
	}
	text, err := qr.Decode(img)
	if err != nil {
		e.t.Fatalf("decode QR: %v", err)
	}
	u, err := url.Parse(text)
	if err != nil || u.Scheme != "ecps" || u.Host != "login" || u.Query().Get("h") != "https://ecps.test" ||
		!strings.Contains(text, "&h="+url.QueryEscape("https://ecps.test")) {
		e.t.Fatalf("QR content %q", text)
	}
	return u.Query().Get("t")
}
