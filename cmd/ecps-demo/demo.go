package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// demoRun is one run of the demo: its configuration, its output and what it
// has created (to clean up).
type demoRun struct {
	cfg   config
	w     io.Writer
	http  *http.Client
	step  int
	state string // the device's state file

	activationID string
	directory    bool   // the desk found the practitioner in a loaded directory
	deviceID     string // once enrolled: revoked at the end
	authReqID    string // once created: cancelled at the end unless the result was read
	resultRead   bool
	retryAfter   string // of the last answer
}

// demo runs the whole scripted login and prints it on w. It cleans up
// after itself (the demo device is revoked, its state file removed),
// whether it succeeds or not.
func demo(ctx context.Context, cfg config, w io.Writer) (err error) {
	d := &demoRun{cfg: cfg, w: w, http: &http.Client{Timeout: time.Duration(cfg.Wait+20) * time.Second}}
	if err := d.preflight(ctx); err != nil {
		return err
	}
	d.printf("== e-CPS demo: one login from end to end, on %s\n", cfg.URL)
	d.printf("   This demo plays every part: the enrolment desk and the IdP (HTTP calls, secrets not shown)\n")
	d.printf("   and the practitioner's phone (the reference client %s, each command shown with `$`).\n", cfg.Device)
	defer func() {
		if cerr := d.cleanUp(ctx); cerr != nil && err == nil {
			err = cerr
		}
	}()
	if err := d.lookUp(ctx); err != nil {
		return err
	}
	if err := d.activateAndEnrol(ctx); err != nil {
		return err
	}
	return d.login(ctx)
}

// identity is the practitioner's entry in the directory, as the desk's
// lookup and an approval carry it (absent values are null).
type identity struct {
	IDNat       string      `json:"idnat"`
	Civility    *string     `json:"civility"`
	FamilyName  *string     `json:"family_name"`
	GivenName   *string     `json:"given_name"`
	Profession  codeLabel   `json:"profession"`
	Category    *codeLabel  `json:"category"`
	Specialties []codeLabel `json:"specialties"`
	Activities  []struct {
		Mode   *codeLabel `json:"mode"`
		Sector *codeLabel `json:"sector"`
		Site   struct {
			Name       *string `json:"name"`
			PostalCode *string `json:"postal_code"`
			City       *string `json:"city"`
			Department *string `json:"department"`
		} `json:"site"`
	} `json:"activities"`
	Version string `json:"directory_version"`
}

type codeLabel struct {
	Code  *string `json:"code"`
	Label *string `json:"label"`
}

// String is the pair as shown: its label, else its code.
func (c *codeLabel) String() string {
	switch {
	case c == nil:
		return ""
	case c.Label != nil && *c.Label != "":
		return *c.Label
	case c.Code != nil:
		return *c.Code
	}
	return ""
}

// join joins the non-null, non-empty values among vs with sep.
func join(sep string, vs ...*string) string {
	var out []string
	for _, v := range vs {
		if v != nil && *v != "" {
			out = append(out, *v)
		}
	}
	return strings.Join(out, sep)
}

// print writes the identity, as the desk shows it, indented.
func (id *identity) print(w io.Writer) {
	fmt.Fprintf(w, "     %s, %s", join(" ", id.Civility, id.GivenName, id.FamilyName), id.Profession.String())
	if c := id.Category.String(); c != "" {
		fmt.Fprintf(w, " (%s)", c)
	}
	fmt.Fprintf(w, "   [directory version %s]\n", id.Version)
	var sp []string
	for i := range id.Specialties {
		sp = append(sp, id.Specialties[i].String())
	}
	if len(sp) > 0 {
		fmt.Fprintf(w, "     specialties   %s\n", strings.Join(sp, ", "))
	}
	for i, a := range id.Activities {
		label := "                  "
		if i == 0 {
			label = "     practises at "
		}
		place := join(" ", a.Site.PostalCode, a.Site.City)
		if a.Site.Department != nil {
			place += " (" + *a.Site.Department + ")"
		}
		kind := []string{}
		for _, c := range []*codeLabel{a.Mode, a.Sector} {
			if s := c.String(); s != "" {
				kind = append(kind, s)
			}
		}
		name := "(site without a name)"
		if a.Site.Name != nil {
			name = *a.Site.Name
		}
		fmt.Fprintf(w, "%s%s, %s: %s\n", label, name, place, strings.Join(kind, "; "))
	}
}

