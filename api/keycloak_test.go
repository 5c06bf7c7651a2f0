package api

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"

	"github.com/ecps-sante/ecps/audit"
	"github.com/ecps-sante/ecps/challenge"
	"github.com/ecps-sante/ecps/enrollment"
	"github.com/ecps-sante/ecps/keycloak"
	"github.com/ecps-sante/ecps/keycloak/keycloaktest"
	"github.com/ecps-sante/ecps/push"
	"github.com/ecps-sante/ecps/redistest"
)

// kcSetup makes every replica of an env run the Keycloak channel.
type kcSetup struct {
	realms   []keycloak.Realm
	cb       keycloak.CallbackOptions
	verifier keycloak.VerifierOptions
	// noSender: replicas (from now on) do not run their callback sender,
	// as if they died right after taking the phone's decision.
	noSender bool
}

// kcReplica is one replica's Keycloak side.
type kcReplica struct {
	callbacks *keycloak.Callbacks
	verifier  *keycloak.Verifier
	metrics   *keycloak.Metrics
	stop      context.CancelFunc // stops its callback sender
	stopped   chan struct{}
}

func (k *kcSetup) newReplica(e *env, log *audit.Log, reg *prometheus.Registry) *kcReplica {
	m := keycloak.NewMetrics(reg)
	cb := k.cb
	cb.KeyPrefix, cb.Metrics = e.prefix, m
	vo := k.verifier
	vo.Metrics = m
	r := &kcReplica{callbacks: keycloak.NewCallbacks(e.rdb, log, cb), verifier: keycloak.NewVerifier(k.realms, vo),
		metrics: m, stopped: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	r.stop = func() { cancel(); <-r.stopped }
	e.t.Cleanup(r.stop)
	if k.noSender {
		close(r.stopped)
		return r
	}
	go func() { defer close(r.stopped); r.callbacks.Run(ctx) }()
	return r
}

// channel is the replica's channel (nil without Keycloak).
func (r *kcReplica) channel(logins *challenge.Service) *keycloak.Channel {
	if r == nil {
		return nil
	}
	return keycloak.NewChannel(r.verifier, logins, r.callbacks, keycloak.ChannelOptions{
		Logger: slog.New(slog.NewJSONHandler(io.Discard, nil)), Metrics: r.metrics})
}

// kcClientName is the name the test realm shows for its CIBA client.
const kcClientName = "Portail Pro Santé (Keycloak)"

// newKeycloakEnv starts a fake realm and n replicas that accept it.
func newKeycloakEnv(t *testing.T, n int, fake keycloaktest.Options, mutate func(*kcSetup, *keycloak.Realm)) (*env, *keycloaktest.Keycloak) {
	t.Helper()
	rdb, prefix := redisClient(t)
	return newKeycloakEnvOn(t, rdb, prefix, n, fake, mutate)
}

func newKeycloakEnvOn(t *testing.T, rdb redis.UniversalClient, prefix string, n int, fake keycloaktest.Options,
	mutate func(*kcSetup, *keycloak.Realm)) (*env, *keycloaktest.Keycloak) {
	t.Helper()
	kc := keycloaktest.New(t, fake)
	setup := &kcSetup{cb: keycloak.CallbackOptions{PollEvery: 20 * time.Millisecond, BackoffBase: 50 * time.Millisecond,
		BackoffMax: 500 * time.Millisecond, FirstDelay: 20 * time.Millisecond}}
	realm := keycloak.Realm{Issuer: kc.Issuer, ClientNames: map[string]string{"ciba-client": kcClientName}}
	if mutate != nil {
		mutate(setup, &realm)
	}
	setup.realms = []keycloak.Realm{realm}
	e := &env{t: t, rdb: rdb, prefix: prefix, clock: &clock{now: time.Now()}, pushes: push.NewRecorder(10000), kc: setup}
	e.opts = enrollment.Options{KeyPrefix: prefix, PublicURL: "https://ecps.test", ProofMaxSkew: 60 * time.Second, Now: e.clock.Now}
	e.chOpts = challenge.Options{KeyPrefix: prefix, PublicURL: "https://ecps.test", Now: e.clock.Now}
	for i := 0; i < n; i++ {
		e.replicas = append(e.replicas, e.newReplica())
	}
	return e, kc
}

// ciba plays a CIBA request of the fake realm against replica i.
func (e *env) ciba(i int, kc *keycloaktest.Keycloak, c keycloaktest.CIBA) *keycloaktest.Request {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := kc.Start(ctx, e.replicas[i].http.URL+"/api/v1/keycloak/ciba", c)
	if err != nil {
		e.t.Fatal(err)
	}
	return r
}

// channelRequest sends a raw channel request to replica 0.
func (e *env) channelRequest(token string, body []byte) response {
	e.t.Helper()
	h := map[string]string{}
	if token != "" {
		h["Authorization"] = "Bearer " + token
	}
	return do(e.t, e.url(), "POST", "/api/v1/keycloak/ciba", body, h)
}

// waitState waits for the fake's request to end.
func waitState(t *testing.T, r *keycloaktest.Request) (string, map[string]string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	st, notes, err := r.Wait(ctx)
	if err != nil {
		t.Fatalf("Keycloak's request still %s: %v", st, err)
	}
	return st, notes
}

// waitAudit waits until subject's audit holds event.
func (e *env) waitAudit(subject, event string) []string {
	e.t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		events := e.auditEvents(subject)
		if countOf(events, event) > 0 {
			return events
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("no %s in the audit: %v", event, events)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (e *env) kcCallbacks(i int, status, outcome string) float64 {
	return testutil.ToFloat64(e.replicas[i].kc.metrics.CallbackCounter(status, outcome))
}

// auditEntry returns subject's newest entry of event.
func (e *env) auditEntry(subject, event string) audit.Entry {
	e.t.Helper()
	r := e.desk("GET", "/api/v1/desk/audit?subject="+subject+"&limit=200", nil)
	var page struct{ Entries []audit.Entry }
	if err := json.Unmarshal(r.Body, &page); err != nil {
		e.t.Fatal(err)
	}
	for _, en := range page.Entries {
		if en.Event == event {
			return en
		}
	}
	e.t.Fatalf("no %s entry", event)
	return audit.Entry{}
}

func TestKeycloakLoginApprovedOnce(t *testing.T) {
	for _, alg := range []string{"RS256", "ES256", "PS256"} {
		t.Run(alg, func(t *testing.T) {
			e, kc := newKeycloakEnv(t, 1, keycloaktest.Options{}, nil)
			p := e.newPushDevice(subjectA)
			req := e.ciba(0, kc, keycloaktest.CIBA{LoginHint: subjectA, BindingMessage: "42", Alg: alg})
			if req.Status != http.StatusCreated {
				t.Fatalf("channel answered %d", req.Status)
			}
			job := <-e.pushes.Jobs()
			if job.DeviceID != p.deviceID {
				t.Fatalf("push %+v", job)
			}
			ch := e.pendingChallenge(p)
			if ch["challenge_id"] != job.ChallengeID || ch["client_name"] != kcClientName || ch["binding_message"] != nil ||
				ch["number_digits"] != float64(2) {
				t.Fatalf("challenge %v", ch)
			}
			decidedAt := e.clock.Now()
			decision := p.decision(t, decidedAt, ch, "approve", "42")
			e.respond(0, p, job.ChallengeID, decision).wantStatus(t, http.StatusNoContent)
			st, notes := waitState(t, req)
			if st != "approved" || notes["amr"] != "hwk mfa fpt" || notes["device_id"] != p.deviceID ||
				notes["auth_time"] != strconv.FormatInt(decidedAt.Unix(), 10) || len(notes) != 3 {
				t.Fatalf("Keycloak's request %s with notes %v", st, notes)
			}
			e.waitAudit(subjectA, keycloak.EventCallbackSent)
			time.Sleep(200 * time.Millisecond) // nothing more comes
			if cbs := kc.Callbacks(); len(cbs) != 1 || cbs[0].Status != "SUCCEED" || cbs[0].Answer != 200 {
				t.Fatalf("callbacks %+v", cbs)
			}
			if n := e.kcCallbacks(0, "SUCCEED", "sent"); n != 1 {
				t.Fatalf("sent SUCCEED counted %v", n)
			}
			events := e.auditEvents(subjectA)
			for _, ev := range []string{"authentication.created", "authentication.approved", keycloak.EventCallbackSent} {
				if countOf(events, ev) != 1 {
					t.Fatalf("audit %v: want one %s", events, ev)
				}
			}
			created := e.auditEntry(subjectA, "authentication.created")
			if created.Actor != (audit.Actor{Type: "client", ID: "keycloak:ciba-client"}) {
				t.Fatalf("created by %+v", created.Actor)
			}
			sent := e.auditEntry(subjectA, keycloak.EventCallbackSent)
			if sent.Actor.Type != "system" || sent.Details["status"] != "SUCCEED" || sent.Details["challenge_id"] != job.ChallengeID {
				t.Fatalf("callback entry %+v", sent)
			}
			// The same decision sent again answers as the first did and calls back nothing more.
			e.respond(0, p, job.ChallengeID, decision).wantStatus(t, http.StatusNoContent)
			e.respond(0, p, job.ChallengeID, p.decision(t, decidedAt, ch, "approve", "42")).wantStatus(t, http.StatusConflict)
			time.Sleep(100 * time.Millisecond)
			if len(kc.Callbacks()) != 1 {
				t.Fatalf("callbacks after a second decision: %+v", kc.Callbacks())
			}
		})
	}
}

func TestKeycloakDenialsSayUnauthorized(t *testing.T) {
	tests := []struct {
		name, subject, decision, number, reason string
	}{
		{"deny", subjectA, "deny", "", "denied"},
		{"fraud", subjectB, "fraud", "", "fraud"},
		{"wrong number", subjectC, "approve", "43", "wrong_number"},
	}
	e, kc := newKeycloakEnv(t, 1, keycloaktest.Options{}, nil)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := e.newPushDevice(tc.subject)
			req := e.ciba(0, kc, keycloaktest.CIBA{LoginHint: tc.subject, BindingMessage: "42"})
			ch := e.pendingChallenge(p)
			e.respond(0, p, ch["challenge_id"].(string), p.decision(t, e.clock.Now(), ch, tc.decision, tc.number)).
				wantStatus(t, http.StatusNoContent)
			if st, _ := waitState(t, req); st != "denied" {
				t.Fatalf("Keycloak's request %s", st)
			}
			e.waitAudit(tc.subject, keycloak.EventCallbackSent)
			en := e.auditEntry(tc.subject, keycloak.EventCallbackSent)
			if en.Details["status"] != "UNAUTHORIZED" || en.Details["reason"] != tc.reason {
				t.Fatalf("entry %+v", en)
			}
		})
	}
	if n := e.kcCallbacks(0, "UNAUTHORIZED", "sent"); n != 3 {
		t.Fatalf("UNAUTHORIZED sent counted %v", n)
	}
}

