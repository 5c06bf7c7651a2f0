package enrollment

import (
	"context"
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/redis/go-redis/v9"
	"github.com/skip2/go-qrcode"

	"github.com/ecps-sante/ecps/audit"
	"github.com/ecps-sante/ecps/deviceproof"
	"github.com/ecps-sante/ecps/durable"
	"github.com/ecps-sante/ecps/idnat"
	"github.com/ecps-sante/ecps/scripts"
	"github.com/ecps-sante/ecps/token"
)

const auditLua = audit.AppendLua

// Options are the settings of the service.
type Options struct {
	KeyPrefix          string        // e.g. "ecps:"
	PublicURL          string        // put in enrol_uri as h
	ActivationTTL      time.Duration // default 10 min
	ActivationAttempts int           // default 5
	DevicesPerSubject  int           // default 5
	ProofMaxSkew       time.Duration // default 60 s
	// Directory, when set, refuses activations for practitioners absent
	// from a loaded directory (ErrUnknownUser).
	Directory Directory
	// Durable makes an enrolment wait for replicas' acknowledgement before
	// it is answered (redis.min_replicas_ack); nil: waits for none.
	Durable *durable.Writer
	Now     func() time.Time
}

// Directory is the practitioner directory, as this package needs it
// (package directory's Store).
type Directory interface {
	// Known is false when a directory is loaded and idNat is absent from it.
	Known(ctx context.Context, idNat string) (bool, error)
}

// Service activates phones and keeps devices.
type Service struct {
	rdb   redis.UniversalClient
	audit *audit.Log
	keys  keys
	opts  Options

	mu       sync.RWMutex
	pointers map[string]devicePointer // device_id -> immutable pointer
}

// maxCachedPointers bounds the cache of device public keys; it is cleared when full.
const maxCachedPointers = 100_000

// activationKeep is how long an ended activation stays readable.
const activationKeep = 24 * time.Hour

