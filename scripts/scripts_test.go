package scripts

import (
	"context"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/ecps-sante/ecps/redistest"
)

var incr = redis.NewScript(`return redis.call('INCR', KEYS[1])`)

// A script Redis does not know (its cache flushed) is loaded and the
// pipeline run again; known, it goes by EVALSHA, never by its text.
func TestExecLoadsUnknownScripts(t *testing.T) {
	srv := redistest.Start(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	t.Cleanup(func() { rdb.Close() })
	ctx := context.Background()
	trips := &redistest.RoundTrips{}
	if err := rdb.ScriptFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	rdb.AddHook(trips)
	var res *redis.Cmd
	build := func(p redis.Pipeliner) {
		p.Set(ctx, "other", "x", 0)
		res = incr.EvalSha(ctx, p, []string{"n"})
	}
	if err := Exec(ctx, rdb, []*redis.Script{incr}, build); err != nil {
		t.Fatal(err)
	}
	if n, _ := res.Int(); n != 1 {
		t.Fatalf("first: %v (a pipeline run twice must still count once here: NOSCRIPT changed nothing)", res.Val())
	}
	if trips.N() != 3 { // pipeline (NOSCRIPT), SCRIPT LOAD, pipeline
		t.Fatalf("%d round trips, want 3", trips.N())
	}
	trips.Reset()
	if err := Exec(ctx, rdb, []*redis.Script{incr}, build); err != nil {
		t.Fatal(err)
	}
	if n, _ := res.Int(); n != 2 || trips.N() != 1 {
		t.Fatalf("second: %v in %d round trips, want 2 in 1", res.Val(), trips.N())
	}
	calls, err := redistest.CommandCalls(ctx, rdb)
	if err != nil {
		t.Fatal(err)
	}
	if calls["eval"] != 0 {
		t.Fatalf("%d full-text EVAL", calls["eval"])
	}
}
