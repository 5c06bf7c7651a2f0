package api

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"

	"github.com/gin-gonic/gin"
	"github.com/redis/go-redis/v9"

	"github.com/ecps-sante/ecps/audit"
	"github.com/ecps-sante/ecps/deviceproof"
	"github.com/ecps-sante/ecps/enrollment"
)

// Error is the contract's JSON error body.
type Error struct {
	Status      int    `json:"-"`
	Code        string `json:"error"`
	Description string `json:"error_description"`
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
	if deviceproof.ReasonOf(err) != "" {
		return newError(http.StatusUnauthorized, "invalid_client", "device proof rejected")
	}
	for _, row := range errorTable {
		if errors.Is(err, row.err) {
			return row.resp
		}
	}
	if errors.Is(err, enrollment.ErrInvalid) {
		// Domain descriptions of shape errors carry no personal data.
		return invalidRequest(strings.TrimPrefix(err.Error(), enrollment.ErrInvalid.Error()+": "))
	}
	if isUnavailable(err) {
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
		for _, p := range []string{"LOADING", "MASTERDOWN", "CLUSTERDOWN", "TRYAGAIN", "READONLY", "BUSY", "NOREPLICAS"} {
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
	switch {
	case e.Status == http.StatusServiceUnavailable:
		s.log.Warn("storage unavailable", "request_id", requestID(c), "route", c.FullPath(), "err", err)
	case e.Status >= 500:
		s.log.Error("request failed", "request_id", requestID(c), "route", c.FullPath(), "err", err)
	}
	c.AbortWithStatusJSON(e.Status, e)
}
