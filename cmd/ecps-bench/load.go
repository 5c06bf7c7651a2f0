package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"
)

// bench is one run against the targets.
type bench struct {
	opts    options
	targets []string
	api     *apiClient
	fcm     *fakeFCM // nil: phones poll their challenge list
	pool    *pool
	log     io.Writer

	shards   []*shard
	seq      atomic.Int64 // logins started
	inflight atomic.Int64
	okN      atomic.Int64
	errN     atomic.Int64
	dropped  atomic.Int64 // open loop: due but not started (-max-inflight reached)

	ivMu sync.Mutex
	iv   *hdrhistogram.Histogram // total latency of the logins ended since the last progress line

	// loginFn runs one login (b.login; the scheduler's tests replace it).
	loginFn func(ctx context.Context, n int64, intended time.Time) loginResult
}

func (b *bench) logf(format string, args ...any) {
	fmt.Fprintf(b.log, "ecps-bench: "+format+"\n", args...)
}

// ---- the practitioners' pool ----

var errBudget = errors.New("every practitioner has used its pushes for the window (limits.pushes_per_subject): " +
	"enrol more devices (-devices) or run against a config with a higher limit and pass -pushes-per-subject 0")

// pool lends practitioners to logins, one login each at a time, in turn
// (the least recently used first), within the push limit per practitioner
// (perWindow push logins per window; 0: no limit).
type pool struct {
	mu        sync.Mutex
	free      []*subject
	total     int
	perWindow int
	window    time.Duration
	released  chan struct{}
	now       func() time.Time
}

func newPool(subjects []*subject, perWindow int, window time.Duration) *pool {
	return &pool{free: append([]*subject(nil), subjects...), total: len(subjects), perWindow: perWindow,
		window: window, released: make(chan struct{}, 1), now: time.Now}
}

