// Package api is the HTTP face of the service: routes, wire types, the one
// table that maps domain errors to the contract's codes, middleware
// (request ids, body cap, recovery, client, operator and device-proof
// authentication) and the OpenAPI description (openapi.yaml).
//
// Handlers stay thin: decode, call the domain, render. They return an error
// and one adapter (handle) renders it.
package api

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/go-redis/v9"

	"github.com/ecps-sante/ecps/audit"
	"github.com/ecps-sante/ecps/challenge"
	"github.com/ecps-sante/ecps/directory"
	"github.com/ecps-sante/ecps/enrollment"
	"github.com/ecps-sante/ecps/keycloak"
	"github.com/ecps-sante/ecps/push"
	"github.com/ecps-sante/ecps/ratelimit"
)

// Client is an IdP allowed to call the service.
type Client struct {
	ID           string
	Name         string
	SecretSHA256 [sha256.Size]byte
	// MoreSecretSHA256 are accepted too: the new secret's hash while the
	// client's secret is rotated (or the old one's).
	MoreSecretSHA256 [][sha256.Size]byte
	Scopes           []string
	RedirectURIs     []string
}

// HasScope reports whether the client holds scope.
func (c *Client) HasScope(scope string) bool {
	for _, s := range c.Scopes {
		if s == scope {
			return true
		}
	}
	return false
}

// Directory is the practitioner directory, as the desk reads it (package
// directory's Store): directory.ErrNotLoaded or ErrNotFound when there is
// no entry.
type Directory interface {
	Lookup(ctx context.Context, idNat string) (directory.Identity, error)
}

// Operator is an enrolment desk operator.
type Operator struct {
	Name      string
	KeySHA256 [sha256.Size]byte
	// MoreKeySHA256 are accepted too, while the operator's key is rotated.
	// A desk session lasts while the hash of the key it was opened with is
	// still one of the operator's.
	MoreKeySHA256 [][sha256.Size]byte
}

// keyHashes are all the hashes of an operator's accepted keys.
func (o *Operator) keyHashes() [][sha256.Size]byte {
	return append([][sha256.Size]byte{o.KeySHA256}, o.MoreKeySHA256...)
}

// Options are what the HTTP layer needs; cmd/ecpsd builds them from the config.
type Options struct {
	Logger         *slog.Logger
	Clients        []Client
	Operators      []Operator
	TrustedProxies []string // nil: trust no proxy
	// ServeMetrics puts /metrics on the main handler (no metrics_listen).
	ServeMetrics bool
	Registry     *prometheus.Registry
	Metrics      *Metrics
	Enrollment   *enrollment.Service
	Challenges   *challenge.Service
	Audit        *audit.Log
	// Keycloak is the Keycloak CIBA channel (nil: no realm configured, and
	// every channel request answers 401).
	Keycloak *keycloak.Channel
	// ClientLimiter limits each IdP client's request rate (nil: no limit).
	ClientLimiter *ratelimit.Limiter
	// Ready answers /readyz: nil when Redis answers.
	Ready func(ctx context.Context) error
	// PushStatus, when set, adds the push provider's health to /readyz as
	// "push". A failing provider leaves the replica ready (200): phones
	// poll, and every replica shares the same provider, so taking them out
	// of service would only stop the logins that still work.
	PushStatus func() push.Status
	// Dev: desk session cookies without the __Host- prefix nor Secure, for
	// plain-HTTP development (the config's dev key).
	Dev bool
	// Redis and KeyPrefix hold the desk sessions (nil Redis: no desk sign-in).
	Redis     redis.UniversalClient
	KeyPrefix string
	// DeskSignInFailures failed desk sign-ins per client address within
	// DeskSignInWindow, then its sign-ins are refused (429) until the oldest
	// leaves the window (defaults 10 and 1 minute; limits.desk_signin_*).
	DeskSignInFailures int
	DeskSignInWindow   time.Duration
	// Directory serves the desk's practitioner lookups (nil: none, 404).
	Directory Directory
	// RequestBudget bounds each request's storage time, go-redis's resends
	// included (default DefaultRequestBudget); past it the answer is 503.
	RequestBudget time.Duration
}

// Server holds the routes.
type Server struct {
	log        *slog.Logger
	clients    map[string]*Client
	operators  []Operator
	metrics    *Metrics
	enrollment *enrollment.Service
	challenges *challenge.Service
	keycloak   *keycloak.Channel
	audit      *audit.Log
	limiter    *ratelimit.Limiter
	// limitAudited: client id -> the Unix second of its last audited limit hit.
	limitAudited sync.Map
	ready        func(ctx context.Context) error
	pushStatus   func() push.Status
	budget       time.Duration // each request's storage time (deadline.go)
	directory    Directory
	web          *webUI // the HTML pages: login page and desk (pages.go, desk.go)
	engine       *gin.Engine
}

// MaxBody is the contract's cap on request bodies.
const MaxBody = 64 << 10

