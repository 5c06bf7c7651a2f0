package api

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ecps-sante/ecps/audit"
	"github.com/ecps-sante/ecps/challenge"
	"github.com/ecps-sante/ecps/enrollment"
	"github.com/ecps-sante/ecps/push"
	"github.com/ecps-sante/ecps/push/fcmtest"
)

// fcmEnv is two replicas whose logins push through the FCM queue, the real
// Firebase SDK and a fake FCM.
type fcmEnv struct {
	*env
	fake *fcmtest.Server
	reg  *prometheus.Registry
}

func newFCMEnv(t *testing.T, numberDigits int) *fcmEnv {
	t.Helper()
	rdb, prefix := redisClient(t)
	e := newEnvWith(t, rdb, prefix, 0, func(_ *enrollment.Options, c *challenge.Options) { c.NumberDigits = numberDigits })
	fake := fcmtest.New(t, "ecps-test")
	fcm, err := push.NewFCM(context.Background(), push.FCMOptions{ProjectID: "ecps-test", Endpoint: fake.Endpoint()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(fcm.Close)
	reg := prometheus.NewRegistry()
	metrics := push.NewMetrics(reg)
	quiet := slog.New(slog.NewJSONHandler(io.Discard, nil))
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	var queues []*push.Queue
	for i := 0; i < 2; i++ { // each replica runs its workers
		tokens := enrollment.New(rdb, audit.New(rdb, prefix, 400*24*time.Hour), e.opts)
		q := push.NewQueue(rdb, fcm, tokens, push.QueueOptions{KeyPrefix: prefix, Concurrency: 4,
			AttemptTimeout: 300 * time.Millisecond, ClaimAfter: time.Second, Housekeep: 100 * time.Millisecond,
			Block: 100 * time.Millisecond, BackoffBase: 20 * time.Millisecond, BackoffMax: 200 * time.Millisecond,
			Logger: quiet, Metrics: metrics, Now: e.clock.Now})
		queues = append(queues, q)
		wg.Add(1)
		go func() { defer wg.Done(); q.Run(ctx) }()
	}
	e.sender = queues[0]
	e.replicas = append(e.replicas, e.newReplica())
	e.sender = queues[1]
	e.replicas = append(e.replicas, e.newReplica())
	return &fcmEnv{env: e, fake: fake, reg: reg}
}

// newTokenDevice enrols a phone and gives it a push token of its own (one
// that does not contain its device id, for the privacy scan).
func (e *fcmEnv) newTokenDevice(subject string) (*phone, string) {
	e.t.Helper()
	p := e.newDevice(subject)
	b := make([]byte, 24)
	_, _ = rand.Read(b)
	tok := "fcm:" + base64.RawURLEncoding.EncodeToString(b)
	e.call(e.url(), p, "PUT", "/api/v1/device/push-token", jsonBody(e.t, map[string]string{"provider": "fcm", "token": tok})).
		wantStatus(e.t, http.StatusNoContent)
	return p, tok
}

func (e *fcmEnv) devicePush(p *phone) map[string]bool {
	e.t.Helper()
	r := e.call(e.url(), p, "GET", "/api/v1/device/devices", nil)
	r.wantStatus(e.t, http.StatusOK)
	var list struct {
		Devices []struct {
			DeviceID string `json:"device_id"`
			Push     bool   `json:"push"`
		}
	}
	if err := json.Unmarshal(r.Body, &list); err != nil {
		e.t.Fatal(err)
	}
	out := map[string]bool{}
	for _, d := range list.Devices {
		out[d.DeviceID] = d.Push
	}
	return out
}

// strings of a JSON document: every key and every string value, with the
// path of each value.
func jsonStrings(v any, path string, out map[string]string) {
	switch x := v.(type) {
	case map[string]any:
		for k, val := range x {
			out[path+"/"+k+"#key"] = k
			jsonStrings(val, path+"/"+k, out)
		}
	case []any:
		for i, val := range x {
			jsonStrings(val, path+"/"+strconv.Itoa(i), out)
		}
	case string:
		out[path] = x
	case float64:
		out[path] = strconv.FormatFloat(x, 'f', -1, 64)
	}
}

// A push login reaches every device through FCM with nothing personal in
// any payload; the login completes; a token FCM reports dead is cleared
// (push:false, audited by the system) and that phone polls.
func TestPushLoginThroughFCM(t *testing.T) {
	e := newFCMEnv(t, 6)
	p1, tok1 := e.newTokenDevice(subjectA)
	p2, tok2 := e.newTokenDevice(subjectA)
	const bm = "Connexion à Ameli Pro — Dr Martin"
	c := e.createAuth(map[string]any{"login_hint": subjectA, "binding_message": bm, "requested_expiry": 90})
	got, ok := e.fake.WaitReceived(2, 5*time.Second)
	if !ok {
		t.Fatalf("%d pushes received", len(got))
	}
	ch := e.pendingChallenge(p1)
	created := e.clock.Now()

	// The privacy scan: every payload FCM received.
	forbidden := []string{subjectA, "Test IdP", bm, "Dr Martin", p1.deviceID, p2.deviceID, ch["nonce"].(string)}
	tokens := map[string]bool{}
	for _, m := range got {
		tokens[m.Token] = true
		var body map[string]any
		if err := json.Unmarshal(m.Body, &body); err != nil {
			t.Fatal(err)
		}
		strs := map[string]string{}
		jsonStrings(body, "", strs)
		for path, s := range strs {
			if strings.HasSuffix(path, "/message/token") {
				continue
			}
			for _, f := range forbidden {
				if strings.Contains(s, f) {
					t.Fatalf("the push holds %q at %s: %s", f, path, m.Body)
				}
			}
			if strings.HasSuffix(path, "/apns-expiration") {
				if want := strconv.FormatInt(created.Add(90*time.Second).Unix(), 10); s != want {
					t.Fatalf("apns-expiration %s, want %s", s, want)
				}
				continue
			}
			if strings.Contains(s, c.VerificationNumber) {
				t.Fatalf("the push holds the verification number at %s: %s", path, m.Body)
			}
		}
		data := m.Message["data"].(map[string]any)
		if len(data) != 2 || data["type"] != "challenge" || data["challenge_id"] != ch["challenge_id"] {
			t.Fatalf("data %v, challenge %v", data, ch["challenge_id"])
		}
		if m.Message["notification"] != nil {
			t.Fatal("a notification block: Android must be data-only")
		}
	}
	if !tokens[tok1] || !tokens[tok2] {
		t.Fatal("not one push per device")
	}

	// The login completes as usual.
	e.respond(0, p1, ch["challenge_id"].(string), p1.decision(t, e.clock.Now(), ch, "approve", c.VerificationNumber)).
		wantStatus(t, http.StatusNoContent)
	e.clock.Advance(3 * time.Second)
	e.poll(1, c, "").wantStatus(t, http.StatusOK)

	// Phone 2 was uninstalled: FCM says UNREGISTERED.
	e.fake.Script(tok2, fcmtest.Unregistered())
	c2 := e.createAuth(map[string]any{"login_hint": subjectA})
	eventually(t, 5*time.Second, "dead token not cleared", func() bool { return !e.devicePush(p1)[p2.deviceID] })
	if push := e.devicePush(p2); !push[p1.deviceID] || push[p2.deviceID] {
		t.Fatalf("push flags %v", push)
	}
	events := e.auditEvents(subjectA)
	if countOf(events, audit.DevicePushTokenClear) != 1 {
		t.Fatalf("audit %v", events)
	}
	r := e.desk("GET", "/api/v1/desk/audit?subject="+subjectA, nil)
	if strings.Contains(string(r.Body), tok2) {
		t.Fatal("the audit shows a push token")
	}
	var page struct {
		Entries []audit.Entry `json:"entries"`
	}
	_ = json.Unmarshal(r.Body, &page)
	for _, en := range page.Entries {
		if en.Event == audit.DevicePushTokenClear &&
			(en.Actor.Type != audit.ActorSystem || en.Details["device_id"] != p2.deviceID || en.Details["reason"] != "unregistered") {
			t.Fatalf("entry %+v", en)
		}
	}
	eventually(t, 2*time.Second, "tokens cleared metric", func() bool { return gathered(t, e.reg, "ecps_push_tokens_cleared_total") == 1 })
	e.poll(0, c2, "").wantError(t, http.StatusBadRequest, "authorization_pending")

	// The next login pushes to phone 1 only; phone 2 finds it by polling.
	e.clock.Advance(3 * time.Second)
	ch2 := e.pendingChallenge(p2)
	before := len(e.fake.Received())
	c3 := e.createAuth(map[string]any{"login_hint": subjectA})
	if _, ok := e.fake.WaitReceived(before+1, 5*time.Second); !ok {
		t.Fatal("no push to phone 1")
	}
	time.Sleep(200 * time.Millisecond)
	if e.fake.RequestsFor(tok2) != 2 { // the first login, the UNREGISTERED one
		t.Fatal("pushed again to a cleared token")
	}
	if ch2["challenge_id"] == nil {
		t.Fatal("phone 2 does not see the pending login")
	}
	e.poll(0, c3, "").wantError(t, http.StatusBadRequest, "authorization_pending")
}

// FCM down for the whole test: logins still complete by polling; every push
// ends at its login's expiry and the queue is emptied.
func TestPushFCMDownLoginsCompleteByPolling(t *testing.T) {
	e := newFCMEnv(t, 2)
	e.fake.SetDefault(fcmtest.Unavailable(""))
	p, _ := e.newTokenDevice(subjectA)
	c := e.createAuth(map[string]any{"login_hint": subjectA, "requested_expiry": 30})
	eventually(t, 3*time.Second, "no attempt", func() bool { return len(e.fake.Requests()) >= 2 })
	ch := e.pendingChallenge(p)
	e.respond(1, p, ch["challenge_id"].(string), p.decision(t, e.clock.Now(), ch, "approve", c.VerificationNumber)).
		wantStatus(t, http.StatusNoContent)
	e.clock.Advance(3 * time.Second)
	e.poll(0, c, "").wantStatus(t, http.StatusOK)

	e.clock.Advance(30 * time.Second) // past the expiry
	eventually(t, 3*time.Second, "push not given up", func() bool { return gathered(t, e.reg, "ecps_push_failed_total") == 1 })
	eventually(t, 3*time.Second, "queue not emptied", func() bool {
		var total int64
		for _, s := range push.StreamKeys(e.prefix, 0) {
			n, _ := e.rdb.XLen(context.Background(), s).Result()
			total += n
		}
		return total == 0
	})
	if len(e.fake.Received()) != 0 {
		t.Fatal("received with FCM down")
	}
	n := len(e.fake.Requests())
	time.Sleep(300 * time.Millisecond)
	if len(e.fake.Requests()) != n {
		t.Fatal("attempts after the expiry")
	}
}

// gathered sums the samples of a metric family of reg.
func gathered(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	sum := 0.0
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			sum += m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	return sum
}

// eventually polls cond for up to d.
func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