// lookUp: the desk reads the practitioner's entry in the directory, which
// the operator checks against their ID document before activating a phone.
func (d *demoRun) lookUp(ctx context.Context) error {
	d.heading("Desk: look practitioner %s up in the directory, to check them against their ID document", d.cfg.Subject)
	status, body, err := d.send(ctx, desk, http.MethodGet, "/api/v1/desk/practitioners/"+url.PathEscape(d.cfg.Subject), nil)
	if err != nil {
		return err
	}
	switch {
	case status == http.StatusOK:
		var id identity
		if err := json.Unmarshal(body, &id); err != nil || id.IDNat != d.cfg.Subject {
			return fmt.Errorf("the desk's lookup answered an entry for %q, want %s (%v)", id.IDNat, d.cfg.Subject, err)
		}
		d.directory = true
		id.print(d.w)
		return nil
	case status == http.StatusNotFound && reasonOf(body) == "no_directory":
		d.printf("   no practitioner directory is loaded: the desk checks the ID document alone, and logins carry no identity\n" +
			"   (`make run` loads a demo one: deploy/dev/PS_LibreAcces_Personne_activite_demo.txt)\n")
		return nil
	}
	msg := fmt.Sprintf("GET /api/v1/desk/practitioners/%s: HTTP %d: %s", d.cfg.Subject, status, strings.TrimSpace(string(body)))
	if status == http.StatusNotFound {
		msg += "\n  practitioner " + d.cfg.Subject + " is absent from the loaded directory, so no phone can be activated for them:" +
			" choose one that is in it with -subject (e.g. 810001234565 in make run's demo directory)"
	}
	return errors.New(msg)
}

// preflight checks that the service answers and the phone client exists,
// before anything is created.
func (d *demoRun) preflight(ctx context.Context) error {
	if _, err := exec.LookPath(d.cfg.Device); err != nil {
		return fmt.Errorf("the phone client %s cannot be run (%v): build it with `make build`", d.cfg.Device, err)
	}
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(rctx, http.MethodGet, d.cfg.URL+"/readyz", nil)
	if err != nil {
		return fmt.Errorf("service URL %q: %v", d.cfg.URL, err)
	}
	res, err := d.http.Do(req)
	if err != nil {
		return fmt.Errorf("no e-CPS service answers at %s (GET /readyz: %v):\n"+
			"  start it with `make run` in another terminal, then run `make demo` again", d.cfg.URL, unwrapURLError(err))
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(res.Body, 4096))
	if res.StatusCode != http.StatusOK {
		return fmt.Errorf("the service at %s is not ready (GET /readyz: HTTP %d %s): is its Redis running? See the `make run` terminal",
			d.cfg.URL, res.StatusCode, strings.TrimSpace(string(body)))
	}
	return nil
}

