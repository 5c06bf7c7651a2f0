package push

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/ecps-sante/ecps/push/fcmtest"
	"github.com/ecps-sante/ecps/redistest"
)

// BenchmarkQueue pushes b.N pushes (one device per login) through two
// replicas' queues, the real SDK and the fake FCM, on a real Redis. It
// reports the throughput, the Redis round trips per push of the workers
// (everything but the enqueue: reads, acknowledgements, housekeeping) and
// the latency from the enqueue (the login's creation) to the fake FCM's
// receipt. "paced" enqueues at 2,000 logins/s; "flood" as fast as 8
// producers can.
//
//	go test -run '^$' -bench BenchmarkQueue -benchtime 20000x ./push/
func BenchmarkQueue(b *testing.B) {
	b.Run("paced-2000", func(b *testing.B) { benchQueue(b, 2000) })
	b.Run("flood", func(b *testing.B) { benchQueue(b, 0) })
}

func benchQueue(b *testing.B, rate int) {
	base, prefix := redistest.Client(b)
	workers := redis.NewClient(base.(*redis.Client).Options())
	defer workers.Close()
	trips := &redistest.RoundTrips{}
	workers.AddHook(trips)
	fake := fcmtest.New(b, testProject)
	fcm := newTestFCM(b, fake)

	ctx, cancel := context.WithCancel(context.Background())
	var running sync.WaitGroup
	opts := QueueOptions{KeyPrefix: prefix, Logger: slog.New(slog.DiscardHandler)}
	producer := NewQueue(base, fcm, nil, opts)
	for i := 0; i < 2; i++ {
		o := opts
		o.Metrics = NewMetrics(prometheus.NewRegistry())
		q := NewQueue(workers, fcm, nil, o)
		running.Add(1)
		go func() { defer running.Done(); q.Run(ctx) }()
	}
	defer func() { cancel(); running.Wait() }()
	time.Sleep(100 * time.Millisecond) // consumer groups ready

	n := b.N
	enqueued := make([]time.Time, n)
	exp := time.Now().Add(5 * time.Minute)
	b.ResetTimer()
	trips.Reset()
	start := time.Now()
	var next atomic.Int64
	producers := 8
	if rate > 0 {
		producers = 1
	}
	var wg sync.WaitGroup
	for p := 0; p < producers; p++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				if rate > 0 {
					if d := time.Until(start.Add(time.Duration(i) * time.Second / time.Duration(rate))); d > 0 {
						time.Sleep(d)
					}
				}
				enqueued[i] = time.Now()
				job := Job{ChallengeID: fmt.Sprintf("chl_%016d", i), DeviceID: "dev_bench", Token: fmt.Sprintf("tok-%d", i), ExpiresAt: exp}
				if err := producer.Send(context.Background(), []Job{job}); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	got, ok := fake.WaitReceived(n, time.Duration(n)*time.Millisecond+30*time.Second)
	elapsed := time.Since(start)
	b.StopTimer()
	if !ok {
		b.Fatalf("%d of %d pushes received", len(got), n)
	}
	lat := make([]time.Duration, 0, n)
	for _, m := range got {
		var i int
		data, _ := m.Message["data"].(map[string]any)
		id, _ := data["challenge_id"].(string)
		if _, err := fmt.Sscanf(id, "chl_%d", &i); err != nil || i >= n {
			b.Fatalf("unexpected message %v", m.Message)
		}
		lat = append(lat, m.At.Sub(enqueued[i]))
	}
	slices.Sort(lat)
	pct := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))].Microseconds()) / 1000 }
	b.ReportMetric(float64(n)/elapsed.Seconds(), "pushes/s")
	b.ReportMetric(float64(trips.N())/float64(n), "worker-rt/push")
	b.ReportMetric(pct(0.50), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
	b.ReportMetric(0, "ns/op")
}
