// Package fcmtest is a local fake of Firebase Cloud Messaging's HTTP v1 API
// (POST /v1/projects/{project}/messages:send) for tests and load tools: point
// the Firebase Admin SDK at Endpoint() with no authentication.
//
// It checks requests the way FCM does (path, project, method, JSON shape,
// known fields, exactly one target, a token, string data values, Android
// priority and TTL format, APNs headers as strings) and answers a malformed
// one with FCM's 400 INVALID_ARGUMENT. It records every accepted message,
// and can answer each error class FCM has (Unregistered, InvalidToken,
// QuotaExceeded, …), scripted per token or for the next requests, and can be
// slow.
package fcmtest

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// Reply is what the fake answers to one request.
type Reply struct {
	Status     int    // HTTP status; 0 or 200: success
	Code       string // google.rpc status, e.g. UNAVAILABLE
	FCMError   string // the FcmError detail's errorCode, e.g. UNREGISTERED; "" for none
	Message    string
	Fields     []string // google.rpc.BadRequest field violations
	RetryAfter string   // Retry-After header
	RawBody    string   // a non-JSON body (a proxy's 502 page)
	Delay      time.Duration
}

// OK is a success.
func OK() Reply { return Reply{} }

// Unregistered: the app was uninstalled or the token expired (404).
func Unregistered() Reply {
	return Reply{Status: 404, Code: "NOT_FOUND", FCMError: "UNREGISTERED", Message: "Requested entity was not found."}
}

// InvalidToken: the token is not a token at all (400, about message.token).
func InvalidToken() Reply {
	return Reply{Status: 400, Code: "INVALID_ARGUMENT", FCMError: "INVALID_ARGUMENT",
		Message: "The registration token is not a valid FCM registration token", Fields: []string{"message.token"}}
}

// InvalidTokenField: a field violation on message.token with another wording.
func InvalidTokenField() Reply {
	return Reply{Status: 400, Code: "INVALID_ARGUMENT", Message: "Request contains an invalid argument.",
		Fields: []string{"message.token"}}
}

// InvalidPayload: a 400 about the payload, not the token: the token must be kept.
func InvalidPayload() Reply {
	return Reply{Status: 400, Code: "INVALID_ARGUMENT", FCMError: "INVALID_ARGUMENT",
		Message: "Invalid value at 'message.android.ttl' (type.googleapis.com/google.protobuf.Duration)",
		Fields:  []string{"message.android.ttl"}}
}

// SenderIDMismatch: the token belongs to another Firebase project (403).
func SenderIDMismatch() Reply {
	return Reply{Status: 403, Code: "PERMISSION_DENIED", FCMError: "SENDER_ID_MISMATCH", Message: "SenderId mismatch"}
}

// QuotaExceeded: too many messages (429), with a Retry-After in seconds.
func QuotaExceeded(retryAfter string) Reply {
	return Reply{Status: 429, Code: "RESOURCE_EXHAUSTED", FCMError: "QUOTA_EXCEEDED",
		Message: "Quota exceeded for quota metric 'Messages'", RetryAfter: retryAfter}
}

// Unavailable: FCM overloaded (503), optionally with a Retry-After.
func Unavailable(retryAfter string) Reply {
	return Reply{Status: 503, Code: "UNAVAILABLE", FCMError: "UNAVAILABLE", Message: "The service is currently unavailable.",
		RetryAfter: retryAfter}
}

// Internal: an FCM server error (500).
func Internal() Reply {
	return Reply{Status: 500, Code: "INTERNAL", FCMError: "INTERNAL", Message: "Internal error encountered."}
}

// BadGateway: a proxy's 502 with an HTML body.
func BadGateway() Reply {
	return Reply{Status: 502, RawBody: "<html><body>502 Bad Gateway</body></html>"}
}

// ThirdPartyAuth: FCM could not authenticate to APNs (401).
func ThirdPartyAuth() Reply {
	return Reply{Status: 401, Code: "UNAUTHENTICATED", FCMError: "THIRD_PARTY_AUTH_ERROR",
		Message: "Auth error from APNS or Web Push Service"}
}

// Unauthenticated: the service account's OAuth token is refused (401).
func Unauthenticated() Reply {
	return Reply{Status: 401, Code: "UNAUTHENTICATED",
		Message: "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential."}
}

// PermissionDenied: the service account lacks the role (403).
func PermissionDenied() Reply {
	return Reply{Status: 403, Code: "PERMISSION_DENIED",
		Message: "Permission 'cloudmessaging.messages.create' denied on resource '//cloudresourcemanager.googleapis.com/projects/p' (or it may not exist)."}
}

