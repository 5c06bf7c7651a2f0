package push

import (
	"container/heap"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
)

// TokenClearer clears a device's dead push token (enrollment.Service).
type TokenClearer interface {
	ClearPushToken(ctx context.Context, deviceID, token, reason string) (bool, error)
}

// QueueOptions tune the queue; zero values take the defaults.
type QueueOptions struct {
	KeyPrefix string
	// Provider names the provider in /readyz ("fcm").
	Provider string
	// Consumer is this replica's name in the consumer group; default
	// <hostname>-<random>, new at each start.
	Consumer string
	// Concurrency is the number of sends in flight per replica; default 32.
	Concurrency int
	// AttemptTimeout bounds one send attempt; default 10 s.
	AttemptTimeout time.Duration
	// ClaimAfter: a push taken by a replica and left idle this long (the
	// replica died) is taken over by another; default 30 s. Replicas renew
	// their lease on what they hold every ClaimAfter/3, and it must exceed
	// AttemptTimeout.
	ClaimAfter time.Duration
	// Housekeep is how often a replica takes over stale pushes, renews its
	// leases and measures the queue; default 5 s.
	Housekeep time.Duration
	// Block is how long one read waits for new pushes; default 1 s.
	Block time.Duration
	// Linger: after a read that did not fill a batch, the next read waits
	// this long, so that pushes arriving meanwhile are read together (fewer
	// round trips for a little latency); default 2 ms.
	Linger time.Duration
	// AckEvery: finished pushes are acknowledged and deleted in one round
	// trip this often; default 20 ms.
	AckEvery time.Duration
	// Batch is how many pushes one read takes at most; default Concurrency.
	Batch int
	// MaxHeld bounds the pushes one replica holds (sending or waiting to be
	// retried); default 10,000. Beyond, they wait in Redis.
	MaxHeld int
	// BackoffBase and BackoffMax shape the retry delays (exponential, with
	// jitter, at least the provider's Retry-After); defaults 500 ms and 30 s.
	BackoffBase, BackoffMax time.Duration
	// MinTTL: a push with less time left than this before its login expires
	// is dropped, never sent; default 1 s.
	MinTTL time.Duration
	// Retention: entries older than this are trimmed, whatever happened to
	// them (a login lives at most 5 minutes); default 10 min.
	Retention time.Duration
	Logger    *slog.Logger
	Metrics   *Metrics
	// Now is the clock of logins' expiries.
	Now func() time.Time
}

func (o *QueueOptions) defaults() {
	defDur := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	defInt := func(i *int, v int) {
		if *i <= 0 {
			*i = v
		}
	}
	defInt(&o.Concurrency, 32)
	defDur(&o.AttemptTimeout, 10*time.Second)
	defDur(&o.ClaimAfter, 30*time.Second)
	if o.ClaimAfter <= o.AttemptTimeout {
		o.ClaimAfter = 3 * o.AttemptTimeout
	}
	defDur(&o.Housekeep, 5*time.Second)
	defDur(&o.Block, time.Second)
	defDur(&o.Linger, 2*time.Millisecond)
	defDur(&o.AckEvery, 20*time.Millisecond)
	defInt(&o.Batch, o.Concurrency)
	defInt(&o.MaxHeld, 10_000)
	defDur(&o.BackoffBase, 500*time.Millisecond)
	defDur(&o.BackoffMax, 30*time.Second)
	defDur(&o.MinTTL, time.Second)
	defDur(&o.Retention, 10*time.Minute)
	if o.Provider == "" {
		o.Provider = "fcm"
	}
	if o.Consumer == "" {
		host, _ := os.Hostname()
		b := make([]byte, 4)
		_, _ = rand.Read(b)
		o.Consumer = strings.ReplaceAll(host, " ", "_") + "-" + hex.EncodeToString(b)
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Metrics == nil {
		o.Metrics = NewMetrics(prometheus.NewRegistry())
	}
	if o.Now == nil {
		o.Now = time.Now
	}
}

// streamTTL: the stream expires this long after its last enqueue.
const streamTTL = 24 * time.Hour

// Queue is the durable push queue: Send records a login's pushes in a Redis
// stream; Run, in every replica, sends them through the Provider. See the
// package documentation for the states of a push.
type Queue struct {
	rdb      redis.UniversalClient
	provider Provider
	tokens   TokenClearer
	keys     keys
	opts     QueueOptions
	log      *slog.Logger
	m        *Metrics
	health   *health

	mu    sync.Mutex
	held  map[string]*task // entry id -> task this replica holds
	retry taskHeap         // held tasks waiting for their next attempt
	wake  chan struct{}
	acks  chan string
}

// NewQueue returns a queue sending through provider; tokens clears dead tokens.
func NewQueue(rdb redis.UniversalClient, provider Provider, tokens TokenClearer, opts QueueOptions) *Queue {
	opts.defaults()
	return &Queue{rdb: rdb, provider: provider, tokens: tokens, keys: keys{opts.KeyPrefix}, opts: opts,
		log: opts.Logger, m: opts.Metrics, health: newHealth(opts.Logger, opts.Metrics),
		held: map[string]*task{}, wake: make(chan struct{}, 1)}
}

// Status is the provider's health as this replica sees it, for /readyz.
func (q *Queue) Status() Status { return q.health.status(q.opts.Provider) }

// Consumer is this replica's name in the consumer group.
func (q *Queue) Consumer() string { return q.opts.Consumer }

// Send queues the pushes: one Redis round trip, never a wait on the
// provider. The jobs of one login are queued once: a retried Send (go-redis
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
		n, err := enqueueScript.Run(ctx, q.rdb, []string{q.keys.stream(), q.keys.enqueued(c)}, args...).Int()
		if err != nil {
			return fmt.Errorf("push enqueue: %w", err)
		}
		q.m.enqueueTotal.Add(float64(n))
	}
	return nil
}

