package keycloak

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/ecps-sante/ecps/keycloak/keycloaktest"
)

func TestKeycloakVerifyAlgorithmsAndFile(t *testing.T) {
	kc := keycloaktest.New(t, keycloaktest.Options{})
	dir := t.TempDir()
	file := filepath.Join(dir, "jwks.json")
	if err := os.WriteFile(file, kc.JWKS(), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, src := range []string{"url", "file"} {
		realm := Realm{Issuer: kc.Issuer}
		if src == "file" {
			realm.JWKSFile = file
		}
		v := NewVerifier([]Realm{realm}, VerifierOptions{})
		for _, alg := range []string{"RS256", "PS256", "ES256"} {
			claims := kc.Claims(keycloaktest.CIBA{Client: "app"})
			tok, err := kc.Sign(claims, alg)
			if err != nil {
				t.Fatal(err)
			}
			got, r, err := v.Verify(context.Background(), tok)
			if err != nil {
				t.Fatalf("%s %s: %v", src, alg, err)
			}
			if r.Issuer != kc.Issuer || got.AZP != "app" || got.JTI != claims["jti"] || got.Raw != tok ||
				got.ExpiresAt.Unix() != claims["exp"] {
				t.Fatalf("%s %s: %+v", src, alg, got)
			}
		}
	}
}

// A key serves only the algorithm it is published for, and never the
// encryption key.
func TestKeycloakVerifyKeyMatching(t *testing.T) {
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	small, _ := rsa.GenerateKey(rand.Reader, 1024)
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	set := jose.JSONWebKeySet{Keys: []jose.JSONWebKey{
		{Key: &rsaKey.PublicKey, KeyID: "rs", Algorithm: "RS256", Use: "sig"},
		{Key: &rsaKey.PublicKey, KeyID: "enc", Algorithm: "RSA-OAEP", Use: "enc"},
		{Key: &small.PublicKey, KeyID: "small", Algorithm: "RS256", Use: "sig"},
		{Key: &ecKey.PublicKey, KeyID: "es", Use: "sig"},
		{Key: &p384.PublicKey, KeyID: "p384", Algorithm: "ES384", Use: "sig"},
	}}
	b, _ := json.Marshal(set)
	// A key type go-jose does not know is skipped, not fatal.
	var raw map[string][]json.RawMessage
	_ = json.Unmarshal(b, &raw)
	raw["keys"] = append(raw["keys"], json.RawMessage(`{"kty":"AKP","kid":"pq","alg":"ML-DSA-65","pub":"AAAA"}`))
	b, _ = json.Marshal(raw)
	keys, err := ParseJWKS(b)
	if err != nil {
		t.Fatal(err)
	}
	kids := map[string]bool{}
	for _, k := range keys {
		kids[k.KeyID] = true
	}
	if len(keys) != 2 || !kids["rs"] || !kids["es"] {
		t.Fatalf("usable keys %v", kids)
	}
	tests := []struct {
		kid  string
		alg  jose.SignatureAlgorithm
		want int
	}{
		{"rs", jose.RS256, 1}, {"rs", jose.PS256, 0}, {"rs", jose.ES256, 0},
		{"es", jose.ES256, 1}, {"es", jose.RS256, 0}, {"", jose.ES256, 1}, {"", jose.RS256, 1}, {"nope", jose.RS256, 0},
	}
	for _, tc := range tests {
		if got := len(matching(keys, tc.kid, tc.alg)); got != tc.want {
			t.Errorf("matching(%q, %s) = %d keys, want %d", tc.kid, tc.alg, got, tc.want)
		}
	}
	for _, bad := range []string{`{}`, `{"keys":[]}`, `not json`, `{"keys":[{"kty":"oct","k":"AAAA"}]}`} {
		if _, err := ParseJWKS([]byte(bad)); err == nil {
			t.Errorf("ParseJWKS(%s): no error", bad)
		}
	}
}

// The JWKS is fetched on first use, again on an unknown kid at most once per
// MinRefetch, and in the background after RefreshEvery.
func TestKeycloakJWKSCache(t *testing.T) {
	var skew atomic.Int64
	now := func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }
	kc := keycloaktest.New(t, keycloaktest.Options{Now: now})
	v := NewVerifier([]Realm{{Issuer: kc.Issuer}}, VerifierOptions{Now: now})
	ctx := context.Background()
	sign := func() string {
		tok, err := kc.Sign(kc.Claims(keycloaktest.CIBA{}), "ES256")
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	for i := 0; i < 3; i++ {
		if _, _, err := v.Verify(ctx, sign()); err != nil {
			t.Fatal(err)
		}
	}
	if kc.JWKSReads() != 1 {
		t.Fatalf("%d JWKS reads, want 1", kc.JWKSReads())
	}
	skew.Add(int64(9 * time.Second))
	kc.Rotate(jose.ES256)
	if _, _, err := v.Verify(ctx, sign()); ReasonOf(err) != ReasonUnknownKey || kc.JWKSReads() != 1 {
		t.Fatalf("within 10 s: %v, %d reads", err, kc.JWKSReads())
	}
	skew.Add(int64(time.Second))
	if _, _, err := v.Verify(ctx, sign()); err != nil || kc.JWKSReads() != 2 {
		t.Fatalf("after 10 s: %v, %d reads", err, kc.JWKSReads())
	}
	// After an hour the cached keys still serve while the JWKS is read again.
	skew.Add(int64(time.Hour))
	if _, _, err := v.Verify(ctx, sign()); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for kc.JWKSReads() != 3 {
		if time.Now().After(deadline) {
			t.Fatalf("%d JWKS reads after an hour, want 3", kc.JWKSReads())
		}
		time.Sleep(10 * time.Millisecond)
	}
	// A realm whose JWKS cannot be read rejects every token.
	v2 := NewVerifier([]Realm{{Issuer: kc.Issuer, JWKSURL: kc.URL() + "/nowhere"}}, VerifierOptions{})
	if _, _, err := v2.Verify(ctx, sign()); ReasonOf(err) != ReasonUnknownKey {
		t.Fatalf("no JWKS: %v", err)
	}
}

func TestKeycloakCheckClaims(t *testing.T) {
	iss := "https://auth.example.fr/realms/esante"
	now := time.Unix(1_800_000_000, 0)
	base := func() map[string]any {
		return map[string]any{"iss": iss, "aud": iss, "azp": "app", "jti": "id-1", "typ": "Bearer", "sub": "u",
			"iat": now.Unix(), "exp": now.Unix() + 120}
	}
	tests := []struct {
		name   string
		mutate func(map[string]any)
		want   string
	}{
		{"ok", func(map[string]any) {}, ""},
		{"ok/aud-array", func(c map[string]any) { c["aud"] = []string{"x", iss} }, ""},
		{"ok/exp-leeway", func(c map[string]any) { c["exp"] = now.Unix() - 10 }, ""},
		{"ok/exp-fraction", func(c map[string]any) { c["exp"] = float64(now.Unix()) + 0.5 }, ""},
		{"fail/expired", func(c map[string]any) { c["exp"] = now.Unix() - 11 }, ReasonExpired},
		{"fail/no-exp", func(c map[string]any) { delete(c, "exp") }, ReasonExpired},
		{"fail/aud-other", func(c map[string]any) { c["aud"] = "account" }, ReasonAudience},
		{"fail/aud-number", func(c map[string]any) { c["aud"] = 7 }, ReasonAudience},
		{"fail/aud-missing", func(c map[string]any) { delete(c, "aud") }, ReasonAudience},
		{"fail/nbf-future", func(c map[string]any) { c["nbf"] = now.Unix() + 60 }, ReasonNotYetValid},
		{"fail/iat-future", func(c map[string]any) { c["iat"] = now.Unix() + 60 }, ReasonNotYetValid},
		{"fail/typ", func(c map[string]any) { c["typ"] = "bearer" }, ReasonType},
		{"fail/azp-space", func(c map[string]any) { c["azp"] = "a b" }, ReasonClaims},
		{"fail/jti-empty", func(c map[string]any) { c["jti"] = "" }, ReasonClaims},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := base()
			tc.mutate(c)
			b, _ := json.Marshal(c)
			parsed, err := parseClaims(b)
			if err != nil {
				t.Fatal(err)
			}
			_, err = checkClaims(parsed, iss, now, 10*time.Second)
			if ReasonOf(err) != tc.want {
				t.Fatalf("err %v, want reason %q", err, tc.want)
			}
		})
	}
}

func TestKeycloakBearer(t *testing.T) {
	for in, want := range map[string]string{"Bearer abc": "abc", "bearer abc": "abc", "Bearer  abc ": "abc", "": "", "Basic abc": "",
		"Bearer": "", "Bearer ": ""} {
		got, err := bearer(in)
		if got != want || (want == "") != (err != nil) {
			t.Errorf("bearer(%q) = %q, %v", in, got, err)
		}
	}
}