// New returns a Service.
func New(rdb redis.UniversalClient, log *audit.Log, opts Options) *Service {
	if opts.ActivationTTL == 0 {
		opts.ActivationTTL = 10 * time.Minute
	}
	if opts.ActivationAttempts == 0 {
		opts.ActivationAttempts = 5
	}
	if opts.DevicesPerSubject == 0 {
		opts.DevicesPerSubject = 5
	}
	if opts.ProofMaxSkew == 0 {
		opts.ProofMaxSkew = 60 * time.Second
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Durable == nil {
		opts.Durable = durable.New(rdb, 0, 0)
	}
	return &Service{rdb: rdb, audit: log, keys: keys{opts.KeyPrefix}, opts: opts,
		pointers: make(map[string]devicePointer)}
}

// now is the clock of stored and shown times, to the second as the wire shows them.
func (s *Service) now() time.Time { return s.opts.Now().UTC().Truncate(time.Second) }

// Device is a practitioner's enrolled phone.
type Device struct {
	DeviceID   string     `json:"device_id"`
	Subject    string     `json:"subject"`
	Status     string     `json:"status"`
	Platform   string     `json:"platform"`
	Model      string     `json:"model"`
	AppVersion string     `json:"app_version"`
	CreatedAt  time.Time  `json:"created_at"`
	LastUsedAt *time.Time `json:"last_used_at"`
	Push       bool       `json:"push"`
	// PushToken is never put on the wire nor in logs.
	PushToken string `json:"-"`
}

// Device statuses.
const (
	StatusActive    = "active"
	StatusSuspended = "suspended"
	StatusRevoked   = "revoked"
)

// storedDevice is the JSON kept in the practitioner's devices hash; Lua
// scripts read and write it with cjson, so every field is a string. The hot
// path reads none of it: an active device and its push token are also in
// the active hash, its last use only in the used hash (package deviceindex).
// LastUsedAt is what versions before the used hash wrote: shown until the
// device's next use.
type storedDevice struct {
	DeviceID   string `json:"device_id"`
	Subject    string `json:"subject"`
	Status     string `json:"status"`
	Platform   string `json:"platform"`
	Model      string `json:"model"`
	AppVersion string `json:"app_version"`
	CreatedAt  string `json:"created_at"`
	LastUsedAt string `json:"last_used_at"`
	PushToken  string `json:"push_token"`
	Thumbprint string `json:"thumbprint"`
}

// decodeDevice decodes a stored device; lastUsed, when not empty, is its
// entry in the used hash, which replaces the JSON's last_used_at.
func decodeDevice(raw, lastUsed string) (Device, error) {
	var d storedDevice
	if err := json.Unmarshal([]byte(raw), &d); err != nil {
		return Device{}, fmt.Errorf("decode device: %w", err)
	}
	created, _ := time.Parse(time.RFC3339, d.CreatedAt)
	out := Device{DeviceID: d.DeviceID, Subject: d.Subject, Status: d.Status, Platform: d.Platform,
		Model: d.Model, AppVersion: d.AppVersion, CreatedAt: created.UTC(),
		Push: d.PushToken != "", PushToken: d.PushToken}
	if lastUsed == "" {
		lastUsed = d.LastUsedAt
	}
	if t, err := time.Parse(time.RFC3339, lastUsed); err == nil {
		t = t.UTC()
		out.LastUsedAt = &t
	}
	return out, nil
}

// devicePointer is the immutable part of a device, found from its id alone.
type devicePointer struct {
	Subject string          `json:"subject"`
	JWK     json.RawMessage `json:"jwk"`
	key     *ecdsa.PublicKey
}

// ---- Activations ----

// Activation is a newly created activation: the secret and code are shown once.
type Activation struct {
	ActivationID string    `json:"activation_id"`
	Subject      string    `json:"subject"`
	Code         string    `json:"code"`
	QRPNG        []byte    `json:"qr_png"`
	EnrolURI     string    `json:"enrol_uri"`
	ExpiresAt    time.Time `json:"expires_at"`
}

// ActivationStatus is what the desk reads later: never the secret.
type ActivationStatus struct {
	ActivationID string    `json:"activation_id"`
	Subject      string    `json:"subject"`
	Status       string    `json:"status"`
	ExpiresAt    time.Time `json:"expires_at"`
	DeviceID     string    `json:"device_id,omitempty"`
}

type storedActivation struct {
	Subject    string `json:"subject"`
	SecretHash string `json:"secret_sha256"`
	CodeHash   string `json:"code_sha256"`
	ExpiresAt  string `json:"expires_at"`
}

// CreateActivation creates a single-use activation for a practitioner,
// refused with ErrDeviceLimit when they already have the maximum of devices.
func (s *Service) CreateActivation(ctx context.Context, subject idnat.ID, actor audit.Actor) (Activation, error) {
	if s.opts.Directory != nil {
		known, err := s.opts.Directory.Known(ctx, subject.String())
		if err != nil {
			return Activation{}, fmt.Errorf("directory: %w", err)
		}
		if !known {
			return Activation{}, ErrUnknownUser
		}
	}
	now := s.now()
	id := "act_" + token.New(16)
	secret := token.New(16)
	code := newCode()
	expires := now.Add(s.opts.ActivationTTL)
	keep := s.opts.ActivationTTL + activationKeep
	sub := subject.String()

	entry := audit.Entry{Time: now, Event: audit.ActivationCreated, Subject: sub, Actor: actor,
		Details: map[string]any{"activation_id": id, "expires_at": expires.Format(time.RFC3339)}}
	ej, minID, ttl := s.audit.ScriptArgs(entry)
	res, err := createActivationScript.Run(ctx, s.rdb,
		[]string{s.keys.devices(sub), s.keys.activationState(sub, id), s.audit.SubjectStream(sub)},
		s.opts.DevicesPerSubject, expires.UnixMilli(), keep.Milliseconds(), ej, minID, ttl).Text()
	if err != nil {
		return Activation{}, fmt.Errorf("create activation: %w", err)
	}
	if res == "limit" {
		return Activation{}, ErrDeviceLimit
	}
	stored, _ := json.Marshal(storedActivation{Subject: sub, SecretHash: token.SHA256Hex(secret),
		CodeHash: token.SHA256Hex(normalizeCode(code)), ExpiresAt: expires.Format(time.RFC3339)})
	if err := s.rdb.Set(ctx, s.keys.activation(id), stored, keep).Err(); err != nil {
		return Activation{}, fmt.Errorf("create activation: %w", err)
	}

	uri := "ecps://enrol?a=" + id + "&s=" + secret + "&h=" + url.QueryEscape(s.opts.PublicURL)
	png, err := qrcode.Encode(uri, qrcode.Medium, 320)
	if err != nil {
		return Activation{}, fmt.Errorf("qr code: %w", err)
	}
	return Activation{ActivationID: id, Subject: sub, Code: formatCode(code), QRPNG: png,
		EnrolURI: uri, ExpiresAt: expires}, nil
}

// GetActivation returns an activation's status, for the desk.
func (s *Service) GetActivation(ctx context.Context, id string) (ActivationStatus, error) {
	if !validActivationID(id) {
		return ActivationStatus{}, ErrNotFound
	}
	a, err := s.readActivation(ctx, id)
	if err != nil {
		return ActivationStatus{}, err
	}
	st, err := s.rdb.HGetAll(ctx, s.keys.activationState(a.Subject, id)).Result()
	if err != nil {
		return ActivationStatus{}, fmt.Errorf("get activation: %w", err)
	}
	if len(st) == 0 {
		return ActivationStatus{}, ErrNotFound
	}
	expires, _ := time.Parse(time.RFC3339, a.ExpiresAt)
	status := st["status"]
	if status == "pending" && !s.now().Before(expires) {
		status = "expired"
	}
	return ActivationStatus{ActivationID: id, Subject: a.Subject, Status: status,
		ExpiresAt: expires.UTC(), DeviceID: st["device_id"]}, nil
}

func (s *Service) readActivation(ctx context.Context, id string) (storedActivation, error) {
	raw, err := s.rdb.Get(ctx, s.keys.activation(id)).Bytes()
	if errors.Is(err, redis.Nil) {
		return storedActivation{}, ErrNotFound
	}
	if err != nil {
		return storedActivation{}, fmt.Errorf("read activation: %w", err)
	}
	var a storedActivation
	if err := json.Unmarshal(raw, &a); err != nil {
		return storedActivation{}, fmt.Errorf("decode activation: %w", err)
	}
	return a, nil
}

// ---- Enrolment ----

// EnrolRequest is what the app sends to enrol.
type EnrolRequest struct {
	ActivationID string
	Secret       string
	Code         string
	PublicKey    json.RawMessage
	Proof        string
	Platform     string
	Model        string
	AppVersion   string
	PushProvider string // "" when no push block was sent
	PushToken    string
}

// Enrol turns a pending activation into a device. Errors, in the contract's
// order: ErrInvalid (shape; no attempt used), ErrUnknownActivation,
// ErrActivationEnded, ErrWrongSecret (an attempt used), ErrInvalid (key or
// proof), ErrKeyEnrolled, ErrDeviceLimit.
func (s *Service) Enrol(ctx context.Context, req EnrolRequest) (Device, error) {
	pub, err := s.checkEnrolShape(req)
	if err != nil {
		return Device{}, err
	}
	now := s.now()
	proofErr := deviceproof.VerifyEnrol(req.Proof, pub.Key, req.ActivationID, now, s.opts.ProofMaxSkew)
	// The same request sent again (the app after a timeout, or go-redis after
	// a lost reply) names the same device: every step below is then a no-op
	// that answers as the first run did.
	deviceID := enrolledDeviceID(req.ActivationID, pub.Thumbprint)

	// Round trip 1: the activation, and a claim on the key when the proof holds.
	p := s.rdb.Pipeline()
	getAct := p.Get(ctx, s.keys.activation(req.ActivationID))
	var claim *redis.StatusCmd
	if proofErr == nil {
		claim = p.SetArgs(ctx, s.keys.publicKey(pub.Thumbprint), deviceID, redis.SetArgs{Mode: "NX", Get: true})
	}
	if _, err := p.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return Device{}, fmt.Errorf("enrol: %w", err)
	}
	claimed := claim != nil && (errors.Is(claim.Err(), redis.Nil) || claim.Val() == deviceID)
	// release gives the key back after a definite refusal, so that the app
	// can try again; never after a storage error, when the enrolment may
	// have happened (the app's retry of the same request then finds it).
	release := func(err error) (Device, error) {
		if claimed {
			s.releaseKey(context.WithoutCancel(ctx), pub.Thumbprint, deviceID)
		}
		return Device{}, err
	}

	raw, err := getAct.Bytes()
	if errors.Is(err, redis.Nil) {
		return release(ErrUnknownActivation)
	}
	if err != nil {
		return Device{}, fmt.Errorf("enrol: %w", err)
	}
	var act storedActivation
	if err := json.Unmarshal(raw, &act); err != nil {
		return Device{}, fmt.Errorf("decode activation: %w", err)
	}
	expires, _ := time.Parse(time.RFC3339, act.ExpiresAt)
	if !s.secretMatches(act, req) {
		err := ErrActivationEnded
		if now.Before(expires) {
			err = s.failAttempt(ctx, act, req.ActivationID, now)
		}
		if errors.Is(err, ErrWrongSecret) || errors.Is(err, ErrActivationEnded) {
			return release(err)
		}
		return Device{}, err
	}
	if proofErr != nil {
		if !now.Before(expires) {
			return release(ErrActivationEnded)
		}
		return release(fmt.Errorf("%w: enrolment proof rejected (%s)", ErrInvalid, deviceproof.ReasonOf(proofErr)))
	}
	if !claimed {
		return Device{}, ErrKeyEnrolled
	}

	// Round trip 2: the device pointer, and the enrolment itself, atomically
	// on the practitioner's hash tag. The script answers ok for a device it
	// already enrolled, even once the activation has expired.
	stored := storedDevice{DeviceID: deviceID, Subject: act.Subject, Status: StatusActive,
		Platform: req.Platform, Model: req.Model, AppVersion: req.AppVersion,
		CreatedAt: now.Format(time.RFC3339), PushToken: req.PushToken, Thumbprint: pub.Thumbprint}
	sj, _ := json.Marshal(stored)
	pj, _ := json.Marshal(devicePointer{Subject: act.Subject, JWK: pub.JWK})
	entry := audit.Entry{Time: now, Event: audit.DeviceEnrolled, Subject: act.Subject,
		Actor: audit.Actor{Type: audit.ActorDevice, ID: deviceID},
		Details: map[string]any{"activation_id": req.ActivationID, "device_id": deviceID,
			"platform": req.Platform, "model": req.Model, "app_version": req.AppVersion}}
	ej, minID, ttl := s.audit.ScriptArgs(entry)
	// When replicas must acknowledge (redis.min_replicas_ack), the pointer
	// (on its own slot) is written and acknowledged first.
	durable := s.opts.Durable.Replicas() > 0
	if durable {
		if err := s.opts.Durable.Do(ctx, s.keys.device(deviceID), func(c redis.Cmdable) error {
			return c.Set(ctx, s.keys.device(deviceID), pj, 0).Err()
		}); err != nil {
			return Device{}, fmt.Errorf("enrol: %w", err)
		}
	}
	var res *redis.Cmd
	err = s.opts.Durable.Do(ctx, s.keys.devices(act.Subject), func(c redis.Cmdable) error {
		return scripts.Exec(ctx, c, []*redis.Script{enrolScript}, func(p redis.Pipeliner) {
			if !durable {
				p.Set(ctx, s.keys.device(deviceID), pj, 0)
			}
			res = enrolScript.EvalSha(ctx, p,
				[]string{s.keys.activationState(act.Subject, req.ActivationID), s.keys.devices(act.Subject), s.audit.SubjectStream(act.Subject),
					s.keys.active(act.Subject)},
				deviceID, sj, s.opts.DevicesPerSubject, now.UnixMilli(), ej, minID, ttl, req.PushToken)
		})
	})
	if err != nil {
		return Device{}, fmt.Errorf("enrol: %w", err)
	}
	vals, err := res.StringSlice()
	if err != nil || len(vals) < 1 {
		return Device{}, fmt.Errorf("enrol: unexpected reply %v: %w", res.Val(), err)
	}
	switch vals[0] {
	case "ok":
	case "limit":
		return release(ErrDeviceLimit)
	default:
		return release(ErrActivationEnded)
	}
	return decodeDevice(vals[1], "")
}

