package push

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// housekeeper renews this replica's leases, measures and trims the shards,
// takes over pushes left by stopped replicas, and drains the stream of the
// versions before the shards.
func (q *Queue) housekeeper(ctx context.Context) {
	tick := time.NewTicker(q.opts.Housekeep)
	defer tick.Stop()
	rounds := 0
	for {
		q.renew(ctx)
		q.reclaim(ctx, q.measure(ctx))
		q.drainLegacy(ctx)
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

// heldByStream groups held tasks' entry ids by stream; only those that
// keep(t).
func (q *Queue) heldByStream(keep func(*task) bool) map[string][]*task {
	q.mu.Lock()
	defer q.mu.Unlock()
	out := map[string][]*task{}
	for _, t := range q.held {
		if keep(t) {
			out[t.stream] = append(out[t.stream], t)
		}
	}
	return out
}

// renew resets the idle time of the entries held for a while, so that no
// other replica takes them over; those another replica already took are
// marked lost. One script per stream where such entries are held.
func (q *Queue) renew(ctx context.Context) {
	limit := time.Now().Add(-q.opts.ClaimAfter / 3)
	for stream, tasks := range q.heldByStream(func(t *task) bool { return t.leased.Before(limit) }) {
		q.renewStream(ctx, stream, tasks)
	}
}

func (q *Queue) renewStream(ctx context.Context, stream string, tasks []*task) {
	args := []any{group, q.opts.Consumer}
	for _, t := range tasks {
		args = append(args, t.id)
	}
	kept, err := renewScript.Run(ctx, q.rdb, []string{stream}, args...).StringSlice()
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
	for _, t := range tasks {
		if _, ok := q.held[t.ref()]; !ok {
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
// ClaimAfter (it died) in streams (those with pending entries); they are
// attempted at once.
func (q *Queue) reclaim(ctx context.Context, streams []string) {
	for _, s := range streams {
		q.reclaimStream(ctx, s)
	}
}

func (q *Queue) reclaimStream(ctx context.Context, stream string) {
	start := "0-0"
	for {
		room := q.opts.MaxHeld - q.heldCount()
		if room <= 0 {
			return
		}
		msgs, next, err := q.rdb.XAutoClaim(ctx, &redis.XAutoClaimArgs{Stream: stream, Group: group,
			Consumer: q.opts.Consumer, MinIdle: q.opts.ClaimAfter, Start: start, Count: int64(min(room, 100))}).Result()
		if err != nil {
			if ctx.Err() == nil && !isNoGroup(err) {
				q.log.Warn("push: cannot take over stale pushes", "err", err)
			}
			return
		}
		for _, msg := range msgs {
			if t := q.hold(stream, msg); t != nil {
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

// measure sets the queue gauges, summed over the shards (the oldest entry:
// the oldest of all), trims the shards whose oldest entry is past
// Retention, and returns the shards with pending entries: the only ones
// where a stopped replica can have left pushes. Two commands per shard
// (XINFO STREAM, XPENDING), in one pipeline; XTRIM only where there is
// something to trim.
func (q *Queue) measure(ctx context.Context) []string {
	now := q.opts.Now()
	minMS := now.Add(-q.opts.Retention).UnixMilli()
	streams := q.keys.streams()
	p := q.rdb.Pipeline()
	infos := make([]*redis.XInfoStreamCmd, len(streams))
	pends := make([]*redis.XPendingCmd, len(streams))
	for i, s := range streams {
		infos[i] = p.XInfoStream(ctx, s)
		pends[i] = p.XPending(ctx, s, group)
	}
	_, _ = p.Exec(ctx) // each command's error below
	var depth, pending int64
	var withPending, trim []string
	age := 0.0
	failed := false
	for i, s := range streams {
		info, err := infos[i].Result()
		switch {
		case isNoSuchKey(err): // expired: nothing queued there for 24 h
		case err != nil:
			failed = true
		default:
			depth += info.Length
			if ms, ok := idMillis(info.FirstEntry.ID); ok && info.Length > 0 {
				age = max(age, now.Sub(time.UnixMilli(ms)).Seconds())
				if ms < minMS {
					trim = append(trim, s)
				}
			}
		}
		pe, err := pends[i].Result()
		switch {
		case isNoGroup(err):
		case err != nil:
			failed = true
		default:
			pending += pe.Count
			if pe.Count > 0 {
				withPending = append(withPending, s)
			}
		}
	}
	if len(trim) > 0 {
		p := q.rdb.Pipeline()
		for _, s := range trim {
			p.XTrimMinIDApprox(ctx, s, strconv.FormatInt(minMS, 10), 0)
		}
		_, _ = p.Exec(ctx)
	}
	if !failed {
		q.m.depth.Set(float64(depth))
		q.m.pending.Set(float64(pending))
		q.m.oldest.Set(age)
	}
	return withPending
}

// isNoSuchKey: XINFO STREAM of a stream that does not exist.
func isNoSuchKey(err error) bool {
	return err != nil && !errors.Is(err, redis.Nil) && strings.Contains(err.Error(), "no such key")
}

// idMillis is the time part of a stream entry id.
func idMillis(id string) (int64, bool) {
	ms, err := strconv.ParseInt(strings.SplitN(id, "-", 2)[0], 10, 64)
	return ms, err == nil && id != ""
}

// consumerForget: a consumer idle this long with nothing pending is removed
// from the group (replicas get a new name at each start).
const consumerForget = time.Hour

func (q *Queue) dropIdleConsumers(ctx context.Context) {
	for _, s := range q.keys.streams() {
		cs, err := q.rdb.XInfoConsumers(ctx, s, group).Result()
		if err != nil {
			continue
		}
		for _, c := range cs {
			if c.Name != q.opts.Consumer && c.Pending == 0 && c.Idle > consumerForget {
				_ = q.rdb.XGroupDelConsumer(ctx, s, group, c.Name).Err()
			}
		}
	}
}

// releaseHeld hands what this replica still holds back to the queue when it
// stops, so that another replica sends it at once rather than after
// ClaimAfter, or, for a push waiting for a retry (backoff, Retry-After), at
// the time of its next attempt. Pushes already past their expiry are dropped
// instead. Each push goes back to the stream it came from (one script per
// stream: a copy added, the original acknowledged and deleted, atomically).
func (q *Queue) releaseHeld() {
	byStream := q.heldByStream(func(t *task) bool { return !t.lost })
	q.mu.Lock()
	q.held = map[entryRef]*task{}
	q.retry = nil
	q.mu.Unlock()
	now := q.opts.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	handed := 0
	for stream, tasks := range byStream {
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
			continue
		}
		n, err := releaseScript.Run(ctx, q.rdb, []string{stream}, args...).Int()
		if err != nil {
			q.log.Warn("push: cannot hand pushes back on stop; another replica takes them over later", "err", err)
			continue
		}
		handed += n
	}
	if handed > 0 {
		q.log.Info("push: handed held pushes back to the queue", "n", handed)
	}
}
