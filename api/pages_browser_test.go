package api

// The login page and the desk in a real browser: headless Chromium (Debian's
// chromium package) driven with chromedp. QR codes are decoded from
// screenshots of the rendered images, never from the page's source. They
// write no file: the README's pictures come from screenshots_test.go (make
// screenshots).

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"image/png"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/emulation"
	cdplog "github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/cdproto/target"
	"github.com/chromedp/chromedp"
	qr "github.com/piglig/go-qr"
)

// chromiumPath is where Debian's chromium package (which make test installs) puts it.
const chromiumPath = "/usr/bin/chromium"

// browser is one headless Chromium with one tab. problems collects the
// page's uncaught exceptions and its console errors (CSP violations among
// them), which every test expects to stay empty.
type browser struct {
	t   testing.TB
	ctx context.Context

	mu       sync.Mutex
	problems []string
}

// newBrowser starts Chromium with a fresh profile. A missing Chromium fails
// the test: make test installs it, and a skipped browser test proves nothing.
func newBrowser(t testing.TB) *browser {
	t.Helper()
	if _, err := os.Stat(chromiumPath); err != nil {
		t.Fatalf("the browser tests need Chromium at %s (Debian: apt-get install chromium; make test installs it as root): %v", chromiumPath, err)
	}
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromiumPath),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		// Without these it reaches for the network and stalls.
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("lang", "fr-FR"), // the pages' default language, as a French desk's browser
		chromedp.Flag("accept-lang", "fr-FR,fr"),
		chromedp.IgnoreCertErrors, // the HTTPS test server's certificate is self-signed
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 800),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelTab := chromedp.NewContext(actx)
	ctx, cancelTime := context.WithTimeout(ctx, 2*time.Minute)
	t.Cleanup(func() { cancelTime(); cancelTab(); cancelAlloc() })
	b := &browser{t: t, ctx: ctx}

	exceptions := chromedp.Events(ctx, runtime.ExceptionThrown)
	entries := chromedp.Events(ctx, cdplog.EntryAdded)
	if _, err := chromedp.Call(ctx, cdplog.Enable, cdp.Empty{}); err != nil {
		t.Fatalf("start Chromium (%s): %v", chromiumPath, err)
	}
	go func() {
		for ev, err := range exceptions {
			if err != nil {
				return
			}
			b.problem("exception: " + ev.ExceptionDetails.Text + " " + exceptionDescription(ev))
		}
	}()
	go func() {
		for ev, err := range entries {
			if err != nil {
				return
			}
			// Failed loads (a 403 the test provokes) are expected; anything
			// else logged as an error is not.
			if ev.Entry.Level == cdplog.EntryLevelError && ev.Entry.Source != cdplog.EntrySourceNetwork {
				b.problem(string(ev.Entry.Source) + ": " + ev.Entry.Text)
			}
		}
	}()
	return b
}

func exceptionDescription(ev runtime.EventExceptionThrown) string {
	if ev.ExceptionDetails.Exception != nil {
		return ev.ExceptionDetails.Exception.Description
	}
	return ""
}

func (b *browser) problem(s string) {
	b.mu.Lock()
	b.problems = append(b.problems, s)
	b.mu.Unlock()
}

// noProblems fails the test on any script error or console error so far,
// except those matching one of allowed.
func (b *browser) noProblems(allowed ...string) {
	b.t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
next:
	for _, p := range b.problems {
		for _, a := range allowed {
			if strings.Contains(p, a) {
				continue next
			}
		}
		b.t.Errorf("browser: %s", p)
	}
}

func (b *browser) do(actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	if err := chromedp.Do(b.ctx, actions...); err != nil {
		b.t.Fatalf("browser: %v", err)
	}
}

func (b *browser) navigate(u string) { b.t.Helper(); b.do(chromedp.Navigate(u)) }

