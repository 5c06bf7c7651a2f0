package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ecps-sante/ecps/api"
	"github.com/ecps-sante/ecps/challenge"
	"github.com/ecps-sante/ecps/ecpstest"
	"github.com/ecps-sante/ecps/redistest"
)

const (
	e2eSecret  = "bench-client-secret-0123456789"
	e2eDeskKey = "bench-desk-key-0123456789abcdef"
)

// startService runs the service in-process (ecpstest) on a real Redis,
// pushing through FCM to fcmAddr when set, and returns its URL and the
// Redis URL.
func startService(t *testing.T, fcmAddr string, pushesPerSubject int) (string, string) {
	t.Helper()
	redisURL := os.Getenv("ECPS_TEST_REDIS_URL")
	if redisURL == "" { // run alone: a Redis of the test's own, for ecpstest too
		redisURL = redistest.Start(t).URL()
		t.Setenv("ECPS_TEST_REDIS_URL", redisURL)
	}
	opts := ecpstest.Options{
		Clients: func(string) []api.Client {
			return []api.Client{{ID: "bench-idp", Name: "ecps-bench", SecretSHA256: sha256Of(e2eSecret),
				Scopes: []string{"authentication", "activation"}}}
		},
		Operators: []api.Operator{{Name: "bench-desk", KeySHA256: sha256Of(e2eDeskKey)}},
	}
	if pushesPerSubject > 0 {
		opts.Challenge = func(o *challenge.Options) { o.PushesPerSubject = pushesPerSubject }
	}
	if fcmAddr != "" {
		opts.FCMEndpoint, opts.FCMProject = "http://"+fcmAddr+"/v1", "ecps-bench"
	}
	return ecpstest.Start(t, opts), redisURL
}

func freeAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func runBench(t *testing.T, args ...string) (*Report, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "report.json")
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), append(args, "-json", path), &stdout, &stderr)
	t.Logf("stdout:\n%s\nstderr:\n%s", stdout.String(), stderr.String())
	if code != exitOK {
		t.Fatalf("ecps-bench exited %d", code)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var r Report
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatalf("report: %v\n%s", err, b)
	}
	return &r, stdout.String()
}

// The whole tool for about two seconds against the in-process service:
// enrolment by the desk, pushes through the fake FCM the bench plays,
// closed loop; then the IdP's activations, phones polling their list, open
// loop within the contract's push limit per practitioner.
func TestBenchEndToEnd(t *testing.T) {
	t.Run("fcm/closed", func(t *testing.T) {
		fcm := freeAddr(t)
		url, redisURL := startService(t, fcm, 1_000_000) // a bench config: limit raised
		r, out := runBench(t, "-targets", url+","+url, "-credentials", "", "-client-id", "bench-idp", "-client-secret", e2eSecret,
			"-desk-key", e2eDeskKey, "-fcm", fcm, "-devices", "40", "-devices-per-subject", "2", "-concurrency", "4",
			"-duration", "1s", "-ceiling-time", "200ms", "-redis", redisURL, "-pushes-per-subject", "0", "-label", "e2e")
		if r.ErrorsTotal != 0 || r.Logins == 0 || r.Push != "fcm" || r.Mode != "closed" || r.Subjects != 20 || r.Replicas != 2 {
			t.Fatalf("report: %+v", r)
		}
		for _, st := range []string{stepCreate, stepLearn, stepRead, stepDecide, stepResult, stepTotal} {
			if p := r.Steps[st]; p.Count != r.Logins || p.P50 <= 0 || p.Max < p.P99 || p.P99 < p.P50 {
				t.Errorf("step %s: %+v", st, p)
			}
		}
		if r.FCM["delivered"] < int(r.Logins) || r.FCM["refused"] != 0 {
			t.Errorf("fcm %v", r.FCM)
		}
		if r.Ceiling.LoginsPerS <= 0 || r.Ratio <= 0 || r.LoginsPerS <= 0 || r.DecisionToResultMS.P99 <= 0 {
			t.Errorf("figures: %+v", r)
		}
		// Other tests may share this Redis: only check that it was read.
		if r.Redis == nil || r.Redis.CommandsPerLogin <= 0 || r.Redis.CommandsByNamePerLogin["evalsha"] <= 0 {
			t.Errorf("redis: %+v", r.Redis)
		}
		// ecpstest's /metrics has no process collector: said so, not made up.
		if r.CPU != nil || !strings.Contains(strings.Join(r.Notes, "\n"), "process_cpu_seconds_total") {
			t.Errorf("replica CPU %+v, notes %v", r.CPU, r.Notes)
		}
		for _, want := range []string{"== e2e", "logins/s", "share of the ceiling", "decision → IdP result", "step (ms)", "Redis commands per login"} {
			if !strings.Contains(out, want) {
				t.Errorf("the table lacks %q", want)
			}
		}
	})
	t.Run("poll/open", func(t *testing.T) {
		url, _ := startService(t, "", 0) // the contract's 10 pushes per 5 min
		r, _ := runBench(t, "-targets", url, "-credentials", "", "-client-id", "bench-idp", "-client-secret", e2eSecret,
			"-enrol", "idp", "-devices", "15", "-rate", "80", "-duration", "1s", "-ceiling-time", "200ms", "-metrics", "none")
		// 80 logins within the default 10 pushes per practitioner and 5 min.
		if r.ErrorsTotal != 0 || r.Logins != 80 || r.Push != "poll" || r.Mode != "open" || r.Rate != 80 {
			t.Fatalf("report: %+v", r)
		}
		if r.Steps[stepRead].Count != 0 || r.Steps[stepLearn].Count != 80 || r.Redis != nil || r.CPU != nil {
			t.Errorf("steps %+v redis %+v cpu %+v", r.Steps, r.Redis, r.CPU)
		}
	})
}
