package challenge

// QR logins: the browser's page (login_id) shows a QR code of
// ecps://login?t=<QR token>&h=<public URL>, and the phone claims the token.
//
// # The schedule
//
// Tokens rotate on the server's schedule, the same on every replica. A QR
// login's life is cut into slots of QRRotation (25 s) from its creation;
// slot n's token is the current one from the slot's start, and is valid
// QRTokenTTL (30 s) from there (never beyond the login's expiry), so that a
// code scanned just before a rotation still works:
//
//	slot 0: shown 0..25 s, valid 0..30 s
//	slot 1: shown 25..50 s, valid 25..55 s …
//
// # The tokens
//
// Slot n's token is the login's tag followed by HMAC-SHA256(login secret,
// "ecps-qr" ‖ tag ‖ n) cut to 128 bits. The current token is thus a function
// of the login and the time only: reading the QR code (LoginQR) is one
// read-only HMGET, changes nothing, and gives the same image on every replica
// however many read it at once. Only who holds the login_id (the browser)
// can compute a token; Redis keeps none: Create stores the SHA-256 of every
// slot's token with the end of its validity (the :qr hash), where claimScript
// looks a presented token up. A claim empties the hash: the login is then
// bound, and no token of it works again.
//
// The rotation and the token life are stored with the login (qr_rot_ms,
// qr_ttl_ms), so that replicas with another configuration still agree on its
// schedule.

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"fmt"
	"net/url"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/skip2/go-qrcode"

	"github.com/ecps-sante/ecps/audit"
	"github.com/ecps-sante/ecps/token"
)

// defaultQRRotation is the contract's rotation: a new token every 25 s,
// each valid its 30 s.
const defaultQRRotation = 25 * time.Second

// qrRotationFor is the rotation for a token life: 25 s, or 5/6 of a token
// life of 30 s or less, so that tokens overlap; at least 1 s, which bounds
// the slots of a login (300 at most).
func qrRotationFor(ttl time.Duration) time.Duration {
	return max(min(defaultQRRotation, ttl*5/6), time.Second)
}

// Now is the service's clock (Options.Now), in UTC.
func (s *Service) Now() time.Time { return s.now() }

// qrSchedule is a QR login's slots, in Unix milliseconds.
type qrSchedule struct {
	created, expires, rotation, ttl int64
}

// slot returns the slot current at now (0 before the creation: a replica's
// clock may be a little behind), its token's end and the next slot's start.
func (q qrSchedule) slot(now int64) (n, end, next int64) {
	if now > q.created {
		n = (now - q.created) / q.rotation
	}
	start := q.created + n*q.rotation
	return n, min(start+q.ttl, q.expires), start + q.rotation
}

// slots is the number of slots of the login's life.
func (q qrSchedule) slots() int64 {
	return (q.expires - q.created + q.rotation - 1) / q.rotation
}

// qrScheduleOf reads a schedule from an authentication's fields; a login
// written without one follows this replica's options.
func (s *Service) qrScheduleOf(created, expires, rotation, ttl string) qrSchedule {
	q := qrSchedule{rotation: s.opts.QRRotation.Milliseconds(), ttl: s.opts.QRTokenTTL.Milliseconds()}
	q.created, _ = strconv.ParseInt(created, 10, 64)
	q.expires, _ = strconv.ParseInt(expires, 10, 64)
	if r, _ := strconv.ParseInt(rotation, 10, 64); r > 0 {
		q.rotation = r
	}
	if t, _ := strconv.ParseInt(ttl, 10, 64); t > 0 {
		q.ttl = t
	}
	return q
}

// qrSecret is the secret part of slot n's token: base64url of 128 bits.
func qrSecret(loginSecret, tag string, n int64) string {
	m := hmac.New(sha256.New, []byte(loginSecret))
	m.Write([]byte("ecps-qr\x00" + tag + "\x00" + strconv.FormatInt(n, 10)))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil)[:16])
}

