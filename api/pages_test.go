package api

// Tests of the HTML pages over plain HTTP: security headers, the login
// page's states, languages, assets, and the desk's session cookie, CSRF and
// origin checks. pages_browser_test.go drives the same pages in Chromium.

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ecps-sante/ecps/audit"
	"github.com/ecps-sante/ecps/challenge"
	"github.com/ecps-sante/ecps/directory"
	"github.com/ecps-sante/ecps/enrollment"
	"github.com/ecps-sante/ecps/token"
)

// webEnv is an env whose one replica also serves the pages with desk
// sessions in the test's Redis, on a clock that follows real time (a
// browser's timers are real). The replica answers on plain HTTP (e.url(),
// for the IdP's and the phone's calls) and on HTTPS (tls, for the browser:
// __Host- cookies need a secure origin).
type webEnv struct {
	*env
	srv     *Server
	tls     *httptest.Server
	idpSite *httptest.Server // the IdP's redirect_uri target
	landed  chan *url.URL    // requests that reached the IdP's redirect_uri
	lag     *atomic.Int64    // how far behind real time the clock is (ns)
}

type webOptions struct {
	dev        bool
	qrRotation time.Duration // 0: the default 25 s
	qrTTL      time.Duration // 0: the default 30 s
	proxies    []string      // trusted proxies (X-Forwarded-For)
	// client replaces the one IdP client "idp", "Hôpital Nord <DPI>", when
	// its ID is set (its redirect URIs get the test's IdP site added).
	client Client
	// operator names the desk operator of testOperatorKey ("" : desk-1).
	operator string
	// directory, when set, is an activity file in the published format,
	// imported into a directory that the service uses as ecpsd does
	// (activations, logins, the desk's lookups). "": no directory.
	directory string
}

func newWebEnv(t testing.TB, wo webOptions) *webEnv {
	t.Helper()
	rdb, prefix := redisClient(t)
	var dir *directory.Store
	if wo.directory != "" {
		dir = importDirectory(t, rdb, prefix, wo.directory)
	}
	e := newEnvWith(t, rdb, prefix, 0, func(eo *enrollment.Options, o *challenge.Options) {
		o.QRTokenTTL, o.QRRotation = wo.qrTTL, wo.qrRotation
		if dir != nil {
			eo.Directory, o.Identities = dir, dir
		}
	})
	if dir != nil {
		e.dir = dir
	}
	// Follow real time (minus lag).
	lag := new(atomic.Int64)
	stop := make(chan struct{})
	done := make(chan struct{})
	e.clock.Set(time.Now())
	go func() {
		defer close(done)
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				e.clock.Set(time.Now().Add(-time.Duration(lag.Load())))
			}
		}
	}()
	t.Cleanup(func() { close(stop); <-done })

	w := &webEnv{env: e, landed: make(chan *url.URL, 10), lag: lag}
	w.idpSite = httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/cb" {
			select {
			case w.landed <- r.URL:
			default:
			}
		}
		rw.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = io.WriteString(rw, `<!doctype html><title>IdP</title><p id="landed">back at the IdP</p>`)
	}))
	t.Cleanup(w.idpSite.Close)

	reg := prometheus.NewRegistry()
	metrics := NewMetrics(reg)
	log := audit.New(rdb, prefix, 400*24*time.Hour)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	hub := challenge.NewHub(rdb, prefix, slog.New(slog.NewJSONHandler(io.Discard, nil)))
	go hub.Run(ctx)
	enrol := enrollment.New(rdb, log, e.opts)
	client := Client{ID: "idp", Name: "Hôpital Nord <DPI>", SecretSHA256: sum(testClientSecret),
		Scopes: []string{"authentication"}, RedirectURIs: []string{"https://idp.test/cb"}}
	if wo.client.ID != "" {
		client = wo.client
	}
	client.RedirectURIs = append(client.RedirectURIs, w.idpSite.URL+"/cb")
	operator := "desk-1"
	if wo.operator != "" {
		operator = wo.operator
	}
	opts := Options{
		Logger:         slog.New(slog.NewJSONHandler(io.Discard, nil)),
		Clients:        []Client{client},
		Operators:      []Operator{{Name: operator, KeySHA256: sum(testOperatorKey)}, {Name: "desk-2", KeySHA256: sum(testOperatorKeyTwo)}},
		Registry:       reg,
		Metrics:        metrics,
		Enrollment:     enrol,
		Challenges:     challenge.New(rdb, log, e.pushes, enrol, hub, e.chOpts),
		Audit:          log,
		Ready:          func(ctx context.Context) error { return rdb.Ping(ctx).Err() },
		Dev:            wo.dev,
		TrustedProxies: wo.proxies,
		Redis:          rdb,
		KeyPrefix:      prefix,
	}
	if dir != nil {
		opts.Directory = dir
	}
	srv, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	plain := httptest.NewServer(srv.Handler())
	t.Cleanup(plain.Close)
	w.tls = httptest.NewTLSServer(srv.Handler())
	t.Cleanup(w.tls.Close)
	e.replicas = []*replica{{hub: hub, srv: srv, http: plain, metrics: metrics, reg: reg}}
	w.srv = srv
	return w
}

