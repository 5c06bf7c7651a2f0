package api

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ecps-sante/ecps/challenge"
	"github.com/ecps-sante/ecps/enrollment"
	"github.com/ecps-sante/ecps/redistest"
)

// TestKeySpreadOnCluster runs a load of push logins (40 practitioners, two
// replicas, 5 s) on a Cluster and counts, on each of the 3 masters, the
// keys by family (SCAN per node) and the sharded wake-up channels it owns:
// every family that grows with the load spreads over the masters. The
// figures are in docs/reliability.md.
func TestKeySpreadOnCluster(t *testing.T) {
	cluster := redistest.StartCluster(t)
	rdb, prefix := cluster.Client(t)
	e := newEnvWith(t, rdb, prefix, 2, func(_ *enrollment.Options, o *challenge.Options) {
		o.PendingPerSubject, o.PushesPerSubject = 1000, 100000
		o.PollInterval = time.Second
	})
	followRealTime(t, e)
	var phones []*phone
	for range 40 {
		phones = append(phones, e.newDevice(adeliSubject()))
	}
	lc := newLoadClient(t, e)
	stop := make(chan struct{})
	time.AfterFunc(5*time.Second, func() { close(stop) })
	runs := lc.loadStream(phones, stop, 15*time.Second)
	checkRuns(t, runs)

	ctx := context.Background()
	family := func(key string) string {
		k := strings.TrimPrefix(key, prefix)
		if i := strings.Index(k, ":"); i > 0 && strings.HasPrefix(k, "{") {
			head := k[:i]
			if j := strings.Index(k, "}"); j > 0 {
				rest := k[j+1:]
				if rest != "" {
					if c := strings.Index(rest[1:], ":"); c >= 0 {
						rest = rest[:c+1]
					}
					return head + ":…}" + rest
				}
			}
			return head + ":…}"
		}
		return k
	}
	total := map[string]int{}
	perMaster := map[string]map[string]int{}
	var masters []string
	for _, m := range cluster.Masters() {
		node := redis.NewClient(&redis.Options{Addr: m.Addr()})
		counts := map[string]int{}
		iter := node.Scan(ctx, 0, prefix+"*", 1000).Iterator()
		for iter.Next(ctx) {
			counts[family(iter.Val())]++
			counts["all"]++
		}
		if err := iter.Err(); err != nil {
			t.Fatal(err)
		}
		size, _ := node.DBSize(ctx).Result()
		node.Close()
		for f, n := range counts {
			total[f] += n
		}
		masters = append(masters, m.Addr())
		perMaster[m.Addr()] = counts
		t.Logf("master %s: DBSIZE %d, this test's keys %d", m.Addr(), size, counts["all"])
	}
	var fams []string
	for f := range total {
		fams = append(fams, f)
	}
	sort.Strings(fams)
	for _, f := range fams {
		line := fmt.Sprintf("%-34s total %5d:", f, total[f])
		for _, m := range masters {
			line += fmt.Sprintf(" %5d", perMaster[m][f])
		}
		t.Log(line)
	}
	ok := 0
	for _, r := range runs {
		if r.failed == "" {
			ok++
		}
	}
	t.Logf("%d logins", ok)
	for _, m := range masters {
		if share := float64(perMaster[m]["all"]) / float64(total["all"]); share < 0.15 {
			t.Errorf("master %s holds %.0f %% of the keys", m, 100*share)
		}
	}

	// The sharded channels' owners.
	owners := map[string][]int{}
	for i := 0; i < 16; i++ {
		ch := prefix + "{auth-events:" + strconv.Itoa(i) + "}"
		slot, err := rdb.ClusterKeySlot(ctx, ch).Result()
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range cluster.Masters() {
			if m.OwnsSlot(int(slot)) {
				owners[m.Addr()] = append(owners[m.Addr()], i)
			}
		}
	}
	for _, m := range masters {
		t.Logf("master %s owns channels %v", m, owners[m])
	}
	if len(owners) != 3 {
		t.Errorf("the 16 channels live on %d masters, want 3", len(owners))
	}
}
