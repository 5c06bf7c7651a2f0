package main

import (
	"net/url"
	"strings"
	"testing"
)

const (
	testSecret = "MDEyMzQ1Njc4OWFiY2RlZg" // 16 bytes, base64url without padding
	testServer = "https%3A%2F%2Fecps.example.fr"
)

// formatEnrolURI builds an enrol URI the way the server does.
func formatEnrolURI(l enrolLink) string {
	return "ecps://enrol?a=" + url.QueryEscape(l.ActivationID) +
		"&s=" + url.QueryEscape(l.Secret) +
		"&h=" + url.QueryEscape(l.Server)
}

func TestParseEnrolURIValid(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want enrolLink
	}{
		{"canonical", "ecps://enrol?a=act_123&s=" + testSecret + "&h=" + testServer,
			enrolLink{"act_123", testSecret, "https://ecps.example.fr"}},
		{"order and trailing slash", "ecps://enrol?h=https%3A%2F%2Fecps.example.fr%2F&s=" + testSecret + "&a=A-b.c~d",
			enrolLink{"A-b.c~d", testSecret, "https://ecps.example.fr"}},
		{"http port and path prefix", "ecps://enrol?a=x&s=" + testSecret + "&h=http%3A%2F%2F127.0.0.1%3A8080%2Fecps%2F",
			enrolLink{"x", testSecret, "http://127.0.0.1:8080/ecps"}},
		{"unescaped h", "ecps://enrol?a=x&s=" + testSecret + "&h=https://ecps.example.fr",
			enrolLink{"x", testSecret, "https://ecps.example.fr"}},
		{"unknown parameter ignored", "ecps://enrol?a=x&v=2&s=" + testSecret + "&h=" + testServer,
			enrolLink{"x", testSecret, "https://ecps.example.fr"}},
		{"upper-case scheme and host, spaces around", "  ECPS://ENROL/?a=x&s=" + testSecret + "&h=" + testServer + "\n",
			enrolLink{"x", testSecret, "https://ecps.example.fr"}},
		{"long secret", "ecps://enrol?a=x&s=" + strings.Repeat("A", 64) + "&h=" + testServer,
			enrolLink{"x", strings.Repeat("A", 64), "https://ecps.example.fr"}},
		{"ipv6 host", "ecps://enrol?a=x&s=" + testSecret + "&h=" + url.QueryEscape("http://[::1]:9000"),
			enrolLink{"x", testSecret, "http://[::1]:9000"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseEnrolURI(tc.in)
			if err != nil {
				t.Fatalf("parseEnrolURI: %v", err)
			}
			if got != tc.want {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
			again, err := parseEnrolURI(formatEnrolURI(got))
			if err != nil || again != got {
				t.Fatalf("round trip: %+v, %v", again, err)
			}
		})
	}
}

