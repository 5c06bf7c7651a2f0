package api

import (
	"bytes"
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/gin-gonic/gin"
	"github.com/redis/go-redis/v9"

	"github.com/ecps-sante/ecps/redistest"
)

func TestUnknownRouteIsJSON404(t *testing.T) {
	e := newEnv(t, 1)
	for _, path := range []string{"/nope", "/api/v1/device/nope", "/api/v1/desk/nope", "/api/v1/enrollments/"} {
		do(t, e.url(), "GET", path, nil, nil).wantError(t, http.StatusNotFound, "not_found")
	}
}

func TestWrongMethodIsJSON405(t *testing.T) {
	e := newEnv(t, 1)
	do(t, e.url(), "GET", "/api/v1/enrollments", nil, nil).wantError(t, http.StatusMethodNotAllowed, "method_not_allowed")
	do(t, e.url(), "PUT", "/healthz", nil, nil).wantError(t, http.StatusMethodNotAllowed, "method_not_allowed")
}

func TestBodyOver64KiBIs413BeforeAuth(t *testing.T) {
	e := newEnv(t, 1)
	big := bytes.Repeat([]byte("a"), MaxBody+1)
	do(t, e.url(), "POST", "/api/v1/enrollments", big, nil).wantError(t, http.StatusRequestEntityTooLarge, "payload_too_large")
	do(t, e.url(), "POST", "/api/v1/desk/activations", big, nil).wantError(t, http.StatusRequestEntityTooLarge, "payload_too_large")
	// Without Content-Length (chunked), the cap holds while reading.
	req, _ := http.NewRequest("POST", e.url()+"/api/v1/enrollments", struct{ *bytes.Reader }{bytes.NewReader(big)})
	req.ContentLength = -1
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusRequestEntityTooLarge {
		t.Fatalf("chunked: status %d", res.StatusCode)
	}
	// Exactly 64 KiB is read (and then refused as bad JSON, not as too large).
	ok := bytes.Repeat([]byte(" "), MaxBody)
	do(t, e.url(), "POST", "/api/v1/enrollments", ok, nil).wantError(t, http.StatusBadRequest, "invalid_request")
}

func TestPanicIs500WithoutStack(t *testing.T) {
	e := newEnv(t, 1)
	e.replicas[0].srv.engine.GET("/test-panic", func(c *gin.Context) { panic("boom: secret detail") })
	r := do(t, e.url(), "GET", "/test-panic", nil, nil)
	r.wantError(t, http.StatusInternalServerError, "server_error")
	if strings.Contains(string(r.Body), "boom") || strings.Contains(string(r.Body), "goroutine") {
		t.Fatalf("panic detail leaked: %s", r.Body)
	}
	// The server goes on serving.
	do(t, e.url(), "GET", "/healthz", nil, nil).wantStatus(t, http.StatusOK)
}

func TestRequestID(t *testing.T) {
	e := newEnv(t, 1)
	r := do(t, e.url(), "GET", "/healthz", nil, map[string]string{"X-Request-Id": "abc-123"})
	if r.Header.Get("X-Request-Id") != "abc-123" {
		t.Fatalf("request id not echoed: %q", r.Header.Get("X-Request-Id"))
	}
	r = do(t, e.url(), "GET", "/healthz", nil, map[string]string{"X-Request-Id": "bad id\twith junk"})
	if got := r.Header.Get("X-Request-Id"); got == "" || strings.Contains(got, " ") {
		t.Fatalf("bad request id kept: %q", got)
	}
}

func TestMetricsEndpoint(t *testing.T) {
	e := newEnv(t, 1)
	e.createActivation(subjectA)
	r := do(t, e.url(), "GET", "/metrics", nil, nil)
	r.wantStatus(t, http.StatusOK)
	for _, want := range []string{
		`ecps_http_requests_total{method="POST",route="/api/v1/desk/activations",status="201"} 1`,
		`ecps_http_request_duration_seconds_bucket`,
		`ecps_device_proof_rejections_total{reason="replay"} 0`,
		`ecps_activations_created_total{by="operator"} 1`,
		`ecps_redis_errors_total`,
	} {
		if !strings.Contains(string(r.Body), want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}

// Redis stopped during the service's life: requests answer 503 unavailable,
// /readyz 503, and everything works again once Redis is back, no restart.
func TestRedisDownIs503AndRecovers(t *testing.T) {
	srv := redistest.Start(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr(), DialTimeout: 300 * time.Millisecond,
		ReadTimeout: 300 * time.Millisecond, WriteTimeout: 300 * time.Millisecond,
		PoolTimeout: 500 * time.Millisecond, ContextTimeoutEnabled: true, MaxRetries: 1})
	t.Cleanup(func() { rdb.Close() })
	e := newEnvOn(t, rdb, redistest.Prefix(), 1)
	p := e.newDevice(subjectA)
	do(t, e.url(), "GET", "/readyz", nil, nil).wantStatus(t, http.StatusOK)

	srv.Stop()
	do(t, e.url(), "GET", "/readyz", nil, nil).wantError(t, http.StatusServiceUnavailable, "unavailable")
	e.desk("POST", "/api/v1/desk/activations", map[string]string{"subject": subjectA}).wantError(t, http.StatusServiceUnavailable, "unavailable")
	e.desk("GET", "/api/v1/desk/audit?subject="+subjectA, nil).wantError(t, http.StatusServiceUnavailable, "unavailable")
	e.call(e.url(), p, "GET", "/api/v1/device/devices", nil).wantError(t, http.StatusServiceUnavailable, "unavailable")
	e.enrolWith(e.url(), newPhone(t).enrolBody(t, e, activation{ActivationID: "act_AAAAAAAAAAAAAAAAAAAAAA", Secret: "x"})).
		wantError(t, http.StatusServiceUnavailable, "unavailable")
	if e.metric(0, "redis_errors") == 0 {
		t.Error("redis errors not counted")
	}

	srv.Restart() // empty: the test server keeps no data
	deadline := time.Now().Add(5 * time.Second)
	for do(t, e.url(), "GET", "/readyz", nil, nil).Status != http.StatusOK {
		if time.Now().After(deadline) {
			t.Fatal("/readyz did not recover")
		}
		time.Sleep(50 * time.Millisecond)
	}
	e.createActivation(subjectA)
}

// The router and api/openapi.yaml list the same paths and methods.
func TestRoutesMatchOpenAPI(t *testing.T) {
	doc, err := openapi3.NewLoader().LoadFromFile("openapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := doc.Validate(context.Background()); err != nil {
		t.Fatalf("openapi.yaml invalid: %v", err)
	}
	spec := map[Route]bool{}
	for path, item := range doc.Paths.Map() {
		for method := range item.Operations() {
			spec[Route{Method: method, Path: path}] = true
		}
	}
	e := newEnv(t, 1)
	served := map[Route]bool{}
	for _, r := range e.replicas[0].srv.Routes() {
		served[r] = true
		if !spec[r] {
			t.Errorf("served but not in openapi.yaml: %s %s", r.Method, r.Path)
		}
	}
	for r := range spec {
		if !served[r] {
			t.Errorf("in openapi.yaml but not served: %s %s", r.Method, r.Path)
		}
	}
}
