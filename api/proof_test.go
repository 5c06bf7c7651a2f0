package api

// Tests of the device proof middleware on /api/v1/device/ routes: every
// rejection is 401 invalid_client and is counted under its reason.

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/ecps-sante/ecps/deviceproof"
)

const (
	proofListPath = "/api/v1/device/devices"
	proofPushPath = "/api/v1/device/push-token"
)

// proofB64 is base64url without padding, as JOSE uses.
func proofB64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

// proofHeader is a valid request-proof header for kid.
func proofHeader(kid string) map[string]any {
	return map[string]any{"alg": "ES256", "typ": deviceproof.TypRequest, "kid": kid}
}

// proofClaims are valid request-proof claims.
func proofClaims(method, path string, iat time.Time, body []byte) map[string]any {
	return map[string]any{"htm": method, "htu": path, "iat": iat.Unix(), "jti": randomJTI(), "bh": bodyHash(body)}
}

// proofSigningInput is base64url(header) "." base64url(claims).
func proofSigningInput(t testing.TB, header, claims map[string]any) string {
	t.Helper()
	return proofB64(jsonBody(t, header)) + "." + proofB64(jsonBody(t, claims))
}

// proofRaw builds a compact JWS by hand, ES256 with the raw r||s signature
// (whatever alg the header claims), so that any header can be tested.
func proofRaw(t testing.TB, key *ecdsa.PrivateKey, header, claims map[string]any) string {
	t.Helper()
	input := proofSigningInput(t, header, claims)
	digest := sha256.Sum256([]byte(input))
	r, s, err := ecdsa.Sign(rand.Reader, key, digest[:])
	if err != nil {
		t.Fatal(err)
	}
	sig := make([]byte, 64)
	r.FillBytes(sig[:32])
	s.FillBytes(sig[32:])
	return input + "." + proofB64(sig)
}

// proofSend sends a request with an Authorization header (none when auth is
// "") to base, goroutine-safe (no t.Fatal).
func proofSend(base, method, path string, body []byte, auth string) (response, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, base+path, rd)
	if err != nil {
		return response{}, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return response{}, err
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return response{Status: res.StatusCode, Header: res.Header, Body: b}, nil
}

// proofCall sends a request to base with "ECPS-Proof <compact>".
func proofCall(t testing.TB, base, method, path string, body []byte, compact string) response {
	t.Helper()
	r, err := proofSend(base, method, path, body, "ECPS-Proof "+compact)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// proofRejections sums the proof rejection counter of replica i over every reason.
func proofRejections(e *env, i int) float64 {
	var n float64
	for _, r := range deviceproof.Reasons {
		n += e.metric(i, "proof_rejections", string(r))
	}
	return n
}

// proofExpectRejection runs send (which talks to replica i) and checks a 401
// invalid_client counted once, under reason and no other.
func proofExpectRejection(t *testing.T, e *env, i int, reason deviceproof.Reason, send func() response) {
	t.Helper()
	before, total := e.metric(i, "proof_rejections", string(reason)), proofRejections(e, i)
	r := send()
	r.wantError(t, http.StatusUnauthorized, "invalid_client")
	if got := e.metric(i, "proof_rejections", string(reason)); got != before+1 {
		t.Errorf("proof_rejections{reason=%q} went %v -> %v, want +1", reason, before, got)
	}
	if got := proofRejections(e, i); got != total+1 {
		t.Errorf("proof_rejections over all reasons went %v -> %v, want +1 (counted under another reason too?)", total, got)
	}
}

// proofExpectOK checks a 200 and that no rejection was counted.
func proofExpectOK(t *testing.T, e *env, i int, send func() response) response {
	t.Helper()
	total := proofRejections(e, i)
	r := send()
	r.wantStatus(t, http.StatusOK)
	if got := proofRejections(e, i); got != total {
		t.Errorf("a rejection was counted on an accepted request (%v -> %v)", total, got)
	}
	return r
}

// proofDeskDevice returns the raw device object of id in the desk listing of subject.
func proofDeskDevice(t testing.TB, e *env, subject, id string) map[string]json.RawMessage {
	t.Helper()
	r := e.desk("GET", "/api/v1/desk/practitioners/"+subject+"/devices", nil)
	r.wantStatus(t, http.StatusOK)
	var list struct {
		Devices []map[string]json.RawMessage `json:"devices"`
	}
	if err := json.Unmarshal(r.Body, &list); err != nil {
		t.Fatal(err)
	}
	for _, d := range list.Devices {
		var got string
		_ = json.Unmarshal(d["device_id"], &got)
		if got == id {
			return d
		}
	}
	t.Fatalf("device %s not in the desk listing of %s: %s", id, subject, r.Body)
	return nil
}

func proofString(t testing.TB, raw json.RawMessage) string {
	t.Helper()
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		t.Fatalf("not a JSON string: %s", raw)
	}
	return s
}

