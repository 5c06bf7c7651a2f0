// Command ecpsd is the e-CPS mobile authentication server.
//
//	ecpsd -config FILE          run the server (ECPS_<KEY> variables override scalar keys)
//	ecpsd hash-secret           read a secret on stdin, print its SHA-256 for the config
//	ecpsd dev-config -out FILE  write a development config with fresh demo credentials
//	ecpsd directory import|status|clear [-config FILE] ...
//	                            load, show or remove the practitioner directory (RPPS extract)
//	ecpsd check-config -config FILE  check a config (and ECPS_<KEY> overrides) without starting
package main

import (
	"bufio"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/go-redis/v9"

	"github.com/ecps-sante/ecps/api"
	"github.com/ecps-sante/ecps/audit"
	"github.com/ecps-sante/ecps/challenge"
	"github.com/ecps-sante/ecps/directory"
	"github.com/ecps-sante/ecps/durable"
	"github.com/ecps-sante/ecps/enrollment"
	"github.com/ecps-sante/ecps/keycloak"
	"github.com/ecps-sante/ecps/push"
	"github.com/ecps-sante/ecps/ratelimit"
)

// version and revision are stamped in by `make image` and deploy/Dockerfile
// (-ldflags "-X main.version=… -X main.revision=…"); logged at start and
// exposed as ecps_build_info.
var (
	version  = "dev"
	revision = ""
)

func main() {
	gin.SetMode(gin.ReleaseMode) // gin's mode is process-wide; no debug route dump
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	// After the first signal, the default handling comes back: a second
	// SIGTERM or Ctrl-C ends the process without waiting for the drain.
	go func() { <-ctx.Done(); stop() }()
	os.Exit(run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr, os.Getenv))
}

// Exit codes.
const (
	exitOK     = 0
	exitFailed = 1
	exitConfig = 2
)

func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer, env func(string) string) int {
	if len(args) > 0 {
		switch args[0] {
		case "hash-secret":
			return hashSecret(stdin, stdout, stderr)
		case "dev-config":
			return devConfig(args[1:], stdout, stderr, env)
		case "directory":
			return directoryCmd(ctx, args[1:], stdin, stdout, stderr, env)
		case "check-config":
			return checkConfig(args[1:], stdout, stderr, env)
		}
	}
	fs := flag.NewFlagSet("ecpsd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath := fs.String("config", "", "path of the YAML configuration file")
	if err := fs.Parse(args); err != nil {
		return exitConfig
	}
	if *configPath == "" || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "usage: ecpsd -config FILE | ecpsd hash-secret | ecpsd dev-config -out FILE | ecpsd check-config -config FILE | ecpsd directory import|status|clear")
		return exitConfig
	}
	cfg, err := loadConfig(*configPath, env)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return exitConfig
	}
	level := slog.LevelInfo
	if cfg.File.Dev {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: level}))
	if err := serve(ctx, cfg, log, nil); err != nil {
		log.Error("ecpsd stopped", "err", err)
		return exitFailed
	}
	return exitOK
}

// checkConfig checks a configuration as the server would at start (every
// problem on its own line, exit status 2), without connecting to anything:
// run it on a new config before rolling it out.
func checkConfig(args []string, stdout, stderr io.Writer, env func(string) string) int {
	fs := flag.NewFlagSet("ecpsd check-config", flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath := fs.String("config", "", "path of the YAML configuration file")
	if err := fs.Parse(args); err != nil {
		return exitConfig
	}
	if *configPath == "" || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "usage: ecpsd check-config -config FILE")
		return exitConfig
	}
	cfg, err := loadConfig(*configPath, env)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return exitConfig
	}
	fmt.Fprintf(stdout, "config ok: %s: %d IdP client(s), %d desk operator(s), push %s\n",
		*configPath, len(cfg.Clients), len(cfg.Operators), cfg.File.Push.Provider)
	return exitOK
}

