// Package keycloaktest is a fake Keycloak realm for tests and demos of the
// CIBA HTTP authentication channel, written from Keycloak's behaviour (its
// HttpAuthenticationChannelProvider, BackchannelAuthenticationEndpoint and
// BackchannelAuthenticationCallbackEndpoint):
//
//   - realm keys, RS256 (2048 bits), PS256 and ES256, published with their kid
//     and alg at <issuer>/protocol/openid-connect/certs, beside an RSA-OAEP
//     encryption key (use "enc"), as Keycloak publishes it;
//   - Start plays a CIBA request: it signs the channel token as Keycloak does
//     (typ claim "Bearer", iss, aud = iss, azp, sub, jti = the request's id,
//     iat, exp) and POSTs the channel request (login_hint, scope,
//     is_consent_required, binding_message and acr_values when set, and the
//     request's other parameters). Only a 201 is success, and only then is
//     the request stored: after the 201 has been read, plus StoreDelay;
//   - the callback endpoint <issuer>/protocol/openid-connect/ext/ciba/auth/callback
//     answers 401 without a Bearer; 403 for a token that is not the realm's
//     (signature, iss, aud, expired) or a request it does not hold (never
//     stored, expired, removed); 403 for a request already approved or
//     denied, which it then removes (a second callback after a SUCCEED
//     cancels the login); 400 for a body without a valid status; else 200,
//     approving (SUCCEED, with the extra string fields as notes) or denying
//     (UNAUTHORIZED, CANCELLED) the request.
//
// Knobs for failures: FailNext answers the next callbacks with a status
// without looking at them; HangNext holds the next callbacks before
// processing them (the caller times out, the request is still processed).
package keycloaktest

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
)

// Options configure a fake realm.
type Options struct {
	// Realm is the realm's name; default "ecps-test".
	Realm string
	// Listener serves the realm; default a new one on 127.0.0.1:0. The
	// issuer is http://<its address>/realms/<Realm>.
	Listener net.Listener
	// StoreDelay: a CIBA request is stored this long after its 201 was
	// read (until then, a callback for it gets 403).
	StoreDelay time.Duration
	// Now is the realm's clock; default time.Now.
	Now func() time.Time
	// Keys are the realm's signing keys (private JWKs with kid and alg);
	// default one each of RS256, PS256 and ES256, fresh.
	Keys []jose.JSONWebKey
}

// Keycloak is one fake realm.
type Keycloak struct {
	Issuer string
	srv    *http.Server
	ln     net.Listener
	opts   Options
	client *http.Client

	mu        sync.Mutex
	active    map[jose.SignatureAlgorithm]jose.JSONWebKey // the key that signs, per alg
	published []jose.JSONWebKey                           // public keys in the JWKS, in order
	encKey    jose.JSONWebKey
	requests  map[string]*Request // by jti (Keycloak's auth result id)
	callbacks []Callback
	failNext  []int
	hangNext  []time.Duration
	jwksReads int
	changed   chan struct{} // closed and replaced on every change
}

// Request is one CIBA request of the fake realm.
type Request struct {
	JTI     string
	Token   string // the channel token (the Bearer)
	Status  int    // the channel's answer to Keycloak
	Body    []byte // the channel request's body
	kc      *Keycloak
	stored  bool
	state   string // pending | approved | denied | cancelled
	notes   map[string]string
	expires time.Time
}

// Callback is one call of the callback endpoint, as received.
type Callback struct {
	JTI    string
	Status string
	Params map[string]string
	Answer int // what the fake answered
	At     time.Time
}

