package keycloak

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"net/http/httptrace"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/ecps-sante/ecps/audit"
	"github.com/ecps-sante/ecps/challenge"
)

// Audit events of this package.
const (
	EventCallbackSent    = "keycloak.callback_sent"
	EventCallbackFailed  = "keycloak.callback_failed"
	EventCallbackUnknown = "keycloak.callback_unknown"
)

// CallbackOptions tune the callback queue; zero values take the defaults.
type CallbackOptions struct {
	KeyPrefix string
	// Consumer names this replica (logs); default <hostname>-<random>.
	Consumer string
	// HTTPClient sends the callbacks; default one with the environment's
	// proxy settings and no redirects. Its Timeout, if any, must exceed
	// AttemptTimeout.
	HTTPClient *http.Client
	// AttemptTimeout bounds one attempt; default 10 s.
	AttemptTimeout time.Duration
	// Lease: a claimed job whose replica neither ends nor requeues it within
	// this time is taken over by another replica; default 30 s, at least
	// 3 × AttemptTimeout.
	Lease time.Duration
	// PollEvery is how often a replica looks for due jobs (its own are
	// attempted at once); default 200 ms.
	PollEvery time.Duration
	// StoreWindow: Keycloak stores a CIBA request only after it has read our
	// 201, so a 403 this soon after it means "not stored yet" and is
	// retried; default 5 s.
	StoreWindow time.Duration
	// BackoffBase and BackoffMax shape the retry delays (exponential, with
	// jitter); defaults 250 ms and 10 s.
	BackoffBase, BackoffMax time.Duration
	// FirstDelay delays the UNAUTHORIZED of a login that could not start
	// after our 201, so that Keycloak has read it; default 100 ms.
	FirstDelay time.Duration
	// Concurrency bounds this replica's attempts in flight; default 16.
	Concurrency int
	// Keep: an ended job is kept this long (a decision sent again finds
	// it and changes nothing); default 10 min.
	Keep    time.Duration
	Logger  *slog.Logger
	Metrics *Metrics
	Now     func() time.Time
}

