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
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/ecps-sante/ecps/api"
	"github.com/ecps-sante/ecps/audit"
	"github.com/ecps-sante/ecps/challenge"
	"github.com/ecps-sante/ecps/directory"
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
	// FCMEndpoint, when set, sends pushes through FCM's HTTP v1 API at this
	// base URL (a push/fcmtest fake's Endpoint()), with no OAuth, through
	// the durable push queue, as push.provider fcm does; project FCMProject.
	// Empty: nothing is pushed (phones poll).
	FCMEndpoint, FCMProject string
	// Challenge, when set, changes the login service's options (e.g. its
	// per-practitioner limits) before it starts.
	Challenge func(*challenge.Options)
	// Directory, when set, is an activity file of the RPPS extract (the
	// published format) imported into a practitioner directory that the
	// service uses as ecpsd does: the desk's lookups, unknown_user_id, the
	// approvals' identity. "": no directory.
	Directory string
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
	hub := challenge.NewHub(rdb, prefix, logger)
	go hub.Run(ctx)
	eo := enrollment.Options{KeyPrefix: prefix, PublicURL: publicURL, ProofMaxSkew: 60 * time.Second}
	copts := challenge.Options{KeyPrefix: prefix, PublicURL: publicURL}
	var dir *directory.Store
	if opts.Directory != "" {
		dir = importDirectory(t, rdb, prefix, opts.Directory)
		eo.Directory, copts.Identities = dir, dir
	}
	enrol := enrollment.New(rdb, auditLog, eo)
	var sender push.Sender = push.NoneSender{}
	if opts.FCMEndpoint != "" {
		fcm, err := push.NewFCM(ctx, push.FCMOptions{ProjectID: opts.FCMProject, Endpoint: opts.FCMEndpoint})
		if err != nil {
			t.Fatal(err)
		}
		q := push.NewQueue(rdb, fcm, enrol, push.QueueOptions{KeyPrefix: prefix, Provider: "fcm", Logger: logger})
		done := make(chan struct{})
		go func() { defer close(done); q.Run(ctx) }()
		t.Cleanup(func() { cancel(); <-done })
		sender = q
	}
	if opts.Challenge != nil {
		opts.Challenge(&copts)
	}
	var clients []api.Client
	if opts.Clients != nil {
		clients = opts.Clients(publicURL)
	}
	reg := prometheus.NewRegistry()
	var callbacks *keycloak.Callbacks
	if len(opts.KeycloakRealms) > 0 {
		callbacks = keycloak.NewCallbacks(rdb, auditLog, keycloak.CallbackOptions{KeyPrefix: prefix, Logger: logger,
			Metrics: keycloak.NewMetrics(reg), PollEvery: 50 * time.Millisecond})
		copts.OnKeycloakDecision = callbacks.Decided
		done := make(chan struct{})
		go func() { defer close(done); callbacks.Run(ctx) }()
		t.Cleanup(func() { cancel(); <-done })
	}
	challenges := challenge.New(rdb, auditLog, sender, enrol, hub, copts)
	var channel *keycloak.Channel
	if callbacks != nil {
		channel = keycloak.NewChannel(keycloak.NewVerifier(opts.KeycloakRealms, keycloak.VerifierOptions{Logger: logger}),
			challenges, callbacks, keycloak.ChannelOptions{Logger: logger})
	}
	ao := api.Options{
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
	}
	if dir != nil {
		ao.Directory = dir
	}
	srv, err := api.New(ao)
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

// importDirectory imports an activity file into a directory in the test's
// Redis (readers see it within a millisecond).
func importDirectory(t testing.TB, rdb redis.UniversalClient, prefix, path string) *directory.Store {
	t.Helper()
	dir := directory.NewStore(rdb, directory.Options{KeyPrefix: prefix, PointerTTL: time.Millisecond})
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := dir.Import(context.Background(), directory.Source{Activity: f, ActivityName: filepath.Base(path)}, directory.ImportOptions{}); err != nil {
		t.Fatalf("import %s: %v", path, err)
	}
	return dir
}
