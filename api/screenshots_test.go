package api

// The README's pictures of the pages (docs/screenshots/*.png), written by
// `make screenshots` from a scenario made for them. No other test writes a
// file there: the browser tests check, this one shows.

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
	_ "time/tzdata" // Europe/Paris on any machine

	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/chromedp"

	"github.com/ecps-sante/ecps/idnat"
)

// The scenario's practitioner: Dr Camille Rousseau, general practitioner in
// Paris, RPPS 10101847258, in the demo directory that `make run` loads too
// (deploy/dev: an extract in the published format, with her two places of
// activity: a group practice, self-employed, and a municipal health centre,
// salaried).
const (
	shotSubject   = "810101847258"
	shotDirectory = "../deploy/dev/PS_LibreAcces_Personne_activite_demo.txt"
)

// behind sets the clock d behind real time (0: real time again), so that a
// scenario can have a past.
func (w *webEnv) behind(d time.Duration) {
	w.lag.Store(int64(d))
	time.Sleep(60 * time.Millisecond) // the clock's follower has seen it
	w.clock.Set(time.Now().Add(-d))
}

// ago is how far behind real time the clock must be to read hh:mm, Paris
// time, that many days ago.
func ago(t testing.TB, days, hh, mm int) time.Duration {
	paris, err := time.LoadLocation("Europe/Paris")
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().In(paris)
	return time.Since(time.Date(now.Year(), now.Month(), now.Day()-days, hh, mm, 0, 0, paris))
}

// screenshots writes the viewport at phone and at desktop size into dir as
// name-phone.png and name-desktop.png, after ready() says the page has
// settled, and leaves the desktop size.
func (b *browser) screenshots(dir, name string, ready func()) {
	b.t.Helper()
	sizes := []struct {
		suffix        string
		width, height int64
		mobile        bool
	}{{"phone", 390, 844, true}, {"desktop", 1280, 800, false}}
	for _, sz := range sizes {
		mobile := sz.mobile
		b.do(chromedp.EmulateViewport(sz.width, sz.height, func(p *emulation.SetDeviceMetricsOverrideParams, _ *emulation.SetTouchEmulationEnabledParams) {
			p.Mobile = mobile
		}),
			chromedp.Evaluate[chromedp.Void](`window.scrollTo(0, 0)`))
		ready()
		time.Sleep(300 * time.Millisecond) // layout and fonts
		shot, err := chromedp.Run(b.ctx, chromedp.CaptureScreenshot())
		if err != nil {
			b.t.Fatal(err)
		}
		b.write(dir, name+"-"+sz.suffix+".png", shot)
	}
}

func (b *browser) write(dir, name string, png []byte) {
	b.t.Helper()
	if err := os.WriteFile(filepath.Join(dir, name), png, 0o644); err != nil {
		b.t.Fatal(err)
	}
}

