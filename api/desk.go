package api

// The enrolment desk page: an operator signs in with their API key, which is
// exchanged for a session cookie; the page's script then calls the desk's JSON
// routes (/api/v1/desk/...) with that cookie and the session's CSRF token
// (operatorAuth accepts both ways, see operatorBySession).
//
// Sessions live in Redis, one key per session (docs/redis.md), found from the
// SHA-256 of the cookie's value: a copy of Redis gives no usable cookie.
//
// Failed sign-ins are limited per client address (ratelimit.Failures, 10 a
// minute by default): over the limit, every sign-in from there is refused
// with 429, the right key too, until the oldest failure leaves the window.

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/redis/go-redis/v9"

	"github.com/ecps-sante/ecps/audit"
	"github.com/ecps-sante/ecps/challenge"
	"github.com/ecps-sante/ecps/token"
)

const (
	// deskIdle ends a session after 15 minutes without a request.
	deskIdle = 15 * time.Minute
	// deskMaxAge ends any session after 12 hours, active or not.
	deskMaxAge = 12 * time.Hour
	// csrfHeader carries the session's CSRF token on the page's changes.
	csrfHeader = "X-CSRF-Token"
	// csrfField carries it in the page's forms (sign-out).
	csrfField = "csrf_token"
	// sessionTokenBytes: the cookie holds 256 random bits.
	sessionTokenBytes = 32
)

// Errors of the cookie path of the desk's JSON routes.
var (
	errNoDeskSession = newError(http.StatusUnauthorized, "invalid_client", "desk session missing or expired: sign in again")
	errCSRF          = newError(http.StatusForbidden, "forbidden", "missing or wrong CSRF token")
	errCrossSite     = newError(http.StatusForbidden, "forbidden", "cross-origin request refused")
)

// errNoSession: no cookie, an unknown or an expired session.
var errNoSession = errors.New("no desk session")

// crossOrigin refuses cross-origin browser requests that change something,
// from Sec-Fetch-Site, or else from Origin compared with Host.
var crossOrigin = http.NewCrossOriginProtection()

// ---- the session store ----

// deskSessions keeps desk sessions in Redis.
type deskSessions struct {
	rdb    redis.UniversalClient
	prefix string
}

// deskSession is a signed-in operator's session.
type deskSession struct {
	Token    string // the cookie's value; only its SHA-256 is stored
	Operator string
	KeyFP    string // keyFingerprint of the operator's key at sign-in
	CSRF     string
	Created  time.Time
}

// keyFingerprint identifies an operator's configured key in a session
// without storing it: hex of the first 16 bytes of SHA-256 over KeySHA256.
// A session whose fingerprint no longer matches (the key was rotated) ends.
func keyFingerprint(keySHA256 [sha256.Size]byte) string {
	h := sha256.Sum256(keySHA256[:])
	return hex.EncodeToString(h[:16])
}

// key is the session's one key, on a hash tag of its own.
func (d *deskSessions) key(tok string) string {
	return d.prefix + "{desk:" + token.SHA256Hex(tok) + "}"
}

// create starts a session for an operator, with a new token and CSRF token.
func (d *deskSessions) create(ctx context.Context, op *Operator) (deskSession, error) {
	operator := op.Name
	sess := deskSession{Token: token.New(sessionTokenBytes), Operator: operator, KeyFP: keyFingerprint(op.KeySHA256),
		CSRF: token.New(sessionTokenBytes), Created: time.Now()}
	key := d.key(sess.Token)
	_, err := d.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.HSet(ctx, key, "op", operator, "kfp", sess.KeyFP, "csrf", sess.CSRF, "created_ms", sess.Created.UnixMilli())
		p.PExpire(ctx, key, deskIdle)
		return nil
	})
	if err != nil {
		return deskSession{}, fmt.Errorf("create desk session: %w", err)
	}
	return sess, nil
}

