package api

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/go-jose/go-jose/v4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"

	"github.com/ecps-sante/ecps/audit"
	"github.com/ecps-sante/ecps/challenge"
	"github.com/ecps-sante/ecps/enrollment"
	"github.com/ecps-sante/ecps/push"
	"github.com/ecps-sante/ecps/redistest"
)

func TestMain(m *testing.M) {
	gin.SetMode(gin.TestMode)
	os.Exit(m.Run())
}

// Subjects used by the tests (valid idNat).
const (
	subjectA = "810001234565"
	subjectB = "810100000016"
	subjectC = "0751234567"
)

// clock is a settable clock shared by a test's replicas.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}
func (c *clock) Set(t time.Time) { c.mu.Lock(); c.now = t; c.mu.Unlock() }

// env is one or more replicas of the service on one real Redis.
type env struct {
	t        testing.TB
	rdb      redis.UniversalClient
	prefix   string
	clock    *clock
	opts     enrollment.Options
	chOpts   challenge.Options
	pushes   *push.Recorder
	sender   push.Sender // when set, new replicas push through it instead of pushes
	dir      Directory   // when set, new replicas' desk route reads it
	kc       *kcSetup    // when set, replicas run the Keycloak channel (keycloak_test.go)
	log      io.Writer   // when set, new replicas' API server logs there, at info level
	replicas []*replica
}

type replica struct {
	stop    context.CancelFunc // ends its hub, as a killed process's
	hub     *challenge.Hub
	srv     *Server
	http    *httptest.Server
	metrics *Metrics
	reg     *prometheus.Registry
	kc      *kcReplica
}

const (
	testClientSecret      = "client-secret-0123456789abcdef"
	testActClientSec      = "act-client-secret-0123456789ab"
	testOperatorKey       = "operator-key-0123456789abcdef0"
	testOperatorKeyTwo    = "operator-key-two-0123456789abc"
	testClientSecret2     = "client-secret-two-0123456789ab"
	testClientSecret2Next = "client-secret-two-next-0123456789"
)

func sum(s string) [32]byte { return sha256.Sum256([]byte(s)) }

// newEnv starts n replicas on a real Redis (one test-unique key prefix).
func newEnv(t testing.TB, n int, mutate ...func(*enrollment.Options)) *env {
	t.Helper()
	rdb, prefix := redistest.Client(t)
	return newEnvOn(t, rdb, prefix, n, mutate...)
}

func newEnvOn(t testing.TB, rdb redis.UniversalClient, prefix string, n int, mutate ...func(*enrollment.Options)) *env {
	t.Helper()
	return newEnvWith(t, rdb, prefix, n, func(o *enrollment.Options, _ *challenge.Options) {
		for _, m := range mutate {
			m(o)
		}
	})
}

// newEnvWith lets a test set both services' options.
func newEnvWith(t testing.TB, rdb redis.UniversalClient, prefix string, n int, mutate func(*enrollment.Options, *challenge.Options)) *env {
	t.Helper()
	e := &env{t: t, rdb: rdb, prefix: prefix, clock: &clock{now: time.Now()}, pushes: push.NewRecorder(10000)}
	e.opts = enrollment.Options{KeyPrefix: prefix, PublicURL: "https://ecps.test", ProofMaxSkew: 60 * time.Second, Now: e.clock.Now}
	e.chOpts = challenge.Options{KeyPrefix: prefix, PublicURL: "https://ecps.test", Now: e.clock.Now}
	if mutate != nil {
		mutate(&e.opts, &e.chOpts)
	}
	for i := 0; i < n; i++ {
		e.replicas = append(e.replicas, e.newReplica())
	}
	return e
}

