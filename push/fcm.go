package push

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"cloud.google.com/go/auth"
	firebase "firebase.google.com/go/v4"
	"firebase.google.com/go/v4/errorutils"
	"firebase.google.com/go/v4/messaging"
	"golang.org/x/oauth2"
	"google.golang.org/api/option"
	htransport "google.golang.org/api/transport/http"
)

// Outcome is what one send attempt came to.
type Outcome int

// Outcomes of an attempt.
const (
	// Sent: the provider accepted the message.
	Sent Outcome = iota
	// Retry: a transient error (unavailable, internal, quota, 429, 5xx,
	// timeout, network); retried with backoff until the expiry.
	Retry
	// AuthFailed: the provider refused our credentials (the service account,
	// or the APNs key in Firebase); retried like Retry, and shown on /readyz.
	AuthFailed
	// DeadToken: the token is dead; it is cleared and never retried.
	DeadToken
	// Rejected: the provider refused this message for another reason (a
	// payload it does not accept, an unknown project), or the SDK refused it
	// before sending; not retried.
	Rejected
)

// Result is the classified result of one attempt.
type Result struct {
	Outcome Outcome
	// Reason names the error for metrics and logs: unavailable, internal,
	// quota, http_429, http_5xx, timeout, network, unregistered,
	// sender_id_mismatch, invalid_token, invalid_argument, invalid_message
	// (refused by the SDK itself, never sent), credentials, apns_auth, other.
	Reason string
	// RetryAfter is the provider's Retry-After, when it sent one.
	RetryAfter time.Duration
	Err        error
}

// Provider sends one push. ttl is the time left before the login expires;
// ctx carries the attempt's deadline.
type Provider interface {
	Push(ctx context.Context, job Job, ttl time.Duration) Result
}

// FCMOptions configure the FCM provider (config keys push.fcm.*).
type FCMOptions struct {
	ProjectID string
	// CredentialsFile is a service account JSON file; empty: Application
	// Default Credentials, or no OAuth at all when Endpoint is set.
	CredentialsFile string
	// Endpoint overrides the FCM API base URL (e.g. http://127.0.0.1:9099/v1).
	Endpoint string
}

// messagingScope is the OAuth scope of FCM's HTTP v1 API.
const messagingScope = "https://www.googleapis.com/auth/firebase.messaging"

// FCM sends pushes through Firebase Cloud Messaging's HTTP v1 API with the
// Firebase Admin SDK, one messages:send per device.
type FCM struct {
	client *messaging.Client
	http   *http.Client
}

// Close closes idle connections to FCM.
func (f *FCM) Close() { f.http.CloseIdleConnections() }

// NewFCM builds the FCM provider. Credentials are read (and Application
// Default Credentials looked up) here: a missing or malformed service
// account fails at start, not at the first push.
//
// The SDK retries network errors and 503 on its own (0, 1, 2, 4 s) with the
// message built for the first try. We want every attempt to carry the TTL
// left at that attempt, to honour a Retry-After longer than the attempt, and
// not to hold a sender while waiting, so the HTTP client that the SDK uses
// goes through attemptObserver, which ends the SDK's call at the first such
// answer and keeps it for classify: one attempt is one HTTP request.
func NewFCM(ctx context.Context, o FCMOptions) (*FCM, error) {
	if o.ProjectID == "" {
		return nil, errors.New("fcm: project_id is required")
	}
	httpOpts := []option.ClientOption{option.WithScopes(messagingScope), option.WithTelemetryDisabled()}
	switch {
	case o.CredentialsFile != "":
		httpOpts = append(httpOpts, option.WithAuthCredentialsFile(option.ServiceAccount, o.CredentialsFile))
	case o.Endpoint != "":
		httpOpts = append(httpOpts, option.WithoutAuthentication())
	}
	hc, _, err := htransport.NewClient(ctx, httpOpts...)
	if err != nil {
		return nil, fmt.Errorf("fcm credentials: %w", err)
	}
	next := hc.Transport
	if next == nil {
		next = http.DefaultTransport
	}
	observed := *hc
	observed.Transport = &attemptObserver{next: next}
	appOpts := []option.ClientOption{option.WithHTTPClient(&observed)}
	if o.Endpoint != "" {
		appOpts = append(appOpts, option.WithEndpoint(strings.TrimRight(o.Endpoint, "/")))
	}
	app, err := firebase.NewApp(ctx, &firebase.Config{ProjectID: o.ProjectID}, appOpts...)
	if err != nil {
		return nil, fmt.Errorf("firebase app: %w", err)
	}
	client, err := app.Messaging(ctx)
	if err != nil {
		return nil, fmt.Errorf("firebase messaging: %w", err)
	}
	return &FCM{client: client, http: &observed}, nil
}

