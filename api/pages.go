package api

// The HTML face of the service: the QR login page (/login/{login_id}) and the
// enrolment desk (/desk, desk.go). Templates and assets are embedded; nothing
// comes from another origin. Every HTML answer carries the contract's security
// headers (securityHeaders).

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/ecps-sante/ecps/challenge"
	"github.com/ecps-sante/ecps/ratelimit"
)

//go:embed web
var webFiles embed.FS

// webUI holds what the pages need: parsed templates, assets, desk sessions.
type webUI struct {
	pages    map[string]*template.Template
	assets   map[string]webAsset
	version  string // of the assets, appended to their URLs as ?v=
	dev      bool
	sessions *deskSessions // nil: no Redis, no desk sign-in
	// signins limits failed desk sign-ins per client address (with sessions).
	signins *ratelimit.Failures
}

type webAsset struct {
	body        []byte
	contentType string
}

var assetTypes = map[string]string{
	".css": "text/css; charset=utf-8",
	".js":  "text/javascript; charset=utf-8",
	".svg": "image/svg+xml",
}

// pageNames are the templates under web/templates, each executed with layout.html.
var pageNames = []string{"login", "result", "error", "signin", "desk"}

// newWebUI parses the embedded templates and reads the assets. They are part
// of the binary: a parse error is a programming error (and a test failure).
func newWebUI(opts Options) *webUI {
	w := &webUI{pages: map[string]*template.Template{}, assets: map[string]webAsset{}, dev: opts.Dev}
	if opts.Redis != nil {
		w.sessions = &deskSessions{rdb: opts.Redis, prefix: opts.KeyPrefix}
		w.signins = ratelimit.NewFailures(opts.Redis, opts.KeyPrefix, "desk-signin",
			ratelimit.FailuresOptions{Limit: opts.DeskSignInFailures, Window: opts.DeskSignInWindow})
	}
	for _, name := range pageNames {
		w.pages[name] = template.Must(template.New(name).Option("missingkey=error").
			ParseFS(webFiles, "web/templates/layout.html", "web/templates/"+name+".html"))
	}
	entries, err := webFiles.ReadDir("web/static")
	if err != nil {
		panic(err)
	}
	h := sha256.New()
	for _, e := range entries {
		body, err := webFiles.ReadFile("web/static/" + e.Name())
		if err != nil {
			panic(err)
		}
		ct, ok := assetTypes[path.Ext(e.Name())]
		if !ok {
			panic("api/web/static: no content type for " + e.Name())
		}
		w.assets[e.Name()] = webAsset{body: body, contentType: ct}
		h.Write([]byte(e.Name()))
		h.Write(body)
	}
	w.version = hex.EncodeToString(h.Sum(nil))[:12]
	return w
}

// pageRoutes lists the routes of the HTML pages and their assets.
func (s *Server) pageRoutes(e *gin.Engine) {
	e.GET("/login/:login_id", s.loginPage)
	e.GET("/desk", s.deskPage)
	e.POST("/desk/session", s.deskSignIn)
	e.POST("/desk/signout", s.deskSignOut)
	e.GET("/assets/:name", s.asset)
}

// noRoute answers a path that matches no route: the login page's friendly
// HTML 404 for what a browser can reach under /login/ (an id with an encoded
// "/" or markup, extra segments), the JSON 404 everywhere else.
func (s *Server) noRoute(c *gin.Context) {
	p, m := c.Request.URL.Path, c.Request.Method
	if (m == http.MethodGet || m == http.MethodHead) && (p == "/login" || strings.HasPrefix(p, "/login/")) {
		s.renderError(c, pickLang(c.GetHeader("Accept-Language")), http.StatusNotFound, "LoginNotFoundTitle", "LoginNotFoundText")
		return
	}
	s.writeError(c, errNotFound)
}

// ---- rendering ----

// pageData is what every template gets.
type pageData struct {
	Lang    string
	M       map[string]string // the message catalogue of Lang
	Title   string
	Version string // asset version
	Page    any    // the page's own data
}