// serve runs the service until ctx ends, then stops gracefully. ready, when
// not nil, receives the main listener's address once it accepts connections.
func serve(ctx context.Context, cfg Config, log *slog.Logger, ready chan<- string) error {
	redis.SetLogger(slogRedisLogger{log})
	rdb, err := newRedis(cfg.File.Redis, pushReaders(cfg))
	if err != nil {
		return err
	}
	defer rdb.Close()

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	buildInfo := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "ecps_build_info",
		Help: "Always 1: the version and revision of the running ecpsd."}, []string{"version", "revision"})
	buildInfo.WithLabelValues(version, revision).Set(1)
	reg.MustRegister(buildInfo)
	metrics := api.NewMetrics(reg)
	rdb.AddHook(metrics.RedisHook())

	// Background workers live until every in-flight request has finished.
	bg, stopBG := context.WithCancel(context.Background())
	var workers sync.WaitGroup
	defer func() { stopBG(); workers.Wait() }()

	auditLog := audit.New(rdb, cfg.File.Redis.KeyPrefix, cfg.AuditRetention)
	hub := challenge.NewHub(rdb, cfg.File.Redis.KeyPrefix, log)
	limiter := ratelimit.New(rdb, cfg.File.Redis.KeyPrefix, cfg.File.Limits.ClientRPS, ratelimit.Options{Logger: log})
	workers.Add(2)
	go func() { defer workers.Done(); hub.Run(bg) }()
	go func() { defer workers.Done(); limiter.Run(bg) }()
	dir := directory.NewStore(rdb, directory.Options{KeyPrefix: cfg.File.Redis.KeyPrefix})
	acked := durable.New(rdb, cfg.File.Redis.MinReplicasAck, cfg.ReplicaAckTimeout)
	enrol := enrollment.New(rdb, auditLog, enrollment.Options{
		Directory:          dir,
		Durable:            acked,
		KeyPrefix:          cfg.File.Redis.KeyPrefix,
		PublicURL:          cfg.File.PublicURL,
		ActivationTTL:      cfg.ActivationTTL,
		ActivationAttempts: cfg.File.Limits.ActivationAttempts,
		DevicesPerSubject:  cfg.File.Limits.DevicesPerSubject,
		ProofMaxSkew:       cfg.ProofMaxSkew,
	})
	sender, pushStatus, err := newPushSender(ctx, cfg, rdb, enrol, log, reg)
	if err != nil {
		return err
	}
	if q, ok := sender.(*push.Queue); ok {
		workers.Add(1)
		go func() { defer workers.Done(); q.Run(bg) }()
	}
	var callbacks *keycloak.Callbacks
	if len(cfg.Realms) > 0 {
		callbacks = keycloak.NewCallbacks(rdb, auditLog, keycloak.CallbackOptions{KeyPrefix: cfg.File.Redis.KeyPrefix,
			Logger: log, Metrics: keycloak.NewMetrics(reg)})
		workers.Add(1)
		go func() { defer workers.Done(); callbacks.Run(bg) }()
	}
	chOpts := challenge.Options{
		Identities:         dir,
		Durable:            acked,
		KeyPrefix:          cfg.File.Redis.KeyPrefix,
		PublicURL:          cfg.File.PublicURL,
		NumberDigits:       cfg.File.Limits.NumberDigits,
		PollInterval:       cfg.PollInterval,
		QRTokenTTL:         cfg.QRTokenTTL, // rotation: every 25 s, or 5/6 of a shorter life
		ProofMaxSkew:       cfg.ProofMaxSkew,
		PendingPerSubject:  cfg.File.Limits.PendingPerSubject,
		PushesPerSubject:   cfg.File.Limits.PushesPerSubject,
		PushesWindow:       cfg.PushesWindow,
		DenialsBeforeBlock: cfg.File.Limits.DenialsBeforeBlock,
		BlockDuration:      cfg.BlockDuration,
		OnDecision:         metrics.Decided,
	}
	if callbacks != nil {
		chOpts.OnKeycloakDecision = callbacks.Decided
	}
	challenges := challenge.New(rdb, auditLog, sender, enrol, hub, chOpts)
	opts := api.Options{
		Logger:         log,
		TrustedProxies: cfg.TrustedProxies,
		ServeMetrics:   cfg.File.MetricsListen == "",
		Registry:       reg,
		Metrics:        metrics,
		Enrollment:     enrol,
		Challenges:     challenges,
		Audit:          auditLog,
		Directory:      dir,
		ClientLimiter:  limiter,
		Ready:          func(ctx context.Context) error { return rdb.Ping(ctx).Err() },
		Dev:            cfg.File.Dev, // desk cookies without __Host- and Secure over plain HTTP
		Redis:          rdb,          // desk sessions
		KeyPrefix:      cfg.File.Redis.KeyPrefix,
		PushStatus:     pushStatus,
		// Failed desk sign-ins per client address and window.
		DeskSignInFailures: cfg.File.Limits.DeskSignInFailures,
		DeskSignInWindow:   cfg.DeskSignInWindow,
	}
	if callbacks != nil {
		opts.Keycloak = newKeycloakChannel(cfg, challenges, callbacks, log)
	}
	for _, c := range cfg.Clients {
		opts.Clients = append(opts.Clients, api.Client{ID: c.ID, Name: c.Name, SecretSHA256: c.SecretSHA256[0], MoreSecretSHA256: c.SecretSHA256[1:],
			Scopes: c.Scopes, RedirectURIs: c.RedirectURIs})
	}
	for _, o := range cfg.Operators {
		opts.Operators = append(opts.Operators, api.Operator{Name: o.Name, KeySHA256: o.KeySHA256[0], MoreKeySHA256: o.KeySHA256[1:]})
	}
	srv, err := api.New(opts)
	if err != nil {
		return err
	}

	mainSrv := newHTTPServer(srv.Handler())
	mainSrv.RegisterOnShutdown(hub.Close) // waiting long-polls answer authorization_pending
	servers := []*http.Server{mainSrv}
	listeners := []net.Listener{}
	ln, err := net.Listen("tcp", cfg.File.Listen)
	if err != nil {
		return fmt.Errorf("listen %s: %w", cfg.File.Listen, err)
	}
	listeners = append(listeners, ln)
	if cfg.File.MetricsListen != "" {
		mln, err := net.Listen("tcp", cfg.File.MetricsListen)
		if err != nil {
			ln.Close()
			return fmt.Errorf("listen %s: %w", cfg.File.MetricsListen, err)
		}
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
		if cfg.File.Pprof {
			handlePprof(mux)
		}
		servers = append(servers, newHTTPServer(mux))
		listeners = append(listeners, mln)
	}

	errc := make(chan error, len(servers))
	for i := range servers {
		go func() { errc <- servers[i].Serve(listeners[i]) }()
	}
	log.Info("ecpsd started", "version", version, "revision", revision, "listen", ln.Addr().String(), "metrics_listen", cfg.File.MetricsListen, "pprof", cfg.File.Pprof,
		"public_url", cfg.File.PublicURL, "dev", cfg.File.Dev, "push", cfg.File.Push.Provider)
	if ready != nil {
		ready <- ln.Addr().String()
	}

	var serveErr error
	select {
	case <-ctx.Done():
	case serveErr = <-errc:
	}
	log.Info("stopping: finishing in-flight requests")
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	errs := []error{serveErr}
	for _, s := range servers {
		if err := s.Shutdown(shutdownCtx); err != nil {
			errs = append(errs, fmt.Errorf("shutdown: %w", err))
		}
	}
	log.Info("stopped")
	return errors.Join(errs...)
}

