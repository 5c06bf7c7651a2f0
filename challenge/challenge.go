package challenge

import (
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/redis/go-redis/v9"

	"github.com/ecps-sante/ecps/audit"
	"github.com/ecps-sante/ecps/deviceproof"
	"github.com/ecps-sante/ecps/durable"
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

// Identities is the practitioner directory, as this package needs it
// (package directory's Store).
type Identities interface {
	// IdentityJSON returns a practitioner's identity (the contract's JSON),
	// nil when no directory is loaded; known is false when one is loaded and
	// idNat is absent from it.
	IdentityJSON(ctx context.Context, idNat string) (identity json.RawMessage, known bool, err error)
}

// Options are the settings of the service.
type Options struct {
	KeyPrefix          string
	PublicURL          string
	NumberDigits       int           // 2..6, default 2
	PollInterval       time.Duration // default 2 s
	QRTokenTTL         time.Duration // default 30 s
	QRRotation         time.Duration // default 25 s, or 5/6 of a QRTokenTTL ≤ 30 s (qr.go)
	ProofMaxSkew       time.Duration // default 60 s
	PendingPerSubject  int           // default 3
	PushesPerSubject   int           // default 10
	PushesWindow       time.Duration // default 5 min
	DenialsBeforeBlock int           // default 5
	BlockDuration      time.Duration // default 15 min
	// ReadBudget bounds each read of a long-poll, go-redis's resends
	// included (default 2 s): a slow Redis ends the poll with an error
	// within it instead of holding the IdP for the whole wait.
	ReadBudget time.Duration
	// Identities, when set, refuses practitioners absent from a loaded
	// directory (ErrUnknownUser) and gives approvals their identity.
	Identities Identities
	// Durable makes a decision wait for replicas' acknowledgement before it
	// is answered and readable (redis.min_replicas_ack); nil: waits for none.
	Durable *durable.Writer
	Now     func() time.Time
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
	def(&o.QRRotation, qrRotationFor(o.QRTokenTTL))
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
	if opts.Durable == nil {
		opts.Durable = durable.New(rdb, 0, 0)
	}
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
}

// Created is the answer to the IdP.
type Created struct {
	AuthReqID          string `json:"auth_req_id"`
	ExpiresIn          int    `json:"expires_in"`
	Interval           int    `json:"interval"`
	VerificationNumber string `json:"verification_number"`
	LoginURL           string `json:"login_url,omitempty"`
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
	number := randomDigits(s.opts.NumberDigits)
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
		"nonce", token.New(16), "number", number, "number_digits", s.opts.NumberDigits,
		"auth_sha", token.SHA256Hex(authSecret), "login_sha", token.SHA256Hex(loginSecret), "audited", "0", "delivered", "0",
		"identity", string(identity),
	}
	keep := expires.Sub(now) + keepAfterEnd
	entry := audit.Entry{Time: now.Truncate(time.Second), Event: EventCreated, Subject: subject,
		Actor:   audit.Actor{Type: audit.ActorClient, ID: req.Client.ID},
		Details: map[string]any{"challenge_id": challengeID, "kind": kind, "expires_at": expires.Truncate(time.Second).Format(time.RFC3339)}}

	p := s.rdb.Pipeline()
	p.HSet(ctx, s.keys.auth(tag), fields...)
	p.PExpire(ctx, s.keys.auth(tag), keep)
	if subject == "" {
		s.addQRTokens(ctx, p, tag, loginSecret, now, expires, keep)
	}
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
	out := Created{AuthReqID: tag + "." + authSecret, ExpiresIn: expiry, Interval: interval, VerificationNumber: number}
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

// Result is an approved authentication, as the IdP gets it once.
type Result struct {
	Subject  string
	AuthTime time.Time
	DeviceID string
	UV       string          // pin | fingerprint | face
	Identity json.RawMessage // the practitioner's identity; nil without a directory
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
		op := token.New(12)
		var vals []string
		// A read that delivers an approval marks it delivered; with
		// redis.min_replicas_ack that mark is on a replica before the IdP
		// gets the result, so that a failover never delivers it again.
		err := s.opts.Durable.DoIf(ctx, s.keys.auth(tag), func(c redis.Cmdable) (bool, error) {
			var err error
			vals, err = pollScript.Run(ctx, c, []string{s.keys.auth(tag)}, token.SHA256Hex(secret), clientID,
				s.now().UnixMilli(), checkArg, start.UnixMilli(), op).StringSlice()
			return err == nil && len(vals) > 0 && vals[0] == "approved", err
		})
		if err != nil {
			// The IdP gets an error, not the result: a delivery this read
			// marked but could not have acknowledged (its WAIT failed) is
			// undone, so that the IdP's next poll gets the result instead
			// of invalid_grant. Only this read's own mark is undone.
			if len(vals) > 0 && vals[0] == "approved" {
				undo, cancel := context.WithTimeout(context.WithoutCancel(ctx), 500*time.Millisecond)
				_ = undoDeliveryScript.Run(undo, s.rdb, []string{s.keys.auth(tag)}, op).Err()
				cancel()
			}
			return Result{}, fmt.Errorf("poll: %w", err)
		}
		return pollResult(vals)
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
		res := Result{Subject: vals[1], AuthTime: time.UnixMilli(ms).UTC(), DeviceID: vals[3], UV: vals[4]}
		if len(vals) > 5 && vals[5] != "" {
			res.Identity = json.RawMessage(vals[5])
		}
		return res, nil
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
		Actor: audit.Actor{Type: audit.ActorClient, ID: clientID}, Details: map[string]any{"challenge_id": challengeID}}
	p := s.rdb.Pipeline()
	if subject != "" {
		ej, minID, ttl := s.audit.ScriptArgs(entry)
		cancelledScript.Eval(ctx, p, []string{s.keys.pending(subject), s.audit.SubjectStream(subject), s.keys.ended(subject, challengeID)},
			challengeID, ej, minID, ttl, endedTTL(now, vals[2]).Milliseconds())
	}
	if err := s.hub.announce(ctx, p, tag); err != nil {
		return fmt.Errorf("cancel: %w", err)
	}
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
		if claims.Number == nil || !allDigits(*claims.Number) {
			return fmt.Errorf("%w: approve needs the number the user typed", ErrInvalid)
		}
		if !userVerifications[claims.UV] {
			return fmt.Errorf("%w: uv must be pin, fingerprint or face", ErrInvalid)
		}
		number = *claims.Number
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
	decided := audit.Entry{Time: now.Truncate(time.Second), Event: EventApproved, Subject: dev.Subject, Actor: actor, Details: details}
	if status != "approved" {
		decided.Event = EventDenied
		decided.Details = map[string]any{"challenge_id": challengeID, "client_id": clientID, "reason": reason}
	} else {
		details["uv"] = claims.UV
	}
	fraud := audit.Entry{Time: decided.Time, Event: EventFraud, Subject: dev.Subject, Actor: actor,
		Details: map[string]any{"challenge_id": challengeID, "client_id": clientID}}
	dj, minID, ttl := s.audit.ScriptArgs(decided)
	fj, _, _ := s.audit.ScriptArgs(fraud)
	// With redis.min_replicas_ack, each step is answered only once replicas
	// have it: an acknowledged decision survives its master's failover.
	if err := s.opts.Durable.Do(ctx, s.keys.pending(dev.Subject), func(c redis.Cmdable) error {
		return afterDecisionScript.Run(ctx, c,
			[]string{s.keys.pending(dev.Subject), s.keys.denials(dev.Subject), s.keys.block(dev.Subject), s.audit.SubjectStream(dev.Subject),
				s.keys.ended(dev.Subject, challengeID)},
			challengeID, status, reason, s.opts.DenialsBeforeBlock, s.opts.BlockDuration.Milliseconds(), dj, fj, minID, ttl,
			endedTTL(now, expiresMS).Milliseconds()).Err()
	}); err != nil {
		return fmt.Errorf("audit decision: %w", err)
	}
	p := s.rdb.Pipeline()
	if s.opts.Durable.Replicas() > 0 {
		// Acknowledged before the wake-up; replicas that have it have the
		// decision too (replication keeps the master's order).
		if err := s.opts.Durable.Do(ctx, s.keys.auth(tag), func(c redis.Cmdable) error {
			return c.HSet(ctx, s.keys.auth(tag), "audited", "1").Err()
		}); err != nil {
			return fmt.Errorf("publish decision: %w", err)
		}
	} else {
		p.HSet(ctx, s.keys.auth(tag), "audited", "1")
	}
	if err := s.hub.announce(ctx, p, tag); err != nil {
		return fmt.Errorf("publish decision: %w", err)
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
	// Checked before the claim: a practitioner absent from the directory
	// leaves the login claimable.
	identity, err := s.identity(ctx, dev.Subject)
	if err != nil {
		return Challenge{}, err
	}
	now := s.now()
	vals, err := claimScript.Run(ctx, s.rdb, []string{s.keys.auth(tag), s.keys.qr(tag)},
		token.SHA256Hex(secret), now.UnixMilli(), dev.Subject, dev.ID, token.New(12), string(identity)).StringSlice()
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
		Details: map[string]any{"challenge_id": c.ChallengeID, "kind": "qr", "claimed_by": dev.ID, "expires_at": c.ExpiresAt.Format(time.RFC3339)}}
	ej, minID, ttl := s.audit.ScriptArgs(entry)
	if err := claimedScript.Run(ctx, s.rdb, []string{s.keys.pending(dev.Subject), s.audit.SubjectStream(dev.Subject), s.keys.ended(dev.Subject, c.ChallengeID)},
		c.ChallengeID, h["expires_ms"], ej, minID, ttl, now.UnixMilli()).Err(); err != nil {
		return Challenge{}, fmt.Errorf("claim: %w", err)
	}
	return c, nil
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
