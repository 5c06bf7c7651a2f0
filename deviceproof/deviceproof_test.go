package deviceproof

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/asn1"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
)

// skew is the contract's proof_max_skew.
const skew = 60 * time.Second

// vectorFile is testdata/jose-vectors.json, made by the npm package jose.
type vectorFile struct {
	Now        int64           `json:"now"`
	PublicJWK  json.RawMessage `json:"public_jwk"`
	PrivateJWK json.RawMessage `json:"private_jwk_for_tests_only"`
	DeviceID   string          `json:"device_id"`
	Enrol      struct {
		ActivationID string `json:"activation_id"`
		JWS          string `json:"jws"`
	} `json:"enrolment_proof"`
	Requests []struct {
		Method string `json:"method"`
		Path   string `json:"path"`
		Body   string `json:"body"`
		JWS    string `json:"jws"`
	} `json:"request_proofs"`
	Decision struct {
		ChallengeID string `json:"challenge_id"`
		Nonce       string `json:"nonce"`
		JWS         string `json:"jws"`
	} `json:"decision"`
}

// fixture is the vectors plus what tests derive from them.
type fixture struct {
	vec  vectorFile
	now  time.Time
	priv *ecdsa.PrivateKey // the vector's key, to sign variants
	pub  *ecdsa.PublicKey  // parsed by ParsePublicJWK
}