// A binding message that is not a number is shown, and the approval
// carries no number; so is a request without one.
func TestKeycloakNumberMatching(t *testing.T) {
	e, kc := newKeycloakEnv(t, 1, keycloaktest.Options{}, nil)
	p := e.newPushDevice(subjectA)
	for _, bm := range []string{"Connexion-DMP", ""} {
		req := e.ciba(0, kc, keycloaktest.CIBA{LoginHint: subjectA, BindingMessage: bm})
		ch := e.pendingChallenge(p)
		want := any(bm)
		if bm == "" {
			want = nil
		}
		if ch["binding_message"] != want || ch["number_digits"] != float64(0) {
			t.Fatalf("challenge %v", ch)
		}
		one := e.call(e.url(), p, "GET", "/api/v1/device/challenges/"+ch["challenge_id"].(string), nil)
		if one.wantStatus(t, http.StatusOK); one.json(t)["number_digits"] != float64(0) {
			t.Fatalf("challenge %s", one.Body)
		}
		e.respond(0, p, ch["challenge_id"].(string), p.decision(t, e.clock.Now(), ch, "approve", "")).wantStatus(t, http.StatusNoContent)
		if st, notes := waitState(t, req); st != "approved" || notes["device_id"] != p.deviceID {
			t.Fatalf("Keycloak's request %s %v", st, notes)
		}
	}
	// 2 to 6 digits are the number; 7 digits or 1 digit are a message.
	for bm, digits := range map[string]float64{"000042": 6, "1234567": 0, "7": 0} {
		e.ciba(0, kc, keycloaktest.CIBA{LoginHint: subjectA, BindingMessage: bm})
		ch := e.pendingChallenge(p)
		if ch["number_digits"] != digits || (digits > 0) != (ch["binding_message"] == nil) {
			t.Fatalf("binding message %q: challenge %v", bm, ch)
		}
		e.respond(0, p, ch["challenge_id"].(string), p.decision(t, e.clock.Now(), ch, "deny", "")).wantStatus(t, http.StatusNoContent)
	}
	// A login with a number is not approved without it.
	e.ciba(0, kc, keycloaktest.CIBA{LoginHint: subjectA, BindingMessage: "42"})
	ch := e.pendingChallenge(p)
	e.respond(0, p, ch["challenge_id"].(string), p.decision(t, e.clock.Now(), ch, "approve", "")).
		wantError(t, http.StatusBadRequest, "invalid_request")
}