// New builds the server and its routes.
func New(opts Options) (*Server, error) {
	if opts.Enrollment == nil || opts.Challenges == nil || opts.Audit == nil || opts.Metrics == nil || opts.Logger == nil {
		return nil, errors.New("api.New: Logger, Metrics, Enrollment, Challenges and Audit are required")
	}
	s := &Server{log: opts.Logger, clients: map[string]*Client{}, operators: opts.Operators,
		metrics: opts.Metrics, enrollment: opts.Enrollment, challenges: opts.Challenges, audit: opts.Audit, limiter: opts.ClientLimiter, ready: opts.Ready,
		web: newWebUI(opts)}
	s.pushStatus = opts.PushStatus
	s.directory = opts.Directory
	s.keycloak = opts.Keycloak
	s.budget = opts.RequestBudget
	if s.budget <= 0 {
		s.budget = DefaultRequestBudget
	}
	for i := range opts.Clients {
		c := opts.Clients[i]
		s.clients[c.ID] = &c
	}
	e := gin.New()
	e.HandleMethodNotAllowed = true
	e.RedirectTrailingSlash = false
	e.RedirectFixedPath = false
	// Route on the path as sent: an encoded "/" (%2F) is part of an id, not a
	// separator, so /login/a%2Fstate is a (bad) login_id for the page, not
	// the JSON /state route of login "a". Parameters are then unescaped.
	e.UseRawPath = true
	e.UnescapePathValues = true
	if err := e.SetTrustedProxies(opts.TrustedProxies); err != nil {
		return nil, fmt.Errorf("trusted proxies: %w", err)
	}
	e.Use(s.requestContext, s.recovery, s.deadline, s.bodyCap)
	e.NoRoute(s.noRoute)
	e.NoMethod(func(c *gin.Context) { s.writeError(c, errMethodNotAllowed) })
	s.engine = e
	s.routes(opts)
	return s, nil
}

// Handler returns the http.Handler of the service.
func (s *Server) Handler() http.Handler { return s.engine }

// Route is a method and a path template, OpenAPI style.
type Route struct{ Method, Path string }

// Routes lists every route served, for the spec test.
func (s *Server) Routes() []Route {
	var out []Route
	for _, r := range s.engine.Routes() {
		out = append(out, Route{Method: r.Method, Path: openAPIPath(r.Path)})
	}
	return out
}

// routes is the one place that lists every route.
func (s *Server) routes(opts Options) {
	e := s.engine
	e.GET("/healthz", func(c *gin.Context) { c.JSON(http.StatusOK, gin.H{"status": "ok"}) })
	e.GET("/readyz", s.handle(s.readyz))
	if opts.ServeMetrics {
		e.GET("/metrics", gin.WrapH(promhttp.HandlerFor(opts.Registry, promhttp.HandlerOpts{})))
	}

	v1 := e.Group("/api/v1")
	v1.POST("/activations", s.clientAuth("activation"), s.handle(s.createActivationByClient))
	v1.POST("/enrollments", s.handle(s.enrol))
	v1.POST("/authentications", s.clientAuth("authentication"), s.handle(s.createAuthentication))
	v1.GET("/authentications/:auth_req_id", s.clientAuth("authentication"), s.handle(s.pollAuthentication))
	v1.DELETE("/authentications/:auth_req_id", s.clientAuth("authentication"), s.handle(s.cancelAuthentication))
	v1.POST("/keycloak/ciba", s.handle(s.keycloakCIBA)) // the Bearer is the credential (keycloak.go)

	desk := v1.Group("/desk", s.operatorAuth)
	desk.POST("/activations", s.handle(s.createActivationByDesk))
	desk.GET("/activations/:activation_id", s.handle(s.getActivation))
	desk.GET("/practitioners/:idNat", s.handle(s.deskPractitioner))
	desk.GET("/practitioners/:idNat/devices", s.handle(s.deskListDevices))
	desk.POST("/devices/:device_id/suspend", s.handle(s.deskTransition(enrollment.ActionSuspend)))
	desk.POST("/devices/:device_id/resume", s.handle(s.deskTransition(enrollment.ActionResume)))
	desk.DELETE("/devices/:device_id", s.handle(s.deskTransition(enrollment.ActionRevoke)))
	desk.GET("/audit", s.handle(s.deskAudit))

	device := v1.Group("/device", s.deviceAuth)
	device.GET("/devices", s.handle(s.deviceListDevices))
	device.DELETE("/devices/:device_id", s.handle(s.deviceRevoke))
	device.PUT("/push-token", s.handle(s.setPushToken))
	device.GET("/challenges", s.handle(s.listChallenges))
	device.POST("/challenges/claim", s.handle(s.claimChallenge))
	device.GET("/challenges/:challenge_id", s.handle(s.getChallenge))
	device.POST(deviceDecisionPath, s.handle(s.respondChallenge))

	e.GET("/login/:login_id/state", s.handle(s.loginState))
	e.GET("/login/:login_id/qr.png", s.handle(s.loginQR))
	s.pageRoutes(e)
}

// handle adapts a handler that returns an error.
func (s *Server) handle(h func(c *gin.Context) error) gin.HandlerFunc {
	return func(c *gin.Context) {
		if err := h(c); err != nil {
			s.writeError(c, err)
		}
	}
}

func (s *Server) readyz(c *gin.Context) error {
	ctx, cancel := context.WithTimeout(c.Request.Context(), time.Second)
	defer cancel()
	if err := s.ready(ctx); err != nil {
		s.log.Warn("not ready", "err", err)
		return errUnavailable
	}
	body := gin.H{"status": "ready"}
	if s.pushStatus != nil {
		body["push"] = s.pushStatus()
	}
	c.JSON(http.StatusOK, body)
	return nil
}

// hashEqual compares a presented secret with a stored SHA-256 in constant time.
func hashEqual(presented string, stored [sha256.Size]byte) bool {
	sum := sha256.Sum256([]byte(presented))
	return subtle.ConstantTimeCompare(sum[:], stored[:]) == 1
}
