package challenge

import (
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"math/big"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/redis/go-redis/v9"

	"github.com/ecps-sante/ecps/audit"
	"github.com/ecps-sante/ecps/durable"
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