// Received is one message FCM accepted.
type Received struct {
	Token   string
	Message map[string]any // the request's "message", decoded
	Body    []byte         // the whole request body
	At      time.Time
}

// Request is any request the fake answered.
type Request struct {
	Path          string
	Token         string
	Status        int
	Authorization string
	At            time.Time
}

// Server is the fake.
type Server struct {
	ProjectID string
	srv       *httptest.Server

	mu       sync.Mutex
	perToken map[string][]Reply
	next     []Reply
	def      Reply
	delay    time.Duration
	bearer   string
	received []Received
	requests []Request
	n        int
	inFlight int
	maxIn    int
	changed  chan struct{} // closed and replaced on each accepted message
}

// Start starts a fake for projectID on a loopback port.
func Start(projectID string) *Server {
	s := &Server{ProjectID: projectID, perToken: map[string][]Reply{}, changed: make(chan struct{})}
	s.srv = httptest.NewServer(http.HandlerFunc(s.serve))
	return s
}

// New starts a fake that stops when the test ends.
func New(t testing.TB, projectID string) *Server {
	s := Start(projectID)
	t.Cleanup(s.Close)
	return s
}

// Close stops the fake.
func (s *Server) Close() { s.srv.Close() }

// URL is the fake's base URL.
func (s *Server) URL() string { return s.srv.URL }

// Endpoint is the FCM API base URL to configure (push.fcm.endpoint).
func (s *Server) Endpoint() string { return s.srv.URL + "/v1" }

// Script queues replies for a token, used in order; then the default applies.
func (s *Server) Script(token string, replies ...Reply) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.perToken[token] = append(s.perToken[token], replies...)
}

// ScriptNext queues replies for the next requests, whatever their token
// (after a token's own script).
func (s *Server) ScriptNext(replies ...Reply) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.next = append(s.next, replies...)
}

// SetDefault sets the reply once scripts are used up (initially OK).
func (s *Server) SetDefault(r Reply) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.def = r
}

// SetDelay makes every answer wait d (a slow FCM).
func (s *Server) SetDelay(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.delay = d
}

// RequireBearer makes the fake refuse (401) requests without this OAuth
// access token; "" accepts any.
func (s *Server) RequireBearer(token string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.bearer = token
}

// Received returns the accepted messages so far.
func (s *Server) Received() []Received {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Received(nil), s.received...)
}

// Requests returns every request answered so far.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Request(nil), s.requests...)
}

// RequestsFor counts the requests for a token.
func (s *Server) RequestsFor(token string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, r := range s.requests {
		if r.Token == token {
			n++
		}
	}
	return n
}

// WaitReceived waits until n messages were accepted, at most timeout, and
// returns them all.
func (s *Server) WaitReceived(n int, timeout time.Duration) ([]Received, bool) {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		s.mu.Lock()
		got, ch := len(s.received), s.changed
		s.mu.Unlock()
		if got >= n {
			return s.Received(), true
		}
		select {
		case <-ch:
		case <-deadline.C:
			return s.Received(), false
		}
	}
}

var pathRE = regexp.MustCompile(`^/v1/projects/([^/]+)/messages:send$`)

