package api

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ecps-sante/ecps/challenge"
	"github.com/ecps-sante/ecps/enrollment"
	"github.com/ecps-sante/ecps/redistest"
)

// tripCounter counts what a client sends to Redis: a command or a pipeline
// is one round trip.
type tripCounter struct{ n atomic.Int64 }

func (r *tripCounter) DialHook(next redis.DialHook) redis.DialHook { return next }
func (r *tripCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error { r.n.Add(1); return next(ctx, cmd) }
}
func (r *tripCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error { r.n.Add(1); return next(ctx, cmds) }
}

// benchEnv is an env on its own client (so that a hook counts only its
// commands), without the per-practitioner limits getting in the way.
func benchEnv(b *testing.B, replicas int) (*env, *tripCounter) {
	base, prefix := redistest.Client(b)
	opt := base.(*redis.Client).Options()
	opt.PoolSize = 256
	rdb := redis.NewClient(opt)
	b.Cleanup(func() { rdb.Close() })
	trips := &tripCounter{}
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
	e, trips := benchEnv(b, 1)
	p := e.newPushDevice(subjectA)
	b.ResetTimer()
	trips.n.Store(0)
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
	b.ReportMetric(float64(trips.n.Load())/float64(b.N), "redis-rt/login")
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "logins/s")
}

// BenchmarkDecisionToLongPoll: a long-poll waits on replica 0, the decision
// is sent to replica 1; reports the time from sending the decision to the
// long-poll's answer (p50, p99), over b.N logins (run with -benchtime=1000x).
func BenchmarkDecisionToLongPoll(b *testing.B) {
	e, _ := benchEnv(b, 2)
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
// replica and reports the memory per waiter (the whole process: server and
// the test's own HTTP clients, so an upper bound for the server) and the
// Redis connections the waiters add (target: none).
func BenchmarkLongPollWaiters(b *testing.B) {
	const n = 10_000
	e, _ := benchEnv(b, 1)
	c := e.createAuth(map[string]any{}) // a QR login nobody claims: every poll waits
	info := func() int {
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
		tr := &http.Transport{MaxIdleConnsPerHost: n, MaxConnsPerHost: n,
			DialContext: (&net.Dialer{}).DialContext}
		client := &http.Client{Transport: tr}
		runtime.GC()
		var before runtime.MemStats
		runtime.ReadMemStats(&before)
		connsBefore := info()
		var wg sync.WaitGroup
		for j := 0; j < n; j++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				req, _ := http.NewRequest("GET", e.url()+"/api/v1/authentications/"+c.AuthReqID+"?wait=30", nil)
				req.SetBasicAuth("idp", testClientSecret)
				res, err := client.Do(req)
				if err == nil {
					res.Body.Close()
				}
			}()
		}
		deadline := time.Now().Add(60 * time.Second)
		for e.replicas[0].hub.Waiting() < n && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		waiting := e.replicas[0].hub.Waiting()
		runtime.GC()
		var during runtime.MemStats
		runtime.ReadMemStats(&during)
		connsDuring := info()
		b.ReportMetric(float64(waiting), "waiters")
		b.ReportMetric(float64(during.Sys-before.Sys)/float64(waiting)/1024, "KiB-sys/waiter")
		b.ReportMetric(float64((during.HeapInuse+during.StackInuse)-(before.HeapInuse+before.StackInuse))/float64(waiting)/1024, "KiB-inuse/waiter")
		b.ReportMetric(float64(connsDuring-connsBefore), "extra-redis-conns")
		e.replicas[0].hub.Close() // answer them all
		wg.Wait()
		tr.CloseIdleConnections()
	}
}
