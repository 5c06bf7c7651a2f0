package durable

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ecps-sante/ecps/redistest"
)

// On a Sentinel set (a master and a replica), a write is acknowledged; with
// the replica stopped, it is ErrNotDurable within the timeout.
func TestWaitForReplica(t *testing.T) {
	set := redistest.StartSentinel(t)
	rdb, prefix := set.Client(t)
	w := New(rdb, 1, 200*time.Millisecond)
	ctx := context.Background()
	write := func(c redis.Cmdable) error { return c.Set(ctx, prefix+"k", "v", 0).Err() }
	if err := w.Do(ctx, prefix+"k", write); err != nil {
		t.Fatalf("with a replica: %v", err)
	}
	set.Replica.Pause()
	defer set.Replica.Resume()
	start := time.Now()
	if err := w.Do(ctx, prefix+"k", write); !errors.Is(err, ErrNotDurable) {
		t.Fatalf("without a replica: %v, want ErrNotDurable", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("took %v, want about the 200 ms timeout", d)
	}
}

// On a Cluster, the write and its WAIT go to the key's master: acknowledged
// by its replica, whichever master owns the key.
func TestWaitOnCluster(t *testing.T) {
	cluster := redistest.StartCluster(t)
	rdb, prefix := cluster.Client(t)
	w := New(rdb, 1, 500*time.Millisecond)
	ctx := context.Background()
	for _, k := range []string{"{a}", "{b}", "{c}", "{d}"} {
		key := prefix + k
		err := w.Do(ctx, key, func(c redis.Cmdable) error { return c.Set(ctx, key, "v", 0).Err() })
		if err != nil {
			t.Fatalf("%s: %v", key, err)
		}
	}
}