func (o *CallbackOptions) defaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&o.AttemptTimeout, 10*time.Second)
	def(&o.Lease, 30*time.Second)
	o.Lease = max(o.Lease, 3*o.AttemptTimeout)
	def(&o.PollEvery, 200*time.Millisecond)
	def(&o.StoreWindow, 5*time.Second)
	def(&o.BackoffBase, 250*time.Millisecond)
	def(&o.BackoffMax, 10*time.Second)
	def(&o.FirstDelay, 100*time.Millisecond)
	def(&o.Keep, 10*time.Minute)
	if o.Concurrency <= 0 {
		o.Concurrency = 16
	}
	if o.HTTPClient == nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.MaxIdleConnsPerHost = o.Concurrency
		o.HTTPClient = &http.Client{Transport: tr,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
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

// Callbacks is the durable queue of Keycloak callbacks: a job per Keycloak
// login, recorded when the login starts, queued by the login's decision (or
// at once, UNAUTHORIZED, when the login could not start), and sent by
// whichever replica claims it. See the package documentation.
type Callbacks struct {
	rdb   redis.UniversalClient
	audit *audit.Log
	keys  keys
	opts  CallbackOptions
	log   *slog.Logger
	m     *Metrics
	wake  chan struct{}
	// unanswered: job id -> op of a claim whose reply was lost (go-redis's
	// resends included). The next poll sends that claim again, same op:
	// if it ran, it answers with the job, which no one else takes meanwhile.
	// Run's goroutine only.
	unanswered map[string]string
}

// NewCallbacks returns the queue; Run sends its callbacks.
func NewCallbacks(rdb redis.UniversalClient, log *audit.Log, opts CallbackOptions) *Callbacks {
	opts.defaults()
	return &Callbacks{rdb: rdb, audit: log, keys: keys{opts.KeyPrefix}, opts: opts, log: opts.Logger,
		m: opts.Metrics, wake: make(chan struct{}, 1), unanswered: map[string]string{}}
}

// Metrics are the queue's metrics, shared with the channel and the verifier.
func (c *Callbacks) Metrics() *Metrics { return c.m }

// job is one callback.
type job struct {
	ID       string
	Status   string // SUCCEED | UNAUTHORIZED ("" while waiting)
	Why      string // why UNAUTHORIZED: denied | fraud | wrong_number | unknown_user_id | no_active_device | limit:<name>
	Params   map[string]string
	URL      string
	Token    string
	Subject  string
	Issuer   string
	AZP      string
	Expires  time.Time // the token's exp: Keycloak forgets the request then
	Accepted time.Time // our 201
	Start    time.Time // the decision or the refusal
	Attempts int
	Try      string // the op of the claim that owns it
	Stale    bool   // claimed from a replica that vanished mid-attempt
}

func (j *job) fields() []any {
	return []any{"url", j.URL, "tok", j.Token, "sub", j.Subject, "iss", j.Issuer, "azp", j.AZP,
		"exp", j.Expires.UnixMilli(), "acc", j.Accepted.UnixMilli(), "n", 0}
}

func jobFrom(vals []string) job {
	h := make(map[string]string, len(vals)/2)
	for i := 0; i+1 < len(vals); i += 2 {
		h[vals[i]] = vals[i+1]
	}
	ms := func(k string) time.Time { n, _ := strconv.ParseInt(h[k], 10, 64); return time.UnixMilli(n) }
	j := job{Status: h["status"], Why: h["why"], URL: h["url"], Token: h["tok"], Subject: h["sub"], Issuer: h["iss"],
		AZP: h["azp"], Expires: ms("exp"), Accepted: ms("acc"), Start: ms("t0"), Try: h["try"], Stale: h["stale"] == "1"}
	j.Attempts, _ = strconv.Atoi(h["n"])
	_ = json.Unmarshal([]byte(h["params"]), &j.Params)
	return j
}

// ttl is how long a job not yet ended is kept: until the token's exp, plus Keep.
func (c *Callbacks) ttl(j *job) time.Duration {
	return max(j.Expires.Sub(c.opts.Now()), 0) + c.opts.Keep
}

// expect records the job of a login that started: it waits for the
// decision. Safe to run twice.
func (c *Callbacks) expect(ctx context.Context, j *job) error {
	args := append([]any{j.ID, stWaiting, 0, c.ttl(j).Milliseconds()}, j.fields()...)
	if err := expectScript.Run(ctx, c.rdb, []string{c.keys.job(j.ID), c.keys.due()}, args...).Err(); err != nil {
		return fmt.Errorf("keycloak: record the callback: %w", err)
	}
	return nil
}

// refuse queues the UNAUTHORIZED of a login that could not start, to be
// sent FirstDelay after now (our 201). Safe to run twice.
func (c *Callbacks) refuse(ctx context.Context, j *job) error {
	j.Status = StatusUnauthorized
	due := j.Accepted.Add(c.opts.FirstDelay)
	args := append([]any{j.ID, stQueued, due.UnixMilli(), c.ttl(j).Milliseconds()}, j.fields()...)
	args = append(args, "status", j.Status, "why", j.Why, "params", "{}", "t0", j.Accepted.UnixMilli())
	if err := expectScript.Run(ctx, c.rdb, []string{c.keys.job(j.ID), c.keys.due()}, args...).Err(); err != nil {
		return fmt.Errorf("keycloak: queue the callback: %w", err)
	}
	c.kick()
	return nil
}

// Decided is challenge.Options.OnKeycloakDecision: it queues the callback
// of a Keycloak login's decision, SUCCEED with amr, device_id and
// auth_time, or UNAUTHORIZED. Run again (the phone sends its decision
// again), it changes nothing.
func (c *Callbacks) Decided(ctx context.Context, d challenge.Decided) error {
	status, why, params := StatusUnauthorized, d.Reason, map[string]string{}
	if d.Approved {
		status, why = StatusSucceed, ""
		params = map[string]string{"amr": strings.Join(challenge.AMR(d.UV), " "), "device_id": d.DeviceID,
			"auth_time": strconv.FormatInt(d.Time.Unix(), 10)}
	}
	pj, _ := json.Marshal(params)
	res, err := decidedScript.Run(ctx, c.rdb, []string{c.keys.job(d.ChallengeID), c.keys.due()},
		d.ChallengeID, status, why, string(pj), d.Time.UnixMilli()).Text()
	if err != nil {
		return fmt.Errorf("keycloak: queue the callback: %w", err)
	}
	switch res {
	case "ok":
		c.kick()
	case "none":
		// The login's job was never recorded (the channel request failed
		// after the login was created, and Keycloak was told so) or is
		// long gone: Keycloak holds no request to call back.
		c.log.Warn("keycloak: a decided login has no callback job; nothing is sent", "challenge_id", d.ChallengeID)
	}
	return nil
}

// kick wakes this replica's sender: a job of its own is sent at once.
func (c *Callbacks) kick() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// Run sends due callbacks until ctx ends; attempts in flight then finish
// (each within AttemptTimeout), and what is left stays queued for the other
// replicas.
func (c *Callbacks) Run(ctx context.Context) {
	sem := make(chan struct{}, c.opts.Concurrency)
	var wg sync.WaitGroup
	defer wg.Wait()
	tick := time.NewTicker(c.opts.PollEvery)
	defer tick.Stop()
	failures := 0
	for {
		if err := c.poll(ctx, sem, &wg); err != nil && ctx.Err() == nil {
			failures++
			if failures == 1 || failures%50 == 0 {
				c.log.Warn("keycloak: cannot read the callback queue; retrying", "err", err, "failures", failures)
			}
		} else {
			failures = 0
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-c.wake:
		}
	}
}

// poll claims the due jobs it has room for (and sends again the claims
// whose reply was lost) and attempts each in a goroutine.
func (c *Callbacks) poll(ctx context.Context, sem chan struct{}, wg *sync.WaitGroup) error {
	room := cap(sem) - len(sem) - len(c.unanswered)
	if room <= 0 && len(c.unanswered) == 0 {
		return nil
	}
	now := c.opts.Now()
	var ids []string
	if room > 0 {
		var err error
		ids, err = c.rdb.ZRangeByScore(ctx, c.keys.due(), &redis.ZRangeBy{Min: "-inf",
			Max: strconv.FormatInt(now.UnixMilli(), 10), Count: int64(room)}).Result()
		if err != nil {
			return err
		}
	}
	for id := range c.unanswered {
		if !slices.Contains(ids, id) {
			ids = append(ids, id)
		}
	}
	if len(ids) == 0 {
		return nil
	}
	p := c.rdb.Pipeline()
	cmds := make([]*redis.Cmd, len(ids))
	for i, id := range ids {
		op, ok := c.unanswered[id]
		if !ok {
			op = newOp()
			c.unanswered[id] = op // until an answer comes
		}
		cmds[i] = claimScript.Eval(ctx, p, []string{c.keys.job(id), c.keys.due()},
			id, now.UnixMilli(), c.opts.Lease.Milliseconds(), c.opts.Consumer, op)
	}
	_, _ = p.Exec(ctx) // each command's own error is read below
	var lost error
	for i, cmd := range cmds {
		vals, err := cmd.StringSlice()
		if err != nil && !errors.Is(err, redis.Nil) {
			lost = err
			continue // no answer: claimed again, same op, at the next poll
		}
		delete(c.unanswered, ids[i])
		if len(vals) == 0 || vals[0] != "ok" {
			continue
		}
		j := jobFrom(vals[1:])
		j.ID = ids[i]
		sem <- struct{}{} // room was counted: never blocks long
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			c.attempt(context.WithoutCancel(ctx), &j)
		}()
	}
	return lost
}