func TestKeycloakRequireNumber(t *testing.T) {
	e, kc := newKeycloakEnv(t, 1, keycloaktest.Options{}, func(_ *kcSetup, r *keycloak.Realm) { r.RequireNumber = true })
	e.newPushDevice(subjectA)
	for _, bm := range []string{"Connexion-DMP", ""} {
		tok, _ := kc.Sign(kc.Claims(keycloaktest.CIBA{}), "")
		e.channelRequest(tok, keycloaktest.Body(keycloaktest.CIBA{LoginHint: subjectA, BindingMessage: bm})).
			wantError(t, http.StatusBadRequest, "invalid_binding_message")
	}
	if r := e.ciba(0, kc, keycloaktest.CIBA{LoginHint: subjectA, BindingMessage: "07"}); r.Status != http.StatusCreated {
		t.Fatalf("with a number: %d", r.Status)
	}
}

func TestKeycloakTokenChecks(t *testing.T) {
	var skew atomic.Int64 // the verifier's clock runs ahead by this
	advance := func(d time.Duration) { skew.Add(int64(d)) }
	e, kc := newKeycloakEnv(t, 1, keycloaktest.Options{}, func(s *kcSetup, r *keycloak.Realm) {
		s.verifier.Now = func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }
		r.LoginHintPrefix = "psc:"
	})
	e.newPushDevice(subjectA)
	body := keycloaktest.Body(keycloaktest.CIBA{LoginHint: "psc:" + subjectA, BindingMessage: "42"})
	sign := func(mutate func(map[string]any)) string {
		c := kc.Claims(keycloaktest.CIBA{})
		if mutate != nil {
			mutate(c)
		}
		tok, err := kc.Sign(c, "")
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	foreign, _ := keycloaktest.NewKey(jose.RS256)
	forged := func() string { // the realm's kid, another key
		k := foreign
		var hdr struct{ Kid string }
		parts := strings.Split(sign(nil), ".")
		b, _ := base64.RawURLEncoding.DecodeString(parts[0])
		_ = json.Unmarshal(b, &hdr)
		k.KeyID = hdr.Kid
		tok, _ := keycloaktest.SignWith(k, kc.Claims(keycloaktest.CIBA{}))
		return tok
	}
	tests := []struct {
		name, reason string
		token        string
	}{
		{"fail/no-token", "missing", ""},
		{"fail/not-a-jws", "malformed", "abc.def.ghi"},
		{"fail/bad-signature", "signature", forged()},
		{"fail/unknown-kid", "unknown_key", func() string { tok, _ := keycloaktest.SignWith(foreign, kc.Claims(keycloaktest.CIBA{})); return tok }()},
		{"fail/wrong-iss", "issuer", sign(func(c map[string]any) { c["iss"] = kc.URL() + "/realms/other" })},
		{"fail/wrong-aud", "audience", sign(func(c map[string]any) { c["aud"] = "account" })},
		{"fail/aud-array-without-iss", "audience", sign(func(c map[string]any) { c["aud"] = []string{"account", "broker"} })},
		{"fail/expired", "expired", sign(func(c map[string]any) { c["exp"] = time.Now().Add(-2 * time.Minute).Unix() })},
		{"fail/no-exp", "expired", sign(func(c map[string]any) { delete(c, "exp") })},
		{"fail/exp-as-string", "malformed", sign(func(c map[string]any) { c["exp"] = strconv.FormatInt(time.Now().Add(time.Minute).Unix(), 10) })},
		{"fail/typ-id", "typ", sign(func(c map[string]any) { c["typ"] = "ID" })},
		{"fail/no-typ", "typ", sign(func(c map[string]any) { delete(c, "typ") })},
		{"fail/no-azp", "claims", sign(func(c map[string]any) { delete(c, "azp") })},
		{"fail/no-jti", "claims", sign(func(c map[string]any) { delete(c, "jti") })},
		{"fail/hs256", "malformed", hs256(t, kc.Claims(keycloaktest.CIBA{}))},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := testutil.ToFloat64(e.replicas[0].kc.metrics.Rejections(tc.reason))
			r := e.channelRequest(tc.token, body)
			r.wantError(t, http.StatusUnauthorized, "invalid_client")
			if testutil.ToFloat64(e.replicas[0].kc.metrics.Rejections(tc.reason)) != before+1 {
				t.Fatalf("not rejected for %s", tc.reason)
			}
			if !strings.HasPrefix(r.Header.Get("WWW-Authenticate"), "Bearer") {
				t.Fatalf("WWW-Authenticate %q", r.Header.Get("WWW-Authenticate"))
			}
		})
	}
	t.Run("ok/aud-array", func(t *testing.T) {
		e.channelRequest(sign(func(c map[string]any) { c["aud"] = []string{"account", kc.Issuer} }), body).wantStatus(t, http.StatusCreated)
	})
	t.Run("ok/exp-within-leeway", func(t *testing.T) {
		e.channelRequest(sign(func(c map[string]any) { c["exp"] = time.Now().Add(-3 * time.Second).Unix() }), body).wantStatus(t, http.StatusCreated)
	})
	t.Run("fail/body", func(t *testing.T) {
		for _, b := range []string{`[]`, `{"login_hint":42}`, `{"binding_message":"42"}`, `{"login_hint":"psc:810001234565"} {}`,
			`{"login_hint":"810001234565"}`, `{"login_hint":"psc:810001234566"}`} {
			e.channelRequest(sign(nil), []byte(b)).wantError(t, http.StatusBadRequest, "invalid_request")
		}
	})

	// A rotated realm key: its kid is unknown, the JWKS is fetched again.
	reads := kc.JWKSReads()
	if _, err := kc.Rotate(jose.RS256); err != nil {
		t.Fatal(err)
	}
	advance(11 * time.Second) // the unknown kids above fetched the JWKS lately
	e.channelRequest(sign(nil), body).wantStatus(t, http.StatusCreated)
	if kc.JWKSReads() != reads+1 {
		t.Fatalf("JWKS read %d times, want 1", kc.JWKSReads()-reads)
	}
	// Another rotation at once: the JWKS is not fetched again within 10 s.
	if _, err := kc.Rotate(jose.RS256); err != nil {
		t.Fatal(err)
	}
	e.channelRequest(sign(nil), body).wantError(t, http.StatusUnauthorized, "invalid_client")
	if kc.JWKSReads() != reads+1 {
		t.Fatalf("JWKS fetched again within 10 s")
	}
	advance(10 * time.Second)
	e.channelRequest(sign(nil), body).wantStatus(t, http.StatusCreated)
	if got := testutil.ToFloat64(e.replicas[0].kc.metrics.Rejections(keycloak.ReasonUnknownKey)); got < 2 {
		t.Fatalf("unknown_key rejections %v", got)
	}
}

