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
	// Op, when set, names the event for the global copy: copies with the same
	// Op are written once (within opTTL), so that a step run again (a request
	// the client sent again, a command go-redis resent) copies nothing twice.
	// Empty: a fresh id per copy, still safe against go-redis's resends.
	Op string `json:"-"`
}

// ErrBadCursor is returned for a paging cursor that is not one of ours.
var ErrBadCursor = errors.New("audit: bad cursor")

// Log reads and writes the audit streams.
type Log struct {
	rdb       redis.UniversalClient
	prefix    string
	retention time.Duration
	copies    chan Entry // global copies waiting for RunGlobalCopier
}

// New returns a Log. prefix starts every key ("ecps:" in production).
func New(rdb redis.UniversalClient, prefix string, retention time.Duration) *Log {
	return &Log{rdb: rdb, prefix: prefix, retention: retention, copies: make(chan Entry, 4096)}
}

// SubjectStream is the key of a practitioner's stream; it shares the
// practitioner's hash tag so that domain scripts can append to it.
func (l *Log) SubjectStream(subject string) string {
	return l.prefix + "{sub:" + subject + "}:audit"
}

func (l *Log) subjectOpKey(subject, op string) string {
	return l.prefix + "{sub:" + subject + "}:auditop:" + op
}

func (l *Log) globalStream() string         { return l.prefix + "{audit}:all" }
func (l *Log) globalOpKey(op string) string { return l.prefix + "{audit}:op:" + op }

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

func (l *Log) minID(now time.Time) string {
	return strconv.FormatInt(now.Add(-l.retention).UnixMilli(), 10)
}

// Append writes e to its practitioner's stream (when it has one) and to the
// global stream, in one pipelined round trip.
func (l *Log) Append(ctx context.Context, e Entry) error {
	b, err := json.Marshal(e)
	if err != nil {
		return err
	}
	op := e.Op
	if op == "" {
		op = newOpID()
	}
	pipe := l.rdb.Pipeline()
	if e.Subject != "" {
		appendScript.Eval(ctx, pipe, []string{l.SubjectStream(e.Subject), l.subjectOpKey(e.Subject, op)},
			string(b), l.minID(e.Time), opTTL.Milliseconds(), int64(l.retention/time.Second))
	}
	appendScript.Eval(ctx, pipe, []string{l.globalStream(), l.globalOpKey(op)},
		string(b), l.minID(e.Time), opTTL.Milliseconds(), 0)
	if _, err = pipe.Exec(ctx); err != nil {
		return fmt.Errorf("audit append: %w", err)
	}
	return nil
}

// QueueGlobal queues on p the copy to the global stream of entries that a
// domain script has already written to the practitioner's stream, so that the
// caller can send it with its other commands in one round trip.
func (l *Log) QueueGlobal(ctx context.Context, p redis.Pipeliner, entries ...Entry) {
	for _, e := range entries {
		b, _ := json.Marshal(e) // Entry has only marshalable fields.
		op := e.Op
		if op == "" {
			op = newOpID()
		}
		appendScript.Eval(ctx, p, []string{l.globalStream(), l.globalOpKey(op)},
			string(b), l.minID(e.Time), opTTL.Milliseconds(), 0)
	}
}

// AppendGlobal sends QueueGlobal's copies at once.
func (l *Log) AppendGlobal(ctx context.Context, entries ...Entry) error {
	p := l.rdb.Pipeline()
	l.QueueGlobal(ctx, p, entries...)
	if _, err := p.Exec(ctx); err != nil {
		return fmt.Errorf("audit append: %w", err)
	}
	return nil
}

// CopyGlobalLater queues copies for the global stream, written in batches by
// RunGlobalCopier: hot paths (a login decision) do not wait for the
// operators' copy. The practitioner's entry, written in the state change
// itself, is the authoritative one; a crash loses at most the queued copies.
// When the queue is full, the copy is written at once.
func (l *Log) CopyGlobalLater(ctx context.Context, entries ...Entry) {
	for i, e := range entries {
		select {
		case l.copies <- e:
		default:
			_ = l.AppendGlobal(context.WithoutCancel(ctx), entries[i:]...)
			return
		}
	}
}

// copyEvery is how often queued global copies are written: one round trip
// carries every copy queued meanwhile.
const copyEvery = 50 * time.Millisecond

// RunGlobalCopier writes queued global copies until ctx ends, then flushes
// what is left.
func (l *Log) RunGlobalCopier(ctx context.Context) {
	batch := make([]Entry, 0, 256)
	flush := func(ctx context.Context) {
		if len(batch) == 0 {
			return
		}
		// On error (Redis down) the copies are dropped: nothing grows without
		// bound in memory, and the practitioners' streams hold the
		// authoritative entries.
		_ = l.AppendGlobal(ctx, batch...)
		batch = batch[:0]
	}
	tick := time.NewTicker(copyEvery)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			for {
				select {
				case e := <-l.copies:
					batch = append(batch, e)
				default:
					fctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
					flush(fctx)
					cancel()
					return
				}
			}
		case e := <-l.copies:
			batch = append(batch, e)
			if len(batch) == cap(batch) {
				flush(ctx)
			}
		case <-tick.C:
			flush(ctx)
		}
	}
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
