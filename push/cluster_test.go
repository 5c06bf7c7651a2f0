package push

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/ecps-sante/ecps/keyslot"
	"github.com/ecps-sante/ecps/push/fcmtest"
	"github.com/ecps-sante/ecps/redistest"
)

// crossSlotErrors is the number of CROSSSLOT errors a node has answered
// (INFO errorstats).
func crossSlotErrors(t *testing.T, node *redis.Client) int64 {
	t.Helper()
	info, err := node.Info(context.Background(), "errorstats").Result()
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "errorstat_CROSSSLOT:count="); ok {
			fmt.Sscan(v, &n)
		}
	}
	return n
}

// On a 3-master Cluster the pushes of many logins spread over the masters
// with their shards; the enqueue stays one script call per login (and a
// retried one adds nothing); two replicas deliver every push exactly once;
// no command crosses slots. Then an idle replica's commands per second
// over the whole Cluster. The figures are in docs/redis.md.
func TestQueueShardsOnCluster(t *testing.T) {
	cluster := redistest.StartCluster(t)
	rdb, prefix := cluster.Client(t)
	ctx := context.Background()
	var masters []*redis.Client
	for _, m := range cluster.Masters() {
		c := redis.NewClient(&redis.Options{Addr: m.Addr()})
		t.Cleanup(func() { _ = c.Close() })
		masters = append(masters, c)
	}
	if len(masters) != 3 {
		t.Fatalf("%d masters", len(masters))
	}
	crossBefore := map[string]int64{}
	for _, m := range masters {
		crossBefore[m.Options().Addr] = crossSlotErrors(t, m)
	}

	fake := fcmtest.New(t, testProject)
	e := &qenv{t: t, rdb: rdb, prefix: prefix, fake: fake, fcm: newTestFCM(t, fake), tokens: &tokenRecorder{}}

	// Enqueue with nobody reading: 300 logins of 2 devices. The first 30
	// load the script on the masters; the next 270 are counted.
	producerRdb, _ := cluster.Client(t)
	var rt redistest.RoundTrips
	producerRdb.AddHook(&rt)
	producer := NewQueue(producerRdb, nil, nil, QueueOptions{KeyPrefix: prefix, Metrics: NewMetrics(prometheus.NewRegistry())})
	const logins, warm = 300, 30
	exp := time.Now().Add(2 * time.Minute)
	var tokens []string
	for i := 0; i < logins; i++ {
		if i == warm {
			rt.Reset()
		}
		jobs := login(i, 2, exp)
		for _, j := range jobs {
			tokens = append(tokens, j.Token)
		}
		if err := producer.Send(ctx, jobs); err != nil {
			t.Fatal(err)
		}
	}
	if n := rt.N(); n != logins-warm {
		t.Errorf("%d round trips to enqueue %d logins, want one each", n, logins-warm)
	}
	rt.Reset()
	for i := 0; i < 10; i++ { // retried enqueues: one round trip each, nothing added
		if err := producer.Send(ctx, login(i, 2, exp)); err != nil {
			t.Fatal(err)
		}
	}
	if n := rt.N(); n != 10 {
		t.Errorf("%d round trips for 10 retried enqueues", n)
	}

	for _, s := range StreamKeys(prefix, 0) {
		got, err := rdb.ClusterKeySlot(ctx, s).Result()
		if err != nil {
			t.Fatal(err)
		}
		if want := int(keyslot.Of(s)); int(got) != want {
			t.Errorf("%s: CLUSTER KEYSLOT %d, keyslot.Of %d", s, got, want)
		}
	}

	// The spread: per master, the shards it holds, their entries, the markers.
	total := 0
	for i, m := range masters {
		var streams, markers, entries int
		iter := m.Scan(ctx, 0, prefix+"*", 1000).Iterator()
		for iter.Next(ctx) {
			k := iter.Val()
			switch {
			case strings.HasSuffix(k, "}:jobs"):
				streams++
				n, err := m.XLen(ctx, k).Result()
				if err != nil {
					t.Fatal(err)
				}
				entries += int(n)
			case strings.Contains(k, "}:enq:"):
				markers++
			}
		}
		if err := iter.Err(); err != nil {
			t.Fatal(err)
		}
		total += entries
		t.Logf("master %d (%s): %d shard streams, %d pushes, %d login markers", i+1, m.Options().Addr, streams, entries, markers)
		if share := float64(entries) / float64(2*logins); share < 0.15 {
			t.Errorf("master %d holds %.0f %% of the pushes", i+1, 100*share)
		}
	}
	if total != 2*logins {
		t.Fatalf("%d pushes queued, want %d", total, 2*logins)
	}

	// Two replicas, each on a client of its own, deliver them all, once.
	opts := e.fastOptions()
	ra, _ := cluster.Client(t)
	rb, _ := cluster.Client(t)
	a, b := e.startOn(ra, opts), e.startOn(rb, opts)
	if got, ok := fake.WaitReceived(len(tokens), 20*time.Second); !ok {
		t.Fatalf("%d of %d pushes delivered", len(got), len(tokens))
	}
	time.Sleep(500 * time.Millisecond)
	if n := len(fake.Received()); n != len(tokens) {
		t.Errorf("%d messages for %d pushes", n, len(tokens))
	}
	for _, tok := range tokens {
		if n := delivered(fake, tok); n != 1 {
			t.Errorf("%s delivered %d times", tok, n)
		}
	}
	eventually(t, 3*time.Second, "shards not emptied", func() bool { return e.streamLen() == 0 })
	for _, s := range StreamKeys(prefix, 0) {
		if p, err := rdb.XPending(ctx, s, group).Result(); err == nil && p.Count != 0 {
			t.Errorf("%s: %d pending", s, p.Count)
		}
	}
	a.stop()
	b.stop()
	for _, m := range masters {
		if n := crossSlotErrors(t, m) - crossBefore[m.Options().Addr]; n != 0 {
			t.Errorf("master %s answered %d CROSSSLOT errors", m.Options().Addr, n)
		}
	}

	rate, parts := idleCommands(t, rdb, redistest.Prefix(), masters)
	t.Logf("idle replica, 3-master Cluster: %.1f commands/s (%s)", rate, parts)
	if rate > 40 {
		t.Errorf("an idle replica runs %.1f commands/s", rate)
	}
}

// The shards' hash tags are where keys says: shard n's slot is in the n-th
// of the equal slot ranges (the cluster test checks them against CLUSTER
// KEYSLOT).
func TestShardSlots(t *testing.T) {
	for _, shards := range []int{1, 3, 16, 64} {
		for n, tag := range newKeys("", shards).tags {
			s := int(keyslot.Of(tag))
			if lo, hi := n*keyslot.Count/shards, (n+1)*keyslot.Count/shards; s < lo || s >= hi {
				t.Errorf("%d shards: %s in slot %d, not in [%d, %d)", shards, tag, s, lo, hi)
			}
		}
	}
}