// A callback endpoint that fails twice with 503, then answers: delivered once.
func TestKeycloakCallbackRetriedAfter503(t *testing.T) {
	e, kc := newKeycloakEnv(t, 1, keycloaktest.Options{}, nil)
	p := e.newPushDevice(subjectA)
	req := e.ciba(0, kc, keycloaktest.CIBA{LoginHint: subjectA, BindingMessage: "42"})
	kc.FailNext(503, 503)
	ch := e.pendingChallenge(p)
	e.respond(0, p, ch["challenge_id"].(string), p.decision(t, e.clock.Now(), ch, "approve", "42")).wantStatus(t, http.StatusNoContent)
	if st, _ := waitState(t, req); st != "approved" {
		t.Fatalf("Keycloak's request %s", st)
	}
	e.waitAudit(subjectA, keycloak.EventCallbackSent)
	time.Sleep(200 * time.Millisecond)
	cbs := kc.Callbacks()
	if len(cbs) != 3 || cbs[0].Answer != 503 || cbs[1].Answer != 503 || cbs[2].Answer != 200 {
		t.Fatalf("callbacks %+v", cbs)
	}
	if en := e.auditEntry(subjectA, keycloak.EventCallbackSent); en.Details["attempts"] != float64(3) {
		t.Fatalf("entry %+v", en)
	}
}

