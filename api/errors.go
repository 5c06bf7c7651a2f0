package api

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/redis/go-redis/v9"

	"github.com/ecps-sante/ecps/audit"
	"github.com/ecps-sante/ecps/challenge"
	"github.com/ecps-sante/ecps/deviceproof"
	"github.com/ecps-sante/ecps/directory"
	"github.com/ecps-sante/ecps/durable"
	"github.com/ecps-sante/ecps/enrollment"
	"github.com/ecps-sante/ecps/keycloak"
)

// Error is the contract's JSON error body.
type Error struct {
	Status      int    `json:"-"`
	Code        string `json:"error"`
	Description string `json:"error_description"`
	// Reason is set on access_denied (denied, fraud, wrong_number,
	// cancelled) and on the desk's practitioner lookup's not_found
	// (no_directory, not_in_directory).
	Reason string `json:"reason,omitempty"`
	// RetryAfter is sent as the Retry-After header of a 429.
	RetryAfter time.Duration `json:"-"`
}

func (e *Error) Error() string { return e.Code + ": " + e.Description }

func newError(status int, code, desc string) *Error {
	return &Error{Status: status, Code: code, Description: desc}
}

// Errors raised by the HTTP layer itself.
var (
	errNotFound         = newError(http.StatusNotFound, "not_found", "no such resource")
	errMethodNotAllowed = newError(http.StatusMethodNotAllowed, "method_not_allowed", "method not allowed on this resource")
	errTooLarge         = newError(http.StatusRequestEntityTooLarge, "payload_too_large", "request body over 64 KiB")
	errServer           = newError(http.StatusInternalServerError, "server_error", "internal error")
	errUnavailable      = newError(http.StatusServiceUnavailable, "unavailable", "storage unavailable, retry later")
	errBadClient        = newError(http.StatusUnauthorized, "invalid_client", "client authentication failed")
	errBadOperator      = newError(http.StatusUnauthorized, "invalid_client", "operator authentication failed")
	errForbidden        = newError(http.StatusForbidden, "forbidden", "missing scope for this operation")
	errBadKeycloakToken = newError(http.StatusUnauthorized, "invalid_client", "Keycloak token rejected: not a valid token of a configured realm")
)

// The desk's practitioner lookup answers 404 in two cases that a desk must
// tell apart: with no directory loaded, activations stay possible (the
// operator checks the identity on the ID card alone); with one loaded, a
// practitioner absent from it cannot be activated (unknown_user_id).
var (
	errNoDirectory    = &Error{Status: http.StatusNotFound, Code: "not_found", Description: "no directory is loaded", Reason: "no_directory"}
	errNotInDirectory = &Error{Status: http.StatusNotFound, Code: "not_found", Description: "the practitioner is absent from the directory", Reason: "not_in_directory"}
)

func invalidRequest(desc string) *Error {
	return newError(http.StatusBadRequest, "invalid_request", desc)
}

// errorTable maps the domain's meaning-only errors to the contract: the only
// place where a domain error becomes an HTTP status.
var errorTable = []struct {
	err  error
	resp *Error
}{
	{enrollment.ErrUnknownActivation, newError(http.StatusBadRequest, "invalid_grant", "unknown activation")},
	{enrollment.ErrWrongSecret, newError(http.StatusBadRequest, "invalid_grant", "wrong activation secret or code")},
	{enrollment.ErrActivationEnded, newError(http.StatusGone, "gone", "activation expired, used or destroyed")},
	{enrollment.ErrDeviceLimit, newError(http.StatusConflict, "conflict", "the practitioner has the maximum number of devices")},
	{enrollment.ErrKeyEnrolled, newError(http.StatusConflict, "conflict", "this public key is already enrolled")},
	{enrollment.ErrNotFound, errNotFound},
	{enrollment.ErrRevoked, newError(http.StatusConflict, "conflict", "the device is revoked")},
	{audit.ErrBadCursor, invalidRequest("bad paging cursor")},

	{challenge.ErrBindingMessage, newError(http.StatusBadRequest, "invalid_binding_message", "binding_message: at most 64 characters, no control characters")},
	{challenge.ErrRedirectURI, invalidRequest("redirect_uri is not one of the client's registered redirect_uris")},
	{challenge.ErrUnknownUser, newError(http.StatusBadRequest, "unknown_user_id", "unknown practitioner: no device ever enrolled, or absent from the directory")},
	{enrollment.ErrUnknownUser, newError(http.StatusBadRequest, "unknown_user_id", "the practitioner is absent from the directory")},
	{directory.ErrNotFound, errNotInDirectory},
	{directory.ErrNotLoaded, errNoDirectory},
	{challenge.ErrNoActiveDevice, newError(http.StatusBadRequest, "no_active_device", "the practitioner has no active device")},
	{challenge.ErrInvalidGrant, newError(http.StatusBadRequest, "invalid_grant", "unknown auth_req_id, or its result was already delivered")},
	{challenge.ErrPending, newError(http.StatusBadRequest, "authorization_pending", "the practitioner has not answered yet")},
	{challenge.ErrExpired, newError(http.StatusBadRequest, "expired_token", "the authentication expired")},
	{challenge.ErrNotFound, errNotFound},
	{challenge.ErrConflict, newError(http.StatusConflict, "conflict", "the challenge was already decided or cancelled")},
	{challenge.ErrGone, newError(http.StatusGone, "gone", "the challenge expired")},
	{challenge.ErrBadDecision, newError(http.StatusBadRequest, "invalid_grant", "decision rejected: signature, nonce, challenge_id or iat")},
	{challenge.ErrQRTokenInvalid, newError(http.StatusBadRequest, "invalid_grant", "unknown, used or expired qr_token")},
	{challenge.ErrLoginNotFound, errNotFound},
	{challenge.ErrLoginNoQR, newError(http.StatusGone, "gone", "the login was claimed or has ended: no QR code")},

	{keycloak.ErrInvalidToken, errBadKeycloakToken},
	{keycloak.ErrNumberRequired, newError(http.StatusBadRequest, "invalid_binding_message",
		"this realm requires binding_message to be the verification number: 2 to 6 digits")},
}