// qrLogin creates a QR login and returns it with its login_id.
func (w *webEnv) qrLogin(redirectURI string) (created, string) {
	w.t.Helper()
	body := map[string]any{"binding_message": "Dossier patient"}
	if redirectURI != "" {
		body["redirect_uri"] = redirectURI
	}
	c := w.createAuth(body)
	return c, c.LoginURL[strings.LastIndex(c.LoginURL, "/")+1:]
}

// wantHTMLHeaders checks the contract's headers of every HTML page.
func wantHTMLHeaders(t testing.TB, r response) {
	t.Helper()
	h := r.Header
	if ct := h.Get("Content-Type"); ct != "text/html; charset=utf-8" {
		t.Errorf("Content-Type = %q", ct)
	}
	for k, want := range map[string]string{"X-Frame-Options": "DENY", "Referrer-Policy": "no-referrer",
		"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"} {
		if got := h.Get(k); got != want {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}
	csp := h.Get("Content-Security-Policy")
	for _, d := range []string{"script-src 'self'", "style-src 'self'", "object-src 'none'", "base-uri 'none'",
		"frame-ancestors 'none'", "default-src 'none'"} {
		if !strings.Contains(csp, d) {
			t.Errorf("CSP %q lacks %q", csp, d)
		}
	}
	if strings.Contains(csp, "unsafe") || strings.Contains(csp, "*") {
		t.Errorf("CSP %q allows unsafe sources", csp)
	}
	// No inline script or style that the CSP would have to allow.
	body := string(r.Body)
	for _, re := range []*regexp.Regexp{regexp.MustCompile(`<script(?:\s[^>]*)?>[^<]`), regexp.MustCompile(`<style`),
		regexp.MustCompile(`\sstyle=`), regexp.MustCompile(`\son[a-z]+=`)} {
		for _, m := range re.FindAllStringIndex(body, -1) {
			frag := body[m[0]:min(len(body), m[1]+40)]
			if strings.HasPrefix(frag, `<script type="application/json"`) {
				continue // data, not code
			}
			t.Errorf("inline code in the page: %q", frag)
		}
	}
}

func page(t testing.TB, base, path, lang string) response {
	t.Helper()
	h := map[string]string{"Accept": "text/html"}
	if lang != "" {
		h["Accept-Language"] = lang
	}
	return do(t, base, "GET", path, nil, h)
}

func TestLoginPage(t *testing.T) {
	w := newWebEnv(t, webOptions{})
	c, loginID := w.qrLogin("https://idp.test/cb")
	r := page(t, w.url(), "/login/"+loginID, "")
	r.wantStatus(t, http.StatusOK)
	wantHTMLHeaders(t, r)
	body := string(r.Body)
	for _, want := range []string{
		`<html lang="fr">`,
		`Hôpital Nord &lt;DPI&gt;`, // escaped
		`id="number" aria-describedby="number-label number-hint">` + c.VerificationNumber + `</p>`,
		`<img class="qr" id="qr" src="/login/` + loginID + `/qr.png?n=0"`,
		`alt="QR code de connexion`,
		`data-qr-expires-at="20`,
		`data-redirect-uri="https://idp.test/cb"`,
		`<script src="/assets/login.js?v=`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("page lacks %q", want)
		}
	}
	if r.Header.Get("Content-Language") != "fr" {
		t.Errorf("Content-Language %q", r.Header.Get("Content-Language"))
	}
	en := page(t, w.url(), "/login/"+loginID, "en-GB,en;q=0.9,fr;q=0.5")
	if !strings.Contains(string(en.Body), `<html lang="en">`) || !strings.Contains(string(en.Body), "Sign-in requested by") {
		t.Errorf("English page: %s", en.Body)
	}

	// Claimed: no QR code any more.
	p := w.newDevice(subjectA)
	tok := w.qrToken(loginID)
	cr := w.call(w.url(), p, "POST", "/api/v1/device/challenges/claim", jsonBody(t, map[string]string{"qr_token": tok}))
	cr.wantStatus(t, http.StatusOK)
	r = page(t, w.url(), "/login/"+loginID, "")
	r.wantStatus(t, http.StatusOK)
	if !strings.Contains(string(r.Body), `id="qr-box" hidden`) || !strings.Contains(string(r.Body), "QR code scanné") {
		t.Errorf("claimed page: %s", r.Body)
	}

	// Ended: a 410 page that leads back to the service.
	ch := cr.json(t)
	w.respond(0, p, ch["challenge_id"].(string), p.decision(t, w.clock.Now(), ch, "approve", c.VerificationNumber)).wantStatus(t, http.StatusNoContent)
	r = page(t, w.url(), "/login/"+loginID, "")
	r.wantStatus(t, http.StatusGone)
	wantHTMLHeaders(t, r)
	cont := "https://idp.test/cb?login_id=" + url.QueryEscape(loginID) + "&amp;status=approved"
	if !strings.Contains(string(r.Body), "Connexion approuvée") || !strings.Contains(string(r.Body), `href="`+cont+`"`) {
		t.Errorf("ended page: %s", r.Body)
	}
}

