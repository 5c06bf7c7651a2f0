package push

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/ecps-sante/ecps/push/fcmtest"
)

const testProject = "ecps-test"

// newTestFCM is the real SDK pointed at a fake, with no OAuth.
func newTestFCM(t testing.TB, fake *fcmtest.Server) *FCM {
	t.Helper()
	f, err := NewFCM(context.Background(), FCMOptions{ProjectID: testProject, Endpoint: fake.Endpoint()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.Close)
	return f
}

// The message is exactly the contract's, for Android and iOS in one
// messages:send; no OAuth token is fetched or sent with endpoint and no
// credentials file.
func TestFCMPayloadExact(t *testing.T) {
	fake := fcmtest.New(t, testProject)
	f := newTestFCM(t, fake)
	exp := time.Now().Add(95 * time.Second)
	job := Job{ChallengeID: "chl_AAAAAAAAAAAAAAAA", DeviceID: "dev_x", Token: "tok-android-1", ExpiresAt: exp}
	if r := f.Push(context.Background(), job, 90*time.Second+400*time.Millisecond); r.Outcome != Sent {
		t.Fatalf("push: %+v", r)
	}
	got := fake.Received()
	if len(got) != 1 {
		t.Fatalf("%d messages received", len(got))
	}
	var body map[string]any
	if err := json.Unmarshal(got[0].Body, &body); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"message": map[string]any{
		"token": "tok-android-1",
		"data":  map[string]any{"type": "challenge", "challenge_id": "chl_AAAAAAAAAAAAAAAA"},
		"android": map[string]any{
			"priority": "high",
			"ttl":      "90s",
		},
		"apns": map[string]any{
			"headers": map[string]any{
				"apns-priority":   "10",
				"apns-push-type":  "alert",
				"apns-expiration": strconv.FormatInt(exp.Unix(), 10),
			},
			"payload": map[string]any{"aps": map[string]any{
				"alert":           map[string]any{"loc-key": "ECPS_CHALLENGE"},
				"mutable-content": float64(1),
			}},
		},
	}}
	if !reflect.DeepEqual(body, want) {
		b, _ := json.MarshalIndent(body, "", "  ")
		t.Fatalf("message:\n%s", b)
	}
	for _, r := range fake.Requests() {
		if r.Authorization != "" {
			t.Fatalf("an Authorization header was sent: %q", r.Authorization)
		}
	}
}

// Every class of FCM answer is classified as the contract says, and an
// attempt is one HTTP request (the SDK's own retries are cut).
func TestFCMClassify(t *testing.T) {
	cases := []struct {
		name       string
		reply      fcmtest.Reply
		outcome    Outcome
		reason     string
		retryAfter time.Duration
	}{
		{"ok", fcmtest.OK(), Sent, "", 0},
		{"dead/unregistered", fcmtest.Unregistered(), DeadToken, "unregistered", 0},
		{"dead/sender_id_mismatch", fcmtest.SenderIDMismatch(), DeadToken, "sender_id_mismatch", 0},
		{"dead/invalid_token_message", fcmtest.InvalidToken(), DeadToken, "invalid_token", 0},
		{"dead/invalid_token_field", fcmtest.InvalidTokenField(), DeadToken, "invalid_token", 0},
		{"rejected/invalid_payload", fcmtest.InvalidPayload(), Rejected, "invalid_argument", 0},
		{"retry/quota", fcmtest.QuotaExceeded("7"), Retry, "quota", 7 * time.Second},
		{"retry/unavailable_retry_after", fcmtest.Unavailable("3"), Retry, "unavailable", 3 * time.Second},
		{"retry/unavailable", fcmtest.Unavailable(""), Retry, "unavailable", 0},
		{"retry/internal", fcmtest.Internal(), Retry, "internal", 0},
		{"retry/bad_gateway", fcmtest.BadGateway(), Retry, "http_5xx", 0},
		{"retry/429_without_code", fcmtest.Reply{Status: 429, Code: "RESOURCE_EXHAUSTED", RetryAfter: "2"}, Retry, "http_429", 2 * time.Second},
		{"auth/apns", fcmtest.ThirdPartyAuth(), AuthFailed, "apns_auth", 0},
		{"auth/unauthenticated", fcmtest.Unauthenticated(), AuthFailed, "credentials", 0},
		{"auth/permission_denied", fcmtest.PermissionDenied(), AuthFailed, "credentials", 0},
		{"retry/timeout", fcmtest.Reply{Delay: 2 * time.Second}, Retry, "timeout", 0},
	}
	fake := fcmtest.New(t, testProject)
	f := newTestFCM(t, fake)
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tok := "tok-" + strconv.Itoa(i)
			fake.Script(tok, c.reply)
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			defer cancel()
			start := time.Now()
			r := f.Push(ctx, Job{ChallengeID: "chl_x", DeviceID: "dev_x", Token: tok, ExpiresAt: time.Now().Add(time.Minute)}, time.Minute)
			if r.Outcome != c.outcome || r.Reason != c.reason || r.RetryAfter != c.retryAfter {
				t.Fatalf("got outcome %d reason %q retry-after %v (%v); want %d %q %v", r.Outcome, r.Reason, r.RetryAfter, r.Err,
					c.outcome, c.reason, c.retryAfter)
			}
			if el := time.Since(start); el > time.Second {
				t.Fatalf("attempt took %v", el)
			}
			time.Sleep(20 * time.Millisecond) // a request the SDK would retry at once would show by now
			if n := fake.RequestsFor(tok); n != 1 && c.reason != "timeout" {
				t.Fatalf("%d requests for one attempt", n)
			}
		})
	}

	t.Run("rejected/wrong_project", func(t *testing.T) {
		g, err := NewFCM(context.Background(), FCMOptions{ProjectID: "other-project", Endpoint: fake.Endpoint()})
		if err != nil {
			t.Fatal(err)
		}
		r := g.Push(context.Background(), Job{ChallengeID: "chl_x", Token: "t", ExpiresAt: time.Now().Add(time.Minute)}, time.Minute)
		if r.Outcome != Rejected {
			t.Fatalf("%+v", r)
		}
	})
	t.Run("retry/network", func(t *testing.T) {
		dead := fcmtest.Start(testProject)
		dead.Close() // connection refused
		g, err := NewFCM(context.Background(), FCMOptions{ProjectID: testProject, Endpoint: dead.Endpoint()})
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		r := g.Push(context.Background(), Job{ChallengeID: "chl_x", Token: "t", ExpiresAt: time.Now().Add(time.Minute)}, time.Minute)
		if r.Outcome != Retry || r.Reason != "network" {
			t.Fatalf("%+v", r)
		}
		if el := time.Since(start); el > 500*time.Millisecond {
			t.Fatalf("took %v: the SDK retried by itself", el)
		}
	})
}

