package main

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

func mustKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := newDeviceKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// protectedHeader decodes the raw protected header of a compact JWS.
func protectedHeader(t *testing.T, tok string) map[string]any {
	t.Helper()
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("not a compact JWS: %d parts", len(parts))
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[0])
	if err != nil {
		t.Fatalf("header: %v", err)
	}
	var h map[string]any
	if err := json.Unmarshal(raw, &h); err != nil {
		t.Fatalf("header: %v", err)
	}
	return h
}

// verifyES256 parses tok with the ES256 allow-list and verifies it with pub.
func verifyES256(t *testing.T, tok string, pub *ecdsa.PublicKey) []byte {
	t.Helper()
	obj, err := jose.ParseSignedCompact(tok, []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		t.Fatalf("ParseSignedCompact: %v", err)
	}
	payload, err := obj.Verify(pub)
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	sig, err := base64.RawURLEncoding.DecodeString(strings.Split(tok, ".")[2])
	if err != nil || len(sig) != 64 {
		t.Fatalf("signature is %d bytes (%v), want raw 64-byte R||S", len(sig), err)
	}
	return payload
}

func TestPublicJWKRoundTrip(t *testing.T) {
	for i := 0; i < 50; i++ { // many keys: some coordinates have leading zero bytes
		key := mustKey(t)
		jwk, err := publicJWK(&key.PublicKey)
		if err != nil {
			t.Fatal(err)
		}
		data, err := json.Marshal(jwk)
		if err != nil {
			t.Fatal(err)
		}
		var fields map[string]string
		if err := json.Unmarshal(data, &fields); err != nil {
			t.Fatal(err)
		}
		if len(fields) != 4 || fields["kty"] != "EC" || fields["crv"] != "P-256" {
			t.Fatalf("JWK fields %v", fields)
		}
		for _, c := range []string{"x", "y"} {
			b, err := base64.RawURLEncoding.Strict().DecodeString(fields[c])
			if err != nil || len(b) != 32 {
				t.Fatalf("%s = %q: %d bytes, %v", c, fields[c], len(b), err)
			}
		}
		var jk jose.JSONWebKey
		if err := json.Unmarshal(data, &jk); err != nil {
			t.Fatalf("go-jose rejects %s: %v", data, err)
		}
		if !jk.IsPublic() || !jk.Valid() {
			t.Fatal("not a valid public JWK")
		}
		pub, ok := jk.Key.(*ecdsa.PublicKey)
		if !ok || pub.Curve != elliptic.P256() {
			t.Fatalf("key %T is not P-256", jk.Key)
		}
		if !pub.Equal(&key.PublicKey) {
			t.Fatal("decoded key differs")
		}
	}
}

func TestRequestProof(t *testing.T) {
	key := mustKey(t)
	now := time.Unix(1_800_000_000, 0)
	body := []byte(`{"provider":"fcm","token":"abc"}`)
	tok, err := requestProof(key, "dev_1", "PUT", "/api/v1/device/push-token", body, now)
	if err != nil {
		t.Fatal(err)
	}
	wantHeader := map[string]any{"alg": "ES256", "typ": "ecps-proof+jwt", "kid": "dev_1"}
	if h := protectedHeader(t, tok); !reflect.DeepEqual(h, wantHeader) {
		t.Fatalf("header %v, want exactly %v", h, wantHeader)
	}
	payload := verifyES256(t, tok, &key.PublicKey)
	var claims map[string]any
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.UseNumber()
	if err := dec.Decode(&claims); err != nil {
		t.Fatal(err)
	}
	if len(claims) != 5 {
		t.Fatalf("claims %v, want exactly htm htu iat jti bh", claims)
	}
	sum := sha256.Sum256(body)
	if claims["htm"] != "PUT" || claims["htu"] != "/api/v1/device/push-token" ||
		claims["iat"] != json.Number("1800000000") ||
		claims["bh"] != base64.RawURLEncoding.EncodeToString(sum[:]) {
		t.Fatalf("claims %v", claims)
	}
	jti, err := base64.RawURLEncoding.Strict().DecodeString(claims["jti"].(string))
	if err != nil || len(jti) != 16 {
		t.Fatalf("jti %v: %d bytes, %v", claims["jti"], len(jti), err)
	}

	// Each proof has its own jti.
	tok2, err := requestProof(key, "dev_1", "PUT", "/api/v1/device/push-token", body, now)
	if err != nil {
		t.Fatal(err)
	}
	var c2 proofClaims
	if err := json.Unmarshal(verifyES256(t, tok2, &key.PublicKey), &c2); err != nil {
		t.Fatal(err)
	}
	if c2.Jti == claims["jti"] {
		t.Fatal("jti reused")
	}

	// Another key does not verify it.
	obj, err := jose.ParseSignedCompact(tok, []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := obj.Verify(&mustKey(t).PublicKey); err == nil {
		t.Fatal("verified with another key")
	}
}

func TestBodyHash(t *testing.T) {
	if got, want := bodyHash(nil), "47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU"; got != want {
		t.Fatalf("bh of empty body %q, want %q", got, want)
	}
	if got, want := bodyHash([]byte("abc")), "ungWv48Bz-pBQUDeXa4iI7ADYaOWF3qctBD_YfIAFa0"; got != want {
		t.Fatalf("bh of abc %q, want %q", got, want)
	}
}

func TestEnrolProof(t *testing.T) {
	key := mustKey(t)
	now := time.Unix(1_800_000_000, 0)
	tok, err := enrolProof(key, "act_1", now)
	if err != nil {
		t.Fatal(err)
	}
	wantHeader := map[string]any{"alg": "ES256", "typ": "ecps-enrol+jwt"}
	if h := protectedHeader(t, tok); !reflect.DeepEqual(h, wantHeader) {
		t.Fatalf("header %v, want exactly %v", h, wantHeader)
	}
	payload := verifyES256(t, tok, &key.PublicKey)
	if string(payload) != `{"activation_id":"act_1","iat":1800000000}` {
		t.Fatalf("claims %s", payload)
	}
}

func TestDecisionTyp(t *testing.T) {
	// The helper the challenge commands will use: typ is exact.
	key := mustKey(t)
	tok, err := signJWS(key, typDecision, "dev_1", map[string]any{"decision": "deny"})
	if err != nil {
		t.Fatal(err)
	}
	if h := protectedHeader(t, tok); h["typ"] != "ecps-decision+jwt" || h["kid"] != "dev_1" || len(h) != 3 {
		t.Fatalf("header %v", h)
	}
}