func TestLoginPageEndedWithoutRedirect(t *testing.T) {
	w := newWebEnv(t, webOptions{})
	c, loginID := w.qrLogin("")
	w.idp(0, "DELETE", "/api/v1/authentications/"+c.AuthReqID, nil).wantStatus(t, http.StatusNoContent)
	r := page(t, w.url(), "/login/"+loginID, "en")
	r.wantStatus(t, http.StatusGone)
	wantHTMLHeaders(t, r)
	if !strings.Contains(string(r.Body), "Request cancelled") || strings.Contains(string(r.Body), `id="continue"`) {
		t.Errorf("cancelled page: %s", r.Body)
	}
}

func TestLoginPageUnknownIs404HTML(t *testing.T) {
	w := newWebEnv(t, webOptions{})
	for _, id := range []string{"AAAAAAAAAAAAAAAA.AAAAAAAAAAAAAAAAAAAAAA", "nope", "<script>"} {
		r := page(t, w.url(), "/login/"+url.PathEscape(id), "")
		r.wantStatus(t, http.StatusNotFound)
		wantHTMLHeaders(t, r)
		if !strings.Contains(string(r.Body), "Demande de connexion introuvable") || strings.Contains(string(r.Body), "<script>") {
			t.Errorf("404 page: %s", r.Body)
		}
	}
	// A push login's id is not a login page either.
	w.newDevice(subjectA)
	c := w.createAuth(map[string]any{"login_hint": subjectA})
	page(t, w.url(), "/login/"+c.AuthReqID, "").wantStatus(t, http.StatusNotFound)
	// Other unknown routes stay JSON.
	do(t, w.url(), "GET", "/desk/nope", nil, nil).wantError(t, http.StatusNotFound, "not_found")
	do(t, w.url(), "POST", "/login/x", nil, nil).wantError(t, http.StatusMethodNotAllowed, "method_not_allowed")
}