// proofAuditEntries returns a subject's raw audit entries, newest first.
func proofAuditEntries(t testing.TB, e *env, subject string) []map[string]json.RawMessage {
	t.Helper()
	r := e.desk("GET", "/api/v1/desk/audit?subject="+subject+"&limit=200", nil)
	r.wantStatus(t, http.StatusOK)
	var page struct {
		Entries []map[string]json.RawMessage `json:"entries"`
	}
	if err := json.Unmarshal(r.Body, &page); err != nil {
		t.Fatal(err)
	}
	return page.Entries
}

// proofEnv is one replica with a clock on a whole second (so that a shifted
// iat is exactly the shift away from now) and an enrolled phone of subjectA.
func proofEnv(t *testing.T, n int) (*env, *phone) {
	t.Helper()
	e := newEnv(t, n)
	e.clock.Set(time.Now().Truncate(time.Second))
	return e, e.newDevice(subjectA)
}

func TestDeviceProof(t *testing.T) {
	e, p := proofEnv(t, 1)
	base := e.url()
	now := e.clock.Now

	// sendWith sends GET devices with a hand-made proof of p's key.
	sendWith := func(header, claims map[string]any) func() response {
		return func() response {
			return proofCall(t, base, "GET", proofListPath, nil, proofRaw(t, p.key, header, claims))
		}
	}

	t.Run("ok", func(t *testing.T) {
		d := proofDeskDevice(t, e, subjectA, p.deviceID)
		if string(d["last_used_at"]) != "null" {
			t.Fatalf("last_used_at right after enrolment = %s, want null (enrolment is not a use)", d["last_used_at"])
		}
		e.clock.Advance(7 * time.Second)
		r := proofExpectOK(t, e, 0, func() response { return e.call(base, p, "GET", proofListPath, nil) })
		var list struct {
			Devices []map[string]json.RawMessage `json:"devices"`
		}
		if err := json.Unmarshal(r.Body, &list); err != nil {
			t.Fatal(err)
		}
		if len(list.Devices) != 1 || proofString(t, list.Devices[0]["device_id"]) != p.deviceID {
			t.Fatalf("device list = %s, want exactly the calling device", r.Body)
		}
		want := now().UTC().Truncate(time.Second).Format(time.RFC3339)
		d = proofDeskDevice(t, e, subjectA, p.deviceID)
		if string(d["last_used_at"]) == "null" {
			t.Fatalf("last_used_at still null after a use")
		}
		if got := proofString(t, d["last_used_at"]); got != want {
			t.Fatalf("last_used_at = %s, want %s", got, want)
		}
		if got := proofString(t, d["created_at"]); got == want {
			t.Fatalf("created_at moved with the use: %s", got)
		}
	})

	t.Run("ok/hand-made-es256", func(t *testing.T) {
		// The hand-made signer of the failure cases below makes valid proofs.
		proofExpectOK(t, e, 0, sendWith(proofHeader(p.deviceID), proofClaims("GET", proofListPath, now(), nil)))
	})

	t.Run("fail/missing", func(t *testing.T) {
		proofExpectRejection(t, e, 0, deviceproof.ReasonMissing, func() response {
			return do(t, base, "GET", proofListPath, nil, nil)
		})
	})

	t.Run("fail/empty-proof", func(t *testing.T) {
		proofExpectRejection(t, e, 0, deviceproof.ReasonMissing, func() response {
			return do(t, base, "GET", proofListPath, nil, map[string]string{"Authorization": "ECPS-Proof "})
		})
	})

	t.Run("fail/bearer-scheme", func(t *testing.T) {
		proofExpectRejection(t, e, 0, deviceproof.ReasonMissing, func() response {
			return do(t, base, "GET", proofListPath, nil, map[string]string{"Authorization": "Bearer x"})
		})
	})

	t.Run("fail/bearer-scheme-with-valid-proof", func(t *testing.T) {
		proofExpectRejection(t, e, 0, deviceproof.ReasonMissing, func() response {
			return do(t, base, "GET", proofListPath, nil, map[string]string{"Authorization": "Bearer " + p.proof(t, now(), "GET", proofListPath, nil)})
		})
	})

	t.Run("fail/malformed", func(t *testing.T) {
		for _, bad := range []string{"abc", "a.b", "a.b.c.d", "!!!.e30.sig", proofB64([]byte("{not json")) + ".e30.AA"} {
			proofExpectRejection(t, e, 0, deviceproof.ReasonMalformed, func() response {
				return proofCall(t, base, "GET", proofListPath, nil, bad)
			})
		}
	})

	t.Run("fail/alg-none", func(t *testing.T) {
		h := proofHeader(p.deviceID)
		h["alg"] = "none"
		tok := proofSigningInput(t, h, proofClaims("GET", proofListPath, now(), nil)) + "."
		proofExpectRejection(t, e, 0, deviceproof.ReasonAlg, func() response {
			return proofCall(t, base, "GET", proofListPath, nil, tok)
		})
	})

	t.Run("fail/alg-HS256", func(t *testing.T) {
		// Algorithm confusion: HMAC keyed with the device's public JWK.
		h := proofHeader(p.deviceID)
		h["alg"] = "HS256"
		input := proofSigningInput(t, h, proofClaims("GET", proofListPath, now(), nil))
		mac := hmac.New(sha256.New, p.jwk())
		mac.Write([]byte(input))
		tok := input + "." + proofB64(mac.Sum(nil))
		proofExpectRejection(t, e, 0, deviceproof.ReasonAlg, func() response {
			return proofCall(t, base, "GET", proofListPath, nil, tok)
		})
	})

	t.Run("fail/alg-RS256", func(t *testing.T) {
		rk, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			t.Fatal(err)
		}
		opts := (&jose.SignerOptions{}).WithType(deviceproof.TypRequest).WithHeader("kid", p.deviceID)
		s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: rk}, opts)
		if err != nil {
			t.Fatal(err)
		}
		obj, err := s.Sign(jsonBody(t, proofClaims("GET", proofListPath, now(), nil)))
		if err != nil {
			t.Fatal(err)
		}
		tok, err := obj.CompactSerialize()
		if err != nil {
			t.Fatal(err)
		}
		proofExpectRejection(t, e, 0, deviceproof.ReasonAlg, func() response {
			return proofCall(t, base, "GET", proofListPath, nil, tok)
		})
	})

	t.Run("fail/alg-other-spellings", func(t *testing.T) {
		for _, alg := range []any{"es256", "ES384", "ES256K", "", nil} {
			h := proofHeader(p.deviceID)
			if alg == nil {
				delete(h, "alg")
			} else {
				h["alg"] = alg
			}
			proofExpectRejection(t, e, 0, deviceproof.ReasonAlg, sendWith(h, proofClaims("GET", proofListPath, now(), nil)))
		}
	})

	t.Run("fail/typ-missing", func(t *testing.T) {
		h := proofHeader(p.deviceID)
		delete(h, "typ")
		proofExpectRejection(t, e, 0, deviceproof.ReasonTyp, sendWith(h, proofClaims("GET", proofListPath, now(), nil)))
	})

	t.Run("fail/typ-decision", func(t *testing.T) {
		h := proofHeader(p.deviceID)
		h["typ"] = deviceproof.TypDecision
		proofExpectRejection(t, e, 0, deviceproof.ReasonTyp, sendWith(h, proofClaims("GET", proofListPath, now(), nil)))
	})

	t.Run("fail/typ-enrolment-proof", func(t *testing.T) {
		// An enrolment proof as the harness makes it, then one with a kid
		// and request claims: the typ alone refuses both.
		proofExpectRejection(t, e, 0, deviceproof.ReasonTyp, func() response {
			return proofCall(t, base, "GET", proofListPath, nil, p.enrolProof(t, "act_0123456789abcdefghijkl", now()))
		})
		h := proofHeader(p.deviceID)
		h["typ"] = deviceproof.TypEnrol
		proofExpectRejection(t, e, 0, deviceproof.ReasonTyp, sendWith(h, proofClaims("GET", proofListPath, now(), nil)))
	})

	t.Run("fail/typ-case", func(t *testing.T) {
		for _, typ := range []string{"ECPS-PROOF+JWT", "ecps-proof+JWT", "JWT", "ecps-proof"} {
			h := proofHeader(p.deviceID)
			h["typ"] = typ
			proofExpectRejection(t, e, 0, deviceproof.ReasonTyp, sendWith(h, proofClaims("GET", proofListPath, now(), nil)))
		}
	})

	t.Run("fail/kid-unknown", func(t *testing.T) {
		kid := "dev_" + randomJTI()
		if !deviceproof.ValidKeyID(kid) {
			t.Fatalf("test kid %q is not well formed", kid)
		}
		proofExpectRejection(t, e, 0, deviceproof.ReasonUnknownDevice, sendWith(proofHeader(kid), proofClaims("GET", proofListPath, now(), nil)))
	})

	t.Run("fail/kid-malformed", func(t *testing.T) {
		for _, kid := range []any{"not-a-device", "dev_", "dev_short", "dev_../../x", "dev_" + strings.Repeat("a", 65), "DEV_" + randomJTI(), ""} {
			proofExpectRejection(t, e, 0, deviceproof.ReasonUnknownDevice, sendWith(map[string]any{"alg": "ES256", "typ": deviceproof.TypRequest, "kid": kid},
				proofClaims("GET", proofListPath, now(), nil)))
		}
	})

	t.Run("fail/kid-not-a-string", func(t *testing.T) {
		h := proofHeader(p.deviceID)
		h["kid"] = 42
		proofExpectRejection(t, e, 0, deviceproof.ReasonMalformed, sendWith(h, proofClaims("GET", proofListPath, now(), nil)))
	})

	t.Run("fail/kid-missing", func(t *testing.T) {
		h := proofHeader(p.deviceID)
		delete(h, "kid")
		proofExpectRejection(t, e, 0, deviceproof.ReasonUnknownDevice, sendWith(h, proofClaims("GET", proofListPath, now(), nil)))
	})

	t.Run("fail/signature-other-key", func(t *testing.T) {
		other := newPhone(t)
		proofExpectRejection(t, e, 0, deviceproof.ReasonSignature, func() response {
			return proofCall(t, base, "GET", proofListPath, nil, proofRaw(t, other.key, proofHeader(p.deviceID), proofClaims("GET", proofListPath, now(), nil)))
		})
	})

	t.Run("fail/signature-embedded-jwk", func(t *testing.T) {
		// A key carried in the header is never trusted: only the enrolled one.
		other := newPhone(t)
		h := proofHeader(p.deviceID)
		h["jwk"] = other.jwk()
		proofExpectRejection(t, e, 0, deviceproof.ReasonSignature, func() response {
			return proofCall(t, base, "GET", proofListPath, nil, proofRaw(t, other.key, h, proofClaims("GET", proofListPath, now(), nil)))
		})
	})

	t.Run("fail/signature-der", func(t *testing.T) {
		input := proofSigningInput(t, proofHeader(p.deviceID), proofClaims("GET", proofListPath, now(), nil))
		digest := sha256.Sum256([]byte(input))
		der, err := ecdsa.SignASN1(rand.Reader, p.key, digest[:])
		if err != nil {
			t.Fatal(err)
		}
		proofExpectRejection(t, e, 0, deviceproof.ReasonSignature, func() response {
			return proofCall(t, base, "GET", proofListPath, nil, input+"."+proofB64(der))
		})
	})

	t.Run("fail/signature-tampered-claims", func(t *testing.T) {
		tok := proofRaw(t, p.key, proofHeader(p.deviceID), proofClaims("GET", "/api/v1/device/other", now(), nil))
		parts := strings.Split(tok, ".")
		parts[1] = proofB64(jsonBody(t, proofClaims("GET", proofListPath, now(), nil)))
		proofExpectRejection(t, e, 0, deviceproof.ReasonSignature, func() response {
			return proofCall(t, base, "GET", proofListPath, nil, strings.Join(parts, "."))
		})
	})

	t.Run("fail/signature-empty", func(t *testing.T) {
		tok := proofSigningInput(t, proofHeader(p.deviceID), proofClaims("GET", proofListPath, now(), nil)) + "."
		proofExpectRejection(t, e, 0, deviceproof.ReasonSignature, func() response {
			return proofCall(t, base, "GET", proofListPath, nil, tok)
		})
	})

	t.Run("fail/jti-short", func(t *testing.T) {
		c := proofClaims("GET", proofListPath, now(), nil)
		c["jti"] = "abc"
		proofExpectRejection(t, e, 0, deviceproof.ReasonMalformed, sendWith(proofHeader(p.deviceID), c))
	})

	t.Run("fail/iat-missing", func(t *testing.T) {
		c := proofClaims("GET", proofListPath, now(), nil)
		delete(c, "iat")
		proofExpectRejection(t, e, 0, deviceproof.ReasonMalformed, sendWith(proofHeader(p.deviceID), c))
	})

	t.Run("fail/htm", func(t *testing.T) {
		proofExpectRejection(t, e, 0, deviceproof.ReasonHTM, sendWith(proofHeader(p.deviceID), proofClaims("POST", proofListPath, now(), nil)))
	})

	t.Run("fail/htm-lowercase", func(t *testing.T) {
		proofExpectRejection(t, e, 0, deviceproof.ReasonHTM, sendWith(proofHeader(p.deviceID), proofClaims("get", proofListPath, now(), nil)))
	})

	t.Run("fail/htu-other-path", func(t *testing.T) {
		proofExpectRejection(t, e, 0, deviceproof.ReasonHTU, sendWith(proofHeader(p.deviceID), proofClaims("GET", proofPushPath, now(), nil)))
	})

	t.Run("fail/htu-with-query", func(t *testing.T) {
		proofExpectRejection(t, e, 0, deviceproof.ReasonHTU, func() response {
			tok := proofRaw(t, p.key, proofHeader(p.deviceID), proofClaims("GET", proofListPath+"?x=1", now(), nil))
			return proofCall(t, base, "GET", proofListPath+"?x=1", nil, tok)
		})
	})

	t.Run("fail/htu-absolute-url", func(t *testing.T) {
		proofExpectRejection(t, e, 0, deviceproof.ReasonHTU, sendWith(proofHeader(p.deviceID), proofClaims("GET", base+proofListPath, now(), nil)))
	})

	t.Run("ok/htu-ignores-request-query", func(t *testing.T) {
		proofExpectOK(t, e, 0, func() response {
			tok := proofRaw(t, p.key, proofHeader(p.deviceID), proofClaims("GET", proofListPath, now(), nil))
			return proofCall(t, base, "GET", proofListPath+"?x=1", nil, tok)
		})
	})

	t.Run("fail/bh-body-changed", func(t *testing.T) {
		signed := []byte(`{"provider":"fcm","token":"token-one"}`)
		sent := []byte(`{"provider":"fcm","token":"token-two"}`)
		proofExpectRejection(t, e, 0, deviceproof.ReasonBH, func() response {
			return proofCall(t, base, "PUT", proofPushPath, sent, p.proof(t, now(), "PUT", proofPushPath, signed))
		})
	})

	t.Run("fail/bh-of-empty-with-body", func(t *testing.T) {
		sent := []byte(`{"provider":"fcm","token":"token-one"}`)
		proofExpectRejection(t, e, 0, deviceproof.ReasonBH, func() response {
			return proofCall(t, base, "PUT", proofPushPath, sent, p.proof(t, now(), "PUT", proofPushPath, nil))
		})
	})

	t.Run("fail/bh-of-body-without-body", func(t *testing.T) {
		proofExpectRejection(t, e, 0, deviceproof.ReasonBH, sendWith(proofHeader(p.deviceID), proofClaims("GET", proofListPath, now(), []byte("{}"))))
	})

	t.Run("fail/bh-missing", func(t *testing.T) {
		c := proofClaims("GET", proofListPath, now(), nil)
		delete(c, "bh")
		proofExpectRejection(t, e, 0, deviceproof.ReasonBH, sendWith(proofHeader(p.deviceID), c))
	})

	t.Run("fail/replay", func(t *testing.T) {
		tok := p.proof(t, now(), "GET", proofListPath, nil)
		proofExpectOK(t, e, 0, func() response { return proofCall(t, base, "GET", proofListPath, nil, tok) })
		proofExpectRejection(t, e, 0, deviceproof.ReasonReplay, func() response {
			return proofCall(t, base, "GET", proofListPath, nil, tok)
		})
	})

	t.Run("fail/replay-jti-reused-in-new-proof", func(t *testing.T) {
		c := proofClaims("GET", proofListPath, now(), nil)
		proofExpectOK(t, e, 0, sendWith(proofHeader(p.deviceID), c))
		// A fresh signature over the same jti is still a replay.
		proofExpectRejection(t, e, 0, deviceproof.ReasonReplay, sendWith(proofHeader(p.deviceID), c))
	})

	t.Run("ok/rejected-proof-does-not-burn-jti", func(t *testing.T) {
		// A proof refused before it was accepted (here for htm) does not
		// make the honest request with the same jti a replay.
		c := proofClaims("GET", proofListPath, now(), nil)
		bad := map[string]any{}
		for k, v := range c {
			bad[k] = v
		}
		bad["htm"] = "POST"
		proofExpectRejection(t, e, 0, deviceproof.ReasonHTM, sendWith(proofHeader(p.deviceID), bad))
		proofExpectOK(t, e, 0, sendWith(proofHeader(p.deviceID), c))
	})

	t.Run("jti-ttl", func(t *testing.T) {
		e.call(base, p, "GET", proofListPath, nil).wantStatus(t, http.StatusOK)
		ctx := context.Background()
		var keys []string
		iter := e.rdb.Scan(ctx, 0, e.prefix+"*:jti:*", 1000).Iterator()
		for iter.Next(ctx) {
			keys = append(keys, iter.Val())
		}
		if err := iter.Err(); err != nil {
			t.Fatal(err)
		}
		if len(keys) == 0 {
			t.Fatalf("no jti key under %s*:jti:*", e.prefix)
		}
		for _, k := range keys {
			ttl, err := e.rdb.PTTL(ctx, k).Result()
			if err != nil {
				t.Fatal(err)
			}
			if ttl <= 0 || ttl > 2*e.opts.ProofMaxSkew {
				t.Errorf("jti key %s has TTL %v, want in (0, %v]", k, ttl, 2*e.opts.ProofMaxSkew)
			}
		}
	})

	t.Run("push-token/ok", func(t *testing.T) {
		body := jsonBody(t, map[string]string{"provider": "fcm", "token": "fcm-token-for-proof-test"})
		r := e.call(base, p, "PUT", proofPushPath, body)
		r.wantStatus(t, http.StatusNoContent)
		if len(r.Body) != 0 {
			t.Errorf("204 with a body: %q", r.Body)
		}
		if d := proofDeskDevice(t, e, subjectA, p.deviceID); string(d["push"]) != "true" {
			t.Fatalf("push = %s after setting a token, want true", d["push"])
		}
	})

	t.Run("push-token/provider-not-fcm", func(t *testing.T) {
		for _, prov := range []string{"apns", "FCM", ""} {
			body := jsonBody(t, map[string]string{"provider": prov, "token": "tok"})
			e.call(base, p, "PUT", proofPushPath, body).wantError(t, http.StatusBadRequest, "invalid_request")
		}
	})

	t.Run("push-token/empty-token", func(t *testing.T) {
		body := jsonBody(t, map[string]string{"provider": "fcm", "token": ""})
		e.call(base, p, "PUT", proofPushPath, body).wantError(t, http.StatusBadRequest, "invalid_request")
	})

	t.Run("push-token/not-json", func(t *testing.T) {
		e.call(base, p, "PUT", proofPushPath, []byte("provider=fcm")).wantError(t, http.StatusBadRequest, "invalid_request")
	})

	t.Run("ok/body-of-64KiB-is-not-too-large", func(t *testing.T) {
		// Exactly the cap passes the body cap and the proof; the handler then
		// refuses the 64 KiB token as a bad request.
		prefix, suffix := `{"provider":"fcm","token":"`, `"}`
		body := []byte(prefix + strings.Repeat("a", MaxBody-len(prefix)-len(suffix)) + suffix)
		if len(body) != MaxBody {
			t.Fatalf("body is %d bytes", len(body))
		}
		e.call(base, p, "PUT", proofPushPath, body).wantError(t, http.StatusBadRequest, "invalid_request")
	})

	t.Run("precedence/unknown-route-before-auth", func(t *testing.T) {
		total := proofRejections(e, 0)
		do(t, base, "GET", "/api/v1/device/nope", nil, nil).wantError(t, http.StatusNotFound, "not_found")
		do(t, base, "GET", "/api/v1/device/", nil, nil).wantError(t, http.StatusNotFound, "not_found")
		if got := proofRejections(e, 0); got != total {
			t.Errorf("an unknown route counted a proof rejection")
		}
	})

	t.Run("precedence/method-not-allowed-before-auth", func(t *testing.T) {
		do(t, base, "POST", proofListPath, nil, nil).wantError(t, http.StatusMethodNotAllowed, "method_not_allowed")
	})

	t.Run("precedence/body-cap-before-auth", func(t *testing.T) {
		total := proofRejections(e, 0)
		big := bytes.Repeat([]byte("a"), 70<<10)
		do(t, base, "PUT", proofPushPath, big, nil).wantError(t, http.StatusRequestEntityTooLarge, "payload_too_large")
		// Same without a Content-Length (chunked).
		req, err := http.NewRequest("PUT", base+proofPushPath, io.MultiReader(bytes.NewReader(big)))
		if err != nil {
			t.Fatal(err)
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		response{Status: res.StatusCode, Header: res.Header, Body: b}.wantError(t, http.StatusRequestEntityTooLarge, "payload_too_large")
		if got := proofRejections(e, 0); got != total {
			t.Errorf("an oversized body counted a proof rejection")
		}
	})
}