// New starts a fake realm that the test stops.
func New(t testing.TB, opts Options) *Keycloak {
	t.Helper()
	k, err := Start(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(k.Close)
	return k
}

// Start starts a fake realm; Close stops it.
func Start(opts Options) (*Keycloak, error) {
	if opts.Realm == "" {
		opts.Realm = "ecps-test"
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Listener == nil {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		opts.Listener = ln
	}
	k := &Keycloak{Issuer: "http://" + opts.Listener.Addr().String() + "/realms/" + opts.Realm, ln: opts.Listener, opts: opts,
		client: &http.Client{Timeout: 30 * time.Second}, active: map[jose.SignatureAlgorithm]jose.JSONWebKey{},
		requests: map[string]*Request{}, changed: make(chan struct{})}
	keys := opts.Keys
	if len(keys) == 0 {
		for _, alg := range []jose.SignatureAlgorithm{jose.RS256, jose.PS256, jose.ES256} {
			key, err := NewKey(alg)
			if err != nil {
				return nil, err
			}
			keys = append(keys, key)
		}
	}
	for _, key := range keys {
		k.addKey(key)
	}
	enc, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	k.encKey = jose.JSONWebKey{Key: &enc.PublicKey, KeyID: randomID(), Algorithm: "RSA-OAEP", Use: "enc"}
	mux := http.NewServeMux()
	base := "/realms/" + opts.Realm + "/protocol/openid-connect"
	mux.HandleFunc("GET "+base+"/certs", k.serveCerts)
	mux.HandleFunc("POST "+base+"/ext/ciba/auth/callback", k.serveCallback)
	k.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = k.srv.Serve(opts.Listener) }()
	return k, nil
}

// Close stops the realm.
func (k *Keycloak) Close() { _ = k.srv.Close() }

// URL is the realm's base URL (scheme and host).
func (k *Keycloak) URL() string { return "http://" + k.ln.Addr().String() }

// CertsURL is the realm's JWKS URL.
func (k *Keycloak) CertsURL() string { return k.Issuer + "/protocol/openid-connect/certs" }

// CallbackURL is the realm's CIBA callback endpoint.
func (k *Keycloak) CallbackURL() string {
	return k.Issuer + "/protocol/openid-connect/ext/ciba/auth/callback"
}

// NewKey makes a private signing key for alg (RS256 or PS256: RSA 2048;
// ES256: P-256) with a fresh kid.
func NewKey(alg jose.SignatureAlgorithm) (jose.JSONWebKey, error) {
	var priv crypto.Signer
	var err error
	switch alg {
	case jose.RS256, jose.PS256:
		priv, err = rsa.GenerateKey(rand.Reader, 2048)
	case jose.ES256:
		priv, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	default:
		return jose.JSONWebKey{}, fmt.Errorf("keycloaktest: no key for %s", alg)
	}
	if err != nil {
		return jose.JSONWebKey{}, err
	}
	return jose.JSONWebKey{Key: priv, KeyID: randomID(), Algorithm: string(alg), Use: "sig"}, nil
}

func (k *Keycloak) addKey(key jose.JSONWebKey) {
	k.active[jose.SignatureAlgorithm(key.Algorithm)] = key
	k.published = append(k.published, key.Public())
}

// Rotate makes a new active key for alg, as a realm's key rotation does:
// the new key signs from now on and joins the JWKS; the old one stays
// published (passive) so that tokens it signed still verify.
func (k *Keycloak) Rotate(alg jose.SignatureAlgorithm) (kid string, err error) {
	key, err := NewKey(alg)
	if err != nil {
		return "", err
	}
	k.mu.Lock()
	k.addKey(key)
	k.mu.Unlock()
	return key.KeyID, nil
}

// JWKS is the realm's public JWKS, as the certs endpoint serves it.
func (k *Keycloak) JWKS() []byte {
	k.mu.Lock()
	defer k.mu.Unlock()
	set := jose.JSONWebKeySet{Keys: append(append([]jose.JSONWebKey(nil), k.published...), k.encKey)}
	b, _ := json.Marshal(set)
	return b
}

// JWKSReads counts the certs endpoint's reads.
func (k *Keycloak) JWKSReads() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.jwksReads
}

func (k *Keycloak) serveCerts(w http.ResponseWriter, _ *http.Request) {
	b := k.JWKS()
	k.mu.Lock()
	k.jwksReads++
	k.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	w.Write(b)
}

// ---- the channel request ----

