package push

import (
	"context"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/ecps-sante/ecps/redistest"
)

// idleWindow is how long the idle tests count commands.
const idleWindow = 10 * time.Second

// idleCommands runs one replica with the production timings on an idle
// queue for idleWindow and returns the commands per second that the servers
// ran (INFO commandstats, summed over nodes), and their breakdown.
func idleCommands(t *testing.T, rdb redis.UniversalClient, prefix string, nodes []*redis.Client) (float64, string) {
	t.Helper()
	ctx := context.Background()
	q := NewQueue(rdb, nil, nil, QueueOptions{KeyPrefix: prefix, Logger: slog.New(slog.DiscardHandler),
		Metrics: NewMetrics(prometheus.NewRegistry())})
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); q.Run(rctx) }()
	defer func() { cancel(); <-done }()
	time.Sleep(1500 * time.Millisecond) // groups created, first housekeeping done
	sum := func() map[string]int64 {
		all := map[string]int64{}
		for _, n := range nodes {
			c, err := redistest.CommandCalls(ctx, n)
			if err != nil {
				t.Fatal(err)
			}
			for k, v := range c {
				all[k] += v
			}
		}
		return all
	}
	before := sum()
	time.Sleep(idleWindow)
	after := sum()
	var total int64
	var parts []string
	for k, v := range after {
		switch k {
		case "replconf": // a Cluster's masters and replicas
			continue
		case "info", "ping", "cluster|slots", "cluster|shards", "cluster|nodes", "hello", "client|setinfo":
			continue // the measurement's and the client's own
		}
		if d := v - before[k]; d > 0 {
			total += d
			parts = append(parts, fmt.Sprintf("%s %.1f/s", k, float64(d)/idleWindow.Seconds()))
		}
	}
	sort.Strings(parts)
	return float64(total) / idleWindow.Seconds(), strings.Join(parts, ", ")
}

// An idle replica's commands on a Redis of its own: its blocking reads and
// its housekeeping, nothing else.
func TestQueueIdleCommands(t *testing.T) {
	srv := redistest.Start(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	t.Cleanup(func() { _ = rdb.Close() })
	rate, parts := idleCommands(t, rdb, redistest.Prefix(), []*redis.Client{rdb})
	t.Logf("idle replica, one Redis: %.1f commands/s (%s)", rate, parts)
	if rate > 30 {
		t.Errorf("an idle replica runs %.1f commands/s", rate)
	}
}