// get reads a session and restarts its idle timer. errNoSession when there
// is none (or it is too old).
func (d *deskSessions) get(ctx context.Context, tok string) (deskSession, error) {
	if len(tok) != 43 || !token.IsBase64URL(tok) {
		return deskSession{}, errNoSession
	}
	key := d.key(tok)
	p := d.rdb.Pipeline()
	read := p.HGetAll(ctx, key)
	p.PExpire(ctx, key, deskIdle)
	if _, err := p.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return deskSession{}, fmt.Errorf("read desk session: %w", err)
	}
	h := read.Val()
	if len(h) == 0 {
		return deskSession{}, errNoSession
	}
	ms, _ := strconv.ParseInt(h["created_ms"], 10, 64)
	sess := deskSession{Token: tok, Operator: h["op"], KeyFP: h["kfp"], CSRF: h["csrf"], Created: time.UnixMilli(ms)}
	if time.Since(sess.Created) > deskMaxAge || sess.CSRF == "" {
		_ = d.rdb.Del(ctx, key).Err() // best effort: it expires anyway
		return deskSession{}, errNoSession
	}
	return sess, nil
}

// delete ends a session.
func (d *deskSessions) delete(ctx context.Context, tok string) error {
	if err := d.rdb.Del(ctx, d.key(tok)).Err(); err != nil {
		return fmt.Errorf("delete desk session: %w", err)
	}
	return nil
}

// ---- the cookie ----

// cookieName: "__Host-" binds the cookie to this exact origin over HTTPS
// (Secure, Path=/, no Domain); dev mode runs on plain HTTP without it.
func (w *webUI) cookieName() string {
	if w.dev {
		return "ecps_desk"
	}
	return "__Host-ecps_desk"
}

func (w *webUI) setCookie(c *gin.Context, value string, maxAge int) {
	http.SetCookie(c.Writer, &http.Cookie{Name: w.cookieName(), Value: value, Path: "/", MaxAge: maxAge,
		Secure: !w.dev, HttpOnly: true, SameSite: http.SameSiteStrictMode})
}

func (w *webUI) clearCookie(c *gin.Context) { w.setCookie(c, "", -1) }

// sessionCookie returns the cookie's value, "" when none was sent.
func (w *webUI) sessionCookie(r *http.Request) string {
	ck, err := r.Cookie(w.cookieName())
	if err != nil {
		return ""
	}
	return ck.Value
}

// session returns the request's session and its operator; errNoSession when
// there is none, its operator is no longer configured, or the operator's key
// is no longer the one signed in with (a rotated key ends its sessions: the
// session is then deleted).
func (s *Server) session(c *gin.Context) (deskSession, *Operator, error) {
	tok := s.web.sessionCookie(c.Request)
	if tok == "" || s.web.sessions == nil {
		return deskSession{}, nil, errNoSession
	}
	sess, err := s.web.sessions.get(c.Request.Context(), tok)
	if err != nil {
		return deskSession{}, nil, err
	}
	for i := range s.operators {
		op := &s.operators[i]
		if op.Name != sess.Operator {
			continue
		}
		current := 0
		for _, h := range op.keyHashes() {
			current |= subtle.ConstantTimeCompare([]byte(sess.KeyFP), []byte(keyFingerprint(h)))
		}
		if current != 1 {
			_ = s.web.sessions.delete(c.Request.Context(), tok) // best effort: it expires anyway
			return deskSession{}, nil, errNoSession
		}
		return sess, op, nil
	}
	return deskSession{}, nil, errNoSession
}

func csrfEqual(presented, stored string) bool {
	return presented != "" && subtle.ConstantTimeCompare([]byte(presented), []byte(stored)) == 1
}