// eval evaluates a JavaScript expression (awaiting a promise) into T.
func eval[T any](b *browser, expr string) T {
	b.t.Helper()
	v, err := chromedp.Run(b.ctx, chromedp.Evaluate[T](expr, chromedp.EvalAwaitPromise))
	if err != nil {
		b.t.Fatalf("evaluate %s: %v", expr, err)
	}
	return v
}

// waitJS waits until a JavaScript expression is true.
func (b *browser) waitJS(what, expr string) {
	b.t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		ok, err := chromedp.Run(b.ctx, chromedp.Evaluate[bool](expr))
		if err == nil && ok {
			return
		}
		if time.Now().After(deadline) {
			loc, _ := chromedp.Run(b.ctx, chromedp.Location())
			body, _ := chromedp.Run(b.ctx, chromedp.Evaluate[string](`document.body ? document.body.innerText : ''`))
			b.t.Fatalf("waited 15 s for %s (%s) at %s: %v\npage text:\n%s", what, expr, loc, err, body)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (b *browser) text(sel string) string {
	b.t.Helper()
	s, err := chromedp.Run(b.ctx, chromedp.TextContent(chromedp.CSS(sel)))
	if err != nil {
		b.t.Fatalf("text of %s: %v", sel, err)
	}
	return strings.TrimSpace(s)
}

func imageLoaded(sel string) string {
	return fmt.Sprintf(`(() => { const i = document.querySelector(%q); return !!i && !i.hidden && i.complete && i.naturalWidth > 0; })()`, sel)
}

// decodeQR screenshots the rendered image sel and decodes its QR code. The
// login page swaps its image for a new one on every rotation: a screenshot
// that loses that race is taken again.
func (b *browser) decodeQR(sel string) string {
	b.t.Helper()
	var err error
	for range 5 {
		b.waitJS("image "+sel, imageLoaded(sel))
		var shot []byte
		shot, err = chromedp.Run(b.ctx, chromedp.Screenshot(chromedp.CSS(sel), chromedp.NodeVisible))
		if err != nil {
			err = fmt.Errorf("screenshot of %s: %w", sel, err)
			time.Sleep(100 * time.Millisecond)
			continue
		}
		img, err := png.Decode(bytes.NewReader(shot))
		if err != nil {
			b.t.Fatal(err)
		}
		text, err := qr.Decode(img)
		if err != nil {
			b.t.Fatalf("decode the QR code of the rendered %s: %v", sel, err)
		}
		return text
	}
	b.t.Fatal(err)
	return ""
}

// loginToken decodes the login page's QR code and returns its token.
func (b *browser) loginToken() string {
	b.t.Helper()
	text := b.decodeQR("#qr")
	u, err := url.Parse(text)
	if err != nil || u.Scheme != "ecps" || u.Host != "login" || u.Query().Get("h") != "https://ecps.test" {
		b.t.Fatalf("login QR content %q", text)
	}
	return u.Query().Get("t")
}

// ---- the QR login page ----

func TestBrowserQRLogin(t *testing.T) {
	w := newWebEnv(t, webOptions{})
	b := newBrowser(t)
	p := w.newDevice(subjectA)
	c, loginID := w.qrLogin(w.idpSite.URL + "/cb")

	b.navigate(w.tls.URL + "/login/" + loginID)
	if got := b.text("#client"); got != "Hôpital Nord <DPI>" {
		t.Fatalf("client name %q", got)
	}
	tok := b.loginToken()
	number := b.text("#number") // the user reads it on the page and types it on the phone
	if number != c.VerificationNumber {
		t.Fatalf("page shows %q, the IdP got %q", number, c.VerificationNumber)
	}

	r := w.call(w.url(), p, "POST", "/api/v1/device/challenges/claim", jsonBody(t, map[string]string{"qr_token": tok}))
	r.wantStatus(t, http.StatusOK)
	ch := r.json(t)
	b.waitJS("the claimed state", `document.getElementById('login').dataset.status === 'claimed' && document.getElementById('qr-box').hidden`)
	if got := b.text("#status"); !strings.Contains(got, "QR code scanné") {
		t.Fatalf("status after the claim %q", got)
	}

	w.respond(0, p, ch["challenge_id"].(string), p.decision(t, w.clock.Now(), ch, "approve", number)).wantStatus(t, http.StatusNoContent)
	select {
	case u := <-w.landed:
		if u.Query().Get("login_id") != loginID || u.Query().Get("status") != "approved" {
			t.Fatalf("redirect %s", u)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("the browser did not reach the redirect_uri")
	}
	b.waitJS("the IdP's page", `location.origin === `+jsString(w.idpSite.URL)+` && !!document.getElementById('landed')`)

	res := w.poll(0, c, "")
	res.wantStatus(t, http.StatusOK)
	if m := res.json(t); m["status"] != "approved" || m["sub"] != subjectA || m["device_id"] != p.deviceID {
		t.Fatalf("IdP result %s", res.Body)
	}
	b.noProblems()
}

func jsString(s string) string {
	j, _ := json.Marshal(s)
	return string(j)
}

func TestBrowserQRRotates(t *testing.T) {
	const rotation, ttl = 1500 * time.Millisecond, 4 * time.Second
	w := newWebEnv(t, webOptions{qrRotation: rotation, qrTTL: ttl})
	b := newBrowser(t)
	p := w.newDevice(subjectA)
	_, loginID := w.qrLogin("")
	claim := func(tok string) response {
		return w.call(w.url(), p, "POST", "/api/v1/device/challenges/claim", jsonBody(t, map[string]string{"qr_token": tok}))
	}

	b.navigate(w.tls.URL + "/login/" + loginID)
	first := b.loginToken()
	decoded := time.Now() // first was minted before this
	b.do(chromedp.Evaluate[chromedp.Void](`window.samePage = true`))
	var second string
	for deadline := time.Now().Add(10 * time.Second); second == ""; {
		if tok := b.loginToken(); tok != first {
			second = tok
		}
		if time.Now().After(deadline) {
			t.Fatal("the QR code did not change")
		}
		time.Sleep(200 * time.Millisecond)
	}
	if !eval[bool](b, `window.samePage === true`) {
		t.Fatal("the page reloaded to rotate the QR code")
	}

	// The first token is refused once its life is over.
	time.Sleep(time.Until(decoded.Add(ttl + 300*time.Millisecond)))
	claim(first).wantError(t, http.StatusBadRequest, "invalid_grant")
	// The one shown now is live.
	claim(b.loginToken()).wantStatus(t, http.StatusOK)
	b.waitJS("no QR code after the claim", `document.getElementById('qr-box').hidden`)
	b.noProblems()
}

func TestBrowserLoginWithoutJavaScript(t *testing.T) {
	w := newWebEnv(t, webOptions{})
	b := newBrowser(t)
	p := w.newDevice(subjectA)
	_, loginID := w.qrLogin("")
	if _, err := chromedp.Call(b.ctx, emulation.SetScriptExecutionDisabled, emulation.SetScriptExecutionDisabledParams{Value: true}); err != nil {
		t.Fatal(err)
	}
	b.navigate(w.tls.URL + "/login/" + loginID)
	w.call(w.url(), p, "POST", "/api/v1/device/challenges/claim", jsonBody(t, map[string]string{"qr_token": b.loginToken()})).
		wantStatus(t, http.StatusOK)
	b.noProblems()
}

func TestBrowserLoginCannotBeFramed(t *testing.T) {
	w := newWebEnv(t, webOptions{})
	b := newBrowser(t)
	c, loginID := w.qrLogin("")
	loginURL := w.tls.URL + "/login/" + loginID
	r := page(t, w.url(), "/login/"+loginID, "")
	if r.Header.Get("X-Frame-Options") != "DENY" || !strings.Contains(r.Header.Get("Content-Security-Policy"), "frame-ancestors 'none'") {
		t.Fatalf("headers %v", r.Header)
	}

	// Another origin frames the login page, and one of its own pages as a control.
	other := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		rw.Header().Set("Content-Type", "text/html; charset=utf-8")
		if r.URL.Path == "/own" {
			_, _ = io.WriteString(rw, `<p id="own">framed content</p>`)
			return
		}
		_, _ = fmt.Fprintf(rw, `<!doctype html><iframe id="victim" src="%s"></iframe><iframe id="own" src="/own"></iframe>`, loginURL)
	}))
	defer other.Close()
	b.navigate(other.URL)
	b.waitJS("the control frame", `(() => { const d = document.getElementById('own').contentDocument; return !!d && d.body.innerText.includes('framed content'); })()`)

	var frame target.ID
	for deadline := time.Now().Add(10 * time.Second); frame == ""; time.Sleep(100 * time.Millisecond) {
		targets, err := chromedp.CallBrowser(b.ctx, target.GetTargets, target.GetTargetsParams{})
		if err != nil {
			t.Fatal(err)
		}
		for _, ti := range targets.TargetInfos {
			if ti.Type == "iframe" && ti.URL == loginURL {
				frame = ti.TargetID
			}
		}
		if frame == "" && time.Now().After(deadline) {
			t.Fatal("no frame for the login page")
		}
	}
	fctx, cancel := chromedp.NewContext(b.ctx, chromedp.WithTargetID(frame))
	defer cancel()
	var inside string
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		v, err := chromedp.Run(fctx, chromedp.Evaluate[string](`location.href + ' | ' + (document.body ? document.body.innerText : '')`))
		if err == nil && strings.HasPrefix(v, "chrome-error://") {
			inside = v
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the framed login page loaded: %q, %v", v, err)
		}
	}
	if strings.Contains(inside, c.VerificationNumber+"\n") || strings.Contains(inside, "Hôpital") {
		t.Fatalf("the frame shows the login: %q", inside)
	}
	b.noProblems("frame-ancestors", "X-Frame-Options")
}