// enrolledDeviceID names the device that one activation makes of one key:
// the same request always names the same device, so that running it again
// finds its own work. It says nothing that the key and the activation id do
// not already say, and a key is enrolled at most once anyway.
func enrolledDeviceID(activationID, thumbprint string) string {
	h := sha256.Sum256([]byte("ecps device id\x00" + activationID + "\x00" + thumbprint))
	return "dev_" + base64.RawURLEncoding.EncodeToString(h[:12])
}

// releaseKey gives a claimed key back: the claim, if it is still this
// device's, then the device pointer. Two steps, as the two keys live in
// different slots of a Redis Cluster; each is safe to run twice.
func (s *Service) releaseKey(ctx context.Context, thumbprint, deviceID string) {
	_ = releaseKeyScript.Run(ctx, s.rdb, []string{s.keys.publicKey(thumbprint)}, deviceID).Err()
	_ = s.rdb.Del(ctx, s.keys.device(deviceID)).Err()
}

func (s *Service) checkEnrolShape(req EnrolRequest) (deviceproof.PublicKey, error) {
	invalid := func(msg string) (deviceproof.PublicKey, error) {
		return deviceproof.PublicKey{}, fmt.Errorf("%w: %s", ErrInvalid, msg)
	}
	switch {
	case req.ActivationID == "":
		return invalid("activation_id is required")
	case req.Secret == "" && req.Code == "":
		return invalid("secret or code is required")
	case req.Secret != "" && req.Code != "":
		return invalid("send secret or code, not both")
	case len(req.PublicKey) == 0:
		return invalid("public_key is required")
	case req.Proof == "":
		return invalid("proof is required")
	case req.Platform != "android" && req.Platform != "ios":
		return invalid("platform must be android or ios")
	case !validLabel(req.Model):
		return invalid("model must be 1 to 100 printable characters")
	case !validLabel(req.AppVersion):
		return invalid("app_version must be 1 to 100 printable characters")
	case req.PushProvider != "" && req.PushProvider != "fcm":
		return invalid("push.provider must be fcm")
	case req.PushProvider != "" && !validPushToken(req.PushToken):
		return invalid("push.token must be 1 to 4096 printable ASCII characters")
	}
	pub, err := deviceproof.ParsePublicJWK(req.PublicKey)
	if err != nil {
		return invalid("public_key must be an EC P-256 public JWK with a point on the curve")
	}
	return pub, nil
}