// CIBA is one backchannel authentication request made to the realm.
type CIBA struct {
	LoginHint       string            // the Keycloak username
	BindingMessage  string            // "" for none
	Client          string            // the CIBA client (azp); default "ciba-client"
	Alg             string            // the signing algorithm of the client's tokens; default RS256
	Expiry          time.Duration     // default 120 s (the realm's CIBA policy)
	Scope           string            // default "openid"
	ACRValues       string            // "" for none
	ConsentRequired bool              // the client's "consent required"
	Other           map[string]string // the request's other parameters
	User            string            // Keycloak's user id (sub); default random
}

// Claims returns the channel token's claims for c, as Keycloak writes them
// (its AccessToken for the channel: typ, iss, jti, azp, aud, iat, exp, sub).
func (k *Keycloak) Claims(c CIBA) map[string]any {
	if c.Client == "" {
		c.Client = "ciba-client"
	}
	if c.Expiry == 0 {
		c.Expiry = 120 * time.Second
	}
	if c.User == "" {
		c.User = uuid()
	}
	now := k.opts.Now()
	return map[string]any{"exp": now.Add(c.Expiry).Unix(), "iat": now.Unix(), "jti": uuid(), "iss": k.Issuer,
		"aud": k.Issuer, "sub": c.User, "typ": "Bearer", "azp": c.Client}
}

// Sign signs claims with the realm's active key for alg (RS256 when empty),
// as a compact JWS with typ JWT and the key's kid.
func (k *Keycloak) Sign(claims map[string]any, alg string) (string, error) {
	if alg == "" {
		alg = string(jose.RS256)
	}
	k.mu.Lock()
	key, ok := k.active[jose.SignatureAlgorithm(alg)]
	k.mu.Unlock()
	if !ok {
		return "", fmt.Errorf("keycloaktest: the realm has no %s key", alg)
	}
	return SignWith(key, claims)
}

// SignWith signs claims with any private JWK (its alg and kid).
func SignWith(key jose.JSONWebKey, claims map[string]any) (string, error) {
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.SignatureAlgorithm(key.Algorithm), Key: key},
		(&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		return "", err
	}
	payload, err := json.Marshal(claims)
	if err != nil {
		return "", err
	}
	obj, err := s.Sign(payload)
	if err != nil {
		return "", err
	}
	return obj.CompactSerialize()
}

// Body is the channel request's body for c, as Keycloak serializes its
// AuthenticationChannelRequest (null members left out).
func Body(c CIBA) []byte {
	if c.Scope == "" {
		c.Scope = "openid"
	}
	m := map[string]any{}
	for k, v := range c.Other {
		m[k] = v
	}
	m["scope"] = c.Scope
	m["login_hint"] = c.LoginHint
	m["is_consent_required"] = c.ConsentRequired
	if c.BindingMessage != "" {
		m["binding_message"] = c.BindingMessage
	}
	if c.ACRValues != "" {
		m["acr_values"] = c.ACRValues
	}
	b, _ := json.Marshal(m)
	return b
}

// Start plays a CIBA request: it signs the channel token, POSTs the channel
// request to channelURL and, if the answer is 201, stores the request
// (StoreDelay after reading the answer). Any other answer is what
// Keycloak's client would see as a 503; the request is not stored.
func (k *Keycloak) Start(ctx context.Context, channelURL string, c CIBA) (*Request, error) {
	claims := k.Claims(c)
	tok, err := k.Sign(claims, c.Alg)
	if err != nil {
		return nil, err
	}
	return k.Send(ctx, channelURL, tok, Body(c))
}

