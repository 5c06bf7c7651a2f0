package deviceproof

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/go-jose/go-jose/v4"
	josejson "github.com/go-jose/go-jose/v4/json"
)

// The JWS types of the contract.
const (
	TypEnrol    = "ecps-enrol+jwt"
	TypRequest  = "ecps-proof+jwt"
	TypDecision = "ecps-decision+jwt"
)

// Reason says why a proof was rejected. Values are stable metric labels.
type Reason string

const (
	ReasonMissing       Reason = "missing"        // no ECPS-Proof authorization
	ReasonMalformed     Reason = "malformed"      // not a compact JWS, bad JSON, missing claims
	ReasonAlg           Reason = "alg"            // alg other than ES256
	ReasonTyp           Reason = "typ"            // typ absent or not the expected one
	ReasonUnknownDevice Reason = "unknown_device" // kid names no device
	ReasonSignature     Reason = "signature"      // signature does not verify
	ReasonSkew          Reason = "skew"           // |now - iat| beyond the allowed skew
	ReasonReplay        Reason = "replay"         // jti seen before
	ReasonHTM           Reason = "htm"
	ReasonHTU           Reason = "htu"
	ReasonBH            Reason = "bh"
	ReasonSuspended     Reason = "suspended"
	ReasonRevoked       Reason = "revoked"
	ReasonClaims        Reason = "claims" // a claim does not match what is expected (activation_id, ...)
)

// Reasons lists every Reason, for metric initialisation and tests.
var Reasons = []Reason{ReasonMissing, ReasonMalformed, ReasonAlg, ReasonTyp, ReasonUnknownDevice,
	ReasonSignature, ReasonSkew, ReasonReplay, ReasonHTM, ReasonHTU, ReasonBH, ReasonSuspended,
	ReasonRevoked, ReasonClaims}

// Error is a rejected proof.
type Error struct{ Reason Reason }

func (e *Error) Error() string { return "device proof rejected: " + string(e.Reason) }

func reject(r Reason) error { return &Error{Reason: r} }

// ReasonOf returns the Reason of a rejection, or "" if err is not one.
func ReasonOf(err error) Reason {
	var e *Error
	if errors.As(err, &e) {
		return e.Reason
	}
	return ""
}

// ErrBadKey is returned by ParsePublicJWK for anything but a P-256 public key.
var ErrBadKey = errors.New("deviceproof: public_key must be an EC P-256 public JWK with a point on the curve")

// PublicKey is a device's parsed public key.
type PublicKey struct {
	Key *ecdsa.PublicKey
	// Thumbprint is the RFC 7638 SHA-256 thumbprint, base64url: the key's identity.
	Thumbprint string
	// JWK is the canonical JSON of the public key, for storage.
	JWK []byte
}

// ParsePublicJWK parses an untrusted JWK. go-jose checks the curve, the
// coordinate lengths and that the point is on the curve.
func ParsePublicJWK(raw []byte) (PublicKey, error) {
	var k jose.JSONWebKey
	if err := json.Unmarshal(raw, &k); err != nil {
		return PublicKey{}, ErrBadKey
	}
	if !k.IsPublic() || !k.Valid() {
		return PublicKey{}, ErrBadKey
	}
	pub, ok := k.Key.(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P256() {
		return PublicKey{}, ErrBadKey
	}
	tp, err := k.Thumbprint(crypto.SHA256)
	if err != nil {
		return PublicKey{}, ErrBadKey
	}
	canonical, err := jose.JSONWebKey{Key: pub}.MarshalJSON()
	if err != nil {
		return PublicKey{}, ErrBadKey
	}
	return PublicKey{Key: pub, Thumbprint: base64.RawURLEncoding.EncodeToString(tp), JWK: canonical}, nil
}

// Token is a compact JWS whose header has been checked but whose signature
// has not been verified yet.
type Token struct {
	KeyID string
	jws   *jose.JSONWebSignature
}

// maxTokenLen bounds what is decoded; proofs are a few hundred bytes.
const maxTokenLen = 8 << 10

type header struct {
	Alg string `json:"alg"`
	Typ string `json:"typ"`
	Kid string `json:"kid"`
}

// Parse checks the shape of a compact JWS and its header: alg exactly ES256,
// typ exactly wantTyp. It does not verify the signature.
func Parse(compact, wantTyp string) (*Token, error) {
	if len(compact) > maxTokenLen || strings.Count(compact, ".") != 2 {
		return nil, reject(ReasonMalformed)
	}
	rawHeader, err := base64.RawURLEncoding.DecodeString(compact[:strings.IndexByte(compact, '.')])
	if err != nil {
		return nil, reject(ReasonMalformed)
	}
	// go-jose's json matches member names case-sensitively, as JOSE requires.
	var h header
	if err := decodeStrict(rawHeader, &h); err != nil {
		return nil, err
	}
	if h.Alg != string(jose.ES256) {
		return nil, reject(ReasonAlg)
	}
	if h.Typ != wantTyp {
		return nil, reject(ReasonTyp)
	}
	jws, err := jose.ParseSignedCompact(compact, []jose.SignatureAlgorithm{jose.ES256})
	if err != nil || len(jws.Signatures) != 1 {
		return nil, reject(ReasonMalformed)
	}
	return &Token{KeyID: h.Kid, jws: jws}, nil
}

// Verify checks the signature with pub and returns the payload.
func (t *Token) Verify(pub *ecdsa.PublicKey) ([]byte, error) {
	payload, err := t.jws.Verify(pub)
	if err != nil {
		return nil, reject(ReasonSignature)
	}
	return payload, nil
}

// decodeClaims reads exactly one JSON object, member names matched
// case-sensitively, nothing after it.
func decodeClaims(payload []byte, v any) error { return decodeStrict(payload, v) }

func decodeStrict(b []byte, v any) error {
	dec := josejson.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(v); err != nil {
		return reject(ReasonMalformed)
	}
	var extra josejson.RawMessage
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return reject(ReasonMalformed)
	}
	return nil
}

