package challenge

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// This file holds what Keycloak's CIBA channel (package keycloak) needs of a
// login: a delegated login's given number and expiry, approvals without a
// number, and the hook that hands each decision of such a login over for
// Keycloak's callback.

// KeycloakClientPrefix starts the client id of every login that Keycloak's
// CIBA channel creates: "keycloak:<azp>", which is also the audit actor's id.
// Respond hands the decisions of these logins to Options.OnKeycloakDecision.
// No configured IdP client id may start with it.
const KeycloakClientPrefix = "keycloak:"

// MaxDelegatedLife is the longest life of a delegated login, as for
// requested_expiry.
const MaxDelegatedLife = 300 * time.Second

// Delegated are the terms of a push login whose relying party is another
// authorization server (Keycloak): it sets the expiry and the number.
type Delegated struct {
	// ExpiresAt ends the login: after now, at most MaxDelegatedLife ahead.
	ExpiresAt time.Time
	// Number is the verification number the user types: 2..6 digits (the
	// phone shows number_digits = its length), or "" for none
	// (number_digits 0: an approval then carries no number).
	Number string
}

// terms checks the delegated terms and returns the login's expiry, number
// and number_digits.
func (d *Delegated) terms(now time.Time, subject string) (time.Time, string, int, error) {
	if subject == "" {
		return time.Time{}, "", 0, fmt.Errorf("%w: a delegated login needs a login_hint", ErrInvalid)
	}
	if !d.ExpiresAt.After(now) || d.ExpiresAt.Sub(now) > MaxDelegatedLife {
		return time.Time{}, "", 0, fmt.Errorf("%w: a delegated login's expiry must be within %s", ErrInvalid, MaxDelegatedLife)
	}
	if d.Number != "" && (len(d.Number) < 2 || !allDigits(d.Number)) {
		return time.Time{}, "", 0, fmt.Errorf("%w: a verification number has 2 to 6 digits", ErrInvalid)
	}
	return d.ExpiresAt, d.Number, len(d.Number), nil
}

// checkNumberless accepts an approval without a number only for a login of
// this practitioner with number_digits 0 (one Redis read, on this rare path
// only): every other approval needs the number the user typed.
func (s *Service) checkNumberless(ctx context.Context, tag, subject string) error {
	h, err := s.rdb.HMGet(ctx, s.keys.auth(tag), "number_digits", "subject").Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		return fmt.Errorf("decide: %w", err)
	}
	if len(h) == 2 && h[0] == "0" {
		if h[1] != subject {
			return ErrNotFound
		}
		return nil
	}
	return fmt.Errorf("%w: approve needs the number the user typed", ErrInvalid)
}

// Decided is the outcome of a Keycloak login, as Respond hands it over once
// its audit entry is written.
type Decided struct {
	ChallengeID string
	Subject     string // idNat
	Approved    bool
	Reason      string // when denied: denied | fraud | wrong_number
	DeviceID    string
	UV          string    // pin | fingerprint | face
	Time        time.Time // of the decision
}

// DecisionHook takes the decision of a Keycloak login. It must be safe to
// run twice for one login (the phone sends its decision again after an
// error): the second run changes nothing. An error fails the phone's
// request, which it sends again.
type DecisionHook func(ctx context.Context, d Decided) error

// keycloakDecided hands a Keycloak login's decision to the hook, before the
// result becomes readable: a decision is never readable without its
// callback queued.
func (s *Service) keycloakDecided(ctx context.Context, clientID string, d Decided) error {
	if s.opts.OnKeycloakDecision == nil || !strings.HasPrefix(clientID, KeycloakClientPrefix) {
		return nil
	}
	if err := s.opts.OnKeycloakDecision(ctx, d); err != nil {
		return fmt.Errorf("keycloak callback: %w", err)
	}
	return nil
}

// AMR is the RFC 8176 methods of an approval with user verification uv.
func AMR(uv string) []string {
	return []string{"hwk", "mfa", amrOf[uv]}
}

var amrOf = map[string]string{"pin": "pin", "fingerprint": "fpt", "face": "face"}
