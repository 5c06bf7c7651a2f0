package challenge

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ecps-sante/ecps/audit"
	"github.com/ecps-sante/ecps/deviceproof"
	"github.com/ecps-sante/ecps/keyslot"
	"github.com/ecps-sante/ecps/token"
)

// This file holds the phone's decision: checked in Go (signature, nonce,
// number's shape), then recorded in Redis, audited, counted and made
// readable. A login on its practitioner's slot (every push login, and on
// one Redis every login) takes one script for all of it; a QR login on a
// Cluster takes three steps, one per slot (doc.go).

// Device is the device making a request, as the proof middleware found it.
type Device struct {
	ID      string
	Subject string
}

// Decision values.
const (
	DecisionApprove = "approve"
	DecisionDeny    = "deny"
	DecisionFraud   = "fraud"
)

var userVerifications = map[string]bool{"pin": true, "fingerprint": true, "face": true}

// clientPlaceholder stands for the login's client_id in the audit entries
// that Respond builds before it knows it: the one-script decision puts it
// in (decideOnceScript).
const clientPlaceholder = "@client_id@"

// ProofCheck is the request proof of the phone's call, verified in memory,
// whose Redis step is left to Respond (enrollment.Proof): on the login's
// one-script path, the decision's script runs it first
// (deviceindex.ProofLua), one script call for both.
type ProofCheck interface {
	// Step is proof_accept's four keys (on the practitioner's hash tag)
	// and four arguments; Settle takes its reply once the script ran.
	Step() (keys []string, args []any)
	Settle(reply string, err error)
	// Result is its verdict once it ran; Check runs it alone.
	Result() error
	Check(ctx context.Context, read func(p redis.Pipeliner, subject string)) error
	Ran() bool
}

// Respond records a device's signed decision. Errors: ErrInvalid (shape),
// ErrBadDecision (signature, nonce, challenge_id, iat), ErrNotFound,
// ErrConflict, ErrGone. A wrong number is not an error: the login is denied.
//
// proof, when not nil, is the call's request proof still to check in
// Redis: its verdict comes first (a refused proof is the answer, whatever
// the decision), and it is checked whatever the outcome.
func (s *Service) Respond(ctx context.Context, dev Device, challengeID, response string, proof ProofCheck) error {
	err := s.respond(ctx, dev, challengeID, response, proof)
	if proof != nil && !proof.Ran() {
		if perr := proof.Check(ctx, nil); perr != nil {
			return perr
		}
	}
	return err
}

func (s *Service) respond(ctx context.Context, dev Device, challengeID, response string, proof ProofCheck) error {
	tag, ok := challengeTag(challengeID)
	if !ok {
		return ErrNotFound
	}
	if response == "" {
		return fmt.Errorf("%w: response is required", ErrInvalid)
	}
	tok, err := deviceproof.Parse(response, deviceproof.TypDecision)
	if err != nil || tok.KeyID != dev.ID {
		return ErrBadDecision
	}
	pub, err := s.devices.PublicKey(ctx, dev.ID)
	if err != nil {
		return err
	}
	claims, err := deviceproof.VerifyDecision(tok, pub, s.opts.Now(), s.opts.ProofMaxSkew)
	if err != nil || claims.ChallengeID != challengeID {
		return ErrBadDecision
	}
	d := decision{tag: tag, challengeID: challengeID, dev: dev, now: s.now(), verdict: claims.Decision,
		uv: claims.UV, nonce: claims.Nonce, sha: token.SHA256Hex(response)}
	switch claims.Decision {
	case DecisionApprove:
		if claims.Number == nil {
			if err := s.checkNumberless(ctx, tag, dev.Subject); err != nil { // keycloak.go: number_digits 0
				return err
			}
		} else if !allDigits(*claims.Number) {
			return fmt.Errorf("%w: approve needs the number the user typed", ErrInvalid)
		} else {
			d.number = *claims.Number
		}
		if !userVerifications[claims.UV] {
			return fmt.Errorf("%w: uv must be pin, fingerprint or face", ErrInvalid)
		}
	case DecisionDeny, DecisionFraud:
	default:
		return fmt.Errorf("%w: decision must be approve, deny or fraud", ErrInvalid)
	}
	// The decision is named by its JWS: the same one sent again (the app
	// after a timeout, go-redis after a lost reply) answers as the first did,
	// and the steps after it, each run once, are finished if they were not.
	//
	// With redis.min_replicas_ack, each of the three steps waits for
	// replicas on its own (TestFailoverDuringLoginsOnSentinel: the one
	// script waiting for them found none acknowledging for as long as the
	// stream ran after a failover; the steps recover).
	if s.opts.Durable.Replicas() == 0 && (!s.cluster || keyslot.Of(s.keys.auth(tag)) == keyslot.Of(s.keys.logins(dev.Subject))) {
		return s.decideOnce(ctx, d, proof)
	}
	if proof != nil {
		if err := proof.Check(ctx, nil); err != nil {
			return err
		}
	}
	return s.decideInSteps(ctx, d)
}