// MaxInFlight is the most requests the fake has been answering at once.
func (s *Server) MaxInFlight() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.maxIn
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	delay, bearer := s.delay, s.bearer
	s.inFlight++
	s.maxIn = max(s.maxIn, s.inFlight)
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.inFlight--
		s.mu.Unlock()
	}()
	token, reply := "", Reply{}

	m := pathRE.FindStringSubmatch(r.URL.Path)
	switch {
	case m == nil:
		reply = Reply{Status: 404, Code: "NOT_FOUND", Message: "Not found: " + r.URL.Path}
		s.write(w, r, token, reply, delay)
		return
	case m[1] != s.ProjectID:
		reply = Reply{Status: 404, Code: "NOT_FOUND", Message: "Requested entity was not found."}
		s.write(w, r, token, reply, delay)
		return
	case r.Method != http.MethodPost:
		reply = Reply{Status: 405, Code: "INVALID_ARGUMENT", Message: "Method not allowed."}
		s.write(w, r, token, reply, delay)
		return
	case bearer != "" && r.Header.Get("Authorization") != "Bearer "+bearer:
		reply = Unauthenticated()
		s.write(w, r, token, reply, delay)
		return
	case !strings.HasPrefix(r.Header.Get("Content-Type"), "application/json"):
		reply = Reply{Status: 400, Code: "INVALID_ARGUMENT", Message: "Invalid Content-Type; want application/json."}
		s.write(w, r, token, reply, delay)
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		reply = Reply{Status: 400, Code: "INVALID_ARGUMENT", Message: "Cannot read the request."}
		s.write(w, r, token, reply, delay)
		return
	}
	msg, validateOnly, bad := check(body)
	if bad != nil {
		reply = *bad
		s.write(w, r, token, reply, delay)
		return
	}
	token, _ = msg["token"].(string)

	s.mu.Lock()
	switch {
	case len(s.perToken[token]) > 0:
		reply = s.perToken[token][0]
		s.perToken[token] = s.perToken[token][1:]
	case len(s.next) > 0:
		reply = s.next[0]
		s.next = s.next[1:]
	default:
		reply = s.def
	}
	s.mu.Unlock()
	if reply.Delay > delay {
		delay = reply.Delay
	}
	if statusOf(reply) != 200 {
		s.write(w, r, token, reply, delay)
		return
	}
	if !wait(r, delay) {
		s.mu.Lock()
		s.logRequest(r, token, 499)
		s.mu.Unlock()
		return // the client gave up: not delivered
	}
	s.mu.Lock()
	s.logRequest(r, token, 200)
	s.n++
	name := fmt.Sprintf("projects/%s/messages/%d", s.ProjectID, s.n)
	if !validateOnly {
		s.received = append(s.received, Received{Token: token, Message: msg, Body: body, At: time.Now()})
		close(s.changed)
		s.changed = make(chan struct{})
	}
	s.mu.Unlock()
	w.Header().Set("Content-Type", "application/json; charset=UTF-8")
	_ = json.NewEncoder(w).Encode(map[string]string{"name": name})
}

func statusOf(r Reply) int {
	if r.Status == 0 {
		return 200
	}
	return r.Status
}

func wait(r *http.Request, d time.Duration) bool {
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-r.Context().Done():
		return false
	}
}

// logRequest records a request; the caller holds s.mu.
func (s *Server) logRequest(r *http.Request, token string, status int) {
	s.requests = append(s.requests, Request{Path: r.URL.Path, Token: token, Status: status,
		Authorization: r.Header.Get("Authorization"), At: time.Now()})
}

func (s *Server) write(w http.ResponseWriter, r *http.Request, token string, reply Reply, delay time.Duration) {
	if reply.Delay > delay {
		delay = reply.Delay
	}
	ok := wait(r, delay)
	s.mu.Lock()
	if ok {
		s.logRequest(r, token, statusOf(reply))
	} else {
		s.logRequest(r, token, 499)
	}
	s.mu.Unlock()
	if !ok {
		return
	}
	if reply.RetryAfter != "" {
		w.Header().Set("Retry-After", reply.RetryAfter)
	}
	status := statusOf(reply)
	if reply.RawBody != "" {
		w.Header().Set("Content-Type", "text/html")
		w.WriteHeader(status)
		_, _ = io.WriteString(w, reply.RawBody)
		return
	}
	details := []any{}
	if reply.FCMError != "" {
		details = append(details, map[string]any{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": reply.FCMError})
	}
	if len(reply.Fields) > 0 {
		var v []map[string]string
		for _, f := range reply.Fields {
			v = append(v, map[string]string{"field": f, "description": reply.Message})
		}
		details = append(details, map[string]any{"@type": "type.googleapis.com/google.rpc.BadRequest", "fieldViolations": v})
	}
	w.Header().Set("Content-Type", "application/json; charset=UTF-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"error": map[string]any{
		"code": status, "message": reply.Message, "status": reply.Code, "details": details}})
}

// ---- Request checks, as FCM makes them ----

var (
	messageFields = set("name", "data", "notification", "android", "webpush", "apns", "fcm_options", "token", "topic", "condition")
	androidFields = set("collapse_key", "priority", "ttl", "restricted_package_name", "data", "notification", "fcm_options",
		"direct_boot_ok", "bandwidth_constrained_ok", "restricted_satellite_ok")
	apnsFields = set("headers", "payload", "fcm_options", "live_activity_token")
	ttlRE      = regexp.MustCompile(`^[0-9]+(\.[0-9]{1,9})?s$`)
)

func set(names ...string) map[string]bool {
	m := map[string]bool{}
	for _, n := range names {
		m[n] = true
	}
	return m
}

func invalid(field, format string, args ...any) *Reply {
	return &Reply{Status: 400, Code: "INVALID_ARGUMENT", FCMError: "INVALID_ARGUMENT",
		Message: fmt.Sprintf(format, args...), Fields: []string{field}}
}

