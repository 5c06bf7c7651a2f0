package api

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ecps-sante/ecps/challenge"
	"github.com/ecps-sante/ecps/enrollment"
	"github.com/ecps-sante/ecps/redistest"
)

// proxiedEnv runs two replicas whose Redis client (set up as ecpsd sets up
// its own: 1 s read timeout, 3 resends, context deadlines on the socket)
// goes through a FaultProxy.
func proxiedEnv(t *testing.T) (*env, *redistest.FaultProxy) {
	t.Helper()
	return proxiedEnvWith(t, nil)
}

// proxiedEnvWith is proxiedEnv with both services' options set by mutate.
func proxiedEnvWith(t *testing.T, mutate func(*enrollment.Options, *challenge.Options)) (*env, *redistest.FaultProxy) {
	t.Helper()
	rdb, proxy := proxiedClient(t)
	return newEnvWith(t, rdb, redistest.Prefix(), 2, mutate), proxy
}

// proxiedClient is a Redis client set up as ecpsd's, through a FaultProxy
// to a redis-server of the test's own: its script cache starts empty, so
// every script's body goes through the proxy once (EVAL or SCRIPT LOAD
// after NOSCRIPT), which it needs to name them (ScriptWith); and no other
// package's commands fall in a step.
func proxiedClient(t *testing.T) (redis.UniversalClient, *redistest.FaultProxy) {
	t.Helper()
	proxy := redistest.NewFaultProxy(t, redistest.Start(t).Addr())
	rdb := redis.NewClient(&redis.Options{Addr: proxy.Addr(), DialTimeout: 2 * time.Second,
		ReadTimeout: time.Second, WriteTimeout: time.Second, PoolTimeout: 2 * time.Second, ContextTimeoutEnabled: true})
	t.Cleanup(func() { _ = rdb.Close() })
	return rdb, proxy
}

// adeliSubject is a fresh valid idNat (ADELI form: 0 and 9 digits).
func adeliSubject() string { return fmt.Sprintf("0%09d", rand.IntN(1_000_000_000)) }

// flow is a whole scenario run step by step; each step is one request of a
// client (desk, phone or IdP) with the answer the contract promises.
type flow struct {
	name  string
	steps []string
	// run runs the scenario; before(step) is called before each step.
	run func(t *testing.T, e *env, subject string, before func(step string))
	// events are the audit entries the scenario writes, once each.
	events map[string]int
}

// timed fails the test when a request takes longer than its budget allows.
func timed(t *testing.T, what string, budget time.Duration, f func() response) response {
	t.Helper()
	start := time.Now()
	r := f()
	if d := time.Since(start); d > budget+time.Second {
		t.Errorf("%s took %v: over its budget of %v", what, d, budget)
	}
	return r
}

var pushLogin = flow{
	name:  "push",
	steps: []string{"activation", "wrong-secret", "enrolment", "push-token", "create", "list", "read", "decide", "poll", "poll-again"},
	events: map[string]int{"activation.created": 1, "activation.failed": 1, "device.enrolled": 1,
		"authentication.created": 1, "authentication.approved": 1},
	run: func(t *testing.T, e *env, subject string, before func(string)) {
		b := DefaultRequestBudget
		before("activation")
		var a activation
		r := timed(t, "activation", b, func() response {
			return e.desk("POST", "/api/v1/desk/activations", map[string]string{"subject": subject})
		})
		r.wantStatus(t, http.StatusCreated)
		_ = json.Unmarshal(r.Body, &a)
		u, _ := url.Parse(a.EnrolURI)
		a.Secret = u.Query().Get("s")
		p := newPhone(t)

		before("wrong-secret")
		body := p.enrolBody(t, e, a)
		body["secret"] = "AAAAAAAAAAAAAAAAAAAAAA"
		timed(t, "wrong secret", b, func() response { return e.enrolWith(e.replicas[1].http.URL, body) }).
			wantError(t, http.StatusBadRequest, "invalid_grant")

		before("enrolment")
		r = timed(t, "enrolment", b, func() response { return e.enrolWith(e.replicas[1].http.URL, p.enrolBody(t, e, a)) })
		r.wantStatus(t, http.StatusCreated)
		p.deviceID, p.subject = r.json(t)["device_id"].(string), subject
		if st := e.activationStatus(a.ActivationID); st != "used" {
			t.Errorf("activation %s after the enrolment", st)
		}

		before("push-token")
		timed(t, "push token", b, func() response {
			return e.call(e.url(), p, "PUT", "/api/v1/device/push-token", jsonBody(t, map[string]string{"provider": "fcm", "token": "tok-" + p.deviceID}))
		}).wantStatus(t, http.StatusNoContent)

		before("create")
		r = timed(t, "create", b, func() response {
			return e.idp(0, "POST", "/api/v1/authentications", map[string]any{"login_hint": subject, "binding_message": "Connexion à Ameli Pro"})
		})
		r.wantStatus(t, http.StatusCreated)
		var c created
		_ = json.Unmarshal(r.Body, &c)

		before("list")
		r = timed(t, "list", b, func() response { return e.call(e.replicas[1].http.URL, p, "GET", "/api/v1/device/challenges", nil) })
		r.wantStatus(t, http.StatusOK)
		var list struct{ Challenges []map[string]any }
		_ = json.Unmarshal(r.Body, &list)
		if len(list.Challenges) != 1 {
			t.Fatalf("challenges: %s", r.Body)
		}
		ch := list.Challenges[0]

		before("read")
		timed(t, "read", b, func() response {
			return e.call(e.url(), p, "GET", "/api/v1/device/challenges/"+ch["challenge_id"].(string), nil)
		}).wantStatus(t, http.StatusOK)

		before("decide")
		timed(t, "decide", b, func() response {
			return e.respond(1, p, ch["challenge_id"].(string), p.decision(t, e.clock.Now(), ch, "approve", c.VerificationNumber))
		}).wantStatus(t, http.StatusNoContent)

		before("poll")
		r = timed(t, "poll", b+5*time.Second, func() response { return e.poll(0, c, "?wait=5") })
		r.wantStatus(t, http.StatusOK)
		if m := r.json(t); m["sub"] != subject || m["device_id"] != p.deviceID {
			t.Errorf("result %s", r.Body)
		}

		before("poll-again")
		e.clock.Advance(3 * time.Second)
		timed(t, "poll again", b, func() response { return e.poll(1, c, "") }).
			wantError(t, http.StatusBadRequest, "invalid_grant")
	},
}

