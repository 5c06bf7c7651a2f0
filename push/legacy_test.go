package push

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Pushes that a version before the shards left in its one stream
// ({push}:jobs) are still sent, each once: those queued and never read, one
// handed back with the time of its retry, and one that a dead old replica
// took (taken over after ClaimAfter). The old stream is emptied, never
// written to, and never created again once it is gone.
func TestQueueDrainsLegacyStream(t *testing.T) {
	e := newQEnv(t)
	ctx := context.Background()
	legacy := e.prefix + "{push}:jobs"
	if err := e.rdb.XGroupCreateMkStream(ctx, legacy, group, "0").Err(); err != nil {
		t.Fatal(err)
	}
	exp := time.Now().Add(time.Minute)
	var tokens []string
	add := func(j Job, extra ...any) {
		t.Helper()
		vals := append([]any{"c", j.ChallengeID, "d", j.DeviceID, "t", j.Token, "x", j.ExpiresAt.UnixMilli(),
			"n", time.Now().UnixMilli()}, extra...)
		if err := e.rdb.XAdd(ctx, &redis.XAddArgs{Stream: legacy, Values: vals}).Err(); err != nil {
			t.Fatal(err)
		}
		tokens = append(tokens, j.Token)
	}
	dead := login(0, 1, exp)[0]
	add(dead)
	taken, err := e.rdb.XReadGroup(ctx, &redis.XReadGroupArgs{Group: group, Consumer: "old-replica",
		Streams: []string{legacy, ">"}, Count: 1}).Result()
	if err != nil || len(taken[0].Messages) != 1 {
		t.Fatalf("take: %v %v", taken, err)
	}
	for i := 1; i <= 5; i++ {
		for _, j := range login(i, 2, exp) {
			add(j)
		}
	}
	handedBack := login(9, 1, exp)[0]
	notBefore := time.Now().Add(time.Second)
	add(handedBack, "a", 1, "w", notBefore.UnixMilli())

	opts := e.fastOptions()
	r := e.start(opts)
	if got, ok := e.fake.WaitReceived(len(tokens), 5*time.Second); !ok {
		t.Fatalf("%d of the old stream's %d pushes sent", len(got), len(tokens))
	}
	time.Sleep(300 * time.Millisecond)
	for _, tok := range tokens {
		if n := delivered(e.fake, tok); n != 1 {
			t.Errorf("%s delivered %d times", tok, n)
		}
	}
	for _, m := range e.fake.Received() {
		if m.Token == handedBack.Token && m.At.Before(notBefore.Truncate(time.Millisecond)) {
			t.Errorf("a handed-back push sent %v before its retry time", notBefore.Sub(m.At))
		}
	}
	if v := counter(r.q.m.reclaimed); v != 1 {
		t.Errorf("reclaimed %v, want the dead old replica's 1", v)
	}
	eventually(t, 2*time.Second, "old stream not emptied", func() bool {
		n, _ := e.rdb.XLen(ctx, legacy).Result()
		p, _ := e.rdb.XPending(ctx, legacy, group).Result()
		return n == 0 && p != nil && p.Count == 0
	})
	if n := e.streamLen(); n != 0 {
		t.Errorf("%d entries in the shards", n)
	}

	// Gone (expired): never created again.
	if err := e.rdb.Del(ctx, legacy).Err(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * opts.Housekeep)
	if n, _ := e.rdb.Exists(ctx, legacy).Result(); n != 0 {
		t.Fatal("the old stream was created again")
	}
}
