package keycloak

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/go-jose/go-jose/v4"
)

// ErrInvalidToken: the Bearer of a channel request is not a valid token of
// a configured realm. Errors wrapping it are *TokenError, whose Reason says
// why (for the metric and the log; the caller gets one answer).
var ErrInvalidToken = errors.New("invalid Keycloak token")

// Reasons a token is rejected.
const (
	ReasonMissing     = "missing"     // no Bearer
	ReasonMalformed   = "malformed"   // not a compact JWS of RS256, PS256 or ES256, or bad claims JSON
	ReasonIssuer      = "issuer"      // iss is not a configured realm
	ReasonUnknownKey  = "unknown_key" // no key of the realm's JWKS has this kid and alg
	ReasonSignature   = "signature"   // no key verifies it
	ReasonAudience    = "audience"    // aud does not hold the issuer
	ReasonExpired     = "expired"     // exp (with the leeway) has passed, or no exp
	ReasonNotYetValid = "not_yet_valid"
	ReasonType        = "typ"    // the typ claim is not Bearer
	ReasonClaims      = "claims" // azp or jti missing or too long
)

// TokenReasons lists every reason, for the metric.
var TokenReasons = []string{ReasonMissing, ReasonMalformed, ReasonIssuer, ReasonUnknownKey, ReasonSignature,
	ReasonAudience, ReasonExpired, ReasonNotYetValid, ReasonType, ReasonClaims}

// TokenError is a rejected token.
type TokenError struct{ Reason string }

func (e *TokenError) Error() string { return "invalid Keycloak token: " + e.Reason }

// Unwrap makes errors.Is(err, ErrInvalidToken) true.
func (e *TokenError) Unwrap() error { return ErrInvalidToken }

func tokenErr(reason string) error { return &TokenError{Reason: reason} }

// ReasonOf returns why a token was rejected, "" for another error.
func ReasonOf(err error) string {
	var te *TokenError
	if errors.As(err, &te) {
		return te.Reason
	}
	return ""
}

// Token is a verified channel token.
type Token struct {
	Raw       string
	Issuer    string
	AZP       string // the CIBA client
	Subject   string // Keycloak's user id
	JTI       string // Keycloak's id of this CIBA request
	IssuedAt  time.Time
	ExpiresAt time.Time
}

// Algorithms accepted on a realm token.
var Algorithms = []jose.SignatureAlgorithm{jose.RS256, jose.PS256, jose.ES256}

// maxTokenLen bounds the Bearer read (a Keycloak token is about 1 KiB).
const maxTokenLen = 16 << 10

// MaxLeeway is the most clock leeway allowed on exp, nbf and iat.
const MaxLeeway = 60 * time.Second

// claims are a token's claims as JSON.
type claims struct {
	Iss string          `json:"iss"`
	Aud json.RawMessage `json:"aud"`
	Azp string          `json:"azp"`
	Sub string          `json:"sub"`
	Jti string          `json:"jti"`
	Typ string          `json:"typ"`
	Exp *numericDate    `json:"exp"`
	Iat *numericDate    `json:"iat"`
	Nbf *numericDate    `json:"nbf"`
}

// numericDate is a JWT NumericDate: a JSON number of seconds (a string is refused).
type numericDate struct{ t time.Time }

func (n *numericDate) UnmarshalJSON(b []byte) error {
	var f float64
	if len(b) == 0 || b[0] == '"' {
		return errors.New("NumericDate must be a number")
	}
	if err := json.Unmarshal(b, &f); err != nil {
		return err
	}
	if math.IsNaN(f) || f < 0 || f > 1e11 {
		return errors.New("NumericDate out of range")
	}
	sec, frac := math.Modf(f)
	n.t = time.Unix(int64(sec), int64(frac*1e9)).UTC()
	return nil
}

// parseClaims decodes a token's claims: one JSON object, nothing after it.
func parseClaims(payload []byte) (claims, error) {
	var c claims
	dec := json.NewDecoder(bytes.NewReader(payload))
	if err := dec.Decode(&c); err != nil {
		return claims{}, err
	}
	if dec.More() {
		return claims{}, errors.New("data after the claims")
	}
	return c, nil
}

// audience reads aud: a string or an array of strings.
func audience(raw json.RawMessage) ([]string, bool) {
	if len(raw) == 0 {
		return nil, false
	}
	var one string
	if err := json.Unmarshal(raw, &one); err == nil {
		return []string{one}, true
	}
	var many []string
	if err := json.Unmarshal(raw, &many); err == nil {
		return many, true
	}
	return nil, false
}