// Push sends one message and classifies the answer.
func (f *FCM) Push(ctx context.Context, job Job, ttl time.Duration) Result {
	actx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	st := &attemptState{stop: cancel}
	_, err := f.client.Send(context.WithValue(actx, attemptKey{}, st), fcmMessage(job, ttl))
	return classify(ctx, err, st)
}

// fcmMessage is the contract's push: data {"type","challenge_id"} only;
// Android data-only, priority high, TTL the time left; APNs a generic
// localized alert (ECPS_CHALLENGE) that the app's notification extension
// completes with a signed read of the challenge, expiring with the login.
func fcmMessage(job Job, ttl time.Duration) *messaging.Message {
	ttl = ttl.Truncate(time.Second)
	return &messaging.Message{
		Token: job.Token,
		Data:  map[string]string{"type": "challenge", "challenge_id": job.ChallengeID},
		Android: &messaging.AndroidConfig{
			Priority: "high",
			TTL:      &ttl,
		},
		APNS: &messaging.APNSConfig{
			Headers: map[string]string{
				"apns-priority":   "10",
				"apns-push-type":  "alert",
				"apns-expiration": strconv.FormatInt(job.ExpiresAt.Unix(), 10),
			},
			Payload: &messaging.APNSPayload{Aps: &messaging.Aps{
				Alert:          &messaging.ApsAlert{LocKey: "ECPS_CHALLENGE"},
				MutableContent: true,
			}},
		},
	}
}

// ---- One attempt, one HTTP request ----

type attemptKey struct{}

// attemptState is what attemptObserver saw of an attempt it stopped.
type attemptState struct {
	stop context.CancelCauseFunc

	mu      sync.Mutex
	stopped bool
	status  int
	header  http.Header
	err     error
}

// errOneAttempt ends the SDK's call after the first request.
var errOneAttempt = errors.New("push: one request per attempt")

// attemptObserver ends the SDK's own retry loop: after a transport error or a
// 503 (the only answers the SDK retries by itself) it cancels the attempt's
// context, so that the SDK returns at once and classify reads what happened
// here. Other answers pass through untouched.
type attemptObserver struct{ next http.RoundTripper }

func (o *attemptObserver) RoundTrip(r *http.Request) (*http.Response, error) {
	st, _ := r.Context().Value(attemptKey{}).(*attemptState)
	resp, err := o.next.RoundTrip(r)
	if st == nil {
		return resp, err
	}
	switch {
	case err != nil:
		st.mu.Lock()
		st.stopped, st.err = true, err
		st.mu.Unlock()
		st.stop(errOneAttempt)
	case resp.StatusCode == http.StatusServiceUnavailable:
		// Read the small body now: the context is cancelled below.
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
		resp.Body = io.NopCloser(bytes.NewReader(body))
		st.mu.Lock()
		st.stopped, st.status, st.header = true, resp.StatusCode, resp.Header.Clone()
		st.mu.Unlock()
		st.stop(errOneAttempt)
	}
	return resp, err
}

// ---- Classification ----