// TestScreenshots writes the README's screenshots into $ECPS_SCREENSHOTS_DIR
// (make screenshots), and does nothing without it.
//
// Three weeks ago, right after a CPS-card login at Pro Santé Connect, Dr
// Rousseau enrolled her iPhone 15, and logged in with it two days ago. Today
// she comes to the desk with a new Pixel 8: the operator looks her up, checks
// her identity from the directory against her ID card, creates an
// activation (desk-*.png, the QR code on the screen), she enrols the Pixel 8
// with it, and as she has lost the iPhone the operator suspends it
// (desk-devices-desktop.png). Then a QR login from Pro Santé Connect
// (login-*.png).
func TestScreenshots(t *testing.T) {
	dir := os.Getenv("ECPS_SCREENSHOTS_DIR")
	if dir == "" {
		return // only make screenshots writes them
	}
	if _, err := idnat.Parse(shotSubject); err != nil {
		t.Fatalf("%s: %v", shotSubject, err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	w := newWebEnv(t, webOptions{
		client: Client{ID: "psc", Name: "Pro Santé Connect", SecretSHA256: sum(testClientSecret),
			Scopes: []string{"authentication", "activation"}, RedirectURIs: []string{"https://auth.esante.gouv.fr/cb"}},
		operator:  "desk-paris-1",
		directory: shotDirectory,
	})
	psc := func(method, path string, body any) response {
		t.Helper()
		var b []byte
		if body != nil {
			b = jsonBody(t, body)
		}
		return do(t, w.url(), method, path, b, basicAuth("psc", testClientSecret))
	}
	pushToken := func(p *phone) {
		t.Helper()
		w.call(w.url(), p, "PUT", "/api/v1/device/push-token", jsonBody(t, map[string]string{"provider": "fcm", "token": "fcm-" + p.deviceID})).
			wantStatus(t, http.StatusNoContent)
	}

	// 23 days ago: Pro Santé Connect activates her iPhone 15 after a CPS-card login.
	w.behind(ago(t, 23, 14, 12))
	r := psc("POST", "/api/v1/activations", map[string]string{"subject": shotSubject})
	r.wantStatus(t, http.StatusCreated)
	q, err := parseURIQuery(r.json(t)["enrol_uri"].(string))
	if err != nil {
		t.Fatal(err)
	}
	iphone := newPhone(t)
	w.behind(ago(t, 23, 14, 13))
	body := iphone.enrolBody(t, w.env, activation{ActivationID: q.Get("a"), Secret: q.Get("s")})
	body["platform"], body["model"], body["app_version"] = "ios", "iPhone 15", "2.3.1"
	r = w.enrolWith(w.url(), body)
	r.wantStatus(t, http.StatusCreated)
	iphone.deviceID = r.json(t)["device_id"].(string)
	pushToken(iphone)

	// Two days ago: a login, approved on the iPhone.
	w.behind(ago(t, 2, 8, 47))
	r = psc("POST", "/api/v1/authentications", map[string]any{"login_hint": shotSubject, "binding_message": "Connexion à Ameli Pro"})
	r.wantStatus(t, http.StatusCreated)
	number := r.json(t)["verification_number"].(string)
	w.behind(ago(t, 2, 8, 47) - 12*time.Second)
	ch := w.pendingChallenge(iphone)
	w.respond(0, iphone, ch["challenge_id"].(string), iphone.decision(t, w.clock.Now(), ch, "approve", number)).
		wantStatus(t, http.StatusNoContent)

	// Today, at the desk.
	w.behind(0)
	b := newBrowser(t)
	if _, err := chromedp.Call(b.ctx, emulation.SetTimezoneOverride, emulation.SetTimezoneOverrideParams{TimezoneID: "Europe/Paris"}); err != nil {
		t.Fatal(err)
	}
	row := func(p *phone) string { return `#devices tr[data-device-id="` + p.deviceID + `"]` }
	b.navigate(w.tls.URL + "/desk")
	b.do(chromedp.SendKeys(chromedp.ID("key"), testOperatorKey), chromedp.Submit(chromedp.ID("signin")))
	b.waitJS("the desk", `!!document.getElementById('lookup')`)
	b.do(chromedp.SendKeys(chromedp.ID("idnat"), shotSubject), chromedp.Click(chromedp.ID("lookup-go")))
	b.waitJS("the practitioner", `!document.getElementById('practitioner').hidden && !!document.querySelector('`+row(iphone)+`')`)
	b.waitJS("her identity", `document.getElementById('identity').dataset.state === 'found'`)
	if got := b.text("#id-name"); got != "Docteur Camille ROUSSEAU" {
		t.Fatalf("the scenario's practitioner is %q in the directory", got)
	}
	b.do(chromedp.Click(chromedp.ID("create-activation")))
	b.waitJS("the activation", `document.getElementById('activation').dataset.status === 'pending'`)
	b.screenshots(dir, "desk", func() { b.waitJS("activation QR", imageLoaded("#act-qr")) })

	// She scans the QR code with the Pixel 8.
	q, err = parseURIQuery(b.decodeQR("#act-qr"))
	if err != nil {
		t.Fatal(err)
	}
	pixel := newPhone(t)
	body = pixel.enrolBody(t, w.env, activation{ActivationID: q.Get("a"), Secret: q.Get("s")})
	body["platform"], body["model"], body["app_version"] = "android", "Pixel 8", "2.4.0"
	r = w.enrolWith(w.url(), body)
	r.wantStatus(t, http.StatusCreated)
	pixel.deviceID = r.json(t)["device_id"].(string)
	pushToken(pixel)
	b.waitJS("the activation used", `document.getElementById('activation').dataset.status === 'used'`)
	b.waitJS("the Pixel's row", `!!document.querySelector('`+row(pixel)+`')`)

	// The lost iPhone is suspended.
	b.do(chromedp.Click(chromedp.CSS(row(iphone) + ` button[data-action="suspend"]`)))
	b.waitJS("suspended", `(document.querySelector('`+row(iphone)+` td.status') || {dataset: {}}).dataset.status === 'suspended'`)
	b.waitJS("the suspension in the audit", `(document.querySelector('#audit tbody tr') || {dataset: {}}).dataset.event === 'device.suspended'`)
	events := eval[[]string](b, `[...document.querySelectorAll('#audit tbody tr')].map(tr => tr.dataset.event)`)
	if want := "device.suspended device.enrolled activation.created authentication.approved authentication.created device.enrolled activation.created"; strings.Join(events, " ") != want {
		t.Fatalf("audit trail %v, want %s", events, want)
	}
	b.do(chromedp.Evaluate[chromedp.Void](`window.scrollTo(0, 0)`))
	time.Sleep(300 * time.Millisecond)
	// Nothing cut off: no table scrolls sideways at desktop width.
	if wide := eval[[]string](b, `[...document.querySelectorAll('.table-wrap')].filter(e => e.scrollWidth > e.clientWidth).map(e => e.firstElementChild.id + ' ' + e.scrollWidth + '>' + e.clientWidth)`); len(wide) > 0 {
		t.Fatalf("tables wider than the page: %v", wide)
	}
	full, err := chromedp.Run(b.ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	b.write(dir, "desk-devices-desktop.png", full)

	// A QR login: Pro Santé Connect sends the browser to the login page.
	r = psc("POST", "/api/v1/authentications", map[string]any{"binding_message": "Connexion à Ameli Pro", "redirect_uri": "https://auth.esante.gouv.fr/cb"})
	r.wantStatus(t, http.StatusCreated)
	loginURL := r.json(t)["login_url"].(string)
	b.navigate(w.tls.URL + "/login/" + loginURL[strings.LastIndex(loginURL, "/")+1:])
	b.screenshots(dir, "login", func() { b.waitJS("QR image", imageLoaded("#qr")) })
	b.noProblems()
}