// operatorBySession authenticates a desk JSON request by the session cookie
// (operatorAuth calls it when there is no Authorization header). A change
// (any method but GET and HEAD) must also be same-origin and carry the
// session's CSRF token in X-CSRF-Token.
func (s *Server) operatorBySession(c *gin.Context) {
	sess, op, err := s.session(c)
	if err != nil {
		if errors.Is(err, errNoSession) {
			err = errNoDeskSession
		}
		s.writeError(c, err)
		return
	}
	if m := c.Request.Method; m != http.MethodGet && m != http.MethodHead {
		if crossOrigin.Check(c.Request) != nil {
			s.log.Info("desk: cross-origin request refused", "request_id", requestID(c), "operator", op.Name)
			s.writeError(c, errCrossSite)
			return
		}
		if !csrfEqual(c.GetHeader(csrfHeader), sess.CSRF) {
			s.log.Info("desk: CSRF token refused", "request_id", requestID(c), "operator", op.Name)
			s.writeError(c, errCSRF)
			return
		}
	}
	c.Set(ctxOperator, op)
	c.Next()
}

// ---- the pages ----

// signinView is the sign-in page's data.
type signinView struct {
	Error string // a message key, or ""
	Wait  string // after a refusal over the failure limit: when to try again
}

// deskView is the desk page's data.
type deskView struct {
	Operator string
	CSRF     string
}

// deskPage serves GET /desk: the desk when signed in, else the sign-in form.
func (s *Server) deskPage(c *gin.Context) {
	lang := pickLang(c.GetHeader("Accept-Language"))
	m := catalogue[lang]
	c.Header("Vary", "Cookie")
	sess, op, err := s.session(c)
	switch {
	case err == nil:
		s.render(c, http.StatusOK, cspDesk, "desk", lang, m["DeskTitle"], deskView{Operator: op.Name, CSRF: sess.CSRF})
	case errors.Is(err, errNoSession):
		v := signinView{}
		if s.web.sessionCookie(c.Request) != "" {
			s.web.clearCookie(c)
			v.Error = "SessionExpired"
		}
		s.render(c, http.StatusOK, cspDesk, "signin", lang, m["SignInTitle"], v)
	default:
		s.pageError(c, lang, err)
	}
}

// deskSignIn serves POST /desk/session: the operator key (form field "key")
// for a session cookie, then back to /desk.
func (s *Server) deskSignIn(c *gin.Context) {
	lang := pickLang(c.GetHeader("Accept-Language"))
	m := catalogue[lang]
	if crossOrigin.Check(c.Request) != nil {
		s.renderError(c, lang, http.StatusForbidden, "CrossSiteTitle", "CrossSiteText")
		return
	}
	if s.web.sessions == nil {
		s.renderError(c, lang, http.StatusServiceUnavailable, "UnavailableTitle", "UnavailableText")
		return
	}
	op := s.operatorForKey(strings.TrimSpace(c.PostForm("key")))
	addr := signinAddress(c.ClientIP())
	// The failure limit is asked whatever the key: over it, a right key is
	// refused as a wrong one is, so that guessing learns nothing.
	v, err := s.web.signins.Attempt(c.Request.Context(), addr, op == nil)
	if err != nil {
		s.pageError(c, lang, err)
		return
	}
	if v.Refused {
		s.signinRefused(c, lang, addr, v.RetryAfter)
		return
	}
	if op == nil {
		s.metrics.deskSignIns.WithLabelValues("wrong_key").Inc()
		s.log.Info("desk: sign-in refused", "request_id", requestID(c))
		if v.Reached {
			s.signinLimitReached(c, addr, v.RetryAfter)
		}
		s.render(c, http.StatusUnauthorized, cspDesk, "signin", lang, m["SignInTitle"], signinView{Error: "WrongKey"})
		return
	}
	s.metrics.deskSignIns.WithLabelValues("ok").Inc()
	sess, err := s.web.sessions.create(c.Request.Context(), op)
	if err != nil {
		s.pageError(c, lang, err)
		return
	}
	if old := s.web.sessionCookie(c.Request); old != "" {
		_ = s.web.sessions.delete(c.Request.Context(), old) // best effort: it would expire anyway
	}
	s.log.Info("desk: signed in", "request_id", requestID(c), "operator", op.Name)
	s.web.setCookie(c, sess.Token, 0)
	c.Header("Cache-Control", "no-store")
	c.Redirect(http.StatusSeeOther, "/desk")
}