var qrLogin = flow{
	name:   "qr",
	steps:  []string{"create", "qr", "claim", "decide", "poll"},
	events: map[string]int{"authentication.created": 1, "authentication.approved": 1},
	run: func(t *testing.T, e *env, subject string, before func(string)) {
		b := DefaultRequestBudget
		p := e.newDevice(subject)
		before("create")
		r := timed(t, "create", b, func() response {
			return e.idp(0, "POST", "/api/v1/authentications", map[string]any{"binding_message": "QR"})
		})
		r.wantStatus(t, http.StatusCreated)
		var c created
		_ = json.Unmarshal(r.Body, &c)
		loginID := strings.TrimPrefix(c.LoginURL, "https://ecps.test/login/")

		before("qr")
		token := e.qrToken(loginID)

		before("claim")
		r = timed(t, "claim", b, func() response {
			return e.call(e.replicas[1].http.URL, p, "POST", "/api/v1/device/challenges/claim", jsonBody(t, map[string]string{"qr_token": token}))
		})
		r.wantStatus(t, http.StatusOK)
		ch := r.json(t)

		before("decide")
		timed(t, "decide", b, func() response {
			return e.respond(0, p, ch["challenge_id"].(string), p.decision(t, e.clock.Now(), ch, "approve", c.VerificationNumber))
		}).wantStatus(t, http.StatusNoContent)

		before("poll")
		r = timed(t, "poll", b, func() response { return e.poll(1, c, "") })
		r.wantStatus(t, http.StatusOK)
		e.clock.Advance(3 * time.Second)
		e.poll(0, c, "").wantError(t, http.StatusBadRequest, "invalid_grant")
	},
}

var cancelledLogin = flow{
	name:   "cancel",
	steps:  []string{"create", "cancel", "poll"},
	events: map[string]int{"authentication.created": 1, "authentication.cancelled": 1},
	run: func(t *testing.T, e *env, subject string, before func(string)) {
		b := DefaultRequestBudget
		p := e.newDevice(subject)
		before("create")
		c := e.createAuth(map[string]any{"login_hint": subject})
		before("cancel")
		timed(t, "cancel", b, func() response { return e.idp(1, "DELETE", "/api/v1/authentications/"+c.AuthReqID, nil) }).
			wantStatus(t, http.StatusNoContent)
		before("poll")
		r := timed(t, "poll", b, func() response { return e.poll(0, c, "") })
		r.wantError(t, http.StatusBadRequest, "access_denied")
		if r.json(t)["reason"] != "cancelled" {
			t.Errorf("poll after cancel: %s", r.Body)
		}
		r = e.call(e.url(), p, "GET", "/api/v1/device/challenges", nil)
		if !strings.Contains(string(r.Body), `"challenges":[]`) {
			t.Errorf("a cancelled login is still pending for the phone: %s", r.Body)
		}
	},
}

// stepCommand is what the sweep counts and faults: every command but the
// hub's probes, which fall in whatever step runs every second.
func stepCommand(cmd []string) bool {
	return redistest.IsCommand(cmd) && !(strings.EqualFold(cmd[0], "PUBLISH") && len(cmd) > 2 && strings.HasPrefix(cmd[2], "probe:"))
}

