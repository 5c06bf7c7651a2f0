package redistest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// The proxy's network faults as a client sees them: a stall holds a
// command until its deadline (and it runs once the stall ends), a reply cut
// in the middle is an error for a command that ran, a refusing proxy fails
// every dial at once.
func TestFaultProxyModes(t *testing.T) {
	srv := Start(t)
	proxy := NewFaultProxy(t, srv.Addr())
	rdb := redis.NewClient(&redis.Options{Addr: proxy.Addr(), MaxRetries: -1, DialTimeout: time.Second,
		ReadTimeout: time.Second, ContextTimeoutEnabled: true})
	t.Cleanup(func() { _ = rdb.Close() })
	direct := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	t.Cleanup(func() { _ = direct.Close() })
	bg := context.Background()
	if err := rdb.Set(bg, "k", "0", 0).Err(); err != nil {
		t.Fatal(err)
	}

	t.Run("stall", func(t *testing.T) {
		proxy.Stall()
		ctx, cancel := context.WithTimeout(bg, 300*time.Millisecond)
		defer cancel()
		start := time.Now()
		err := rdb.Set(ctx, "k", "stalled", 0).Err()
		if err == nil || time.Since(start) > time.Second {
			t.Fatalf("stalled SET: %v after %v, want an error at its 300 ms deadline", err, time.Since(start))
		}
		if v := direct.Get(bg, "k").Val(); v != "0" {
			t.Fatalf("the stalled command reached Redis: k = %q", v)
		}
		proxy.Unstall()
		deadline := time.Now().Add(2 * time.Second)
		for direct.Get(bg, "k").Val() != "stalled" { // the held command goes through
			if time.Now().After(deadline) {
				t.Fatal("the held command never reached Redis")
			}
			time.Sleep(10 * time.Millisecond)
		}
		if err := rdb.Ping(bg).Err(); err != nil {
			t.Fatalf("after the stall: %v", err)
		}
	})

	t.Run("reset-mid-reply", func(t *testing.T) {
		proxy.ResetMidReply(1)
		if err := rdb.Set(bg, "k", "cut", 0).Err(); err == nil {
			t.Fatal("a cut reply read as a success")
		}
		if proxy.Cut() != 1 {
			t.Fatalf("cut %d replies, want 1", proxy.Cut())
		}
		if v := direct.Get(bg, "k").Val(); v != "cut" {
			t.Fatalf("k = %q: the command whose reply was cut did not run", v)
		}
		if err := rdb.Ping(bg).Err(); err != nil {
			t.Fatalf("after the cut: %v", err)
		}
	})

	t.Run("refuse", func(t *testing.T) {
		proxy.Refuse(true, true)
		// The first PING may still take the pooled connection the proxy
		// has just reset (its error then comes from that connection); the
		// second one has to dial.
		for i := range 2 {
			start := time.Now()
			err := rdb.Ping(bg).Err()
			if err == nil || time.Since(start) > 500*time.Millisecond {
				t.Fatalf("PING %d while refused: %v after %v, want a fast error", i+1, err, time.Since(start))
			}
			var ne interface{ Timeout() bool }
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatalf("refused looks like a timeout: %v", err)
			}
		}
		if proxy.Refused() == 0 {
			t.Fatal("no connection was refused")
		}
		proxy.Refuse(false, false)
		if err := rdb.Ping(bg).Err(); err != nil {
			t.Fatalf("after refusing: %v", err)
		}
	})
}