// Every path under /login/ that a browser can reach answers the HTML pages:
// an id holding an encoded "/" or markup, or extra segments, is the friendly
// 404 page, with the pages' headers, never the JSON 404 nor one of the page's
// JSON routes (an encoded "/" is part of the id, not a separator).
func TestLoginPathsAreHTML(t *testing.T) {
	w := newWebEnv(t, webOptions{})
	_, loginID := w.qrLogin("")
	for _, path := range []string{
		"/login/%3Cscript%3Ealert(1)%3C%2Fscript%3E",
		"/login/%3Cimg%20src%3Dx%20onerror%3Dalert(1)%3E",
		"/login/a%2Fb",
		"/login/a/b/c",
		"/login/a%2Fstate",
		"/login/" + loginID + "%2Fqr.png",
		"/login/" + loginID + "/state/x",
		"/login/" + loginID + "/",
		"/login/",
		"/login",
		"/login//",
		"/login/%2F",
		"/login/..%2F..%2Fdesk",
	} {
		for _, lang := range []string{"", "en"} {
			r := page(t, w.url(), path, lang)
			if r.Status != http.StatusNotFound {
				t.Errorf("%s: status %d, want 404; body %.200s", path, r.Status, r.Body)
				continue
			}
			wantHTMLHeaders(t, r)
			body := string(r.Body)
			want := "Demande de connexion introuvable"
			if lang == "en" {
				want = "Sign-in request not found"
			}
			if !strings.Contains(body, want) || strings.Contains(body, "<script>alert") || strings.Contains(body, "onerror=") {
				t.Errorf("%s: 404 page %s", path, body)
			}
		}
	}
	// HEAD too; other methods and the script's JSON routes keep their JSON answers.
	if r := do(t, w.url(), "HEAD", "/login/a/b/c", nil, nil); r.Status != http.StatusNotFound || !strings.HasPrefix(r.Header.Get("Content-Type"), "text/html") {
		t.Errorf("HEAD: %d %v", r.Status, r.Header)
	}
	do(t, w.url(), "POST", "/login/a/b/c", nil, nil).wantError(t, http.StatusNotFound, "not_found")
	do(t, w.url(), "GET", "/login/AAAAAAAAAAAAAAAA.AAAAAAAAAAAAAAAAAAAAAA/state", nil, nil).wantError(t, http.StatusNotFound, "not_found")
	do(t, w.url(), "GET", "/loginx", nil, nil).wantError(t, http.StatusNotFound, "not_found")
	// The real page still answers.
	page(t, w.url(), "/login/"+loginID, "").wantStatus(t, http.StatusOK)
}

// Without JavaScript the page reloads when the next QR token becomes the
// current one, or every 10 s once claimed; with it, the script knows the
// current token's end (the qr_expires_at of /state).
func TestLoginPageRefresh(t *testing.T) {
	w := newWebEnv(t, webOptions{qrRotation: 1500 * time.Millisecond})
	_, loginID := w.qrLogin("")
	body := string(page(t, w.url(), "/login/"+loginID, "").Body)
	st := w.qrLoginState(loginID)
	if !strings.Contains(body, `<noscript><meta http-equiv="refresh" content="2"></noscript>`) ||
		!strings.Contains(body, `data-qr-expires-at="`+st["qr_expires_at"].(string)+`"`) {
		t.Errorf("refresh not at the rotation (state %v): %s", st, body)
	}
	w.qrToken(loginID)
	w2 := newWebEnv(t, webOptions{})
	_, loginID = w2.qrLogin("")
	body = string(page(t, w2.url(), "/login/"+loginID, "").Body)
	if !strings.Contains(body, `content="25"`) {
		t.Errorf("refresh not at 25 s: %s", body)
	}
	p := w2.newDevice(subjectA)
	w2.call(w2.url(), p, "POST", "/api/v1/device/challenges/claim", jsonBody(t, map[string]string{"qr_token": w2.qrToken(loginID)})).
		wantStatus(t, http.StatusOK)
	body = string(page(t, w2.url(), "/login/"+loginID, "").Body)
	if !strings.Contains(body, `content="10"`) || !strings.Contains(body, `data-qr-expires-at=""`) {
		t.Errorf("claimed page: %s", body)
	}
}