// unixTime is a JWT NumericDate restricted to integers.
type unixTime int64

func (u *unixTime) UnmarshalJSON(b []byte) error {
	if len(b) == 0 || !(b[0] == '-' || b[0] >= '0' && b[0] <= '9') {
		return errors.New("iat must be an integer")
	}
	i, err := strconv.ParseInt(string(b), 10, 64)
	if err != nil {
		return err
	}
	*u = unixTime(i)
	return nil
}

func checkIat(iat unixTime, now time.Time, skew time.Duration) error {
	if iat == 0 {
		return reject(ReasonMalformed)
	}
	d := now.Sub(time.Unix(int64(iat), 0))
	if d > skew || d < -skew {
		return reject(ReasonSkew)
	}
	return nil
}

// RequestClaims are the claims of an ecps-proof+jwt.
type RequestClaims struct {
	HTM string   `json:"htm"`
	HTU string   `json:"htu"`
	IAT unixTime `json:"iat"`
	JTI string   `json:"jti"`
	BH  string   `json:"bh"`
}

// Request is what a request proof is checked against.
type Request struct {
	Method string
	Path   string // URL path, no query
	Body   []byte
}

// BodyHash returns the bh value of body: base64url (no padding) of its SHA-256.
func BodyHash(body []byte) string {
	sum := sha256.Sum256(body)
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// ValidJTI reports whether a jti has the shape the service accepts: 16 to 128
// characters of the base64url alphabet (≥ 96 bits when random).
func ValidJTI(s string) bool { return validID(s, 16, 128) }

// ValidKeyID reports whether a kid can name a device: "dev_" and 8 to 64
// base64url characters. Anything else is refused before any lookup.
func ValidKeyID(s string) bool {
	return strings.HasPrefix(s, "dev_") && validID(s[4:], 8, 64)
}

func validID(s string, min, max int) bool {
	if len(s) < min || len(s) > max {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// VerifyRequest verifies a request proof's signature with pub and checks its
// claims against the request and the clock. Replay is left to the caller.
func VerifyRequest(tok *Token, pub *ecdsa.PublicKey, req Request, now time.Time, skew time.Duration) (RequestClaims, error) {
	payload, err := tok.Verify(pub)
	if err != nil {
		return RequestClaims{}, err
	}
	var c RequestClaims
	if err := decodeClaims(payload, &c); err != nil {
		return RequestClaims{}, err
	}
	if !ValidJTI(c.JTI) {
		return RequestClaims{}, reject(ReasonMalformed)
	}
	if err := checkIat(c.IAT, now, skew); err != nil {
		return RequestClaims{}, err
	}
	if c.HTM != req.Method {
		return RequestClaims{}, reject(ReasonHTM)
	}
	if c.HTU != req.Path {
		return RequestClaims{}, reject(ReasonHTU)
	}
	if c.BH != BodyHash(req.Body) {
		return RequestClaims{}, reject(ReasonBH)
	}
	return c, nil
}

// EnrolClaims are the claims of an ecps-enrol+jwt.
type EnrolClaims struct {
	ActivationID string   `json:"activation_id"`
	IAT          unixTime `json:"iat"`
}

// VerifyEnrol verifies an enrolment proof: signed by the key being enrolled,
// over the activation being used, recent.
func VerifyEnrol(compact string, pub *ecdsa.PublicKey, activationID string, now time.Time, skew time.Duration) error {
	tok, err := Parse(compact, TypEnrol)
	if err != nil {
		return err
	}
	payload, err := tok.Verify(pub)
	if err != nil {
		return err
	}
	var c EnrolClaims
	if err := decodeClaims(payload, &c); err != nil {
		return err
	}
	if c.ActivationID != activationID {
		return reject(ReasonClaims)
	}
	return checkIat(c.IAT, now, skew)
}

// DecisionClaims are the claims of an ecps-decision+jwt.
type DecisionClaims struct {
	ChallengeID string   `json:"challenge_id"`
	Nonce       string   `json:"nonce"`
	Decision    string   `json:"decision"`
	Number      *string  `json:"number"`
	UV          string   `json:"uv"`
	IAT         unixTime `json:"iat"`
}

// VerifyDecision verifies a decision's signature and freshness. Matching
// challenge_id, nonce and the decision values is the caller's job.
func VerifyDecision(tok *Token, pub *ecdsa.PublicKey, now time.Time, skew time.Duration) (DecisionClaims, error) {
	payload, err := tok.Verify(pub)
	if err != nil {
		return DecisionClaims{}, err
	}
	var c DecisionClaims
	if err := decodeClaims(payload, &c); err != nil {
		return DecisionClaims{}, err
	}
	if err := checkIat(c.IAT, now, skew); err != nil {
		return DecisionClaims{}, err
	}
	return c, nil
}

// IssuedAt returns the iat claim as a time.
func (c RequestClaims) IssuedAt() time.Time { return time.Unix(int64(c.IAT), 0) }
