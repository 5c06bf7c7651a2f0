package api

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ecps-sante/ecps/challenge"
	"github.com/ecps-sante/ecps/enrollment"
	"github.com/ecps-sante/ecps/redistest"
)

// pollResult is one long-poll's answer, as seen from a goroutine that must
// not call t.Fatal.
type pollResult struct {
	replica int
	status  int
	code    string
	body    string
	took    time.Duration
	err     error
}

// longPoll sends an IdP poll with client cl and never fails the test itself.
func longPoll(cl *http.Client, base, authReqID, query string, replica int) pollResult {
	start := time.Now()
	out := pollResult{replica: replica}
	req, err := http.NewRequest("GET", base+"/api/v1/authentications/"+authReqID+query, nil)
	if err != nil {
		out.err = err
		return out
	}
	for k, v := range basicAuth("idp", testClientSecret) {
		req.Header.Set(k, v)
	}
	res, err := cl.Do(req)
	if err != nil {
		out.err, out.took = err, time.Since(start)
		return out
	}
	b, err := io.ReadAll(res.Body)
	res.Body.Close()
	out.took, out.status, out.body, out.err = time.Since(start), res.StatusCode, string(b), err
	var e struct {
		Error string `json:"error"`
	}
	_ = json.Unmarshal(b, &e)
	out.code = e.Error
	return out
}

// 100 long-polls waiting on two replicas while Redis crashes and comes back
// empty: every one answers within its wait plus a margin with a contract
// answer (never a 500, never a hang), and each replica's subscription comes
// back by itself: a decision taken afterwards wakes a long-poll at once.
func TestLongPollsSurviveRedisRestart(t *testing.T) {
	srv := redistest.Start(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr(), DialTimeout: 300 * time.Millisecond,
		ReadTimeout: 300 * time.Millisecond, WriteTimeout: 300 * time.Millisecond,
		PoolTimeout: 500 * time.Millisecond, ContextTimeoutEnabled: true, MaxRetries: 1, PoolSize: 200})
	t.Cleanup(func() { rdb.Close() })
	e := newEnvWith(t, rdb, redistest.Prefix(), 2, func(_ *enrollment.Options, o *challenge.Options) {
		o.PendingPerSubject = 1000
		o.PushesPerSubject = 1000
	})
	e.newDevice(subjectA)

	tr := &http.Transport{MaxIdleConns: 300, MaxIdleConnsPerHost: 300, MaxConnsPerHost: 0}
	cl := &http.Client{Transport: tr, Timeout: 30 * time.Second} // a hang shows as a took > limit, not as a stuck test
	t.Cleanup(tr.CloseIdleConnections)

	const n = 100
	logins := make([]created, n)
	for i := range logins {
		logins[i] = e.createAuth(map[string]any{"login_hint": subjectA})
	}
	goroutinesBefore := runtime.NumGoroutine()

	const wait = 3 * time.Second
	const limit = 8 * time.Second // wait + margin, per request
	results := make([]pollResult, n)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := i % 2
			results[i] = longPoll(cl, e.replicas[r].http.URL, logins[i].AuthReqID, fmt.Sprintf("?wait=%d", int(wait/time.Second)), r)
		}()
	}
	waiting := func() int { return e.replicas[0].hub.Waiting() + e.replicas[1].hub.Waiting() }
	waitFor(t, func() bool { return waiting() == n })

	stopped := time.Now()
	srv.Stop()
	time.Sleep(time.Second)
	srv.Restart() // empty: the logins are gone
	restarted := time.Now()

	allDone := make(chan struct{})
	go func() { wg.Wait(); close(allDone) }()
	select {
	case <-allDone:
	case <-time.After(limit + 5*time.Second):
		t.Fatalf("long-polls still running %v after Redis stopped; %d waiting in the hubs", time.Since(stopped), waiting())
	}

	statuses := map[string]int{}
	var slowest time.Duration
	for i, r := range results {
		key := fmt.Sprintf("%d %s", r.status, r.code)
		if r.err != nil {
			key = "transport error"
		}
		statuses[key]++
		slowest = max(slowest, r.took)
		switch {
		case r.err != nil:
			t.Errorf("poll %d (replica %d): %v after %v", i, r.replica, r.err, r.took)
		case r.took > limit:
			t.Errorf("poll %d (replica %d) took %v (wait %v): %d %s", i, r.replica, r.took, wait, r.status, r.body)
		case r.status == http.StatusBadRequest && (r.code == "authorization_pending" || r.code == "invalid_grant"):
		case r.status == http.StatusServiceUnavailable && r.code == "unavailable":
		default:
			t.Errorf("poll %d (replica %d) = %d %s, want 400 authorization_pending|invalid_grant or 503 unavailable",
				i, r.replica, r.status, r.body)
		}
	}
	t.Logf("answers %v; slowest %v; Redis down %v", statuses, slowest.Round(time.Millisecond), restarted.Sub(stopped).Round(time.Millisecond))
	if w := waiting(); w != 0 {
		t.Errorf("%d waiters left behind in the hubs", w)
	}
	if t.Failed() {
		t.FailNow()
	}

	// Redis is back (and empty): the service recovers without a restart.
	deadline := time.Now().Add(5 * time.Second)
	for do(t, e.url(), "GET", "/readyz", nil, nil).Status != http.StatusOK {
		if time.Now().After(deadline) {
			t.Fatal("/readyz did not recover")
		}
		time.Sleep(50 * time.Millisecond)
	}

	// Each replica's subscription came back by itself: a decision on the other
	// replica wakes its long-poll well before the wait ends.
	p := e.newDevice(subjectA) // enrol again: Redis was emptied
	for _, pair := range [][2]int{{0, 1}, {1, 0}} {
		pollOn, decideOn := pair[0], pair[1]
		c := e.createAuth(map[string]any{"login_hint": subjectA})
		ch := e.pendingChallenge(p)
		got := make(chan pollResult, 1)
		go func() { got <- longPoll(cl, e.replicas[pollOn].http.URL, c.AuthReqID, "?wait=20", pollOn) }()
		waitFor(t, func() bool { return e.replicas[pollOn].hub.Waiting() == 1 })
		e.respond(decideOn, p, ch["challenge_id"].(string), p.decision(t, e.clock.Now(), ch, "approve", c.VerificationNumber)).
			wantStatus(t, http.StatusNoContent)
		var r pollResult
		select {
		case r = <-got:
		case <-time.After(25 * time.Second):
			t.Fatalf("long-poll on replica %d did not answer", pollOn)
		}
		if r.err != nil || r.status != http.StatusOK {
			t.Fatalf("long-poll on replica %d after the restart = %d %s (err %v)", pollOn, r.status, r.body, r.err)
		}
		if r.took > 10*time.Second {
			t.Fatalf("long-poll on replica %d answered after %v: its subscription did not come back, it answered on its timeout",
				pollOn, r.took)
		}
	}

	// No goroutine leak: once the client's connections are closed, the count
	// comes back near where it was before the long-polls.
	tr.CloseIdleConnections()
	http.DefaultClient.CloseIdleConnections()
	const slack = 20
	deadline = time.Now().Add(5 * time.Second)
	for {
		now := runtime.NumGoroutine()
		if now <= goroutinesBefore+slack {
			break
		}
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			buf = buf[:runtime.Stack(buf, true)]
			t.Fatalf("goroutines: %d before the long-polls, %d now (slack %d)\n%s", goroutinesBefore, now, slack, buf)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