// activateAndEnrol: the desk creates an activation, the phone enrols with it.
func (d *demoRun) activateAndEnrol(ctx context.Context) error {
	d.heading("Desk: activate a phone for practitioner %s (after checking them in person)", d.cfg.Subject)
	var act struct {
		ActivationID string `json:"activation_id"`
		Subject      string `json:"subject"`
		Code         string `json:"code"`
		QRPNG        string `json:"qr_png"`
		EnrolURI     string `json:"enrol_uri"`
		ExpiresAt    string `json:"expires_at"`
		Status       string `json:"status"`
		DeviceID     string `json:"device_id"`
	}
	if _, err := d.call(ctx, desk, http.MethodPost, "/api/v1/desk/activations",
		map[string]string{"subject": d.cfg.Subject}, http.StatusCreated, &act); err != nil {
		return err
	}
	if act.ActivationID == "" || act.EnrolURI == "" {
		return fmt.Errorf("the activation answer has no activation_id or enrol_uri")
	}
	d.activationID = act.ActivationID
	d.printf("   activation_id  %s\n   code           %s   (what the practitioner would type instead of scanning)\n"+
		"   enrol_uri      %s\n   qr_png         (the enrol_uri as a QR code: %d characters of base64 PNG, not shown)\n   expires_at     %s\n",
		act.ActivationID, act.Code, act.EnrolURI, len(act.QRPNG), act.ExpiresAt)

	d.heading("Phone: enrol a new device key with the activation (as if its QR code were scanned)")
	if err := os.MkdirAll(d.cfg.StateDir, 0o700); err != nil {
		return fmt.Errorf("state directory: %w", err)
	}
	d.state = filepath.Join(d.cfg.StateDir, "device-"+randomHex(4)+".json")
	if _, err := d.device(ctx, "enrol", act.EnrolURI); err != nil {
		return err
	}

	d.heading("Desk: the activation is now used by the new device")
	if _, err := d.call(ctx, desk, http.MethodGet, "/api/v1/desk/activations/"+url.PathEscape(act.ActivationID),
		nil, http.StatusOK, &act); err != nil {
		return err
	}
	d.printf("   status %s, device_id %s\n", act.Status, act.DeviceID)
	if act.Status != "used" || act.DeviceID == "" {
		return fmt.Errorf("activation %s is %q after the enrolment, want used", act.ActivationID, act.Status)
	}
	d.deviceID = act.DeviceID
	return nil
}

// created is the IdP's 201 answer to POST /api/v1/authentications.
type created struct {
	AuthReqID          string `json:"auth_req_id"`
	ExpiresIn          int    `json:"expires_in"`
	Interval           int    `json:"interval"`
	VerificationNumber string `json:"verification_number"`
}