// TestDeviceProofSkew checks |now - iat| ≤ 60 s, both ways, to the second.
func TestDeviceProofSkew(t *testing.T) {
	e, p := proofEnv(t, 1)
	base := e.url()
	signed := func(shift time.Duration) string {
		return proofRaw(t, p.key, proofHeader(p.deviceID), proofClaims("GET", proofListPath, e.clock.Now().Add(shift), nil))
	}
	send := func(tok string) func() response {
		return func() response { return proofCall(t, base, "GET", proofListPath, nil, tok) }
	}

	t.Run("fail/iat-61s-past", func(t *testing.T) {
		proofExpectRejection(t, e, 0, deviceproof.ReasonSkew, send(signed(-61*time.Second)))
	})
	t.Run("fail/iat-61s-future", func(t *testing.T) {
		proofExpectRejection(t, e, 0, deviceproof.ReasonSkew, send(signed(61*time.Second)))
	})
	t.Run("ok/iat-60s-past", func(t *testing.T) {
		proofExpectOK(t, e, 0, send(signed(-60*time.Second)))
	})
	t.Run("ok/iat-60s-future", func(t *testing.T) {
		proofExpectOK(t, e, 0, send(signed(60*time.Second)))
	})
	t.Run("fail/clock-advanced-61s", func(t *testing.T) {
		tok := signed(0)
		e.clock.Advance(61 * time.Second)
		proofExpectRejection(t, e, 0, deviceproof.ReasonSkew, send(tok))
	})
	t.Run("ok/clock-advanced-60s", func(t *testing.T) {
		tok := signed(0)
		e.clock.Advance(60 * time.Second)
		proofExpectOK(t, e, 0, send(tok))
	})
	t.Run("fail/clock-back-61s", func(t *testing.T) {
		tok := signed(0)
		e.clock.Advance(-61 * time.Second)
		proofExpectRejection(t, e, 0, deviceproof.ReasonSkew, send(tok))
	})
	t.Run("fail/iat-float", func(t *testing.T) {
		c := proofClaims("GET", proofListPath, e.clock.Now(), nil)
		c["iat"] = float64(e.clock.Now().Unix()) + 0.5
		proofExpectRejection(t, e, 0, deviceproof.ReasonMalformed, send(proofRaw(t, p.key, proofHeader(p.deviceID), c)))
	})
}

