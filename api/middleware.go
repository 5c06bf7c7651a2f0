package api

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"runtime/debug"
	"strings"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/redis/go-redis/v9"

	"github.com/ecps-sante/ecps/audit"
	"github.com/ecps-sante/ecps/challenge"
	"github.com/ecps-sante/ecps/deviceproof"
	"github.com/ecps-sante/ecps/enrollment"
)

// Keys of values kept in the gin context.
const (
	ctxRequestID = "ecps.request_id"
	ctxBody      = "ecps.body"
	ctxClient    = "ecps.client"
	ctxOperator  = "ecps.operator"
	ctxDevice    = "ecps.device"
	ctxPrefetch  = "ecps.prefetch"
	ctxProof     = "ecps.proof"
)

// requestContext gives each request an id, and logs and counts it when done.
func (s *Server) requestContext(c *gin.Context) {
	start := time.Now()
	id := c.GetHeader("X-Request-Id")
	if !validRequestID(id) {
		b := make([]byte, 12)
		_, _ = rand.Read(b)
		id = base64.RawURLEncoding.EncodeToString(b)
	}
	c.Set(ctxRequestID, id)
	c.Header("X-Request-Id", id)
	c.Next()

	route := c.FullPath()
	if route == "" {
		route = "unmatched" // never the raw path: it may hold ids
	}
	status := c.Writer.Status()
	elapsed := time.Since(start)
	s.metrics.observeRequest(route, c.Request.Method, status, elapsed)
	// A line for every request cost 2.7 % of a replica's CPU under load
	// (docs/performance.md): answered requests are counted and timed by the
	// metrics, and logged at debug level (dev mode); refused and failed ones
	// (status 400 and above) keep their info line.
	level := slog.LevelDebug
	if status >= 400 {
		level = slog.LevelInfo
	}
	if s.log.Enabled(c.Request.Context(), level) {
		s.log.LogAttrs(c.Request.Context(), level, "request", slog.String("request_id", id),
			slog.String("method", c.Request.Method), slog.String("route", route), slog.Int("status", status),
			slog.Float64("duration_ms", float64(elapsed.Microseconds())/1000))
	}
}

func validRequestID(id string) bool {
	if id == "" || len(id) > 64 {
		return false
	}
	for i := 0; i < len(id); i++ {
		ch := id[i]
		if !(ch >= 'a' && ch <= 'z' || ch >= 'A' && ch <= 'Z' || ch >= '0' && ch <= '9' || ch == '-' || ch == '_' || ch == '.') {
			return false
		}
	}
	return true
}

func requestID(c *gin.Context) string { return c.GetString(ctxRequestID) }

// recovery turns a panic into the contract's 500, with the stack in the log
// only.
func (s *Server) recovery(c *gin.Context) {
	defer func() {
		r := recover()
		if r == nil {
			return
		}
		if r == http.ErrAbortHandler {
			panic(r)
		}
		s.log.Error("panic", "request_id", requestID(c), "route", c.FullPath(), "panic", r, "stack", string(debug.Stack()))
		if !c.Writer.Written() {
			c.AbortWithStatusJSON(errServer.Status, errServer)
		} else {
			c.Abort()
		}
	}()
	c.Next()
}

// bodyCap reads the body, at most MaxBody bytes, before any authentication:
// 413 comes first, and the device proof needs the exact bytes for bh.
func (s *Server) bodyCap(c *gin.Context) {
	if c.Request.ContentLength > MaxBody {
		s.writeError(c, errTooLarge)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(c.Writer, c.Request.Body, MaxBody))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			s.writeError(c, errTooLarge)
		} else {
			s.writeError(c, invalidRequest("could not read the request body"))
		}
		return
	}
	c.Set(ctxBody, body)
	c.Request.Body = io.NopCloser(bytes.NewReader(body))
	c.Next()
}

func requestBody(c *gin.Context) []byte {
	b, _ := c.Get(ctxBody)
	body, _ := b.([]byte)
	return body
}

// clientAuth authenticates an IdP client by HTTP Basic and checks a scope.
func (s *Server) clientAuth(scope string) gin.HandlerFunc {
	return func(c *gin.Context) {
		id, secret, ok := c.Request.BasicAuth()
		client := s.clients[id]
		// Compare against something even for an unknown id, so that timing does
		// not tell which ids exist.
		stored := [][32]byte{dummyHash}
		if client != nil {
			stored = append([][32]byte{client.SecretSHA256}, client.MoreSecretSHA256...)
		}
		match := false
		for _, h := range stored {
			if hashEqual(secret, h) {
				match = true
			}
		}
		if !ok || !match || client == nil {
			c.Header("WWW-Authenticate", `Basic realm="ecps"`)
			s.writeError(c, errBadClient)
			return
		}
		if !client.HasScope(scope) {
			s.writeError(c, errForbidden)
			return
		}
		if s.limiter != nil {
			if ok, retry := s.limiter.Allow(client.ID); !ok {
				s.clientLimitHit(c, client.ID)
				e := newError(http.StatusTooManyRequests, "too_many_requests", "client request rate over its limit")
				e.RetryAfter = retry
				s.writeError(c, e)
				return
			}
		}
		c.Set(ctxClient, client)
		c.Next()
	}
}

