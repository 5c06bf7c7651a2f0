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
	"github.com/ecps-sante/ecps/durable"
	"github.com/ecps-sante/ecps/idnat"
	"github.com/ecps-sante/ecps/push"
	"github.com/ecps-sante/ecps/scripts"
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
	// JSON with device_id, status, push_token), on the practitioner's hash
	// tag; it exists when they have a device, revoked ones included.
	DevicesKey(subject string) string
	// ActiveDevicesKey is the Redis hash of a practitioner's active devices
	// (device_id -> push token, and the marker deviceindex.Marker), on the
	// practitioner's hash tag; built with deviceindex.Lua when the marker is
	// missing.
	ActiveDevicesKey(subject string) string
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
	// OnDecision, when set, is told the outcome of each login decided by a
	// device, once per login (a decision sent again is not told twice):
	// "approved", "denied", "wrong_number" or "fraud". For the metrics.
	OnDecision func(outcome string)
	// OnKeycloakDecision takes the decisions of the logins that Keycloak's
	// CIBA channel created (keycloak.go); nil: none are created.
	OnKeycloakDecision DecisionHook
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
	cluster bool // a Redis Cluster: a script's keys must share a slot (slot.go)
}

// New returns a Service. hub is the process's subscription (NewHub + Run).
func New(rdb redis.UniversalClient, log *audit.Log, sender push.Sender, devices Devices, hub *Hub, opts Options) *Service {
	opts.defaults()
	if opts.Durable == nil {
		opts.Durable = durable.New(rdb, 0, 0)
	}
	_, cluster := rdb.(*redis.ClusterClient)
	return &Service{rdb: rdb, audit: log, push: sender, devices: devices, hub: hub, keys: keys{opts.KeyPrefix}, opts: opts,
		cluster: cluster}
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
		tag = steerTag(tag, slotOf(s.keys.logins(subject)))
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
		vals, err := pollScript.Run(ctx, s.rdb, []string{s.keys.auth(tag)}, token.SHA256Hex(secret), clientID,
			s.now().UnixMilli(), checkArg, start.UnixMilli(), token.New(12)).StringSlice()
		if err != nil {
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
	ej, minID, ttl := s.audit.ScriptArgs(entry)
	err = s.hub.announce(ctx, tag, []*redis.Script{cancelledScript}, func(p redis.Pipeliner) {
		if subject != "" {
			cancelledScript.EvalSha(ctx, p, []string{s.keys.logins(subject), s.audit.SubjectStream(subject)},
				challengeID, ej, minID, ttl, endedUntil(vals[2]), s.loginsKeep().Milliseconds())
		}
	})
	if err != nil {
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
	expires, _ := strconv.ParseInt(h["expires_ms"], 10, 64)
	if err := claimedScript.Run(ctx, s.rdb, []string{s.keys.logins(dev.Subject), s.audit.SubjectStream(dev.Subject)},
		c.ChallengeID, pendingValue(time.UnixMilli(expires), c), ej, minID, ttl, s.loginsKeep().Milliseconds()).Err(); err != nil {
		return Challenge{}, fmt.Errorf("claim: %w", err)
	}
	return c, nil
}

// ---- identifiers and small helpers ----

// endedUntil is until when the mark of a login's end is kept (ms): as long
// as the authentication itself (its expiry, in ms, plus keepAfterEnd).
func endedUntil(expiresMS string) int64 {
	ms, _ := strconv.ParseInt(expiresMS, 10, 64)
	return ms + keepAfterEnd.Milliseconds()
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