// ---- the desk ----

// xssModel is a device model that would run script if the page wrote it as HTML.
const xssModel = `<img src=x onerror="window.pwned=1">Pixel 9`

func TestBrowserDesk(t *testing.T) {
	w := newWebEnv(t, webOptions{})
	b := newBrowser(t)
	base := w.tls.URL
	row := func(deviceID string) string { return `#devices tr[data-device-id="` + deviceID + `"]` }
	status := func(deviceID string) string {
		return eval[string](b, `(document.querySelector('`+row(deviceID)+` td.status') || {dataset: {}}).dataset.status || ''`)
	}

	// Sign in.
	b.navigate(base + "/desk")
	b.do(chromedp.SendKeys(chromedp.ID("key"), testOperatorKey), chromedp.Submit(chromedp.ID("signin")))
	b.waitJS("the desk", `!!document.getElementById('lookup')`)
	if got := b.text("#operator"); got != "desk-1" {
		t.Fatalf("operator %q", got)
	}
	// The cookie is HttpOnly: the page's script cannot read it.
	if c := eval[string](b, `document.cookie`); c != "" {
		t.Fatalf("document.cookie = %q", c)
	}

	// Look up the practitioner: a bad idNat is refused on the page.
	b.do(chromedp.SendKeys(chromedp.ID("idnat"), "81234"), chromedp.Click(chromedp.ID("lookup-go")))
	b.waitJS("the idNat error", `!document.getElementById('idnat-error').hidden`)
	b.do(chromedp.SetValue(chromedp.ID("idnat"), subjectA), chromedp.Click(chromedp.ID("lookup-go")))
	b.waitJS("the practitioner", `!document.getElementById('practitioner').hidden && document.getElementById('idnat-error').hidden`)
	// No directory loaded: the page says so and activations work as without one.
	if st := eval[string](b, `document.getElementById('identity').dataset.state`); st != "no-directory" {
		t.Fatalf("identity state %q without a directory", st)
	}
	if got := b.text("#id-no-directory"); !visible(b, "#id-no-directory") || !strings.Contains(got, "Aucun annuaire RPPS n'est chargé") {
		t.Fatalf("no-directory note %q", got)
	}
	if !visible(b, "#create-activation") || visible(b, "#id-found") || visible(b, "#id-absent") {
		t.Fatal("without a directory, the desk must offer an activation and show no identity")
	}

	// Create an activation and enrol a phone from the QR code on the screen.
	b.do(chromedp.Click(chromedp.ID("create-activation")))
	b.waitJS("the activation", `document.getElementById('activation').dataset.status === 'pending'`)
	enrolURI := b.decodeQR("#act-qr")
	q, err := parseURIQuery(enrolURI)
	if err != nil || !strings.HasPrefix(enrolURI, "ecps://enrol?") || q.Get("h") != "https://ecps.test" {
		t.Fatalf("activation QR %q", enrolURI)
	}
	if code := b.text("#act-code"); !deskCodeRE.MatchString(code) {
		t.Fatalf("typing code %q", code)
	}
	p := newPhone(t)
	body := p.enrolBody(t, w.env, activation{ActivationID: q.Get("a"), Secret: q.Get("s")})
	body["model"], body["app_version"] = xssModel, `1.0 <b>beta</b>`
	r := w.enrolWith(w.url(), body)
	r.wantStatus(t, http.StatusCreated)
	p.deviceID = r.json(t)["device_id"].(string)

	// The activation turns used by itself; the device appears, its text as text.
	b.waitJS("the activation used", `document.getElementById('activation').dataset.status === 'used'`)
	if got := b.text("#act-status"); !strings.Contains(got, p.deviceID) {
		t.Fatalf("activation status %q", got)
	}
	b.waitJS("the device row", `!!document.querySelector('`+row(p.deviceID)+`')`)
	if got := b.text(row(p.deviceID) + " .model-name"); got != xssModel {
		t.Fatalf("model shown as %q", got)
	}
	if got := b.text(row(p.deviceID) + " .app-version"); got != `1.0 <b>beta</b>` {
		t.Fatalf("app version shown as %q", got)
	}
	if eval[bool](b, `window.pwned === 1 || !!document.querySelector('#devices img, #devices b')`) {
		t.Fatal("device text was interpreted as HTML")
	}
	if s := status(p.deviceID); s != "active" {
		t.Fatalf("status %q", s)
	}

	// Suspend from the page.
	b.do(chromedp.Click(chromedp.CSS(row(p.deviceID) + ` button[data-action="suspend"]`)))
	b.waitJS("suspended", `(document.querySelector('`+row(p.deviceID)+` td.status') || {dataset: {}}).dataset.status === 'suspended'`)
	// A few changes by API, so that the audit trail has more than one page.
	for i := 0; i < 4; i++ {
		w.desk("POST", "/api/v1/desk/devices/"+p.deviceID+"/resume", nil).wantStatus(t, http.StatusOK)
		w.desk("POST", "/api/v1/desk/devices/"+p.deviceID+"/suspend", nil).wantStatus(t, http.StatusOK)
	}

	// Revoke: the confirmation can be cancelled, then confirmed.
	revoke := chromedp.Click(chromedp.CSS(row(p.deviceID) + ` button[data-action="revoke"]`))
	b.do(revoke)
	b.waitJS("the confirmation", `document.getElementById('confirm').open`)
	if got := b.text("#confirm-text"); !strings.Contains(got, xssModel) || !strings.Contains(got, p.deviceID) {
		t.Fatalf("confirmation text %q", got)
	}
	b.do(chromedp.Click(chromedp.ID("confirm-cancel")))
	b.waitJS("the confirmation closed", `!document.getElementById('confirm').open`)
	if s := status(p.deviceID); s != "suspended" {
		t.Fatalf("cancelled revocation changed the status to %q", s)
	}
	b.do(revoke)
	b.waitJS("the confirmation", `document.getElementById('confirm').open`)
	b.do(chromedp.Click(chromedp.ID("confirm-ok")))
	b.waitJS("revoked", `(document.querySelector('`+row(p.deviceID)+` td.status') || {dataset: {}}).dataset.status === 'revoked'`)
	devs := w.desk("GET", "/api/v1/desk/practitioners/"+subjectA+"/devices", nil)
	if !strings.Contains(string(devs.Body), `"status":"revoked"`) {
		t.Fatalf("devices %s", devs.Body)
	}

	// The audit trail: newest first, ten a page, with the operator's name.
	b.waitJS("the revocation in the audit", `(document.querySelector('#audit tbody tr') || {dataset: {}}).dataset.event === 'device.revoked'`)
	b.waitJS("the next page button", `!document.getElementById('audit-more').hidden`)
	if n := eval[int](b, `document.querySelectorAll('#audit tbody tr').length`); n != 10 {
		t.Fatalf("first audit page has %d rows", n)
	}
	b.do(chromedp.Click(chromedp.ID("audit-more")))
	b.waitJS("the last page", `document.getElementById('audit-more').hidden`)
	events := eval[[]string](b, `[...document.querySelectorAll('#audit tbody tr')].map(tr => tr.dataset.event + ' ' + tr.dataset.actor)`)
	want := map[string]bool{"activation.created operator:desk-1": true, "device.enrolled device:" + p.deviceID: true,
		"device.suspended operator:desk-1": true, "device.resumed operator:desk-1": true, "device.revoked operator:desk-1": true}
	for _, e := range events {
		delete(want, e)
	}
	if len(events) != 12 || len(want) != 0 {
		t.Fatalf("audit rows %v; missing %v", events, want)
	}

	// CSRF: the page's own origin, with the cookie, but no or a wrong token.
	post := func(headers string) int {
		return eval[int](b, `fetch('/api/v1/desk/activations', {method: 'POST', headers: {'Content-Type': 'application/json'`+headers+`},
			body: JSON.stringify({subject: '`+subjectB+`'})}).then(r => r.status)`)
	}
	if s := post(""); s != http.StatusForbidden {
		t.Fatalf("POST without CSRF token: %d", s)
	}
	if s := post(`, 'X-CSRF-Token': 'wrong'`); s != http.StatusForbidden {
		t.Fatalf("POST with a wrong CSRF token: %d", s)
	}
	csrf := eval[string](b, `document.querySelector('meta[name="csrf-token"]').content`)
	if s := post(`, 'X-CSRF-Token': '` + csrf + `'`); s != http.StatusCreated {
		t.Fatalf("POST with the CSRF token: %d", s)
	}

	// A cross-site POST: another site's page submits a form to the desk API.
	// The browser sends the cookie (same site, another origin), the server refuses.
	evil := httptest.NewTLSServer(http.HandlerFunc(func(rw http.ResponseWriter, _ *http.Request) {
		rw.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = fmt.Fprintf(rw, `<!doctype html><form id="f" method="post" enctype="text/plain" action="%s/api/v1/desk/activations">
<input type="hidden" name='{"subject":"%s","x":"' value='"}'></form><script>document.getElementById('f').submit()</script>`, base, subjectC)
	}))
	defer evil.Close()
	b.navigate(evil.URL)
	b.waitJS("the desk's answer", `location.href.startsWith(`+jsString(base)+`) && document.body.innerText.includes('forbidden')`)
	if events := w.auditEvents(subjectC); len(events) != 0 {
		t.Fatalf("the cross-site POST was served: %v", events)
	}

	// Sign out: the session is gone.
	b.navigate(base + "/desk")
	b.do(chromedp.Click(chromedp.ID("signout")))
	b.waitJS("the sign-in page", `!!document.getElementById('signin')`)
	if s := eval[int](b, `fetch('/api/v1/desk/practitioners/`+subjectA+`/devices').then(r => r.status)`); s != http.StatusUnauthorized {
		t.Fatalf("after sign-out: %d", s)
	}
	b.noProblems()
}

