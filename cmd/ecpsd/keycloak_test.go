package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/ecps-sante/ecps/keycloak/keycloaktest"
	"github.com/ecps-sante/ecps/redistest"
)

// With keycloak.realms, ecpsd takes the realm's channel requests, sends
// the callbacks and shows the Keycloak metrics.
func TestServeKeycloakChannel(t *testing.T) {
	srv := redistest.Start(t)
	kc := keycloaktest.New(t, keycloaktest.Options{})
	// The fake realm is served over http: dev only.
	y := edit(t, `listen: "127.0.0.1:8080"`, `listen: "127.0.0.1:0"`, `"redis://127.0.0.1:6379/0"`, `"`+srv.URL()+`"`,
		"dev: false", "dev: true") + "keycloak:\n  realms:\n    - issuer: \"" + kc.Issuer + "\"\n"
	cfg, err := parseConfig([]byte(y), envOf(nil))
	if err != nil {
		t.Fatal(err)
	}
	s := startServe(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	// No device was ever enrolled: 201, then UNAUTHORIZED.
	req, err := kc.Start(ctx, s.base+"/api/v1/keycloak/ciba", keycloaktest.CIBA{LoginHint: "810001234565", BindingMessage: "42"})
	if err != nil || req.Status != 201 {
		t.Fatalf("channel request: %v, %d", err, req.Status)
	}
	if st, _, err := req.Wait(ctx); err != nil || st != "denied" {
		t.Fatalf("Keycloak's request %s: %v", st, err)
	}
	_, _, body := get(t, s.base+"/metrics")
	for _, want := range []string{`ecps_keycloak_requests_total{result="refused"} 1`, `ecps_keycloak_jwks_loads_total{result="ok"} 1`} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}
