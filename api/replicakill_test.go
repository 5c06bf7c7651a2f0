package api

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/ecps-sante/ecps/audit"
	"github.com/ecps-sante/ecps/challenge"
	"github.com/ecps-sante/ecps/enrollment"
	"github.com/ecps-sante/ecps/push"
	"github.com/ecps-sante/ecps/push/fcmtest"
	"github.com/ecps-sante/ecps/redistest"
)

// sharedRedisAddr is the address and database of the shared test Redis, or
// of a server of the test's own.
func sharedRedisAddr(t *testing.T) (string, int) {
	if u := os.Getenv("ECPS_TEST_REDIS_URL"); u != "" {
		opt, err := redis.ParseURL(u)
		if err != nil {
			t.Fatal(err)
		}
		return opt.Addr, opt.DB
	}
	return redistest.Start(t).Addr(), 0
}

// TestReplicaKilledDuringLongPollsAndPushes: replica 0 dies (its HTTP
// server and its connections cut, its hub and its push workers stopped
// without handing anything back, as a SIGKILL would) while IdPs long-poll
// on it and while it holds pushes that FCM refused for now. The IdPs' next
// polls, on replica 1, get the results of the decisions taken afterwards;
// the pushes replica 0 held are taken over and sent by replica 1, once per
// device.
func TestReplicaKilledDuringLongPollsAndPushes(t *testing.T) {
	addr, db := sharedRedisAddr(t)
	rdb := redis.NewClient(&redis.Options{Addr: addr, DB: db})
	t.Cleanup(func() { _ = rdb.Close() })
	prefix := redistest.Prefix()
	e := newEnvWith(t, rdb, prefix, 0, func(_ *enrollment.Options, o *challenge.Options) {
		o.PendingPerSubject, o.PushesPerSubject = 1000, 100000
	})
	fake := fcmtest.New(t, "ecps-test")
	fake.SetDefault(fcmtest.Unavailable("")) // pushes wait in their replica for a retry
	fcm, err := push.NewFCM(context.Background(), push.FCMOptions{ProjectID: "ecps-test", Endpoint: fake.Endpoint()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(fcm.Close)
	quiet := slog.New(slog.NewJSONHandler(io.Discard, nil))
	metrics := push.NewMetrics(prometheus.NewRegistry())
	// Replica 0's push workers reach Redis through a proxy: killed, their
	// connections are cut before they can hand anything back.
	proxy := redistest.NewFaultProxy(t, addr)
	rdb0 := redis.NewClient(&redis.Options{Addr: proxy.Addr(), DB: db, MaxRetries: -1})
	t.Cleanup(func() { _ = rdb0.Close() })
	var stops []context.CancelFunc
	var wg sync.WaitGroup
	for i, c := range []*redis.Client{rdb0, rdb} {
		tokens := enrollment.New(c, audit.New(c, prefix, 400*24*time.Hour), e.opts)
		q := push.NewQueue(c, fcm, tokens, push.QueueOptions{KeyPrefix: prefix, Concurrency: 4, Consumer: []string{"replica-0", "replica-1"}[i],
			AttemptTimeout: 300 * time.Millisecond, ClaimAfter: time.Second, Housekeep: 100 * time.Millisecond,
			Block: 100 * time.Millisecond, BackoffBase: 200 * time.Millisecond, BackoffMax: 400 * time.Millisecond,
			Logger: quiet, Metrics: metrics, Now: e.clock.Now})
		ctx, cancel := context.WithCancel(context.Background())
		stops = append(stops, cancel)
		wg.Add(1)
		go func() { defer wg.Done(); q.Run(ctx) }()
		e.sender = q
		e.replicas = append(e.replicas, e.newReplica())
	}
	t.Cleanup(func() {
		for _, s := range stops {
			s()
		}
		wg.Wait()
	})

	// Logins, created on both replicas, until replica 0 holds pushes.
	type login struct {
		p *phone
		c created
	}
	var logins []login
	held := func(consumer string) int64 {
		var total int64
		for _, s := range push.StreamKeys(prefix, 0) {
			n, err := rdb.XPendingExt(context.Background(), &redis.XPendingExtArgs{Stream: s,
				Group: "senders", Start: "-", End: "+", Count: 100, Consumer: consumer}).Result()
			if err == nil {
				total += int64(len(n))
			}
		}
		return total
	}
	for i := 0; len(logins) < 6 || held("replica-0") == 0; i++ {
		if i == 20 {
			t.Fatal("replica 0 never took a push")
		}
		p := e.newPushDevice(adeliSubject())
		r := e.idp(i%2, "POST", "/api/v1/authentications", map[string]any{"login_hint": p.subject})
		r.wantStatus(t, http.StatusCreated)
		var c created
		_ = json.Unmarshal(r.Body, &c)
		logins = append(logins, login{p, c})
		time.Sleep(100 * time.Millisecond)
	}
	heldBy0 := held("replica-0")

	// IdPs long-poll on replica 0.
	cl := &http.Client{Timeout: 40 * time.Second}
	results := make(chan pollResult, len(logins))
	for _, l := range logins {
		go func() { results <- longPoll(cl, e.replicas[0].http.URL, l.c.AuthReqID, "?wait=30", 0) }()
	}
	waitFor(t, func() bool { return e.replicas[0].hub.Waiting() == len(logins) })

	// Replica 0 dies.
	killed := time.Now()
	proxy.Refuse(true, true)
	stops[0]()
	e.replicas[0].stop()
	e.replicas[0].http.CloseClientConnections()
	e.replicas[0].http.Close()
	for range logins {
		r := <-results
		if r.err == nil && r.status == http.StatusOK {
			t.Fatalf("a long-poll on the dead replica got a result: %s", r.body)
		}
	}
	t.Logf("%d logins, %d pushes held by replica 0 when it died; its %d long-polls cut after %v",
		len(logins), heldBy0, len(logins), time.Since(killed).Round(time.Millisecond))

	// FCM works again: every device gets its push once, replica 1 sending
	// what replica 0 held.
	fake.SetDefault(fcmtest.OK())
	if got, ok := fake.WaitReceived(len(logins), 10*time.Second); !ok {
		t.Fatalf("%d of %d pushes sent after the replica died", len(got), len(logins))
	}
	t.Logf("every push sent %v after the kill", time.Since(killed).Round(time.Millisecond))
	time.Sleep(500 * time.Millisecond)
	perToken := map[string]int{}
	for _, m := range fake.Received() {
		perToken[m.Token]++
	}
	for _, l := range logins {
		if n := perToken["tok-"+l.p.deviceID]; n != 1 {
			t.Errorf("device %s got %d pushes, want 1", l.p.deviceID, n)
		}
	}

	// The phones approve through replica 1; the IdPs' next polls, on
	// replica 1, get the results.
	e.replicas = e.replicas[1:]
	e.clock.Advance(10 * time.Second) // the IdPs wait their interval before polling again
	for _, l := range logins {
		ch := e.pendingChallenge(l.p)
		e.respond(0, l.p, ch["challenge_id"].(string), l.p.decision(t, e.clock.Now(), ch, "approve", l.c.VerificationNumber)).
			wantStatus(t, http.StatusNoContent)
		r := e.poll(0, l.c, "?wait=5")
		r.wantStatus(t, http.StatusOK)
		if !strings.Contains(string(r.Body), l.p.subject) {
			t.Fatalf("result %s", r.Body)
		}
	}
}