// TestLostRepliesLoseNothing loses, in turn, the reply of every command each
// step of enrolment, activation and login sends to Redis (go-redis then
// resends it), and checks the contract holds as if nothing had happened: the
// client's one request is answered as it should be (never 401, 409 or 500),
// within its deadline; every approved login is delivered once; nothing stays
// pending; every audit event is written once.
func TestLostRepliesLoseNothing(t *testing.T) {
	e, proxy := proxiedEnv(t)
	for _, f := range []flow{pushLogin, qrLogin, cancelledLogin} {
		// Runs without faults measure how many commands each step sends: the
		// least seen over three (the first also loads the scripts, and the
		// audit copier's batches may fall within a step).
		counts := map[string]int{}
		for range 3 {
			var current string
			var mark int
			seen := map[string]int{}
			f.run(t, e, adeliSubject(), func(step string) {
				if current != "" {
					seen[current] = proxy.Count(stepCommand) - mark
				}
				current, mark = step, proxy.Count(stepCommand)
			})
			seen[current] = proxy.Count(stepCommand) - mark
			for step, n := range seen {
				if c, ok := counts[step]; !ok || n < c {
					counts[step] = n
				}
			}
		}
		if t.Failed() {
			t.Fatalf("%s: the run without faults failed", f.name)
		}
		t.Logf("%s: commands per step %v", f.name, counts)
		type fault struct {
			name  string
			match func([]string) bool
			n     int
		}
		for _, step := range f.steps {
			if counts[step] == 0 {
				t.Fatalf("%s/%s sends no command: the sweep would test nothing", f.name, step)
			}
			faults := []fault{}
			for k := 1; k <= counts[step]; k++ {
				faults = append(faults, fault{strconv.Itoa(k), stepCommand, k})
			}
			for _, fa := range faults {
				t.Run(f.name+"/"+step+"/"+fa.name, func(t *testing.T) {
					subject := adeliSubject()
					var dropped []string
					f.run(t, e, subject, func(s string) {
						dropped = append(dropped, proxy.Dropped()...)
						if s == step {
							proxy.DropReply(fa.match, fa.n)
						} else {
							proxy.Disarm()
						}
					})
					proxy.Disarm()
					dropped = append(dropped, proxy.Dropped()...)
					if len(dropped) == 0 {
						t.Errorf("no reply was lost: the fault missed its step")
					}
					checkAuditOnce(t, e, subject, f.events)
				})
			}
		}
	}
}

// checkAuditOnce checks that each expected event is written exactly once to
// the practitioner's audit stream.
func checkAuditOnce(t *testing.T, e *env, subject string, want map[string]int) {
	t.Helper()
	events := e.auditEvents(subject)
	for ev, n := range want {
		if got := countOf(events, ev); got != n {
			t.Errorf("audit of %s: %d × %s, want %d (all: %v)", subject, got, ev, n, events)
		}
	}
}

// TestSlowRedisAnswersWithinTheBudget: replies held 1.5 s (over the 1 s read
// timeout, so that every resend times out too) end each request with 503
// unavailable within its budget, and the service works again as soon as
// Redis is fast again.
func TestSlowRedisAnswersWithinTheBudget(t *testing.T) {
	e, proxy := proxiedEnv(t)
	subject := adeliSubject()
	p := e.newDevice(subject)
	proxy.Delay(1500 * time.Millisecond)
	start := time.Now()
	r := e.idp(0, "POST", "/api/v1/authentications", map[string]any{"login_hint": subject})
	took := time.Since(start)
	r.wantError(t, http.StatusServiceUnavailable, "unavailable")
	if took > DefaultRequestBudget+time.Second {
		t.Errorf("create answered after %v: resends went past the budget of %v", took, DefaultRequestBudget)
	}
	start = time.Now()
	r = e.call(e.url(), p, "GET", "/api/v1/device/devices", nil)
	took = time.Since(start)
	r.wantError(t, http.StatusServiceUnavailable, "unavailable")
	if took > DefaultRequestBudget+time.Second {
		t.Errorf("device list answered after %v", took)
	}
	proxy.Delay(0)
	waitFor(t, func() bool {
		return e.idp(0, "POST", "/api/v1/authentications", map[string]any{"login_hint": subject}).Status == http.StatusCreated
	})
}

