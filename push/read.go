package push

import (
	"container/heap"
	"context"
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// readSets are the streams that each reader reads in one XREADGROUP. A
// Cluster refuses a command over keys of different slots, and go-redis's
// Ring sends it to the first key's node: there each shard has a blocking
// reader of its own (one connection each, blocked in Redis). One Redis
// (standalone, Sentinel: a *redis.Client) takes every shard in one
// XREADGROUP: one reader and one connection, as before the shards.
func (q *Queue) readSets() [][]string {
	streams := q.keys.streams()
	if _, ok := q.rdb.(*redis.Client); ok {
		return [][]string{streams}
	}
	sets := make([][]string, len(streams))
	for i, s := range streams {
		sets[i] = []string{s}
	}
	return sets
}

// ensureGroup creates the consumer group (and the stream) of each stream if
// needed, retrying while Redis is unreachable. False when ctx ended first.
func (q *Queue) ensureGroup(ctx context.Context, streams []string) bool {
	for i := 0; i < len(streams); {
		err := q.rdb.XGroupCreateMkStream(ctx, streams[i], group, "0").Err()
		if err == nil || strings.HasPrefix(err.Error(), "BUSYGROUP") {
			i++
			continue
		}
		if ctx.Err() != nil {
			return false
		}
		q.log.Warn("push: cannot create the queue's consumer group; retrying", "err", err)
		if !sleep(ctx, time.Second) {
			return false
		}
	}
	return true
}

func isNoGroup(err error) bool { return err != nil && strings.HasPrefix(err.Error(), "NOGROUP") }

// isUnblocked: the stream was deleted while XREADGROUP blocked on it.
func isUnblocked(err error) bool { return err != nil && strings.HasPrefix(err.Error(), "UNBLOCKED") }

// reader takes new pushes from streams (every shard, or one: readSets) and
// hands them to the senders; it blocks while they are all busy (the pushes
// wait in Redis meanwhile).
func (q *Queue) reader(ctx context.Context, ready chan<- *task, streams []string) {
	args := make([]string, 0, 2*len(streams))
	args = append(args, streams...)
	for range streams {
		args = append(args, ">")
	}
	failures := 0
	for ctx.Err() == nil {
		room := q.opts.MaxHeld - q.heldCount()
		if room <= 0 {
			if !sleep(ctx, 50*time.Millisecond) {
				return
			}
			continue
		}
		// COUNT is per stream: one read over n shards takes up to n
		// batches, MaxHeld is exceeded by that much at most.
		read, err := q.rdb.XReadGroup(ctx, &redis.XReadGroupArgs{Group: group, Consumer: q.opts.Consumer,
			Streams: args, Count: int64(min(q.opts.Batch, room)), Block: q.opts.Block}).Result()
		if errors.Is(err, redis.Nil) {
			continue
		}
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			if isNoGroup(err) || isUnblocked(err) { // the stream expired or was deleted
				if !q.ensureGroup(ctx, streams) {
					return
				}
				continue
			}
			failures++
			if failures == 1 || failures%30 == 0 {
				q.log.Warn("push: cannot read the queue; retrying", "err", err, "failures", failures)
			}
			if !sleep(ctx, min(time.Duration(failures)*200*time.Millisecond, 2*time.Second)) {
				return
			}
			continue
		}
		failures = 0
		got := 0
		for _, s := range read {
			got += len(s.Messages)
			for _, msg := range s.Messages {
				t := q.hold(s.Stream, msg)
				if t == nil {
					continue
				}
				if time.Until(t.next) > 0 { // handed back while waiting for its retry
					q.later(t, t.next)
					continue
				}
				select {
				case ready <- t:
				case <-ctx.Done():
					return // t stays held: handed back by releaseHeld
				}
			}
		}
		if got < q.opts.Batch && !sleep(ctx, q.opts.Linger) {
			return
		}
	}
}

// hold parses an entry and records it as held; nil for an entry that is
// malformed (acknowledged and dropped) or already held. An entry handed back
// by a stopping replica while it waited for a retry carries the time before
// which it must not be sent (w): the task's next is then that time.
func (q *Queue) hold(stream string, msg redis.XMessage) *task {
	str := func(k string) string { s, _ := msg.Values[k].(string); return s }
	num := func(k string) int64 { n, _ := strconv.ParseInt(str(k), 10, 64); return n }
	j := Job{ChallengeID: str("c"), DeviceID: str("d"), Token: str("t"), ExpiresAt: time.UnixMilli(num("x"))}
	if j.ChallengeID == "" || j.Token == "" || num("x") == 0 {
		q.log.Error("push: malformed queue entry dropped", "entry", msg.ID)
		q.ack(entryRef{stream, msg.ID})
		return nil
	}
	t := &task{stream: stream, id: msg.ID, job: j, enqueued: time.UnixMilli(num("n")), attempts: int(num("a")), leased: time.Now(), index: -1}
	if w := num("w"); w > 0 {
		if d := time.UnixMilli(w).Sub(q.opts.Now()); d > 0 {
			t.next = time.Now().Add(d)
		}
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if old, ok := q.held[t.ref()]; ok {
		old.leased = time.Now()
		return nil
	}
	q.held[t.ref()] = t
	return t
}

func (q *Queue) heldCount() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.held)
}

// scheduler hands pushes whose retry delay has passed to the senders.
func (q *Queue) scheduler(ctx context.Context, ready chan<- *task) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		q.mu.Lock()
		var due *task
		wait := time.Hour
		if len(q.retry) > 0 {
			if d := time.Until(q.retry[0].next); d <= 0 {
				due = heap.Pop(&q.retry).(*task)
			} else {
				wait = d
			}
		}
		q.mu.Unlock()
		if due != nil {
			select {
			case ready <- due:
			case <-ctx.Done():
				return
			}
			continue
		}
		timer.Reset(wait)
		select {
		case <-timer.C:
		case <-q.wake:
			if !timer.Stop() {
				<-timer.C
			}
		case <-ctx.Done():
			return
		}
	}
}

// later puts a held task in the retry heap.
func (q *Queue) later(t *task, at time.Time) {
	q.mu.Lock()
	t.next = at
	first := len(q.retry) == 0 || at.Before(q.retry[0].next)
	heap.Push(&q.retry, t)
	q.mu.Unlock()
	if first {
		select {
		case q.wake <- struct{}{}:
		default:
		}
	}
}