// TestDeviceProofReplayAcrossReplicas: a proof accepted by one replica is a
// replay on another.
func TestDeviceProofReplayAcrossReplicas(t *testing.T) {
	e, p := proofEnv(t, 2)
	tok := p.proof(t, e.clock.Now(), "GET", proofListPath, nil)
	proofExpectOK(t, e, 0, func() response { return proofCall(t, e.replicas[0].http.URL, "GET", proofListPath, nil, tok) })
	proofExpectRejection(t, e, 1, deviceproof.ReasonReplay, func() response {
		return proofCall(t, e.replicas[1].http.URL, "GET", proofListPath, nil, tok)
	})
	// And back on the first replica.
	proofExpectRejection(t, e, 0, deviceproof.ReasonReplay, func() response {
		return proofCall(t, e.replicas[0].http.URL, "GET", proofListPath, nil, tok)
	})
}

// TestDeviceProofConcurrentReplay: 50 concurrent sends of one proof on two
// replicas are accepted exactly once.
func TestDeviceProofConcurrentReplay(t *testing.T) {
	e, p := proofEnv(t, 2)
	tok := p.proof(t, e.clock.Now(), "GET", proofListPath, nil)
	const n = 50
	type result struct {
		r   response
		err error
	}
	results := make([]result, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			<-start
			r, err := proofSend(e.replicas[i%2].http.URL, "GET", proofListPath, nil, "ECPS-Proof "+tok)
			results[i] = result{r, err}
		}(i)
	}
	close(start)
	wg.Wait()
	ok, replay := 0, 0
	for i, res := range results {
		if res.err != nil {
			t.Fatalf("request %d: %v", i, res.err)
		}
		switch res.r.Status {
		case http.StatusOK:
			ok++
		case http.StatusUnauthorized:
			if res.r.json(t)["error"] != "invalid_client" {
				t.Errorf("request %d: %s", i, res.r.Body)
			}
			replay++
		default:
			t.Errorf("request %d: status %d %s", i, res.r.Status, res.r.Body)
		}
	}
	if ok != 1 || replay != n-1 {
		t.Fatalf("%d accepted and %d refused, want 1 and %d", ok, replay, n-1)
	}
	if got := e.metric(0, "proof_rejections", "replay") + e.metric(1, "proof_rejections", "replay"); got != n-1 {
		t.Fatalf("replay rejections counted = %v, want %d", got, n-1)
	}
	if got := proofRejections(e, 0) + proofRejections(e, 1); got != n-1 {
		t.Fatalf("rejections over all reasons = %v, want %d", got, n-1)
	}
}