// cspFor builds the Content-Security-Policy of a page: scripts and styles
// from our own files only (no inline code, no 'unsafe-inline'), nothing
// embeddable, never framed.
func cspFor(imgSrc, formAction string) string {
	return "default-src 'none'; script-src 'self'; style-src 'self'; img-src " + imgSrc +
		"; connect-src 'self'; form-action " + formAction +
		"; base-uri 'none'; object-src 'none'; frame-ancestors 'none'"
}

var (
	// The login page and the error pages: no form, the QR code from /login/….
	cspLogin = cspFor("'self'", "'none'")
	// The desk: its forms post to itself; the activation QR code comes in the
	// JSON answer and is shown through a blob: URL made by desk.js.
	cspDesk = cspFor("'self' blob:", "'self'")
)

// securityHeaders are sent with every HTML page.
func securityHeaders(h http.Header, csp string) {
	h.Set("Content-Security-Policy", csp)
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cross-Origin-Opener-Policy", "same-origin")
	h.Add("Vary", "Accept-Language")
}

// render executes a page into a buffer first, so that a template error never
// sends half a page.
func (s *Server) render(c *gin.Context, status int, csp, page, lang, title string, data any) {
	var buf bytes.Buffer
	d := pageData{Lang: lang, M: catalogue[lang], Title: title, Version: s.web.version, Page: data}
	if err := s.web.pages[page].ExecuteTemplate(&buf, "layout", d); err != nil {
		s.log.Error("page template", "request_id", requestID(c), "page", page, "err", err)
		securityHeaders(c.Writer.Header(), csp) // even the JSON 500 of a page gets them
		s.writeError(c, errServer)
		return
	}
	securityHeaders(c.Writer.Header(), csp)
	c.Header("Content-Language", lang)
	c.Data(status, "text/html; charset=utf-8", buf.Bytes())
}

// errorView is the page of an error: a title and a sentence, no detail.
type errorView struct {
	Status  int
	Heading string
	Text    string
}

// renderError answers an HTML error page. Server-side failures are logged
// with their cause; the page never shows it.
func (s *Server) renderError(c *gin.Context, lang string, status int, heading, text string) {
	m := catalogue[lang]
	s.render(c, status, cspLogin, "error", lang, m[heading], errorView{Status: status, Heading: m[heading], Text: m[text]})
}

// pageError renders err as an HTML page: the HTML twin of writeError.
func (s *Server) pageError(c *gin.Context, lang string, err error) {
	e := toError(err)
	switch {
	case e.Status == http.StatusNotFound:
		s.renderError(c, lang, http.StatusNotFound, "NotFoundTitle", "NotFoundText")
	case e.Status == http.StatusServiceUnavailable:
		s.log.Warn("storage unavailable", "request_id", requestID(c), "route", c.FullPath(), "err", err)
		s.renderError(c, lang, http.StatusServiceUnavailable, "UnavailableTitle", "UnavailableText")
	default:
		s.log.Error("page failed", "request_id", requestID(c), "route", c.FullPath(), "err", err)
		s.renderError(c, lang, http.StatusInternalServerError, "ServerErrorTitle", "ServerErrorText")
	}
}

// ---- the QR login page ----

// loginView is the login page's data.
type loginView struct {
	ID          string
	ClientName  string
	Number      string
	Status      string // pending | claimed
	RedirectURI string
	// QRExpiresAt is the current QR token's end as /state gives it
	// (qr_expires_at): the script fetches qr.png again when /state's changes.
	QRExpiresAt string
	// RefreshSeconds: without JavaScript the page reloads when the next
	// token becomes the current one (or, with none, when the login expires).
	RefreshSeconds int64
	ExpiresInMS    int64
	Remaining      string // m:ss, for the first paint and without JavaScript
}

// resultView is the page of an ended login (410).
type resultView struct {
	Status     string // approved | denied | expired | cancelled
	Heading    string
	Text       string
	ClientName string
	Continue   string // redirect_uri?login_id=…&status=…, or ""
}

