package challenge

import (
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/subtle"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/redis/go-redis/v9"
	"github.com/skip2/go-qrcode"

	"github.com/ecps-sante/ecps/audit"
	"github.com/ecps-sante/ecps/deviceproof"
	"github.com/ecps-sante/ecps/idnat"
	"github.com/ecps-sante/ecps/push"
	"github.com/ecps-sante/ecps/token"
)

// Audit events of this package.
const (
	EventCreated   = "authentication.created"
	EventApproved  = "authentication.approved"
	EventDenied    = "authentication.denied"
	EventCancelled = "authentication.cancelled"
	EventFraud     = "fraud.reported"
	EventLimitHit  = "limit.hit"
)

// Devices is what this package needs of enrolled devices.
type Devices interface {
	// DevicesKey is the Redis hash of a practitioner's devices (device_id ->
	// JSON with device_id, status, push_token), on the practitioner's hash tag.
	DevicesKey(subject string) string
	// PublicKey returns an enrolled device's public key.
	PublicKey(ctx context.Context, deviceID string) (*ecdsa.PublicKey, error)
}

// Options are the settings of the service.
type Options struct {
	KeyPrefix          string
	PublicURL          string
	NumberDigits       int           // 2..6, default 2
	PollInterval       time.Duration // default 2 s
	QRTokenTTL         time.Duration // default 30 s
	ProofMaxSkew       time.Duration // default 60 s
	PendingPerSubject  int           // default 3
	PushesPerSubject   int           // default 10
	PushesWindow       time.Duration // default 5 min
	DenialsBeforeBlock int           // default 5
	BlockDuration      time.Duration // default 15 min
	// OnKeycloakDecision takes the decisions of the logins that Keycloak's
	// CIBA channel created (keycloak.go); nil: none are created.
	OnKeycloakDecision DecisionHook
	// ReadBudget bounds each read of a long-poll, go-redis's resends
	// included (default 2 s): a slow Redis ends the poll with an error
	// within it instead of holding the IdP for the whole wait.
	ReadBudget time.Duration
	Now        func() time.Time
}

func (o *Options) defaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	defInt := func(i *int, v int) {
		if *i == 0 {
			*i = v
		}
	}
	defInt(&o.NumberDigits, 2)
	def(&o.PollInterval, 2*time.Second)
	def(&o.QRTokenTTL, 30*time.Second)
	def(&o.ProofMaxSkew, 60*time.Second)
	defInt(&o.PendingPerSubject, 3)
	defInt(&o.PushesPerSubject, 10)
	def(&o.PushesWindow, 5*time.Minute)
	defInt(&o.DenialsBeforeBlock, 5)
	def(&o.BlockDuration, 15*time.Minute)
	def(&o.ReadBudget, 2*time.Second)
	if o.Now == nil {
		o.Now = time.Now
	}
}

// Service runs authentications.
type Service struct {
	rdb     redis.UniversalClient
	audit   *audit.Log
	push    push.Sender
	devices Devices
	hub     *Hub
	keys    keys
	opts    Options
}

// New returns a Service. hub is the process's subscription (NewHub + Run).
func New(rdb redis.UniversalClient, log *audit.Log, sender push.Sender, devices Devices, hub *Hub, opts Options) *Service {
	opts.defaults()
	return &Service{rdb: rdb, audit: log, push: sender, devices: devices, hub: hub, keys: keys{opts.KeyPrefix}, opts: opts}
}

func (s *Service) now() time.Time { return s.opts.Now().UTC() }

