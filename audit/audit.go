package audit

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ecps-sante/ecps/token"
)

// Event names of the contract.
const (
	ActivationCreated    = "activation.created"
	ActivationFailed     = "activation.failed"
	ActivationDestroyed  = "activation.destroyed"
	DeviceEnrolled       = "device.enrolled"
	DeviceSuspended      = "device.suspended"
	DeviceResumed        = "device.resumed"
	DeviceRevoked        = "device.revoked"
	DevicePushTokenClear = "device.push_token_cleared"
)

// Actor types of the contract.
const (
	ActorClient   = "client"
	ActorOperator = "operator"
	ActorDevice   = "device"
	ActorSystem   = "system"
)

// Actor is who acted.
type Actor struct {
	Type string `json:"type"`
	ID   string `json:"id"`
}

// System is the actor of expiries and destroyed activations.
var System = Actor{Type: ActorSystem, ID: "system"}

// Entry is one audit record. Details must never hold a secret, a proof or a
// push token.
type Entry struct {
	ID      string         `json:"id"`
	Time    time.Time      `json:"time"`
	Event   string         `json:"event"`
	Subject string         `json:"subject"`
	Actor   Actor          `json:"actor"`
	Details map[string]any `json:"details"`
	// Op, when set, names the event for Append: appends with the same Op
	// are written once (within an hour), so that a step run again (after a
	// replica's takeover, a client's retry) writes nothing twice. Empty: a
	// fresh id per Append, still safe against go-redis's resends.
	Op string `json:"-"`
}

// ErrBadCursor is returned for a paging cursor that is not one of ours.
var ErrBadCursor = errors.New("audit: bad cursor")

// Log reads and writes the audit streams.
type Log struct {
	rdb       redis.UniversalClient
	prefix    string
	retention time.Duration
}

// New returns a Log. prefix starts every key ("ecps:" in production).
func New(rdb redis.UniversalClient, prefix string, retention time.Duration) *Log {
	return &Log{rdb: rdb, prefix: prefix, retention: retention}
}

// SubjectStream is the key of a practitioner's stream; it shares the
// practitioner's hash tag so that domain scripts can append to it.
func (l *Log) SubjectStream(subject string) string {
	return l.prefix + "{sub:" + subject + "}:audit"
}

func (l *Log) subjectOpKey(subject, op string) string {
	return l.prefix + "{sub:" + subject + "}:auditop:" + op
}

// systemStream holds the entries that concern no practitioner: an IdP
// client's rate limit, desk sign-in limits.
func (l *Log) systemStream() string         { return l.prefix + "{audit}:system" }
func (l *Log) systemOpKey(op string) string { return l.prefix + "{audit}:op:" + op }

// opTTL is how long an operation id is remembered against retried appends.
const opTTL = time.Hour

// appendScript: KEYS[1] stream, KEYS[2] op key; ARGV[1] entry JSON,
// ARGV[2] MINID, ARGV[3] op TTL ms, ARGV[4] stream TTL s (0: none).
// Returns the new entry's id, or "dup" when the op was already written: a
// resent append is an answer, never an error (never redis.Nil).
var appendScript = redis.NewScript(`
if not redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[3]) then return 'dup' end
local id = redis.call('XADD', KEYS[1], 'MINID', '~', ARGV[2], '*', 'e', ARGV[1])
if tonumber(ARGV[4]) > 0 then redis.call('EXPIRE', KEYS[1], ARGV[4]) end
return id
`)

// AppendLua is a Lua fragment for domain scripts: it defines
// audit_append(stream, entry_json, minid, ttl_s). Use ScriptArgs for its values.
const AppendLua = `
local function audit_append(stream, entry, minid, ttl)
  redis.call('XADD', stream, 'MINID', '~', minid, '*', 'e', entry)
  redis.call('EXPIRE', stream, ttl)
end
`

// ScriptArgs returns what AppendLua's audit_append needs for e: the entry's
// JSON, the MINID that applies the retention, and the stream's TTL in seconds.
func (l *Log) ScriptArgs(e Entry) (entryJSON, minID string, ttlSeconds int64) {
	b, _ := json.Marshal(e) // Entry has only marshalable fields.
	return string(b), l.minID(e.Time), int64(l.retention / time.Second)
}

// Retention returns what AppendLua's audit_append needs besides an entry
// written at now: the MINID that applies the retention and the stream's TTL
// in seconds (ScriptArgs without an entry to encode).
func (l *Log) Retention(now time.Time) (minID string, ttlSeconds int64) {
	return l.minID(now), int64(l.retention / time.Second)
}

func (l *Log) minID(now time.Time) string {
	return strconv.FormatInt(now.Add(-l.retention).UnixMilli(), 10)
}

// Append writes e, once, to its practitioner's stream, or to the system
// stream when it concerns no practitioner. Entries of a state change are
// written by the change's own script instead (AppendLua), in the same
// atomic step: nothing is written twice.
func (l *Log) Append(ctx context.Context, e Entry) error {
	b, err := json.Marshal(e)
	if err != nil {
		return err
	}
	op := e.Op
	if op == "" {
		op = newOpID() // the same for go-redis's resends of this append
	}
	keys := []string{l.SubjectStream(e.Subject), l.subjectOpKey(e.Subject, op)}
	ttl := int64(l.retention / time.Second)
	if e.Subject == "" {
		keys, ttl = []string{l.systemStream(), l.systemOpKey(op)}, 0
	}
	if err := appendScript.Run(ctx, l.rdb, keys, string(b), l.minID(e.Time), opTTL.Milliseconds(), ttl).Err(); err != nil {
		return fmt.Errorf("audit append: %w", err)
	}
	return nil
}

var cursorRE = regexp.MustCompile(`^[0-9]{1,20}-[0-9]{1,20}$`)

// validCursor reports whether s is a stream id Redis accepts as an
// exclusive upper bound: two unsigned 64-bit numbers, not 0-0.
func validCursor(s string) bool {
	if !cursorRE.MatchString(s) {
		return false
	}
	ms, seq, _ := strings.Cut(s, "-")
	a, err1 := strconv.ParseUint(ms, 10, 64)
	b, err2 := strconv.ParseUint(seq, 10, 64)
	return err1 == nil && err2 == nil && (a != 0 || b != 0)
}

// List returns a practitioner's entries, newest first, at most limit, older
// than the cursor before ("" for the newest). next is the cursor of the
// following page, "" when there is none.
func (l *Log) List(ctx context.Context, subject, before string, limit int) (entries []Entry, next string, err error) {
	max := "+"
	if before != "" {
		if !validCursor(before) {
			return nil, "", ErrBadCursor
		}
		max = "(" + before
	}
	msgs, err := l.rdb.XRevRangeN(ctx, l.SubjectStream(subject), max, "-", int64(limit)+1).Result()
	if err != nil {
		return nil, "", fmt.Errorf("audit list: %w", err)
	}
	more := len(msgs) > limit
	if more {
		msgs = msgs[:limit]
	}
	entries = make([]Entry, 0, len(msgs))
	for _, m := range msgs {
		raw, _ := m.Values["e"].(string)
		var e Entry
		if err := json.Unmarshal([]byte(raw), &e); err != nil {
			continue // not ours; never fail a whole page on one entry
		}
		e.ID = m.ID
		if e.Details == nil {
			e.Details = map[string]any{}
		}
		entries = append(entries, e)
	}
	if more && len(msgs) > 0 {
		next = msgs[len(msgs)-1].ID
	}
	return entries, next, nil
}

func newOpID() string { return token.New(12) }