// check validates a messages:send body; it returns the message, whether it
// is validate_only, and the error reply for a bad request.
func check(body []byte) (map[string]any, bool, *Reply) {
	var req map[string]json.RawMessage
	if err := json.Unmarshal(body, &req); err != nil {
		return nil, false, &Reply{Status: 400, Code: "INVALID_ARGUMENT", Message: "Invalid JSON payload received. " + err.Error()}
	}
	for k := range req {
		if k != "message" && k != "validate_only" && k != "validateOnly" {
			return nil, false, invalid(k, "Invalid JSON payload received. Unknown name %q: Cannot find field.", k)
		}
	}
	validateOnly := false
	if raw, ok := req["validate_only"]; ok {
		if json.Unmarshal(raw, &validateOnly) != nil {
			return nil, false, invalid("validate_only", "Invalid value at 'validate_only' (TYPE_BOOL)")
		}
	}
	var msg map[string]any
	if raw, ok := req["message"]; !ok || json.Unmarshal(raw, &msg) != nil || msg == nil {
		return nil, false, invalid("message", "Request contains an invalid argument: message is required.")
	}
	for k := range msg {
		if !messageFields[k] {
			return nil, false, invalid("message."+k, "Invalid JSON payload received. Unknown name %q at 'message': Cannot find field.", k)
		}
	}
	targets := 0
	for _, k := range []string{"token", "topic", "condition"} {
		if v, ok := msg[k]; ok {
			s, isStr := v.(string)
			if !isStr {
				return nil, false, invalid("message."+k, "Invalid value at 'message.%s' (TYPE_STRING)", k)
			}
			if s != "" {
				targets++
			}
		}
	}
	if targets != 1 {
		return nil, false, invalid("message", "Recipient of the message is not set.")
	}
	if _, ok := msg["token"]; !ok {
		return nil, false, invalid("message.token", "This fake only serves token messages.")
	}
	if d, ok := msg["data"]; ok {
		dm, isMap := d.(map[string]any)
		if !isMap {
			return nil, false, invalid("message.data", "Invalid value at 'message.data'")
		}
		for k, v := range dm {
			if _, isStr := v.(string); !isStr {
				return nil, false, invalid("message.data["+k+"]", "Invalid value at 'message.data[%s]' (TYPE_STRING)", k)
			}
			if k == "from" || k == "notification" || k == "message_type" || strings.HasPrefix(k, "google.") || strings.HasPrefix(k, "gcm.") {
				return nil, false, invalid("message.data", "Invalid data payload key: %s", k)
			}
		}
	}
	if a, ok := msg["android"]; ok {
		am, isMap := a.(map[string]any)
		if !isMap {
			return nil, false, invalid("message.android", "Invalid value at 'message.android'")
		}
		for k := range am {
			if !androidFields[k] {
				return nil, false, invalid("message.android."+k, "Unknown name %q at 'message.android': Cannot find field.", k)
			}
		}
		if p, ok := am["priority"]; ok {
			ps, _ := p.(string)
			if u := strings.ToUpper(ps); u != "NORMAL" && u != "HIGH" {
				return nil, false, invalid("message.android.priority", "Invalid value at 'message.android.priority'")
			}
		}
		if t, ok := am["ttl"]; ok {
			ts, _ := t.(string)
			if !ttlRE.MatchString(ts) {
				return nil, false, invalid("message.android.ttl", "Invalid value at 'message.android.ttl' (type.googleapis.com/google.protobuf.Duration)")
			}
		}
	}
	if a, ok := msg["apns"]; ok {
		am, isMap := a.(map[string]any)
		if !isMap {
			return nil, false, invalid("message.apns", "Invalid value at 'message.apns'")
		}
		for k := range am {
			if !apnsFields[k] {
				return nil, false, invalid("message.apns."+k, "Unknown name %q at 'message.apns': Cannot find field.", k)
			}
		}
		if h, ok := am["headers"]; ok {
			hm, isMap := h.(map[string]any)
			if !isMap {
				return nil, false, invalid("message.apns.headers", "Invalid value at 'message.apns.headers'")
			}
			for k, v := range hm {
				if _, isStr := v.(string); !isStr {
					return nil, false, invalid("message.apns.headers["+k+"]", "Invalid value at 'message.apns.headers[%s]' (TYPE_STRING)", k)
				}
			}
		}
		if p, ok := am["payload"]; ok {
			pm, isMap := p.(map[string]any)
			if !isMap {
				return nil, false, invalid("message.apns.payload", "Invalid value at 'message.apns.payload'")
			}
			if aps, ok := pm["aps"]; ok {
				if _, isMap := aps.(map[string]any); !isMap {
					return nil, false, invalid("message.apns.payload", "aps must be a dictionary")
				}
			}
		}
	}
	return msg, validateOnly, nil
}
