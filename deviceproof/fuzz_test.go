package deviceproof

import (
	"crypto/elliptic"
	"encoding/base64"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/go-jose/go-jose/v4"
)

// Seed corpora: the vectors, variants of them, and the files under
// testdata/fuzz/<FuzzName>/.

// seedTokens returns the vector tokens and broken variants of them.
func (f *fixture) seedTokens(t testing.TB) []string {
	get := f.vec.Requests[0].JWS
	seeds := []string{f.vec.Enrol.JWS, get, f.vec.Requests[1].JWS, f.vec.Decision.JWS}
	for _, s := range slices.Clone(seeds) {
		seeds = append(seeds,
			mapSig(t, s, highS),
			mapSig(t, s, func(b []byte) []byte { return derSignature(t, b) }),
			mapSig(t, s, func(b []byte) []byte { b[7] ^= 1; return b }),
			s[:strings.LastIndexByte(s, '.')], // two parts
			s+".",                             // four parts
		)
	}
	reqPayload := f.requestClaims(t, nil)
	seeds = append(seeds,
		"", ".", "..", "...",
		b64([]byte(`{"alg":"none","typ":"ecps-proof+jwt"}`))+"."+b64(reqPayload)+".",
		signRaw(t, f.priv, `{"alg":"es256","typ":"ecps-proof+jwt"}`, string(reqPayload)),
		signRaw(t, f.priv, `{"alg":"ES256","typ":"ECPS-PROOF+JWT"}`, string(reqPayload)),
		signRaw(t, f.priv, `{"alg":"ES256","typ":"ecps-proof+jwt","b64":false,"crit":["b64"]}`, string(reqPayload)),
		signRaw(t, f.priv, f.header(TypRequest), "not json"),
		signRaw(t, f.priv, f.header(TypRequest), string(f.requestClaims(t, map[string]any{"iat": 1.5}))),
		signJose(t, jose.ES256, f.priv, "", f.vec.DeviceID, reqPayload),
		f.request(t, map[string]any{"jti": "short"}),
	)
	return seeds
}

func FuzzParse(f *testing.F) {
	fx := loadFixture(f)
	for _, s := range fx.seedTokens(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, compact string) {
		accepted := 0
		for _, typ := range []string{TypEnrol, TypRequest, TypDecision} {
			tok, err := Parse(compact, typ)
			if err != nil {
				if tok != nil {
					t.Fatalf("Parse(%s) returned a token and %v", typ, err)
				}
				if r := ReasonOf(err); !slices.Contains(Reasons, r) {
					t.Fatalf("Parse(%s): error %v has no known Reason (%q)", typ, err, r)
				}
				continue
			}
			if tok == nil {
				t.Fatalf("Parse(%s) returned neither token nor error", typ)
			}
			accepted++
			if len(compact) > 8<<10 || strings.Count(compact, ".") != 2 {
				t.Fatalf("Parse(%s) accepted %d bytes with %d dots", typ, len(compact), strings.Count(compact, "."))
			}
			// Re-decode the header, with case-sensitive names: alg is ES256.
			h, _, _ := strings.Cut(compact, ".")
			raw, err := base64.RawURLEncoding.DecodeString(h)
			if err != nil {
				t.Fatalf("accepted header is not base64url: %v", err)
			}
			var m map[string]any
			if err := json.Unmarshal(raw, &m); err != nil {
				t.Fatalf("accepted header is not a JSON object: %v", err)
			}
			if m["alg"] != "ES256" {
				t.Fatalf("Parse(%s) accepted header %s: alg is %v", typ, raw, m["alg"])
			}
			// Verifying never panics, and fails only as a signature failure.
			if _, err := tok.Verify(fx.pub); err != nil && ReasonOf(err) != ReasonSignature {
				t.Fatalf("Verify: %v", err)
			}
		}
		if accepted > 1 {
			t.Fatalf("one token accepted as %d types", accepted)
		}
	})
}

