package ratelimit

import (
	"sync"
	"testing"
	"time"

	"github.com/ecps-sante/ecps/redistest"
)

func attempt(t *testing.T, f *Failures, key string, failed bool) Verdict {
	t.Helper()
	v, err := f.Attempt(t.Context(), key, failed)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestFailuresSlidingWindow(t *testing.T) {
	rdb, prefix := redistest.Client(t)
	c := newClock(0)
	f := NewFailures(rdb, prefix, "test", FailuresOptions{Limit: 3, Window: time.Minute, Now: c.Now})
	ok := Verdict{}

	for i, step := range []struct {
		name    string
		advance time.Duration
		key     string
		failed  bool
		want    Verdict
	}{
		{"ok/a success is not counted", 0, "a", false, ok},
		{"ok/first failure", 0, "a", true, ok},
		{"ok/second failure", 10 * time.Second, "a", true, ok},
		{"reached/third failure", 10 * time.Second, "a", true, Verdict{Reached: true, RetryAfter: 40 * time.Second}},
		{"refused/a right attempt too", 10 * time.Second, "a", false, Verdict{Refused: true, RetryAfter: 30 * time.Second}},
		{"refused/a wrong one, not counted", 0, "a", true, Verdict{Refused: true, RetryAfter: 30 * time.Second}},
		{"ok/another key", 0, "b", true, ok},
		{"ok/the first failure left the window", 30 * time.Second, "a", false, ok},
		// Back at the limit within a minute of the last Reached: not reported again.
		{"ok/at the limit again, reported once a window", 0, "a", true, ok},
		{"refused/until the next one leaves", 0, "a", false, Verdict{Refused: true, RetryAfter: 10 * time.Second}},
		{"ok/later", 21 * time.Second, "a", true, ok},
	} {
		c.Add(step.advance)
		if got := attempt(t, f, step.key, step.failed); got != step.want {
			t.Fatalf("step %d %s: %+v, want %+v", i, step.name, got, step.want)
		}
	}
	// The keys expire with the window.
	if ttl := rdb.PTTL(t.Context(), prefix+"{fail:test:a}").Val(); ttl <= 0 || ttl > time.Minute {
		t.Fatalf("TTL %v", ttl)
	}
}

// Racing failures on every replica: exactly Limit are counted, one reaches
// the limit, the others are refused.
func TestFailuresConcurrent(t *testing.T) {
	rdb, prefix := redistest.Client(t)
	c := newClock(0)
	replicas := []*Failures{
		NewFailures(rdb, prefix, "test", FailuresOptions{Now: c.Now}),
		NewFailures(rdb, prefix, "test", FailuresOptions{Now: c.Now}),
	}
	var (
		wg                     sync.WaitGroup
		mu                     sync.Mutex
		counted, reached, refd int
	)
	for i := range 30 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			v, err := replicas[i%2].Attempt(t.Context(), "203.0.113.7", true)
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			defer mu.Unlock()
			switch {
			case v.Refused:
				refd++
			case v.Reached:
				reached++
				counted++
			default:
				counted++
			}
		}()
	}
	wg.Wait()
	if counted != 10 || reached != 1 || refd != 20 {
		t.Fatalf("counted %d, reached %d, refused %d; want 10, 1, 20", counted, reached, refd)
	}
}
