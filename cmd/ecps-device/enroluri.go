package main

import (
	"encoding/base64"
	"errors"
	"fmt"
	"net/url"
	"strings"
)

// Limits on enrol URI fields: generous, but they stop garbage early.
const (
	minSecretBytes     = 16 // 128 bits, as the contract requires
	maxSecretLen       = 512
	maxActivationIDLen = 200
	maxServerURLLen    = 2048
)

// enrolLink is what an enrolment QR code (ecps://enrol?a=…&s=…&h=…) carries.
type enrolLink struct {
	ActivationID string // a
	Secret       string // s, base64url without padding, as sent to the server
	Server       string // h, absolute http(s) base URL without trailing slash
}

// parseEnrolURI validates an enrolment URI. Unknown query parameters are
// ignored (forward compatibility); a, s and h must each appear exactly once.
func parseEnrolURI(s string) (enrolLink, error) {
	s = strings.TrimSpace(s)
	u, err := url.Parse(s)
	if err != nil {
		return enrolLink{}, errors.New("enrol URI: not a valid URI")
	}
	if u.Scheme != "ecps" {
		return enrolLink{}, fmt.Errorf("enrol URI: scheme must be \"ecps\", got %q", clean(u.Scheme))
	}
	if u.Opaque != "" || !strings.EqualFold(u.Host, "enrol") {
		return enrolLink{}, errors.New("enrol URI: must start with ecps://enrol?")
	}
	if u.User != nil {
		return enrolLink{}, errors.New("enrol URI: must not carry user information")
	}
	if u.Path != "" && u.Path != "/" {
		return enrolLink{}, errors.New("enrol URI: must have no path")
	}
	if u.Fragment != "" || strings.Contains(s, "#") {
		return enrolLink{}, errors.New("enrol URI: must have no fragment")
	}
	q, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return enrolLink{}, errors.New("enrol URI: malformed query")
	}
	a, err := single(q, "a")
	if err != nil {
		return enrolLink{}, err
	}
	secret, err := single(q, "s")
	if err != nil {
		return enrolLink{}, err
	}
	h, err := single(q, "h")
	if err != nil {
		return enrolLink{}, err
	}
	if err := checkActivationID(a); err != nil {
		return enrolLink{}, fmt.Errorf("enrol URI: a: %w", err)
	}
	if len(secret) > maxSecretLen {
		return enrolLink{}, errors.New("enrol URI: s is too long")
	}
	raw, err := base64.RawURLEncoding.Strict().DecodeString(secret)
	if err != nil {
		return enrolLink{}, errors.New("enrol URI: s is not base64url without padding")
	}
	if len(raw) < minSecretBytes {
		return enrolLink{}, fmt.Errorf("enrol URI: s holds %d bytes, want at least %d", len(raw), minSecretBytes)
	}
	server, err := checkServerURL(h)
	if err != nil {
		return enrolLink{}, fmt.Errorf("enrol URI: h: %w", err)
	}
	return enrolLink{ActivationID: a, Secret: secret, Server: server}, nil
}

// single returns the only value of a required query parameter.
func single(q url.Values, name string) (string, error) {
	v, ok := q[name]
	switch {
	case !ok || len(v) == 0 || v[0] == "":
		return "", fmt.Errorf("enrol URI: parameter %q is missing", name)
	case len(v) > 1:
		return "", fmt.Errorf("enrol URI: parameter %q appears more than once", name)
	}
	return v[0], nil
}

// checkActivationID accepts a non-empty id made of URL-unreserved characters.
func checkActivationID(a string) error {
	if a == "" {
		return errors.New("empty")
	}
	if len(a) > maxActivationIDLen {
		return errors.New("too long")
	}
	for _, r := range a {
		if !isUnreserved(r) {
			return errors.New("only letters, digits and - . _ ~ are allowed")
		}
	}
	return nil
}

func isUnreserved(r rune) bool {
	return r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' ||
		r == '-' || r == '.' || r == '_' || r == '~'
}

// checkServerURL validates a service base URL (absolute http or https, a host,
// no user info, query or fragment) and returns it without trailing slashes.
func checkServerURL(h string) (string, error) {
	if h == "" {
		return "", errors.New("empty")
	}
	if len(h) > maxServerURLLen {
		return "", errors.New("too long")
	}
	for _, r := range h {
		if r <= ' ' || r == 0x7f {
			return "", errors.New("contains spaces or control characters")
		}
	}
	u, err := url.Parse(h)
	if err != nil {
		return "", errors.New("not a valid URL")
	}
	if u.Scheme != "https" && u.Scheme != "http" {
		return "", errors.New("must be an absolute http or https URL")
	}
	if u.Opaque != "" || u.Host == "" || u.Hostname() == "" {
		return "", errors.New("must have a host")
	}
	if u.User != nil {
		return "", errors.New("must not carry user information")
	}
	if u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || strings.ContainsAny(h, "?#") {
		return "", errors.New("must have no query or fragment")
	}
	return strings.TrimRight(h, "/"), nil
}
