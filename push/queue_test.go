package push

import (
	"context"
	"fmt"
	"log/slog"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"

	"github.com/ecps-sante/ecps/push/fcmtest"
	"github.com/ecps-sante/ecps/redistest"
)

// clearedToken is one ClearPushToken call.
type clearedToken struct{ deviceID, token, reason string }

// tokenRecorder is a TokenClearer that records its calls.
type tokenRecorder struct {
	mu    sync.Mutex
	calls []clearedToken
}

func (r *tokenRecorder) ClearPushToken(_ context.Context, deviceID, token, reason string) (bool, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, clearedToken{deviceID, token, reason})
	return true, nil
}

func (r *tokenRecorder) all() []clearedToken {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]clearedToken(nil), r.calls...)
}

// qenv is a real Redis, the real SDK and a fake FCM.
type qenv struct {
	t      *testing.T
	rdb    redis.UniversalClient
	prefix string
	fake   *fcmtest.Server
	fcm    *FCM
	tokens *tokenRecorder
}

func newQEnv(t *testing.T) *qenv {
	t.Helper()
	rdb, prefix := redistest.Client(t)
	fake := fcmtest.New(t, testProject)
	return &qenv{t: t, rdb: rdb, prefix: prefix, fake: fake, fcm: newTestFCM(t, fake), tokens: &tokenRecorder{}}
}

// fastOptions are test timings: short leases, quick housekeeping.
func (e *qenv) fastOptions() QueueOptions {
	return QueueOptions{KeyPrefix: e.prefix, Concurrency: 4, AttemptTimeout: 300 * time.Millisecond,
		ClaimAfter: time.Second, Housekeep: 100 * time.Millisecond, Block: 100 * time.Millisecond,
		BackoffBase: 20 * time.Millisecond, BackoffMax: 200 * time.Millisecond,
		Metrics: NewMetrics(prometheus.NewRegistry())}
}

// replica is one running Queue.
type replica struct {
	q    *Queue
	stop func()
}

func (e *qenv) start(opts QueueOptions) *replica {
	e.t.Helper()
	return e.startOn(e.rdb, opts)
}

// startOn runs a replica on a client of its own.
func (e *qenv) startOn(rdb redis.UniversalClient, opts QueueOptions) *replica {
	e.t.Helper()
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	q := NewQueue(rdb, e.fcm, e.tokens, opts)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); q.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				e.t.Error("Run did not return after cancel")
			}
		})
	}
	e.t.Cleanup(stop)
	return &replica{q: q, stop: stop}
}

// streamLen is the number of entries in every shard.
func (e *qenv) streamLen() int64 {
	var total int64
	for _, s := range StreamKeys(e.prefix, 0) {
		n, err := e.rdb.XLen(context.Background(), s).Result()
		if err != nil {
			e.t.Fatal(err)
		}
		total += n
	}
	return total
}