// A SUCCEED whose answer times out is never sent again: a second one would
// cancel the login that Keycloak did approve.
func TestKeycloakCallbackTimeoutNeverResent(t *testing.T) {
	e, kc := newKeycloakEnv(t, 1, keycloaktest.Options{}, func(s *kcSetup, _ *keycloak.Realm) {
		s.cb.AttemptTimeout = 300 * time.Millisecond
	})
	p := e.newPushDevice(subjectA)
	req := e.ciba(0, kc, keycloaktest.CIBA{LoginHint: subjectA, BindingMessage: "42"})
	kc.HangNext(time.Second)
	ch := e.pendingChallenge(p)
	e.respond(0, p, ch["challenge_id"].(string), p.decision(t, e.clock.Now(), ch, "approve", "42")).wantStatus(t, http.StatusNoContent)
	e.waitAudit(subjectA, keycloak.EventCallbackUnknown)
	if st, _ := waitState(t, req); st != "approved" {
		t.Fatalf("Keycloak's request %s", st)
	}
	time.Sleep(time.Second) // well past any retry
	if cbs := kc.Callbacks(); len(cbs) != 1 {
		t.Fatalf("callbacks %+v", cbs)
	}
	if st, _ := req.State(); st != "approved" {
		t.Fatalf("Keycloak's request %s", st)
	}
	if n := e.kcCallbacks(0, "SUCCEED", "unknown"); n != 1 {
		t.Fatalf("unknown counted %v", n)
	}
	if events := e.auditEvents(subjectA); countOf(events, keycloak.EventCallbackSent) != 0 {
		t.Fatalf("audit %v", events)
	}
}

