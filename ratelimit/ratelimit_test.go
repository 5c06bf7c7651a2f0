package ratelimit

import (
	"context"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ecps-sante/ecps/internal/syncbuf"
	"github.com/ecps-sante/ecps/redistest"
)

// clock is a settable clock, safe to read from Run's goroutine.
type clock struct{ ns atomic.Int64 }

// newClock starts at a real second (so that Redis keys look like real ones)
// plus off.
func newClock(off time.Duration) *clock {
	c := &clock{}
	c.ns.Store(time.Now().Truncate(time.Second).Add(off).UnixNano())
	return c
}

func (c *clock) Now() time.Time      { return time.Unix(0, c.ns.Load()) }
func (c *clock) Add(d time.Duration) { c.ns.Add(int64(d)) }

func take(t *testing.T, l *Limiter, key string, n int) {
	t.Helper()
	for i := range n {
		if ok, _ := l.Allow(key); !ok {
			t.Fatalf("request %d of %d on %q refused", i+1, n, key)
		}
	}
}

func refused(t *testing.T, l *Limiter, key string) time.Duration {
	t.Helper()
	ok, retry := l.Allow(key)
	if ok {
		t.Fatalf("request on %q allowed, want refused", key)
	}
	if retry <= 0 || retry > time.Second {
		t.Fatalf("retryAfter = %v, want in (0, 1s]", retry)
	}
	return retry
}

func mustSync(t *testing.T, l *Limiter) {
	t.Helper()
	if err := l.sync(context.Background()); err != nil {
		t.Fatalf("sync: %v", err)
	}
}

func counter(t *testing.T, rdb redis.UniversalClient, l *Limiter, key string, sec int64) int64 {
	t.Helper()
	n, err := rdb.Get(context.Background(), l.redisKey(key, sec)).Int64()
	if err == redis.Nil {
		return 0
	}
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestAllowExactlyRPSThenNextSecond(t *testing.T) {
	rdb, prefix := redistest.Client(t)
	clk := newClock(300 * time.Millisecond)
	l := New(rdb, prefix, 5, Options{Now: clk.Now})

	take(t, l, "idp-a", 5)
	if retry := refused(t, l, "idp-a"); retry != 700*time.Millisecond {
		t.Fatalf("retryAfter = %v, want 700ms", retry)
	}
	for range 10 {
		refused(t, l, "idp-a")
	}
	clk.Add(699 * time.Millisecond)
	if retry := refused(t, l, "idp-a"); retry != time.Millisecond {
		t.Fatalf("retryAfter = %v, want 1ms", retry)
	}

	// Refused requests were not counted.
	mustSync(t, l)
	sec := clk.Now().Unix()
	if n := counter(t, rdb, l, "idp-a", sec); n != 5 {
		t.Fatalf("redis counter = %d, want 5", n)
	}

	clk.Add(time.Millisecond) // exactly the next second
	take(t, l, "idp-a", 5)
	if retry := refused(t, l, "idp-a"); retry != time.Second {
		t.Fatalf("retryAfter = %v, want 1s", retry)
	}
}

func TestTwoReplicasShareLimit(t *testing.T) {
	rdb, prefix := redistest.Client(t)
	clk := newClock(100 * time.Millisecond)
	a := New(rdb, prefix, 100, Options{Now: clk.Now})
	b := New(rdb, prefix, 100, Options{Now: clk.Now})

	take(t, a, "idp", 60)
	take(t, b, "idp", 60) // b does not know of a's 60 yet
	mustSync(t, a)        // total 60: a sees no others
	mustSync(t, b)        // total 120: b sees a's 60
	mustSync(t, a)        // nothing new from a: a reads the total back, sees b's 60
	if n := counter(t, rdb, a, "idp", clk.Now().Unix()); n != 120 {
		t.Fatalf("redis counter = %d, want 120", n)
	}
	refused(t, a, "idp")
	refused(t, b, "idp")

	// A key of its own is not affected.
	take(t, a, "other-idp", 100)
	refused(t, a, "other-idp")
	take(t, b, "third-idp", 1)

	// The next second starts afresh, and b learns of it before its first
	// request there (b had traffic in the previous second).
	clk.Add(time.Second)
	take(t, a, "idp", 90)
	mustSync(t, a)
	mustSync(t, b)
	take(t, b, "idp", 10)
	refused(t, b, "idp")
}

func TestRunSharesLimit(t *testing.T) {
	rdb, prefix := redistest.Client(t)
	clk := newClock(100 * time.Millisecond)
	opts := Options{Now: clk.Now, SyncEvery: 5 * time.Millisecond}
	a := New(rdb, prefix, 100, opts)
	b := New(rdb, prefix, 100, opts)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, l := range []*Limiter{a, b} {
		wg.Go(func() { l.Run(ctx) })
	}
	defer func() { cancel(); wg.Wait() }()

	take(t, a, "idp", 60)
	take(t, b, "idp", 60)
	deadline := time.Now().Add(5 * time.Second)
	for {
		a.mu.Lock()
		ao := a.keys["idp"].cur.others
		a.mu.Unlock()
		b.mu.Lock()
		bo := b.keys["idp"].cur.others
		b.mu.Unlock()
		if ao == 60 && bo == 60 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("others never synced: a sees %d, b sees %d", ao, bo)
		}
		time.Sleep(5 * time.Millisecond)
	}
	refused(t, a, "idp")
	refused(t, b, "idp")
}

