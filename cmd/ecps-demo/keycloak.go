package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/ecps-sante/ecps/keycloak/keycloaktest"
)

// demoKeycloakClient is the demo realm's CIBA client (its tokens' azp).
const demoKeycloakClient = "ecps-demo-client"

// keycloakDemo plays a Keycloak realm delegating logins to the service:
// the desk activates a phone, the phone enrols, then the realm sends two
// CIBA channel requests (one whose binding message is the verification
// number, one with a message to compare) that the phone approves, and the
// realm's callback endpoint shows what the service called back.
func keycloakDemo(ctx context.Context, cfg config, w io.Writer) (err error) {
	d := &demoRun{cfg: cfg, w: w, http: &http.Client{Timeout: 30 * time.Second}}
	if err := d.preflight(ctx); err != nil {
		return err
	}
	kc, err := startRealm(cfg)
	if err != nil {
		return err
	}
	defer kc.Close()
	d.printf("== e-CPS demo: Keycloak's CIBA channel, on %s\n", cfg.URL)
	d.printf("   This demo plays the enrolment desk, the practitioner's phone (%s) and a Keycloak realm:\n", cfg.Device)
	d.printf("   %s, signing with the realm's throw-away keys (written by `make run` to %s),\n", kc.Issuer, cfg.KeycloakKeys)
	d.printf("   serving its JWKS and its CIBA callback endpoint as Keycloak does.\n")
	defer func() {
		if cerr := d.cleanUp(ctx); cerr != nil && err == nil {
			err = cerr
		}
	}()
	if err := d.activateAndEnrol(ctx); err != nil {
		return err
	}
	number := randomDigits(2)
	if err := d.keycloakLogin(ctx, kc, number, true); err != nil {
		return err
	}
	if err := d.keycloakLogin(ctx, kc, "Connexion-DMP-"+randomHex(2), false); err != nil {
		return err
	}
	d.printf("\n== Keycloak now issues its tokens to the CIBA client: both logins approved on the phone\n")
	return nil
}

// startRealm starts the fake realm on the issuer's address, with the keys
// of the dev config.
func startRealm(cfg config) (*keycloaktest.Keycloak, error) {
	u, err := url.Parse(cfg.KeycloakIssuer)
	name, ok := strings.CutPrefix(u.Path, "/realms/")
	if err != nil || u.Scheme != "http" || !ok || name == "" || strings.Contains(name, "/") {
		return nil, fmt.Errorf("demo realm issuer %q: want http://host:port/realms/<name>", cfg.KeycloakIssuer)
	}
	raw, err := os.ReadFile(cfg.KeycloakKeys)
	if err != nil {
		return nil, fmt.Errorf("demo realm keys: %v (restart `make run`: it writes them)", err)
	}
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(raw, &set); err != nil || len(set.Keys) == 0 {
		return nil, fmt.Errorf("demo realm keys %s: not a JWKS of private keys", cfg.KeycloakKeys)
	}
	ln, err := net.Listen("tcp", u.Host)
	if err != nil {
		return nil, fmt.Errorf("the demo realm cannot listen on %s (%v): is another demo running?", u.Host, err)
	}
	kc, err := keycloaktest.Start(keycloaktest.Options{Realm: name, Listener: ln, Keys: set.Keys})
	if err != nil {
		ln.Close()
		return nil, err
	}
	if kc.Issuer != cfg.KeycloakIssuer {
		kc.Close()
		return nil, fmt.Errorf("the demo realm's issuer is %s, the service expects %s", kc.Issuer, cfg.KeycloakIssuer)
	}
	return kc, nil
}