func (e *env) newReplica() *replica {
	t := e.t
	reg := prometheus.NewRegistry()
	metrics := NewMetrics(reg)
	e.rdb.AddHook(metrics.RedisHook()) // replicas share the test's client: each counts all its errors
	log := audit.New(e.rdb, e.prefix, 400*24*time.Hour)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	hub := challenge.NewHub(e.rdb, e.prefix, slog.New(slog.NewJSONHandler(io.Discard, nil)))
	go hub.Run(ctx)
	enrol := enrollment.New(e.rdb, log, e.opts)
	var sender push.Sender = e.pushes
	if e.sender != nil {
		sender = e.sender
	}
	chOpts := e.chOpts
	chOpts.OnDecision = metrics.Decided
	var kc *kcReplica
	if e.kc != nil {
		kc = e.kc.newReplica(e, log, reg)
		chOpts.OnKeycloakDecision = kc.callbacks.Decided
	}
	challenges := challenge.New(e.rdb, log, sender, enrol, hub, chOpts)
	srv, err := New(Options{
		Logger: apiLogger(e.log),
		Clients: []Client{
			{ID: "idp", Name: "Test IdP", SecretSHA256: sum(testClientSecret), Scopes: []string{"authentication"},
				RedirectURIs: []string{"https://idp.test/cb"}},
			{ID: "idp-actonly", Name: "Activation only", SecretSHA256: sum(testActClientSec), Scopes: []string{"activation"}},
			{ID: "idp-2", Name: "Other IdP", SecretSHA256: sum(testClientSecret2), Scopes: []string{"authentication"},
				MoreSecretSHA256: [][32]byte{sum(testClientSecret2Next)}}, // being rotated
			{ID: "idp-act", Name: "Activating IdP", SecretSHA256: sum(testActClientSec), Scopes: []string{"authentication", "activation"}},
		},
		Operators:    []Operator{{Name: "desk-1", KeySHA256: sum(testOperatorKey)}, {Name: "desk-2", KeySHA256: sum(testOperatorKeyTwo)}},
		ServeMetrics: true,
		Registry:     reg,
		Metrics:      metrics,
		Enrollment:   enrol,
		Challenges:   challenges,
		Keycloak:     kc.channel(challenges),
		Audit:        log,
		Directory:    e.dir,
		Ready:        func(ctx context.Context) error { return e.rdb.Ping(ctx).Err() },
	})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(hs.Close)
	return &replica{stop: cancel, hub: hub, srv: srv, http: hs, metrics: metrics, reg: reg, kc: kc}
}

// url of replica 0.
func (e *env) url() string { return e.replicas[0].http.URL }

type response struct {
	Status int
	Header http.Header
	Body   []byte
}

func (r response) json(t testing.TB) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.Body, &m); err != nil {
		t.Fatalf("status %d, body not JSON: %q", r.Status, r.Body)
	}
	return m
}

// wantError checks a contract error answer.
func (r response) wantError(t testing.TB, status int, code string) {
	t.Helper()
	if r.Status != status {
		t.Fatalf("status = %d, want %d; body %s", r.Status, status, r.Body)
	}
	m := r.json(t)
	if m["error"] != code {
		t.Fatalf("error = %v, want %s; body %s", m["error"], code, r.Body)
	}
	if d, _ := m["error_description"].(string); d == "" {
		t.Fatalf("no error_description: %s", r.Body)
	}
}

func (r response) wantStatus(t testing.TB, status int) {
	t.Helper()
	if r.Status != status {
		t.Fatalf("status = %d, want %d; body %s", r.Status, status, r.Body)
	}
}

// do sends a request to a base URL.
func do(t testing.TB, base, method, path string, body []byte, header map[string]string) response {
	t.Helper()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, base+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return response{Status: res.StatusCode, Header: res.Header, Body: b}
}

func jsonBody(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func deskHeader() map[string]string {
	return map[string]string{"Authorization": "Bearer " + testOperatorKey}
}

func (e *env) desk(method, path string, body any) response {
	e.t.Helper()
	var b []byte
	if body != nil {
		b = jsonBody(e.t, body)
	}
	return do(e.t, e.url(), method, path, b, deskHeader())
}

// activation is a created activation as the wire shows it.
type activation struct {
	ActivationID string `json:"activation_id"`
	Subject      string `json:"subject"`
	Code         string `json:"code"`
	QRPNG        []byte `json:"qr_png"`
	EnrolURI     string `json:"enrol_uri"`
	ExpiresAt    string `json:"expires_at"`
	Secret       string `json:"-"`
}

func (e *env) createActivation(subject string) activation {
	e.t.Helper()
	r := e.desk("POST", "/api/v1/desk/activations", map[string]string{"subject": subject})
	r.wantStatus(e.t, http.StatusCreated)
	var a activation
	if err := json.Unmarshal(r.Body, &a); err != nil {
		e.t.Fatal(err)
	}
	u, err := parseURIQuery(a.EnrolURI)
	if err != nil {
		e.t.Fatal(err)
	}
	a.Secret = u.Get("s")
	return a
}

func (e *env) activationStatus(id string) string {
	e.t.Helper()
	r := e.desk("GET", "/api/v1/desk/activations/"+id, nil)
	r.wantStatus(e.t, http.StatusOK)
	return r.json(e.t)["status"].(string)
}

// phone is a test device: a P-256 key and, once enrolled, its device id.
type phone struct {
	key      *ecdsa.PrivateKey
	deviceID string
	subject  string
}

func newPhone(t testing.TB) *phone {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return &phone{key: k}
}

func (p *phone) jwk() json.RawMessage {
	b, _ := jose.JSONWebKey{Key: &p.key.PublicKey}.MarshalJSON()
	return b
}

// sign makes a compact JWS with the given header fields and claims.
func (p *phone) sign(t testing.TB, typ, kid string, claims any) string {
	t.Helper()
	opts := (&jose.SignerOptions{}).WithType(jose.ContentType(typ))
	if kid != "" {
		opts = opts.WithHeader("kid", kid)
	}
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: p.key}, opts)
	if err != nil {
		t.Fatal(err)
	}
	obj, err := s.Sign(jsonBody(t, claims))
	if err != nil {
		t.Fatal(err)
	}
	out, err := obj.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func (p *phone) enrolProof(t testing.TB, activationID string, iat time.Time) string {
	return p.sign(t, "ecps-enrol+jwt", "", map[string]any{"activation_id": activationID, "iat": iat.Unix()})
}

