package api

import (
	"net/http"
	"testing"
)

// While an IdP client's secret is rotated, the config lists both hashes and
// either secret authenticates it; nothing else does.
func TestClientSecretRotation(t *testing.T) {
	e := newEnv(t, 1)
	body := map[string]any{"login_hint": "810009999990"}
	for _, secret := range []string{testClientSecret2, testClientSecret2Next} {
		r := do(t, e.url(), "POST", "/api/v1/authentications", jsonBody(t, body), basicAuth("idp-2", secret))
		if r.Status == http.StatusUnauthorized {
			t.Errorf("idp-2 with one of its two secrets: %d %s", r.Status, r.Body)
		}
	}
	for _, secret := range []string{testClientSecret, "client-secret-two-next-012345678X", ""} {
		do(t, e.url(), "POST", "/api/v1/authentications", jsonBody(t, body), basicAuth("idp-2", secret)).
			wantError(t, http.StatusUnauthorized, "invalid_client")
	}
	// The other clients keep their one secret.
	do(t, e.url(), "POST", "/api/v1/authentications", jsonBody(t, body), basicAuth("idp", testClientSecret2Next)).
		wantError(t, http.StatusUnauthorized, "invalid_client")
}