// decision is a verified decision, on its way to Redis.
type decision struct {
	tag, challengeID string
	dev              Device
	now              time.Time
	verdict          string // approve, deny, fraud
	number, uv       string
	nonce, sha       string // the login's nonce it signed; SHA-256 of its JWS
}

// entries returns the audit entries of d (their client_id is
// clientPlaceholder until clientID is given): the approval's, the denial's
// (the reason Redis will find: a wrong number for an approval) and, for a
// fraud report, the fraud entry.
func (s *Service) entries(d decision, clientID string) (approved, denied, fraud string) {
	actor := audit.Actor{Type: audit.ActorDevice, ID: d.dev.ID}
	at := d.now.Truncate(time.Second)
	entry := func(event string, details map[string]any) string {
		j, _, _ := s.audit.ScriptArgs(audit.Entry{Time: at, Event: event, Subject: d.dev.Subject, Actor: actor, Details: details})
		return j
	}
	reason := "denied"
	switch d.verdict {
	case DecisionApprove:
		approved = entry(EventApproved, map[string]any{"challenge_id": d.challengeID, "client_id": clientID, "uv": d.uv})
		reason = "wrong_number"
	case DecisionFraud:
		reason = "fraud"
		fraud = entry(EventFraud, map[string]any{"challenge_id": d.challengeID, "client_id": clientID})
	}
	denied = entry(EventDenied, map[string]any{"challenge_id": d.challengeID, "client_id": clientID, "reason": reason})
	return approved, denied, fraud
}

// decideOnce records, audits and counts the decision in one script
// (decideOnceScript), on one Redis or when the login is on its
// practitioner's slot, without replicas to wait for. For a login whose
// result needs nothing more (not Keycloak's), the script makes the result
// readable too and the wake-up rides in the same round trip.
//
// proof, when not nil, runs first in the same pipeline; the script runs
// only if it passed.
func (s *Service) decideOnce(ctx context.Context, d decision, proof ProofCheck) error {
	approved, denied, fraud := s.entries(d, clientPlaceholder)
	minID, ttl := s.audit.Retention(d.now.Truncate(time.Second))
	kcHook := "0"
	if s.opts.OnKeycloakDecision != nil {
		kcHook = "1"
	}
	keys := []string{s.keys.auth(d.tag), s.keys.logins(d.dev.Subject), s.audit.SubjectStream(d.dev.Subject)}
	args := []any{d.dev.Subject, d.dev.ID, d.now.UnixMilli(), d.nonce, d.verdict, d.number, d.uv, d.sha,
		d.challengeID, s.opts.DenialsBeforeBlock, s.opts.BlockDuration.Milliseconds(), approved, denied, fraud,
		minID, ttl, keepAfterEnd.Milliseconds(), s.loginsKeep().Milliseconds(), kcHook}
	if proof != nil {
		pk, pa := proof.Step()
		keys, args = append(keys, pk...), append(args, pa...)
	}
	// The wake-up follows the script in its pipeline (on a Cluster, once
	// its reply is in): a refused decision wakes the waiters for nothing,
	// and they wait on.
	var cmd *redis.Cmd
	err := s.hub.announce(ctx, d.tag, []*redis.Script{decideOnceScript}, func(p redis.Pipeliner) {
		cmd = decideOnceScript.EvalSha(ctx, p, keys, args...)
	})
	if proof != nil {
		// The script's first step: {proof, why} when it refused, and
		// nothing else was done. A script that did not answer leaves the
		// proof's verdict unknown: a storage error.
		reply, serr := "ok", cmd.Err()
		if vals, _ := cmd.StringSlice(); len(vals) == 2 && vals[0] == "proof" {
			reply = vals[1]
		}
		proof.Settle(reply, serr)
		if perr := proof.Result(); perr != nil {
			return perr
		}
	}
	if err != nil {
		return fmt.Errorf("decide: %w", err)
	}
	r, err := readDecided(cmd.StringSlice())
	if err != nil {
		return err
	}
	s.counted(r.done, r.status, r.reason)
	if r.audited == "1" {
		return nil
	}
	return s.makeReadable(ctx, d, r.status, r.reason, r.clientID)
}