// shardStream is the stream of a login's shard.
func (e *qenv) shardStream(challengeID string) string {
	k := newKeys(e.prefix, DefaultShards)
	return k.stream(k.shard(challengeID))
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

func login(n int, devices int, expires time.Time) []Job {
	var jobs []Job
	for d := 0; d < devices; d++ {
		jobs = append(jobs, Job{ChallengeID: fmt.Sprintf("chl_login%011d", n), DeviceID: fmt.Sprintf("dev_%d_%d", n, d),
			Token: fmt.Sprintf("tok-%d-%d", n, d), ExpiresAt: expires})
	}
	return jobs
}

func counter(c prometheus.Collector) float64 { return testutil.ToFloat64(c) }

// One push per device, once, however often the enqueue is retried; the
// stream is empty once they are sent.
func TestQueueSendsOncePerDevice(t *testing.T) {
	e := newQEnv(t)
	opts := e.fastOptions()
	r := e.start(opts)
	jobs := login(1, 3, time.Now().Add(time.Minute))
	for i := 0; i < 3; i++ { // a retried enqueue adds nothing
		if err := r.q.Send(context.Background(), jobs); err != nil {
			t.Fatal(err)
		}
	}
	got, ok := e.fake.WaitReceived(3, 5*time.Second)
	if !ok {
		t.Fatalf("%d received", len(got))
	}
	time.Sleep(300 * time.Millisecond)
	if n := len(e.fake.Received()); n != 3 {
		t.Fatalf("%d messages for 3 devices", n)
	}
	seen := map[string]bool{}
	for _, m := range got {
		if seen[m.Token] {
			t.Fatalf("token %s pushed twice", m.Token)
		}
		seen[m.Token] = true
	}
	eventually(t, 2*time.Second, "stream not emptied", func() bool { return e.streamLen() == 0 })
	if v := counter(opts.Metrics.sent); v != 3 {
		t.Fatalf("sent metric %v", v)
	}
	if v := counter(opts.Metrics.enqueueTotal); v != 3 {
		t.Fatalf("enqueued metric %v", v)
	}
}

// Each FCM error class leads to its behaviour.
func TestQueueErrorClasses(t *testing.T) {
	e := newQEnv(t)
	opts := e.fastOptions()
	r := e.start(opts)
	ctx := context.Background()
	exp := time.Now().Add(time.Minute)
	send := func(n int, script ...fcmtest.Reply) Job {
		j := login(n, 1, exp)[0]
		e.fake.Script(j.Token, script...)
		if err := r.q.Send(ctx, []Job{j}); err != nil {
			t.Fatal(err)
		}
		return j
	}

	t.Run("transient/retried_until_sent", func(t *testing.T) {
		j := send(1, fcmtest.Unavailable(""), fcmtest.Internal(), fcmtest.QuotaExceeded("0"), fcmtest.BadGateway(),
			fcmtest.Reply{Status: 429, Code: "RESOURCE_EXHAUSTED"})
		eventually(t, 5*time.Second, "not sent after transient errors", func() bool { return delivered(e.fake, j.Token) == 1 })
		if n := e.fake.RequestsFor(j.Token); n != 6 {
			t.Fatalf("%d requests, want 5 failures + 1 success", n)
		}
		for _, reason := range []string{"unavailable", "internal", "quota", "http_5xx", "http_429"} {
			if v := counter(opts.Metrics.attemptErrs.WithLabelValues(reason)); v != 1 {
				t.Fatalf("attempt errors %s = %v", reason, v)
			}
		}
	})
	for _, c := range []struct {
		name, reason string
		reply        fcmtest.Reply
	}{
		{"dead/unregistered", "unregistered", fcmtest.Unregistered()},
		{"dead/sender_id_mismatch", "sender_id_mismatch", fcmtest.SenderIDMismatch()},
		{"dead/invalid_token", "invalid_token", fcmtest.InvalidToken()},
	} {
		t.Run(c.name, func(t *testing.T) {
			j := send(10+len(e.tokens.all()), c.reply)
			eventually(t, 3*time.Second, "token not cleared", func() bool {
				for _, cl := range e.tokens.all() {
					if cl == (clearedToken{j.DeviceID, j.Token, c.reason}) {
						return true
					}
				}
				return false
			})
			time.Sleep(200 * time.Millisecond)
			if n := e.fake.RequestsFor(j.Token); n != 1 {
				t.Fatalf("a dead token was retried: %d requests", n)
			}
		})
	}
	t.Run("rejected/payload_keeps_token", func(t *testing.T) {
		before := len(e.tokens.all())
		j := send(20, fcmtest.InvalidPayload())
		eventually(t, 3*time.Second, "not rejected", func() bool { return counter(opts.Metrics.failed.WithLabelValues(FailRejected)) == 1 })
		time.Sleep(200 * time.Millisecond)
		if n := e.fake.RequestsFor(j.Token); n != 1 || len(e.tokens.all()) != before {
			t.Fatalf("requests %d, clear calls %d → %d", n, before, len(e.tokens.all()))
		}
	})
	t.Run("auth/apns_shows_on_status_then_sent", func(t *testing.T) {
		j := send(30, fcmtest.ThirdPartyAuth())
		eventually(t, 3*time.Second, "not sent after an APNs auth error", func() bool { return delivered(e.fake, j.Token) == 1 })
		if st := r.q.Status(); st.Status != "auth_error" || st.Since == nil || st.Provider != "fcm" {
			t.Fatalf("status %+v", st)
		}
		if v := counter(opts.Metrics.authFailing.WithLabelValues(authKindAPNs)); v != 1 {
			t.Fatalf("auth failing gauge %v", v)
		}
	})
	if v := counter(opts.Metrics.tokensClear); v != 3 {
		t.Fatalf("tokens cleared metric %v", v)
	}
	if len(e.fake.Received()) != 2 {
		t.Fatalf("%d received", len(e.fake.Received()))
	}
}

func delivered(fake *fcmtest.Server, token string) int {
	n := 0
	for _, m := range fake.Received() {
		if m.Token == token {
			n++
		}
	}
	return n
}

// A refused service account: retried (never silently dropped) until the
// login expires, shown on Status, nothing sent after the expiry; a success
// clears the state.
func TestQueueAuthErrorRetriedUntilExpiry(t *testing.T) {
	e := newQEnv(t)
	opts := e.fastOptions()
	r := e.start(opts)
	e.fake.SetDefault(fcmtest.Unauthenticated())
	exp := time.Now().Add(2500 * time.Millisecond)
	j := login(1, 1, exp)[0]
	if err := r.q.Send(context.Background(), []Job{j}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 2*time.Second, "status not auth_error", func() bool { return r.q.Status().Status == "auth_error" })
	eventually(t, 5*time.Second, "not given up", func() bool { return counter(opts.Metrics.failed.WithLabelValues(FailAuth)) == 1 })
	n := e.fake.RequestsFor(j.Token)
	if n < 3 {
		t.Fatalf("only %d attempts", n)
	}
	for _, rq := range e.fake.Requests() {
		if !rq.At.Before(exp) {
			t.Fatalf("a request at %v, after the expiry %v", rq.At, exp)
		}
	}
	time.Sleep(300 * time.Millisecond)
	if e.fake.RequestsFor(j.Token) != n {
		t.Fatal("attempts after giving up")
	}
	e.fake.SetDefault(fcmtest.OK())
	j2 := login(2, 1, time.Now().Add(time.Minute))[0]
	_ = r.q.Send(context.Background(), []Job{j2})
	eventually(t, 3*time.Second, "not sent", func() bool { return delivered(e.fake, j2.Token) == 1 })
	eventually(t, time.Second, "status not ok after a success", func() bool { return r.q.Status().Status == "ok" })
}

// A Retry-After is honoured, and each attempt carries the TTL left then.
func TestQueueRetryAfterAndTTL(t *testing.T) {
	e := newQEnv(t)
	opts := e.fastOptions()
	r := e.start(opts)
	exp := time.Now().Add(60 * time.Second)
	j := login(1, 1, exp)[0]
	e.fake.Script(j.Token, fcmtest.QuotaExceeded("2"))
	if err := r.q.Send(context.Background(), []Job{j}); err != nil {
		t.Fatal(err)
	}
	got, ok := e.fake.WaitReceived(1, 5*time.Second)
	if !ok {
		t.Fatal("not sent")
	}
	reqs := e.fake.Requests()
	if len(reqs) != 2 || reqs[1].At.Sub(reqs[0].At) < 2*time.Second {
		t.Fatalf("requests %+v: Retry-After 2 s not honoured", reqs)
	}
	ttl := got[0].Message["android"].(map[string]any)["ttl"].(string)
	left := int(time.Until(exp).Seconds())
	if ttl != fmt.Sprintf("%ds", left) && ttl != fmt.Sprintf("%ds", left+1) {
		t.Fatalf("ttl %s, want the time left (%d s)", ttl, left)
	}
}

// Nothing is ever sent after the expiry: a push queued too late is dropped,
// and retries stop before it.
func TestQueueNothingAfterExpiry(t *testing.T) {
	e := newQEnv(t)
	opts := e.fastOptions()
	r := e.start(opts)
	late := login(1, 1, time.Now().Add(500*time.Millisecond))[0] // less than MinTTL left
	if err := r.q.Send(context.Background(), []Job{late}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 3*time.Second, "late push not dropped", func() bool { return counter(opts.Metrics.failed.WithLabelValues(FailExpired)) == 1 })
	if e.fake.RequestsFor(late.Token) != 0 {
		t.Fatal("a push was attempted with less than MinTTL left")
	}

	e.fake.SetDefault(fcmtest.Unavailable(""))
	exp := time.Now().Add(2 * time.Second)
	j := login(2, 1, exp)[0]
	if err := r.q.Send(context.Background(), []Job{j}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "not given up", func() bool { return counter(opts.Metrics.failed.WithLabelValues(FailTransient)) == 1 })
	for _, rq := range e.fake.Requests() {
		if rq.Token == j.Token && !rq.At.Before(exp.Add(-opts.MinTTL+50*time.Millisecond)) {
			t.Fatalf("attempt at %v, expiry %v", rq.At, exp)
		}
	}
	eventually(t, 2*time.Second, "stream not emptied", func() bool { return e.streamLen() == 0 })
}

// A replica that took a push and died before sending it (never acknowledged)
// loses it to another replica, which sends it once.
func TestQueueTakeOverFromDeadReplica(t *testing.T) {
	e := newQEnv(t)
	ctx := context.Background()
	opts := e.fastOptions()
	producer := NewQueue(e.rdb, e.fcm, e.tokens, opts)
	j := login(1, 1, time.Now().Add(time.Minute))[0]
	if err := e.rdb.XGroupCreateMkStream(ctx, e.shardStream(j.ChallengeID), group, "0").Err(); err != nil {
		t.Fatal(err)
	}
	if err := producer.Send(ctx, []Job{j}); err != nil {
		t.Fatal(err)
	}
	// The dying replica: takes the push, then nothing more.
	taken, err := e.rdb.XReadGroup(ctx, &redis.XReadGroupArgs{Group: group, Consumer: "dead-replica",
		Streams: []string{e.shardStream(j.ChallengeID), ">"}, Count: 10}).Result()
	if err != nil || len(taken[0].Messages) != 1 {
		t.Fatalf("take: %v %v", taken, err)
	}
	start := time.Now()
	r := e.start(opts)
	if _, ok := e.fake.WaitReceived(1, 5*time.Second); !ok {
		t.Fatal("the push of a dead replica was never sent")
	}
	if el := time.Since(start); el < opts.ClaimAfter-200*time.Millisecond {
		t.Fatalf("taken over after %v, before ClaimAfter", el)
	}
	time.Sleep(500 * time.Millisecond)
	if n := len(e.fake.Received()); n != 1 {
		t.Fatalf("sent %d times", n)
	}
	if v := counter(r.q.m.reclaimed); v != 1 {
		t.Fatalf("reclaimed %v", v)
	}
	eventually(t, 2*time.Second, "stream not emptied", func() bool { return e.streamLen() == 0 })
}

// A live replica's pushes waiting for a long retry are never taken over:
// it renews its lease; the push is sent once.
func TestQueueLeaseRenewed(t *testing.T) {
	e := newQEnv(t)
	opts := e.fastOptions()
	a := e.start(opts)
	j := login(1, 1, time.Now().Add(time.Minute))[0]
	e.fake.Script(j.Token, fcmtest.Unavailable("3")) // waits 3 s > ClaimAfter (1 s)
	if err := a.q.Send(context.Background(), []Job{j}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 2*time.Second, "first attempt", func() bool { return e.fake.RequestsFor(j.Token) == 1 })
	b := e.start(opts)
	if _, ok := e.fake.WaitReceived(1, 6*time.Second); !ok {
		t.Fatal("not sent")
	}
	time.Sleep(500 * time.Millisecond)
	if n := e.fake.RequestsFor(j.Token); n != 2 {
		t.Fatalf("%d requests, want 2", n)
	}
	if v := counter(b.q.m.reclaimed) + counter(a.q.m.reclaimed); v != 0 {
		t.Fatalf("a live replica's push was taken over (%v)", v)
	}
}

// A replica that stops gracefully hands its waiting pushes back: another
// replica sends them at once, not after ClaimAfter.
func TestQueueStopHandsBack(t *testing.T) {
	e := newQEnv(t)
	opts := e.fastOptions()
	opts.ClaimAfter = 30 * time.Second
	opts.AttemptTimeout = time.Second
	a := e.start(opts)
	j := login(1, 1, time.Now().Add(time.Minute))[0]
	e.fake.Script(j.Token, fcmtest.Unavailable("1"))
	if err := a.q.Send(context.Background(), []Job{j}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 2*time.Second, "first attempt", func() bool { return e.fake.RequestsFor(j.Token) == 1 })
	a.stop()
	start := time.Now()
	e.start(opts)
	if _, ok := e.fake.WaitReceived(1, 5*time.Second); !ok {
		t.Fatal("a handed-back push was not sent")
	}
	if el := time.Since(start); el > 3*time.Second {
		t.Fatalf("sent after %v", el)
	}
}

// A push handed back while it waits out a Retry-After keeps it: the replica
// that takes it over does not send it before the Retry-After has passed.
func TestQueueStopKeepsRetryAfter(t *testing.T) {
	e := newQEnv(t)
	opts := e.fastOptions()
	opts.ClaimAfter = 30 * time.Second
	opts.AttemptTimeout = time.Second
	a := e.start(opts)
	j := login(1, 1, time.Now().Add(time.Minute))[0]
	e.fake.Script(j.Token, fcmtest.QuotaExceeded("3")) // 429, Retry-After: 3
	if err := a.q.Send(context.Background(), []Job{j}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 2*time.Second, "first attempt", func() bool { return e.fake.RequestsFor(j.Token) == 1 })
	first := e.fake.Requests()[0].At
	notBefore := first.Add(3 * time.Second)
	eventually(t, 2*time.Second, "not waiting for its retry", func() bool {
		a.q.mu.Lock()
		defer a.q.mu.Unlock()
		return len(a.q.retry) == 1
	})
	a.stop()
	if a.q.heldCount() != 0 {
		t.Fatal("still held after the stop")
	}

	// The copy in the stream carries the not-before time.
	msgs, err := e.rdb.XRange(context.Background(), e.shardStream(j.ChallengeID), "-", "+").Result()
	if err != nil || len(msgs) != 1 {
		t.Fatalf("stream after the stop: %v %v", msgs, err)
	}
	w, _ := msgs[0].Values["w"].(string)
	if ms, err := strconv.ParseInt(w, 10, 64); err != nil || time.UnixMilli(ms).Before(notBefore) {
		t.Fatalf("handed back with w=%q, want not before %v", w, notBefore.UnixMilli())
	}

	b := e.start(opts)
	got, ok := e.fake.WaitReceived(1, 6*time.Second)
	if !ok {
		t.Fatal("a handed-back push was not sent")
	}
	if got[0].At.Before(notBefore) {
		t.Fatalf("sent %v after the first attempt: Retry-After 3 s not honoured", got[0].At.Sub(first))
	}
	if late := got[0].At.Sub(notBefore); late > 2*time.Second {
		t.Fatalf("sent %v after the Retry-After", late)
	}
	time.Sleep(200 * time.Millisecond)
	if n := e.fake.RequestsFor(j.Token); n != 2 {
		t.Fatalf("%d requests, want 2", n)
	}
	if v := counter(b.q.m.reclaimed); v != 0 {
		t.Fatalf("taken over after ClaimAfter (%v), not handed back", v)
	}
}

// At most Concurrency sends are in flight per replica.
func TestQueueBoundedConcurrency(t *testing.T) {
	e := newQEnv(t)
	opts := e.fastOptions()
	opts.Concurrency = 3
	e.fake.SetDelay(100 * time.Millisecond)
	r := e.start(opts)
	for i := 0; i < 15; i++ {
		if err := r.q.Send(context.Background(), login(i, 1, time.Now().Add(time.Minute))); err != nil {
			t.Fatal(err)
		}
	}
	if _, ok := e.fake.WaitReceived(15, 10*time.Second); !ok {
		t.Fatal("not all sent")
	}
	if m := e.fake.MaxInFlight(); m != 3 {
		t.Fatalf("max in flight %d, want 3", m)
	}
}

// FCM down for the whole test: nothing is sent, every push ends at its
// login's expiry, the stream is emptied, and once the replicas stop no
// goroutine is left behind.
func TestQueueFCMDownNoLeak(t *testing.T) {
	e := newQEnv(t)
	baseline := runtime.NumGoroutine()
	down := fcmtest.Start(testProject)
	down.Close() // connection refused
	fcm, err := NewFCM(context.Background(), FCMOptions{ProjectID: testProject, Endpoint: down.Endpoint()})
	if err != nil {
		t.Fatal(err)
	}
	e.fcm = fcm
	opts := e.fastOptions()
	r1, r2 := e.start(opts), e.start(opts)
	exp := time.Now().Add(2 * time.Second)
	for i := 0; i < 50; i++ {
		if err := r1.q.Send(context.Background(), login(i, 2, exp)); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 6*time.Second, "pushes not all given up", func() bool {
		return counter(opts.Metrics.failed.WithLabelValues(FailTransient)) == 100
	})
	eventually(t, 2*time.Second, "stream not emptied", func() bool { return e.streamLen() == 0 })
	if r1.q.heldCount()+r2.q.heldCount() != 0 {
		t.Fatal("pushes still held")
	}
	if counter(opts.Metrics.sent) != 0 {
		t.Fatal("sent with FCM down")
	}
	r1.stop()
	r2.stop()
	fcm.Close()
	eventually(t, 5*time.Second, "goroutines left", func() bool { return runtime.NumGoroutine() <= baseline })
	for _, s := range StreamKeys(e.prefix, 0) {
		if n, err := e.rdb.XPending(context.Background(), s, group).Result(); err == nil && n.Count != 0 {
			t.Fatalf("%s: %d pending entries", s, n.Count)
		}
	}
}