func loadFixture(t testing.TB) *fixture {
	t.Helper()
	b, err := os.ReadFile("testdata/jose-vectors.json")
	if err != nil {
		t.Fatal(err)
	}
	var v vectorFile
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	if v.Now == 0 || len(v.Requests) != 2 || v.Enrol.JWS == "" || v.Decision.JWS == "" || v.DeviceID == "" {
		t.Fatalf("incomplete vectors: %+v", v)
	}
	pk, err := ParsePublicJWK(v.PublicJWK)
	if err != nil {
		t.Fatalf("ParsePublicJWK(vector): %v", err)
	}
	var priv jose.JSONWebKey
	if err := json.Unmarshal(v.PrivateJWK, &priv); err != nil {
		t.Fatal(err)
	}
	k, ok := priv.Key.(*ecdsa.PrivateKey)
	if !ok {
		t.Fatalf("private_jwk_for_tests_only is %T", priv.Key)
	}
	if !k.PublicKey.Equal(pk.Key) {
		t.Fatal("private_jwk_for_tests_only does not match public_jwk")
	}
	return &fixture{vec: v, now: time.Unix(v.Now, 0), priv: k, pub: pk.Key}
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

func unb64(t testing.TB, s string) []byte {
	t.Helper()
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// signRaw signs header and payload exactly as given (ES256, raw R||S), for
// headers go-jose would not write.
func signRaw(t testing.TB, key *ecdsa.PrivateKey, header, payload string) string {
	t.Helper()
	in := b64([]byte(header)) + "." + b64([]byte(payload))
	h := sha256.Sum256([]byte(in))
	r, s, err := ecdsa.Sign(rand.Reader, key, h[:])
	if err != nil {
		t.Fatal(err)
	}
	sig := make([]byte, 64)
	r.FillBytes(sig[:32])
	s.FillBytes(sig[32:])
	return in + "." + b64(sig)
}

// signJose signs payload with go-jose: header {"alg":alg,"typ":typ,"kid":kid},
// typ and kid left out when empty.
func signJose(t testing.TB, alg jose.SignatureAlgorithm, key any, typ, kid string, payload []byte) string {
	t.Helper()
	opts := &jose.SignerOptions{}
	if typ != "" {
		opts = opts.WithType(jose.ContentType(typ))
	}
	if kid != "" {
		opts = opts.WithHeader("kid", kid)
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: key}, opts)
	if err != nil {
		t.Fatal(err)
	}
	jws, err := signer.Sign(payload)
	if err != nil {
		t.Fatal(err)
	}
	s, err := jws.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// del, as a value in claims overrides, removes the claim.
type del struct{}

// claimsJSON returns base with over applied: a del value removes a claim,
// a json.RawMessage is written as is.
func claimsJSON(t testing.TB, base map[string]any, over map[string]any) []byte {
	t.Helper()
	m := map[string]any{}
	for k, v := range base {
		m[k] = v
	}
	for k, v := range over {
		if _, ok := v.(del); ok {
			delete(m, k)
			continue
		}
		m[k] = v
	}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

const goodJTI = "Zm9vYmFyYmF6cXV4MTIzNA"

func (f *fixture) requestClaims(t testing.TB, over map[string]any) []byte {
	return claimsJSON(t, map[string]any{
		"htm": "GET", "htu": "/api/v1/device/devices", "iat": f.vec.Now, "jti": goodJTI, "bh": BodyHash(nil),
	}, over)
}

func (f *fixture) decisionClaims(t testing.TB, over map[string]any) []byte {
	return claimsJSON(t, map[string]any{
		"challenge_id": f.vec.Decision.ChallengeID, "nonce": f.vec.Decision.Nonce,
		"decision": "approve", "number": "07", "uv": "fingerprint", "iat": f.vec.Now,
	}, over)
}

func (f *fixture) enrolClaims(t testing.TB, over map[string]any) []byte {
	return claimsJSON(t, map[string]any{"activation_id": f.vec.Enrol.ActivationID, "iat": f.vec.Now}, over)
}

// request signs a request proof with the vector key via go-jose.
func (f *fixture) request(t testing.TB, over map[string]any) string {
	return signJose(t, jose.ES256, f.priv, TypRequest, f.vec.DeviceID, f.requestClaims(t, over))
}

// header returns the JSON of a header {"alg":"ES256","typ":typ,"kid":device}.
func (f *fixture) header(typ string) string {
	return fmt.Sprintf(`{"alg":"ES256","typ":%q,"kid":%q}`, typ, f.vec.DeviceID)
}

func (f *fixture) getRequest() *Request {
	r := f.vec.Requests[0]
	return &Request{Method: r.Method, Path: r.Path, Body: []byte(r.Body)}
}

func (f *fixture) putRequest() *Request {
	r := f.vec.Requests[1]
	return &Request{Method: r.Method, Path: r.Path, Body: []byte(r.Body)}
}

// mapSig replaces the signature of compact by fn(signature).
func mapSig(t testing.TB, compact string, fn func([]byte) []byte) string {
	t.Helper()
	i := strings.LastIndexByte(compact, '.')
	return compact[:i+1] + b64(fn(unb64(t, compact[i+1:])))
}

// withPart replaces part i (0 header, 1 payload, 2 signature) of compact by s.
func withPart(compact string, i int, s string) string {
	parts := strings.Split(compact, ".")
	parts[i] = s
	return strings.Join(parts, ".")
}

// mapPayload replaces the payload of compact, keeping header and signature.
func mapPayload(t testing.TB, compact string, fn func([]byte) []byte) string {
	t.Helper()
	parts := strings.Split(compact, ".")
	parts[1] = b64(fn(unb64(t, parts[1])))
	return strings.Join(parts, ".")
}

func derSignature(t testing.TB, raw []byte) []byte {
	t.Helper()
	der, err := asn1.Marshal(struct{ R, S *big.Int }{new(big.Int).SetBytes(raw[:32]), new(big.Int).SetBytes(raw[32:])})
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func highS(raw []byte) []byte {
	n := elliptic.P256().Params().N
	s := new(big.Int).SetBytes(raw[32:])
	out := slices.Clone(raw)
	new(big.Int).Sub(n, s).FillBytes(out[32:])
	return out
}

// verify parses compact as a token of type as and verifies it as such.
// Request proofs are checked against req, enrolment proofs against activation.
func verify(compact, as string, pub *ecdsa.PublicKey, req *Request, activation string, now time.Time) error {
	switch as {
	case TypEnrol:
		return VerifyEnrol(compact, pub, activation, now, skew)
	case TypRequest:
		tok, err := Parse(compact, TypRequest)
		if err != nil {
			return err
		}
		_, err = VerifyRequest(tok, pub, *req, now, skew)
		return err
	case TypDecision:
		tok, err := Parse(compact, TypDecision)
		if err != nil {
			return err
		}
		_, err = VerifyDecision(tok, pub, now, skew)
		return err
	}
	panic("unknown typ " + as)
}

func TestInteropVectors(t *testing.T) {
	f := loadFixture(t)
	later, earlier := f.now.Add(3*time.Minute), f.now.Add(-3*time.Minute)

	t.Run("ok/enrol", func(t *testing.T) {
		if err := VerifyEnrol(f.vec.Enrol.JWS, f.pub, f.vec.Enrol.ActivationID, f.now, skew); err != nil {
			t.Fatalf("VerifyEnrol: %v", err)
		}
	})
	for _, at := range []struct {
		name string
		now  time.Time
	}{{"fail/enrol-3min-later", later}, {"fail/enrol-3min-earlier", earlier}} {
		t.Run(at.name, func(t *testing.T) {
			err := VerifyEnrol(f.vec.Enrol.JWS, f.pub, f.vec.Enrol.ActivationID, at.now, skew)
			if got := ReasonOf(err); got != ReasonSkew {
				t.Fatalf("reason = %q (%v), want %q", got, err, ReasonSkew)
			}
		})
	}

	for i, r := range f.vec.Requests {
		req := Request{Method: r.Method, Path: r.Path, Body: []byte(r.Body)}
		name := fmt.Sprintf("request%d-%s", i, r.Method)
		t.Run("ok/"+name, func(t *testing.T) {
			tok, err := Parse(r.JWS, TypRequest)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if tok.KeyID != f.vec.DeviceID {
				t.Errorf("kid = %q, want %q", tok.KeyID, f.vec.DeviceID)
			}
			c, err := VerifyRequest(tok, f.pub, req, f.now, skew)
			if err != nil {
				t.Fatalf("VerifyRequest: %v", err)
			}
			if c.HTM != r.Method || c.HTU != r.Path || c.BH != BodyHash([]byte(r.Body)) || !ValidJTI(c.JTI) {
				t.Errorf("claims = %+v", c)
			}
			if !c.IssuedAt().Equal(f.now) {
				t.Errorf("IssuedAt = %v, want %v", c.IssuedAt(), f.now)
			}
		})
		for _, at := range []struct {
			name string
			now  time.Time
		}{{"-3min-later", later}, {"-3min-earlier", earlier}} {
			t.Run("fail/"+name+at.name, func(t *testing.T) {
				tok, err := Parse(r.JWS, TypRequest)
				if err != nil {
					t.Fatalf("Parse: %v", err)
				}
				_, err = VerifyRequest(tok, f.pub, req, at.now, skew)
				if got := ReasonOf(err); got != ReasonSkew {
					t.Fatalf("reason = %q (%v), want %q", got, err, ReasonSkew)
				}
			})
		}
	}

	t.Run("ok/decision", func(t *testing.T) {
		tok, err := Parse(f.vec.Decision.JWS, TypDecision)
		if err != nil {
			t.Fatalf("Parse: %v", err)
		}
		if tok.KeyID != f.vec.DeviceID {
			t.Errorf("kid = %q, want %q", tok.KeyID, f.vec.DeviceID)
		}
		c, err := VerifyDecision(tok, f.pub, f.now, skew)
		if err != nil {
			t.Fatalf("VerifyDecision: %v", err)
		}
		if c.ChallengeID != f.vec.Decision.ChallengeID || c.Nonce != f.vec.Decision.Nonce {
			t.Errorf("challenge_id/nonce = %q/%q, want %q/%q", c.ChallengeID, c.Nonce, f.vec.Decision.ChallengeID, f.vec.Decision.Nonce)
		}
		if c.Number == nil || *c.Number != "07" {
			t.Errorf("number = %v, want \"07\"", c.Number)
		}
		if c.Decision != "approve" || c.UV != "fingerprint" {
			t.Errorf("decision/uv = %q/%q", c.Decision, c.UV)
		}
	})
	for _, at := range []struct {
		name string
		now  time.Time
	}{{"fail/decision-3min-later", later}, {"fail/decision-3min-earlier", earlier}} {
		t.Run(at.name, func(t *testing.T) {
			tok, err := Parse(f.vec.Decision.JWS, TypDecision)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			_, err = VerifyDecision(tok, f.pub, at.now, skew)
			if got := ReasonOf(err); got != ReasonSkew {
				t.Fatalf("reason = %q (%v), want %q", got, err, ReasonSkew)
			}
		})
	}
}

// paddedToken returns a valid request proof of exactly n bytes, padded with
// an extra header member and an extra claim.
func (f *fixture) paddedToken(t testing.TB, n int) string {
	t.Helper()
	for hp := 0; hp < 4; hp++ {
		header := fmt.Sprintf(`{"alg":"ES256","typ":%q,"kid":%q,"x":%q}`, TypRequest, f.vec.DeviceID, strings.Repeat("h", hp))
		hLen := len(b64([]byte(header)))
		base := len(f.requestClaims(t, map[string]any{"pad": ""}))
		for pp := 0; pp < n; pp++ {
			l := hLen + 1 + base64.RawURLEncoding.EncodedLen(base+pp) + 1 + 86
			if l == n {
				payload := f.requestClaims(t, map[string]any{"pad": strings.Repeat("p", pp)})
				s := signRaw(t, f.priv, header, string(payload))
				if len(s) != n {
					t.Fatalf("padded token has %d bytes, want %d", len(s), n)
				}
				return s
			}
			if l > n {
				break
			}
		}
	}
	t.Fatalf("no padding gives %d bytes", n)
	return ""
}

func TestRejections(t *testing.T) {
	f := loadFixture(t)
	get, put := f.vec.Requests[0].JWS, f.vec.Requests[1].JWS

	other, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	_, edKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}

	reqPayload := string(f.requestClaims(t, nil))
	// HS256 with the device's public JWK as the HMAC secret: the classic
	// algorithm-confusion attempt.
	hs256 := func() string {
		in := b64([]byte(fmt.Sprintf(`{"alg":"HS256","typ":%q,"kid":%q}`, TypRequest, f.vec.DeviceID))) + "." + b64([]byte(reqPayload))
		m := hmac.New(sha256.New, f.vec.PublicJWK)
		m.Write([]byte(in))
		return in + "." + b64(m.Sum(nil))
	}()
	putBody := f.putRequest().Body
	oneByteOff := slices.Clone(putBody)
	oneByteOff[len(oneByteOff)-2] ^= 0x01
	getWithQuery := &Request{Method: "GET", Path: "/api/v1/device/devices"}

	tests := []struct {
		name       string
		token      string
		as         string           // the typ the token is presented as
		req        *Request         // request proofs; default: the GET vector's request
		now        time.Time        // default: vectors' now
		pub        *ecdsa.PublicKey // default: vector key
		activation string           // enrolment proofs; default: the vector's
		want       Reason           // "" = accepted
	}{
		{name: "ok/request-vector", token: get, as: TypRequest},
		{name: "ok/request-vector-with-body", token: put, as: TypRequest, req: f.putRequest()},
		{name: "ok/request-go-jose", token: f.request(t, nil), as: TypRequest},
		{name: "ok/request-hand-signed", token: signRaw(t, f.priv, f.header(TypRequest), reqPayload), as: TypRequest},
		{name: "ok/decision-vector", token: f.vec.Decision.JWS, as: TypDecision},
		{name: "ok/enrol-vector", token: f.vec.Enrol.JWS, as: TypEnrol},

		// alg
		{name: "fail/alg-none", as: TypRequest, want: ReasonAlg,
			token: b64([]byte(fmt.Sprintf(`{"alg":"none","typ":%q,"kid":%q}`, TypRequest, f.vec.DeviceID))) + "." + b64([]byte(reqPayload)) + "."},
		{name: "fail/alg-none-decision", as: TypDecision, want: ReasonAlg,
			token: b64([]byte(fmt.Sprintf(`{"alg":"none","typ":%q}`, TypDecision))) + "." + b64(f.decisionClaims(t, nil)) + "."},
		{name: "fail/alg-none-enrol", as: TypEnrol, want: ReasonAlg,
			token: b64([]byte(fmt.Sprintf(`{"alg":"none","typ":%q}`, TypEnrol))) + "." + b64(f.enrolClaims(t, nil)) + "."},
		{name: "fail/alg-HS256", token: hs256, as: TypRequest, want: ReasonAlg},
		{name: "fail/alg-RS256", as: TypRequest, want: ReasonAlg,
			token: signJose(t, jose.RS256, rsaKey, TypRequest, f.vec.DeviceID, []byte(reqPayload))},
		{name: "fail/alg-ES384", as: TypRequest, want: ReasonAlg,
			token: signJose(t, jose.ES384, p384, TypRequest, f.vec.DeviceID, []byte(reqPayload))},
		{name: "fail/alg-EdDSA", as: TypRequest, want: ReasonAlg,
			token: signJose(t, jose.EdDSA, edKey, TypRequest, f.vec.DeviceID, []byte(reqPayload))},
		{name: "fail/alg-es256-lower-case", as: TypRequest, want: ReasonAlg,
			token: signRaw(t, f.priv, fmt.Sprintf(`{"alg":"es256","typ":%q,"kid":%q}`, TypRequest, f.vec.DeviceID), reqPayload)},
		{name: "fail/alg-missing", as: TypRequest, want: ReasonAlg,
			token: signRaw(t, f.priv, fmt.Sprintf(`{"typ":%q,"kid":%q}`, TypRequest, f.vec.DeviceID), reqPayload)},
		{name: "fail/alg-not-a-string", as: TypRequest, want: ReasonMalformed,
			token: signRaw(t, f.priv, fmt.Sprintf(`{"alg":["ES256"],"typ":%q}`, TypRequest), reqPayload)},

		// typ
		{name: "fail/typ-missing", as: TypRequest, want: ReasonTyp,
			token: signJose(t, jose.ES256, f.priv, "", f.vec.DeviceID, []byte(reqPayload))},
		{name: "fail/typ-missing-enrol", as: TypEnrol, want: ReasonTyp,
			token: signJose(t, jose.ES256, f.priv, "", "", f.enrolClaims(t, nil))},
		{name: "fail/typ-request-as-decision", token: get, as: TypDecision, want: ReasonTyp},
		{name: "fail/typ-decision-as-request", token: f.vec.Decision.JWS, as: TypRequest, want: ReasonTyp},
		{name: "fail/typ-enrol-as-request", token: f.vec.Enrol.JWS, as: TypRequest, want: ReasonTyp},
		{name: "fail/typ-enrol-as-decision", token: f.vec.Enrol.JWS, as: TypDecision, want: ReasonTyp},
		{name: "fail/typ-request-as-enrol", token: get, as: TypEnrol, want: ReasonTyp},
		{name: "fail/typ-decision-as-enrol", token: f.vec.Decision.JWS, as: TypEnrol, want: ReasonTyp},
		{name: "fail/typ-upper-case", as: TypRequest, want: ReasonTyp,
			token: signJose(t, jose.ES256, f.priv, "ECPS-PROOF+JWT", f.vec.DeviceID, []byte(reqPayload))},
		{name: "fail/typ-JWT", as: TypRequest, want: ReasonTyp,
			token: signJose(t, jose.ES256, f.priv, "JWT", f.vec.DeviceID, []byte(reqPayload))},
		{name: "fail/typ-without-suffix", as: TypRequest, want: ReasonTyp,
			token: signJose(t, jose.ES256, f.priv, "ecps-proof", f.vec.DeviceID, []byte(reqPayload))},
		{name: "fail/typ-trailing-space", as: TypRequest, want: ReasonTyp,
			token: signJose(t, jose.ES256, f.priv, TypRequest+" ", f.vec.DeviceID, []byte(reqPayload))},

		// signature
		{name: "fail/signature-flipped-byte", as: TypRequest, want: ReasonSignature,
			token: mapSig(t, get, func(s []byte) []byte { s[10] ^= 0x01; return s })},
		{name: "fail/signature-flipped-last-byte", as: TypRequest, want: ReasonSignature,
			token: mapSig(t, get, func(s []byte) []byte { s[63] ^= 0x80; return s })},
		{name: "fail/signature-decision-flipped-byte", as: TypDecision, want: ReasonSignature,
			token: mapSig(t, f.vec.Decision.JWS, func(s []byte) []byte { s[0] ^= 0x01; return s })},
		{name: "fail/signature-enrol-flipped-byte", as: TypEnrol, want: ReasonSignature,
			token: mapSig(t, f.vec.Enrol.JWS, func(s []byte) []byte { s[40] ^= 0x01; return s })},
		{name: "fail/signature-payload-changed", as: TypRequest, want: ReasonSignature,
			token: mapPayload(t, get, func(p []byte) []byte { return []byte(strings.Replace(string(p), "GET", "PUT", 1)) }),
			req:   &Request{Method: "PUT", Path: "/api/v1/device/devices"}},
		{name: "fail/signature-other-key", as: TypRequest, want: ReasonSignature,
			token: signJose(t, jose.ES256, other, TypRequest, f.vec.DeviceID, []byte(reqPayload))},
		{name: "fail/signature-other-key-decision", as: TypDecision, want: ReasonSignature,
			token: signJose(t, jose.ES256, other, TypDecision, f.vec.DeviceID, f.decisionClaims(t, nil))},
		{name: "fail/signature-other-key-enrol", as: TypEnrol, want: ReasonSignature,
			token: signJose(t, jose.ES256, other, TypEnrol, "", f.enrolClaims(t, nil))},
		{name: "fail/signature-verified-with-other-key", token: get, as: TypRequest, pub: &other.PublicKey, want: ReasonSignature},
		{name: "fail/signature-der", as: TypRequest, want: ReasonSignature,
			token: mapSig(t, get, func(s []byte) []byte { return derSignature(t, s) })},
		{name: "fail/signature-der-decision", as: TypDecision, want: ReasonSignature,
			token: mapSig(t, f.vec.Decision.JWS, func(s []byte) []byte { return derSignature(t, s) })},
		{name: "fail/signature-empty", as: TypRequest, want: ReasonSignature,
			token: mapSig(t, get, func([]byte) []byte { return nil })},
		{name: "fail/signature-zero", as: TypRequest, want: ReasonSignature,
			token: mapSig(t, get, func([]byte) []byte { return make([]byte, 64) })},
		{name: "fail/signature-truncated", as: TypRequest, want: ReasonSignature,
			token: mapSig(t, get, func(s []byte) []byte { return s[:63] })},
		{name: "fail/signature-extra-byte", as: TypRequest, want: ReasonSignature,
			token: mapSig(t, get, func(s []byte) []byte { return append(s, 0) })},
		// ECDSA signatures are malleable: (r, N-s) verifies as well as (r, s).
		// Accepted by design; replay is detected on jti, never on signature bytes.
		{name: "ok/signature-high-s", as: TypRequest, token: mapSig(t, get, highS)},
		{name: "ok/signature-high-s-decision", as: TypDecision, token: mapSig(t, f.vec.Decision.JWS, highS)},
		{name: "ok/signature-high-s-enrol", as: TypEnrol, token: mapSig(t, f.vec.Enrol.JWS, highS)},

		// iat and the clock
		{name: "ok/skew-exactly-plus-60s", token: get, as: TypRequest, now: f.now.Add(60 * time.Second)},
		{name: "ok/skew-exactly-minus-60s", token: get, as: TypRequest, now: f.now.Add(-60 * time.Second)},
		{name: "fail/skew-plus-61s", token: get, as: TypRequest, now: f.now.Add(61 * time.Second), want: ReasonSkew},
		{name: "fail/skew-minus-61s", token: get, as: TypRequest, now: f.now.Add(-61 * time.Second), want: ReasonSkew},
		{name: "fail/skew-plus-60s-and-1ns", token: get, as: TypRequest, now: f.now.Add(60*time.Second + 1), want: ReasonSkew},
		{name: "fail/skew-iat-old", as: TypRequest, want: ReasonSkew, token: f.request(t, map[string]any{"iat": f.vec.Now - 61})},
		{name: "fail/skew-iat-future", as: TypRequest, want: ReasonSkew, token: f.request(t, map[string]any{"iat": f.vec.Now + 61})},
		{name: "fail/skew-iat-negative", as: TypRequest, want: ReasonSkew, token: f.request(t, map[string]any{"iat": -1})},
		{name: "fail/skew-iat-max-int64", as: TypRequest, want: ReasonSkew,
			token: f.request(t, map[string]any{"iat": json.RawMessage("9223372036854775807")})},
		{name: "fail/skew-decision-plus-61s", token: f.vec.Decision.JWS, as: TypDecision, now: f.now.Add(61 * time.Second), want: ReasonSkew},
		{name: "fail/skew-enrol-minus-61s", token: f.vec.Enrol.JWS, as: TypEnrol, now: f.now.Add(-61 * time.Second), want: ReasonSkew},
		{name: "fail/iat-missing", as: TypRequest, want: ReasonMalformed, token: f.request(t, map[string]any{"iat": del{}})},
		{name: "fail/iat-zero", as: TypRequest, want: ReasonMalformed, token: f.request(t, map[string]any{"iat": 0})},
		{name: "fail/iat-null", as: TypRequest, want: ReasonMalformed, token: f.request(t, map[string]any{"iat": nil})},
		{name: "fail/iat-string", as: TypRequest, want: ReasonMalformed, token: f.request(t, map[string]any{"iat": "now"})},
		{name: "fail/iat-float-1.5", as: TypRequest, want: ReasonMalformed, token: f.request(t, map[string]any{"iat": 1.5})},
		{name: "fail/iat-float-now-plus-half", as: TypRequest, want: ReasonMalformed,
			token: f.request(t, map[string]any{"iat": json.RawMessage(fmt.Sprintf("%d.5", f.vec.Now))})},
		{name: "fail/iat-integral-float", as: TypRequest, want: ReasonMalformed,
			token: f.request(t, map[string]any{"iat": json.RawMessage(fmt.Sprintf("%d.0", f.vec.Now))})},
		{name: "fail/iat-exponent", as: TypRequest, want: ReasonMalformed,
			token: f.request(t, map[string]any{"iat": json.RawMessage("1.7672256e9")})},
		{name: "fail/iat-overflow", as: TypRequest, want: ReasonMalformed,
			token: f.request(t, map[string]any{"iat": json.RawMessage("9223372036854775808")})},
		{name: "fail/iat-bool", as: TypRequest, want: ReasonMalformed, token: f.request(t, map[string]any{"iat": true})},
		{name: "fail/iat-missing-decision", as: TypDecision, want: ReasonMalformed,
			token: signJose(t, jose.ES256, f.priv, TypDecision, f.vec.DeviceID, f.decisionClaims(t, map[string]any{"iat": del{}}))},
		{name: "fail/iat-float-decision", as: TypDecision, want: ReasonMalformed,
			token: signJose(t, jose.ES256, f.priv, TypDecision, f.vec.DeviceID, f.decisionClaims(t, map[string]any{"iat": 1.5}))},
		{name: "fail/iat-missing-enrol", as: TypEnrol, want: ReasonMalformed,
			token: signJose(t, jose.ES256, f.priv, TypEnrol, "", f.enrolClaims(t, map[string]any{"iat": del{}}))},
		{name: "fail/iat-string-enrol", as: TypEnrol, want: ReasonMalformed,
			token: signJose(t, jose.ES256, f.priv, TypEnrol, "", f.enrolClaims(t, map[string]any{"iat": "yesterday"}))},

		// htm, htu, bh
		{name: "fail/htm-wrong", token: get, as: TypRequest, req: &Request{Method: "POST", Path: "/api/v1/device/devices"}, want: ReasonHTM},
		{name: "fail/htm-lower-case", token: get, as: TypRequest, req: &Request{Method: "get", Path: "/api/v1/device/devices"}, want: ReasonHTM},
		{name: "fail/htm-missing", as: TypRequest, want: ReasonHTM, token: f.request(t, map[string]any{"htm": del{}})},
		{name: "fail/htu-wrong", token: get, as: TypRequest, req: &Request{Method: "GET", Path: "/api/v1/device/push-token"}, want: ReasonHTU},
		{name: "fail/htu-trailing-slash", token: get, as: TypRequest, req: &Request{Method: "GET", Path: "/api/v1/device/devices/"}, want: ReasonHTU},
		{name: "fail/htu-with-query", as: TypRequest, want: ReasonHTU, req: getWithQuery,
			token: f.request(t, map[string]any{"htu": "/api/v1/device/devices?x=1"})},
		{name: "fail/htu-absolute-url", as: TypRequest, want: ReasonHTU, req: getWithQuery,
			token: f.request(t, map[string]any{"htu": "https://ecps.example/api/v1/device/devices"})},
		{name: "fail/htu-missing", as: TypRequest, want: ReasonHTU, token: f.request(t, map[string]any{"htu": del{}})},
		{name: "fail/bh-body-changed-one-byte", token: put, as: TypRequest, want: ReasonBH,
			req: &Request{Method: "PUT", Path: "/api/v1/device/push-token", Body: oneByteOff}},
		{name: "fail/bh-body-one-byte-longer", token: put, as: TypRequest, want: ReasonBH,
			req: &Request{Method: "PUT", Path: "/api/v1/device/push-token", Body: append(slices.Clone(putBody), '\n')}},
		{name: "fail/bh-body-dropped", token: put, as: TypRequest, want: ReasonBH,
			req: &Request{Method: "PUT", Path: "/api/v1/device/push-token"}},
		{name: "fail/bh-of-empty-body-with-body", as: TypRequest, want: ReasonBH, req: f.putRequest(),
			token: f.request(t, map[string]any{"htm": "PUT", "htu": "/api/v1/device/push-token", "bh": BodyHash(nil)})},
		{name: "fail/bh-missing", as: TypRequest, want: ReasonBH, token: f.request(t, map[string]any{"bh": del{}})},
		{name: "fail/bh-padded", as: TypRequest, want: ReasonBH,
			token: f.request(t, map[string]any{"bh": base64.URLEncoding.EncodeToString(func() []byte { s := sha256.Sum256(nil); return s[:] }())})},
		{name: "fail/bh-std-alphabet", as: TypRequest, want: ReasonBH, req: f.putRequest(),
			token: f.request(t, map[string]any{"htm": "PUT", "htu": "/api/v1/device/push-token",
				"bh": base64.RawStdEncoding.EncodeToString(func() []byte { s := sha256.Sum256(putBody); return s[:] }())})},

		// jti
		{name: "ok/jti-16-chars", as: TypRequest, token: f.request(t, map[string]any{"jti": strings.Repeat("a", 16)})},
		{name: "ok/jti-128-chars", as: TypRequest, token: f.request(t, map[string]any{"jti": strings.Repeat("a", 128)})},
		{name: "fail/jti-too-short", as: TypRequest, want: ReasonMalformed, token: f.request(t, map[string]any{"jti": strings.Repeat("a", 15)})},
		{name: "fail/jti-too-long", as: TypRequest, want: ReasonMalformed, token: f.request(t, map[string]any{"jti": strings.Repeat("a", 129)})},
		{name: "fail/jti-illegal-characters", as: TypRequest, want: ReasonMalformed, token: f.request(t, map[string]any{"jti": "abc+def/ghi=jklmno"})},
		{name: "fail/jti-padded-base64", as: TypRequest, want: ReasonMalformed, token: f.request(t, map[string]any{"jti": "AAAAAAAAAAAAAAAAAAAAAA=="})},
		{name: "fail/jti-space", as: TypRequest, want: ReasonMalformed, token: f.request(t, map[string]any{"jti": "abcdefgh ijklmnop"})},
		{name: "fail/jti-missing", as: TypRequest, want: ReasonMalformed, token: f.request(t, map[string]any{"jti": del{}})},
		{name: "fail/jti-number", as: TypRequest, want: ReasonMalformed, token: f.request(t, map[string]any{"jti": json.RawMessage("12345678901234567890")})},

		// payload and shape
		{name: "fail/payload-not-json", as: TypRequest, want: ReasonMalformed, token: signRaw(t, f.priv, f.header(TypRequest), "not json")},
		{name: "fail/payload-empty", as: TypRequest, want: ReasonMalformed, token: signRaw(t, f.priv, f.header(TypRequest), "")},
		{name: "fail/payload-json-array", as: TypRequest, want: ReasonMalformed, token: signRaw(t, f.priv, f.header(TypRequest), "[1,2]")},
		{name: "fail/payload-json-string", as: TypRequest, want: ReasonMalformed, token: signRaw(t, f.priv, f.header(TypRequest), `"x"`)},
		{name: "fail/payload-truncated-json", as: TypRequest, want: ReasonMalformed, token: signRaw(t, f.priv, f.header(TypRequest), reqPayload[:len(reqPayload)-1])},
		{name: "fail/payload-not-json-decision", as: TypDecision, want: ReasonMalformed, token: signRaw(t, f.priv, f.header(TypDecision), "{")},
		{name: "fail/payload-not-json-enrol", as: TypEnrol, want: ReasonMalformed, token: signRaw(t, f.priv, fmt.Sprintf(`{"alg":"ES256","typ":%q}`, TypEnrol), "<xml/>")},
		{name: "fail/decision-number-not-string", as: TypDecision, want: ReasonMalformed,
			token: signJose(t, jose.ES256, f.priv, TypDecision, f.vec.DeviceID, f.decisionClaims(t, map[string]any{"number": 7}))},
		{name: "fail/header-not-json", as: TypRequest, want: ReasonMalformed, token: signRaw(t, f.priv, "ES256", reqPayload)},
		{name: "fail/header-not-base64url", as: TypRequest, want: ReasonMalformed, token: "eyJ+" + get[3:]},
		{name: "fail/header-padded-base64", as: TypRequest, want: ReasonMalformed,
			token: base64.URLEncoding.EncodeToString([]byte(f.header(TypRequest)+" ")) + "." + b64([]byte(reqPayload)) + "." + b64(make([]byte, 64))},
		{name: "fail/payload-not-base64url", as: TypRequest, want: ReasonMalformed,
			token: withPart(get, 1, "!!!!")},
		{name: "fail/signature-not-base64url", as: TypRequest, want: ReasonMalformed, token: withPart(get, 2, "****")},
		{name: "fail/empty", token: "", as: TypRequest, want: ReasonMalformed},
		{name: "fail/one-part", token: get[:strings.IndexByte(get, '.')], as: TypRequest, want: ReasonMalformed},
		{name: "fail/two-parts", token: get[:strings.LastIndexByte(get, '.')], as: TypRequest, want: ReasonMalformed},
		{name: "fail/four-parts", token: get + "." + get[strings.LastIndexByte(get, '.')+1:], as: TypRequest, want: ReasonMalformed},
		{name: "fail/four-parts-empty", token: get + ".", as: TypRequest, want: ReasonMalformed},
		{name: "fail/two-parts-enrol", token: f.vec.Enrol.JWS[:strings.LastIndexByte(f.vec.Enrol.JWS, '.')], as: TypEnrol, want: ReasonMalformed},
		{name: "fail/json-serialization", as: TypRequest, want: ReasonMalformed,
			token: fmt.Sprintf(`{"protected":%q,"payload":%q,"signature":%q}`, strings.Split(get, ".")[0], strings.Split(get, ".")[1], strings.Split(get, ".")[2])},
		{name: "ok/exactly-8KiB", as: TypRequest, token: f.paddedToken(t, 8<<10)},
		{name: "fail/over-8KiB", as: TypRequest, want: ReasonMalformed, token: f.paddedToken(t, 8<<10+1)},
		{name: "fail/far-over-8KiB", as: TypRequest, want: ReasonMalformed, token: f.paddedToken(t, 64<<10)},

		// claims
		{name: "fail/enrol-other-activation", token: f.vec.Enrol.JWS, as: TypEnrol, activation: "act_other", want: ReasonClaims},
		{name: "fail/enrol-activation-case", token: f.vec.Enrol.JWS, as: TypEnrol, activation: "ACT_EXAMPLE", want: ReasonClaims},
		{name: "fail/enrol-activation-empty", token: f.vec.Enrol.JWS, as: TypEnrol, activation: " ", want: ReasonClaims},
		{name: "fail/enrol-activation-missing", as: TypEnrol, want: ReasonClaims,
			token: signJose(t, jose.ES256, f.priv, TypEnrol, "", f.enrolClaims(t, map[string]any{"activation_id": del{}}))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, now, pub, act := tt.req, tt.now, tt.pub, tt.activation
			if req == nil {
				req = f.getRequest()
			}
			if now.IsZero() {
				now = f.now
			}
			if pub == nil {
				pub = f.pub
			}
			if act == "" {
				act = f.vec.Enrol.ActivationID
			}
			err := verify(tt.token, tt.as, pub, req, act, now)
			if got := ReasonOf(err); got != tt.want || (tt.want == "") != (err == nil) {
				t.Fatalf("reason = %q (err %v), want %q", got, err, tt.want)
			}
		})
	}
}

// TestParseHeaderChecks checks what Parse alone decides: the header, before
// any key is known.
func TestParseHeaderChecks(t *testing.T) {
	f := loadFixture(t)
	tok, err := Parse(f.vec.Enrol.JWS, TypEnrol)
	if err != nil {
		t.Fatal(err)
	}
	if tok.KeyID != "" {
		t.Errorf("enrolment proof kid = %q, want none", tok.KeyID)
	}
	// The kid is returned as is: the caller checks it with ValidKeyID before a lookup.
	odd := signJose(t, jose.ES256, f.priv, TypRequest, "../../etc/passwd", f.requestClaims(t, nil))
	tok, err = Parse(odd, TypRequest)
	if err != nil {
		t.Fatal(err)
	}
	if tok.KeyID != "../../etc/passwd" || ValidKeyID(tok.KeyID) {
		t.Errorf("kid = %q, ValidKeyID = %v", tok.KeyID, ValidKeyID(tok.KeyID))
	}
	// Parse never verifies: a bad signature passes Parse and fails Verify.
	bad := mapSig(t, f.vec.Requests[0].JWS, func(s []byte) []byte { s[5] ^= 0xff; return s })
	tok, err = Parse(bad, TypRequest)
	if err != nil {
		t.Fatalf("Parse(bad signature) = %v, want nil", err)
	}
	if _, err := tok.Verify(f.pub); ReasonOf(err) != ReasonSignature {
		t.Errorf("Verify(bad signature) = %v", err)
	}
	// Verify returns the payload as signed.
	tok, _ = Parse(f.vec.Requests[0].JWS, TypRequest)
	payload, err := tok.Verify(f.pub)
	if err != nil || !json.Valid(payload) || !strings.Contains(string(payload), `"htu":"/api/v1/device/devices"`) {
		t.Errorf("Verify = %q, %v", payload, err)
	}
}

func TestReasonOf(t *testing.T) {
	f := loadFixture(t)
	_, err := Parse("x", TypRequest)
	if ReasonOf(err) != ReasonMalformed {
		t.Fatalf("ReasonOf(%v) = %q", err, ReasonOf(err))
	}
	if got := ReasonOf(fmt.Errorf("device: %w", err)); got != ReasonMalformed {
		t.Errorf("ReasonOf(wrapped) = %q", got)
	}
	if got := ReasonOf(nil); got != "" {
		t.Errorf("ReasonOf(nil) = %q", got)
	}
	if got := ReasonOf(errors.New("other")); got != "" {
		t.Errorf("ReasonOf(other) = %q", got)
	}
	if got := ReasonOf(ErrBadKey); got != "" {
		t.Errorf("ReasonOf(ErrBadKey) = %q", got)
	}
	if !strings.Contains(err.Error(), "malformed") {
		t.Errorf("Error() = %q", err.Error())
	}
	seen := map[Reason]bool{}
	for _, r := range Reasons {
		if r == "" || seen[r] {
			t.Errorf("Reasons: bad or duplicate %q", r)
		}
		seen[r] = true
	}
	if len(Reasons) != 14 {
		t.Errorf("len(Reasons) = %d, want 14", len(Reasons))
	}
	_ = f
}

func TestBodyHash(t *testing.T) {
	if got, want := BodyHash(nil), "47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU"; got != want {
		t.Errorf("BodyHash(empty) = %q, want %q", got, want)
	}
	if BodyHash(nil) != BodyHash([]byte{}) {
		t.Error("BodyHash(nil) != BodyHash([]byte{})")
	}
	// From the vectors, computed by the phone side.
	if got, want := BodyHash([]byte(`{"provider":"fcm","token":"fcm-token-example"}`)), "mOS9MAsF3QdA9jehWivWEIkXwSGnmGRcWR8YQKfW-pY"; got != want {
		t.Errorf("BodyHash(push-token body) = %q, want %q", got, want)
	}
}

// rfc7638 computes the RFC 7638 thumbprint of an EC JWK by hand.
func rfc7638(crv, x, y string) string {
	sum := sha256.Sum256([]byte(fmt.Sprintf(`{"crv":%q,"kty":"EC","x":%q,"y":%q}`, crv, x, y)))
	return b64(sum[:])
}

func TestParsePublicJWK(t *testing.T) {
	f := loadFixture(t)
	var jwk map[string]string
	if err := json.Unmarshal(f.vec.PublicJWK, &jwk); err != nil {
		t.Fatal(err)
	}
	x, y := jwk["x"], jwk["y"]

	t.Run("ok", func(t *testing.T) {
		pk, err := ParsePublicJWK(f.vec.PublicJWK)
		if err != nil {
			t.Fatal(err)
		}
		var jk jose.JSONWebKey
		if err := json.Unmarshal(f.vec.PublicJWK, &jk); err != nil {
			t.Fatal(err)
		}
		tp, err := jk.Thumbprint(crypto.SHA256)
		if err != nil {
			t.Fatal(err)
		}
		if pk.Thumbprint != b64(tp) {
			t.Errorf("thumbprint = %q, go-jose says %q", pk.Thumbprint, b64(tp))
		}
		if want := rfc7638("P-256", x, y); pk.Thumbprint != want {
			t.Errorf("thumbprint = %q, RFC 7638 by hand says %q", pk.Thumbprint, want)
		}
		if pk.Key.Curve != elliptic.P256() {
			t.Errorf("curve = %v", pk.Key.Curve.Params().Name)
		}
		if _, err := pk.Key.ECDH(); err != nil {
			t.Errorf("ECDH: %v", err)
		}
		// Stable: again, from its own canonical JWK, and with members reordered or added.
		again, err := ParsePublicJWK(f.vec.PublicJWK)
		if err != nil || again.Thumbprint != pk.Thumbprint || string(again.JWK) != string(pk.JWK) {
			t.Errorf("second parse: %v, %q, %s", err, again.Thumbprint, again.JWK)
		}
		round, err := ParsePublicJWK(pk.JWK)
		if err != nil || round.Thumbprint != pk.Thumbprint || string(round.JWK) != string(pk.JWK) {
			t.Errorf("parse of JWK %s: %v, %q", pk.JWK, err, round.Thumbprint)
		}
		extra := fmt.Sprintf(`{"y":%q,"kid":"k1","use":"sig","alg":"ES256","x":%q,"crv":"P-256","kty":"EC"}`, y, x)
		other, err := ParsePublicJWK([]byte(extra))
		if err != nil || other.Thumbprint != pk.Thumbprint || string(other.JWK) != string(pk.JWK) {
			t.Errorf("reordered JWK: %v, %q, %s", err, other.Thumbprint, other.JWK)
		}
		// The stored JWK is public and canonical.
		var stored map[string]any
		if err := json.Unmarshal(pk.JWK, &stored); err != nil {
			t.Fatal(err)
		}
		if stored["kty"] != "EC" || stored["crv"] != "P-256" || stored["x"] != x || stored["y"] != y || stored["d"] != nil {
			t.Errorf("JWK = %s", pk.JWK)
		}
	})

	t.Run("ok/fresh-keys", func(t *testing.T) {
		for i := 0; i < 20; i++ {
			k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			if err != nil {
				t.Fatal(err)
			}
			raw, err := jose.JSONWebKey{Key: &k.PublicKey}.MarshalJSON()
			if err != nil {
				t.Fatal(err)
			}
			pk, err := ParsePublicJWK(raw)
			if err != nil {
				t.Fatalf("ParsePublicJWK(%s): %v", raw, err)
			}
			if !pk.Key.Equal(&k.PublicKey) {
				t.Fatal("parsed key differs")
			}
			jk := jose.JSONWebKey{Key: &k.PublicKey}
			tp, err := jk.Thumbprint(crypto.SHA256)
			if err != nil {
				t.Fatal(err)
			}
			if pk.Thumbprint != b64(tp) {
				t.Fatalf("thumbprint %q, want %q", pk.Thumbprint, b64(tp))
			}
		}
	})

	yb := unb64(t, y)
	yb[31] ^= 0x01
	badY := b64(yb)
	zero := b64(make([]byte, 32))

	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	p384JWK, _ := jose.JSONWebKey{Key: &p384.PublicKey}.MarshalJSON()
	p521, err := ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	p521JWK, _ := jose.JSONWebKey{Key: &p521.PublicKey}.MarshalJSON()
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	rsaJWK, _ := jose.JSONWebKey{Key: &rsaKey.PublicKey}.MarshalJSON()
	edPub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	edJWK, _ := jose.JSONWebKey{Key: edPub}.MarshalJSON()
	// x of the P-384 key on a P-256 claim.
	var p384m map[string]string
	_ = json.Unmarshal(p384JWK, &p384m)

	ec := func(crv, x, y string) string {
		return fmt.Sprintf(`{"kty":"EC","crv":%q,"x":%q,"y":%q}`, crv, x, y)
	}
	fails := []struct{ name, raw string }{
		{"fail/point-not-on-curve", ec("P-256", x, badY)},
		{"fail/x-and-y-swapped", ec("P-256", y, x)},
		{"fail/infinity-all-zero", ec("P-256", zero, zero)},
		{"fail/x-zero", ec("P-256", zero, y)},
		{"fail/p-384", string(p384JWK)},
		{"fail/p-384-coordinates-claimed-p-256", ec("P-256", p384m["x"], p384m["y"])},
		{"fail/p-256-coordinates-claimed-p-384", ec("P-384", x, y)},
		{"fail/p-521", string(p521JWK)},
		{"fail/rsa", string(rsaJWK)},
		{"fail/okp-ed25519", string(edJWK)},
		{"fail/private-jwk-with-d", string(f.vec.PrivateJWK)},
		{"fail/d-empty", fmt.Sprintf(`{"kty":"EC","crv":"P-256","x":%q,"y":%q,"d":""}`, x, y)},
		{"fail/kty-oct", `{"kty":"oct","k":"c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0"}`},
		{"fail/kty-oct-with-ec-members", fmt.Sprintf(`{"kty":"oct","crv":"P-256","x":%q,"y":%q,"k":"AAAA"}`, x, y)},
		{"fail/kty-missing", fmt.Sprintf(`{"crv":"P-256","x":%q,"y":%q}`, x, y)},
		{"fail/kty-lower-case", fmt.Sprintf(`{"kty":"ec","crv":"P-256","x":%q,"y":%q}`, x, y)},
		{"fail/crv-missing", fmt.Sprintf(`{"kty":"EC","x":%q,"y":%q}`, x, y)},
		{"fail/crv-secp256k1", ec("secp256k1", x, y)},
		{"fail/crv-lower-case", ec("p-256", x, y)},
		{"fail/x-missing", fmt.Sprintf(`{"kty":"EC","crv":"P-256","y":%q}`, y)},
		{"fail/y-missing", fmt.Sprintf(`{"kty":"EC","crv":"P-256","x":%q}`, x)},
		{"fail/x-empty", ec("P-256", "", y)},
		{"fail/x-31-bytes", ec("P-256", b64(unb64(t, x)[1:]), y)},
		{"fail/x-33-bytes-leading-zero", ec("P-256", b64(append([]byte{0}, unb64(t, x)...)), y)},
		{"fail/y-31-bytes", ec("P-256", x, b64(unb64(t, y)[1:]))},
		{"fail/x-invalid-base64", ec("P-256", "!!"+x[2:], y)},
		{"fail/x-std-base64-padded", ec("P-256", base64.StdEncoding.EncodeToString(unb64(t, x)), y)},
		{"fail/x-number", fmt.Sprintf(`{"kty":"EC","crv":"P-256","x":12345,"y":%q}`, y)},
		{"fail/duplicate-member", fmt.Sprintf(`{"kty":"EC","crv":"P-256","x":%q,"y":%q,"y":%q}`, x, badY, y)},
		{"fail/not-json", "not json"},
		{"fail/trailing-garbage", string(f.vec.PublicJWK) + "x"},
		{"fail/json-array", "[" + string(f.vec.PublicJWK) + "]"},
		{"fail/json-null", "null"},
		{"fail/json-empty-object", "{}"},
		{"fail/empty", ""},
	}
	for _, tt := range fails {
		t.Run(tt.name, func(t *testing.T) {
			pk, err := ParsePublicJWK([]byte(tt.raw))
			if !errors.Is(err, ErrBadKey) {
				t.Fatalf("ParsePublicJWK(%s) = %+v, %v; want ErrBadKey", tt.raw, pk, err)
			}
			if pk.Key != nil || pk.Thumbprint != "" || pk.JWK != nil {
				t.Errorf("rejected key returned %+v", pk)
			}
		})
	}
}

func TestValidKeyID(t *testing.T) {
	tests := []struct {
		name string
		in   string
		ok   bool
	}{
		{"ok/vector", "dev_p1jsyatY_jquTTkv", true},
		{"ok/8-chars", "dev_abcdefgh", true},
		{"ok/64-chars", "dev_" + strings.Repeat("Z", 64), true},
		{"ok/dash-underscore", "dev_-_-_-_-_", true},
		{"ok/digits", "dev_01234567", true},
		{"ok/dev-prefix-in-body", "dev_dev_abcd", true},
		{"fail/empty", "", false},
		{"fail/prefix-only", "dev_", false},
		{"fail/7-chars", "dev_abcdefg", false},
		{"fail/65-chars", "dev_" + strings.Repeat("Z", 65), false},
		{"fail/no-prefix", "abcdefghijkl", false},
		{"fail/prefix-upper-case", "DEV_abcdefgh", false},
		{"fail/prefix-dash", "dev-abcdefgh", false},
		{"fail/leading-space", " dev_abcdefgh", false},
		{"fail/trailing-newline", "dev_abcdefgh\n", false},
		{"fail/plus", "dev_abcd+fgh", false},
		{"fail/slash", "dev_abcd/fgh", false},
		{"fail/dot-dot", "dev_../../etc", false},
		{"fail/padding", "dev_abcdefg=", false},
		{"fail/nul", "dev_abcd\x00fgh", false},
		{"fail/non-ascii", "dev_abcdéfgh", false},
		{"fail/fullwidth", "dev_ａｂｃｄｅｆｇｈ", false},
		{"fail/other-prefix", "act_abcdefgh", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ValidKeyID(tt.in); got != tt.ok {
				t.Errorf("ValidKeyID(%q) = %v, want %v", tt.in, got, tt.ok)
			}
		})
	}
}

func TestValidJTI(t *testing.T) {
	tests := []struct {
		name string
		in   string
		ok   bool
	}{
		{"ok/vector", "Li-acYuS4nXNJVLwH-dqoA", true},
		{"ok/16-chars", strings.Repeat("a", 16), true},
		{"ok/128-chars", strings.Repeat("a", 128), true},
		{"ok/all-alphabet", "ABCXYZabcxyz0189-_", true},
		{"ok/uuid-like", "123e4567-e89b-12d3-a456-426614174000", true},
		{"fail/empty", "", false},
		{"fail/15-chars", strings.Repeat("a", 15), false},
		{"fail/129-chars", strings.Repeat("a", 129), false},
		{"fail/plus", "abcdefgh+ijklmnop", false},
		{"fail/slash", "abcdefgh/ijklmnop", false},
		{"fail/padding", "AAAAAAAAAAAAAAAAAAAAAA==", false},
		{"fail/dot", "abcdefgh.ijklmnop", false},
		{"fail/space", "abcdefgh ijklmnop", false},
		{"fail/newline", "abcdefghijklmnop\n", false},
		{"fail/nul", "abcdefgh\x00ijklmnop", false},
		{"fail/non-ascii", "abcdefghijklmnoé", false},
		{"fail/quote", `abcdefgh"ijklmnop`, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ValidJTI(tt.in); got != tt.ok {
				t.Errorf("ValidJTI(%q) = %v, want %v", tt.in, got, tt.ok)
			}
		})
	}
}