// The replica that takes the decision dies before calling back: another
// replica calls back, once.
func TestKeycloakCallbackSentByAnotherReplica(t *testing.T) {
	e, kc := newKeycloakEnv(t, 1, keycloaktest.Options{}, func(s *kcSetup, _ *keycloak.Realm) { s.noSender = true })
	e.kc.noSender = false
	e.replicas = append(e.replicas, e.newReplica()) // replica 1 sends; replica 0 never will
	p := e.newPushDevice(subjectA)
	req := e.ciba(0, kc, keycloaktest.CIBA{LoginHint: subjectA, BindingMessage: "42"})
	ch := e.pendingChallenge(p)
	e.respond(0, p, ch["challenge_id"].(string), p.decision(t, e.clock.Now(), ch, "approve", "42")).wantStatus(t, http.StatusNoContent)
	if st, _ := waitState(t, req); st != "approved" {
		t.Fatalf("Keycloak's request %s", st)
	}
	e.waitAudit(subjectA, keycloak.EventCallbackSent)
	time.Sleep(200 * time.Millisecond)
	if cbs := kc.Callbacks(); len(cbs) != 1 {
		t.Fatalf("callbacks %+v", cbs)
	}
	if a, b := e.kcCallbacks(0, "SUCCEED", "sent"), e.kcCallbacks(1, "SUCCEED", "sent"); a != 0 || b != 1 {
		t.Fatalf("sent by replica 0: %v, by replica 1: %v", a, b)
	}
}

