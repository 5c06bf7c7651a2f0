package push

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// housekeeper renews this replica's leases, takes over pushes left by
// stopped replicas, trims the stream and measures it.
func (q *Queue) housekeeper(ctx context.Context) {
	tick := time.NewTicker(q.opts.Housekeep)
	defer tick.Stop()
	rounds := 0
	for {
		q.renew(ctx)
		q.reclaim(ctx)
		q.measure(ctx)
		if rounds%60 == 0 {
			q.dropIdleConsumers(ctx)
		}
		rounds++
		select {
		case <-tick.C:
		case <-ctx.Done():
			return
		}
	}
}

// renew resets the idle time of the entries held for a while, so that no
// other replica takes them over; those another replica already took are
// marked lost.
func (q *Queue) renew(ctx context.Context) {
	limit := time.Now().Add(-q.opts.ClaimAfter / 3)
	q.mu.Lock()
	var ids []any
	for id, t := range q.held {
		if t.leased.Before(limit) {
			ids = append(ids, id)
		}
	}
	q.mu.Unlock()
	if len(ids) == 0 {
		return
	}
	args := append([]any{group, q.opts.Consumer}, ids...)
	kept, err := renewScript.Run(ctx, q.rdb, []string{q.keys.stream()}, args...).StringSlice()
	if err != nil {
		if ctx.Err() == nil {
			q.log.Warn("push: cannot renew leases", "err", err)
		}
		return
	}
	keep := make(map[string]bool, len(kept))
	for _, id := range kept {
		keep[id] = true
	}
	now := time.Now()
	q.mu.Lock()
	var lost []*task
	for _, id := range ids {
		t, ok := q.held[id.(string)]
		if !ok {
			continue
		}
		if keep[t.id] {
			t.leased = now
		} else {
			t.lost = true
			if t.index >= 0 { // waiting: forget it now; a sender forgets it otherwise
				lost = append(lost, t)
			}
		}
	}
	q.mu.Unlock()
	for _, t := range lost {
		q.forget(t)
	}
}

// reclaim takes over pushes that another replica took and left idle for
// ClaimAfter (it died); they are attempted at once.
func (q *Queue) reclaim(ctx context.Context) {
	start := "0-0"
	for {
		room := q.opts.MaxHeld - q.heldCount()
		if room <= 0 {
			return
		}
		msgs, next, err := q.rdb.XAutoClaim(ctx, &redis.XAutoClaimArgs{Stream: q.keys.stream(), Group: group,
			Consumer: q.opts.Consumer, MinIdle: q.opts.ClaimAfter, Start: start, Count: int64(min(room, 100))}).Result()
		if err != nil {
			if ctx.Err() == nil && !isNoGroup(err) {
				q.log.Warn("push: cannot take over stale pushes", "err", err)
			}
			return
		}
		for _, msg := range msgs {
			if t := q.hold(msg); t != nil {
				q.m.reclaimed.Inc()
				q.log.Info("push taken over from a stopped replica", "challenge_id", t.job.ChallengeID, "device_id", t.job.DeviceID)
				at := time.Now()
				if t.next.After(at) { // handed back while waiting for its retry
					at = t.next
				}
				q.later(t, at)
			}
		}
		if next == "0-0" || next == "" {
			return
		}
		start = next
	}
}

// measure trims entries past Retention and sets the queue gauges.
func (q *Queue) measure(ctx context.Context) {
	now := q.opts.Now()
	p := q.rdb.Pipeline()
	p.XTrimMinIDApprox(ctx, q.keys.stream(), strconv.FormatInt(now.Add(-q.opts.Retention).UnixMilli(), 10), 0)
	depth := p.XLen(ctx, q.keys.stream())
	pend := p.XPending(ctx, q.keys.stream(), group)
	first := p.XRangeN(ctx, q.keys.stream(), "-", "+", 1)
	if _, err := p.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) && !isNoGroup(err) {
		return
	}
	q.m.depth.Set(float64(depth.Val()))
	if pend.Err() == nil {
		q.m.pending.Set(float64(pend.Val().Count))
	}
	age := 0.0
	if msgs := first.Val(); len(msgs) > 0 {
		if ms, err := strconv.ParseInt(strings.SplitN(msgs[0].ID, "-", 2)[0], 10, 64); err == nil {
			age = max(0, now.Sub(time.UnixMilli(ms)).Seconds())
		}
	}
	q.m.oldest.Set(age)
}

// consumerForget: a consumer idle this long with nothing pending is removed
// from the group (replicas get a new name at each start).
const consumerForget = time.Hour

func (q *Queue) dropIdleConsumers(ctx context.Context) {
	cs, err := q.rdb.XInfoConsumers(ctx, q.keys.stream(), group).Result()
	if err != nil {
		return
	}
	for _, c := range cs {
		if c.Name != q.opts.Consumer && c.Pending == 0 && c.Idle > consumerForget {
			_ = q.rdb.XGroupDelConsumer(ctx, q.keys.stream(), group, c.Name).Err()
		}
	}
}

// releaseHeld hands what this replica still holds back to the queue when it
// stops, so that another replica sends it at once rather than after
// ClaimAfter, or, for a push waiting for a retry (backoff, Retry-After), at
// the time of its next attempt. Pushes already past their expiry are dropped
// instead.
func (q *Queue) releaseHeld() {
	q.mu.Lock()
	var tasks []*task
	for _, t := range q.held {
		if !t.lost {
			tasks = append(tasks, t)
		}
	}
	q.held = map[string]*task{}
	q.retry = nil
	q.mu.Unlock()
	if len(tasks) == 0 {
		return
	}
	now := q.opts.Now()
	args := []any{group, q.opts.Consumer}
	for _, t := range tasks {
		if t.job.ExpiresAt.Sub(now) < q.opts.MinTTL {
			q.giveUp(t)
			continue
		}
		var notBefore int64 // none: send at once
		if d := time.Until(t.next); d > 0 {
			notBefore = (now.Add(d).UnixNano() + int64(time.Millisecond) - 1) / int64(time.Millisecond) // never earlier
		}
		args = append(args, t.id, t.job.ChallengeID, t.job.DeviceID, t.job.Token, t.job.ExpiresAt.UnixMilli(),
			t.enqueued.UnixMilli(), t.attempts, notBefore)
	}
	if len(args) == 2 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	n, err := releaseScript.Run(ctx, q.rdb, []string{q.keys.stream()}, args...).Int()
	if err != nil {
		q.log.Warn("push: cannot hand pushes back on stop; another replica takes them over later", "err", err)
		return
	}
	q.log.Info("push: handed held pushes back to the queue", "n", n)
}