// Send POSTs a channel request with any token and body, storing the request
// (by the token's jti and exp) if the answer is 201.
func (k *Keycloak) Send(ctx context.Context, channelURL, token string, body []byte) (*Request, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, channelURL, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+token)
	res, err := k.client.Do(req)
	if err != nil {
		return nil, err
	}
	_, _ = io.Copy(io.Discard, res.Body)
	res.Body.Close()
	r := &Request{Token: token, Status: res.StatusCode, Body: body, kc: k, state: "pending"}
	var c struct {
		JTI string  `json:"jti"`
		Exp float64 `json:"exp"`
	}
	if p, err := jose.ParseSignedCompact(token, []jose.SignatureAlgorithm{jose.RS256, jose.PS256, jose.ES256}); err == nil {
		_ = json.Unmarshal(p.UnsafePayloadWithoutVerification(), &c)
	}
	r.JTI, r.expires = c.JTI, time.Unix(int64(c.Exp), 0)
	if res.StatusCode != http.StatusCreated {
		return r, nil
	}
	store := func() {
		k.mu.Lock()
		r.stored = true
		k.requests[r.JTI] = r
		k.changedLocked()
		k.mu.Unlock()
	}
	if k.opts.StoreDelay > 0 {
		time.AfterFunc(k.opts.StoreDelay, store)
	} else {
		store()
	}
	return r, nil
}

// State is the request's state: pending, approved, denied or cancelled
// (removed by a second callback); notes are a SUCCEED's extra fields.
func (r *Request) State() (state string, notes map[string]string) {
	r.kc.mu.Lock()
	defer r.kc.mu.Unlock()
	return r.state, r.notes
}

// Wait waits until the request is no longer pending, or ctx ends.
func (r *Request) Wait(ctx context.Context) (string, map[string]string, error) {
	for {
		r.kc.mu.Lock()
		st, notes, ch := r.state, r.notes, r.kc.changed
		r.kc.mu.Unlock()
		if st != "pending" {
			return st, notes, nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return st, notes, ctx.Err()
		}
	}
}

// ---- the callback endpoint ----

// FailNext answers the next len(statuses) callbacks with these statuses,
// without looking at them.
func (k *Keycloak) FailNext(statuses ...int) {
	k.mu.Lock()
	k.failNext = append(k.failNext, statuses...)
	k.mu.Unlock()
}

// HangNext holds each of the next len(delays) callbacks this long before
// processing it (processed even if the caller gave up meanwhile).
func (k *Keycloak) HangNext(delays ...time.Duration) {
	k.mu.Lock()
	k.hangNext = append(k.hangNext, delays...)
	k.mu.Unlock()
}

// Callbacks returns the callbacks received so far.
func (k *Keycloak) Callbacks() []Callback {
	k.mu.Lock()
	defer k.mu.Unlock()
	return append([]Callback(nil), k.callbacks...)
}

// WaitCallbacks waits until n callbacks have been received, or ctx ends.
func (k *Keycloak) WaitCallbacks(ctx context.Context, n int) ([]Callback, error) {
	for {
		k.mu.Lock()
		got, ch := append([]Callback(nil), k.callbacks...), k.changed
		k.mu.Unlock()
		if len(got) >= n {
			return got, nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return got, ctx.Err()
		}
	}
}

func (k *Keycloak) changedLocked() {
	close(k.changed)
	k.changed = make(chan struct{})
}

