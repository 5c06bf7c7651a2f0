package api

// A desk session ends when its operator's key is rotated in the config: the
// session holds a fingerprint of the key it was opened with.

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ecps-sante/ecps/audit"
	"github.com/ecps-sante/ecps/challenge"
	"github.com/ecps-sante/ecps/enrollment"
	"github.com/ecps-sante/ecps/token"
)

// newDeskServerWith starts a server on w's Redis and key prefix (so it sees
// w's desk sessions) with the given operators, and returns its plain-HTTP URL.
func newDeskServerWith(t testing.TB, w *webEnv, ops []Operator) string {
	t.Helper()
	reg := prometheus.NewRegistry()
	log := audit.New(w.rdb, w.prefix, 400*24*time.Hour)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	hub := challenge.NewHub(w.rdb, w.prefix, slog.New(slog.NewJSONHandler(io.Discard, nil)))
	go hub.Run(ctx)
	enrol := enrollment.New(w.rdb, log, w.opts)
	srv, err := New(Options{
		Logger:     slog.New(slog.NewJSONHandler(io.Discard, nil)),
		Operators:  ops,
		Registry:   reg,
		Metrics:    NewMetrics(reg),
		Enrollment: enrol,
		Challenges: challenge.New(w.rdb, log, w.pushes, enrol, hub, w.chOpts),
		Audit:      log,
		Ready:      func(ctx context.Context) error { return w.rdb.Ping(ctx).Err() },
		Redis:      w.rdb,
		KeyPrefix:  w.prefix,
	})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(hs.Close)
	return hs.URL
}

func TestDeskSessionEndsWhenOperatorKeyRotated(t *testing.T) {
	w := newWebEnv(t, webOptions{})
	const newKey = "operator-key-rotated-0123456789"
	rotated := newDeskServerWith(t, w, []Operator{{Name: "desk-1", KeySHA256: sum(newKey)}})
	same := newDeskServerWith(t, w, []Operator{{Name: "desk-1", KeySHA256: sum(testOperatorKey)}})
	auditPath := "/api/v1/desk/audit?subject=" + subjectA

	ck, r := signIn(t, w.url(), testOperatorKey, nil)
	r.wantStatus(t, http.StatusSeeOther)
	if ck == nil {
		t.Fatal("no session cookie")
	}
	cookie := map[string]string{"Cookie": ck.Name + "=" + ck.Value}
	key := w.prefix + "{desk:" + token.SHA256Hex(ck.Value) + "}"

	// The key itself is never stored; only its fingerprint.
	h := w.rdb.HGetAll(context.Background(), key).Val()
	ks := sum(testOperatorKey)
	if h["kfp"] != keyFingerprint(ks) || len(h["kfp"]) != 32 {
		t.Fatalf("session hash %v", h)
	}
	for f, v := range h {
		if v == testOperatorKey || v == token.SHA256Hex(testOperatorKey) {
			t.Fatalf("session field %s holds the key", f)
		}
	}

	// Where the operator's key is unchanged, the session works (on any replica).
	do(t, w.url(), "GET", auditPath, nil, cookie).wantStatus(t, http.StatusOK)
	do(t, same, "GET", auditPath, nil, cookie).wantStatus(t, http.StatusOK)

	// Where desk-1 has another key, the old session is unknown, and deleted.
	do(t, rotated, "GET", auditPath, nil, cookie).wantError(t, http.StatusUnauthorized, "invalid_client")
	if w.rdb.Exists(context.Background(), key).Val() != 0 {
		t.Fatal("the rotated-out session was not deleted")
	}
	do(t, w.url(), "GET", auditPath, nil, cookie).wantError(t, http.StatusUnauthorized, "invalid_client")

	// Signed in again on the first server: it works there, still not on the rotated one.
	ck, _ = signIn(t, w.url(), testOperatorKey, nil)
	cookie = map[string]string{"Cookie": ck.Name + "=" + ck.Value}
	do(t, w.url(), "GET", auditPath, nil, cookie).wantStatus(t, http.StatusOK)
	do(t, rotated, "GET", auditPath, nil, cookie).wantError(t, http.StatusUnauthorized, "invalid_client")

	// A session opened with the new key works on the rotated server only.
	ckNew, r := signIn(t, rotated, newKey, nil)
	r.wantStatus(t, http.StatusSeeOther)
	cookieNew := map[string]string{"Cookie": ckNew.Name + "=" + ckNew.Value}
	do(t, rotated, "GET", auditPath, nil, cookieNew).wantStatus(t, http.StatusOK)
}

// Rotation without downtime: while the config lists the old and the new
// key, both sign in; a session lasts while the hash of the key it was opened
// with is listed, so removing the old hash ends only the old key's sessions.
func TestDeskKeyRotationWithTwoHashes(t *testing.T) {
	w := newWebEnv(t, webOptions{})
	const newKey = "operator-key-next-0123456789abcd"
	both := newDeskServerWith(t, w, []Operator{{Name: "desk-1", KeySHA256: sum(testOperatorKey), MoreKeySHA256: [][32]byte{sum(newKey)}}})
	after := newDeskServerWith(t, w, []Operator{{Name: "desk-1", KeySHA256: sum(newKey)}})
	auditPath := "/api/v1/desk/audit?subject=" + subjectA

	// Bearer: both keys work while both hashes are listed.
	for _, k := range []string{testOperatorKey, newKey} {
		do(t, both, "GET", auditPath, nil, map[string]string{"Authorization": "Bearer " + k}).wantStatus(t, http.StatusOK)
	}
	do(t, both, "GET", auditPath, nil, map[string]string{"Authorization": "Bearer nope-0123456789abcdefghij"}).
		wantError(t, http.StatusUnauthorized, "invalid_client")

	ckOld, r := signIn(t, both, testOperatorKey, nil)
	r.wantStatus(t, http.StatusSeeOther)
	ckNew, r := signIn(t, both, newKey, nil)
	r.wantStatus(t, http.StatusSeeOther)
	old := map[string]string{"Cookie": ckOld.Name + "=" + ckOld.Value}
	cur := map[string]string{"Cookie": ckNew.Name + "=" + ckNew.Value}
	do(t, both, "GET", auditPath, nil, old).wantStatus(t, http.StatusOK)
	do(t, both, "GET", auditPath, nil, cur).wantStatus(t, http.StatusOK)
	// The replica still on the old config (one hash) keeps the old key's session.
	do(t, w.url(), "GET", auditPath, nil, old).wantStatus(t, http.StatusOK)

	// Once the old hash is gone: the new key's session goes on, the old one ends.
	do(t, after, "GET", auditPath, nil, cur).wantStatus(t, http.StatusOK)
	do(t, after, "GET", auditPath, nil, old).wantError(t, http.StatusUnauthorized, "invalid_client")
	do(t, after, "GET", auditPath, nil, map[string]string{"Authorization": "Bearer " + testOperatorKey}).
		wantError(t, http.StatusUnauthorized, "invalid_client")
}