// The tests below show bugs in deviceproof.go; they fail until it is fixed.

// TestIatQuotedNumberRejected: unixTime.UnmarshalJSON decodes into a
// json.Number, and encoding/json stores a JSON *string* holding a valid number
// into a json.Number. So "iat":"1767225600" (a string, not a NumericDate) is
// accepted as if it were 1767225600, on every kind of proof.
func TestIatQuotedNumberRejected(t *testing.T) {
	f := loadFixture(t)
	iat := fmt.Sprint(f.vec.Now) // a string
	tests := []struct {
		name, as, token string
	}{
		{"fail/iat-numeric-string-request", TypRequest, f.request(t, map[string]any{"iat": iat})},
		{"fail/iat-numeric-string-decision", TypDecision,
			signJose(t, jose.ES256, f.priv, TypDecision, f.vec.DeviceID, f.decisionClaims(t, map[string]any{"iat": iat}))},
		{"fail/iat-numeric-string-enrol", TypEnrol,
			signJose(t, jose.ES256, f.priv, TypEnrol, "", f.enrolClaims(t, map[string]any{"iat": iat}))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := verify(tt.token, tt.as, f.pub, f.getRequest(), f.vec.Enrol.ActivationID, f.now)
			if got := ReasonOf(err); got != ReasonMalformed {
				t.Fatalf(`"iat":%q: reason = %q (err %v), want %q`, iat, got, err, ReasonMalformed)
			}
		})
	}
}