// TestDeviceProofDeviceStatus: suspended and revoked devices are refused.
func TestDeviceProofDeviceStatus(t *testing.T) {
	e, p := proofEnv(t, 1)
	base := e.url()
	call := func() response { return e.call(base, p, "GET", proofListPath, nil) }

	t.Run("fail/suspended", func(t *testing.T) {
		e.desk("POST", "/api/v1/desk/devices/"+p.deviceID+"/suspend", nil).wantStatus(t, http.StatusOK)
		proofExpectRejection(t, e, 0, deviceproof.ReasonSuspended, call)
	})
	t.Run("ok/resumed", func(t *testing.T) {
		e.desk("POST", "/api/v1/desk/devices/"+p.deviceID+"/resume", nil).wantStatus(t, http.StatusOK)
		proofExpectOK(t, e, 0, call)
	})
	t.Run("fail/revoked", func(t *testing.T) {
		e.desk("DELETE", "/api/v1/desk/devices/"+p.deviceID, nil).wantStatus(t, http.StatusNoContent)
		proofExpectRejection(t, e, 0, deviceproof.ReasonRevoked, call)
		proofExpectRejection(t, e, 0, deviceproof.ReasonRevoked, func() response {
			return e.call(base, p, "PUT", proofPushPath, jsonBody(t, map[string]string{"provider": "fcm", "token": "tok"}))
		})
	})
}

