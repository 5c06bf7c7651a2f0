package keycloak

import (
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/ecps-sante/ecps/idnat"
)

// Realm is one Keycloak realm allowed to delegate logins (config
// keycloak.realms).
type Realm struct {
	// Issuer is the realm's issuer, exactly as in its tokens' iss:
	// https://auth.example.fr/realms/<name>.
	Issuer string
	// JWKSURL is where the realm's signing keys are read; default
	// <Issuer>/protocol/openid-connect/certs. Ignored when JWKSFile is set.
	JWKSURL string
	// JWKSFile, when set, holds the realm's JWKS (read again on an unknown
	// kid and every hour, as the URL).
	JWKSFile string
	// CallbackURL is the realm's CIBA callback endpoint; default
	// <Issuer>/protocol/openid-connect/ext/ciba/auth/callback.
	CallbackURL string
	// LoginHintPrefix is stripped from login_hint (the Keycloak username)
	// before it is read as an idNat; a login_hint without it is refused.
	LoginHintPrefix string
	// RequireNumber refuses a request whose binding_message is not a
	// verification number (2 to 6 digits).
	RequireNumber bool
	// ClientNames maps a CIBA client (the token's azp) to the name the
	// phone shows; default the azp itself.
	ClientNames map[string]string
}

// Default endpoint paths under a realm's issuer, as Keycloak serves them.
const (
	CertsPath    = "/protocol/openid-connect/certs"
	CallbackPath = "/protocol/openid-connect/ext/ciba/auth/callback"
)

// jwksURL is the realm's JWKS URL, defaulted.
func (r *Realm) jwksURL() string {
	if r.JWKSURL != "" {
		return r.JWKSURL
	}
	return r.Issuer + CertsPath
}

// callbackURL is the realm's callback URL, defaulted.
func (r *Realm) callbackURL() string {
	if r.CallbackURL != "" {
		return r.CallbackURL
	}
	return r.Issuer + CallbackPath
}

// clientName is what the phone shows for the CIBA client azp.
func (r *Realm) clientName(azp string) string {
	if n := r.ClientNames[azp]; n != "" {
		return n
	}
	return azp
}

// Check reports every problem of a realm's settings (the config names the
// keys); devHTTP allows http URLs.
func (r *Realm) Check(devHTTP bool) []string {
	var out []string
	absURL := func(key, s string) {
		u, err := url.Parse(s)
		if err != nil || !u.IsAbs() || u.Host == "" || u.Fragment != "" || u.RawQuery != "" ||
			(u.Scheme != "https" && !(devHTTP && u.Scheme == "http")) {
			out = append(out, fmt.Sprintf("%s: want an absolute https URL (http only with dev: true), got %q", key, s))
		}
	}
	if r.Issuer == "" {
		out = append(out, "issuer: required (the realm's issuer, e.g. https://auth.example.fr/realms/esante)")
	} else {
		absURL("issuer", r.Issuer)
		if strings.HasSuffix(r.Issuer, "/") {
			out = append(out, "issuer: no trailing / (it must equal the tokens' iss)")
		}
	}
	if r.JWKSURL != "" && r.JWKSFile != "" {
		out = append(out, "jwks_url, jwks_file: set at most one")
	}
	if r.JWKSURL != "" {
		absURL("jwks_url", r.JWKSURL)
	}
	if r.CallbackURL != "" {
		absURL("callback_url", r.CallbackURL)
	}
	for azp, name := range r.ClientNames {
		if azp == "" || name == "" {
			out = append(out, fmt.Sprintf("client_names: %q: want a client id and a non-empty name", azp))
		}
	}
	return out
}

// subject reads login_hint as an idNat, once the realm's prefix is stripped.
func (r *Realm) subject(loginHint string) (string, error) {
	s, ok := strings.CutPrefix(loginHint, r.LoginHintPrefix)
	if !ok {
		return "", fmt.Errorf("%w: login_hint lacks the realm's login_hint_prefix", ErrInvalidRequest)
	}
	id, err := idnat.Parse(s)
	if err != nil {
		return "", fmt.Errorf("%w: login_hint is not an idNat (8 + 11-digit RPPS or 0 + 9-digit ADELI)", ErrInvalidRequest)
	}
	return id.String(), nil
}

// ErrNumberRequired: the realm requires the binding message to be the
// verification number.
var ErrNumberRequired = errors.New("binding_message must be the verification number: 2 to 6 digits")

// bindingTerms applies the contract's number matching to Keycloak's
// binding_message: 2 to 6 digits are the verification number, typed on the
// phone and never shown there; anything else (or nothing) is shown, with no
// number to type.
func (r *Realm) bindingTerms(bm *string) (number string, shown *string, err error) {
	if bm != nil && isNumber(*bm) {
		return *bm, nil, nil
	}
	if r.RequireNumber {
		return "", nil, ErrNumberRequired
	}
	return "", bm, nil
}

func isNumber(s string) bool {
	if len(s) < 2 || len(s) > 6 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}