// keepAfterEnd is how long an ended authentication stays readable.
const keepAfterEnd = 10 * time.Minute

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
	if req.LoginHint != "" {
		id, err := idnat.Parse(req.LoginHint)
		if err != nil {
			return Created{}, fmt.Errorf("%w: login_hint must be an idNat", ErrInvalid)
		}
		subject = id.String()
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
	challengeID := "chl_" + tag
	kind := "qr"
	if subject != "" {
		kind = "push"
	}
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
	}
	keep := expires.Sub(now) + keepAfterEnd
	entry := audit.Entry{Time: now.Truncate(time.Second), Event: EventCreated, Subject: subject,
		Actor:   audit.Actor{Type: audit.ActorClient, ID: req.Client.ID},
		Details: map[string]any{"challenge_id": challengeID, "kind": kind, "expires_at": expires.Truncate(time.Second).Format(time.RFC3339)},
		Op:      EventCreated + ":" + challengeID}

	p := s.rdb.Pipeline()
	p.HSet(ctx, s.keys.auth(tag), fields...)
	p.PExpire(ctx, s.keys.auth(tag), keep)
	var res *redis.Cmd
	if subject != "" {
		limit := entry
		limit.Event = EventLimitHit
		limit.Details = map[string]any{"limit": "__LIMIT__", "kind": kind}
		ej, minID, ttl := s.audit.ScriptArgs(entry)
		lj, _, _ := s.audit.ScriptArgs(limit)
		res = createPushScript.Eval(ctx, p, // EVAL: a pipeline cannot fall back from EVALSHA
			[]string{s.devices.DevicesKey(subject), s.keys.pending(subject), s.keys.pushes(subject), s.keys.block(subject),
				s.audit.SubjectStream(subject), s.keys.refused(subject, challengeID)},
			now.UnixMilli(), expires.UnixMilli(), challengeID, s.opts.PendingPerSubject, s.opts.PushesPerSubject,
			s.opts.PushesWindow.Milliseconds(), ej, lj, minID, ttl)
	}
	if _, err := p.Exec(ctx); err != nil {
		return Created{}, fmt.Errorf("create authentication: %w", err)
	}
	out := Created{AuthReqID: tag + "." + authSecret, ExpiresIn: expiry, Interval: interval, VerificationNumber: number,
		ChallengeID: challengeID}
	if subject == "" {
		out.LoginURL = strings.TrimRight(s.opts.PublicURL, "/") + "/login/" + tag + "." + loginSecret
		s.audit.CopyGlobalLater(ctx, entry)
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
			limit := entry
			limit.Event = EventLimitHit
			limit.Details = map[string]any{"limit": vals[1], "kind": kind}
			limit.Op = EventLimitHit + ":" + challengeID
			s.audit.CopyGlobalLater(ctx, limit)
			return Created{}, &LimitError{Limit: vals[1], RetryAfter: time.Duration(ms) * time.Millisecond}
		}
		return Created{}, fmt.Errorf("create authentication: unexpected %v", vals)
	}
	s.audit.CopyGlobalLater(ctx, entry)
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