// enrolBody is a valid enrolment body; mutate adjusts it per test.
func (p *phone) enrolBody(t testing.TB, e *env, a activation) map[string]any {
	return map[string]any{
		"activation_id": a.ActivationID, "secret": a.Secret, "public_key": p.jwk(),
		"proof":    p.enrolProof(t, a.ActivationID, e.clock.Now()),
		"platform": "android", "model": "Pixel 9", "app_version": "1.2.3",
	}
}

func (e *env) enrolWith(base string, body map[string]any) response {
	e.t.Helper()
	return do(e.t, base, "POST", "/api/v1/enrollments", jsonBody(e.t, body), nil)
}

// enrol enrols p with a and fails the test unless it works.
func (e *env) enrol(p *phone, a activation) {
	e.t.Helper()
	r := e.enrolWith(e.url(), p.enrolBody(e.t, e, a))
	r.wantStatus(e.t, http.StatusCreated)
	m := r.json(e.t)
	p.deviceID, p.subject = m["device_id"].(string), m["subject"].(string)
}

// newDevice creates an activation for subject and enrols a new phone with it.
func (e *env) newDevice(subject string) *phone {
	e.t.Helper()
	p := newPhone(e.t)
	e.enrol(p, e.createActivation(subject))
	return p
}

func randomJTI() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

func bodyHash(b []byte) string {
	s := sha256.Sum256(b)
	return base64.RawURLEncoding.EncodeToString(s[:])
}

// proof is a valid request proof for method, path and body.
func (p *phone) proof(t testing.TB, now time.Time, method, path string, body []byte) string {
	return p.sign(t, "ecps-proof+jwt", p.deviceID, map[string]any{
		"htm": method, "htu": path, "iat": now.Unix(), "jti": randomJTI(), "bh": bodyHash(body)})
}

// call sends a device request with a fresh valid proof to base.
func (e *env) call(base string, p *phone, method, path string, body []byte) response {
	e.t.Helper()
	return do(e.t, base, method, path, body, map[string]string{"Authorization": "ECPS-Proof " + p.proof(e.t, e.clock.Now(), method, path, body)})
}

// metric returns a counter's value on replica i.
func (e *env) metric(i int, name string, labels ...string) float64 {
	e.t.Helper()
	r := e.replicas[i].metrics
	switch name {
	case "proof_rejections":
		return testutil.ToFloat64(r.proofRejections.WithLabelValues(labels...))
	case "enrolments":
		return testutil.ToFloat64(r.enrolments.WithLabelValues(labels...))
	case "redis_errors":
		return testutil.ToFloat64(r.redisErrors)
	case "decisions":
		return testutil.ToFloat64(r.decisions.WithLabelValues(labels...))
	}
	e.t.Fatalf("unknown metric %s", name)
	return 0
}

// auditEvents lists a subject's audit events, newest first.
func (e *env) auditEvents(subject string) []string {
	e.t.Helper()
	r := e.desk("GET", "/api/v1/desk/audit?subject="+subject+"&limit=200", nil)
	r.wantStatus(e.t, http.StatusOK)
	var page struct {
		Entries []struct {
			Event string `json:"event"`
		} `json:"entries"`
	}
	if err := json.Unmarshal(r.Body, &page); err != nil {
		e.t.Fatal(err)
	}
	var out []string
	for _, en := range page.Entries {
		out = append(out, en.Event)
	}
	return out
}

func countOf(list []string, s string) int {
	n := 0
	for _, x := range list {
		if x == s {
			n++
		}
	}
	return n
}

func parseURIQuery(uri string) (url.Values, error) {
	u, err := url.Parse(uri)
	if err != nil {
		return nil, err
	}
	return u.Query(), nil
}

func redisClient(t testing.TB) (redis.UniversalClient, string) { return redistest.Client(t) }

func (e *env) metricLimit(name string) float64 {
	return testutil.ToFloat64(e.replicas[0].metrics.limitHits.WithLabelValues(name))
}