// newKeycloakChannel builds the Keycloak CIBA channel of the configured
// realms; callbacks (run by the caller) sends their callbacks.
func newKeycloakChannel(cfg Config, challenges *challenge.Service, callbacks *keycloak.Callbacks, log *slog.Logger) *keycloak.Channel {
	m := callbacks.Metrics()
	for _, r := range cfg.Realms {
		log.Info("keycloak: realm", "issuer", r.Issuer, "jwks", cmp.Or(r.JWKSFile, r.JWKSURL, r.Issuer+keycloak.CertsPath),
			"callback", cmp.Or(r.CallbackURL, r.Issuer+keycloak.CallbackPath), "require_number", r.RequireNumber)
	}
	verifier := keycloak.NewVerifier(cfg.Realms, keycloak.VerifierOptions{Logger: log, Metrics: m})
	return keycloak.NewChannel(verifier, challenges, callbacks, keycloak.ChannelOptions{Logger: log, Metrics: m})
}

// newPushSender builds the configured push sender. For fcm it is the
// durable queue (the caller runs it) and its health for /readyz.
func newPushSender(ctx context.Context, cfg Config, rdb redis.UniversalClient, enrol *enrollment.Service,
	log *slog.Logger, reg prometheus.Registerer) (push.Sender, func() push.Status, error) {
	switch cfg.File.Push.Provider {
	case "log":
		return push.LogSender{Log: log}, nil, nil
	case "none":
		return push.NoneSender{}, nil, nil
	}
	f := cfg.File.Push.FCM
	fcm, err := push.NewFCM(ctx, push.FCMOptions{ProjectID: f.ProjectID, CredentialsFile: f.CredentialsFile, Endpoint: f.Endpoint})
	if err != nil {
		return nil, nil, fmt.Errorf("push.fcm: %w", err)
	}
	q := push.NewQueue(rdb, fcm, enrol, push.QueueOptions{
		KeyPrefix:      cfg.File.Redis.KeyPrefix,
		Provider:       "fcm",
		Shards:         f.QueueShards,
		Concurrency:    f.Concurrency,
		AttemptTimeout: cfg.PushTimeout,
		Logger:         log,
		Metrics:        push.NewMetrics(reg),
	})
	auth := "service account file"
	switch {
	case f.CredentialsFile == "" && f.Endpoint != "":
		auth = "none (endpoint override without credentials file)"
	case f.CredentialsFile == "":
		auth = "application default credentials"
	}
	log.Info("push: FCM", "project_id", f.ProjectID, "endpoint", f.Endpoint, "auth", auth,
		"concurrency", f.Concurrency, "queue_shards", f.QueueShards, "consumer", q.Consumer())
	return q, q.Status, nil
}