// A login that cannot start still answers 201; the callback says
// UNAUTHORIZED once Keycloak has stored the request.
func TestKeycloakLoginCannotStart(t *testing.T) {
	e, kc := newKeycloakEnv(t, 1, keycloaktest.Options{StoreDelay: 400 * time.Millisecond}, nil)
	suspended := e.newDevice(subjectB)
	e.desk("POST", "/api/v1/desk/devices/"+suspended.deviceID+"/suspend", nil).wantStatus(t, http.StatusOK)
	for _, tc := range []struct{ subject, reason string }{{subjectA, "unknown_user_id"}, {subjectB, "no_active_device"}} {
		req := e.ciba(0, kc, keycloaktest.CIBA{LoginHint: tc.subject, BindingMessage: "42"})
		if req.Status != http.StatusCreated {
			t.Fatalf("%s: channel answered %d", tc.reason, req.Status)
		}
		if st, _ := waitState(t, req); st != "denied" {
			t.Fatalf("%s: Keycloak's request %s", tc.reason, st)
		}
		e.waitAudit(tc.subject, keycloak.EventCallbackSent)
		en := e.auditEntry(tc.subject, keycloak.EventCallbackSent)
		if en.Details["status"] != "UNAUTHORIZED" || en.Details["reason"] != tc.reason || en.Details["challenge_id"] != nil {
			t.Fatalf("entry %+v", en)
		}
	}
	// A limit: the practitioner already has pending_per_subject (3) pending logins.
	e.newPushDevice(subjectC)
	for range 3 {
		e.ciba(0, kc, keycloaktest.CIBA{LoginHint: subjectC, BindingMessage: "42"})
	}
	req := e.ciba(0, kc, keycloaktest.CIBA{LoginHint: subjectC, BindingMessage: "42"})
	if st, _ := waitState(t, req); req.Status != http.StatusCreated || st != "denied" {
		t.Fatalf("over the limit: %d, then %s", req.Status, st)
	}
	e.waitAudit(subjectC, keycloak.EventCallbackSent)
	if en := e.auditEntry(subjectC, keycloak.EventCallbackSent); en.Details["reason"] != "limit:pending_per_subject" {
		t.Fatalf("entry %+v", en)
	}
	if hit := e.auditEntry(subjectC, "limit.hit"); hit.Actor.ID != "keycloak:ciba-client" {
		t.Fatalf("limit.hit by %+v", hit.Actor)
	}
	if e.metricLimit("pending_per_subject") != 1 {
		t.Fatal("the limit hit is not counted")
	}
	// Sent before Keycloak stored the request, the first attempts got 403: retried.
	cbs := kc.Callbacks()
	if last := cbs[len(cbs)-1]; last.Answer != 200 || last.Status != "UNAUTHORIZED" {
		t.Fatalf("callbacks %+v", cbs)
	}
	if got := testutil.ToFloat64(e.replicas[0].kc.metrics.Attempts("http_403_early")); got == 0 {
		t.Fatalf("no attempt before Keycloak stored the request: %+v", cbs)
	}
}

// hs256 signs claims with a shared secret: never a realm token.
func hs256(t *testing.T, claims map[string]any) string {
	t.Helper()
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.HS256, Key: []byte("0123456789abcdef0123456789abcdef")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	obj, err := s.Sign(jsonBody(t, claims))
	if err != nil {
		t.Fatal(err)
	}
	tok, _ := obj.CompactSerialize()
	return tok
}