// acquire takes a practitioner that may receive one more push now, and
// counts that push. It waits while every practitioner within the limit is
// busy; it fails with errBudget when none is within it.
func (p *pool) acquire(ctx context.Context) (*subject, error) {
	for {
		p.mu.Lock()
		now := p.now()
		for i, s := range p.free {
			if p.perWindow > 0 {
				k := 0
				for k < len(s.recent) && now.Sub(s.recent[k]) >= p.window {
					k++
				}
				s.recent = s.recent[k:]
				if len(s.recent) >= p.perWindow {
					continue
				}
				s.recent = append(s.recent, now)
			}
			p.free = append(p.free[:i], p.free[i+1:]...)
			p.mu.Unlock()
			return s, nil
		}
		exhausted := len(p.free) == p.total
		p.mu.Unlock()
		if exhausted {
			return nil, errBudget
		}
		select {
		case <-p.released:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

func (p *pool) release(s *subject) {
	p.mu.Lock()
	p.free = append(p.free, s)
	p.mu.Unlock()
	select {
	case p.released <- struct{}{}:
	default:
	}
}

// ---- one login ----

type created struct {
	AuthReqID          string `json:"auth_req_id"`
	VerificationNumber string `json:"verification_number"`
}

type challengeObj struct {
	ChallengeID string `json:"challenge_id"`
	Nonce       string `json:"nonce"`
	CreatedAt   string `json:"created_at"`
}

type pollOutcome struct {
	r   reply
	err error
	at  time.Time
}

func fail(step string, r reply, err error) loginResult {
	return loginResult{err: errorKind(step, r, err)}
}

// login runs one full push login due at intended: the IdP creates it on
// one replica and long-polls there at once; the phone learns the challenge
// (push or list) and decides on the next replica, so that the result
// crosses replicas whenever there are two or more.
func (b *bench) login(ctx context.Context, n int64, intended time.Time) loginResult {
	subj, err := b.pool.acquire(ctx)
	if err != nil {
		if errors.Is(err, errBudget) {
			return loginResult{err: "subject_budget"}
		}
		return loginResult{err: "start:cancelled"}
	}
	defer b.pool.release(subj)
	idpURL := b.targets[int(n)%len(b.targets)]
	phoneURL := b.targets[int(n+1)%len(b.targets)]
	steps := make(map[string]time.Duration, len(stepOrder))

	t0 := time.Now()
	r, err := b.api.call(ctx, http.MethodPost, idpURL+"/api/v1/authentications",
		map[string]any{"login_hint": subj.idnat, "binding_message": "ecps-bench", "requested_expiry": 60}, idpAuth{b.api}, 0)
	if err != nil || r.status != http.StatusCreated {
		return fail(stepCreate, r, err)
	}
	t1 := time.Now()
	steps[stepCreate] = t1.Sub(t0)
	var c created
	if err := json.Unmarshal(r.body, &c); err != nil || c.AuthReqID == "" {
		return loginResult{err: "create:bad_answer"}
	}
	authURL := idpURL + "/api/v1/authentications/" + url.PathEscape(c.AuthReqID)

	lctx, cancel := context.WithCancel(ctx)
	defer cancel()
	polled := make(chan pollOutcome, 1)
	go func() {
		r, err := b.api.call(lctx, http.MethodGet, authURL+fmt.Sprintf("?wait=%d", b.opts.wait), nil, idpAuth{b.api},
			time.Duration(b.opts.wait+10)*time.Second)
		polled <- pollOutcome{r, err, time.Now()}
	}()
	ok := false
	defer func() {
		if !ok { // free the practitioner's pending slot
			dctx, dcancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			_, _ = b.api.call(dctx, http.MethodDelete, authURL, nil, idpAuth{b.api}, 0)
			dcancel()
		}
	}()

	// The phone learns the challenge.
	var dev *device
	var ch challengeObj
	if b.fcm != nil {
		timer := time.NewTimer(b.opts.pushTimeout)
		defer timer.Stop()
		for dev == nil {
			select {
			case note := <-subj.pushes:
				if !subj.wasSeen(note.challengeID) {
					dev, ch.ChallengeID = note.dev, note.challengeID
				}
			case <-timer.C:
				return loginResult{err: "learn:no_push"}
			case <-ctx.Done():
				return loginResult{err: "learn:cancelled"}
			}
		}
		t2 := time.Now()
		steps[stepLearn] = t2.Sub(t1)
		subj.markSeen(ch.ChallengeID)
		r, err := b.api.call(ctx, http.MethodGet, phoneURL+"/api/v1/device/challenges/"+url.PathEscape(ch.ChallengeID), nil,
			deviceAuth{dev.sig}, 0)
		if err != nil || r.status != http.StatusOK {
			return fail(stepRead, r, err)
		}
		if err := json.Unmarshal(r.body, &ch); err != nil || ch.Nonce == "" {
			return loginResult{err: "read:bad_answer"}
		}
		steps[stepRead] = time.Since(t2)
	} else {
		dev = subj.devices[0]
		deadline := time.Now().Add(b.opts.pushTimeout)
		for ch.ChallengeID == "" {
			r, err := b.api.call(ctx, http.MethodGet, phoneURL+"/api/v1/device/challenges", nil, deviceAuth{dev.sig}, 0)
			if err != nil || r.status != http.StatusOK {
				return fail(stepLearn, r, err)
			}
			var list struct {
				Challenges []challengeObj `json:"challenges"`
			}
			if err := json.Unmarshal(r.body, &list); err != nil {
				return loginResult{err: "learn:bad_answer"}
			}
			for _, x := range list.Challenges { // the newest not yet handled
				if !subj.wasSeen(x.ChallengeID) && x.CreatedAt >= ch.CreatedAt {
					ch = x
				}
			}
			if ch.ChallengeID != "" {
				break
			}
			if time.Now().After(deadline) {
				return loginResult{err: "learn:not_listed"}
			}
			select {
			case <-time.After(b.opts.phonePoll):
			case <-ctx.Done():
				return loginResult{err: "learn:cancelled"}
			}
		}
		steps[stepLearn] = time.Since(t1)
		subj.markSeen(ch.ChallengeID)
	}

	// The signed decision, with the number the IdP shows.
	jws, err := dev.sig.sign(typDecision, map[string]any{"challenge_id": ch.ChallengeID, "nonce": ch.Nonce,
		"decision": "approve", "number": c.VerificationNumber, "uv": "pin", "iat": time.Now().Unix()})
	if err != nil {
		return loginResult{err: "decide:sign"}
	}
	body, _ := json.Marshal(map[string]string{"response": jws})
	tDecision := time.Now()
	r, err = b.api.call(ctx, http.MethodPost, phoneURL+"/api/v1/device/challenges/"+url.PathEscape(ch.ChallengeID)+"/response",
		body, deviceAuth{dev.sig}, 0)
	if err != nil || r.status != http.StatusNoContent {
		return fail(stepDecide, r, err)
	}
	steps[stepDecide] = time.Since(tDecision)

	// The IdP's long-poll answers.
	var o pollOutcome
	select {
	case o = <-polled:
	case <-ctx.Done():
		return loginResult{err: "result:cancelled"}
	}
	if o.err != nil || o.r.status != http.StatusOK {
		return fail(stepResult, o.r, o.err)
	}
	var res struct {
		Status string `json:"status"`
		Sub    string `json:"sub"`
	}
	if err := json.Unmarshal(o.r.body, &res); err != nil || res.Status != "approved" || res.Sub != subj.idnat {
		return loginResult{err: "result:bad_answer"}
	}
	ok = true
	steps[stepResult] = max(o.at.Sub(tDecision), 0) // the long-poll may answer before the 204 is read
	steps[stepTotal] = o.at.Sub(intended)
	return loginResult{steps: steps}
}

// ---- the loops ----

// done records a login's outcome.
func (b *bench) done(n int64, r loginResult) {
	b.shards[int(n)%len(b.shards)].add(r)
	if r.err != "" {
		b.errN.Add(1)
		return
	}
	b.okN.Add(1)
	b.ivMu.Lock()
	record(b.iv, r.steps[stepTotal])
	b.ivMu.Unlock()
}

// errorPause is how long a closed-loop worker waits after a failed login.
const errorPause = 100 * time.Millisecond

// closedLoop runs conc logins at a time, each starting when the previous
// one of its worker ends (errorPause after a failure), until end.
func (b *bench) closedLoop(ctx context.Context, conc int, end time.Time, stop func()) {
	var wg sync.WaitGroup
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(end) && ctx.Err() == nil {
				n := b.seq.Add(1) - 1
				b.inflight.Add(1)
				r := b.loginFn(ctx, n, time.Now())
				b.inflight.Add(-1)
				b.done(n, r)
				if r.err == "subject_budget" {
					stop()
					return
				}
				if r.err != "" { // no hot loop of failures (e.g. 429s): a pause, as a client would
					select {
					case <-time.After(errorPause):
					case <-ctx.Done():
					}
				}
			}
		}()
	}
	wg.Wait()
}

// openLoop starts logins at rate per second, each at its intended start
// time whatever the previous ones do; latencies are measured from that
// intended time, so a stalled service shows in them (no coordinated
// omission). A login due while maxInflight are running is not started and
// is counted as dropped (an error).
func (b *bench) openLoop(ctx context.Context, rate float64, maxInflight int, start, end time.Time, stop func()) {
	var wg sync.WaitGroup
	timer := time.NewTimer(0)
	defer timer.Stop()
	for i := int64(0); ctx.Err() == nil; i++ {
		due := intendedStart(start, rate, i)
		if !due.Before(end) {
			break
		}
		if d := time.Until(due); d > 0 {
			timer.Reset(d)
			select {
			case <-timer.C:
			case <-ctx.Done():
			}
		}
		if b.inflight.Load() >= int64(maxInflight) {
			b.dropped.Add(1)
			b.done(i, loginResult{err: "start:max_inflight"})
			continue
		}
		b.seq.Add(1)
		b.inflight.Add(1)
		wg.Add(1)
		go func(n int64) {
			defer wg.Done()
			r := b.loginFn(ctx, n, due)
			b.inflight.Add(-1)
			b.done(n, r)
			if r.err == "subject_budget" {
				stop()
			}
		}(i)
	}
	wg.Wait()
}

// progress prints a line every second until ctx ends.
func (b *bench) progress(ctx context.Context, start time.Time) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	var lastOK int64
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			ok := b.okN.Load()
			b.ivMu.Lock()
			p50, p99, mx := ms(b.iv.ValueAtQuantile(50)), ms(b.iv.ValueAtQuantile(99)), ms(b.iv.Max())
			b.iv.Reset()
			b.ivMu.Unlock()
			fmt.Fprintf(b.log, "[%4.0fs] logins %7d  +%5d/s  errors %5d  in flight %4d  total p50 %7.2f ms  p99 %7.2f ms  max %7.2f ms\n",
				now.Sub(start).Seconds(), ok, ok-lastOK, b.errN.Load(), b.inflight.Load(), p50, p99, mx)
			lastOK = ok
		}
	}
}
