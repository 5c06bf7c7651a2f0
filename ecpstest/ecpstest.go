// Package ecpstest runs the real service in-process for tests of programs
// that talk to it over HTTP (ecps-device, ecps-demo): api.New with
// enrollment, challenges and audit (and, when asked, the Keycloak channel)
// on a real Redis (redistest), listening on a loopback port whose URL is
// also the service's public URL, so that the enrol and login URIs it hands
// out point back at it.
package ecpstest

import (
	"context"
	"log/slog"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/ecps-sante/ecps/api"
	"github.com/ecps-sante/ecps/audit"
	"github.com/ecps-sante/ecps/challenge"
	"github.com/ecps-sante/ecps/enrollment"
	"github.com/ecps-sante/ecps/keycloak"
	"github.com/ecps-sante/ecps/push"
	"github.com/ecps-sante/ecps/redistest"
)

// Options choose who may call the service.
type Options struct {
	// Clients returns the IdP clients; it gets the public URL, for redirect URIs.
	Clients   func(publicURL string) []api.Client
	Operators []api.Operator
	// KeycloakRealms, when set, runs the Keycloak CIBA channel for them
	// (and its callback sender).
	KeycloakRealms []keycloak.Realm
}

// Start runs the service until the test ends and returns its base URL.
func Start(t testing.TB, opts Options) string {
	t.Helper()
	gin.SetMode(gin.TestMode)
	rdb, prefix := redistest.Client(t)
	hs := httptest.NewUnstartedServer(nil)
	publicURL := "http://" + hs.Listener.Addr().String()

	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	logger := slog.New(slog.DiscardHandler)
	auditLog := audit.New(rdb, prefix, 400*24*time.Hour)
	go auditLog.RunGlobalCopier(ctx)
	hub := challenge.NewHub(rdb, prefix, logger)
	go hub.Run(ctx)
	enrol := enrollment.New(rdb, auditLog, enrollment.Options{KeyPrefix: prefix, PublicURL: publicURL, ProofMaxSkew: 60 * time.Second})
	var clients []api.Client
	if opts.Clients != nil {
		clients = opts.Clients(publicURL)
	}
	reg := prometheus.NewRegistry()
	chOpts := challenge.Options{KeyPrefix: prefix, PublicURL: publicURL}
	var callbacks *keycloak.Callbacks
	if len(opts.KeycloakRealms) > 0 {
		callbacks = keycloak.NewCallbacks(rdb, auditLog, keycloak.CallbackOptions{KeyPrefix: prefix, Logger: logger,
			Metrics: keycloak.NewMetrics(reg), PollEvery: 50 * time.Millisecond})
		chOpts.OnKeycloakDecision = callbacks.Decided
		done := make(chan struct{})
		go func() { defer close(done); callbacks.Run(ctx) }()
		t.Cleanup(func() { cancel(); <-done })
	}
	challenges := challenge.New(rdb, auditLog, push.NoneSender{}, enrol, hub, chOpts)
	var channel *keycloak.Channel
	if callbacks != nil {
		channel = keycloak.NewChannel(keycloak.NewVerifier(opts.KeycloakRealms, keycloak.VerifierOptions{Logger: logger}),
			challenges, callbacks, keycloak.ChannelOptions{Logger: logger})
	}
	srv, err := api.New(api.Options{
		Logger:     logger,
		Clients:    clients,
		Operators:  opts.Operators,
		Registry:   reg,
		Metrics:    api.NewMetrics(reg),
		Enrollment: enrol,
		Challenges: challenges,
		Keycloak:   channel,
		Audit:      auditLog,
		Ready:      func(ctx context.Context) error { return rdb.Ping(ctx).Err() },
	})
	if err != nil {
		t.Fatal(err)
	}
	hs.Config.Handler = srv.Handler()
	hs.Start()
	t.Cleanup(hs.Close)
	if hs.URL != publicURL {
		t.Fatalf("server URL %s, public URL %s", hs.URL, publicURL)
	}
	return hs.URL
}
