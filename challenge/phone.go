package challenge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// This file holds the phone's side of its practitioner's logins: the list
// and the read of its challenges, from the practitioner's hash.

// Challenge is what the phone sees: never the verification number.
type Challenge struct {
	ChallengeID    string    `json:"challenge_id"`
	ClientName     string    `json:"client_name"`
	BindingMessage *string   `json:"binding_message"`
	CreatedAt      time.Time `json:"created_at"`
	ExpiresAt      time.Time `json:"expires_at"`
	Nonce          string    `json:"nonce"`
	NumberDigits   int       `json:"number_digits"`
}

func challengeFrom(tag string, h map[string]string) Challenge {
	c := Challenge{ChallengeID: "chl_" + tag, ClientName: h["client_name"], Nonce: h["nonce"]}
	if h["has_bm"] == "1" {
		bm := h["binding_message"]
		c.BindingMessage = &bm
	}
	created, _ := strconv.ParseInt(h["created_ms"], 10, 64)
	expires, _ := strconv.ParseInt(h["expires_ms"], 10, 64)
	c.CreatedAt = time.UnixMilli(created).UTC().Truncate(time.Second)
	c.ExpiresAt = time.UnixMilli(expires).UTC().Truncate(time.Second)
	c.NumberDigits, _ = strconv.Atoi(h["number_digits"])
	return c
}

func flatMap(vals []string) map[string]string {
	m := make(map[string]string, len(vals)/2)
	for i := 0; i+1 < len(vals); i += 2 {
		m[vals[i]] = vals[i+1]
	}
	return m
}

// Prefetch is a phone's read of its practitioner's side of their logins,
// queued on the pipeline of the request's proof check
// (enrollment.Service.AuthenticateRequest): both are one round trip, on the
// practitioner's hash tag. Its result is used only once the proof is
// accepted.
type Prefetch struct {
	subject     string
	challengeID string
	all         *redis.MapStringStringCmd // Pending
	one         *redis.StringCmd          // ChallengeFor
}

// PrefetchPending queues Pending's read on p.
func (s *Service) PrefetchPending(ctx context.Context, p redis.Pipeliner, subject string) *Prefetch {
	return &Prefetch{subject: subject, all: p.HGetAll(ctx, s.keys.logins(subject))}
}

// PrefetchChallenge queues ChallengeFor's read on p.
func (s *Service) PrefetchChallenge(ctx context.Context, p redis.Pipeliner, subject, challengeID string) *Prefetch {
	return &Prefetch{subject: subject, challengeID: challengeID,
		one: p.HGet(ctx, s.keys.logins(subject), "p:"+challengeID)}
}

// ChallengeFor returns a practitioner's challenge, from their side of it
// (one read on their hash tag, or pre's when it is that read). Another
// practitioner's is ErrNotFound; an ended one ErrConflict (decided,
// cancelled) or ErrGone, found by a second read, of the authentication
// itself, on that path only.
func (s *Service) ChallengeFor(ctx context.Context, subject, challengeID string, pre *Prefetch) (Challenge, error) {
	tag, ok := challengeTag(challengeID)
	if !ok {
		return Challenge{}, ErrNotFound
	}
	var cmd *redis.StringCmd
	if pre != nil && pre.one != nil && pre.subject == subject && pre.challengeID == challengeID {
		cmd = pre.one
	} else {
		cmd = s.rdb.HGet(ctx, s.keys.logins(subject), "p:"+challengeID)
	}
	v, err := cmd.Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		return Challenge{}, fmt.Errorf("challenge: %w", err)
	}
	now := s.now().UnixMilli()
	if c, exp, ok := parsePending(v); ok && exp > now {
		return c, nil
	}
	h, err := s.rdb.HMGet(ctx, s.keys.auth(tag), "subject", "status", "expires_ms").Result()
	if err != nil {
		return Challenge{}, fmt.Errorf("challenge: %w", err)
	}
	if sub, _ := h[0].(string); sub != subject {
		return Challenge{}, ErrNotFound
	}
	if st, _ := h[1].(string); st != "pending" && st != "claimed" {
		return Challenge{}, ErrConflict
	}
	return Challenge{}, ErrGone
}

// Pending lists a practitioner's pending challenges, oldest first: one read
// of their side of their logins (pre's, when it is that read).
func (s *Service) Pending(ctx context.Context, subject string, pre *Prefetch) ([]Challenge, error) {
	var cmd *redis.MapStringStringCmd
	if pre != nil && pre.all != nil && pre.subject == subject {
		cmd = pre.all
	} else {
		cmd = s.rdb.HGetAll(ctx, s.keys.logins(subject))
	}
	h, err := cmd.Result()
	if err != nil {
		return nil, fmt.Errorf("pending: %w", err)
	}
	now := s.now().UnixMilli()
	out := []Challenge{}
	for k, v := range h {
		if !strings.HasPrefix(k, "p:") {
			continue
		}
		if c, exp, ok := parsePending(v); ok && exp > now {
			out = append(out, c)
		}
	}
	slices.SortFunc(out, func(a, b Challenge) int {
		if d := a.CreatedAt.Compare(b.CreatedAt); d != 0 {
			return d
		}
		return strings.Compare(a.ChallengeID, b.ChallengeID)
	})
	return out, nil
}

// pendingValue is a login as the practitioner's side keeps it while it is
// undecided: its expiry, then the phone's view of it (JSON).
func pendingValue(expires time.Time, c Challenge) string {
	b, _ := json.Marshal(c) // Challenge has only marshalable fields.
	return strconv.FormatInt(expires.UnixMilli(), 10) + "|" + string(b)
}

func parsePending(v string) (c Challenge, expiresMS int64, ok bool) {
	ms, view, found := strings.Cut(v, "|")
	if !found {
		return Challenge{}, 0, false
	}
	exp, err := strconv.ParseInt(ms, 10, 64)
	if err != nil || json.Unmarshal([]byte(view), &c) != nil {
		return Challenge{}, 0, false
	}
	return c, exp, true
}

// phoneView is the phone's view of a new login, from its fields.
func phoneView(tag string, fields []any) Challenge {
	h := make(map[string]string, len(fields)/2)
	for i := 0; i+1 < len(fields); i += 2 {
		h[fmt.Sprint(fields[i])] = fmt.Sprint(fields[i+1])
	}
	return challengeFrom(tag, h)
}

// loginsKeep is the TTL of a practitioner's side of their logins, refreshed
// by every write: long enough for the consecutive denials (24 h) and a block.
func (s *Service) loginsKeep() time.Duration {
	return max(24*time.Hour, s.opts.BlockDuration) + time.Minute
}