func TestPickLang(t *testing.T) {
	for header, want := range map[string]string{
		"":                          "fr",
		"fr-FR,fr;q=0.9,en;q=0.8":   "fr",
		"en-US,en;q=0.9,fr;q=0.8":   "en",
		"de-DE,de;q=0.9":            "fr",
		"de,en;q=0.5":               "en",
		"fr;q=0.3,en;q=0.7":         "en",
		"en;q=0,fr;q=0.1":           "fr",
		"EN":                        "en",
		"*":                         "fr",
		"en;q=garbage,fr":           "fr",
		"es, en-GB;q=0.8, fr;q=0.8": "en",
	} {
		if got := pickLang(header); got != want {
			t.Errorf("pickLang(%q) = %s, want %s", header, got, want)
		}
	}
}

func TestCatalogueComplete(t *testing.T) {
	keys := func(m map[string]string) []string {
		var out []string
		for k := range m {
			out = append(out, k)
		}
		sort.Strings(out)
		return out
	}
	fr, en := keys(catalogue["fr"]), keys(catalogue["en"])
	if strings.Join(fr, ",") != strings.Join(en, ",") {
		t.Fatalf("fr and en differ:\nfr %v\nen %v", fr, en)
	}
	for _, ev := range []string{audit.ActivationCreated, audit.ActivationFailed, audit.ActivationDestroyed,
		audit.DeviceEnrolled, audit.DeviceSuspended, audit.DeviceResumed, audit.DeviceRevoked, audit.DevicePushTokenClear,
		challenge.EventCreated, challenge.EventApproved, challenge.EventDenied, challenge.EventCancelled,
		challenge.EventFraud, challenge.EventLimitHit} {
		if catalogue["fr"]["Event_"+ev] == "" {
			t.Errorf("no label for audit event %s", ev)
		}
	}
}

func TestAssets(t *testing.T) {
	w := newWebEnv(t, webOptions{})
	for name, ct := range map[string]string{"app.css": "text/css; charset=utf-8", "login.js": "text/javascript; charset=utf-8",
		"desk.js": "text/javascript; charset=utf-8", "icon.svg": "image/svg+xml"} {
		r := do(t, w.url(), "GET", "/assets/"+name+"?v="+w.srv.web.version, nil, nil)
		r.wantStatus(t, http.StatusOK)
		if r.Header.Get("Content-Type") != ct || r.Header.Get("X-Content-Type-Options") != "nosniff" || len(r.Body) == 0 {
			t.Errorf("%s: headers %v", name, r.Header)
		}
	}
	do(t, w.url(), "GET", "/assets/nope.js", nil, nil).wantError(t, http.StatusNotFound, "not_found")
	// The scripts never write HTML.
	for _, name := range []string{"login.js", "desk.js"} {
		js := string(w.srv.web.assets[name].body)
		for _, bad := range []string{"innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("} {
			if strings.Contains(js, bad) {
				t.Errorf("%s uses %s", name, bad)
			}
		}
	}
}

// ---- desk sessions ----