func (k *Keycloak) serveCallback(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	rec := Callback{At: k.opts.Now()}
	var hang time.Duration
	k.mu.Lock()
	if len(k.failNext) > 0 {
		status := k.failNext[0]
		k.failNext = k.failNext[1:]
		k.recordLocked(rec, body, status)
		k.mu.Unlock()
		writeError(w, status, "server_error", "failing as told")
		return
	}
	if len(k.hangNext) > 0 {
		hang = k.hangNext[0]
		k.hangNext = k.hangNext[1:]
	}
	k.mu.Unlock()
	if hang > 0 {
		time.Sleep(hang) // the caller may have given up: the request is still processed
	}
	status, code, desc := k.callback(r.Header.Get("Authorization"), body, &rec)
	k.mu.Lock()
	k.recordLocked(rec, body, status)
	k.mu.Unlock()
	if status != http.StatusOK {
		writeError(w, status, code, desc)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
}

func (k *Keycloak) recordLocked(rec Callback, body []byte, answer int) {
	var m map[string]any
	_ = json.Unmarshal(body, &m)
	rec.Answer = answer
	if s, ok := m["status"].(string); ok {
		rec.Status = s
	}
	for name, v := range m {
		if s, ok := v.(string); ok && name != "status" {
			if rec.Params == nil {
				rec.Params = map[string]string{}
			}
			rec.Params[name] = s
		}
	}
	k.callbacks = append(k.callbacks, rec)
	k.changedLocked()
}

// callback processes one callback as Keycloak's endpoint does.
func (k *Keycloak) callback(authorization string, body []byte, rec *Callback) (int, string, string) {
	raw, ok := strings.CutPrefix(authorization, "Bearer ")
	if !ok || raw == "" {
		return http.StatusUnauthorized, "invalid_token", "Invalid token"
	}
	jti, err := k.verify(raw)
	if err != nil {
		return http.StatusForbidden, "invalid_token", "Invalid token"
	}
	rec.JTI = jti
	k.mu.Lock()
	defer k.mu.Unlock()
	req := k.requests[jti]
	if req == nil || !k.opts.Now().Before(req.expires) {
		return http.StatusForbidden, "invalid_token", "Invalid token"
	}
	if req.state != "pending" {
		// As Keycloak: a callback for a request no longer pending removes it.
		delete(k.requests, jti)
		req.state = "cancelled"
		k.changedLocked()
		return http.StatusForbidden, "invalid_token", "Invalid token"
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(body, &m); err != nil {
		return http.StatusBadRequest, "invalid_request", "Invalid body"
	}
	var status string
	if raw, ok := m["status"]; !ok || json.Unmarshal(raw, &status) != nil {
		return http.StatusBadRequest, "invalid_request", "Invalid authentication status"
	}
	notes := map[string]string{}
	for name, v := range m {
		if name == "status" {
			continue
		}
		var s string
		if json.Unmarshal(v, &s) != nil {
			return http.StatusBadRequest, "invalid_request", "Invalid body"
		}
		notes[name] = s
	}
	switch status {
	case "SUCCEED":
		req.state, req.notes = "approved", notes
	case "UNAUTHORIZED":
		req.state = "denied"
	case "CANCELLED":
		req.state = "cancelled"
	default:
		return http.StatusBadRequest, "invalid_request", "Invalid authentication status"
	}
	k.changedLocked()
	return http.StatusOK, "", ""
}

// verify checks a Bearer as Keycloak's callback endpoint does: a signature
// by a realm key, iss, active (exp), aud holding the issuer. It returns jti.
func (k *Keycloak) verify(raw string) (string, error) {
	obj, err := jose.ParseSignedCompact(raw, []jose.SignatureAlgorithm{jose.RS256, jose.PS256, jose.ES256})
	if err != nil || len(obj.Signatures) != 1 {
		return "", errors.New("malformed")
	}
	kid := obj.Signatures[0].Protected.KeyID
	k.mu.Lock()
	keys := append([]jose.JSONWebKey(nil), k.published...)
	k.mu.Unlock()
	var payload []byte
	verified := false
	for _, key := range keys {
		if key.KeyID != kid {
			continue
		}
		if payload, err = obj.Verify(key); err == nil {
			verified = true
			break
		}
	}
	if !verified {
		return "", errors.New("signature")
	}
	var c struct {
		Iss string          `json:"iss"`
		Aud json.RawMessage `json:"aud"`
		Exp float64         `json:"exp"`
		Jti string          `json:"jti"`
	}
	if err := json.Unmarshal(payload, &c); err != nil {
		return "", err
	}
	if c.Iss != k.Issuer {
		return "", errors.New("issuer")
	}
	if c.Exp != 0 && !k.opts.Now().Before(time.Unix(int64(c.Exp), 0)) {
		return "", errors.New("expired")
	}
	var aud []string
	var one string
	if json.Unmarshal(c.Aud, &one) == nil {
		aud = []string{one}
	} else if json.Unmarshal(c.Aud, &aud) != nil {
		return "", errors.New("audience")
	}
	for _, a := range aud {
		if a == k.Issuer {
			return c.Jti, nil
		}
	}
	return "", errors.New("audience")
}

func writeError(w http.ResponseWriter, status int, code, desc string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": code, "error_description": desc})
}

func randomID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// uuid is a random UUID, as Keycloak's ids.
func uuid() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b)
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}
