package challenge

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ecps-sante/ecps/audit"
	"github.com/ecps-sante/ecps/idnat"
	"github.com/ecps-sante/ecps/keyslot"
	"github.com/ecps-sante/ecps/push"
	"github.com/ecps-sante/ecps/scripts"
	"github.com/ecps-sante/ecps/token"
)

// This file holds the IdP's creation of a login: a push login on its
// practitioner's hash tag (limits, audit, pushes) or a QR login.

// Client is the IdP asking.
type Client struct {
	ID           string
	Name         string
	RedirectURIs []string
}

// CreateRequest is an IdP's request for an authentication.
type CreateRequest struct {
	Client          Client
	LoginHint       string  // idNat; empty for a QR login
	BindingMessage  *string // nil: none
	RequestedExpiry *int    // seconds, 30..300; nil: 120
	RedirectURI     string  // QR page's destination when the login ends
	// Delegated, when set, gives the verification number and the expiry
	// of a push login that Keycloak's CIBA channel delegates (keycloak.go);
	// RequestedExpiry is then ignored.
	Delegated *Delegated
}

// Created is the answer to the IdP.
type Created struct {
	AuthReqID          string `json:"auth_req_id"`
	ExpiresIn          int    `json:"expires_in"`
	Interval           int    `json:"interval"`
	VerificationNumber string `json:"verification_number"`
	LoginURL           string `json:"login_url,omitempty"`
	ChallengeID        string `json:"-"`
}