// signIn posts the operator key and returns the session cookie.
func signIn(t testing.TB, base, key string, header map[string]string) (*http.Cookie, response) {
	t.Helper()
	req, _ := http.NewRequest("POST", base+"/desk/session", strings.NewReader(url.Values{"key": {key}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	for k, v := range header {
		req.Header.Set(k, v)
	}
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	res, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	r := response{Status: res.StatusCode, Header: res.Header, Body: b}
	for _, c := range res.Cookies() {
		return c, r
	}
	return nil, r
}

var csrfMetaRE = regexp.MustCompile(`<meta name="csrf-token" content="([A-Za-z0-9_-]{43})">`)

// deskCSRF loads /desk with the cookie and returns the page's CSRF token.
func deskCSRF(t testing.TB, base string, ck *http.Cookie) string {
	t.Helper()
	r := do(t, base, "GET", "/desk", nil, map[string]string{"Cookie": ck.Name + "=" + ck.Value})
	r.wantStatus(t, http.StatusOK)
	wantHTMLHeaders(t, r)
	m := csrfMetaRE.FindSubmatch(r.Body)
	if m == nil {
		t.Fatalf("no CSRF token in the desk page: %s", r.Body)
	}
	return string(m[1])
}

func TestDeskSignIn(t *testing.T) {
	for _, dev := range []bool{false, true} {
		name := "prod"
		if dev {
			name = "dev"
		}
		t.Run(name, func(t *testing.T) {
			w := newWebEnv(t, webOptions{dev: dev})
			r := page(t, w.url(), "/desk", "")
			r.wantStatus(t, http.StatusOK)
			wantHTMLHeaders(t, r)
			if !strings.Contains(string(r.Body), `<form method="post" action="/desk/session"`) ||
				!strings.Contains(string(r.Body), `<label for="key">`) {
				t.Fatalf("sign-in page: %s", r.Body)
			}

			ck, r := signIn(t, w.url(), "wrong-key", nil)
			r.wantStatus(t, http.StatusUnauthorized)
			if ck != nil || !strings.Contains(string(r.Body), "Clé incorrecte") {
				t.Fatalf("wrong key: cookie %v, body %s", ck, r.Body)
			}
			ck, r = signIn(t, w.url(), testOperatorKey, nil)
			r.wantStatus(t, http.StatusSeeOther)
			if r.Header.Get("Location") != "/desk" || ck == nil {
				t.Fatalf("sign-in: %v %v", r.Header, ck)
			}
			wantName, wantSecure := "__Host-ecps_desk", true
			if dev {
				wantName, wantSecure = "ecps_desk", false
			}
			if ck.Name != wantName || ck.Secure != wantSecure || !ck.HttpOnly || ck.SameSite != http.SameSiteStrictMode ||
				ck.Path != "/" || ck.Domain != "" || len(ck.Value) != 43 {
				t.Fatalf("cookie %+v", ck)
			}
			// Stored under its SHA-256 only, with the idle timeout.
			key := w.prefix + "{desk:" + token.SHA256Hex(ck.Value) + "}"
			ttl := w.rdb.PTTL(context.Background(), key).Val()
			if ttl < 14*time.Minute || ttl > 15*time.Minute {
				t.Fatalf("session TTL %v", ttl)
			}
			keys := w.rdb.Keys(context.Background(), w.prefix+"{desk:*").Val()
			if len(keys) != 1 || strings.Contains(keys[0], ck.Value) {
				t.Fatalf("session keys %v", keys)
			}
			// Signing in again replaces the session.
			again, _ := signIn(t, w.url(), testOperatorKey, map[string]string{"Cookie": ck.Name + "=" + ck.Value})
			if again == nil || again.Value == ck.Value || w.rdb.Exists(context.Background(), key).Val() != 0 {
				t.Fatalf("second sign-in: cookie %v, old session kept", again)
			}
			ck = again
			desk := do(t, w.url(), "GET", "/desk", nil, map[string]string{"Cookie": ck.Name + "=" + ck.Value})
			if !strings.Contains(string(desk.Body), `<span id="operator">desk-1</span>`) {
				t.Fatalf("desk page: %s", desk.Body)
			}
			deskCSRF(t, w.url(), ck)
		})
	}
}

func TestDeskCookieCSRFAndOrigin(t *testing.T) {
	w := newWebEnv(t, webOptions{})
	ck, _ := signIn(t, w.url(), testOperatorKey, nil)
	csrf := deskCSRF(t, w.url(), ck)
	cookie := ck.Name + "=" + ck.Value
	body := jsonBody(t, map[string]string{"subject": subjectA})
	post := func(h map[string]string) response {
		h["Cookie"] = cookie
		return do(t, w.url(), "POST", "/api/v1/desk/activations", body, h)
	}
	u, _ := url.Parse(w.url())
	self := "http://" + u.Host

	do(t, w.url(), "GET", "/api/v1/desk/practitioners/"+subjectA+"/devices", nil, map[string]string{"Cookie": cookie}).wantStatus(t, http.StatusOK)
	post(map[string]string{}).wantError(t, http.StatusForbidden, "forbidden")
	post(map[string]string{"X-CSRF-Token": "x" + csrf[1:]}).wantError(t, http.StatusForbidden, "forbidden")
	post(map[string]string{"X-CSRF-Token": csrf, "Origin": "https://evil.example"}).wantError(t, http.StatusForbidden, "forbidden")
	post(map[string]string{"X-CSRF-Token": csrf, "Sec-Fetch-Site": "cross-site"}).wantError(t, http.StatusForbidden, "forbidden")
	post(map[string]string{"X-CSRF-Token": csrf, "Sec-Fetch-Site": "same-site", "Origin": "http://127.0.0.1:1"}).wantError(t, http.StatusForbidden, "forbidden")
	// Another session's token is not this one's.
	ck2, _ := signIn(t, w.url(), testOperatorKeyTwo, nil)
	post(map[string]string{"X-CSRF-Token": deskCSRF(t, w.url(), ck2)}).wantError(t, http.StatusForbidden, "forbidden")
	if n := countOf(w.auditEvents(subjectA), "activation.created"); n != 0 {
		t.Fatalf("a refused request created %d activations", n)
	}

	post(map[string]string{"X-CSRF-Token": csrf, "Origin": self, "Sec-Fetch-Site": "same-origin"}).wantStatus(t, http.StatusCreated)
	// DELETE needs it too.
	p := w.newDevice(subjectA)
	do(t, w.url(), "DELETE", "/api/v1/desk/devices/"+p.deviceID, nil, map[string]string{"Cookie": cookie}).wantError(t, http.StatusForbidden, "forbidden")
	do(t, w.url(), "DELETE", "/api/v1/desk/devices/"+p.deviceID, nil, map[string]string{"Cookie": cookie, "X-CSRF-Token": csrf}).wantStatus(t, http.StatusNoContent)

	// Audited with the session's operator.
	_, raw := deskAllAudit(t, w.env, subjectA)
	if !strings.Contains(string(raw), `"event":"activation.created","subject":"`+subjectA+`","actor":{"type":"operator","id":"desk-1"}`) ||
		!strings.Contains(string(raw), `"event":"device.revoked","subject":"`+subjectA+`","actor":{"type":"operator","id":"desk-1"}`) {
		t.Fatalf("audit %s", raw)
	}

	// Bearer works as before, whatever cookie comes with it.
	do(t, w.url(), "POST", "/api/v1/desk/activations", body, map[string]string{"Authorization": "Bearer " + testOperatorKey, "Cookie": "__Host-ecps_desk=junk"}).
		wantStatus(t, http.StatusCreated)
	do(t, w.url(), "POST", "/api/v1/desk/activations", body, map[string]string{"Authorization": "Bearer wrong", "Cookie": cookie, "X-CSRF-Token": csrf}).
		wantError(t, http.StatusUnauthorized, "invalid_client")
	// A made-up cookie is no session.
	do(t, w.url(), "GET", "/api/v1/desk/practitioners/"+subjectA+"/devices", nil, map[string]string{"Cookie": ck.Name + "=" + token.New(32)}).
		wantError(t, http.StatusUnauthorized, "invalid_client")
}

func TestDeskSignInCrossSiteRefused(t *testing.T) {
	w := newWebEnv(t, webOptions{})
	ck, r := signIn(t, w.url(), testOperatorKey, map[string]string{"Origin": "https://evil.example"})
	r.wantStatus(t, http.StatusForbidden)
	wantHTMLHeaders(t, r)
	if ck != nil {
		t.Fatalf("cookie set for a cross-site sign-in: %v", ck)
	}
	_, r = signIn(t, w.url(), testOperatorKey, map[string]string{"Sec-Fetch-Site": "cross-site"})
	r.wantStatus(t, http.StatusForbidden)
}

func TestDeskSignOut(t *testing.T) {
	w := newWebEnv(t, webOptions{})
	ck, _ := signIn(t, w.url(), testOperatorKey, nil)
	csrf := deskCSRF(t, w.url(), ck)
	cookie := ck.Name + "=" + ck.Value
	signOut := func(field string) response {
		form := url.Values{"csrf_token": {field}}.Encode()
		req, _ := http.NewRequest("POST", w.url()+"/desk/signout", strings.NewReader(form))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Cookie", cookie)
		client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		res, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return response{Status: res.StatusCode, Header: res.Header, Body: b}
	}
	signOut("").wantStatus(t, http.StatusForbidden)
	signOut("wrong").wantStatus(t, http.StatusForbidden)
	r := signOut(csrf)
	r.wantStatus(t, http.StatusSeeOther)
	if sc := r.Header.Get("Set-Cookie"); !strings.HasPrefix(sc, ck.Name+"=;") || !strings.Contains(sc, "Max-Age=0") {
		t.Fatalf("cookie not cleared: %q", sc)
	}
	do(t, w.url(), "GET", "/api/v1/desk/practitioners/"+subjectA+"/devices", nil, map[string]string{"Cookie": cookie}).
		wantError(t, http.StatusUnauthorized, "invalid_client")
	if n := len(w.rdb.Keys(context.Background(), w.prefix+"*desk*").Val()); n != 0 {
		t.Fatalf("%d session keys left", n)
	}
}

func TestDeskSessionExpiry(t *testing.T) {
	w := newWebEnv(t, webOptions{})
	ctx := context.Background()
	devices := "/api/v1/desk/practitioners/" + subjectA + "/devices"

	// Idle: the key's TTL ran out.
	ck, _ := signIn(t, w.url(), testOperatorKey, nil)
	cookie := map[string]string{"Cookie": ck.Name + "=" + ck.Value}
	key := w.prefix + "{desk:" + token.SHA256Hex(ck.Value) + "}"
	w.rdb.PExpire(ctx, key, 10*time.Minute)
	do(t, w.url(), "GET", devices, nil, cookie).wantStatus(t, http.StatusOK)
	if ttl := w.rdb.PTTL(ctx, key).Val(); ttl < 14*time.Minute {
		t.Fatalf("a request did not restart the idle timer: %v", ttl)
	}
	w.rdb.Del(ctx, key)
	do(t, w.url(), "GET", devices, nil, cookie).wantError(t, http.StatusUnauthorized, "invalid_client")
	r := do(t, w.url(), "GET", "/desk", nil, cookie)
	r.wantStatus(t, http.StatusOK)
	if !strings.Contains(string(r.Body), "Votre session a expiré") || !strings.Contains(r.Header.Get("Set-Cookie"), "Max-Age=0") {
		t.Fatalf("expired session page: %v %s", r.Header, r.Body)
	}

	// Too old, however active.
	ck, _ = signIn(t, w.url(), testOperatorKey, nil)
	key = w.prefix + "{desk:" + token.SHA256Hex(ck.Value) + "}"
	w.rdb.HSet(ctx, key, "created_ms", time.Now().Add(-13*time.Hour).UnixMilli())
	do(t, w.url(), "GET", devices, nil, map[string]string{"Cookie": ck.Name + "=" + ck.Value}).wantError(t, http.StatusUnauthorized, "invalid_client")
}