// task is one push held by this replica.
type task struct {
	id       string
	job      Job
	enqueued time.Time // the login's creation, for the delivery latency
	attempts int
	last     Result    // the last attempt's result
	leased   time.Time // last delivery or lease renewal (monotonic)
	next     time.Time // next attempt (monotonic)
	lost     bool      // another replica took it over
	index    int       // in the retry heap, -1 when not there
}

// Run sends queued pushes until ctx ends, then stops gracefully: attempts in
// flight finish (each within AttemptTimeout), pushes waiting for a retry go
// back to the queue for another replica, and acknowledgements are flushed.
func (q *Queue) Run(ctx context.Context) {
	q.acks = make(chan string, 8192)
	ackDone := make(chan struct{})
	go func() { defer close(ackDone); q.acker() }()

	ready := make(chan *task)
	var senders sync.WaitGroup
	for i := 0; i < q.opts.Concurrency; i++ {
		senders.Add(1)
		go func() {
			defer senders.Done()
			for t := range ready {
				q.attempt(ctx, t)
			}
		}()
	}
	if q.ensureGroup(ctx) {
		var feeders sync.WaitGroup
		feeders.Add(3)
		go func() { defer feeders.Done(); q.reader(ctx, ready) }()
		go func() { defer feeders.Done(); q.scheduler(ctx, ready) }()
		go func() { defer feeders.Done(); q.housekeeper(ctx) }()
		feeders.Wait()
	}
	close(ready)
	senders.Wait()
	q.releaseHeld()
	close(q.acks)
	<-ackDone
}