// attempt makes one attempt of a claimed job and records what follows.
func (c *Callbacks) attempt(ctx context.Context, j *job) {
	log := c.log.With("callback", j.ID, "status", j.Status, "attempt", j.Attempts)
	if j.Stale && j.Status == StatusSucceed {
		// Its replica vanished while it was (or was about to be) sent:
		// Keycloak may have it, and a second SUCCEED would cancel the login.
		c.end(ctx, j, OutcomeUnknown, "replica_lost", log)
		return
	}
	if !c.opts.Now().Before(j.Expires) {
		c.end(ctx, j, OutcomeFailed, "expired", log)
		return
	}
	res := c.send(ctx, j)
	c.m.attempts.WithLabelValues(res.result).Inc()
	switch {
	case res.kind == kindSent:
		c.m.deliveryTime.Observe(c.opts.Now().Sub(j.Start).Seconds())
		c.end(ctx, j, OutcomeSent, "", log)
	case res.kind == kindFailed:
		c.end(ctx, j, OutcomeFailed, res.result, log)
	case res.kind == kindUnknown && j.Status == StatusSucceed:
		c.end(ctx, j, OutcomeUnknown, res.result, log)
	default: // surely not taken, or an UNAUTHORIZED (Keycloak takes repeats of it)
		next := c.opts.Now().Add(c.backoff(j.Attempts))
		if !next.Before(j.Expires) {
			c.end(ctx, j, OutcomeFailed, res.result+" until the token's exp", log)
			return
		}
		log.Debug("keycloak callback not taken; will retry", "result", res.result, "err", res.err,
			"retry_in_ms", next.Sub(c.opts.Now()).Milliseconds())
		c.store(ctx, log, "requeue", func(ctx context.Context) (string, error) {
			return retryScript.Run(ctx, c.rdb, []string{c.keys.job(j.ID), c.keys.due()},
				j.ID, j.Try, next.UnixMilli(), res.result).Text()
		})
	}
}

