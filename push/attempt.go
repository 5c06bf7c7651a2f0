package push

import (
	"context"
	"log/slog"
	mrand "math/rand/v2"
	"time"
)

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