// signinRefused answers a sign-in over the failure limit: 429 with
// Retry-After, as the sign-in form with a message saying when to try again,
// or as the contract's JSON error to a client that asks for JSON only.
func (s *Server) signinRefused(c *gin.Context, lang, addr string, retry time.Duration) {
	s.metrics.deskSignIns.WithLabelValues("refused").Inc()
	s.metrics.limitHits.WithLabelValues("desk_signin").Inc()
	s.log.Info("desk: sign-in over the failure limit", "request_id", requestID(c), "client_address", addr)
	secs := int64((retry + time.Second - 1) / time.Second)
	if wantsJSONOnly(c.GetHeader("Accept")) {
		e := newError(http.StatusTooManyRequests, "too_many_requests", "too many failed desk sign-ins from this address")
		e.RetryAfter = retry
		s.writeError(c, e)
		return
	}
	m := catalogue[lang]
	c.Header("Retry-After", strconv.FormatInt(secs, 10))
	s.render(c, http.StatusTooManyRequests, cspDesk, "signin", lang, m["SignInTitle"],
		signinView{Error: "TooManySignIns", Wait: fmt.Sprintf(m["SignInWait"], secs)})
}

// signinLimitReached audits the failure that reached the desk sign-in limit
// of an address (once per window and address: an attack cannot flood the
// audit trail). Never the key, right or wrong.
func (s *Server) signinLimitReached(c *gin.Context, addr string, retry time.Duration) {
	limit, window := s.web.signins.Limit(), s.web.signins.Window()
	s.log.Warn("desk: sign-in failure limit reached", "request_id", requestID(c), "client_address", addr,
		"failures", limit, "window", window.String())
	err := s.audit.Append(c.Request.Context(), audit.Entry{Time: time.Now().UTC().Truncate(time.Second),
		Event: challenge.EventLimitHit, Actor: audit.System,
		Details: map[string]any{"limit": "desk_signin", "route": "POST /desk/session", "client_address": addr,
			"failures": limit, "window_s": int64(window / time.Second), "retry_after_s": int64((retry + time.Second - 1) / time.Second)}})
	if err != nil {
		s.log.Warn("desk: sign-in limit not audited", "request_id", requestID(c), "err", err)
	}
}

// signinAddress is what desk sign-ins are limited by: the client's IPv4
// address, or the /64 network of an IPv6 one (what one subscriber gets).
// The client is who gin's trusted proxies say (trusted_proxies), else the
// peer.
func signinAddress(ip string) string {
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return "unknown"
	}
	a = a.Unmap().WithZone("")
	if a.Is6() {
		p, _ := a.Prefix(64)
		return p.String()
	}
	return a.String()
}

// wantsJSONOnly reports whether an Accept header asks for JSON and not HTML.
func wantsJSONOnly(accept string) bool {
	return strings.Contains(accept, "application/json") && !strings.Contains(accept, "text/html")
}

// deskSignOut serves POST /desk/signout (form field csrf_token): the session
// ends, the cookie is cleared.
func (s *Server) deskSignOut(c *gin.Context) {
	lang := pickLang(c.GetHeader("Accept-Language"))
	if crossOrigin.Check(c.Request) != nil {
		s.renderError(c, lang, http.StatusForbidden, "CrossSiteTitle", "CrossSiteText")
		return
	}
	sess, op, err := s.session(c)
	switch {
	case err == nil:
		if !csrfEqual(c.PostForm(csrfField), sess.CSRF) {
			s.renderError(c, lang, http.StatusForbidden, "CSRFTitle", "CSRFText")
			return
		}
		if err := s.web.sessions.delete(c.Request.Context(), sess.Token); err != nil {
			s.pageError(c, lang, err)
			return
		}
		s.log.Info("desk: signed out", "request_id", requestID(c), "operator", op.Name)
	case !errors.Is(err, errNoSession):
		s.pageError(c, lang, err)
		return
	}
	s.web.clearCookie(c)
	c.Header("Cache-Control", "no-store")
	c.Redirect(http.StatusSeeOther, "/desk")
}
