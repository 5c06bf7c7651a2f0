package api

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ecps-sante/ecps/ratelimit"
)

// An IdP client over its request rate gets 429 with Retry-After, a metric
// and an audit entry; another client is not affected.
func TestClientRateLimit(t *testing.T) {
	e := newEnv(t, 1)
	now := time.Unix(2_000_000_000, 100*int64(time.Millisecond))
	e.replicas[0].srv.limiter = ratelimit.New(e.rdb, e.prefix, 3, ratelimit.Options{Now: func() time.Time { return now }})
	for i := 0; i < 3; i++ {
		e.idp(0, "POST", "/api/v1/authentications", map[string]any{}).wantStatus(t, http.StatusCreated)
	}
	r := e.idp(0, "POST", "/api/v1/authentications", map[string]any{})
	r.wantError(t, http.StatusTooManyRequests, "too_many_requests")
	if r.Header.Get("Retry-After") != "1" {
		t.Fatalf("Retry-After = %q", r.Header.Get("Retry-After"))
	}
	// Polls count too.
	e.idp(0, "GET", "/api/v1/authentications/AAAAAAAAAAAAAAAA.AAAAAAAAAAAAAAAAAAAAAA", nil).wantError(t, http.StatusTooManyRequests, "too_many_requests")
	do(t, e.url(), "POST", "/api/v1/authentications", jsonBody(t, map[string]any{}), basicAuth("idp-2", testClientSecret2)).
		wantStatus(t, http.StatusCreated)
	if e.metricLimit("client_rps") != 2 {
		t.Fatalf("client_rps hits = %v", e.metricLimit("client_rps"))
	}
	// The audit entry reaches the global stream (written in batches).
	waitFor(t, func() bool {
		msgs, err := e.rdb.XRange(t.Context(), e.prefix+"{audit}:system", "-", "+").Result()
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range msgs {
			if s, _ := m.Values["e"].(string); strings.Contains(s, `"limit.hit"`) && strings.Contains(s, `"client_rps"`) {
				return true
			}
		}
		return false
	})
	// The next second, the client may call again.
	now = now.Add(time.Second)
	e.idp(0, "POST", "/api/v1/authentications", map[string]any{}).wantStatus(t, http.StatusCreated)
}
