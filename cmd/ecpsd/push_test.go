package main

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ecps-sante/ecps/push"
	"github.com/ecps-sante/ecps/push/fcmtest"
	"github.com/ecps-sante/ecps/redistest"
)

func fcmYAML(t *testing.T, fake *fcmtest.Server) string {
	return edit(t, `provider: "log"`, `provider: "fcm"
  fcm:
    project_id: "ecps-test"
    endpoint: "`+fake.Endpoint()+`"`)
}

// push.fcm keys are validated with the others, and overridable from the
// environment.
func TestConfigPushFCM(t *testing.T) {
	fake := fcmtest.New(t, "ecps-test")
	y := fcmYAML(t, fake)
	cfg, err := parseConfig([]byte(y), envOf(nil))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.PushTimeout != 10*time.Second || cfg.File.Push.FCM.Concurrency != 32 || cfg.File.Push.FCM.QueueShards != 16 {
		t.Fatalf("defaults: timeout %v concurrency %d queue_shards %d", cfg.PushTimeout, cfg.File.Push.FCM.Concurrency,
			cfg.File.Push.FCM.QueueShards)
	}
	cfg, err = parseConfig([]byte(y), envOf(map[string]string{"ECPS_PUSH_FCM_TIMEOUT": "3s", "ECPS_PUSH_FCM_CONCURRENCY": "8"}))
	if err != nil || cfg.PushTimeout != 3*time.Second || cfg.File.Push.FCM.Concurrency != 8 {
		t.Fatalf("env overrides: %v %v %d", err, cfg.PushTimeout, cfg.File.Push.FCM.Concurrency)
	}
	cfg, err = parseConfig([]byte(y), envOf(map[string]string{"ECPS_PUSH_FCM_QUEUE_SHARDS": "4"}))
	if err != nil || cfg.File.Push.FCM.QueueShards != 4 || pushReaders(cfg) != 1 {
		t.Fatalf("queue_shards from the environment: %v %d", err, cfg.File.Push.FCM.QueueShards)
	}
	_, err = parseConfig([]byte(y), envOf(map[string]string{"ECPS_PUSH_FCM_TIMEOUT": "2h", "ECPS_PUSH_FCM_CONCURRENCY": "0",
		"ECPS_PUSH_FCM_QUEUE_SHARDS": "0"}))
	if err == nil || !strings.Contains(err.Error(), "push.fcm.timeout") || !strings.Contains(err.Error(), "push.fcm.concurrency") ||
		!strings.Contains(err.Error(), "push.fcm.queue_shards") {
		t.Fatalf("bad values: %v", err)
	}
}

// With push.provider fcm, every replica runs the queue's workers: a queued
// push reaches FCM (here the fake, with no OAuth), /readyz tells the
// provider's health, and /metrics has the push metrics.
func TestServeWithFCM(t *testing.T) {
	srv := redistest.Start(t)
	fake := fcmtest.New(t, "ecps-test")
	s := startServe(t, configFor(t, srv.URL(), "")) // a log replica: /readyz has no push detail
	_, _, body := get(t, s.base+"/readyz")
	if strings.Contains(body, "push") {
		t.Fatalf("/readyz with the log provider: %s", body)
	}

	y := strings.Replace(fcmYAML(t, fake), `listen: "127.0.0.1:8080"`, `listen: "127.0.0.1:0"`, 1)
	y = strings.Replace(y, `"redis://127.0.0.1:6379/0"`, `"`+srv.URL()+`"`, 1)
	cfg, err := parseConfig([]byte(y), envOf(nil))
	if err != nil {
		t.Fatal(err)
	}
	s = startServe(t, cfg)
	code, _, body := get(t, s.base+"/readyz")
	var ready struct {
		Status string
		Push   push.Status
	}
	if err := json.Unmarshal([]byte(body), &ready); code != http.StatusOK || err != nil || ready.Status != "ready" ||
		ready.Push.Provider != "fcm" || ready.Push.Status != "ok" {
		t.Fatalf("/readyz = %d %s", code, body)
	}

	// A push queued by any replica (here a bare queue on the same Redis) is
	// sent by the server's workers.
	fake.SetDefault(fcmtest.Unauthenticated())
	opt, _ := redis.ParseURL(srv.URL())
	rdb := redis.NewClient(opt)
	defer rdb.Close()
	q := push.NewQueue(rdb, nil, nil, push.QueueOptions{KeyPrefix: cfg.File.Redis.KeyPrefix})
	job := push.Job{ChallengeID: "chl_AAAAAAAAAAAAAAAA", DeviceID: "dev_x", Token: "tok-1", ExpiresAt: time.Now().Add(time.Minute)}
	if err := q.Send(context.Background(), []push.Job{job}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, _, body = get(t, s.base+"/readyz")
		if strings.Contains(body, `"auth_error"`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz never showed the refused credentials: %s (requests %d)", body, len(fake.Requests()))
		}
		time.Sleep(50 * time.Millisecond)
	}
	fake.SetDefault(fcmtest.OK())
	if _, ok := fake.WaitReceived(1, 5*time.Second); !ok {
		t.Fatal("the push was not sent once FCM accepted the credentials")
	}
	for _, r := range fake.Requests() {
		if r.Authorization != "" {
			t.Fatal("an OAuth token was sent with endpoint and no credentials file")
		}
	}
	wants := []string{"ecps_push_sent_total 1", `ecps_push_attempt_errors_total{error="credentials"}`,
		"ecps_push_queue_depth", "ecps_push_send_duration_seconds_bucket", `ecps_push_auth_failing{kind="credentials"} 0`}
	for deadline := time.Now().Add(3 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		_, _, body = get(t, s.base+"/metrics")
		missing := ""
		for _, want := range wants {
			if !strings.Contains(body, want) {
				missing = want
			}
		}
		if missing == "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/metrics lacks %q", missing)
		}
	}
}

// A credentials file that cannot be read stops the server at start, naming
// the key.
func TestServeFCMBadCredentials(t *testing.T) {
	srv := redistest.Start(t)
	y := edit(t, `provider: "log"`, `provider: "fcm"
  fcm:
    project_id: "ecps-test"
    credentials_file: "/nonexistent/fcm.json"`)
	y = strings.Replace(y, `listen: "127.0.0.1:8080"`, `listen: "127.0.0.1:0"`, 1)
	y = strings.Replace(y, `"redis://127.0.0.1:6379/0"`, `"`+srv.URL()+`"`, 1)
	code, stderr := runConfig(t, y, nil)
	if code != exitFailed || !strings.Contains(stderr, "push.fcm") {
		t.Fatalf("exit %d, stderr:\n%s", code, stderr)
	}
}
