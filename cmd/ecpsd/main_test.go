package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/ecps-sante/ecps/internal/syncbuf"
	"github.com/ecps-sante/ecps/redistest"
)

func TestMain(m *testing.M) {
	if os.Getenv("ECPSD_TEST_MAIN") == "1" { // a test runs the command as a process of its own (to kill it)
		main()
		return
	}
	gin.SetMode(gin.ReleaseMode) // as main does; no debug route dump
	os.Exit(m.Run())
}

// served is a running serve().
type served struct {
	base   string // http://127.0.0.1:port
	addr   string
	cancel context.CancelFunc
	done   chan error // receives serve's result once
}

// configFor builds a Config through parseConfig on a Redis of the test's own.
func configFor(t *testing.T, redisURL string, extra string) Config {
	t.Helper()
	y := edit(t, `listen: "127.0.0.1:8080"`, `listen: "127.0.0.1:0"`,
		`"redis://127.0.0.1:6379/0"`, `"`+redisURL+`"`) + extra
	cfg, err := parseConfig([]byte(y), envOf(nil))
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	return cfg
}

func startServe(t *testing.T, cfg Config) *served {
	t.Helper()
	logs := &syncbuf.Buffer{}
	log := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan string, 1)
	s := &served{cancel: cancel, done: make(chan error, 1)}
	go func() { s.done <- serve(ctx, cfg, log, ready) }()
	var stopped bool
	t.Cleanup(func() {
		cancel()
		if !stopped {
			select {
			case <-s.done:
			case <-time.After(15 * time.Second):
				t.Error("serve did not return after cancel")
			}
		}
		if t.Failed() {
			t.Logf("service log:\n%s", logs.String())
		}
	})
	select {
	case s.addr = <-ready:
	case err := <-s.done:
		stopped = true
		t.Fatalf("serve returned before ready: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("serve not ready after 10 s")
	}
	s.base = "http://" + s.addr
	return s
}

var httpClient = &http.Client{Timeout: 5 * time.Second}

func get(t *testing.T, url string) (int, http.Header, string) {
	t.Helper()
	resp, err := httpClient.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return resp.StatusCode, resp.Header, string(b)
}

func errorCode(t *testing.T, body string) string {
	t.Helper()
	var e struct {
		Error string `json:"error"`
	}
	if err := json.Unmarshal([]byte(body), &e); err != nil {
		t.Fatalf("body is not a JSON error: %q", body)
	}
	return e.Error
}

