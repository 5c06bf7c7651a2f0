package keycloak

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"

	"github.com/ecps-sante/ecps/audit"
	"github.com/ecps-sante/ecps/challenge"
	"github.com/ecps-sante/ecps/redistest"
)

const testSubject = "810001234565"

// endpoint is a callback endpoint answering from a script of statuses
// (the last one repeats), counting the calls.
type endpoint struct {
	mu      sync.Mutex
	answers []int
	hangs   []time.Duration // how long each call waits before its answer
	calls   []string        // statuses received
}

func (e *endpoint) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var body struct{ Status string }
	_ = json.NewDecoder(r.Body).Decode(&body)
	e.mu.Lock()
	e.calls = append(e.calls, body.Status)
	code := e.answers[0]
	if len(e.answers) > 1 {
		e.answers = e.answers[1:]
	}
	var hang time.Duration
	if len(e.hangs) > 0 {
		hang, e.hangs = e.hangs[0], e.hangs[1:]
	}
	e.mu.Unlock()
	time.Sleep(hang)
	w.WriteHeader(code)
}

func (e *endpoint) count() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.calls)
}

type queueEnv struct {
	t   *testing.T
	rdb redis.UniversalClient
	cb  *Callbacks
	m   *Metrics
	log *audit.Log
}

func newQueue(t *testing.T, run bool, mutate func(*CallbackOptions)) *queueEnv {
	t.Helper()
	rdb, prefix := redistest.Client(t)
	m := NewMetrics(prometheus.NewRegistry())
	opts := CallbackOptions{KeyPrefix: prefix, PollEvery: 10 * time.Millisecond, BackoffBase: 20 * time.Millisecond,
		BackoffMax: 100 * time.Millisecond, AttemptTimeout: 500 * time.Millisecond, Metrics: m}
	if mutate != nil {
		mutate(&opts)
	}
	log := audit.New(rdb, prefix, 24*time.Hour)
	q := &queueEnv{t: t, rdb: rdb, cb: NewCallbacks(rdb, log, opts), m: m, log: log}
	if run {
		q.run(q.cb)
	}
	return q
}

// run runs a sender until the test ends.
func (q *queueEnv) run(c *Callbacks) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); c.Run(ctx) }()
	q.t.Cleanup(func() { cancel(); <-done })
}

// decided records a login's job at url and queues its decision.
func (q *queueEnv) decided(id, url string, approved bool, accepted time.Time) {
	q.t.Helper()
	ctx := context.Background()
	j := &job{ID: id, URL: url, Token: "tok", Subject: testSubject, Issuer: "https://kc/realms/r", AZP: "app",
		Expires: time.Now().Add(time.Minute), Accepted: accepted}
	if err := q.cb.expect(ctx, j); err != nil {
		q.t.Fatal(err)
	}
	d := challenge.Decided{ChallengeID: id, Subject: testSubject, Approved: approved, Reason: "denied", DeviceID: "dev_1",
		UV: "face", Time: time.Now()}
	if err := q.cb.Decided(ctx, d); err != nil {
		q.t.Fatal(err)
	}
}