// deskSignIn signs the browser in to the desk with testOperatorKey.
func (b *browser) deskSignIn(base string) {
	b.t.Helper()
	b.navigate(base + "/desk")
	b.do(chromedp.SendKeys(chromedp.ID("key"), testOperatorKey), chromedp.Submit(chromedp.ID("signin")))
	b.waitJS("the desk", `!!document.getElementById('lookup')`)
}

// deskLookup looks a practitioner up with the keyboard (typing the idNat,
// then Enter) and waits for the directory's answer on the page: the
// identity card's state, found, absent or no-directory.
func (b *browser) deskLookup(idNat, state string) {
	b.t.Helper()
	b.do(chromedp.Evaluate[chromedp.Void](`document.getElementById('idnat').value = ''`), chromedp.Focus(chromedp.ID("idnat")),
		chromedp.KeyEvent(idNat), chromedp.KeyEvent("\r"))
	b.waitJS("the identity of "+idNat, `!document.getElementById('practitioner').hidden && document.getElementById('subject').textContent === `+
		jsString(idNat)+` && document.getElementById('identity').dataset.state === `+jsString(state))
}

// visible reports whether the element sel is rendered (not hidden, nor in
// a hidden ancestor).
func visible(b *browser, sel string) bool {
	b.t.Helper()
	return eval[bool](b, `(() => { const e = document.querySelector(`+jsString(sel)+`); return !!e && e.checkVisibility(); })()`)
}

