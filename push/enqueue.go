package push

import (
	"context"
	"fmt"
	"strconv"
	"time"
)

// Send queues the pushes: one Redis round trip per login (a script on the
// login's shard), never a wait on the provider. The jobs of one login are queued once: a retried Send (go-redis
// retries a command whose connection failed) adds nothing.
func (q *Queue) Send(ctx context.Context, jobs []Job) error {
	now := q.opts.Now()
	byLogin := map[string][]Job{}
	var order []string
	for _, j := range jobs {
		if _, ok := byLogin[j.ChallengeID]; !ok {
			order = append(order, j.ChallengeID)
		}
		byLogin[j.ChallengeID] = append(byLogin[j.ChallengeID], j)
	}
	minID := strconv.FormatInt(now.Add(-q.opts.Retention).UnixMilli(), 10)
	for _, c := range order {
		js := byLogin[c]
		last := js[0].ExpiresAt
		args := make([]any, 0, 3+5*len(js))
		for _, j := range js {
			if j.ExpiresAt.After(last) {
				last = j.ExpiresAt
			}
		}
		markerTTL := last.Sub(now) + time.Minute
		if markerTTL < time.Minute {
			markerTTL = time.Minute
		}
		args = append(args, markerTTL.Milliseconds(), minID, streamTTL.Milliseconds())
		for _, j := range js {
			args = append(args, j.ChallengeID, j.DeviceID, j.Token, j.ExpiresAt.UnixMilli(), now.UnixMilli())
		}
		shard := q.keys.shard(c)
		n, err := enqueueScript.Run(ctx, q.rdb, []string{q.keys.stream(shard), q.keys.enqueued(shard, c)}, args...).Int()
		if err != nil {
			return fmt.Errorf("push enqueue: %w", err)
		}
		q.m.enqueueTotal.Add(float64(n))
	}
	return nil
}