func TestServeHealthReadyMetrics(t *testing.T) {
	srv := redistest.Start(t)
	s := startServe(t, configFor(t, srv.URL(), ""))

	code, hdr, body := get(t, s.base+"/healthz")
	if code != http.StatusOK {
		t.Errorf("/healthz = %d %s", code, body)
	}
	if !strings.HasPrefix(hdr.Get("Content-Type"), "application/json") {
		t.Errorf("/healthz Content-Type %q", hdr.Get("Content-Type"))
	}
	if code, _, body := get(t, s.base+"/readyz"); code != http.StatusOK {
		t.Errorf("/readyz = %d %s", code, body)
	}
	code, hdr, body = get(t, s.base+"/metrics")
	if code != http.StatusOK {
		t.Fatalf("/metrics = %d %s", code, body)
	}
	if !strings.HasPrefix(hdr.Get("Content-Type"), "text/plain") {
		t.Errorf("/metrics Content-Type %q, want Prometheus text", hdr.Get("Content-Type"))
	}
	for _, want := range []string{
		`ecps_http_requests_total{method="GET",route="/healthz",status="200"} 1`,
		`ecps_http_requests_total{method="GET",route="/readyz",status="200"} 1`,
		"ecps_device_proof_rejections_total{",
		"ecps_http_request_duration_seconds",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	// An unknown path is counted without its raw path.
	if code, _, body := get(t, s.base+"/no/such/810001234565"); code != http.StatusNotFound || errorCode(t, body) != "not_found" {
		t.Errorf("unknown path = %d %s", code, body)
	}
	_, _, body = get(t, s.base+"/metrics")
	if strings.Contains(body, "810001234565") {
		t.Error("/metrics shows a raw request path")
	}
}

func TestServeMetricsListen(t *testing.T) {
	srv := redistest.Start(t)
	// serve reports only the main address: pick the metrics port beforehand.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	metricsAddr := l.Addr().String()
	l.Close()
	s := startServe(t, configFor(t, srv.URL(), "metrics_listen: \""+metricsAddr+"\"\n"))

	get(t, s.base+"/healthz")
	code, hdr, body := get(t, s.base+"/metrics")
	if code != http.StatusNotFound {
		t.Errorf("main /metrics with metrics_listen = %d, want 404", code)
	}
	if !strings.HasPrefix(hdr.Get("Content-Type"), "application/json") || errorCode(t, body) != "not_found" {
		t.Errorf("main /metrics: %q %s, want the JSON not_found error", hdr.Get("Content-Type"), body)
	}
	code, _, body = get(t, "http://"+metricsAddr+"/metrics")
	if code != http.StatusOK {
		t.Fatalf("metrics_listen /metrics = %d", code)
	}
	if !strings.Contains(body, `ecps_http_requests_total{method="GET",route="/healthz",status="200"} 1`) ||
		!strings.Contains(body, "ecps_device_proof_rejections_total{") {
		t.Errorf("metrics_listen /metrics lacks the service's metrics:\n%.2000s", body)
	}
}

// pprof: true serves net/http/pprof on the metrics listener only; without
// it, /debug/pprof/ is not found there either.
func TestServePprof(t *testing.T) {
	srv := redistest.Start(t)
	for _, on := range []bool{false, true} {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		metricsAddr := l.Addr().String()
		l.Close()
		s := startServe(t, configFor(t, srv.URL(), fmt.Sprintf("metrics_listen: %q\npprof: %v\n", metricsAddr, on)))
		if code, _, _ := get(t, s.base+"/debug/pprof/"); code != http.StatusNotFound {
			t.Errorf("pprof %v: main listener /debug/pprof/ = %d, want 404", on, code)
		}
		want := http.StatusNotFound
		if on {
			want = http.StatusOK
		}
		for _, path := range []string{"/debug/pprof/", "/debug/pprof/heap?debug=1", "/debug/pprof/goroutine?debug=1", "/debug/pprof/cmdline"} {
			if code, _, body := get(t, "http://"+metricsAddr+path); code != want {
				t.Errorf("pprof %v: metrics listener %s = %d, want %d: %.200s", on, path, code, want, body)
			}
		}
		if on {
			code, _, body := get(t, "http://"+metricsAddr+"/debug/pprof/profile?seconds=1")
			if code != http.StatusOK || len(body) == 0 {
				t.Errorf("CPU profile = %d, %d bytes", code, len(body))
			}
		}
	}
}

func TestServeStopsOnCancel(t *testing.T) {
	srv := redistest.Start(t)
	s := startServe(t, configFor(t, srv.URL(), ""))
	if code, _, _ := get(t, s.base+"/healthz"); code != http.StatusOK {
		t.Fatalf("/healthz = %d", code)
	}
	httpClient.CloseIdleConnections()
	s.cancel()
	select {
	case err := <-s.done:
		if err != nil {
			t.Errorf("serve returned %v, want nil", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("serve did not return within 5 s of cancel")
	}
	s.done <- nil // for the cleanup
	if c, err := net.DialTimeout("tcp", s.addr, time.Second); err == nil {
		c.Close()
		t.Errorf("%s still accepts connections after serve returned", s.addr)
	}
}

// An in-flight request finishes after the stop begins, while new connections
// are refused.
func TestServeFinishesInFlightRequestOnStop(t *testing.T) {
	srv := redistest.Start(t)
	s := startServe(t, configFor(t, srv.URL(), ""))

	conn, err := net.Dial("tcp", s.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// The body arrives in two parts; the server is reading it when the stop begins.
	fmt.Fprintf(conn, "POST /api/v1/enrollments HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n[", s.addr)
	time.Sleep(200 * time.Millisecond)
	s.cancel()

	// The listener closes.
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", s.addr, 200*time.Millisecond)
		if err != nil {
			break
		}
		c.Close()
		if time.Now().After(deadline) {
			t.Fatal("new connections still accepted 5 s after the stop began")
		}
		time.Sleep(20 * time.Millisecond)
	}
	select {
	case err := <-s.done:
		s.done <- err
		t.Fatalf("serve returned (%v) while a request was in flight", err)
	default:
	}

	if _, err := conn.Write([]byte("]")); err != nil {
		t.Fatalf("finishing the body: %v", err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("the in-flight request got no answer: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest || errorCode(t, string(body)) != "invalid_request" {
		t.Errorf("in-flight request = %d %s, want 400 invalid_request", resp.StatusCode, body)
	}
	select {
	case err := <-s.done:
		if err != nil {
			t.Errorf("serve returned %v, want nil", err)
		}
		s.done <- nil
	case <-time.After(5 * time.Second):
		t.Fatal("serve did not return within 5 s of the last request")
	}
}

func TestServeRedisOutage(t *testing.T) {
	srv := redistest.Start(t)
	s := startServe(t, configFor(t, srv.URL(), ""))
	if code, _, body := get(t, s.base+"/readyz"); code != http.StatusOK {
		t.Fatalf("/readyz = %d %s", code, body)
	}

	srv.Stop()
	code, hdr, body := get(t, s.base+"/readyz")
	if code != http.StatusServiceUnavailable {
		t.Errorf("/readyz with Redis down = %d %s, want 503", code, body)
	} else if !strings.HasPrefix(hdr.Get("Content-Type"), "application/json") || errorCode(t, body) != "unavailable" {
		t.Errorf("/readyz 503 body %q (%s), want the JSON error unavailable", body, hdr.Get("Content-Type"))
	}
	if code, _, _ := get(t, s.base+"/healthz"); code != http.StatusOK {
		t.Errorf("/healthz with Redis down = %d, want 200 (the process is alive)", code)
	}
	select {
	case err := <-s.done:
		s.done <- err
		t.Fatalf("serve stopped on a Redis outage: %v", err)
	default:
	}

	srv.Restart()
	deadline := time.Now().Add(5 * time.Second)
	for {
		code, _, body = get(t, s.base+"/readyz")
		if code == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz still %d %s 5 s after Redis came back", code, body)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestServeListenBusy(t *testing.T) {
	srv := redistest.Start(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	cfg := configFor(t, srv.URL(), "")
	cfg.File.Listen = l.Addr().String()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err = serve(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	if err == nil || !strings.Contains(err.Error(), l.Addr().String()) {
		t.Errorf("serve on a busy port = %v, want an error naming %s", err, l.Addr())
	}
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		t.Error("serve blocked instead of failing")
	}
}

// run, as main calls it: serves from the file until ctx ends, then exits 0.
func TestRunServesUntilCancelled(t *testing.T) {
	srv := redistest.Start(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	path := writeConfig(t, edit(t, `listen: "127.0.0.1:8080"`, `listen: "`+addr+`"`))
	env := map[string]string{"ECPS_REDIS_URL": srv.URL()}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stdout bytes.Buffer
	stderr := &syncbuf.Buffer{}
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"-config", path}, strings.NewReader(""), &stdout, stderr, envOf(env))
	}()

	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := httpClient.Get("http://" + addr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		select {
		case code := <-done:
			t.Fatalf("run exited %d before serving; stderr:\n%s", code, stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("not ready after 10 s; stderr:\n%s", stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	httpClient.CloseIdleConnections()
	cancel()
	select {
	case code := <-done:
		if code != exitOK {
			t.Errorf("run = %d after cancel, want 0; stderr:\n%s", code, stderr.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("run did not return after cancel")
	}
	if !strings.Contains(stderr.String(), `"msg":"ecpsd started"`) || !strings.Contains(stderr.String(), `"msg":"stopped"`) {
		t.Errorf("log lacks start/stop lines:\n%s", stderr.String())
	}
}