// Create starts an authentication: a push login with LoginHint, else a QR login.
func (s *Service) Create(ctx context.Context, req CreateRequest) (Created, error) {
	expiry := 120
	if req.RequestedExpiry != nil {
		expiry = *req.RequestedExpiry
		if expiry < 30 || expiry > 300 {
			return Created{}, fmt.Errorf("%w: requested_expiry must be 30..300 seconds", ErrInvalid)
		}
	}
	bm, hasBM := "", "0"
	if req.BindingMessage != nil {
		bm, hasBM = *req.BindingMessage, "1"
		if !validBindingMessage(bm) {
			return Created{}, ErrBindingMessage
		}
	}
	if req.RedirectURI != "" && !slices.Contains(req.Client.RedirectURIs, req.RedirectURI) {
		return Created{}, ErrRedirectURI
	}
	var subject string
	var identity json.RawMessage
	if req.LoginHint != "" {
		id, err := idnat.Parse(req.LoginHint)
		if err != nil {
			return Created{}, fmt.Errorf("%w: login_hint must be an idNat", ErrInvalid)
		}
		subject = id.String()
		// The identity is read once, at creation, and stored with the login:
		// the poll that delivers the approval reads it with the rest.
		if identity, err = s.identity(ctx, subject); err != nil {
			return Created{}, err
		}
	}

	now := s.now()
	expires := now.Add(time.Duration(expiry) * time.Second)
	tag, authSecret, loginSecret := token.New(12), token.New(16), token.New(16)
	number, digits := randomDigits(s.opts.NumberDigits), s.opts.NumberDigits
	if req.Delegated != nil {
		var err error
		if expires, number, digits, err = req.Delegated.terms(now, subject); err != nil {
			return Created{}, err
		}
		expiry = int((expires.Sub(now) + time.Second - 1) / time.Second)
	}
	kind := "qr"
	if subject != "" {
		kind = "push"
		// On the practitioner's slot: its decision is then one script.
		tag = steerTag(tag, keyslot.Of(s.keys.logins(subject)))
	}
	challengeID := "chl_" + tag
	interval := int(s.opts.PollInterval / time.Second)
	if interval < 1 {
		interval = 1
	}
	fields := []any{
		"kind", kind, "status", "pending", "subject", subject,
		"client_id", req.Client.ID, "client_name", req.Client.Name,
		"binding_message", bm, "has_bm", hasBM, "redirect_uri", req.RedirectURI,
		"created_ms", now.UnixMilli(), "expires_ms", expires.UnixMilli(), "interval", interval,
		"nonce", token.New(16), "number", number, "number_digits", digits,
		"auth_sha", token.SHA256Hex(authSecret), "login_sha", token.SHA256Hex(loginSecret), "audited", "0", "delivered", "0",
		"identity", string(identity),
	}
	keep := expires.Sub(now) + keepAfterEnd
	entry := audit.Entry{Time: now.Truncate(time.Second), Event: EventCreated, Subject: subject,
		Actor:   audit.Actor{Type: audit.ActorClient, ID: req.Client.ID},
		Details: map[string]any{"challenge_id": challengeID, "kind": kind, "expires_at": expires.Truncate(time.Second).Format(time.RFC3339)}}

	var res *redis.Cmd
	var ej, minID, phone string
	var ttl int64
	if subject != "" {
		ej, minID, ttl = s.audit.ScriptArgs(entry)
		phone = pendingValue(expires, phoneView(tag, fields))
	}
	err := scripts.Exec(ctx, s.rdb, []*redis.Script{createPushScript}, func(p redis.Pipeliner) {
		p.HSet(ctx, s.keys.auth(tag), fields...)
		p.PExpire(ctx, s.keys.auth(tag), keep)
		if subject == "" {
			s.addQRTokens(ctx, p, tag, loginSecret, now, expires, keep)
			return
		}
		res = createPushScript.EvalSha(ctx, p,
			[]string{s.devices.DevicesKey(subject), s.keys.logins(subject), s.audit.SubjectStream(subject),
				s.devices.ActiveDevicesKey(subject)},
			now.UnixMilli(), expires.UnixMilli(), challengeID, s.opts.PendingPerSubject, s.opts.PushesPerSubject,
			s.opts.PushesWindow.Milliseconds(), ej, minID, ttl, phone, entry.Time.Format(time.RFC3339), req.Client.ID,
			s.loginsKeep().Milliseconds(), subject)
	})
	if err != nil {
		return Created{}, fmt.Errorf("create authentication: %w", err)
	}
	out := Created{AuthReqID: tag + "." + authSecret, ExpiresIn: expiry, Interval: interval, VerificationNumber: number,
		ChallengeID: challengeID}
	if subject == "" {
		// Audited when claimed: until then it concerns no practitioner.
		out.LoginURL = strings.TrimRight(s.opts.PublicURL, "/") + "/login/" + tag + "." + loginSecret
		return out, nil
	}

	vals, _ := res.StringSlice()
	if len(vals) == 0 || vals[0] != "ok" {
		_ = s.rdb.Del(context.WithoutCancel(ctx), s.keys.auth(tag)).Err() // error path only
		switch {
		case len(vals) > 0 && vals[0] == "unknown_user":
			return Created{}, ErrUnknownUser
		case len(vals) > 0 && vals[0] == "no_active_device":
			return Created{}, ErrNoActiveDevice
		case len(vals) == 3 && vals[0] == "limit":
			ms, _ := strconv.ParseInt(vals[2], 10, 64)
			return Created{}, &LimitError{Limit: vals[1], RetryAfter: time.Duration(ms) * time.Millisecond}
		}
		return Created{}, fmt.Errorf("create authentication: unexpected %v", vals)
	}
	jobs := make([]push.Job, 0, (len(vals)-1)/2)
	for i := 1; i+1 < len(vals); i += 2 {
		jobs = append(jobs, push.Job{ChallengeID: challengeID, DeviceID: vals[i], Token: vals[i+1], ExpiresAt: expires})
	}
	if len(jobs) > 0 {
		// Queues the pushes (one Redis round trip for the FCM sender); never
		// waits on the provider. Not queued means not pushed: the IdP gets an
		// error rather than a login whose phone is never told.
		if err := s.push.Send(ctx, jobs); err != nil {
			return Created{}, fmt.Errorf("queue push: %w", err)
		}
	}
	return out, nil
}

// identity reads a practitioner's identity for a login: ErrUnknownUser when
// a loaded directory does not have them.
func (s *Service) identity(ctx context.Context, subject string) (json.RawMessage, error) {
	if s.opts.Identities == nil {
		return nil, nil
	}
	identity, known, err := s.opts.Identities.IdentityJSON(ctx, subject)
	if err != nil {
		return nil, fmt.Errorf("directory: %w", err)
	}
	if !known {
		return nil, ErrUnknownUser
	}
	return identity, nil
}