// TestBrowserDeskDirectory: with a directory loaded, a looked-up
// practitioner's identity (name, profession, category, specialties, places
// of activity) is shown before the activation is offered, with the sentence
// asking the operator to check it against the ID document; names with
// accents and apostrophes show as text; an idNat absent from the directory
// is said so plainly and no activation is offered.
func TestBrowserDeskDirectory(t *testing.T) {
	w := newWebEnv(t, webOptions{directory: testExtract})
	b := newBrowser(t)
	b.deskSignIn(w.tls.URL)

	// Dr DUPRÉ-LEFÈVRE: her identity, then the activation.
	b.deskLookup(subjectA, "found")
	if got := b.text("#id-name"); got != "Docteur Hélène DUPRÉ-LEFÈVRE" {
		t.Fatalf("name %q", got)
	}
	if got := b.text("#id-idnat"); got != subjectA {
		t.Fatalf("idNat %q", got)
	}
	if p, c := b.text("#id-profession"), b.text("#id-category"); p != "Médecin" || c != "Civil" {
		t.Fatalf("profession %q, category %q", p, c)
	}
	specialties := eval[[]string](b, `[...document.querySelectorAll('#id-specialties li')].map(li => li.textContent)`)
	if strings.Join(specialties, " | ") != "Médecine Générale (SM) | Cardiologie et maladies vasculaires (SM)" {
		t.Fatalf("specialties %q", specialties)
	}
	places := eval[[]string](b, `[...document.querySelectorAll('#id-activities li')].map(li => li.innerText.replace(/\s+/g, ' ').trim())`)
	// (as a screen reader reads them: the mode and sector are labelled)
	want := []string{
		"CABINET DU DR DUPRÉ-LEFÈVRE 75012 PARIS Département 75 Mode d'exercice : Libéral Secteur d'activité : Cabinet individuel SIRET 12345678900012",
		"CENTRE HOSPITALIER DE BASTIA 20600 BASTIA Département 2B Mode d'exercice : Salarié Secteur d'activité : Etablissement public de santé SIRET 26200001200017 · FINESS 2B0000015",
		"CENTRE DE SANTÉ DE SARTÈNE 20100 SARTÈNE Département 2A Mode d'exercice : Bénévole Secteur d'activité : Centre de santé",
	}
	if strings.Join(places, "\n") != strings.Join(want, "\n") {
		t.Fatalf("places of activity:\n%s\nwant:\n%s", strings.Join(places, "\n"), strings.Join(want, "\n"))
	}
	if got := b.text("#id-check"); !strings.Contains(got, "pièce d'identité") || !visible(b, "#id-check") {
		t.Fatalf("no visible sentence asking to check the ID document: %q", got)
	}
	if visible(b, "#id-no-directory") || visible(b, "#id-absent") {
		t.Fatal("a found practitioner is shown as absent, or without a directory")
	}
	// The identity comes before the offer of an activation, on the page and
	// in the keyboard's order: the lookup puts the focus on the identity's
	// heading, and the next Tab reaches "create an activation".
	if !eval[bool](b, `!!(document.getElementById('identity').compareDocumentPosition(document.getElementById('create-activation')) & Node.DOCUMENT_POSITION_FOLLOWING)`) {
		t.Fatal("the activation button comes before the identity")
	}
	if got := eval[string](b, `document.activeElement.id`); got != "identity-h" {
		t.Fatalf("focus after the lookup on %q, want the identity's heading", got)
	}
	b.do(chromedp.KeyEvent("\t"))
	if got := eval[string](b, `document.activeElement.id`); got != "create-activation" {
		t.Fatalf("Tab from the identity reaches %q, want create-activation", got)
	}
	b.do(chromedp.KeyEvent("\r"))
	b.waitJS("the activation", `document.getElementById('activation').dataset.status === 'pending'`)
	if !strings.Contains(b.decodeQR("#act-qr"), "ecps://enrol?") {
		t.Fatal("no activation QR code")
	}

	// Anaïs N'DIAYE (ADELI, overseas): accents and apostrophes as text.
	b.deskLookup(subjectC, "found")
	if got := b.text("#id-name"); got != "Madame Anaïs N'DIAYE" {
		t.Fatalf("name %q", got)
	}
	if got := b.text("#id-activities .site-place"); got != "97400 SAINT-DENISDépartement 974" {
		t.Fatalf("place %q", got)
	}
	if got := b.text("#id-specialties"); got != "non renseigné" {
		t.Fatalf("specialties %q", got)
	}
	if !visible(b, "#create-activation") || visible(b, "#activation") {
		t.Fatal("the new lookup does not offer a new activation")
	}

	// An idNat absent from the directory: said plainly, no activation
	// offered; the devices and audit trail stay (a phone enrolled before the
	// directory was loaded can still be suspended or revoked).
	b.deskLookup(subjectB, "absent")
	if got := b.text("#id-absent"); !strings.Contains(got, subjectB+" est absent de l'annuaire RPPS") || !visible(b, "#id-absent") {
		t.Fatalf("absent practitioner: %q", got)
	}
	if visible(b, "#create-activation") || visible(b, "#id-found") || visible(b, "#id-no-directory") {
		t.Fatal("an activation is offered for a practitioner absent from the directory")
	}
	if !visible(b, "#dev-h") || !visible(b, "#audit-h") {
		t.Fatal("no devices or audit trail for an absent practitioner")
	}
	e := w.desk("POST", "/api/v1/desk/activations", map[string]string{"subject": subjectB})
	e.wantError(t, http.StatusBadRequest, "unknown_user_id") // what the button would have met

	// Back to a known one, at phone width: everything fits, nothing scrolls sideways.
	b.do(chromedp.EmulateViewport(390, 844, func(p *emulation.SetDeviceMetricsOverrideParams, _ *emulation.SetTouchEmulationEnabledParams) {
		p.Mobile = true
	}))
	b.deskLookup(subjectA, "found")
	if !visible(b, "#create-activation") {
		t.Fatal("no activation offered at phone width")
	}
	if wide := eval[int](b, `document.documentElement.scrollWidth`); wide > 390 {
		t.Fatalf("the desk is %d px wide at phone width (390)", wide)
	}
	b.noProblems()
}
