package api

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/ecps-sante/ecps/ratelimit"
)

// Desk sign-ins are limited per client address: 10 failures a minute, then
// 429 with Retry-After (the form says when to try again), even with the
// right key; the block is audited once (limit.hit, never the key) and
// counted; other addresses are not affected; the sign-in works again once
// the oldest failure leaves the minute.
func TestDeskSignInThrottled(t *testing.T) {
	w := newWebEnv(t, webOptions{proxies: []string{"127.0.0.1"}})
	var (
		mu  sync.Mutex
		now = time.Now()
	)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	w.srv.web.signins = ratelimit.NewFailures(w.rdb, w.prefix, "desk-signin", ratelimit.FailuresOptions{Now: clock})
	from := func(addr string) map[string]string { return map[string]string{"X-Forwarded-For": addr} }
	const wrong = "wrong-key-0123456789abcdef-guess"

	for i := range 10 {
		if i > 0 {
			advance(time.Second)
		}
		ck, r := signIn(t, w.url(), wrong, from("203.0.113.7"))
		if r.Status != http.StatusUnauthorized || ck != nil || !strings.Contains(string(r.Body), "Clé incorrecte") {
			t.Fatalf("failure %d: %d %s", i+1, r.Status, r.Body)
		}
	}
	// The 11th try, even with the right key: refused until the first
	// failure leaves the minute (51 s from now).
	ck, r := signIn(t, w.url(), testOperatorKey, from("203.0.113.7"))
	r.wantStatus(t, http.StatusTooManyRequests)
	wantHTMLHeaders(t, r)
	if ck != nil || r.Header.Get("Retry-After") != "51" {
		t.Fatalf("refusal: cookie %v, Retry-After %q", ck, r.Header.Get("Retry-After"))
	}
	body := string(r.Body)
	if !strings.Contains(body, "Trop de tentatives de connexion échouées") || !strings.Contains(body, "Réessayez dans 51 s.") ||
		!strings.Contains(body, `<form method="post" action="/desk/session"`) || !strings.Contains(body, `role="alert"`) {
		t.Fatalf("refusal page: %s", body)
	}
	en := map[string]string{"X-Forwarded-For": "203.0.113.7", "Accept-Language": "en"}
	if _, r := signIn(t, w.url(), wrong, en); r.Status != http.StatusTooManyRequests || !strings.Contains(string(r.Body), "Try again in 51 s.") {
		t.Fatalf("English refusal: %d %s", r.Status, r.Body)
	}
	// A client asking for JSON gets the contract's error.
	r = func() response {
		_, r := signIn(t, w.url(), wrong, map[string]string{"X-Forwarded-For": "203.0.113.7", "Accept": "application/json"})
		return r
	}()
	r.wantError(t, http.StatusTooManyRequests, "too_many_requests")
	if r.Header.Get("Retry-After") != "51" {
		t.Fatalf("JSON Retry-After %q", r.Header.Get("Retry-After"))
	}

	// Another address signs in; an IPv6 client is limited by its /64.
	if ck, r := signIn(t, w.url(), testOperatorKey, from("203.0.113.8")); ck == nil || r.Status != http.StatusSeeOther {
		t.Fatalf("another address: %d", r.Status)
	}
	for i := range 10 {
		_, r := signIn(t, w.url(), wrong, from(fmt.Sprintf("2001:db8:1:2::%x", i+1)))
		r.wantStatus(t, http.StatusUnauthorized)
	}
	_, r = signIn(t, w.url(), testOperatorKey, from("2001:db8:1:2:ffff::1"))
	r.wantStatus(t, http.StatusTooManyRequests)
	if ck, _ := signIn(t, w.url(), testOperatorKey, from("2001:db8:1:3::1")); ck == nil {
		t.Fatal("another /64 refused")
	}

	// Counted, and audited once per address, never with a key.
	if got := testutil.ToFloat64(w.srv.metrics.limitHits.WithLabelValues("desk_signin")); got != 4 {
		t.Errorf("limit hits = %v, want 4", got)
	}
	for result, want := range map[string]float64{"refused": 4, "wrong_key": 20, "ok": 2} {
		if got := testutil.ToFloat64(w.srv.metrics.deskSignIns.WithLabelValues(result)); got != want {
			t.Errorf("desk sign-ins %s = %v, want %v", result, got, want)
		}
	}
	var hits []map[string]any
	waitFor(t, func() bool {
		hits = nil
		msgs, err := w.rdb.XRange(t.Context(), w.prefix+"{audit}:system", "-", "+").Result()
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range msgs {
			s, _ := m.Values["e"].(string)
			if strings.Contains(s, testOperatorKey) || strings.Contains(s, wrong) {
				t.Fatalf("a key in the audit: %s", s)
			}
			var e map[string]any
			if err := json.Unmarshal([]byte(s), &e); err != nil {
				t.Fatal(err)
			}
			if e["event"] == "limit.hit" {
				hits = append(hits, e)
			}
		}
		return len(hits) >= 2
	})
	time.Sleep(100 * time.Millisecond) // no third one comes
	if len(hits) != 2 {
		t.Fatalf("limit.hit entries: %v", hits)
	}
	d := hits[0]["details"].(map[string]any)
	if d["limit"] != "desk_signin" || d["route"] != "POST /desk/session" || d["client_address"] != "203.0.113.7" ||
		d["failures"] != float64(10) || d["window_s"] != float64(60) || hits[0]["actor"].(map[string]any)["type"] != "system" {
		t.Errorf("limit.hit %v", hits[0])
	}
	if d := hits[1]["details"].(map[string]any); d["client_address"] != "2001:db8:1:2::/64" {
		t.Errorf("IPv6 limit.hit %v", hits[1])
	}

	// Once the first failure has left the minute, one more try is allowed.
	advance(51 * time.Second)
	if ck, r := signIn(t, w.url(), testOperatorKey, from("203.0.113.7")); ck == nil || r.Status != http.StatusSeeOther {
		t.Fatalf("after the window: %d %s", r.Status, r.Body)
	}
}

func TestSigninAddress(t *testing.T) {
	for in, want := range map[string]string{
		"203.0.113.7":             "203.0.113.7",
		"::ffff:203.0.113.7":      "203.0.113.7",
		"2001:db8:1:2:3:4:5:6":    "2001:db8:1:2::/64",
		"2001:db8:1:2::1%eth0":    "2001:db8:1:2::/64",
		"::1":                     "::/64",
		"":                        "unknown",
		"not an address":          "unknown",
		"2001:db8:1:2:ffff::abcd": "2001:db8:1:2::/64",
	} {
		if got := signinAddress(in); got != want {
			t.Errorf("signinAddress(%q) = %q, want %q", in, got, want)
		}
	}
}