// TestHeaderNamesCaseSensitive: Parse decodes the header with
// encoding/json, which matches member names case-insensitively (and keeps the
// last of duplicates), while JOSE names are case-sensitive (RFC 7515 §4) and
// go-jose, which parses the same header afterwards, reads them so. A header
// whose only type member is "TYP" has no typ at all, yet is accepted; and a
// header {"typ":"ecps-decision+jwt","Typ":"ecps-proof+jwt"} — a decision for
// any case-sensitive reader — is accepted as a request proof. The contract
// says typ is required, exact and case-sensitive, and a JWS of one typ is
// never accepted as another.
func TestHeaderNamesCaseSensitive(t *testing.T) {
	f := loadFixture(t)
	payload := string(f.requestClaims(t, nil))
	tests := []struct {
		name, header string
	}{
		{"fail/typ-member-named-TYP", fmt.Sprintf(`{"alg":"ES256","TYP":%q,"kid":%q}`, TypRequest, f.vec.DeviceID)},
		{"fail/typ-member-named-Typ", fmt.Sprintf(`{"alg":"ES256","Typ":%q,"kid":%q}`, TypRequest, f.vec.DeviceID)},
		{"fail/decision-typ-shadowed-by-Typ", fmt.Sprintf(`{"alg":"ES256","typ":%q,"Typ":%q,"kid":%q}`, TypDecision, TypRequest, f.vec.DeviceID)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			token := signRaw(t, f.priv, tt.header, payload)
			err := verify(token, TypRequest, f.pub, f.getRequest(), "", f.now)
			if got := ReasonOf(err); got != ReasonTyp {
				t.Fatalf("header %s: reason = %q (err %v), want %q", tt.header, got, err, ReasonTyp)
			}
		})
	}
}