// Result is an approved authentication, as the IdP gets it once.
type Result struct {
	Subject  string
	AuthTime time.Time
	DeviceID string
	UV       string // pin | fingerprint | face
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
		vals, err := pollScript.Run(ctx, s.rdb, []string{s.keys.auth(tag)}, token.SHA256Hex(secret), clientID,
			s.now().UnixMilli(), checkArg, start.UnixMilli(), token.New(12)).StringSlice()
		if err != nil {
			return Result{}, fmt.Errorf("poll: %w", err)
		}
		return pollResult(vals)
	}
	res, err := read(true)
	if !errors.Is(err, ErrPending) || wait <= 0 {
		return res, err
	}
	woken, done := s.hub.register(tag)
	defer done()
	// Re-read after subscribing: a decision taken in between is not lost.
	if res, err = read(false); !errors.Is(err, ErrPending) {
		return res, err
	}
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for {
		select {
		case <-woken:
			if res, err = read(false); !errors.Is(err, ErrPending) {
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
	switch vals[0] {
	case "pending":
		return Result{}, ErrPending
	case "expired":
		return Result{}, ErrExpired
	case "slow_down":
		n, _ := strconv.Atoi(vals[1])
		return Result{}, &SlowDownError{Interval: time.Duration(n) * time.Second}
	case "denied":
		return Result{}, &DeniedError{Reason: vals[1]}
	case "approved":
		ms, _ := strconv.ParseInt(vals[2], 10, 64)
		return Result{Subject: vals[1], AuthTime: time.UnixMilli(ms).UTC(), DeviceID: vals[3], UV: vals[4]}, nil
	}
	return Result{}, ErrInvalidGrant
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
	switch vals[0] {
	case "invalid_grant":
		return ErrInvalidGrant
	case "noop":
		return nil
	}
	subject, challengeID := vals[1], "chl_"+tag
	entry := audit.Entry{Time: now.Truncate(time.Second), Event: EventCancelled, Subject: subject,
		Actor: audit.Actor{Type: audit.ActorClient, ID: clientID}, Details: map[string]any{"challenge_id": challengeID},
		Op: EventCancelled + ":" + challengeID}
	p := s.rdb.Pipeline()
	if subject != "" {
		ej, minID, ttl := s.audit.ScriptArgs(entry)
		cancelledScript.Eval(ctx, p, []string{s.keys.pending(subject), s.audit.SubjectStream(subject), s.keys.ended(subject, challengeID)},
			challengeID, ej, minID, ttl, endedTTL(now, vals[2]).Milliseconds())
	}
	p.Publish(ctx, s.keys.channel(), tag)
	if _, err := p.Exec(ctx); err != nil {
		return fmt.Errorf("cancel: %w", err)
	}
	s.audit.CopyGlobalLater(ctx, entry)
	return nil
}

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

// ChallengeFor returns a practitioner's challenge. Another practitioner's is
// ErrNotFound; an ended one ErrConflict (decided, cancelled) or ErrGone.
func (s *Service) ChallengeFor(ctx context.Context, subject, challengeID string) (Challenge, error) {
	tag, ok := challengeTag(challengeID)
	if !ok {
		return Challenge{}, ErrNotFound
	}
	h, err := s.rdb.HGetAll(ctx, s.keys.auth(tag)).Result()
	if err != nil {
		return Challenge{}, fmt.Errorf("challenge: %w", err)
	}
	if len(h) == 0 || h["subject"] != subject {
		return Challenge{}, ErrNotFound
	}
	if h["status"] != "pending" && h["status"] != "claimed" {
		return Challenge{}, ErrConflict
	}
	if exp, _ := strconv.ParseInt(h["expires_ms"], 10, 64); s.now().UnixMilli() >= exp {
		return Challenge{}, ErrGone
	}
	return challengeFrom(tag, h), nil
}

// Pending lists a practitioner's pending challenges, oldest first.
func (s *Service) Pending(ctx context.Context, subject string) ([]Challenge, error) {
	now := s.now().UnixMilli()
	ids, err := s.rdb.ZRangeByScore(ctx, s.keys.pending(subject), &redis.ZRangeBy{Min: "(" + strconv.FormatInt(now, 10), Max: "+inf"}).Result()
	if err != nil {
		return nil, fmt.Errorf("pending: %w", err)
	}
	out := []Challenge{}
	if len(ids) == 0 {
		return out, nil
	}
	p := s.rdb.Pipeline()
	cmds := make([]*redis.MapStringStringCmd, 0, len(ids))
	tags := make([]string, 0, len(ids))
	for _, id := range ids {
		tag, ok := challengeTag(id)
		if !ok {
			continue
		}
		tags = append(tags, tag)
		cmds = append(cmds, p.HGetAll(ctx, s.keys.auth(tag)))
	}
	if _, err := p.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("pending: %w", err)
	}
	for i, cmd := range cmds {
		h := cmd.Val()
		if h["subject"] != subject || (h["status"] != "pending" && h["status"] != "claimed") {
			continue
		}
		out = append(out, challengeFrom(tags[i], h))
	}
	slices.SortFunc(out, func(a, b Challenge) int { return a.CreatedAt.Compare(b.CreatedAt) })
	return out, nil
}

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

// Respond records a device's signed decision. Errors: ErrInvalid (shape),
// ErrBadDecision (signature, nonce, challenge_id, iat), ErrNotFound,
// ErrConflict, ErrGone. A wrong number is not an error: the login is denied.
func (s *Service) Respond(ctx context.Context, dev Device, challengeID, response string) error {
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
	now := s.now()
	claims, err := deviceproof.VerifyDecision(tok, pub, s.opts.Now(), s.opts.ProofMaxSkew)
	if err != nil || claims.ChallengeID != challengeID {
		return ErrBadDecision
	}
	number := ""
	switch claims.Decision {
	case DecisionApprove:
		if claims.Number == nil {
			if err := s.checkNumberless(ctx, tag, dev.Subject); err != nil { // keycloak.go: number_digits 0
				return err
			}
		} else if !allDigits(*claims.Number) {
			return fmt.Errorf("%w: approve needs the number the user typed", ErrInvalid)
		} else {
			number = *claims.Number
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
	vals, err := decideScript.Run(ctx, s.rdb, []string{s.keys.auth(tag)}, dev.Subject, dev.ID,
		now.UnixMilli(), claims.Nonce, claims.Decision, number, claims.UV, token.SHA256Hex(response)).StringSlice()
	if err != nil {
		return fmt.Errorf("decide: %w", err)
	}
	switch vals[0] {
	case "notfound":
		return ErrNotFound
	case "conflict":
		return ErrConflict
	case "gone":
		return ErrGone
	case "badnonce":
		return ErrBadDecision
	}
	status, reason, clientID, expiresMS := vals[0], vals[1], vals[2], vals[4]

	// The decision won: audit it, keep the counters, then make it readable.
	actor := audit.Actor{Type: audit.ActorDevice, ID: dev.ID}
	details := map[string]any{"challenge_id": challengeID, "client_id": clientID}
	decided := audit.Entry{Time: now.Truncate(time.Second), Event: EventApproved, Subject: dev.Subject, Actor: actor, Details: details,
		Op: "authentication.decided:" + challengeID}
	if status != "approved" {
		decided.Event = EventDenied
		decided.Details = map[string]any{"challenge_id": challengeID, "client_id": clientID, "reason": reason}
	} else {
		details["uv"] = claims.UV
	}
	fraud := audit.Entry{Time: decided.Time, Event: EventFraud, Subject: dev.Subject, Actor: actor,
		Details: map[string]any{"challenge_id": challengeID, "client_id": clientID}, Op: EventFraud + ":" + challengeID}
	dj, minID, ttl := s.audit.ScriptArgs(decided)
	fj, _, _ := s.audit.ScriptArgs(fraud)
	if err := afterDecisionScript.Run(ctx, s.rdb,
		[]string{s.keys.pending(dev.Subject), s.keys.denials(dev.Subject), s.keys.block(dev.Subject), s.audit.SubjectStream(dev.Subject),
			s.keys.ended(dev.Subject, challengeID)},
		challengeID, status, reason, s.opts.DenialsBeforeBlock, s.opts.BlockDuration.Milliseconds(), dj, fj, minID, ttl,
		endedTTL(now, expiresMS).Milliseconds()).Err(); err != nil {
		return fmt.Errorf("audit decision: %w", err)
	}
	if err := s.keycloakDecided(ctx, clientID, Decided{ChallengeID: challengeID, Subject: dev.Subject,
		Approved: status == "approved", Reason: reason, DeviceID: dev.ID, UV: claims.UV, Time: now}); err != nil {
		return err
	}
	p := s.rdb.Pipeline()
	p.HSet(ctx, s.keys.auth(tag), "audited", "1")
	p.Publish(ctx, s.keys.channel(), tag)
	if _, err := p.Exec(ctx); err != nil {
		return fmt.Errorf("publish decision: %w", err)
	}
	if reason == "fraud" {
		s.audit.CopyGlobalLater(ctx, decided, fraud)
	} else {
		s.audit.CopyGlobalLater(ctx, decided)
	}
	return nil
}

// Claim binds a QR login to the claiming device's practitioner.
func (s *Service) Claim(ctx context.Context, dev Device, qrToken string) (Challenge, error) {
	if qrToken == "" {
		return Challenge{}, fmt.Errorf("%w: qr_token is required", ErrInvalid)
	}
	tag, secret, ok := splitQRToken(qrToken)
	if !ok {
		return Challenge{}, ErrQRTokenInvalid
	}
	now := s.now()
	vals, err := claimScript.Run(ctx, s.rdb, []string{s.keys.auth(tag), s.keys.qr(tag)},
		token.SHA256Hex(secret), now.UnixMilli(), dev.Subject, dev.ID, token.New(12)).StringSlice()
	if err != nil {
		return Challenge{}, fmt.Errorf("claim: %w", err)
	}
	if len(vals) == 0 || vals[0] != "ok" {
		return Challenge{}, ErrQRTokenInvalid
	}
	h := flatMap(vals[1:])
	c := challengeFrom(tag, h)
	entry := audit.Entry{Time: now.Truncate(time.Second), Event: EventCreated, Subject: dev.Subject,
		Actor:   audit.Actor{Type: audit.ActorClient, ID: h["client_id"]},
		Details: map[string]any{"challenge_id": c.ChallengeID, "kind": "qr", "claimed_by": dev.ID, "expires_at": c.ExpiresAt.Format(time.RFC3339)},
		Op:      "authentication.claimed:" + c.ChallengeID}
	ej, minID, ttl := s.audit.ScriptArgs(entry)
	if err := claimedScript.Run(ctx, s.rdb, []string{s.keys.pending(dev.Subject), s.audit.SubjectStream(dev.Subject), s.keys.ended(dev.Subject, c.ChallengeID)},
		c.ChallengeID, h["expires_ms"], ej, minID, ttl, now.UnixMilli()).Err(); err != nil {
		return Challenge{}, fmt.Errorf("claim: %w", err)
	}
	s.audit.CopyGlobalLater(ctx, entry)
	return c, nil
}

// LoginState is what the QR login page reads.
type LoginState struct {
	Status      string     `json:"status"` // pending|claimed|approved|denied|expired|cancelled
	QRExpiresAt *time.Time `json:"qr_expires_at,omitempty"`
	// For the page itself, not in the JSON state.
	ClientName         string    `json:"-"`
	VerificationNumber string    `json:"-"`
	RedirectURI        string    `json:"-"`
	ExpiresAt          time.Time `json:"-"`
}

// Login returns a QR login's state, for the page. ErrLoginNotFound when unknown.
func (s *Service) Login(ctx context.Context, loginID string) (LoginState, error) {
	tag, secret, ok := splitID(loginID)
	if !ok {
		return LoginState{}, ErrLoginNotFound
	}
	h, err := s.rdb.HGetAll(ctx, s.keys.auth(tag)).Result()
	if err != nil {
		return LoginState{}, fmt.Errorf("login: %w", err)
	}
	if len(h) == 0 || h["kind"] != "qr" || subtle.ConstantTimeCompare([]byte(h["login_sha"]), []byte(token.SHA256Hex(secret))) != 1 {
		return LoginState{}, ErrLoginNotFound
	}
	expires, _ := strconv.ParseInt(h["expires_ms"], 10, 64)
	st := LoginState{ClientName: h["client_name"], VerificationNumber: h["number"], RedirectURI: h["redirect_uri"],
		ExpiresAt: time.UnixMilli(expires).UTC()}
	now := s.now().UnixMilli()
	switch status := h["status"]; {
	case (status == "approved" || status == "denied") && h["audited"] == "1":
		st.Status = status
	case status == "cancelled":
		st.Status = "cancelled"
	case now >= expires:
		st.Status = "expired"
	case status == "pending":
		st.Status = "pending"
		if qe, _ := strconv.ParseInt(h["qr_exp_ms"], 10, 64); qe > now {
			t := time.UnixMilli(qe).UTC()
			st.QRExpiresAt = &t
		}
	default:
		st.Status = "claimed"
	}
	return st, nil
}

// LoginQR mints a new QR token for an unclaimed QR login and returns the
// PNG of its ecps://login URI. ErrLoginNotFound, ErrLoginNoQR (claimed or ended).
func (s *Service) LoginQR(ctx context.Context, loginID string) ([]byte, time.Time, error) {
	tag, secret, ok := splitID(loginID)
	if !ok {
		return nil, time.Time{}, ErrLoginNotFound
	}
	qrSecret := token.New(16)
	now := s.now()
	vals, err := mintQRScript.Run(ctx, s.rdb, []string{s.keys.auth(tag), s.keys.qr(tag)}, token.SHA256Hex(secret), token.SHA256Hex(qrSecret),
		now.UnixMilli(), s.opts.QRTokenTTL.Milliseconds()).StringSlice()
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("qr: %w", err)
	}
	switch vals[0] {
	case "notfound":
		return nil, time.Time{}, ErrLoginNotFound
	case "noqr":
		return nil, time.Time{}, ErrLoginNoQR
	}
	exp, _ := strconv.ParseInt(vals[1], 10, 64)
	uri := "ecps://login?t=" + tag + qrSecret + "&h=" + url.QueryEscape(s.opts.PublicURL)
	png, err := qrcode.Encode(uri, qrcode.Medium, 320)
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("qr: %w", err)
	}
	return png, time.UnixMilli(exp).UTC(), nil
}

// ---- identifiers and small helpers ----

// endedTTL is how long the mark of a login's end is kept: as long as the
// authentication itself (its expiry, given in ms, plus keepAfterEnd).
func endedTTL(now time.Time, expiresMS string) time.Duration {
	ms, _ := strconv.ParseInt(expiresMS, 10, 64)
	d := time.UnixMilli(ms).Sub(now) + keepAfterEnd
	if d < time.Minute {
		d = time.Minute
	}
	return d
}

func randomDigits(n int) string {
	max := big.NewInt(1)
	for i := 0; i < n; i++ {
		max.Mul(max, big.NewInt(10))
	}
	v, err := rand.Int(rand.Reader, max)
	if err != nil {
		panic(err)
	}
	return fmt.Sprintf("%0*d", n, v)
}

const (
	tagLen    = 16 // base64url of 12 bytes
	secretLen = 22 // base64url of 16 bytes
)

// splitID splits "<tag>.<secret>" (auth_req_id, login_id).
func splitID(id string) (tag, secret string, ok bool) {
	tag, secret, ok = strings.Cut(id, ".")
	if !ok || len(tag) != tagLen || len(secret) != secretLen || !token.IsBase64URL(tag) || !token.IsBase64URL(secret) {
		return "", "", false
	}
	return tag, secret, true
}

// splitQRToken splits a QR token: the tag then the secret, with no
// separator, so that the token is plain base64url as the contract says.
func splitQRToken(t string) (tag, secret string, ok bool) {
	if len(t) != tagLen+secretLen || !token.IsBase64URL(t) {
		return "", "", false
	}
	return t[:tagLen], t[tagLen:], true
}

func challengeTag(id string) (string, bool) {
	tag, ok := strings.CutPrefix(id, "chl_")
	if !ok || len(tag) != tagLen || !token.IsBase64URL(tag) {
		return "", false
	}
	return tag, true
}

func allDigits(s string) bool {
	if s == "" || len(s) > 6 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// validBindingMessage: at most 64 Unicode characters, no control characters.
func validBindingMessage(s string) bool {
	if !utf8.ValidString(s) || utf8.RuneCountInString(s) > 64 {
		return false
	}
	for _, r := range s {
		if unicode.IsControl(r) {
			return false
		}
	}
	return true
}
