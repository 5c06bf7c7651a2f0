package challenge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ecps-sante/ecps/audit"
	"github.com/ecps-sante/ecps/token"
)

// This file holds what the IdP does with a login after creating it: poll
// it (long-poll included) and cancel it.

// Result is an approved authentication, as the IdP gets it once.
type Result struct {
	Subject  string
	AuthTime time.Time
	DeviceID string
	UV       string          // pin | fingerprint | face
	Identity json.RawMessage // the practitioner's identity; nil without a directory
}

// Poll answers an IdP's poll. With wait > 0 it waits up to wait for the
// authentication to end. Errors: ErrInvalidGrant, ErrPending,
// *SlowDownError, ErrExpired, *DeniedError.
func (s *Service) Poll(ctx context.Context, clientID, authReqID string, wait time.Duration) (Result, error) {
	tag, secret, ok := splitID(authReqID)
	if !ok {
		return Result{}, ErrInvalidGrant
	}
	start := s.now()
	read := func(check bool) (Result, error) {
		checkArg := "0"
		if check {
			checkArg = "1"
		}
		ctx, cancel := context.WithTimeout(ctx, s.opts.ReadBudget)
		defer cancel()
		// op names this read: resent after a lost reply, it is the same read.
		op, now := token.New(12), s.now().UnixMilli()
		for {
			vals, err := pollScript.Run(ctx, s.rdb, []string{s.keys.auth(tag)}, token.SHA256Hex(secret), clientID,
				now, checkArg, start.UnixMilli(), op).StringSlice()
			if err == nil {
				return pollResult(vals)
			}
			// The read that delivers a result marks it with op: if all of
			// go-redis's resends lost their replies, a 503 would leave the
			// result delivered to nobody (the IdP's next poll is another
			// read). So the same read is sent again, until the budget ends.
			var reply redis.Error
			if errors.As(err, &reply) || !retryable(ctx) {
				return Result{}, fmt.Errorf("poll: %w", err)
			}
		}
	}
	if wait <= 0 {
		return read(true)
	}
	// The waiter is registered before the first read: a decision taken
	// after the read wakes it, and one taken before is seen by the read.
	woken, done := s.hub.register(tag)
	defer done()
	if res, err := read(true); !errors.Is(err, ErrPending) {
		return res, err
	}
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for {
		select {
		case <-woken:
			if res, err := read(false); !errors.Is(err, ErrPending) {
				return res, err
			}
		case <-timer.C:
			return read(false)
		case <-s.hub.Closing():
			return Result{}, ErrPending
		case <-ctx.Done():
			return Result{}, ErrPending
		}
	}
}

func pollResult(vals []string) (Result, error) {
	if len(vals) == 0 {
		return Result{}, ErrInvalidGrant
	}
	switch {
	case vals[0] == "pending":
		return Result{}, ErrPending
	case vals[0] == "expired":
		return Result{}, ErrExpired
	case vals[0] == "slow_down" && len(vals) == 2:
		n, _ := strconv.Atoi(vals[1])
		return Result{}, &SlowDownError{Interval: time.Duration(n) * time.Second}
	case vals[0] == "denied" && len(vals) == 2:
		return Result{}, &DeniedError{Reason: vals[1]}
	case vals[0] == "approved" && len(vals) >= 5:
		ms, _ := strconv.ParseInt(vals[2], 10, 64)
		res := Result{Subject: vals[1], AuthTime: time.UnixMilli(ms).UTC(), DeviceID: vals[3], UV: vals[4]}
		if len(vals) > 5 && vals[5] != "" {
			res.Identity = json.RawMessage(vals[5])
		}
		return res, nil
	case vals[0] == "invalid_grant":
		return Result{}, ErrInvalidGrant
	}
	return Result{}, fmt.Errorf("poll: unexpected reply %q", vals)
}

// Cancel cancels an undecided authentication for its IdP (the user left).
func (s *Service) Cancel(ctx context.Context, clientID, authReqID string) error {
	tag, secret, ok := splitID(authReqID)
	if !ok {
		return ErrInvalidGrant
	}
	now := s.now()
	vals, err := cancelScript.Run(ctx, s.rdb, []string{s.keys.auth(tag)}, token.SHA256Hex(secret), clientID, now.UnixMilli()).StringSlice()
	if err != nil {
		return fmt.Errorf("cancel: %w", err)
	}
	switch {
	case len(vals) == 1 && vals[0] == "invalid_grant":
		return ErrInvalidGrant
	case len(vals) == 1 && vals[0] == "noop":
		return nil
	case len(vals) != 3 || vals[0] != "cancelled":
		return fmt.Errorf("cancel: unexpected reply %q", vals)
	}
	subject, challengeID := vals[1], "chl_"+tag
	entry := audit.Entry{Time: now.Truncate(time.Second), Event: EventCancelled, Subject: subject,
		Actor: audit.Actor{Type: audit.ActorClient, ID: clientID}, Details: map[string]any{"challenge_id": challengeID}}
	ej, minID, ttl := s.audit.ScriptArgs(entry)
	err = s.hub.announce(ctx, tag, []*redis.Script{cancelledScript}, func(p redis.Pipeliner) {
		if subject != "" {
			cancelledScript.EvalSha(ctx, p, []string{s.keys.logins(subject), s.audit.SubjectStream(subject)},
				challengeID, ej, minID, ttl, endedUntil(vals[2]), s.loginsKeep().Milliseconds())
		}
	})
	if err != nil {
		return fmt.Errorf("cancel: %w", err)
	}
	return nil
}

// pollRetryPause is the pause between two sends of the same poll read
// after network errors.
const pollRetryPause = 50 * time.Millisecond

// retryable waits pollRetryPause and reports whether ctx leaves time to
// send a read again.
func retryable(ctx context.Context) bool {
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) < 2*pollRetryPause {
		return false
	}
	select {
	case <-ctx.Done():
		return false
	case <-time.After(pollRetryPause):
		return true
	}
}