// login: the IdP creates a push login and long-polls; the phone approves.
func (d *demoRun) login(ctx context.Context) error {
	binding := "e-CPS demo login #" + randomHex(2) // unique: picks our challenge out of the list
	d.heading("IdP: start a login for %s (push to the practitioner's phones)", d.cfg.Subject)
	var auth created
	if _, err := d.call(ctx, idp, http.MethodPost, "/api/v1/authentications",
		struct {
			LoginHint      string `json:"login_hint"`
			BindingMessage string `json:"binding_message"`
		}{d.cfg.Subject, binding}, http.StatusCreated, &auth); err != nil {
		return err
	}
	if auth.AuthReqID == "" || auth.VerificationNumber == "" {
		return fmt.Errorf("the authentication answer has no auth_req_id or verification_number")
	}
	d.authReqID = auth.AuthReqID
	d.printf("   auth_req_id          %s\n   expires_in           %d s\n   interval             %d s\n   verification_number  %s\n",
		auth.AuthReqID, auth.ExpiresIn, auth.Interval, auth.VerificationNumber)
	d.printf("   The IdP's page now shows the user: \"type %s on your phone\".\n", auth.VerificationNumber)

	pollPath := "/api/v1/authentications/" + url.PathEscape(auth.AuthReqID) + fmt.Sprintf("?wait=%d", d.cfg.Wait)
	d.heading("IdP: wait for the result in the background (long-poll, started before the phone answers)")
	d.printf("   GET %s   (HTTP Basic %s:<secret>)\n", pollPath, d.cfg.ClientID)
	pctx, stopPoll := context.WithCancel(ctx)
	defer stopPoll()
	sent := make(chan struct{})
	done := make(chan pollOutcome, 1)
	go func() { done <- d.pollUntilDecided(pctx, pollPath, auth.Interval, sent) }()
	select {
	case <-sent:
		d.printf("   … request sent; the answer will come when the phone has decided\n")
	case o := <-done:
		return fmt.Errorf("the IdP's long-poll ended before the phone answered: %s", o.describe())
	case <-ctx.Done():
		return ctx.Err()
	}

	d.heading("Phone: list the practitioner's pending challenges, then look at ours")
	out, err := d.device(ctx, "challenges")
	if err != nil {
		return err
	}
	challengeID := findChallenge(out, binding)
	if challengeID == "" {
		return fmt.Errorf("no challenge with the binding message %q in the list", binding)
	}
	if out, err = d.device(ctx, "show", challengeID); err != nil {
		return err
	}
	if !strings.Contains(out, binding) {
		return fmt.Errorf("challenge %s does not show the binding message %q", challengeID, binding)
	}

	d.heading("Phone: approve, typing the number the IdP's page shows")
	d.printf("   The demo plays both sides: it read %s from the IdP's answer above; a real user reads it on\n"+
		"   the IdP's page and types it on the phone. The phone is never told the number.\n", auth.VerificationNumber)
	if _, err := d.device(ctx, "approve", challengeID, "--number", auth.VerificationNumber); err != nil {
		return err
	}

	d.heading("IdP: the long-poll returns the result")
	var o pollOutcome
	select {
	case o = <-done:
	case <-ctx.Done():
		return ctx.Err()
	}
	if o.err != nil {
		return fmt.Errorf("IdP poll: %w", o.err)
	}
	d.resultRead = true
	d.printf("   %s → HTTP %d after %s (%d poll%s)\n", "GET "+pollPath, o.status, o.took.Round(time.Millisecond), o.polls, plural(o.polls))
	d.printf("%s\n", indentJSON(o.body, "   "))
	var res struct {
		Status   string    `json:"status"`
		Sub      string    `json:"sub"`
		Identity *identity `json:"identity"`
	}
	if o.status != http.StatusOK || json.Unmarshal(o.body, &res) != nil || res.Status != "approved" {
		return fmt.Errorf("the login was not approved: %s", o.describe())
	}
	if res.Sub != d.cfg.Subject {
		return fmt.Errorf("the login was approved for %q, want %s", res.Sub, d.cfg.Subject)
	}
	d.printf("\n== the IdP now logs in practitioner %s: login approved on the phone\n", res.Sub)
	switch {
	case res.Identity != nil:
		if res.Identity.IDNat != res.Sub {
			return fmt.Errorf("the approval's identity is %q's, want %s", res.Identity.IDNat, res.Sub)
		}
		d.printf("   with their identity from the RPPS directory (the result's `identity`):\n")
		res.Identity.print(d.w)
	case d.directory:
		return fmt.Errorf("the approval carries no identity, though the desk found %s in the directory", res.Sub)
	default:
		d.printf("   (no `identity` in the result: no practitioner directory is loaded)\n")
	}
	return nil
}

// findChallenge returns the id (first column) of the line of a `challenges`
// listing that shows binding.
func findChallenge(listing, binding string) string {
	for _, line := range strings.Split(listing, "\n") {
		if strings.Contains(line, binding) {
			if f := strings.Fields(line); len(f) > 0 {
				return f[0]
			}
		}
	}
	return ""
}

// pollOutcome is how the IdP's polling ended.
type pollOutcome struct {
	status int
	body   []byte
	err    error
	took   time.Duration
	polls  int
}

func (o pollOutcome) describe() string {
	if o.err != nil {
		return o.err.Error()
	}
	return fmt.Sprintf("HTTP %d %s", o.status, strings.TrimSpace(string(o.body)))
}

