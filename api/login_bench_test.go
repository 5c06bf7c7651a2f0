package api

import (
	"context"
	"fmt"
	"net/http"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ecps-sante/ecps/challenge"
	"github.com/ecps-sante/ecps/enrollment"
	"github.com/ecps-sante/ecps/redistest"
)

// benchEnv is an env on its own client (so that a hook counts only its
// commands), without the per-practitioner limits getting in the way.
func benchEnv(b *testing.B, replicas, poolSize int) (*env, *redistest.RoundTrips) {
	base, prefix := redistest.Client(b)
	opt := base.(*redis.Client).Options()
	opt.PoolSize = poolSize
	rdb := redis.NewClient(opt)
	b.Cleanup(func() { rdb.Close() })
	trips := &redistest.RoundTrips{}
	rdb.AddHook(trips)
	e := newEnvWith(b, rdb, prefix, replicas, func(_ *enrollment.Options, o *challenge.Options) {
		o.PendingPerSubject = 1 << 30
		o.PushesPerSubject = 1 << 30
	})
	return e, trips
}

// BenchmarkLogin: create → fetch challenge → signed decision → poll, over
// HTTP handlers and real Redis. Reports logins/s and Redis round trips per
// login (target ≤ 8). The phone's signatures (two proofs and a decision) are
// made inside the loop, as a phone would.
func BenchmarkLogin(b *testing.B) {
	e, trips := benchEnv(b, 1, 64)
	p := e.newPushDevice(subjectA)
	b.ResetTimer()
	trips.Reset()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		c := e.createAuth(map[string]any{"login_hint": subjectA, "binding_message": "bench"})
		job := <-e.pushes.Jobs()
		r := e.call(e.url(), p, "GET", "/api/v1/device/challenges/"+job.ChallengeID, nil)
		if r.Status != http.StatusOK {
			b.Fatalf("challenge: %d %s", r.Status, r.Body)
		}
		ch := r.json(b)
		if r := e.respond(0, p, job.ChallengeID, p.decision(b, e.clock.Now(), ch, "approve", c.VerificationNumber)); r.Status != http.StatusNoContent {
			b.Fatalf("decision: %d %s", r.Status, r.Body)
		}
		if r := e.poll(0, c, ""); r.Status != http.StatusOK {
			b.Fatalf("poll: %d %s", r.Status, r.Body)
		}
	}
	elapsed := time.Since(start)
	b.ReportMetric(float64(trips.N())/float64(b.N), "redis-rt/login")
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "logins/s")
}

// BenchmarkDecisionToLongPoll: a long-poll waits on replica 0, the decision
// is sent to replica 1; reports the time from sending the decision to the
// long-poll's answer (p50, p99), over b.N logins (run with -benchtime=1000x).
func BenchmarkDecisionToLongPoll(b *testing.B) {
	e, _ := benchEnv(b, 2, 64)
	p := e.newPushDevice(subjectA)
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		c := e.createAuth(map[string]any{"login_hint": subjectA})
		job := <-e.pushes.Jobs()
		ch := e.call(e.replicas[1].http.URL, p, "GET", "/api/v1/device/challenges/"+job.ChallengeID, nil).json(b)
		jws := p.decision(b, e.clock.Now(), ch, "approve", c.VerificationNumber)
		body := jsonBody(b, map[string]string{"response": jws})
		path := "/api/v1/device/challenges/" + job.ChallengeID + "/response"
		auth := map[string]string{"Authorization": "ECPS-Proof " + p.proof(b, e.clock.Now(), "POST", path, body)}
		answered := make(chan time.Time, 1)
		go func() {
			r := e.poll(0, c, "?wait=10")
			if r.Status != http.StatusOK {
				b.Errorf("poll %d %s", r.Status, r.Body)
			}
			answered <- time.Now()
		}()
		for e.replicas[0].hub.Waiting() == 0 {
			time.Sleep(100 * time.Microsecond)
		}
		b.StartTimer()
		sent := time.Now()
		if r := do(b, e.replicas[1].http.URL, "POST", path, body, auth); r.Status != http.StatusNoContent {
			b.Fatalf("decision %d %s", r.Status, r.Body)
		}
		lat = append(lat, (<-answered).Sub(sent))
		e.clock.Advance(3 * time.Second) // keep the IdP within its interval
	}
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
}

// BenchmarkLongPollWaiters holds 10,000 simultaneous long-polls on one
// replica (one per QR login that nobody claims: each waits its 30 s) and
// reports the memory each waiter costs the service (its goroutine, timer and
// hub entry: the long-poll path below the HTTP connection, which net/http
// owns) and the Redis connections open while they wait, against the pool's
// size (32): waiters hold none. The 10,000 HTTP connections themselves
// cannot be opened in one test process here (20,000 file descriptors for
// both ends hits the 20,000 limit).
func BenchmarkLongPollWaiters(b *testing.B) {
	const n = 10_000
	e, _ := benchEnv(b, 1, 32)
	logins := make([]created, n)
	for i := range logins {
		logins[i] = e.createAuth(map[string]any{})
	}
	svc := e.replicas[0].srv.challenges
	hub := e.replicas[0].hub
	clients := func() int {
		s, err := e.rdb.Info(context.Background(), "clients").Result()
		if err != nil {
			b.Fatal(err)
		}
		var v int
		for _, line := range strings.Split(s, "\r\n") {
			if _, err := fmt.Sscanf(line, "connected_clients:%d", &v); err == nil {
				return v
			}
		}
		return -1
	}
	for i := 0; i < b.N; i++ {
		ctx, cancel := context.WithCancel(context.Background())
		runtime.GC()
		var before runtime.MemStats
		runtime.ReadMemStats(&before)
		connsBefore := clients()
		var wg sync.WaitGroup
		for j := 0; j < n; j++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, _ = svc.Poll(ctx, "idp", logins[j].AuthReqID, 30*time.Second)
			}()
		}
		deadline := time.Now().Add(60 * time.Second)
		for hub.Waiting() < n && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		waiting := hub.Waiting()
		runtime.GC()
		var during runtime.MemStats
		runtime.ReadMemStats(&during)
		b.ReportMetric(float64(waiting), "waiters")
		b.ReportMetric(float64((during.HeapInuse+during.StackInuse)-(before.HeapInuse+before.StackInuse))/float64(waiting)/1024, "KiB/waiter")
		b.ReportMetric(float64(clients()), "redis-conns")
		b.ReportMetric(float64(connsBefore), "redis-conns-before")
		cancel()
		wg.Wait()
	}
}