// TestKeycloakLostRepliesLoseNothing loses the replies of every step of a
// Keycloak login (once: go-redis sends the command again; four times: the
// step fails and is done again by whoever owns it) and checks that exactly
// one SUCCEED reaches Keycloak and every audit entry is written once.
func TestKeycloakLostRepliesLoseNothing(t *testing.T) {
	rdb, proxy := proxiedClient(t)
	e, kc := newKeycloakEnvOn(t, rdb, redistest.Prefix(), 2, keycloaktest.Options{}, nil)
	auditOp := func(cmd []string) bool {
		return redistest.IsScript(cmd) && slices.ContainsFunc(cmd, func(a string) bool { return strings.Contains(a, "auditop:keycloak.callback:") })
	}
	steps := []struct {
		name  string
		match func([]string) bool
	}{
		{"create-login", proxy.ScriptWith("'unknown_user'")},
		{"record-callback", proxy.ScriptWith("unpack(ARGV, 5)")},
		{"queue-callback", proxy.ScriptWith("'t0', ARGV[5]")},
		{"claim", proxy.ScriptWith("'stale', stale")},
		{"audit-callback", auditOp},
		{"end-callback", proxy.ScriptWith("'HDEL', KEYS[1], 'tok'")},
	}
	for _, step := range steps {
		for _, times := range []int{1, 4} {
			t.Run(step.name+"/"+strconv.Itoa(times), func(t *testing.T) {
				subject := adeliSubject()
				p := e.newDevice(subject)
				proxy.Dropped() // forget the earlier subtests'
				proxy.DropReplies(step.match, 1, times)
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				defer cancel()
				req, err := kc.Start(ctx, e.replicas[0].http.URL+"/api/v1/keycloak/ciba", keycloaktest.CIBA{LoginHint: subject, BindingMessage: "42"})
				if err != nil {
					t.Fatal(err)
				}
				if times == 4 && step.name != "claim" && step.name != "queue-callback" && step.name != "audit-callback" && step.name != "end-callback" {
					// The channel request failed: Keycloak forgets it, the login is cancelled.
					if req.Status != http.StatusServiceUnavailable {
						t.Fatalf("channel request answered %d, want 503", req.Status)
					}
					proxy.Disarm()
					if step.name == "record-callback" {
						r := e.call(e.url(), p, "GET", "/api/v1/device/challenges", nil)
						if !strings.Contains(string(r.Body), `"challenges":[]`) {
							t.Fatalf("the login of a failed channel request is still pending: %s", r.Body)
						}
						checkAuditOnce(t, e, subject, map[string]int{"authentication.created": 1, "authentication.cancelled": 1})
					}
					return
				}
				if req.Status != http.StatusCreated {
					t.Fatalf("channel request answered %d", req.Status)
				}
				ch := e.pendingChallenge(p)
				jws := p.decision(t, e.clock.Now(), ch, "approve", "42")
				r := e.respond(1, p, ch["challenge_id"].(string), jws)
				if step.name == "queue-callback" && times == 4 {
					r.wantError(t, http.StatusServiceUnavailable, "unavailable")
					r = e.respond(0, p, ch["challenge_id"].(string), jws) // the phone sends it again
				}
				r.wantStatus(t, http.StatusNoContent)
				if st, notes := waitState(t, req); st != "approved" || notes["device_id"] != p.deviceID {
					t.Fatalf("Keycloak's request %s %v", st, notes)
				}
				e.waitAudit(subject, keycloak.EventCallbackSent)
				time.Sleep(300 * time.Millisecond)
				proxy.Disarm()
				if dropped := proxy.Dropped(); len(dropped) != times {
					t.Errorf("%d replies lost, want %d: %v", len(dropped), times, dropped)
				}
				n := 0
				for _, cb := range kc.Callbacks() {
					if cb.JTI == req.JTI {
						n++
					}
				}
				if st, _ := req.State(); n != 1 || st != "approved" {
					t.Fatalf("%d callbacks, request %s", n, st)
				}
				checkAuditOnce(t, e, subject, map[string]int{"authentication.created": 1, "authentication.approved": 1,
					keycloak.EventCallbackSent: 1})
			})
		}
	}
}