// end audits a job's outcome, then marks it ended. The audit comes first: a
// replica stopped in between leaves the job to be taken over, and its one
// final entry (one op per job) is not written twice.
func (c *Callbacks) end(ctx context.Context, j *job, outcome, reason string, log *slog.Logger) {
	event := map[string]string{OutcomeSent: EventCallbackSent, OutcomeFailed: EventCallbackFailed,
		OutcomeUnknown: EventCallbackUnknown}[outcome]
	details := map[string]any{"client_id": challenge.KeycloakClientPrefix + j.AZP, "issuer": j.Issuer,
		"status": j.Status, "attempts": j.Attempts}
	if strings.HasPrefix(j.ID, "chl_") {
		details["challenge_id"] = j.ID
	}
	if j.Why != "" {
		details["reason"] = j.Why
	}
	if reason != "" {
		details["error"] = reason
	}
	entry := audit.Entry{Time: c.opts.Now().UTC().Truncate(time.Second), Event: event, Subject: j.Subject,
		Actor: audit.System, Details: details, Op: "keycloak.callback:" + j.ID}
	if !c.store(ctx, log, "audit", func(ctx context.Context) (string, error) {
		return "ok", c.audit.Append(ctx, entry)
	}) {
		return
	}
	if !c.store(ctx, log, "end", func(ctx context.Context) (string, error) {
		return finishScript.Run(ctx, c.rdb, []string{c.keys.job(j.ID), c.keys.due()},
			j.ID, j.Try, outcome, c.opts.Keep.Milliseconds(), reason).Text()
	}) {
		return
	}
	c.m.callbacks.WithLabelValues(j.Status, outcome).Inc()
	switch outcome {
	case OutcomeSent:
		log.Info("keycloak callback sent")
	case OutcomeFailed:
		log.Warn("keycloak callback failed", "error", reason)
	default:
		log.Error("keycloak callback outcome unknown: not sent again (a second SUCCEED would cancel the login)", "error", reason)
	}
}