// TestEnrolmentSentAgainAfterAFailure: the enrolment's own script loses its
// reply four times (go-redis's resends too), so the phone gets 503 without
// knowing whether it enrolled; it sends the same request again and gets its
// device, once: no 409, no 410, no device it never learnt of.
func TestEnrolmentSentAgainAfterAFailure(t *testing.T) {
	e, proxy := proxiedEnv(t)
	subject := adeliSubject()
	a := e.createActivation(subject)
	p := newPhone(t)
	body := p.enrolBody(t, e, a)
	proxy.DropReplies(proxy.ScriptWith("'status', 'used'"), 1, 4)
	e.enrolWith(e.url(), body).wantError(t, http.StatusServiceUnavailable, "unavailable")
	if n := len(proxy.Dropped()); n != 4 {
		t.Fatalf("%d replies lost, want 4", n)
	}
	r := e.enrolWith(e.replicas[1].http.URL, body)
	r.wantStatus(t, http.StatusCreated)
	p.deviceID, p.subject = r.json(t)["device_id"].(string), subject
	e.call(e.url(), p, "GET", "/api/v1/device/devices", nil).wantStatus(t, http.StatusOK) // its key works
	r = e.desk("GET", "/api/v1/desk/practitioners/"+subject+"/devices", nil)
	var list struct{ Devices []map[string]any }
	_ = json.Unmarshal(r.Body, &list)
	if len(list.Devices) != 1 || list.Devices[0]["device_id"] != p.deviceID {
		t.Fatalf("devices %s, want only %s", r.Body, p.deviceID)
	}
	// Sent a third time, much later: the same answer.
	e.enrolWith(e.url(), body).wantStatus(t, http.StatusCreated)
	checkAuditOnce(t, e, subject, map[string]int{"activation.created": 1, "device.enrolled": 1})
	// Another key on the used activation is still refused.
	other := newPhone(t)
	e.enrolWith(e.url(), other.enrolBody(t, e, a)).wantError(t, http.StatusGone, "gone")
}

// TestDecisionSentAgainAfterAFailure: the decision script loses its reply
// four times, the phone gets 503 and sends the same signed decision again:
// 204, one decision, one audit entry, delivered once to the IdP. The script
// ran whole the first time (decision, audit entry, readable): the IdP may
// have the result before the phone hears of it.
func TestDecisionSentAgainAfterAFailure(t *testing.T) {
	e, proxy := proxiedEnv(t)
	subject := adeliSubject()
	p := e.newDevice(subject)
	c := e.createAuth(map[string]any{"login_hint": subject})
	ch := e.pendingChallenge(p)
	jws := p.decision(t, e.clock.Now(), ch, "approve", c.VerificationNumber)
	proxy.DropReplies(proxy.ScriptWith("'decision_sha'"), 1, 4)
	e.respond(0, p, ch["challenge_id"].(string), jws).wantError(t, http.StatusServiceUnavailable, "unavailable")
	if n := len(proxy.Dropped()); n != 4 {
		t.Fatalf("%d replies lost, want 4", n)
	}
	checkAuditOnce(t, e, subject, map[string]int{"authentication.created": 1, "authentication.approved": 1})
	e.poll(0, c, "").wantStatus(t, http.StatusOK)
	e.respond(1, p, ch["challenge_id"].(string), jws).wantStatus(t, http.StatusNoContent)
	e.respond(0, p, ch["challenge_id"].(string), jws).wantStatus(t, http.StatusNoContent)
	e.clock.Advance(3 * time.Second)
	e.poll(0, c, "").wantError(t, http.StatusBadRequest, "invalid_grant")
	// Another decision, even by the same device, is a conflict.
	e.respond(0, p, ch["challenge_id"].(string), p.decision(t, e.clock.Now(), ch, "deny", "")).
		wantError(t, http.StatusConflict, "conflict")
	checkAuditOnce(t, e, subject, map[string]int{"authentication.created": 1, "authentication.approved": 1})
}

// TestDeliveringPollOutlastsLostReplies: the poll that delivers an approval
// loses its reply six times, more than go-redis's three resends: the
// service sends the same read again (the same op) within its budget, and
// the IdP gets the approval, once, instead of a 503 that leaves it
// delivered to nobody.
func TestDeliveringPollOutlastsLostReplies(t *testing.T) {
	e, proxy := proxiedEnv(t)
	subject := adeliSubject()
	p := e.newDevice(subject)
	c := e.createAuth(map[string]any{"login_hint": subject})
	ch := e.pendingChallenge(p)
	e.respond(0, p, ch["challenge_id"].(string), p.decision(t, e.clock.Now(), ch, "approve", c.VerificationNumber)).
		wantStatus(t, http.StatusNoContent)
	proxy.DropReplies(proxy.ScriptWith("'poll_op'"), 1, 6)
	e.poll(1, c, "").wantStatus(t, http.StatusOK)
	if n := len(proxy.Dropped()); n != 6 {
		t.Fatalf("%d replies lost, want 6", n)
	}
	e.clock.Advance(3 * time.Second)
	e.poll(0, c, "").wantError(t, http.StatusBadRequest, "invalid_grant")
}