// handlePprof serves net/http/pprof's profiles under /debug/pprof/ on mux
// (the metrics listener's: config validation refuses pprof without it).
// A CPU profile or trace may last up to the server's WriteTimeout (45 s).
func handlePprof(mux *http.ServeMux) {
	mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("POST /debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
}

func newHTTPServer(h http.Handler) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       15 * time.Second,
		WriteTimeout:      45 * time.Second, // longer than the longest long-poll (30 s)
		IdleTimeout:       90 * time.Second,
		MaxHeaderBytes:    32 << 10,
	}
}

// hashSecret prints the SHA-256 hex of the first line of stdin.
func hashSecret(stdin io.Reader, stdout, stderr io.Writer) int {
	line, err := bufio.NewReader(stdin).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		fmt.Fprintln(stderr, "hash-secret: cannot read stdin:", err)
		return exitFailed
	}
	secret := strings.TrimRight(line, "\r\n")
	if secret == "" {
		fmt.Fprintln(stderr, "hash-secret: give the secret on stdin, e.g. `echo \"$SECRET\" | ecpsd hash-secret`")
		return exitConfig
	}
	if len(secret) < 22 {
		fmt.Fprintln(stderr, "hash-secret: warning: secrets should have ≥ 128 bits (e.g. 22+ random base64url characters)")
	}
	sum := sha256.Sum256([]byte(secret))
	fmt.Fprintln(stdout, hex.EncodeToString(sum[:]))
	return exitOK
}
