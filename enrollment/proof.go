package enrollment

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ecps-sante/ecps/deviceproof"
	"github.com/ecps-sante/ecps/scripts"
	"github.com/ecps-sante/ecps/token"
)

// This file checks the request proofs of the phone's calls: first in
// memory (signature, claims, the device's immutable key, cached), then in
// Redis (deviceindex.ProofLua: the device is active, the jti unseen, its
// last use). The Redis step rides on the request's own round trip when it
// can: with the reads of a list (AuthenticateRequest's read), or inside the
// decision's own script (Proof.Step and Settle).

// AuthenticateRequest verifies the request proof of a /api/v1/device/ call
// and returns the active device that signed it: its DeviceID, Subject,
// Status (active) and LastUsedAt (now) only, what the proof check knows
// without reading the device's JSON; ListDevices has the rest. A rejection
// is a *deviceproof.Error whose Reason says why; other errors are storage
// errors.
//
// read, when given, queues the request's own reads of the device's
// practitioner (keys on their hash tag, as the proof check's) on the proof
// check's pipeline: one round trip for both. Their results are for the
// caller to use only when the proof is accepted.
func (s *Service) AuthenticateRequest(ctx context.Context, compact string, req deviceproof.Request,
	read func(p redis.Pipeliner, subject string)) (Device, error) {
	pr, err := s.VerifyRequest(ctx, compact, req)
	if err != nil {
		return Device{}, err
	}
	if err := pr.Check(ctx, read); err != nil {
		return Device{}, err
	}
	return pr.Device, nil
}

// Proof is a request proof verified in memory whose Redis step is still to
// run: Check runs it, or a caller's script runs it first (Step, then
// Settle with the step's reply): the request's own script, one call for
// both.
type Proof struct {
	// Device is the device that signed: DeviceID, Subject, Status
	// (active) and LastUsedAt (now), once the proof is accepted.
	Device Device

	rdb   redis.UniversalClient
	keys  []string
	args  []any
	reply string // the step's reply (Check, or a caller's script: Settle)
	err   error
	ran   bool
}

// VerifyRequest verifies a request proof in memory: its shape, the key of
// its device (one Redis read the first time a process sees the device),
// its signature and claims. A rejection is a *deviceproof.Error.
func (s *Service) VerifyRequest(ctx context.Context, compact string, req deviceproof.Request) (*Proof, error) {
	tok, err := deviceproof.Parse(compact, deviceproof.TypRequest)
	if err != nil {
		return nil, err
	}
	if !deviceproof.ValidKeyID(tok.KeyID) {
		return nil, &deviceproof.Error{Reason: deviceproof.ReasonUnknownDevice}
	}
	ptr, err := s.pointer(ctx, tok.KeyID)
	if errors.Is(err, ErrNotFound) {
		return nil, &deviceproof.Error{Reason: deviceproof.ReasonUnknownDevice}
	}
	if err != nil {
		return nil, err
	}
	claims, err := deviceproof.VerifyRequest(tok, ptr.key, req, s.opts.Now(), s.opts.ProofMaxSkew)
	if err != nil {
		return nil, err
	}
	now := s.now()
	jti := s.keys.jti(ptr.Subject, tok.KeyID, claims.JTI)
	op := token.New(12) // the same for go-redis's resends of the pipeline
	return &Proof{
		Device: Device{DeviceID: tok.KeyID, Subject: ptr.Subject, Status: StatusActive, LastUsedAt: &now},
		rdb:    s.rdb,
		keys:   []string{s.keys.devices(ptr.Subject), jti, s.keys.active(ptr.Subject), s.keys.used(ptr.Subject)},
		args:   []any{tok.KeyID, now.Format(time.RFC3339), (2 * s.opts.ProofMaxSkew).Milliseconds(), op},
	}, nil
}

// Check runs the proof's Redis step, with read's commands (the request's
// own reads of the practitioner, see AuthenticateRequest) on its pipeline.
func (pr *Proof) Check(ctx context.Context, read func(p redis.Pipeliner, subject string)) error {
	var cmd *redis.Cmd
	err := scripts.Exec(ctx, pr.rdb, []*redis.Script{touchScript}, func(p redis.Pipeliner) {
		cmd = touchScript.EvalSha(ctx, p, pr.keys, pr.args...)
		if read != nil {
			read(p, pr.Device.Subject)
		}
	})
	if err != nil {
		pr.Settle("", err)
	} else {
		pr.Settle(cmd.Text())
	}
	return pr.Result()
}

// Step is what a caller's script needs to run the proof's step itself
// (deviceindex.ProofLua's proof_accept): its four keys, on the
// practitioner's hash tag, and its four arguments, in proof_accept's order.
// The script runs it before anything else and stops unless it says ok.
func (pr *Proof) Step() (keys []string, args []any) { return pr.keys, pr.args }

// Settle records the reply of the step run by a caller's script
// (proof_accept's), or the error that kept the script from answering.
func (pr *Proof) Settle(reply string, err error) {
	pr.ran, pr.reply, pr.err = true, reply, err
	if err != nil {
		pr.err = fmt.Errorf("device proof: %w", err)
	}
}

// Ran reports whether the Redis step ran, alone (Check) or in a caller's
// script (Settle).
func (pr *Proof) Ran() bool { return pr.ran }

// Result is the step's verdict once it ran: nil, a *deviceproof.Error, or
// a storage error.
func (pr *Proof) Result() error {
	if !pr.ran {
		return errors.New("device proof: not checked")
	}
	if pr.err != nil {
		return pr.err
	}
	switch pr.reply {
	case "ok":
		return nil
	case "unknown":
		return &deviceproof.Error{Reason: deviceproof.ReasonUnknownDevice}
	case StatusSuspended:
		return &deviceproof.Error{Reason: deviceproof.ReasonSuspended}
	case StatusRevoked:
		return &deviceproof.Error{Reason: deviceproof.ReasonRevoked}
	case "replay":
		return &deviceproof.Error{Reason: deviceproof.ReasonReplay}
	}
	return fmt.Errorf("device proof: unexpected reply %q", pr.reply)
}
