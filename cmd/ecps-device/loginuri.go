package main

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
)

// maxQRTokenLen bounds the t parameter of a login QR code.
const maxQRTokenLen = 256

// loginLink is what a QR login code (ecps://login?t=…&h=…) carries.
type loginLink struct {
	Token  string // t, base64url characters, as sent to the server
	Server string // h, absolute http(s) base URL without trailing slash
}

// parseLoginURI validates a QR login URI. Unknown query parameters are
// ignored (forward compatibility); t and h must each appear exactly once.
func parseLoginURI(s string) (loginLink, error) {
	s = strings.TrimSpace(s)
	u, err := url.Parse(s)
	if err != nil {
		return loginLink{}, errors.New("login URI: not a valid URI")
	}
	if u.Scheme != "ecps" {
		return loginLink{}, fmt.Errorf("login URI: scheme must be \"ecps\", got %q", clean(u.Scheme))
	}
	if u.Opaque != "" || !strings.EqualFold(u.Host, "login") {
		return loginLink{}, errors.New("login URI: must start with ecps://login?")
	}
	if u.User != nil {
		return loginLink{}, errors.New("login URI: must not carry user information")
	}
	if u.Path != "" && u.Path != "/" {
		return loginLink{}, errors.New("login URI: must have no path")
	}
	if u.Fragment != "" || strings.Contains(s, "#") {
		return loginLink{}, errors.New("login URI: must have no fragment")
	}
	q, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return loginLink{}, errors.New("login URI: malformed query")
	}
	t, err := singleParam(q, "login URI", "t")
	if err != nil {
		return loginLink{}, err
	}
	h, err := singleParam(q, "login URI", "h")
	if err != nil {
		return loginLink{}, err
	}
	if err := checkQRToken(t); err != nil {
		return loginLink{}, fmt.Errorf("login URI: t: %w", err)
	}
	server, err := checkServerURL(h)
	if err != nil {
		return loginLink{}, fmt.Errorf("login URI: h: %w", err)
	}
	return loginLink{Token: t, Server: server}, nil
}

// singleParam returns the only value of a required query parameter.
func singleParam(q url.Values, what, name string) (string, error) {
	v, ok := q[name]
	switch {
	case !ok || len(v) == 0 || v[0] == "":
		return "", fmt.Errorf("%s: parameter %q is missing", what, name)
	case len(v) > 1:
		return "", fmt.Errorf("%s: parameter %q appears more than once", what, name)
	}
	return v[0], nil
}

// checkQRToken accepts a non-empty token of base64url characters (no padding).
// The token is opaque to the phone: it is not decoded.
func checkQRToken(t string) error {
	if t == "" {
		return errors.New("empty")
	}
	if len(t) > maxQRTokenLen {
		return fmt.Errorf("longer than %d characters", maxQRTokenLen)
	}
	for _, r := range t {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return errors.New("not base64url without padding")
		}
	}
	return nil
}

// sameServer reports whether two base URLs (as checkServerURL returns them)
// name the same service: scheme and host compare case-insensitively, a
// default port equals its absence, the path compares exactly.
func sameServer(a, b string) bool {
	ua, err1 := url.Parse(a)
	ub, err2 := url.Parse(b)
	if err1 != nil || err2 != nil {
		return false
	}
	return strings.EqualFold(ua.Scheme, ub.Scheme) &&
		hostKey(ua) == hostKey(ub) &&
		strings.TrimRight(ua.EscapedPath(), "/") == strings.TrimRight(ub.EscapedPath(), "/")
}

func hostKey(u *url.URL) string {
	host, port := strings.ToLower(u.Hostname()), u.Port()
	if port == "" || (port == "443" && strings.EqualFold(u.Scheme, "https")) || (port == "80" && strings.EqualFold(u.Scheme, "http")) {
		return host
	}
	return net.JoinHostPort(host, port)
}