// pollUntilDecided long-polls until the answer is something else than
// authorization_pending (or slow_down), as a CIBA client does: between two
// polls it waits interval, grown by 5 s on slow_down. sent is closed once
// the first request has been written.
func (d *demoRun) pollUntilDecided(ctx context.Context, path string, interval int, sent chan<- struct{}) pollOutcome {
	start := time.Now()
	var once sync.Once
	trace := &httptrace.ClientTrace{WroteRequest: func(httptrace.WroteRequestInfo) { once.Do(func() { close(sent) }) }}
	wait := time.Duration(max(interval, 1)) * time.Second
	for n := 1; ; n++ {
		req, err := http.NewRequestWithContext(httptrace.WithClientTrace(ctx, trace), http.MethodGet, d.cfg.URL+path, nil)
		if err != nil {
			return pollOutcome{err: err}
		}
		req.SetBasicAuth(d.cfg.ClientID, d.cfg.ClientSecret)
		res, err := d.http.Do(req)
		if err != nil {
			return pollOutcome{err: unwrapURLError(err), polls: n}
		}
		body, err := io.ReadAll(io.LimitReader(res.Body, 64<<10))
		res.Body.Close()
		if err != nil {
			return pollOutcome{err: err, polls: n}
		}
		o := pollOutcome{status: res.StatusCode, body: body, took: time.Since(start), polls: n}
		switch errorCode(body) {
		case "authorization_pending":
		case "slow_down":
			wait += 5 * time.Second
		default:
			return o
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return pollOutcome{err: ctx.Err(), polls: n}
		case <-t.C:
		}
	}
}

// cleanUp cancels an unfinished login, revokes the demo device and removes
// its state file, so that the practitioner's limits (devices, pending
// logins) are not used up by demos.
func (d *demoRun) cleanUp(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if d.authReqID == "" && d.deviceID == "" && d.state == "" {
		return nil
	}
	d.heading("Clean-up (so that the demo can be run again)")
	var errs []error
	if d.authReqID != "" && !d.resultRead {
		if _, err := d.call(ctx, idp, http.MethodDelete, "/api/v1/authentications/"+url.PathEscape(d.authReqID),
			nil, http.StatusNoContent, nil); err != nil {
			errs = append(errs, err)
		}
	}
	if d.deviceID == "" && d.activationID != "" {
		// The enrolment may have succeeded without the demo learning the device id.
		var act struct {
			DeviceID string `json:"device_id"`
		}
		if _, err := d.call(ctx, desk, http.MethodGet, "/api/v1/desk/activations/"+url.PathEscape(d.activationID),
			nil, http.StatusOK, &act); err == nil {
			d.deviceID = act.DeviceID
		}
	}
	if d.deviceID != "" {
		d.printf("   Desk: revoke the demo device %s (a practitioner may have at most a few devices)\n", d.deviceID)
		if _, err := d.call(ctx, desk, http.MethodDelete, "/api/v1/desk/devices/"+url.PathEscape(d.deviceID),
			nil, http.StatusNoContent, nil); err != nil {
			errs = append(errs, err)
		}
	}
	if d.state != "" {
		if err := os.Remove(d.state); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		} else {
			d.printf("   removed the device's state file %s\n", d.state)
		}
	}
	return errors.Join(errs...)
}

// ---- the phone: the ecps-device binary ----

// device runs `ecps-device -state FILE args...`, printing the command line
// as a shell would show it and then its output; it returns its stdout.
func (d *demoRun) device(ctx context.Context, args ...string) (string, error) {
	argv := append([]string{"-state", d.state}, args...)
	d.printf("$ %s\n", shellJoin(append([]string{d.cfg.Device}, argv...)))
	cmd := exec.CommandContext(ctx, d.cfg.Device, argv...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	d.w.Write(stdout.Bytes())
	d.w.Write(stderr.Bytes())
	if err != nil {
		return stdout.String(), fmt.Errorf("ecps-device %s: %v", args[0], err)
	}
	return stdout.String(), nil
}

// shellJoin quotes the arguments that a POSIX shell would not take as is.
func shellJoin(args []string) string {
	q := make([]string, len(args))
	for i, a := range args {
		q[i] = shellQuote(a)
	}
	return strings.Join(q, " ")
}

func shellQuote(s string) string {
	if s == "" {
		return "''"
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_./:=@%+,", r)) {
			return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
		}
	}
	return s
}

// ---- the desk and the IdP: HTTP ----

// role is who sends an HTTP request: the desk (Bearer key) or the IdP (HTTP Basic).
type role int

const (
	desk role = iota
	idp
)

