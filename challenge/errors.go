package challenge

import (
	"errors"
	"time"
)

// Errors carry meaning only; the HTTP layer maps them to the contract.
var (
	ErrInvalid        = errors.New("invalid request")
	ErrBindingMessage = errors.New("invalid binding message")
	ErrRedirectURI    = errors.New("redirect_uri not registered for this client")
	ErrUnknownUser    = errors.New("unknown practitioner")
	ErrNoActiveDevice = errors.New("no active device")
	ErrInvalidGrant   = errors.New("unknown, foreign or spent authentication")
	ErrPending        = errors.New("authorization pending")
	ErrExpired        = errors.New("authentication expired")
	ErrNotFound       = errors.New("no such challenge")
	ErrConflict       = errors.New("already decided or cancelled")
	ErrGone           = errors.New("expired")
	ErrBadDecision    = errors.New("decision rejected") // bad signature, nonce, challenge_id or iat
	ErrQRTokenInvalid = errors.New("unknown, used or expired qr_token")
	ErrLoginNotFound  = errors.New("unknown login")
	ErrLoginNoQR      = errors.New("login claimed or ended: no QR code")
)

// SlowDownError: the IdP polled sooner than its interval; the interval grew.
type SlowDownError struct{ Interval time.Duration }

func (e *SlowDownError) Error() string { return "slow down" }

// DeniedError: the authentication ended without approval.
type DeniedError struct{ Reason string } // denied | fraud | wrong_number | cancelled

func (e *DeniedError) Error() string { return "access denied: " + e.Reason }

// LimitError: an abuse limit refused the request.
type LimitError struct {
	Limit      string // pending_per_subject | pushes_per_subject | blocked
	RetryAfter time.Duration
}

func (e *LimitError) Error() string { return "limit reached: " + e.Limit }