// TestDeviceProofOwnership: a practitioner's device acts on their devices only.
func TestDeviceProofOwnership(t *testing.T) {
	e, a1 := proofEnv(t, 1)
	base := e.url()
	a2 := e.newDevice(subjectA)
	b := e.newDevice(subjectB)

	t.Run("list-is-own-devices-only", func(t *testing.T) {
		r := e.call(base, a1, "GET", proofListPath, nil)
		r.wantStatus(t, http.StatusOK)
		var list struct {
			Devices []struct {
				DeviceID string `json:"device_id"`
				Subject  string `json:"subject"`
			} `json:"devices"`
		}
		if err := json.Unmarshal(r.Body, &list); err != nil {
			t.Fatal(err)
		}
		if len(list.Devices) != 2 {
			t.Fatalf("A sees %d devices, want 2: %s", len(list.Devices), r.Body)
		}
		for _, d := range list.Devices {
			if d.Subject != subjectA || d.DeviceID == b.deviceID {
				t.Fatalf("A sees another practitioner's device: %s", r.Body)
			}
		}
	})

	t.Run("fail/other-practitioners-device", func(t *testing.T) {
		e.call(base, a1, "DELETE", "/api/v1/device/devices/"+b.deviceID, nil).wantError(t, http.StatusNotFound, "not_found")
		e.call(base, b, "GET", proofListPath, nil).wantStatus(t, http.StatusOK)
		var st string
		if err := json.Unmarshal(proofDeskDevice(t, e, subjectB, b.deviceID)["status"], &st); err != nil || st != "active" {
			t.Fatalf("B's device status = %q, want active", st)
		}
		for _, en := range proofAuditEntries(t, e, subjectB) {
			if proofString(t, en["event"]) == "device.revoked" {
				t.Fatalf("B's audit shows a revocation: %s", en["details"])
			}
		}
	})

	t.Run("fail/unknown-device", func(t *testing.T) {
		e.call(base, a1, "DELETE", "/api/v1/device/devices/dev_"+randomJTI(), nil).wantError(t, http.StatusNotFound, "not_found")
	})

	t.Run("ok/revoke-own-other-device", func(t *testing.T) {
		r := e.call(base, a1, "DELETE", "/api/v1/device/devices/"+a2.deviceID, nil)
		r.wantStatus(t, http.StatusNoContent)
		proofExpectRejection(t, e, 0, deviceproof.ReasonRevoked, func() response {
			return e.call(base, a2, "GET", proofListPath, nil)
		})
		e.call(base, a1, "GET", proofListPath, nil).wantStatus(t, http.StatusOK)

		var found int
		for _, en := range proofAuditEntries(t, e, subjectA) {
			if proofString(t, en["event"]) != "device.revoked" {
				continue
			}
			found++
			var actor struct{ Type, ID string }
			if err := json.Unmarshal(en["actor"], &actor); err != nil {
				t.Fatal(err)
			}
			if actor.Type != "device" || actor.ID != a1.deviceID {
				t.Errorf("device.revoked actor = %s, want {device %s}", en["actor"], a1.deviceID)
			}
			var details map[string]any
			_ = json.Unmarshal(en["details"], &details)
			if details["device_id"] != a2.deviceID {
				t.Errorf("device.revoked details = %s, want device_id %s", en["details"], a2.deviceID)
			}
		}
		if found != 1 {
			t.Fatalf("%d device.revoked entries, want 1", found)
		}
	})

	t.Run("ok/revoke-itself", func(t *testing.T) {
		a3 := e.newDevice(subjectA)
		e.call(base, a3, "DELETE", "/api/v1/device/devices/"+a3.deviceID, nil).wantStatus(t, http.StatusNoContent)
		proofExpectRejection(t, e, 0, deviceproof.ReasonRevoked, func() response {
			return e.call(base, a3, "GET", proofListPath, nil)
		})
	})

	t.Run("ok/revoke-already-revoked", func(t *testing.T) {
		e.call(base, a1, "DELETE", "/api/v1/device/devices/"+a2.deviceID, nil).wantStatus(t, http.StatusNoContent)
		if n := countOf(e.auditEvents(subjectA), "device.revoked"); n != 2 {
			t.Fatalf("%d device.revoked entries after a repeated DELETE, want 2 (a2 and a3 once each)", n)
		}
	})
}