func TestKeysIndependent(t *testing.T) {
	rdb, prefix := redistest.Client(t)
	clk := newClock(0)
	l := New(rdb, prefix, 3, Options{Now: clk.Now})
	take(t, l, "a", 3)
	refused(t, l, "a")
	take(t, l, "b", 3)
	refused(t, l, "b")
	mustSync(t, l)
	sec := clk.Now().Unix()
	for _, k := range []string{"a", "b"} {
		if n := counter(t, rdb, l, k, sec); n != 3 {
			t.Fatalf("counter of %q = %d, want 3", k, n)
		}
	}
	take(t, l, "c", 3)
}

func TestPreviousWindowFlushedAndIdleKeysForgotten(t *testing.T) {
	rdb, prefix := redistest.Client(t)
	clk := newClock(900 * time.Millisecond)
	l := New(rdb, prefix, 50, Options{Now: clk.Now})
	take(t, l, "idp", 10)
	first := clk.Now().Unix()

	clk.Add(200 * time.Millisecond) // next second, before any sync
	mustSync(t, l)
	if n := counter(t, rdb, l, "idp", first); n != 10 {
		t.Fatalf("previous window counter = %d, want 10", n)
	}
	// The current window was only read: no counter was made for it.
	n, err := rdb.Exists(context.Background(), l.redisKey("idp", first+1)).Result()
	if err != nil || n != 0 {
		t.Fatalf("current window counter exists = %d, %v; want 0", n, err)
	}
	if ttl := rdb.TTL(context.Background(), l.redisKey("idp", first)).Val(); ttl <= 0 || ttl > keyTTL {
		t.Fatalf("ttl = %v, want in (0, %v]", ttl, keyTTL)
	}
	if len(l.keys) != 1 {
		t.Fatalf("%d keys kept, want 1", len(l.keys))
	}

	clk.Add(time.Second) // two seconds without traffic
	mustSync(t, l)
	if len(l.keys) != 0 {
		t.Fatalf("%d keys kept, want 0", len(l.keys))
	}
	mustSync(t, l) // nothing to do
}

// A replica refusing everything for a key, because the others use its whole
// budget, counts nothing of its own but must not forget what it learnt.
func TestRefusingKeyKept(t *testing.T) {
	rdb, prefix := redistest.Client(t)
	clk := newClock(0)
	a := New(rdb, prefix, 2, Options{Now: clk.Now})
	b := New(rdb, prefix, 2, Options{Now: clk.Now})

	take(t, a, "idp", 2)
	mustSync(t, a)
	take(t, b, "idp", 1) // b does not know yet
	mustSync(t, b)
	refused(t, b, "idp")
	for range 3 {
		clk.Add(time.Second)
		take(t, a, "idp", 2)
		mustSync(t, a)
		mustSync(t, b)
		refused(t, b, "idp")
		mustSync(t, b)
		refused(t, b, "idp")
	}
}

func TestRedisDown(t *testing.T) {
	srv := redistest.Start(t)
	opt, err := redis.ParseURL(srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	var dials atomic.Int64
	opt.Dialer = func(ctx context.Context, network, addr string) (net.Conn, error) {
		dials.Add(1)
		var d net.Dialer
		return d.DialContext(ctx, network, addr)
	}
	opt.DialTimeout = 100 * time.Millisecond
	rdb := redis.NewClient(opt)
	t.Cleanup(func() { _ = rdb.Close() })

	var logs syncbuf.Buffer
	clk := newClock(100 * time.Millisecond)
	l := New(rdb, redistest.Prefix(), 3, Options{Now: clk.Now, SyncEvery: 10 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	take(t, l, "idp", 2)
	mustSync(t, l)

	srv.Stop()
	take(t, l, "idp", 1) // local counts still limit
	refused(t, l, "idp")
	t0 := time.Now()
	if err := l.sync(context.Background()); err == nil {
		t.Fatal("sync with Redis down: no error")
	}
	t.Logf("failed sync took %v", time.Since(t0))

	dials.Store(0)
	// A failing sync lasts its whole timeout (go-redis retries the dial), so
	// run long enough for two of them.
	ctx, cancel := context.WithTimeout(context.Background(), 2500*time.Millisecond)
	defer cancel()
	done := make(chan struct{})
	go func() { l.Run(ctx); close(done) }()
	for range 1000 {
		l.Allow("idp")
		l.Allow("other")
	}
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}
	if n := dials.Load(); n > 200 {
		t.Fatalf("%d dials in 2.5 s: Run spins", n)
	}
	if n := strings.Count(logs.String(), "level=WARN"); n != 1 {
		t.Fatalf("%d warnings, want 1:\n%s", n, logs.String())
	}
	t.Logf("%d dials in 2.5 s of Redis down", dials.Load())

	// Redis back (empty): the count not flushed is sent.
	srv.Restart()
	mustSync(t, l)
	if n := counter(t, rdb, l, "idp", clk.Now().Unix()); n != 1 {
		t.Fatalf("counter after restart = %d, want 1 (the unflushed request)", n)
	}
	refused(t, l, "idp")
}

func TestNewPanicsOnZeroRPS(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("no panic")
		}
	}()
	New(nil, "", 0, Options{})
}

func BenchmarkAllow(b *testing.B) {
	rdb, prefix := redistest.Client(b)
	l := New(rdb, prefix, 1<<62, Options{})
	l.Allow("idp") // the key exists: the steady path
	b.ReportAllocs()
	for b.Loop() {
		l.Allow("idp")
	}
}

func BenchmarkAllowParallel(b *testing.B) {
	rdb, prefix := redistest.Client(b)
	l := New(rdb, prefix, 1<<62, Options{})
	keys := []string{"idp-1", "idp-2", "idp-3", "idp-4"}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			l.Allow(keys[i%len(keys)])
			i++
		}
	})
}
