package challenge

import (
	"context"
	"testing"
	"time"

	"github.com/ecps-sante/ecps/redistest"
)

// TestAfterDecisionKeepsTheHashsTTL: an approval refreshes the
// practitioner's hash's TTL only when it finds no field to remove (the
// hash was not there: it must not be left without a TTL); a denial always
// does (its counter lives 24 h).
func TestAfterDecisionKeepsTheHashsTTL(t *testing.T) {
	rdb, prefix := redistest.Client(t)
	ctx := context.Background()
	k := keys{prefix: prefix}
	stream := prefix + "{sub:810000000001}:audit"
	now := time.Now().UnixMilli()
	keep := (25 * time.Hour).Milliseconds()
	run := func(logins, chl, status, reason string) string {
		t.Helper()
		res, err := afterDecisionScript.Run(ctx, rdb, []string{logins, stream}, chl, status, reason, 5, 60000,
			`{"event":"x"}`, "", "0", 3600, now+600000, now, keep).Text()
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	pttl := func(key string) time.Duration {
		t.Helper()
		d, err := rdb.PTTL(ctx, key).Result()
		if err != nil {
			t.Fatal(err)
		}
		return d
	}

	// Recorded when created, with its TTL: an approval leaves the TTL.
	logins := k.logins("810000000001")
	rdb.HSet(ctx, logins, "p:chl_a", "1|{}", "w:chl_a", "1")
	rdb.PExpire(ctx, logins, time.Hour)
	if got := run(logins, "chl_a", "approved", ""); got != "ok" {
		t.Fatalf("approve: %q", got)
	}
	if d := pttl(logins); d <= 0 || d > time.Hour {
		t.Fatalf("TTL after the approval %v, want the hour it had", d)
	}
	if got := run(logins, "chl_a", "approved", ""); got != "again" {
		t.Fatalf("approve again: %q", got)
	}

	// Not there (its record lost): the approval gives the hash its TTL.
	lost := k.logins("810000000002")
	if got := run(lost, "chl_b", "approved", ""); got != "ok" {
		t.Fatalf("approve: %q", got)
	}
	if d := pttl(lost); d <= time.Hour {
		t.Fatalf("TTL of a hash the approval made: %v, want the keep (25 h)", d)
	}

	// A denial refreshes it: its counter lives 24 h.
	if got := run(logins, "chl_c", "denied", "denied"); got != "ok" {
		t.Fatalf("deny: %q", got)
	}
	if d := pttl(logins); d <= time.Hour {
		t.Fatalf("TTL after a denial %v, want the keep (25 h)", d)
	}
}