// clientLimitHit counts a client over its rate, and audits it at most once
// a second per client: an attack must not flood the audit trail.
func (s *Server) clientLimitHit(c *gin.Context, clientID string) {
	s.metrics.limitHits.WithLabelValues("client_rps").Inc()
	sec := time.Now().Unix()
	if last, ok := s.limitAudited.Load(clientID); ok && last.(int64) == sec {
		return
	}
	s.limitAudited.Store(clientID, sec)
	err := s.audit.Append(c.Request.Context(), audit.Entry{Time: time.Now().UTC().Truncate(time.Second),
		Event: challenge.EventLimitHit, Actor: audit.Actor{Type: audit.ActorClient, ID: clientID},
		Details: map[string]any{"limit": "client_rps"}})
	if err != nil {
		s.log.Warn("client rate limit not audited", "request_id", requestID(c), "err", err)
	}
}

var dummyHash = [32]byte{1}

// operatorAuth authenticates a desk operator by Bearer key or, for the desk
// page's script, by its session cookie (no Authorization header, a desk
// session cookie: operatorBySession, which also checks CSRF and origin).
func (s *Server) operatorAuth(c *gin.Context) {
	if c.GetHeader("Authorization") == "" && s.web.sessionCookie(c.Request) != "" {
		s.operatorBySession(c)
		return
	}
	key, ok := strings.CutPrefix(c.GetHeader("Authorization"), "Bearer ")
	found := s.operatorForKey(key)
	if !ok {
		found = nil
	}
	if found == nil {
		c.Header("WWW-Authenticate", `Bearer realm="ecps"`)
		s.writeError(c, errBadOperator)
		return
	}
	c.Set(ctxOperator, found)
	c.Next()
}

// operatorForKey returns the operator holding key, or nil. Every operator's
// hashes are compared, in constant time, whatever the key. While a key is
// rotated (several hashes), the operator returned is a copy whose KeySHA256
// is the hash that matched: a desk session opened with it records it.
func (s *Server) operatorForKey(key string) *Operator {
	var found *Operator
	for i := range s.operators {
		for _, h := range s.operators[i].keyHashes() {
			if hashEqual(key, h) && key != "" {
				op := s.operators[i]
				op.KeySHA256 = h
				found = &op
			}
		}
	}
	return found
}

// deviceAuth verifies the ECPS-Proof of every /api/v1/device/ request.
func (s *Server) deviceAuth(c *gin.Context) {
	compact, ok := strings.CutPrefix(c.GetHeader("Authorization"), "ECPS-Proof ")
	if !ok || compact == "" {
		s.writeError(c, &deviceproof.Error{Reason: deviceproof.ReasonMissing})
		return
	}
	ctx := c.Request.Context()
	proof, err := s.enrollment.VerifyRequest(ctx, compact, deviceproof.Request{
		Method: c.Request.Method, Path: c.Request.URL.Path, Body: requestBody(c)})
	if err == nil {
		if c.FullPath() == decisionRoute {
			// Checked in Redis by the decision itself, in its round trip
			// (challenge.Service.Respond); the handler passes it on.
			c.Set(ctxProof, proof)
		} else {
			err = proof.Check(ctx, s.prefetch(c))
		}
	}
	if err != nil {
		s.writeError(c, err)
		return
	}
	c.Set(ctxDevice, proof.Device)
	c.Next()
	if p := pendingProof(c); p != nil && !p.Ran() {
		// A handler on decisionRoute that did not pass its proof on: a bug.
		// The proof is checked now (its jti recorded) and the bug logged.
		s.log.Error("device proof left unchecked by the handler", "request_id", requestID(c), "route", c.FullPath())
		_ = proof.Check(context.WithoutCancel(ctx), nil)
	}
}

// decisionRoute is the route whose request proof its handler checks, in
// the decision's own round trip (routes: deviceDecisionPath).
const (
	deviceDecisionPath = "/challenges/:challenge_id/response"
	decisionRoute      = "/api/v1/device" + deviceDecisionPath
)

// pendingProof is the request proof the device middleware left to the
// handler (decisionRoute).
func pendingProof(c *gin.Context) challenge.ProofCheck {
	v, _ := c.Get(ctxProof)
	if p, ok := v.(*enrollment.Proof); ok {
		return p
	}
	return nil
}

// prefetch returns, for the phone's reads of its challenges, the read that
// rides on the proof check's pipeline (one round trip for both); the
// handler finds it under ctxPrefetch.
func (s *Server) prefetch(c *gin.Context) func(p redis.Pipeliner, subject string) {
	ctx := c.Request.Context()
	switch c.FullPath() {
	case "/api/v1/device/challenges":
		return func(p redis.Pipeliner, subject string) {
			c.Set(ctxPrefetch, s.challenges.PrefetchPending(ctx, p, subject))
		}
	case "/api/v1/device/challenges/:challenge_id":
		return func(p redis.Pipeliner, subject string) {
			c.Set(ctxPrefetch, s.challenges.PrefetchChallenge(ctx, p, subject, c.Param("challenge_id")))
		}
	}
	return nil
}

// prefetched is the read prefetch queued for this request, or nil.
func prefetched(c *gin.Context) *challenge.Prefetch {
	v, _ := c.Get(ctxPrefetch)
	pre, _ := v.(*challenge.Prefetch)
	return pre
}

// openAPIPath turns gin's ":name" segments into OpenAPI's "{name}".
func openAPIPath(p string) string {
	parts := strings.Split(p, "/")
	for i, part := range parts {
		if strings.HasPrefix(part, ":") {
			parts[i] = "{" + part[1:] + "}"
		}
	}
	return strings.Join(parts, "/")
}