// classify maps an attempt's error to its Outcome. It looks at the SDK's
// error values first (they are matched by type assertion, so err must not
// have been wrapped), then at what the observer saw, then at the status.
func classify(ctx context.Context, err error, st *attemptState) Result {
	if err == nil {
		return Result{Outcome: Sent}
	}
	res := func(o Outcome, reason string) Result {
		return Result{Outcome: o, Reason: reason, RetryAfter: retryAfter(errorutils.HTTPResponse(err)), Err: err}
	}
	switch {
	case messaging.IsUnregistered(err):
		return res(DeadToken, "unregistered")
	case messaging.IsSenderIDMismatch(err):
		return res(DeadToken, "sender_id_mismatch")
	case messaging.IsThirdPartyAuthError(err):
		return res(AuthFailed, "apns_auth")
	case messaging.IsQuotaExceeded(err):
		return res(Retry, "quota")
	case messaging.IsInvalidArgument(err) || errorutils.IsInvalidArgument(err):
		if aboutToken(err) {
			return res(DeadToken, "invalid_token")
		}
		return res(Rejected, "invalid_argument")
	case errorutils.IsUnauthenticated(err) || errorutils.IsPermissionDenied(err):
		return res(AuthFailed, "credentials")
	}

	st.mu.Lock()
	stopped, status, header, terr := st.stopped, st.status, st.header, st.err
	st.mu.Unlock()
	if stopped {
		switch {
		case status == http.StatusServiceUnavailable:
			return Result{Outcome: Retry, Reason: "unavailable", RetryAfter: parseRetryAfter(header.Get("Retry-After")), Err: err}
		case credentialError(terr):
			return Result{Outcome: AuthFailed, Reason: "credentials", Err: terr}
		case ctx.Err() != nil:
			return Result{Outcome: Retry, Reason: "timeout", Err: terr}
		default:
			return Result{Outcome: Retry, Reason: "network", Err: terr}
		}
	}

	switch {
	case messaging.IsUnavailable(err):
		return res(Retry, "unavailable")
	case messaging.IsInternal(err):
		return res(Retry, "internal")
	}
	if resp := errorutils.HTTPResponse(err); resp != nil {
		switch {
		case resp.StatusCode == http.StatusTooManyRequests:
			return res(Retry, "http_429")
		case resp.StatusCode >= 500:
			return res(Retry, "http_5xx")
		case resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden:
			return res(AuthFailed, "credentials")
		}
		return res(Rejected, "other")
	}
	if ctx.Err() != nil || errorutils.IsDeadlineExceeded(err) || errors.Is(err, context.DeadlineExceeded) {
		return res(Retry, "timeout")
	}
	if credentialError(err) {
		return res(AuthFailed, "credentials")
	}
	if exchangeFailed(err) {
		// No HTTP answer: the request did not get through.
		return res(Retry, "network")
	}
	// The SDK refused the message itself (its checks, or building the
	// request): no request was made, and a retry would fail alike.
	return res(Rejected, "invalid_message")
}

// exchangeFailed tells an error of the HTTP exchange (the network, a
// timeout, a cancelled context), which a retry may cure, from one the SDK
// returned without trying (the message failed its own checks). The SDK turns
// an exchange's error into a FirebaseError without a response, with code
// UNKNOWN, UNAVAILABLE or DEADLINE_EXCEEDED (its type is internal to the SDK,
// hence the codes).
func exchangeFailed(err error) bool {
	if errorutils.IsUnknown(err) || errorutils.IsUnavailable(err) || errorutils.IsDeadlineExceeded(err) {
		return true
	}
	var ue *url.Error
	var ne net.Error
	var errno syscall.Errno
	return errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) ||
		errors.As(err, &ue) || errors.As(err, &ne) || errors.As(err, &errno) ||
		errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF)
}

// aboutToken tells an INVALID_ARGUMENT about the registration token itself
// (the token is dead) from one about the payload (our bug: never clear a
// token for it).
func aboutToken(err error) bool {
	if strings.Contains(strings.ToLower(err.Error()), "not a valid fcm registration token") {
		return true
	}
	resp := errorutils.HTTPResponse(err)
	if resp == nil || resp.Body == nil {
		return false
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var e struct {
		Error struct {
			Message string `json:"message"`
			Details []struct {
				Type            string `json:"@type"`
				FieldViolations []struct {
					Field string `json:"field"`
				} `json:"fieldViolations"`
			} `json:"details"`
		} `json:"error"`
	}
	if json.Unmarshal(body, &e) != nil {
		return false
	}
	for _, d := range e.Error.Details {
		for _, v := range d.FieldViolations {
			if v.Field == "message.token" {
				return true
			}
		}
	}
	return false
}

// credentialError reports an OAuth token that could not be obtained with the
// configured credentials (revoked key, deleted service account).
func credentialError(err error) bool {
	if err == nil {
		return false
	}
	var ae *auth.Error
	var oe *oauth2.RetrieveError
	return errors.As(err, &ae) || errors.As(err, &oe)
}

func retryAfter(resp *http.Response) time.Duration {
	if resp == nil {
		return 0
	}
	return parseRetryAfter(resp.Header.Get("Retry-After"))
}

// parseRetryAfter reads seconds or an HTTP date.
func parseRetryAfter(v string) time.Duration {
	if v == "" {
		return 0
	}
	if s, err := strconv.Atoi(strings.TrimSpace(v)); err == nil && s >= 0 {
		return time.Duration(s) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		if d := time.Until(t); d > 0 {
			return d
		}
	}
	return 0
}