// loginPage serves GET /login/{login_id}: the requesting service, the
// verification number, the rotating QR code and the live status. An unknown
// login is a 404 page, an ended one a 410 page.
func (s *Server) loginPage(c *gin.Context) {
	lang := pickLang(c.GetHeader("Accept-Language"))
	m := catalogue[lang]
	id := c.Param("login_id")
	st, err := s.challenges.Login(c.Request.Context(), id)
	if errors.Is(err, challenge.ErrLoginNotFound) {
		s.renderError(c, lang, http.StatusNotFound, "LoginNotFoundTitle", "LoginNotFoundText")
		return
	}
	if err != nil {
		s.pageError(c, lang, err)
		return
	}
	if st.Status != "pending" && st.Status != "claimed" {
		v := resultView{Status: st.Status, Heading: m["Result_"+st.Status], Text: m["ResultText_"+st.Status],
			ClientName: st.ClientName}
		if st.RedirectURI != "" {
			v.Continue = resultURL(st.RedirectURI, id, st.Status)
		}
		s.render(c, http.StatusGone, cspLogin, "result", lang, v.Heading, v)
		return
	}
	now := s.challenges.Now()
	left := max(st.ExpiresAt.Sub(now), 0)
	v := loginView{ID: id, ClientName: st.ClientName, Number: st.VerificationNumber, Status: st.Status,
		RedirectURI: st.RedirectURI, ExpiresInMS: left.Milliseconds(), Remaining: minSec(left),
		RefreshSeconds: ceilSeconds(min(left, claimedRefresh))}
	if st.QRExpiresAt != nil {
		v.QRExpiresAt = st.QRExpiresAt.Format(time.RFC3339Nano)
		v.RefreshSeconds = ceilSeconds(st.NextQRAt.Sub(now))
	}
	s.render(c, http.StatusOK, cspLogin, "login", lang, m["LoginTitle"], v)
}

// claimedRefresh is how often a claimed login's page reloads without
// JavaScript, to show the decision soon.
const claimedRefresh = 10 * time.Second

// ceilSeconds is d in whole seconds, rounded up, at least 1: a page reloaded
// after it is past d.
func ceilSeconds(d time.Duration) int64 { return max(int64((d+time.Second-1)/time.Second), 1) }

// resultURL is where a login page goes when the login ends.
func resultURL(redirectURI, loginID, status string) string {
	u, err := url.Parse(redirectURI)
	if err != nil {
		return ""
	}
	q := u.Query()
	q.Set("login_id", loginID)
	q.Set("status", status)
	u.RawQuery = q.Encode()
	return u.String()
}

// minSec formats a duration left as m:ss, rounded up.
func minSec(d time.Duration) string {
	sec := int64((d + time.Second - 1) / time.Second)
	return fmt.Sprintf("%d:%02d", sec/60, sec%60)
}

// ---- assets ----

// asset serves an embedded CSS, JS or SVG file. The pages name them with
// ?v=<version>, so that a new release is never mixed with a cached old file.
func (s *Server) asset(c *gin.Context) {
	a, ok := s.web.assets[c.Param("name")]
	if !ok {
		s.writeError(c, errNotFound)
		return
	}
	c.Header("X-Content-Type-Options", "nosniff")
	c.Header("Cache-Control", "public, max-age=3600")
	c.Data(http.StatusOK, a.contentType, a.body)
}

// ---- language ----

// pickLang chooses French or English from Accept-Language: the one with the
// highest weight, French when neither is asked for.
func pickLang(header string) string {
	best, bestQ := "fr", 0.0
	for _, part := range strings.Split(header, ",") {
		tag, params, _ := strings.Cut(part, ";")
		q := 1.0
		for _, p := range strings.Split(params, ";") {
			if v, ok := strings.CutPrefix(strings.TrimSpace(p), "q="); ok {
				f, err := strconv.ParseFloat(v, 64)
				if err != nil {
					f = 0
				}
				q = f
			}
		}
		primary, _, _ := strings.Cut(strings.ToLower(strings.TrimSpace(tag)), "-")
		if (primary == "fr" || primary == "en") && q > bestQ {
			best, bestQ = primary, q
		}
	}
	return best
}