func TestParseEnrolURIInvalid(t *testing.T) {
	ok := "a=x&s=" + testSecret + "&h=" + testServer
	tests := []struct {
		name, in, wantErr string
	}{
		{"empty", "", "scheme"},
		{"not a URI", "ecps://enrol?%zz", "malformed query"},
		{"control character", "ecps://enrol?a=x\x00", "not a valid URI"},
		{"wrong scheme", "https://enrol?" + ok, "scheme"},
		{"no scheme", "enrol?" + ok, "scheme"},
		{"wrong host", "ecps://login?" + ok, "ecps://enrol?"},
		{"opaque", "ecps:enrol?" + ok, "ecps://enrol?"},
		{"port", "ecps://enrol:1?" + ok, "ecps://enrol?"},
		{"user info", "ecps://u@enrol?" + ok, "user information"},
		{"path", "ecps://enrol/x?" + ok, "no path"},
		{"fragment", "ecps://enrol?" + ok + "#f", "no fragment"},
		{"semicolon", "ecps://enrol?" + ok + ";x=1", "malformed query"},
		{"a missing", "ecps://enrol?s=" + testSecret + "&h=" + testServer, `"a" is missing`},
		{"a empty", "ecps://enrol?a=&s=" + testSecret + "&h=" + testServer, `"a" is missing`},
		{"a twice", "ecps://enrol?a=x&" + ok, `"a" appears more than once`},
		{"a bad characters", "ecps://enrol?a=x%2Fy&s=" + testSecret + "&h=" + testServer, "a: only letters"},
		{"a too long", "ecps://enrol?a=" + strings.Repeat("x", 201) + "&s=" + testSecret + "&h=" + testServer, "a: too long"},
		{"s missing", "ecps://enrol?a=x&h=" + testServer, `"s" is missing`},
		{"s twice", "ecps://enrol?s=" + testSecret + "&" + ok, `"s" appears more than once`},
		{"s padded", "ecps://enrol?a=x&s=" + testSecret + "%3D%3D&h=" + testServer, "base64url"},
		{"s standard alphabet", "ecps://enrol?a=x&s=MDEyMzQ1Njc4OWFiY2Rl/w&h=" + testServer, "base64url"},
		{"s non-canonical bits", "ecps://enrol?a=x&s=MDEyMzQ1Njc4OWFiY2RlZh&h=" + testServer, "base64url"},
		{"s too short", "ecps://enrol?a=x&s=MDEyMzQ1Njc4OWFiY2Rl&h=" + testServer, "at least 16"},
		{"s too long", "ecps://enrol?a=x&s=" + strings.Repeat("A", 513) + "&h=" + testServer, "s is too long"},
		{"h missing", "ecps://enrol?a=x&s=" + testSecret, `"h" is missing`},
		{"h twice", "ecps://enrol?h=" + testServer + "&" + ok, `"h" appears more than once`},
		{"h relative", "ecps://enrol?a=x&s=" + testSecret + "&h=%2Fapi", "absolute http"},
		{"h ftp", "ecps://enrol?a=x&s=" + testSecret + "&h=ftp%3A%2F%2Fx.fr", "absolute http"},
		{"h javascript", "ecps://enrol?a=x&s=" + testSecret + "&h=javascript%3Aalert(1)", "absolute http"},
		{"h no host", "ecps://enrol?a=x&s=" + testSecret + "&h=https%3A%2F%2F", "must have a host"},
		{"h user info", "ecps://enrol?a=x&s=" + testSecret + "&h=https%3A%2F%2Fu%3Ap%40x.fr", "user information"},
		{"h query", "ecps://enrol?a=x&s=" + testSecret + "&h=https%3A%2F%2Fx.fr%2F%3Fq%3D1", "no query"},
		{"h fragment", "ecps://enrol?a=x&s=" + testSecret + "&h=https%3A%2F%2Fx.fr%23f", "no query or fragment"},
		{"h space", "ecps://enrol?a=x&s=" + testSecret + "&h=https%3A%2F%2Fx.fr%2Fa%20b", "spaces"},
		{"h bad escape", "ecps://enrol?a=x&s=" + testSecret + "&h=https%3A%2F%2Fx.fr%2F%25zz", "not a valid URL"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseEnrolURI(tc.in)
			if err == nil {
				t.Fatalf("accepted: %+v", got)
			}
			if !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error %q, want it to contain %q", err, tc.wantErr)
			}
		})
	}
}

func FuzzParseEnrolURI(f *testing.F) {
	for _, s := range []string{
		"ecps://enrol?a=act_123&s=" + testSecret + "&h=" + testServer,
		"ecps://enrol?a=x&s=" + testSecret + "&h=http%3A%2F%2F127.0.0.1%3A8080%2Fecps%2F",
		"ecps://enrol?h=https://ecps.example.fr&s=" + testSecret + "&a=A-b.c~d",
		"ECPS://ENROL/?a=x&s=" + testSecret + "&h=" + url.QueryEscape("http://[::1]:9000/"),
		"ecps://enrol?a=x&s=" + testSecret + "&h=" + testServer + "&x=%zz",
		"ecps://enrol?a=x&a=y&s=" + testSecret + "&h=" + testServer,
		"ecps://enrol?a=x&s=" + testSecret + "%3D&h=" + testServer,
		"ecps://login?t=abc&h=" + testServer,
		"ecps:enrol?a=x",
		"https://ecps.example.fr/enrol",
		"ecps://enrol?a=x&s=" + testSecret + "&h=https%3A%2F%2F",
		"",
		"%",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		l, err := parseEnrolURI(s)
		if err != nil {
			return
		}
		if l.ActivationID == "" || l.Secret == "" || l.Server == "" {
			t.Fatalf("accepted with an empty field: %+v", l)
		}
		u, err := url.Parse(l.Server)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			t.Fatalf("accepted server %q: %v", l.Server, err)
		}
		if strings.HasSuffix(l.Server, "/") {
			t.Fatalf("server %q keeps a trailing slash", l.Server)
		}
		again, err := parseEnrolURI(formatEnrolURI(l))
		if err != nil {
			t.Fatalf("re-encoded %+v rejected: %v", l, err)
		}
		if again != l {
			t.Fatalf("round trip changed %+v into %+v", l, again)
		}
	})
}