// call sends one request as who, prints it (without secrets) and its status,
// and decodes a JSON answer into out. Another status than want is an error
// that carries the service's error body.
func (d *demoRun) call(ctx context.Context, who role, method, path string, body any, want int, out any) (int, error) {
	status, data, err := d.send(ctx, who, method, path, body)
	if err != nil {
		return status, err
	}
	if status != want {
		msg := fmt.Sprintf("%s %s: HTTP %d, want %d: %s", method, path, status, want, strings.TrimSpace(string(data)))
		switch status {
		case http.StatusUnauthorized:
			msg += "\n  the running service refuses the demo credentials: were they written by the `make run` now running? Restart it"
		case http.StatusTooManyRequests:
			msg += "\n  a limit of the practitioner or client is reached (limits count per time window):"
			if ra := d.retryAfter; ra != "" {
				msg += " retry in " + ra + " s"
			} else {
				msg += " wait a few minutes"
			}
		case http.StatusConflict:
			if path == "/api/v1/desk/activations" {
				msg += "\n  the practitioner may have reached the device limit: list their devices with" +
					" GET /api/v1/desk/practitioners/" + d.cfg.Subject + "/devices and revoke some (DELETE /api/v1/desk/devices/{id})"
			}
		case http.StatusBadRequest:
			if errorCode(data) == "unknown_user_id" && path == "/api/v1/desk/activations" {
				msg += "\n  the practitioner is absent from the loaded directory: choose one that is in it with -subject"
			}
		}
		return status, errors.New(msg)
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return status, fmt.Errorf("%s %s: malformed answer: %v", method, path, err)
		}
	}
	return status, nil
}

// send sends one request as who, prints it (without secrets) and its
// status, and returns the status and the body.
func (d *demoRun) send(ctx context.Context, who role, method, path string, body any) (int, []byte, error) {
	var rd io.Reader
	var shown string
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, nil, err
		}
		rd, shown = bytes.NewReader(b), "  "+string(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, d.cfg.URL+path, rd)
	if err != nil {
		return 0, nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	var authShown string
	switch who {
	case desk:
		req.Header.Set("Authorization", "Bearer "+d.cfg.DeskKey)
		authShown = "desk: Bearer <desk key>"
	case idp:
		req.SetBasicAuth(d.cfg.ClientID, d.cfg.ClientSecret)
		authShown = "IdP: HTTP Basic " + d.cfg.ClientID + ":<secret>"
	}
	d.printf("   %s %s%s   (%s)\n", method, path, shown, authShown)
	res, err := d.http.Do(req)
	if err != nil {
		return 0, nil, fmt.Errorf("%s %s: %v", method, path, unwrapURLError(err))
	}
	defer res.Body.Close()
	data, err := io.ReadAll(io.LimitReader(res.Body, 1<<20))
	if err != nil {
		return res.StatusCode, nil, fmt.Errorf("%s %s: %v", method, path, err)
	}
	d.printf("   → HTTP %d %s\n", res.StatusCode, http.StatusText(res.StatusCode))
	d.retryAfter = res.Header.Get("Retry-After")
	return res.StatusCode, data, nil
}

// reasonOf is the "reason" member of a contract error body ("" if none).
func reasonOf(body []byte) string {
	var e struct {
		Reason string `json:"reason"`
	}
	_ = json.Unmarshal(body, &e)
	return e.Reason
}

// errorCode is the "error" member of a contract error body ("" if none).
func errorCode(body []byte) string {
	var e struct {
		Error string `json:"error"`
	}
	_ = json.Unmarshal(body, &e)
	return e.Error
}

// unwrapURLError drops the "Get "http://…": " that *url.Error adds.
func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// ---- output ----

func (d *demoRun) printf(format string, args ...any) {
	fmt.Fprintf(d.w, format, args...)
}

func (d *demoRun) heading(format string, args ...any) {
	d.step++
	fmt.Fprintf(d.w, "\n[%d] %s\n", d.step, fmt.Sprintf(format, args...))
}

func indentJSON(b []byte, prefix string) string {
	var buf bytes.Buffer
	if err := json.Indent(&buf, bytes.TrimSpace(b), prefix, "  "); err != nil {
		return prefix + strings.TrimSpace(string(b))
	}
	return prefix + buf.String()
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