// ensureGroup creates the consumer group (and the stream) if needed,
// retrying while Redis is unreachable. False when ctx ended first.
func (q *Queue) ensureGroup(ctx context.Context) bool {
	for {
		err := q.rdb.XGroupCreateMkStream(ctx, q.keys.stream(), group, "0").Err()
		if err == nil || strings.HasPrefix(err.Error(), "BUSYGROUP") {
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		q.log.Warn("push: cannot create the queue's consumer group; retrying", "err", err)
		if !sleep(ctx, time.Second) {
			return false
		}
	}
}

func isNoGroup(err error) bool { return err != nil && strings.HasPrefix(err.Error(), "NOGROUP") }

// isUnblocked: the stream was deleted while XREADGROUP blocked on it.
func isUnblocked(err error) bool { return err != nil && strings.HasPrefix(err.Error(), "UNBLOCKED") }

// reader takes new pushes from the stream and hands them to the senders; it
// blocks while they are all busy (the pushes wait in Redis meanwhile).
func (q *Queue) reader(ctx context.Context, ready chan<- *task) {
	failures := 0
	for ctx.Err() == nil {
		room := q.opts.MaxHeld - q.heldCount()
		if room <= 0 {
			if !sleep(ctx, 50*time.Millisecond) {
				return
			}
			continue
		}
		streams, err := q.rdb.XReadGroup(ctx, &redis.XReadGroupArgs{Group: group, Consumer: q.opts.Consumer,
			Streams: []string{q.keys.stream(), ">"}, Count: int64(min(q.opts.Batch, room)), Block: q.opts.Block}).Result()
		if errors.Is(err, redis.Nil) {
			continue
		}
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			if isNoGroup(err) || isUnblocked(err) { // the stream expired or was deleted
				if !q.ensureGroup(ctx) {
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
		for _, s := range streams {
			got += len(s.Messages)
			for _, msg := range s.Messages {
				t := q.hold(msg)
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
func (q *Queue) hold(msg redis.XMessage) *task {
	str := func(k string) string { s, _ := msg.Values[k].(string); return s }
	num := func(k string) int64 { n, _ := strconv.ParseInt(str(k), 10, 64); return n }
	j := Job{ChallengeID: str("c"), DeviceID: str("d"), Token: str("t"), ExpiresAt: time.UnixMilli(num("x"))}
	if j.ChallengeID == "" || j.Token == "" || num("x") == 0 {
		q.log.Error("push: malformed queue entry dropped", "entry", msg.ID)
		q.ack(msg.ID)
		return nil
	}
	t := &task{id: msg.ID, job: j, enqueued: time.UnixMilli(num("n")), attempts: int(num("a")), leased: time.Now(), index: -1}
	if w := num("w"); w > 0 {
		if d := time.UnixMilli(w).Sub(q.opts.Now()); d > 0 {
			t.next = time.Now().Add(d)
		}
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if old, ok := q.held[msg.ID]; ok {
		old.leased = time.Now()
		return nil
	}
	q.held[msg.ID] = t
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

// attempt makes one send attempt of t and decides what follows.
func (q *Queue) attempt(ctx context.Context, t *task) {
	q.mu.Lock()
	lost := t.lost
	q.mu.Unlock()
	if lost {
		q.forget(t)
		return
	}
	left := t.job.ExpiresAt.Sub(q.opts.Now())
	if left < q.opts.MinTTL {
		q.giveUp(t)
		return
	}
	// The attempt finishes even when the replica is stopping (ctx ended):
	// abandoning a request in flight could leave FCM with a push that we
	// would then retry.
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), min(q.opts.AttemptTimeout, left))
	start := time.Now()
	res := q.provider.Push(actx, t.job, left)
	cancel()
	q.m.sendLatency.Observe(time.Since(start).Seconds())
	t.attempts++
	t.last = res
	log := q.log.With("challenge_id", t.job.ChallengeID, "device_id", t.job.DeviceID, "attempt", t.attempts)

	switch res.Outcome {
	case Sent:
		q.m.sent.Inc()
		q.m.delivery.Observe(q.opts.Now().Sub(t.enqueued).Seconds())
		q.health.sent()
		log.Debug("push sent", "ttl_s", int(left.Seconds()))
		q.finish(t)
		return
	case DeadToken:
		q.m.attemptErrs.WithLabelValues(res.Reason).Inc()
		q.m.failed.WithLabelValues(FailDeadToken).Inc()
		q.clearToken(ctx, t, res.Reason, log)
		q.finish(t)
		return
	case Rejected:
		q.m.attemptErrs.WithLabelValues(res.Reason).Inc()
		q.m.failed.WithLabelValues(FailRejected).Inc()
		log.Error("push rejected by the provider; not retried", "reason", res.Reason, "err", scrub(res.Err, t.job.Token))
		q.finish(t)
		return
	case AuthFailed:
		kind := authKindCredentials
		if res.Reason == "apns_auth" {
			kind = authKindAPNs
		}
		q.health.authFailed(kind, scrub(res.Err, t.job.Token))
	}
	q.m.attemptErrs.WithLabelValues(res.Reason).Inc()

	delay := q.backoff(t.attempts)
	if res.RetryAfter > delay {
		delay = res.RetryAfter
	}
	if !q.opts.Now().Add(delay).Before(t.job.ExpiresAt.Add(-q.opts.MinTTL)) {
		log.Debug("push attempt failed; no time left to retry", "reason", res.Reason, "err", scrub(res.Err, t.job.Token))
		q.giveUp(t)
		return
	}
	log.Debug("push attempt failed; will retry", "reason", res.Reason, "retry_in_ms", delay.Milliseconds(),
		"err", scrub(res.Err, t.job.Token))
	q.mu.Lock()
	lost = t.lost
	q.mu.Unlock()
	switch {
	case lost:
		q.forget(t)
	case ctx.Err() != nil:
		// Stopping: the push stays held and goes back to the queue, with
		// the time of its next attempt.
		q.mu.Lock()
		t.next = time.Now().Add(delay)
		q.mu.Unlock()
	default:
		q.later(t, time.Now().Add(delay))
	}
}

// backoff is the delay before attempt n+1: exponential, with jitter
// (between half and all of it).
func (q *Queue) backoff(n int) time.Duration {
	d := q.opts.BackoffBase
	for i := 1; i < n && d < q.opts.BackoffMax; i++ {
		d *= 2
	}
	d = min(d, q.opts.BackoffMax)
	return d/2 + mrand.N(d/2+1)
}

// giveUp ends a push that reached its login's expiry.
func (q *Queue) giveUp(t *task) {
	reason := FailExpired
	switch {
	case t.attempts > 0 && t.last.Outcome == AuthFailed:
		reason = FailAuth
	case t.attempts > 0:
		reason = FailTransient
	}
	q.m.failed.WithLabelValues(reason).Inc()
	q.log.Info("push dropped at its login's expiry", "challenge_id", t.job.ChallengeID, "device_id", t.job.DeviceID,
		"attempts", t.attempts, "reason", reason, "last_error", t.last.Reason)
	q.finish(t)
}

// clearToken clears a dead token on its device, which then polls.
func (q *Queue) clearToken(ctx context.Context, t *task, reason string, log *slog.Logger) {
	if q.tokens == nil {
		return
	}
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	cleared, err := q.tokens.ClearPushToken(cctx, t.job.DeviceID, t.job.Token, reason)
	switch {
	case err != nil:
		log.Warn("push: cannot clear a dead token; the next login will try again", "reason", reason, "err", err)
	case cleared:
		q.m.tokensClear.Inc()
		log.Info("push token dead: cleared, the device polls", "reason", reason)
	default:
		log.Debug("push token dead, already replaced or cleared", "reason", reason)
	}
}

// finish acknowledges and deletes a push that is done.
func (q *Queue) finish(t *task) {
	q.forget(t)
	q.ack(t.id)
}

// forget stops holding t (without acknowledging it).
func (q *Queue) forget(t *task) {
	q.mu.Lock()
	if t.index >= 0 {
		heap.Remove(&q.retry, t.index)
	}
	delete(q.held, t.id)
	q.mu.Unlock()
}

func (q *Queue) ack(id string) { q.acks <- id }

// acker acknowledges and deletes finished entries in batches: one round
// trip every AckEvery (or every 1,024 entries) for all those finished
// meanwhile.
func (q *Queue) acker() {
	batch := make([]string, 0, 1024)
	tick := time.NewTicker(q.opts.AckEvery)
	defer tick.Stop()
	for {
		select {
		case id, ok := <-q.acks:
			if !ok {
				if len(batch) > 0 {
					q.flushAcks(batch)
				}
				return
			}
			batch = append(batch, id)
			if len(batch) == cap(batch) {
				q.flushAcks(batch)
				batch = batch[:0]
			}
		case <-tick.C:
			if len(batch) > 0 {
				q.flushAcks(batch)
				batch = batch[:0]
			}
		}
	}
}

// flushAcks retries for a while: an entry left unacknowledged would be sent
// again by the replica that takes it over.
func (q *Queue) flushAcks(ids []string) {
	deadline := time.Now().Add(q.opts.ClaimAfter / 2)
	for try := 1; ; try++ {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		p := q.rdb.Pipeline()
		p.XAck(ctx, q.keys.stream(), group, ids...)
		p.XDel(ctx, q.keys.stream(), ids...)
		_, err := p.Exec(ctx)
		cancel()
		if err == nil || isNoGroup(err) {
			return
		}
		if time.Now().After(deadline) {
			q.log.Error("push: cannot acknowledge sent pushes; another replica may send them again", "n", len(ids), "err", err)
			return
		}
		time.Sleep(min(time.Duration(try)*100*time.Millisecond, time.Second))
	}
}

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

// scrub renders an error for the log without the push token.
func scrub(err error, token string) string {
	if err == nil {
		return ""
	}
	s := err.Error()
	if token != "" {
		s = strings.ReplaceAll(s, token, "<token>")
	}
	return s
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// taskHeap orders waiting tasks by their next attempt.
type taskHeap []*task

func (h taskHeap) Len() int           { return len(h) }
func (h taskHeap) Less(i, j int) bool { return h[i].next.Before(h[j].next) }
func (h taskHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index = i
	h[j].index = j
}
func (h *taskHeap) Push(x any) {
	t := x.(*task)
	t.index = len(*h)
	*h = append(*h, t)
}
func (h *taskHeap) Pop() any {
	old := *h
	t := old[len(old)-1]
	old[len(old)-1] = nil
	t.index = -1
	*h = old[:len(old)-1]
	return t
}