// keycloakLogin plays one CIBA login through the channel: Keycloak's
// request, the phone's approval, the callback.
func (d *demoRun) keycloakLogin(ctx context.Context, kc *keycloaktest.Keycloak, binding string, isNumber bool) error {
	if isNumber {
		d.heading("Keycloak: a CIBA client asks for a login of %s; its page shows the number %s", d.cfg.Subject, binding)
		d.printf("   binding_message %q: 2 to 6 digits, so it is the verification number the user types on the phone.\n", binding)
	} else {
		d.heading("Keycloak: a CIBA client asks for a login of %s with the binding message %q", d.cfg.Subject, binding)
		d.printf("   Not a number: the phone shows the message (number_digits 0); the user compares it with the client's page.\n")
	}
	c := keycloaktest.CIBA{LoginHint: d.cfg.Subject, BindingMessage: binding, Client: demoKeycloakClient, Scope: "openid"}
	claims := kc.Claims(c)
	token, err := kc.Sign(claims, string(jose.RS256))
	if err != nil {
		return err
	}
	body := keycloaktest.Body(c)
	channel := d.cfg.URL + "/api/v1/keycloak/ciba"
	cb, _ := json.Marshal(claims)
	d.printf("   POST %s   (Authorization: Bearer <the realm's RS256 token>)\n   token claims:\n%s\n   body:\n%s\n",
		channel, indentJSON(cb, "     "), indentJSON(body, "     "))
	req, err := kc.Send(ctx, channel, token, body)
	if err != nil {
		return fmt.Errorf("channel request: %v", unwrapURLError(err))
	}
	d.printf("   → HTTP %d %s\n", req.Status, http.StatusText(req.Status))
	if req.Status != http.StatusCreated {
		return fmt.Errorf("the service answered the channel request with HTTP %d, want 201: is the demo realm in its config?"+
			" (restart `make run`; see its log for the reason)", req.Status)
	}
	d.printf("   Keycloak stores the CIBA request now that it has read the 201, and waits for the callback.\n")

	d.heading("Phone: the practitioner's pending challenges")
	out, err := d.device(ctx, "challenges", "-json")
	if err != nil {
		return err
	}
	id, err := newestChallenge(out, binding, isNumber)
	if err != nil {
		return err
	}
	if _, err := d.device(ctx, "show", id); err != nil {
		return err
	}
	if isNumber {
		d.heading("Phone: approve, typing the number the client's page shows")
		_, err = d.device(ctx, "approve", id, "--number", binding)
	} else {
		d.heading("Phone: the messages match: approve (no number to type)")
		_, err = d.device(ctx, "approve", id)
	}
	if err != nil {
		return err
	}

	d.heading("Keycloak: the callback to %s", kc.CallbackURL())
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	state, notes, err := req.Wait(wctx)
	if err != nil {
		return fmt.Errorf("no callback from the service within 30 s: %v", err)
	}
	for _, call := range kc.Callbacks() {
		if call.JTI != req.JTI {
			continue
		}
		b, _ := json.Marshal(callbackBody(call))
		d.printf("   POST callback   (Authorization: Bearer <the same token>)\n%s\n   → HTTP %d\n", indentJSON(b, "     "), call.Answer)
	}
	d.printf("   Keycloak's request is now %s", state)
	if len(notes) > 0 {
		d.printf("; the extra fields become the auth-session notes ciba_callback_response_param_<name>")
	}
	d.printf("\n")
	if state != "approved" || notes["device_id"] == "" {
		return fmt.Errorf("the CIBA request is %s, want approved", state)
	}
	return nil
}

// callbackBody is a callback as sent: status and extra fields.
func callbackBody(c keycloaktest.Callback) map[string]string {
	m := map[string]string{"status": c.Status}
	for k, v := range c.Params {
		m[k] = v
	}
	return m
}

// newestChallenge picks, in `ecps-device challenges -json`, the newest
// challenge showing binding (or none, for a number).
func newestChallenge(listing, binding string, isNumber bool) (string, error) {
	var list struct {
		Challenges []struct {
			ChallengeID    string  `json:"challenge_id"`
			BindingMessage *string `json:"binding_message"`
			CreatedAt      string  `json:"created_at"`
			NumberDigits   int     `json:"number_digits"`
		} `json:"challenges"`
	}
	if err := json.Unmarshal([]byte(listing), &list); err != nil {
		return "", fmt.Errorf("challenges -json: %v", err)
	}
	var ids []string
	created := map[string]string{}
	for _, c := range list.Challenges {
		match := c.BindingMessage == nil && c.NumberDigits == len(binding)
		if !isNumber {
			match = c.BindingMessage != nil && *c.BindingMessage == binding && c.NumberDigits == 0
		}
		if match {
			ids = append(ids, c.ChallengeID)
			created[c.ChallengeID] = c.CreatedAt
		}
	}
	if len(ids) == 0 {
		return "", errors.New("the login is not among the phone's pending challenges")
	}
	sort.SliceStable(ids, func(i, j int) bool { return created[ids[i]] < created[ids[j]] })
	return ids[len(ids)-1], nil
}

// randomDigits is a random number of n digits, leading zeros kept.
func randomDigits(n int) string {
	max := 1
	for range n {
		max *= 10
	}
	return fmt.Sprintf("%0*d", n, mrand.IntN(max))
}