// splitToken parses a compact JWS of an accepted algorithm and returns it
// with its unverified claims (to find the realm by iss).
func splitToken(raw string) (*jose.JSONWebSignature, claims, error) {
	if raw == "" || len(raw) > maxTokenLen || strings.Count(raw, ".") != 2 {
		return nil, claims{}, tokenErr(ReasonMalformed)
	}
	obj, err := jose.ParseSignedCompact(raw, Algorithms)
	if err != nil || len(obj.Signatures) != 1 {
		return nil, claims{}, tokenErr(ReasonMalformed)
	}
	c, err := parseClaims(obj.UnsafePayloadWithoutVerification())
	if err != nil {
		return nil, claims{}, tokenErr(ReasonMalformed)
	}
	return obj, c, nil
}

// checkClaims applies the contract's checks to verified claims.
func checkClaims(c claims, issuer string, now time.Time, leeway time.Duration) (Token, error) {
	aud, ok := audience(c.Aud)
	if !ok {
		return Token{}, tokenErr(ReasonAudience)
	}
	found := false
	for _, a := range aud {
		if a == issuer {
			found = true
		}
	}
	if !found {
		return Token{}, tokenErr(ReasonAudience)
	}
	if c.Exp == nil || now.After(c.Exp.t.Add(leeway)) {
		return Token{}, tokenErr(ReasonExpired)
	}
	if c.Nbf != nil && c.Nbf.t.After(now.Add(leeway)) {
		return Token{}, tokenErr(ReasonNotYetValid)
	}
	if c.Iat != nil && c.Iat.t.After(now.Add(leeway)) {
		return Token{}, tokenErr(ReasonNotYetValid)
	}
	if c.Typ != "Bearer" {
		return Token{}, tokenErr(ReasonType)
	}
	if !printable(c.Azp, 255) || !printable(c.Jti, 255) {
		return Token{}, tokenErr(ReasonClaims)
	}
	t := Token{Issuer: c.Iss, AZP: c.Azp, Subject: c.Sub, JTI: c.Jti, ExpiresAt: c.Exp.t}
	if c.Iat != nil {
		t.IssuedAt = c.Iat.t
	}
	return t, nil
}

// printable: 1..max printable ASCII characters (client ids and request ids).
func printable(s string, max int) bool {
	if s == "" || len(s) > max {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 0x21 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// Verify checks a channel token against the configured realms: a compact
// JWS (RS256, PS256 or ES256) by a key of the realm named by its iss,
// whose aud holds that issuer, not expired (exp, with the leeway), with
// typ "Bearer", azp and jti. Errors are *TokenError, or a context error.
func (v *Verifier) Verify(ctx context.Context, raw string) (Token, *Realm, error) {
	obj, unverified, err := splitToken(raw)
	if err != nil {
		return Token{}, nil, err
	}
	rk := v.realms[unverified.Iss]
	if rk == nil {
		return Token{}, nil, tokenErr(ReasonIssuer)
	}
	hdr := obj.Signatures[0].Protected
	keys, err := rk.lookup(ctx, hdr.KeyID, jose.SignatureAlgorithm(hdr.Algorithm))
	if err != nil {
		return Token{}, nil, err
	}
	var payload []byte
	verified := false
	for _, k := range keys {
		if payload, err = obj.Verify(k.Key); err == nil {
			verified = true
			break
		}
	}
	if !verified {
		return Token{}, nil, tokenErr(ReasonSignature)
	}
	c, err := parseClaims(payload)
	if err != nil || c.Iss != rk.realm.Issuer {
		return Token{}, nil, tokenErr(ReasonMalformed)
	}
	t, err := checkClaims(c, rk.realm.Issuer, v.opts.Now(), v.opts.Leeway)
	if err != nil {
		return Token{}, nil, err
	}
	t.Raw = raw
	return t, rk.realm, nil
}

// bearer reads "Bearer <token>" (the scheme case-insensitive, as RFC 6750).
func bearer(authorization string) (string, error) {
	scheme, tok, ok := strings.Cut(authorization, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(tok) == "" {
		return "", tokenErr(ReasonMissing)
	}
	return strings.TrimSpace(tok), nil
}

// errorf wraps a sentinel with a description.
func errorf(sentinel error, format string, args ...any) error {
	return fmt.Errorf("%w: %s", sentinel, fmt.Sprintf(format, args...))
}