// toError turns any error into the contract's answer.
func toError(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return errTooLarge
	}
	var slow *challenge.SlowDownError
	if errors.As(err, &slow) {
		return newError(http.StatusBadRequest, "slow_down",
			fmt.Sprintf("polling too fast: wait %d s between polls", int(slow.Interval/time.Second)))
	}
	var denied *challenge.DeniedError
	if errors.As(err, &denied) {
		e := newError(http.StatusBadRequest, "access_denied", "the authentication was not approved")
		e.Reason = denied.Reason
		return e
	}
	var limit *challenge.LimitError
	if errors.As(err, &limit) {
		e := newError(http.StatusTooManyRequests, "too_many_requests", "limit reached: "+limit.Limit)
		e.RetryAfter = limit.RetryAfter
		return e
	}
	if deviceproof.ReasonOf(err) != "" {
		return newError(http.StatusUnauthorized, "invalid_client", "device proof rejected")
	}
	for _, row := range errorTable {
		if errors.Is(err, row.err) {
			return row.resp
		}
	}
	for _, invalid := range []error{enrollment.ErrInvalid, challenge.ErrInvalid, keycloak.ErrInvalidRequest} {
		if errors.Is(err, invalid) {
			// Domain descriptions of shape errors carry no personal data.
			return invalidRequest(strings.TrimPrefix(err.Error(), invalid.Error()+": "))
		}
	}
	if isUnavailable(err) || errors.Is(err, durable.ErrNotDurable) {
		return errUnavailable
	}
	return errServer
}

// isUnavailable reports whether err means Redis cannot be reached or cannot
// serve now: the contract's 503.
func isUnavailable(err error) bool {
	if errors.Is(err, redis.ErrClosed) || errors.Is(err, redis.ErrPoolTimeout) ||
		errors.Is(err, context.DeadlineExceeded) || errors.Is(err, io.EOF) ||
		errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNREFUSED) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) {
		return true
	}
	var ne net.Error
	if errors.As(err, &ne) {
		return true
	}
	var re redis.Error
	if errors.As(err, &re) {
		msg := re.Error()
		for _, p := range []string{"LOADING", "MASTERDOWN", "CLUSTERDOWN", "TRYAGAIN", "READONLY", "BUSY", "NOREPLICAS",
			"MOVED ", "ASK "} {
			if strings.HasPrefix(msg, p) {
				return true
			}
		}
	}
	return false
}

// writeError renders err, logging server-side failures with their cause.
func (s *Server) writeError(c *gin.Context, err error) {
	e := toError(err)
	// A refused device proof, from the middleware or from the decision
	// that checks its own (decisionRoute): counted, logged, challenged.
	if reason := deviceproof.ReasonOf(err); reason != "" {
		s.metrics.proofRejected(reason)
		s.log.Info("device proof rejected", "request_id", requestID(c), "reason", string(reason))
		c.Header("WWW-Authenticate", `ECPS-Proof realm="ecps"`)
	}
	switch {
	case e.Status == http.StatusServiceUnavailable:
		s.log.Warn("storage unavailable", "request_id", requestID(c), "route", c.FullPath(), "err", err)
	case e.Status >= 500:
		s.log.Error("request failed", "request_id", requestID(c), "route", c.FullPath(), "err", err)
	}
	if e.RetryAfter > 0 {
		c.Header("Retry-After", strconv.Itoa(int((e.RetryAfter+time.Second-1)/time.Second)))
	}
	c.AbortWithStatusJSON(e.Status, e)
}