func FuzzVerifyRequest(f *testing.F) {
	fx := loadFixture(f)
	for _, r := range fx.vec.Requests {
		f.Add(r.JWS, r.Method, r.Path, []byte(r.Body))
		f.Add(r.JWS, "POST", r.Path, []byte(r.Body))
		f.Add(r.JWS, r.Method, r.Path+"?q=1", []byte(r.Body))
		f.Add(r.JWS, r.Method, r.Path, []byte(r.Body+" "))
		f.Add(mapSig(f, r.JWS, highS), r.Method, r.Path, []byte(r.Body))
	}
	for _, s := range fx.seedTokens(f) {
		f.Add(s, "GET", "/api/v1/device/devices", []byte{})
	}
	f.Add(fx.request(f, map[string]any{"htu": "/api/v1/device/devices?x=1"}), "GET", "/api/v1/device/devices", []byte(nil))
	f.Fuzz(func(t *testing.T, compact, method, path string, body []byte) {
		tok, err := Parse(compact, TypRequest)
		if err != nil {
			return
		}
		c, err := VerifyRequest(tok, fx.pub, Request{Method: method, Path: path, Body: body}, fx.now, skew)
		if err != nil {
			if r := ReasonOf(err); !slices.Contains(Reasons, r) {
				t.Fatalf("VerifyRequest: error %v has no known Reason (%q)", err, r)
			}
			return
		}
		if c.HTM != method || c.HTU != path || c.BH != BodyHash(body) {
			t.Fatalf("accepted claims %+v for %s %s (bh %s)", c, method, path, BodyHash(body))
		}
		if !ValidJTI(c.JTI) {
			t.Fatalf("accepted jti %q", c.JTI)
		}
		if d := c.IssuedAt().Sub(fx.now); d > skew || d < -skew {
			t.Fatalf("accepted iat %v, %v from now", c.IssuedAt(), d)
		}
	})
}

func FuzzParsePublicJWK(f *testing.F) {
	fx := loadFixture(f)
	var jwk map[string]string
	if err := json.Unmarshal(fx.vec.PublicJWK, &jwk); err != nil {
		f.Fatal(err)
	}
	yb := unb64(f, jwk["y"])
	yb[0] ^= 1
	zero := b64(make([]byte, 32))
	f.Add([]byte(fx.vec.PublicJWK))
	f.Add([]byte(fx.vec.PrivateJWK))
	f.Add([]byte(`{"kty":"EC","crv":"P-256","x":"` + jwk["x"] + `","y":"` + b64(yb) + `"}`))
	f.Add([]byte(`{"kty":"EC","crv":"P-256","x":"` + zero + `","y":"` + zero + `"}`))
	f.Add([]byte(`{"kty":"EC","crv":"P-384","x":"` + jwk["x"] + `","y":"` + jwk["y"] + `"}`))
	f.Add([]byte(`{"kty":"EC","crv":"P-256","x":"` + jwk["x"][2:] + `","y":"` + jwk["y"] + `"}`))
	f.Add([]byte(`{"kty":"oct","k":"AAAA"}`))
	f.Add([]byte(`{"kty":"RSA","n":"AQAB","e":"AQAB"}`))
	f.Add([]byte(`{}`))
	f.Add([]byte(`not json`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		pk, err := ParsePublicJWK(raw)
		if err != nil {
			if !errors.Is(err, ErrBadKey) {
				t.Fatalf("error %v is not ErrBadKey", err)
			}
			if pk.Key != nil || pk.Thumbprint != "" || pk.JWK != nil {
				t.Fatalf("rejected key returned %+v", pk)
			}
			return
		}
		if pk.Key == nil || pk.Key.Curve != elliptic.P256() {
			t.Fatalf("accepted a key not on P-256: %+v", pk.Key)
		}
		if _, err := pk.Key.ECDH(); err != nil {
			t.Fatalf("accepted key is not a valid P-256 point: %v", err)
		}
		again, err := ParsePublicJWK(pk.JWK)
		if err != nil {
			t.Fatalf("ParsePublicJWK(%s) of its own JWK: %v", pk.JWK, err)
		}
		if again.Thumbprint != pk.Thumbprint || !again.Key.Equal(pk.Key) || string(again.JWK) != string(pk.JWK) {
			t.Fatalf("unstable: %q/%s then %q/%s", pk.Thumbprint, pk.JWK, again.Thumbprint, again.JWK)
		}
		var stored map[string]any
		if err := json.Unmarshal(pk.JWK, &stored); err != nil {
			t.Fatalf("stored JWK %s: %v", pk.JWK, err)
		}
		if _, ok := stored["d"]; ok {
			t.Fatalf("stored JWK has private material: %s", pk.JWK)
		}
		x, _ := stored["x"].(string)
		y, _ := stored["y"].(string)
		if want := rfc7638("P-256", x, y); pk.Thumbprint != want {
			t.Fatalf("thumbprint %q, RFC 7638 says %q", pk.Thumbprint, want)
		}
	})
}