// state waits until the job's st is one of want.
func (q *queueEnv) state(id string, want ...string) string {
	q.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		st, _ := q.rdb.HGet(context.Background(), q.cb.keys.job(id), "st").Result()
		for _, w := range want {
			if st == w {
				return st
			}
		}
		if time.Now().After(deadline) {
			q.t.Fatalf("job %s is %q, want %v", id, st, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (q *queueEnv) audited(event string) []audit.Entry {
	q.t.Helper()
	entries, _, err := q.log.List(context.Background(), testSubject, "", 50)
	if err != nil {
		q.t.Fatal(err)
	}
	var out []audit.Entry
	for _, e := range entries {
		if e.Event == event {
			out = append(out, e)
		}
	}
	return out
}

func TestKeycloakCallbackRules(t *testing.T) {
	tests := []struct {
		name     string
		approved bool
		answers  []int
		accepted time.Duration // our 201, before now
		hang     time.Duration
		want     string
		calls    int
	}{
		{name: "ok", approved: true, answers: []int{200}, want: OutcomeSent, calls: 1},
		{name: "retry/5xx", approved: true, answers: []int{500, 502, 503, 200}, want: OutcomeSent, calls: 4},
		{name: "retry/403-before-stored", approved: true, answers: []int{403, 403, 200}, want: OutcomeSent, calls: 3},
		{name: "fail/403-later", approved: true, answers: []int{403, 200}, accepted: 6 * time.Second, want: OutcomeFailed, calls: 1},
		{name: "fail/400", approved: true, answers: []int{400, 200}, want: OutcomeFailed, calls: 1},
		{name: "fail/401", approved: false, answers: []int{401, 200}, want: OutcomeFailed, calls: 1},
		{name: "fail/redirect", approved: true, answers: []int{302, 200}, want: OutcomeFailed, calls: 1},
		{name: "unknown/504", approved: true, answers: []int{504, 200}, want: OutcomeUnknown, calls: 1},
		{name: "unknown/timeout", approved: true, answers: []int{200}, hang: time.Second, want: OutcomeUnknown, calls: 1},
		{name: "retry/unauthorized-504", approved: false, answers: []int{504, 200}, want: OutcomeSent, calls: 2},
		{name: "retry/unauthorized-timeout", approved: false, answers: []int{200}, hang: 700 * time.Millisecond, want: OutcomeSent, calls: 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			q := newQueue(t, true, nil)
			ep := &endpoint{answers: tc.answers}
			if tc.hang > 0 {
				ep.hangs = []time.Duration{tc.hang}
			}
			srv := httptest.NewServer(ep)
			t.Cleanup(srv.Close)
			q.decided("chl_test", srv.URL, tc.approved, time.Now().Add(-tc.accepted))
			q.state("chl_test", OutcomeSent, OutcomeFailed, OutcomeUnknown)
			if st := q.state("chl_test", tc.want); st != tc.want {
				t.Fatalf("outcome %s", st)
			}
			time.Sleep(300 * time.Millisecond)
			if n := ep.count(); n != tc.calls {
				t.Fatalf("%d calls, want %d", n, tc.calls)
			}
			event := map[string]string{OutcomeSent: EventCallbackSent, OutcomeFailed: EventCallbackFailed, OutcomeUnknown: EventCallbackUnknown}[tc.want]
			if got := q.audited(event); len(got) != 1 || got[0].Actor != audit.System {
				t.Fatalf("audit %v", got)
			}
			status := StatusUnauthorized
			if tc.approved {
				status = StatusSucceed
			}
			if testutil.ToFloat64(q.m.CallbackCounter(status, tc.want)) != 1 {
				t.Fatal("outcome not counted")
			}
			if tok, _ := q.rdb.HGet(context.Background(), q.cb.keys.job("chl_test"), "tok").Result(); tok != "" {
				t.Fatal("the token stays after the end")
			}
		})
	}
}

// A refused connection is surely not taken: retried until Keycloak listens.
func TestKeycloakCallbackConnectionRefused(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	q := newQueue(t, true, nil)
	q.decided("chl_refused", "http://"+addr+"/cb", true, time.Now())
	time.Sleep(300 * time.Millisecond)
	if got := testutil.ToFloat64(q.m.Attempts("connect")); got < 2 {
		t.Fatalf("%v refused attempts", got)
	}
	ln, err = net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	ep := &endpoint{answers: []int{200}}
	srv := &http.Server{Handler: ep}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	q.state("chl_refused", OutcomeSent)
	if ep.count() != 1 {
		t.Fatalf("%d calls", ep.count())
	}
}

// A job claimed by a replica that vanished: its SUCCEED may have been sent
// and is never sent again; its UNAUTHORIZED is sent.
func TestKeycloakCallbackStaleClaim(t *testing.T) {
	for _, approved := range []bool{true, false} {
		q := newQueue(t, false, func(o *CallbackOptions) { o.Lease = 50 * time.Millisecond; o.AttemptTimeout = 10 * time.Millisecond })
		ep := &endpoint{answers: []int{200}}
		srv := httptest.NewServer(ep)
		t.Cleanup(srv.Close)
		id := "chl_stale"
		q.decided(id, srv.URL, approved, time.Now())
		// The first replica claims it, then dies.
		ctx := context.Background()
		vals, err := claimScript.Run(ctx, q.rdb, []string{q.cb.keys.job(id), q.cb.keys.due()}, id, time.Now().UnixMilli(), 50,
			"dead-replica", "op-dead").StringSlice()
		if err != nil || vals[0] != "ok" {
			t.Fatalf("claim: %v %v", vals, err)
		}
		q.run(q.cb)
		if approved {
			q.state(id, OutcomeUnknown)
			if len(q.audited(EventCallbackUnknown)) != 1 || ep.count() != 0 {
				t.Fatalf("stale SUCCEED: %d calls", ep.count())
			}
		} else {
			q.state(id, OutcomeSent)
			if ep.count() != 1 {
				t.Fatalf("stale UNAUTHORIZED: %d calls", ep.count())
			}
		}
	}
}

// Past the token's exp nothing is sent.
func TestKeycloakCallbackExpired(t *testing.T) {
	var skew atomic.Int64
	q := newQueue(t, false, func(o *CallbackOptions) {
		o.Now = func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }
	})
	ep := &endpoint{answers: []int{503}}
	srv := httptest.NewServer(ep)
	t.Cleanup(srv.Close)
	q.decided("chl_exp", srv.URL, true, time.Now())
	q.run(q.cb)
	time.Sleep(100 * time.Millisecond)
	skew.Add(int64(2 * time.Minute))
	q.state("chl_exp", OutcomeFailed)
	n := ep.count()
	time.Sleep(100 * time.Millisecond)
	if ep.count() != n || n == 0 {
		t.Fatalf("%d then %d calls", n, ep.count())
	}
}

// Every step run again (go-redis resends after a lost reply) answers as the
// first run did and changes nothing more.
func TestKeycloakCallbackStepsSafeToRunTwice(t *testing.T) {
	q := newQueue(t, false, nil)
	ctx := context.Background()
	id := "chl_twice"
	q.decided(id, "http://127.0.0.1:1/cb", true, time.Now())
	// Recorded again, decided again: nothing changes.
	j := &job{ID: id, URL: "http://other", Expires: time.Now().Add(time.Minute)}
	if err := q.cb.expect(ctx, j); err != nil {
		t.Fatal(err)
	}
	if err := q.cb.Decided(ctx, challenge.Decided{ChallengeID: id, Subject: testSubject}); err != nil {
		t.Fatal(err)
	}
	h := q.rdb.HGetAll(ctx, q.cb.keys.job(id)).Val()
	if h["url"] != "http://127.0.0.1:1/cb" || h["status"] != StatusSucceed || h["st"] != stQueued {
		t.Fatalf("job %v", h)
	}
	keys := []string{q.cb.keys.job(id), q.cb.keys.due()}
	now := time.Now().UnixMilli()
	for i := 0; i < 2; i++ {
		vals, err := claimScript.Run(ctx, q.rdb, keys, id, now, 30000, "me", "op-1").StringSlice()
		if err != nil || vals[0] != "ok" {
			t.Fatalf("claim %d: %v %v", i, vals, err)
		}
	}
	if n := q.rdb.HGet(ctx, keys[0], "n").Val(); n != "1" {
		t.Fatalf("claimed twice: %s attempts counted", n)
	}
	if vals, _ := claimScript.Run(ctx, q.rdb, keys, id, now, 30000, "other", "op-2").StringSlice(); vals[0] != "notdue" {
		t.Fatalf("another claim during the lease: %v", vals)
	}
	for i := 0; i < 2; i++ {
		if res := retryScript.Run(ctx, q.rdb, keys, id, "op-1", now+5, "http_5xx").Val(); res != "ok" {
			t.Fatalf("retry %d: %v", i, res)
		}
	}
	if res := retryScript.Run(ctx, q.rdb, keys, id, "op-other", now+5, "x").Val(); res != "lost" {
		t.Fatalf("retry by another claim: %v", res)
	}
	vals, _ := claimScript.Run(ctx, q.rdb, keys, id, now+10, 30000, "me", "op-3").StringSlice()
	if vals[0] != "ok" {
		t.Fatalf("claim after the retry: %v", vals)
	}
	for i := 0; i < 2; i++ {
		if res := finishScript.Run(ctx, q.rdb, keys, id, "op-3", OutcomeSent, 60000, "").Val(); res != "ok" {
			t.Fatalf("finish %d: %v", i, res)
		}
	}
	if res := finishScript.Run(ctx, q.rdb, keys, id, "op-1", OutcomeFailed, 60000, "").Val(); res != "lost" {
		t.Fatalf("finish by an old claim: %v", res)
	}
	if st := q.rdb.HGet(ctx, keys[0], "st").Val(); st != OutcomeSent {
		t.Fatalf("st %s", st)
	}
	if n, _ := q.rdb.ZCard(ctx, keys[1]).Result(); n != 0 {
		t.Fatalf("%d due", n)
	}
	// A decision for an ended job, or for none: nothing queued.
	if err := q.cb.Decided(ctx, challenge.Decided{ChallengeID: id}); err != nil {
		t.Fatal(err)
	}
	if err := q.cb.Decided(ctx, challenge.Decided{ChallengeID: "chl_none"}); err != nil {
		t.Fatal(err)
	}
	if n, _ := q.rdb.ZCard(ctx, keys[1]).Result(); n != 0 {
		t.Fatalf("%d due", n)
	}
}