func (s *Service) secretMatches(act storedActivation, req EnrolRequest) bool {
	want, got := act.SecretHash, token.SHA256Hex(req.Secret)
	if req.Code != "" {
		want, got = act.CodeHash, token.SHA256Hex(normalizeCode(req.Code))
	}
	return subtle.ConstantTimeCompare([]byte(want), []byte(got)) == 1
}

// failAttempt uses one attempt of the activation; the last one destroys it.
func (s *Service) failAttempt(ctx context.Context, act storedActivation, id string, now time.Time) error {
	failed := audit.Entry{Time: now, Event: audit.ActivationFailed, Subject: act.Subject, Actor: audit.Actor{Type: audit.ActorDevice, ID: "unenrolled"},
		Details: map[string]any{"activation_id": id, "reason": "wrong_secret"}}
	destroyed := audit.Entry{Time: now, Event: audit.ActivationDestroyed, Subject: act.Subject, Actor: audit.System,
		Details: map[string]any{"activation_id": id, "reason": "attempts_exhausted"}}
	op := token.New(12) // this attempt: counted once whatever go-redis resends
	fj, minID, ttl := s.audit.ScriptArgs(failed)
	dj, _, _ := s.audit.ScriptArgs(destroyed)
	res, err := failAttemptScript.Run(ctx, s.rdb,
		[]string{s.keys.activationState(act.Subject, id), s.audit.SubjectStream(act.Subject)},
		now.UnixMilli(), s.opts.ActivationAttempts, fj, dj, minID, ttl, op).Text()
	if err != nil {
		return fmt.Errorf("activation attempt: %w", err)
	}
	if res == "gone" {
		return ErrActivationEnded
	}
	return ErrWrongSecret
}