// addQRTokens adds to Create's pipeline what a new QR login needs for its
// QR codes: its schedule, and the SHA-256 of every slot's token with the
// token's end, kept as long as the authentication.
func (s *Service) addQRTokens(ctx context.Context, p redis.Pipeliner, tag, loginSecret string, created, expires time.Time, keep time.Duration) {
	q := qrSchedule{created: created.UnixMilli(), expires: expires.UnixMilli(),
		rotation: s.opts.QRRotation.Milliseconds(), ttl: s.opts.QRTokenTTL.Milliseconds()}
	p.HSet(ctx, s.keys.auth(tag), "qr_rot_ms", q.rotation, "qr_ttl_ms", q.ttl)
	fields := make([]any, 0, 2*q.slots())
	for n := int64(0); n < q.slots(); n++ {
		start := q.created + n*q.rotation
		fields = append(fields, token.SHA256Hex(qrSecret(loginSecret, tag, n)), min(start+q.ttl, q.expires))
	}
	p.HSet(ctx, s.keys.qr(tag), fields...)
	p.PExpire(ctx, s.keys.qr(tag), keep)
}

// LoginState is what the QR login page reads.
type LoginState struct {
	Status string `json:"status"` // pending|claimed|approved|denied|expired|cancelled
	// QRExpiresAt is the end of the current QR token, while pending.
	QRExpiresAt *time.Time `json:"qr_expires_at,omitempty"`
	// For the page itself, not in the JSON state.
	ClientName         string    `json:"-"`
	VerificationNumber string    `json:"-"`
	RedirectURI        string    `json:"-"`
	ExpiresAt          time.Time `json:"-"`
	// NextQRAt is when the next token becomes the current one, while
	// pending (the login's expiry when there is no next one).
	NextQRAt time.Time `json:"-"`
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
	q := s.qrScheduleOf(h["created_ms"], h["expires_ms"], h["qr_rot_ms"], h["qr_ttl_ms"])
	st := LoginState{ClientName: h["client_name"], VerificationNumber: h["number"], RedirectURI: h["redirect_uri"],
		ExpiresAt: time.UnixMilli(q.expires).UTC()}
	now := s.now().UnixMilli()
	switch status := h["status"]; {
	case (status == "approved" || status == "denied") && h["audited"] == "1":
		st.Status = status
	case status == "cancelled":
		st.Status = "cancelled"
	case now >= q.expires:
		st.Status = "expired"
	case status == "pending":
		st.Status = "pending"
		_, end, next := q.slot(now)
		t := time.UnixMilli(end).UTC()
		st.QRExpiresAt = &t
		st.NextQRAt = time.UnixMilli(min(next, q.expires)).UTC()
	default:
		st.Status = "claimed"
	}
	return st, nil
}

// LoginQR returns the PNG of the current QR code of an unclaimed QR login
// (the ecps://login URI of the current token) and the token's end. It
// changes nothing. ErrLoginNotFound, ErrLoginNoQR (claimed or ended).
func (s *Service) LoginQR(ctx context.Context, loginID string) ([]byte, time.Time, error) {
	tag, secret, ok := splitID(loginID)
	if !ok {
		return nil, time.Time{}, ErrLoginNotFound
	}
	h, err := s.rdb.HMGet(ctx, s.keys.auth(tag), "kind", "login_sha", "status", "created_ms", "expires_ms", "qr_rot_ms", "qr_ttl_ms").Result()
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("qr: %w", err)
	}
	f := make([]string, len(h))
	for i, v := range h {
		f[i], _ = v.(string)
	}
	if f[0] != "qr" || subtle.ConstantTimeCompare([]byte(f[1]), []byte(token.SHA256Hex(secret))) != 1 {
		return nil, time.Time{}, ErrLoginNotFound
	}
	q := s.qrScheduleOf(f[3], f[4], f[5], f[6])
	now := s.now().UnixMilli()
	if f[2] != "pending" || now >= q.expires {
		return nil, time.Time{}, ErrLoginNoQR
	}
	n, end, _ := q.slot(now)
	uri := "ecps://login?t=" + tag + qrSecret(secret, tag, n) + "&h=" + url.QueryEscape(s.opts.PublicURL)
	png, err := qrcode.Encode(uri, qrcode.Medium, 320)
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("qr: %w", err)
	}
	return png, time.UnixMilli(end).UTC(), nil
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
