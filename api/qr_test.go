package api

import (
	"bytes"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// qrLoginState reads a QR login's /state.
func (e *env) qrLoginState(loginID string) map[string]any {
	e.t.Helper()
	r := do(e.t, e.url(), "GET", "/login/"+loginID+"/state", nil, nil)
	r.wantStatus(e.t, http.StatusOK)
	return r.json(e.t)
}

// qrImage fetches qr.png from replica i.
func (e *env) qrImage(i int, loginID string) []byte {
	e.t.Helper()
	r := do(e.t, e.replicas[i].http.URL, "GET", "/login/"+loginID+"/qr.png", nil, nil)
	r.wantStatus(e.t, http.StatusOK)
	return r.Body
}

// keyState is a Redis key's value (DUMP) and time to live.
type keyState struct {
	dump string
	ttl  time.Duration
}

// redisSnapshot is every key of the test's prefix, to see that a request
// changed nothing.
func (e *env) redisSnapshot() map[string]keyState {
	e.t.Helper()
	ctx := e.t.Context()
	keys, err := e.rdb.Keys(ctx, e.prefix+"*").Result()
	if err != nil {
		e.t.Fatal(err)
	}
	out := map[string]keyState{}
	for _, k := range keys {
		v, err := e.rdb.Dump(ctx, k).Result()
		if err != nil {
			e.t.Fatal(err)
		}
		ttl, err := e.rdb.PTTL(ctx, k).Result()
		if err != nil {
			e.t.Fatal(err)
		}
		out[k] = keyState{dump: v, ttl: ttl}
	}
	return out
}

// wantUnchanged fails unless Redis holds what before held (TTLs only
// running down).
func (e *env) wantUnchanged(before map[string]keyState, what string) {
	e.t.Helper()
	after := e.redisSnapshot()
	for k := range after {
		if _, ok := before[k]; !ok {
			e.t.Fatalf("%s changed Redis: a new key %s", what, k)
		}
	}
	for k, b := range before {
		a := after[k]
		if a.dump != b.dump || a.ttl > b.ttl || b.ttl-a.ttl > 5*time.Second {
			e.t.Fatalf("%s changed %s (ttl %v, then %v)", what, k, b.ttl, a.ttl)
		}
	}
}

// ms is t as Redis keeps it, to the millisecond, in UTC.
func ms(t time.Time) string { return time.UnixMilli(t.UnixMilli()).UTC().Format(time.RFC3339Nano) }

// qr.png is the current QR code, the one the page shows: every read in a
// time slot, on any replica and however many at once, gives the same image
// and changes nothing in Redis; /state's qr_expires_at is that token's end;
// the token rotates every 25 s, each valid 30 s, on the server's clock.
func TestQRImageIsTheCurrentToken(t *testing.T) {
	e := newEnv(t, 2)
	p := e.newDevice(subjectA)
	t0 := e.clock.Now()
	c := e.createAuth(map[string]any{})
	loginID := strings.TrimPrefix(c.LoginURL, "https://ecps.test/login/")
	wantExpires := func(at time.Time) {
		t.Helper()
		st := e.qrLoginState(loginID)
		got, _ := st["qr_expires_at"].(string)
		if want := ms(at); got != want {
			t.Fatalf("qr_expires_at = %q, want %q (%v)", got, want, st)
		}
	}
	// The page's token exists before anyone reads the image.
	wantExpires(t0.Add(30 * time.Second))

	before := e.redisSnapshot()
	first := e.qrImage(0, loginID)
	var wg sync.WaitGroup
	images := make([][]byte, 16)
	for i := range images {
		wg.Add(1)
		go func() {
			defer wg.Done()
			images[i] = e.qrImage(i%2, loginID)
		}()
	}
	wg.Wait()
	for i, img := range images {
		if !bytes.Equal(img, first) {
			t.Fatalf("read %d (replica %d) gave another image", i, i%2)
		}
	}
	html := string(page(t, e.url(), "/login/"+loginID, "").Body)
	e.wantUnchanged(before, "reading the QR code and the page")
	wantExpires(t0.Add(30 * time.Second))
	if want := `data-qr-expires-at="` + ms(t0.Add(30*time.Second)) + `"`; !strings.Contains(html, want) {
		t.Errorf("the page lacks %s", want)
	}
	tok0 := e.qrToken(loginID)

	// Same slot: same token.
	e.clock.Advance(25*time.Second - time.Millisecond)
	if tok := e.qrToken(loginID); tok != tok0 {
		t.Fatal("the token changed within its slot")
	}
	wantExpires(t0.Add(30 * time.Second))
	// The next slot: a new token, valid 30 s from its start; the old one is
	// still valid until its own end.
	e.clock.Advance(time.Millisecond)
	tok1 := e.qrToken(loginID)
	if tok1 == tok0 {
		t.Fatal("the token did not rotate after 25 s")
	}
	wantExpires(t0.Add(55 * time.Second))
	if img := e.qrImage(1, loginID); !bytes.Equal(img, e.qrImage(0, loginID)) {
		t.Fatal("the replicas show different codes")
	}
	e.clock.Advance(5*time.Second - time.Millisecond) // t0 + 30 s - 1 ms: tok0 lives its last ms
	claim := func(tok string) response {
		return e.call(e.url(), p, "POST", "/api/v1/device/challenges/claim", jsonBody(t, map[string]string{"qr_token": tok}))
	}
	claim(tok0).wantStatus(t, http.StatusOK)
	claim(tok0).wantError(t, http.StatusBadRequest, "invalid_grant") // once
	claim(tok1).wantError(t, http.StatusBadRequest, "invalid_grant") // the login is claimed
	do(t, e.url(), "GET", "/login/"+loginID+"/qr.png", nil, nil).wantError(t, http.StatusGone, "gone")

	// Another login: its first token dies at 30 s, the second works then.
	t1 := e.clock.Now()
	c = e.createAuth(map[string]any{})
	loginID = strings.TrimPrefix(c.LoginURL, "https://ecps.test/login/")
	tok0 = e.qrToken(loginID)
	e.clock.Advance(25 * time.Second)
	tok1 = e.qrToken(loginID)
	e.clock.Advance(5 * time.Second)
	claim(tok0).wantError(t, http.StatusBadRequest, "invalid_grant")
	wantExpires(t1.Add(55 * time.Second))
	claim(tok1).wantStatus(t, http.StatusOK)
}

// The last slot's token ends with the login, and an expired login has no QR
// code.
func TestQRTokenEndsWithTheLogin(t *testing.T) {
	e := newEnv(t, 1)
	t0 := e.clock.Now()
	c := e.createAuth(map[string]any{"requested_expiry": 60})
	loginID := strings.TrimPrefix(c.LoginURL, "https://ecps.test/login/")
	e.clock.Advance(50 * time.Second) // slot 2: 50 s .. 80 s, cut at 60 s
	st := e.qrLoginState(loginID)
	if got, want := st["qr_expires_at"], ms(t0.Add(60*time.Second)); got != want {
		t.Fatalf("qr_expires_at = %v, want %s", got, want)
	}
	e.clock.Advance(10 * time.Second)
	if st := e.qrLoginState(loginID); st["status"] != "expired" || st["qr_expires_at"] != nil {
		t.Fatalf("state %v", st)
	}
	do(t, e.url(), "GET", "/login/"+loginID+"/qr.png", nil, nil).wantError(t, http.StatusGone, "gone")
}