// ---- Devices ----

// ListDevices returns every device of a practitioner, revoked ones included.
// One round trip: the devices' JSON and their last uses (pipelined).
func (s *Service) ListDevices(ctx context.Context, subject string) ([]Device, error) {
	p := s.rdb.Pipeline()
	devices := p.HGetAll(ctx, s.keys.devices(subject))
	used := p.HGetAll(ctx, s.keys.used(subject))
	if _, err := p.Exec(ctx); err != nil {
		return nil, fmt.Errorf("list devices: %w", err)
	}
	lastUsed := used.Val()
	out := make([]Device, 0, len(devices.Val()))
	for id, v := range devices.Val() {
		d, err := decodeDevice(v, lastUsed[id])
		if err != nil {
			return nil, err
		}
		out = append(out, d)
	}
	sortDevices(out)
	return out, nil
}

// Transition actions.
const (
	ActionSuspend = "suspend"
	ActionResume  = "resume"
	ActionRevoke  = "revoke"
)

var transitionEvents = map[string]string{
	ActionSuspend: audit.DeviceSuspended,
	ActionResume:  audit.DeviceResumed,
	ActionRevoke:  audit.DeviceRevoked,
}

// Transition suspends, resumes or revokes a device. onlySubject, when set,
// restricts it to that practitioner's devices (others are ErrNotFound).
// Suspending or resuming a revoked device is ErrRevoked; a change to the
// state the device already has is no change and writes no audit entry.
func (s *Service) Transition(ctx context.Context, deviceID, action string, actor audit.Actor, onlySubject string) (Device, error) {
	event, ok := transitionEvents[action]
	if !ok {
		return Device{}, fmt.Errorf("%w: unknown action", ErrInvalid)
	}
	ptr, err := s.pointer(ctx, deviceID)
	if err != nil {
		return Device{}, err
	}
	if onlySubject != "" && ptr.Subject != onlySubject {
		return Device{}, ErrNotFound
	}
	op := token.New(12)
	entry := audit.Entry{Time: s.now(), Event: event, Subject: ptr.Subject, Actor: actor,
		Details: map[string]any{"device_id": deviceID}}
	ej, minID, ttl := s.audit.ScriptArgs(entry)
	res, err := transitionScript.Run(ctx, s.rdb,
		[]string{s.keys.devices(ptr.Subject), s.audit.SubjectStream(ptr.Subject), s.keys.active(ptr.Subject), s.keys.used(ptr.Subject)},
		deviceID, action, ej, minID, ttl, op).StringSlice()
	if err != nil {
		return Device{}, fmt.Errorf("device %s: %w", action, err)
	}
	switch res[0] {
	case "notfound":
		return Device{}, ErrNotFound
	case "revoked":
		return Device{}, ErrRevoked
	}
	if len(res) != 3 {
		return Device{}, fmt.Errorf("device %s: unexpected reply %v", action, res)
	}
	return decodeDevice(res[1], res[2])
}

