package keycloak

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/ecps-sante/ecps/keycloak/keycloaktest"
)

func TestKeycloakParseChannelRequest(t *testing.T) {
	tests := []struct {
		name string
		body string
		want ChannelRequest
		bad  bool
	}{
		{name: "ok/keycloak", body: string(keycloaktest.Body(keycloaktest.CIBA{LoginHint: "810001234565", BindingMessage: "42",
			ACRValues: "eidas2", Other: map[string]string{"purpose": "x"}})),
			want: ChannelRequest{LoginHint: "810001234565", BindingMessage: ptr("42"), Scope: "openid", ACRValues: "eidas2"}},
		{name: "ok/minimal", body: `{"login_hint":"u"}`, want: ChannelRequest{LoginHint: "u"}},
		{name: "ok/nulls", body: `{"login_hint":"u","binding_message":null,"scope":null,"acr_values":null,"is_consent_required":null}`,
			want: ChannelRequest{LoginHint: "u"}},
		{name: "ok/consent", body: `{"login_hint":"u","is_consent_required":true,"extra":{"a":1}}`,
			want: ChannelRequest{LoginHint: "u", ConsentRequired: true}},
		{name: "fail/empty", body: ``, bad: true},
		{name: "fail/null", body: `null`, bad: true},
		{name: "fail/array", body: `[{"login_hint":"u"}]`, bad: true},
		{name: "fail/no-hint", body: `{"binding_message":"42"}`, bad: true},
		{name: "fail/empty-hint", body: `{"login_hint":""}`, bad: true},
		{name: "fail/hint-number", body: `{"login_hint":810001234565}`, bad: true},
		{name: "fail/bm-number", body: `{"login_hint":"u","binding_message":42}`, bad: true},
		{name: "fail/consent-string", body: `{"login_hint":"u","is_consent_required":"true"}`, bad: true},
		{name: "fail/trailing", body: `{"login_hint":"u"}{}`, bad: true},
		{name: "fail/huge", body: `{"login_hint":"` + strings.Repeat("a", maxField+1) + `"}`, bad: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseChannelRequest([]byte(tc.body))
			if tc.bad {
				if !errors.Is(err, ErrInvalidRequest) {
					t.Fatalf("err %v, want ErrInvalidRequest", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.LoginHint != tc.want.LoginHint || got.Scope != tc.want.Scope || got.ACRValues != tc.want.ACRValues ||
				got.ConsentRequired != tc.want.ConsentRequired || (got.BindingMessage == nil) != (tc.want.BindingMessage == nil) ||
				(got.BindingMessage != nil && *got.BindingMessage != *tc.want.BindingMessage) {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestKeycloakRealmTerms(t *testing.T) {
	r := Realm{Issuer: "https://kc/realms/r", LoginHintPrefix: "rpps-"}
	if s, err := r.subject("rpps-810001234565"); err != nil || s != "810001234565" {
		t.Fatalf("subject: %q %v", s, err)
	}
	for _, bad := range []string{"810001234565", "rpps-810001234566", "rpps-", "RPPS-810001234565"} {
		if _, err := r.subject(bad); !errors.Is(err, ErrInvalidRequest) {
			t.Errorf("subject(%q): %v", bad, err)
		}
	}
	for bm, want := range map[string][2]string{"42": {"42", ""}, "000000": {"000000", ""}, "1234567": {"", "1234567"},
		"4": {"", "4"}, "4a": {"", "4a"}, "Connexion": {"", "Connexion"}} {
		num, shown, err := r.bindingTerms(&bm)
		if err != nil || num != want[0] || (shown == nil) != (want[1] == "") || (shown != nil && *shown != want[1]) {
			t.Errorf("bindingTerms(%q) = %q, %v, %v", bm, num, shown, err)
		}
	}
	if num, shown, err := r.bindingTerms(nil); num != "" || shown != nil || err != nil {
		t.Errorf("bindingTerms(nil) = %q %v %v", num, shown, err)
	}
	r.RequireNumber = true
	for _, bm := range []*string{nil, ptr("Connexion"), ptr("1")} {
		if _, _, err := r.bindingTerms(bm); !errors.Is(err, ErrNumberRequired) {
			t.Errorf("require_number, %v: %v", bm, err)
		}
	}
	if r.callbackURL() != "https://kc/realms/r"+CallbackPath || r.jwksURL() != "https://kc/realms/r"+CertsPath {
		t.Errorf("default URLs %s %s", r.callbackURL(), r.jwksURL())
	}
}

func TestKeycloakRealmCheck(t *testing.T) {
	ok := Realm{Issuer: "https://auth.example.fr/realms/esante", ClientNames: map[string]string{"app": "App"}}
	if p := ok.Check(false); len(p) != 0 {
		t.Fatalf("ok realm: %v", p)
	}
	bad := Realm{Issuer: "http://auth/realms/x/", JWKSURL: "ftp://x", JWKSFile: "/x", CallbackURL: "/relative",
		ClientNames: map[string]string{"": "x"}}
	if p := bad.Check(false); len(p) != 6 {
		t.Fatalf("bad realm: %d problems: %v", len(p), p)
	}
	if p := (&Realm{Issuer: "http://localhost:8180/realms/x"}).Check(true); len(p) != 0 {
		t.Fatalf("dev http realm: %v", p)
	}
}

func ptr(s string) *string { return &s }

// FuzzKeycloakChannelRequest: any body either parses into a request with a
// login_hint or is ErrInvalidRequest; it never panics.
func FuzzKeycloakChannelRequest(f *testing.F) {
	f.Add(keycloaktest.Body(keycloaktest.CIBA{LoginHint: "810001234565", BindingMessage: "42"}))
	f.Add([]byte(`{"login_hint":"u","binding_message":null,"is_consent_required":false,"x":[1,{"y":null}]}`))
	f.Add([]byte(`{"login_hint":"\ud800"}`))
	f.Add([]byte(`{"login_hint":"u"} x`))
	f.Fuzz(func(t *testing.T, body []byte) {
		r, err := ParseChannelRequest(body)
		if err != nil {
			if !errors.Is(err, ErrInvalidRequest) {
				t.Fatalf("error %v is not ErrInvalidRequest", err)
			}
			return
		}
		if r.LoginHint == "" {
			t.Fatal("accepted a request without login_hint")
		}
		realm := Realm{Issuer: "https://kc/realms/r"}
		if s, err := realm.subject(r.LoginHint); err == nil && len(s) != 10 && len(s) != 12 {
			t.Fatalf("subject %q", s)
		}
		num, shown, err := realm.bindingTerms(r.BindingMessage)
		if err != nil || (num != "" && shown != nil) || (num != "" && !isNumber(num)) {
			t.Fatalf("bindingTerms: %q %v %v", num, shown, err)
		}
	})
}

// FuzzKeycloakToken: any Bearer is either a valid token of the realm or a
// *TokenError; claims parsing never panics.
func FuzzKeycloakToken(f *testing.F) {
	kc := keycloaktest.New(f, keycloaktest.Options{})
	v := NewVerifier([]Realm{{Issuer: kc.Issuer}}, VerifierOptions{})
	for _, alg := range []string{"RS256", "ES256"} {
		tok, _ := kc.Sign(kc.Claims(keycloaktest.CIBA{}), alg)
		f.Add(tok)
	}
	f.Add("eyJhbGciOiJub25lIn0.eyJpc3MiOiJ4In0.")
	f.Add("a.b.c")
	f.Add(`{"payload":"x","signatures":[]}`)
	f.Fuzz(func(t *testing.T, raw string) {
		ctx := t.Context()
		tok, realm, err := v.Verify(ctx, raw)
		if err != nil {
			if ReasonOf(err) == "" && ctx.Err() == nil {
				t.Fatalf("error %v is not a TokenError", err)
			}
			return
		}
		if realm.Issuer != kc.Issuer || tok.AZP == "" || tok.JTI == "" || tok.ExpiresAt.Before(time.Now().Add(-MaxLeeway)) {
			t.Fatalf("accepted %+v", tok)
		}
	})
}

// FuzzKeycloakClaims: claims of any shape are accepted only when complete.
func FuzzKeycloakClaims(f *testing.F) {
	iss := "https://kc/realms/r"
	f.Add([]byte(`{"iss":"https://kc/realms/r","aud":["x","https://kc/realms/r"],"azp":"a","jti":"j","typ":"Bearer","exp":1800000100}`))
	f.Add([]byte(`{"exp":"1800000100","aud":null}`))
	f.Add([]byte(`{"exp":1e300,"iat":-1,"nbf":NaN}`))
	f.Fuzz(func(t *testing.T, payload []byte) {
		c, err := parseClaims(payload)
		if err != nil {
			return
		}
		tok, err := checkClaims(c, iss, time.Unix(1_800_000_000, 0), 10*time.Second)
		if err != nil {
			if ReasonOf(err) == "" {
				t.Fatalf("error %v is not a TokenError", err)
			}
			return
		}
		if tok.AZP == "" || tok.JTI == "" || tok.ExpiresAt.Before(time.Unix(1_800_000_000-10, 0)) {
			t.Fatalf("accepted %+v from %s", tok, payload)
		}
	})
}