// store runs a Redis step of a claimed job, retrying for a while (within
// the lease) when Redis fails. False when it did not happen or the job is
// another claim's now.
func (c *Callbacks) store(ctx context.Context, log *slog.Logger, what string, step func(context.Context) (string, error)) bool {
	deadline := time.Now().Add(c.opts.Lease - c.opts.AttemptTimeout)
	for try := 1; ; try++ {
		sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		res, err := step(sctx)
		cancel()
		switch {
		case err == nil && res == "lost":
			log.Info("keycloak callback taken over by another replica", "step", what)
			return false
		case err == nil:
			return true
		case time.Now().After(deadline):
			log.Error("keycloak: cannot record a callback step; another replica takes the job over", "step", what, "err", err)
			return false
		}
		time.Sleep(min(time.Duration(try)*100*time.Millisecond, time.Second))
	}
}

// backoff is the delay before the attempt after attempt n: exponential,
// with jitter (between half and all of it).
func (c *Callbacks) backoff(n int) time.Duration {
	d := c.opts.BackoffBase
	for i := 1; i < n && d < c.opts.BackoffMax; i++ {
		d *= 2
	}
	d = min(d, c.opts.BackoffMax)
	return d/2 + mrand.N(d/2+1)
}

// Kinds of attempt results.
const (
	kindSent    = iota // Keycloak took it (2xx)
	kindRetry          // surely not taken: retry
	kindFailed         // refused: never retried
	kindUnknown        // may have been taken: a SUCCEED is never sent again
)

type attemptResult struct {
	kind   int
	result string // the metric label
	err    error
}

// send makes one HTTP attempt and classifies it:
//   - 2xx: taken;
//   - nothing written (connection refused, DNS, TLS), 500, 501, 502, 503,
//     and 5xx other than 504: surely not taken, retried;
//   - 403 within StoreWindow of our 201: Keycloak had not stored the
//     request yet, retried;
//   - 504 (a gateway that may have forwarded it), a timeout or a reset once
//     the request was written: unknown;
//   - anything else (403 later, 400, 401, 3xx): refused.
func (c *Callbacks) send(ctx context.Context, j *job) attemptResult {
	body := map[string]string{}
	for k, v := range j.Params {
		body[k] = v
	}
	body["status"] = j.Status
	b, _ := json.Marshal(body)
	var wrote atomic.Bool
	trace := &httptrace.ClientTrace{WroteHeaders: func() { wrote.Store(true) }}
	actx, cancel := context.WithTimeout(httptrace.WithClientTrace(ctx, trace), c.opts.AttemptTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(actx, http.MethodPost, j.URL, bytes.NewReader(b))
	if err != nil {
		return attemptResult{kind: kindFailed, result: "http_other", err: err}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+j.Token)
	res, err := c.opts.HTTPClient.Do(req)
	if err != nil {
		var ne net.Error
		switch {
		case !wrote.Load():
			return attemptResult{kind: kindRetry, result: "connect", err: err}
		case errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()):
			return attemptResult{kind: kindUnknown, result: "timeout", err: err}
		default:
			return attemptResult{kind: kindUnknown, result: "reset", err: err}
		}
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(res.Body, 64<<10))
	res.Body.Close()
	code := res.StatusCode
	switch {
	case code >= 200 && code < 300:
		return attemptResult{kind: kindSent, result: "ok"}
	case code == http.StatusGatewayTimeout:
		return attemptResult{kind: kindUnknown, result: "http_5xx", err: fmt.Errorf("HTTP %d", code)}
	case code >= 500:
		return attemptResult{kind: kindRetry, result: "http_5xx", err: fmt.Errorf("HTTP %d", code)}
	case code == http.StatusForbidden && c.opts.Now().Sub(j.Accepted) < c.opts.StoreWindow:
		return attemptResult{kind: kindRetry, result: "http_403_early", err: fmt.Errorf("HTTP %d", code)}
	case code == http.StatusForbidden:
		return attemptResult{kind: kindFailed, result: "http_403"}
	case code >= 400:
		return attemptResult{kind: kindFailed, result: "http_4xx"}
	}
	return attemptResult{kind: kindFailed, result: "http_other"}
}

func newOp() string {
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