// SetPushToken sets the push token of a device (an empty token clears it).
func (s *Service) SetPushToken(ctx context.Context, d Device, token string) error {
	if !validPushToken(token) {
		return fmt.Errorf("%w: token must be 1 to 4096 printable ASCII characters", ErrInvalid)
	}
	res, err := setPushTokenScript.Run(ctx, s.rdb, []string{s.keys.devices(d.Subject), s.keys.active(d.Subject)},
		d.DeviceID, token).Text()
	if err != nil {
		return fmt.Errorf("set push token: %w", err)
	}
	if res != "ok" {
		return ErrNotFound
	}
	return nil
}

// ClearPushToken clears a device's push token that the push provider
// reported dead (reason: unregistered, sender_id_mismatch, invalid_token),
// only if the device still has that token: a token the phone has replaced
// meanwhile is kept. The device's "push" flag turns false and it polls. The
// change is audited as device.push_token_cleared with the system as actor
// (never with the token). It reports whether the token was cleared.
func (s *Service) ClearPushToken(ctx context.Context, deviceID, deadToken, reason string) (bool, error) {
	ptr, err := s.pointer(ctx, deviceID)
	if errors.Is(err, ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	op := token.New(12)
	entry := audit.Entry{Time: s.now(), Event: audit.DevicePushTokenClear, Subject: ptr.Subject, Actor: audit.System,
		Details: map[string]any{"device_id": deviceID, "reason": reason}}
	ej, minID, ttl := s.audit.ScriptArgs(entry)
	res, err := clearPushTokenScript.Run(ctx, s.rdb,
		[]string{s.keys.devices(ptr.Subject), s.audit.SubjectStream(ptr.Subject), s.keys.active(ptr.Subject)},
		deviceID, deadToken, ej, minID, ttl, op).Text()
	if err != nil {
		return false, fmt.Errorf("clear push token: %w", err)
	}
	return res == "cleared", nil
}

// ---- Device pointers (request proofs: proof.go) ----

// pointer returns a device's immutable pointer, from memory when it can.
func (s *Service) pointer(ctx context.Context, deviceID string) (devicePointer, error) {
	if !deviceproof.ValidKeyID(deviceID) {
		return devicePointer{}, ErrNotFound
	}
	s.mu.RLock()
	p, ok := s.pointers[deviceID]
	s.mu.RUnlock()
	if ok {
		return p, nil
	}
	raw, err := s.rdb.Get(ctx, s.keys.device(deviceID)).Bytes()
	if errors.Is(err, redis.Nil) {
		return devicePointer{}, ErrNotFound
	}
	if err != nil {
		return devicePointer{}, fmt.Errorf("device lookup: %w", err)
	}
	if err := json.Unmarshal(raw, &p); err != nil {
		return devicePointer{}, fmt.Errorf("decode device pointer: %w", err)
	}
	pub, err := deviceproof.ParsePublicJWK(p.JWK)
	if err != nil {
		return devicePointer{}, fmt.Errorf("stored device key: %w", err)
	}
	p.key = pub.Key
	s.mu.Lock()
	if len(s.pointers) >= maxCachedPointers {
		clear(s.pointers)
	}
	s.pointers[deviceID] = p
	s.mu.Unlock()
	return p, nil
}

// ---- Small helpers of this package ----

func validActivationID(id string) bool {
	return strings.HasPrefix(id, "act_") && len(id) == 26 && deviceproof.ValidJTI(id[4:])
}

func validLabel(s string) bool {
	if s == "" || len(s) > 100 || !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if unicode.IsControl(r) {
			return false
		}
	}
	return true
}

func validPushToken(s string) bool {
	if s == "" || len(s) > 4096 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 0x21 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// DevicesKey is the Redis hash of a practitioner's devices: device_id ->
// device JSON (fields device_id, status, push_token among others), on the
// practitioner's hash tag, for scripts of other packages that must read
// devices atomically with their own state (docs/redis.md). It exists when
// the practitioner has a device, revoked ones included.
func (s *Service) DevicesKey(subject string) string { return s.keys.devices(subject) }

// ActiveDevicesKey is the Redis hash of a practitioner's active devices:
// device_id -> push token ("" when none), and the marker field
// deviceindex.Marker, on the practitioner's hash tag. Scripts that read it
// build it with deviceindex.Lua when the marker is missing.
func (s *Service) ActiveDevicesKey(subject string) string { return s.keys.active(subject) }

// PublicKey returns an enrolled device's public key (ErrNotFound if none).
func (s *Service) PublicKey(ctx context.Context, deviceID string) (*ecdsa.PublicKey, error) {
	p, err := s.pointer(ctx, deviceID)
	if err != nil {
		return nil, err
	}
	return p.key, nil
}
