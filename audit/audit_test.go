package audit

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ecps-sante/ecps/redistest"
)

func newLog(t *testing.T, retention time.Duration) (*Log, redis.UniversalClient) {
	t.Helper()
	rdb, prefix := redistest.Client(t)
	return New(rdb, prefix, retention), rdb
}

func entry(subject string, n int, at time.Time) Entry {
	return Entry{Time: at.UTC().Truncate(time.Second), Event: DeviceEnrolled, Subject: subject,
		Actor: Actor{Type: ActorOperator, ID: "op1"}, Details: map[string]any{"n": float64(n)}}
}

func nth(t *testing.T, e Entry) int {
	t.Helper()
	n, ok := e.Details["n"].(float64)
	if !ok {
		t.Fatalf("entry %+v has no detail n", e)
	}
	return int(n)
}

func TestListPagingNewestFirst(t *testing.T) {
	ctx := context.Background()
	l, _ := newLog(t, time.Hour)
	const total = 7
	now := time.Now()
	for i := 1; i <= total; i++ {
		if err := l.Append(ctx, entry("sub1", i, now)); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Append(ctx, entry("other", 99, now)); err != nil {
		t.Fatal(err)
	}

	for _, limit := range []int{1, 2, 3, 6, 7, 8, 50} {
		t.Run(fmt.Sprint("limit=", limit), func(t *testing.T) {
			var got []int
			var ids []string
			cursor, pages := "", 0
			for {
				entries, next, err := l.List(ctx, "sub1", cursor, limit)
				if err != nil {
					t.Fatal(err)
				}
				pages++
				if len(entries) > limit {
					t.Fatalf("page of %d entries for limit %d", len(entries), limit)
				}
				for _, e := range entries {
					if e.ID == "" || e.Subject != "sub1" || e.Event != DeviceEnrolled || e.Actor.ID != "op1" {
						t.Fatalf("bad entry %+v", e)
					}
					got = append(got, nth(t, e))
					ids = append(ids, e.ID)
				}
				seen := len(got)
				if seen < total {
					// More remain: a full page and a cursor equal to its last ID.
					if len(entries) != limit || next != entries[len(entries)-1].ID {
						t.Fatalf("after %d of %d: %d entries, next %q", seen, total, len(entries), next)
					}
				} else if next != "" {
					// Exactly at the end (even when the last page is full):
					// no cursor, thanks to the limit+1 read.
					t.Fatalf("next = %q at the end (limit %d)", next, limit)
				}
				if next == "" {
					break
				}
				if pages > total+1 {
					t.Fatal("paging does not end")
				}
				cursor = next
			}
			if len(got) != total {
				t.Fatalf("got %v, want %d entries", got, total)
			}
			for i, n := range got {
				if n != total-i {
					t.Fatalf("order %v, want newest first", got)
				}
			}
			wantPages := (total + limit - 1) / limit
			if pages != wantPages {
				t.Fatalf("%d pages, want %d", pages, wantPages)
			}
			for i := 1; i < len(ids); i++ {
				if ids[i] == ids[i-1] {
					t.Fatalf("duplicate id %s", ids[i])
				}
			}
		})
	}

	entries, next, err := l.List(ctx, "nobody", "", 10)
	if err != nil || len(entries) != 0 || next != "" || entries == nil {
		t.Fatalf("empty subject: %v %q %v", entries, next, err)
	}
}

func TestListDetailsNeverNil(t *testing.T) {
	ctx := context.Background()
	l, rdb := newLog(t, time.Hour)
	e := entry("s", 0, time.Now())
	e.Details = nil
	if err := l.Append(ctx, e); err != nil {
		t.Fatal(err)
	}
	// An entry that is not ours is skipped, not fatal to the page.
	if err := rdb.XAdd(ctx, &redis.XAddArgs{Stream: l.SubjectStream("s"), Values: []any{"e", "{not json"}}).Err(); err != nil {
		t.Fatal(err)
	}
	entries, next, err := l.List(ctx, "s", "", 10)
	if err != nil || next != "" || len(entries) != 1 {
		t.Fatalf("%v %q %v", entries, next, err)
	}
	if entries[0].Details == nil {
		t.Fatal("Details is nil")
	}
}

func TestListBadCursor(t *testing.T) {
	ctx := context.Background()
	l, _ := newLog(t, time.Hour)
	if err := l.Append(ctx, entry("s", 1, time.Now())); err != nil {
		t.Fatal(err)
	}
	for _, c := range []string{
		"garbage",
		"1-2-3",
		"1",
		"-1",
		"1-",
		"-",
		"+",
		"(1-0",
		"1-0 ",
		" 1-0",
		"1-0\n",
		"1-a",
		"１-0", // full-width digit
		strings.Repeat("9", 21) + "-0",
		"0-" + strings.Repeat("1", 21),
		strings.Repeat("1", 200),
	} {
		_, _, err := l.List(ctx, "s", c, 10)
		if !errors.Is(err, ErrBadCursor) {
			t.Errorf("cursor %q: err = %v, want ErrBadCursor", c, err)
		}
	}
}

// Cursors that pass the shape check but that Redis refuses as stream IDs.
// They are not ours either; they should be ErrBadCursor (a 400), not a
// Redis error (a 500).
func TestListOutOfRangeCursor(t *testing.T) {
	ctx := context.Background()
	l, _ := newLog(t, time.Hour)
	if err := l.Append(ctx, entry("s", 1, time.Now())); err != nil {
		t.Fatal(err)
	}
	for _, c := range []string{
		strings.Repeat("9", 20) + "-0", // > 2^64-1
		"0-" + strings.Repeat("9", 20),
		"0-0", // exclusive "(0-0" has nothing before it
	} {
		entries, next, err := l.List(ctx, "s", c, 10)
		if err != nil && !errors.Is(err, ErrBadCursor) {
			t.Errorf("cursor %q: err = %v, want ErrBadCursor (or an empty page)", c, err)
		} else if err == nil && (len(entries) != 0 || next != "") {
			t.Errorf("cursor %q: %v %q", c, entries, next)
		}
	}
}

// Append writes an entry once: to its practitioner's stream, or to the
// system stream when it concerns no practitioner.
func TestAppendWritesOneStream(t *testing.T) {
	ctx := context.Background()
	l, rdb := newLog(t, time.Hour)
	if err := l.Append(ctx, entry("s", 1, time.Now())); err != nil {
		t.Fatal(err)
	}
	if n := rdb.XLen(ctx, l.SubjectStream("s")).Val(); n != 1 {
		t.Fatalf("subject stream has %d entries", n)
	}
	if n := rdb.XLen(ctx, l.systemStream()).Val(); n != 0 {
		t.Fatalf("system stream has %d entries: a practitioner's entry is written once, in their stream", n)
	}
	if err := l.Append(ctx, entry("", 2, time.Now())); err != nil {
		t.Fatal(err)
	}
	if n := rdb.XLen(ctx, l.systemStream()).Val(); n != 1 {
		t.Fatalf("system stream has %d entries", n)
	}
	if n := rdb.XLen(ctx, l.SubjectStream("")).Val(); n != 0 {
		t.Fatalf("empty subject got a stream of %d entries", n)
	}
}

// A go-redis retry of the same EVAL (same operation key) writes once.
func TestAppendScriptOpIDOnce(t *testing.T) {
	ctx := context.Background()
	l, rdb := newLog(t, time.Hour)
	e := entry("s", 1, time.Now())
	ej, minID, ttl := l.ScriptArgs(e)
	keys := []string{l.SubjectStream("s"), l.subjectOpKey("s", "op-1")}
	first, err := appendScript.Run(ctx, rdb, keys, ej, minID, opTTL.Milliseconds(), ttl).Text()
	if err != nil || first == "" {
		t.Fatalf("first: %q %v", first, err)
	}
	if res, err := appendScript.Run(ctx, rdb, keys, ej, minID, opTTL.Milliseconds(), ttl).Text(); err != nil || res != "dup" {
		t.Fatalf("retry: %q, %v; want dup (not written, and not an error)", res, err)
	}
	if n := rdb.XLen(ctx, keys[0]).Val(); n != 1 {
		t.Fatalf("stream has %d entries after a retry", n)
	}
	if d := rdb.PTTL(ctx, keys[1]).Val(); d <= 0 || d > opTTL {
		t.Fatalf("op key TTL %v", d)
	}
	// Another operation id writes again.
	if err := appendScript.Run(ctx, rdb, []string{keys[0], l.subjectOpKey("s", "op-2")}, ej, minID, opTTL.Milliseconds(), ttl).Err(); err != nil {
		t.Fatal(err)
	}
	if n := rdb.XLen(ctx, keys[0]).Val(); n != 2 {
		t.Fatalf("stream has %d entries", n)
	}
	// Each Append has its own operation id: equal entries are both written.
	if err := l.Append(ctx, e); err != nil {
		t.Fatal(err)
	}
	if err := l.Append(ctx, e); err != nil {
		t.Fatal(err)
	}
	if n := rdb.XLen(ctx, keys[0]).Val(); n != 4 {
		t.Fatalf("stream has %d entries", n)
	}
}

func TestSubjectStreamExpire(t *testing.T) {
	ctx := context.Background()
	l, rdb := newLog(t, 90*time.Second)
	if err := l.Append(ctx, entry("s", 1, time.Now())); err != nil {
		t.Fatal(err)
	}
	if d := rdb.TTL(ctx, l.SubjectStream("s")).Val(); d <= 80*time.Second || d > 90*time.Second {
		t.Fatalf("subject stream TTL %v, want the retention (90 s)", d)
	}
	if err := l.Append(ctx, entry("", 2, time.Now())); err != nil {
		t.Fatal(err)
	}
	if d := rdb.TTL(ctx, l.systemStream()).Val(); d != -1 {
		t.Fatalf("system stream TTL %v, want none (trimmed by MINID)", d)
	}
	// A later append renews the TTL.
	if err := rdb.Expire(ctx, l.SubjectStream("s"), 10*time.Second).Err(); err != nil {
		t.Fatal(err)
	}
	if err := l.Append(ctx, entry("s", 2, time.Now())); err != nil {
		t.Fatal(err)
	}
	if d := rdb.TTL(ctx, l.SubjectStream("s")).Val(); d <= 80*time.Second {
		t.Fatalf("TTL not renewed: %v", d)
	}
	// ScriptArgs gives AppendLua the same TTL and the MINID of the retention.
	at := time.UnixMilli(1_700_000_000_000)
	ej, minID, ttl := l.ScriptArgs(entry("s", 3, at))
	if ttl != 90 || minID != fmt.Sprint(at.Add(-90*time.Second).UnixMilli()) || !strings.Contains(ej, `"subject":"s"`) {
		t.Fatalf("ScriptArgs = %s %s %d", ej, minID, ttl)
	}
}

// AppendLua, as domain scripts use it, writes and sets the TTL.
func TestAppendLua(t *testing.T) {
	ctx := context.Background()
	l, rdb := newLog(t, time.Minute)
	script := redis.NewScript(AppendLua + `audit_append(KEYS[1], ARGV[1], ARGV[2], ARGV[3]) return 1`)
	ej, minID, ttl := l.ScriptArgs(entry("s", 7, time.Now()))
	if err := script.Run(ctx, rdb, []string{l.SubjectStream("s")}, ej, minID, ttl).Err(); err != nil {
		t.Fatal(err)
	}
	entries, _, err := l.List(ctx, "s", "", 10)
	if err != nil || len(entries) != 1 || nth(t, entries[0]) != 7 {
		t.Fatalf("%v %v", entries, err)
	}
	if d := rdb.TTL(ctx, l.SubjectStream("s")).Val(); d <= 50*time.Second || d > time.Minute {
		t.Fatalf("TTL %v", d)
	}
}

// Retention. XADD's MINID comes from the entry's Time minus the retention,
// while stream IDs are the server's clock at the XADD. What is asserted:
//
//   - an entry with a Time in the past (now-1h) trims nothing: its MINID is
//     older than every ID;
//   - MINID is approximate ("~"): Redis drops only whole macro nodes (at most
//     100 entries / 4 KiB each), never part of one, and never the node being
//     appended to. So the tests write enough old entries to fill whole nodes
//     and assert that a later append drops at least one full node of the old
//     entries, keeps every entry within the retention, and keeps the newest.
func TestRetentionPastTimeTrimsNothing(t *testing.T) {
	ctx := context.Background()
	l, rdb := newLog(t, 2*time.Second)
	old := time.Now().Add(-time.Hour)
	for i := 0; i < 250; i++ {
		if err := l.Append(ctx, entry("s", i, old)); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Append(ctx, entry("s", 250, time.Now())); err != nil {
		t.Fatal(err)
	}
	if n := rdb.XLen(ctx, l.SubjectStream("s")).Val(); n != 251 {
		t.Fatalf("XLEN %d, want 251: an old Time must not trim entries written just now", n)
	}
}

// Trimming as time passes, on the system stream (the subject stream would
// expire as a whole after the retention with no append in between). Entry
// times are whole seconds in production (Time.Truncate(time.Second)), so the
// MINID may lag the clock by up to 1 s more than the retention: the test
// waits retention + 1 s + margin.
func TestRetentionTrimsSystemStream(t *testing.T) {
	ctx := context.Background()
	l, rdb := newLog(t, time.Second)
	const old = 250
	for i := 0; i < old; i++ {
		if err := l.Append(ctx, entry("", i, time.Now())); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(2100 * time.Millisecond)
	if err := l.Append(ctx, entry("", old, time.Now())); err != nil {
		t.Fatal(err)
	}
	n := rdb.XLen(ctx, l.systemStream()).Val()
	if n > old+1-100 {
		t.Fatalf("XLEN %d after the retention: no whole node of old entries was trimmed", n)
	}
	last := rdb.XRevRangeN(ctx, l.systemStream(), "+", "-", 1).Val()
	if len(last) != 1 || !strings.Contains(last[0].Values["e"].(string), fmt.Sprintf(`"n":%d`, old)) {
		t.Fatalf("newest entry lost: %v", last)
	}
	t.Logf("XLEN %d of %d after the retention (approximate trim)", n, old+1)
}

// Trimming follows the entry's Time, not the server's clock: after 1.2 s an
// entry stamped now (MINID now-2s) trims nothing, one stamped now+1.5s (MINID
// now-0.5s) trims the old entries' whole nodes and keeps itself.
func TestRetentionUsesEntryTime(t *testing.T) {
	ctx := context.Background()
	l, rdb := newLog(t, 2*time.Second)
	const old = 250
	for i := 0; i < old; i++ {
		e := entry("s", i, time.Now())
		e.Time = time.Now() // not truncated: exact MINIDs
		if err := l.Append(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(1200 * time.Millisecond)
	e := entry("s", old, time.Now())
	e.Time = time.Now()
	if err := l.Append(ctx, e); err != nil {
		t.Fatal(err)
	}
	if n := rdb.XLen(ctx, l.SubjectStream("s")).Val(); n != old+1 {
		t.Fatalf("subject XLEN %d, want %d: nothing is older than the retention yet", n, old+1)
	}
	e = entry("s", old+1, time.Now())
	e.Time = time.Now().Add(1500 * time.Millisecond)
	if err := l.Append(ctx, e); err != nil {
		t.Fatal(err)
	}
	if n := rdb.XLen(ctx, l.SubjectStream("s")).Val(); n > old+2-100 {
		t.Fatalf("subject XLEN %d: MINID from the entry's Time trimmed no whole node", n)
	}
	entries, _, err := l.List(ctx, "s", "", 2)
	if err != nil || len(entries) != 2 || nth(t, entries[0]) != old+1 || nth(t, entries[1]) != old {
		t.Fatalf("newest entries: %v %v", entries, err)
	}
}