// decided is the reply of decideScript and decideOnceScript to the
// decision that won (or to the same decision sent again).
type decided struct {
	status, reason, clientID, kind, expiresMS string
	done, audited                             string // decideOnceScript's only
}

// readDecided reads a decision script's reply: its refusals as errors.
func readDecided(vals []string, err error) (decided, error) {
	if err != nil {
		return decided{}, fmt.Errorf("decide: %w", err)
	}
	if len(vals) == 0 {
		return decided{}, errors.New("decide: empty reply")
	}
	switch vals[0] {
	case "notfound":
		return decided{}, ErrNotFound
	case "conflict":
		return decided{}, ErrConflict
	case "gone":
		return decided{}, ErrGone
	case "badnonce":
		return decided{}, ErrBadDecision
	case "proof": // the proof's own Result says why; read before this
		return decided{}, errors.New("decide: the request proof was not accepted")
	}
	if len(vals) != 5 && len(vals) != 7 {
		return decided{}, fmt.Errorf("decide: unexpected reply %q", vals)
	}
	r := decided{status: vals[0], reason: vals[1], clientID: vals[2], kind: vals[3], expiresMS: vals[4]}
	if len(vals) == 7 {
		r.done, r.audited = vals[5], vals[6]
	}
	return r, nil
}

// decideInSteps records the decision on the login's slot (decideScript),
// then audits and counts it on the practitioner's (afterDecisionScript),
// then makes it readable: a crash between steps leaves it unreadable,
// never readable without its audit entry.
func (s *Service) decideInSteps(ctx context.Context, d decision) error {
	r, err := readDecided(decideScript.Run(ctx, s.rdb, []string{s.keys.auth(d.tag)}, d.dev.Subject, d.dev.ID,
		d.now.UnixMilli(), d.nonce, d.verdict, d.number, d.uv, d.sha).StringSlice())
	if err != nil {
		return err
	}
	status, reason, clientID, expiresMS := r.status, r.reason, r.clientID, r.expiresMS
	approved, denied, fraud := s.entries(d, clientID)
	entry := denied
	if status == "approved" {
		entry = approved
	}
	minID, ttl := s.audit.Retention(d.now.Truncate(time.Second))
	// With redis.min_replicas_ack, each step is answered only once replicas
	// have it: an acknowledged decision survives its master's failover.
	var done string
	if err := s.opts.Durable.Do(ctx, s.keys.logins(d.dev.Subject), func(c redis.Cmdable) error {
		var err error
		done, err = afterDecisionScript.Run(ctx, c, []string{s.keys.logins(d.dev.Subject), s.audit.SubjectStream(d.dev.Subject)},
			d.challengeID, status, reason, s.opts.DenialsBeforeBlock, s.opts.BlockDuration.Milliseconds(), entry, fraud, minID, ttl,
			endedUntil(expiresMS), d.now.UnixMilli(), s.loginsKeep().Milliseconds()).Text()
		return err
	}); err != nil {
		return fmt.Errorf("audit decision: %w", err)
	}
	s.counted(done, status, reason)
	return s.makeReadable(ctx, d, status, reason, clientID)
}

// counted reports a decision's outcome once per login (done is "again"
// when a run before this one counted it).
func (s *Service) counted(done, status, reason string) {
	if done == "again" || s.opts.OnDecision == nil {
		return
	}
	if status == "approved" {
		reason = "approved"
	}
	s.opts.OnDecision(reason)
}

// makeReadable makes an audited decision readable and wakes the long-polls:
// a Keycloak login's callback is queued first; with redis.min_replicas_ack
// the mark is acknowledged by replicas before the wake-up (replicas that
// have it have the decision too: replication keeps the master's order).
func (s *Service) makeReadable(ctx context.Context, d decision, status, reason, clientID string) error {
	if err := s.keycloakDecided(ctx, clientID, Decided{ChallengeID: d.challengeID, Subject: d.dev.Subject,
		Approved: status == "approved", Reason: reason, DeviceID: d.dev.ID, UV: d.uv, Time: d.now}); err != nil {
		return err
	}
	auth := s.keys.auth(d.tag)
	durable := s.opts.Durable.Replicas() > 0
	if durable {
		if err := s.opts.Durable.Do(ctx, auth, func(c redis.Cmdable) error {
			return c.HSet(ctx, auth, "audited", "1").Err()
		}); err != nil {
			return fmt.Errorf("publish decision: %w", err)
		}
	}
	if err := s.hub.announce(ctx, d.tag, nil, func(p redis.Pipeliner) {
		if !durable {
			p.HSet(ctx, auth, "audited", "1")
		}
	}); err != nil {
		return fmt.Errorf("publish decision: %w", err)
	}
	return nil
}