// TestClaimsStrictJSON: decodeClaims reads one JSON value with a
// json.Decoder and ignores what follows it, and matches claim names
// case-insensitively. A payload that is not JSON (a JSON object followed by
// more bytes) is accepted, and {"HTM":...,"HTU":...} counts as htm/htu
// although claim names are case-sensitive (RFC 7519 §4).
func TestClaimsStrictJSON(t *testing.T) {
	f := loadFixture(t)
	payload := string(f.requestClaims(t, nil))
	upper := strings.NewReplacer(`"htm"`, `"HTM"`, `"htu"`, `"HTU"`, `"bh"`, `"BH"`).Replace(payload)
	tests := []struct {
		name, payload string
		want          Reason
	}{
		{"fail/payload-json-then-garbage", payload + "garbage", ReasonMalformed},
		{"fail/payload-two-json-objects", payload + `{"htm":"POST"}`, ReasonMalformed},
		{"fail/claim-names-upper-case", upper, ReasonHTM},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			token := signRaw(t, f.priv, f.header(TypRequest), tt.payload)
			err := verify(token, TypRequest, f.pub, f.getRequest(), "", f.now)
			if got := ReasonOf(err); got != tt.want {
				t.Fatalf("payload %s: reason = %q (err %v), want %q", tt.payload, got, err, tt.want)
			}
		})
	}
}