// An error the SDK returns without any HTTP exchange (it refused the message
// itself) is a rejection, never retried; errors of the exchange are retried.
func TestClassifyLocalRefusal(t *testing.T) {
	cases := []struct {
		name    string
		err     error
		outcome Outcome
		reason  string
	}{
		{"sdk_validation", errors.New("exactly one of token, topic or condition must be specified"), Rejected, "invalid_message"},
		{"sdk_build", fmt.Errorf("json: unsupported value: %w", errors.New("NaN")), Rejected, "invalid_message"},
		{"url_error", &url.Error{Op: "Post", URL: "https://fcm.googleapis.com/v1", Err: errors.New("EOF")}, Retry, "network"},
		{"net_error", &net.OpError{Op: "read", Net: "tcp", Err: syscall.ECONNRESET}, Retry, "network"},
		{"canceled", fmt.Errorf("send: %w", context.Canceled), Retry, "network"},
		{"deadline", context.DeadlineExceeded, Retry, "timeout"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := classify(context.Background(), c.err, &attemptState{})
			if r.Outcome != c.outcome || r.Reason != c.reason || r.Err != c.err {
				t.Fatalf("got %+v; want outcome %d reason %q", r, c.outcome, c.reason)
			}
		})
	}

	// The real SDK refusing a message (no token): rejected, nothing sent.
	fake := fcmtest.New(t, testProject)
	f := newTestFCM(t, fake)
	r := f.Push(context.Background(), Job{ChallengeID: "chl_x", DeviceID: "dev_x", ExpiresAt: time.Now().Add(time.Minute)}, time.Minute)
	if r.Outcome != Rejected || r.Reason != "invalid_message" {
		t.Fatalf("SDK refusal: %+v", r)
	}
	if n := len(fake.Requests()); n != 0 {
		t.Fatalf("%d requests for a message the SDK refused", n)
	}
}

// serviceAccount writes a service account file whose token_uri is tokenURL.
func serviceAccount(t *testing.T, tokenURL string) string {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKCS8PrivateKey(key)
	sa := map[string]string{
		"type": "service_account", "project_id": testProject, "private_key_id": "k1",
		"private_key":  string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})),
		"client_email": "ecps@" + testProject + ".iam.gserviceaccount.com", "client_id": "1",
		"token_uri": tokenURL,
	}
	b, _ := json.Marshal(sa)
	path := filepath.Join(t.TempDir(), "sa.json")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// With a service account file, the SDK gets an OAuth token from the
// account's token endpoint and sends it; a refused account is an
// authentication failure, not a transient error.
func TestFCMServiceAccount(t *testing.T) {
	var refuse atomic.Bool
	var tokenCalls atomic.Int64
	tokens := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tokenCalls.Add(1)
		w.Header().Set("Content-Type", "application/json")
		if refuse.Load() {
			w.WriteHeader(http.StatusBadRequest)
			_, _ = w.Write([]byte(`{"error":"invalid_grant","error_description":"Invalid JWT Signature."}`))
			return
		}
		_, _ = w.Write([]byte(`{"access_token":"ya29.test-access-token","token_type":"Bearer","expires_in":3600}`))
	}))
	defer tokens.Close()
	fake := fcmtest.New(t, testProject)
	fake.RequireBearer("ya29.test-access-token")
	job := Job{ChallengeID: "chl_x", Token: "t", ExpiresAt: time.Now().Add(time.Minute)}

	f, err := NewFCM(context.Background(), FCMOptions{ProjectID: testProject, Endpoint: fake.Endpoint(),
		CredentialsFile: serviceAccount(t, tokens.URL)})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if r := f.Push(context.Background(), job, time.Minute); r.Outcome != Sent {
		t.Fatalf("with a good account: %+v", r)
	}
	if tokenCalls.Load() == 0 {
		t.Fatal("no OAuth token fetched")
	}

	refuse.Store(true)
	g, err := NewFCM(context.Background(), FCMOptions{ProjectID: testProject, Endpoint: fake.Endpoint(),
		CredentialsFile: serviceAccount(t, tokens.URL)})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	if r := g.Push(context.Background(), job, time.Minute); r.Outcome != AuthFailed || r.Reason != "credentials" {
		t.Fatalf("with a refused account: %+v", r)
	}

	if _, err := NewFCM(context.Background(), FCMOptions{ProjectID: testProject, CredentialsFile: "/nonexistent/sa.json"}); err == nil {
		t.Fatal("a missing credentials file was accepted")
	}
}
