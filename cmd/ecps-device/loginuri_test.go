package main

import (
	"net/url"
	"strings"
	"testing"
)

const testQRToken = "q1W2e3R4t5Y6u7I8o9P0-_aSdFgHjKl" // base64url, as the server mints it

// formatLoginURI builds a login URI the way the server's QR code does.
func formatLoginURI(l loginLink) string {
	return "ecps://login?t=" + url.QueryEscape(l.Token) + "&h=" + url.QueryEscape(l.Server)
}

func TestParseLoginURIValid(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want loginLink
	}{
		{"canonical", "ecps://login?t=" + testQRToken + "&h=" + testServer,
			loginLink{testQRToken, "https://ecps.example.fr"}},
		{"order and trailing slash", "ecps://login?h=https%3A%2F%2Fecps.example.fr%2F&t=abc",
			loginLink{"abc", "https://ecps.example.fr"}},
		{"http port and path prefix", "ecps://login?t=abc&h=http%3A%2F%2F127.0.0.1%3A8080%2Fecps%2F",
			loginLink{"abc", "http://127.0.0.1:8080/ecps"}},
		{"unescaped h", "ecps://login?t=abc&h=https://ecps.example.fr",
			loginLink{"abc", "https://ecps.example.fr"}},
		{"unknown parameter ignored", "ecps://login?v=2&t=abc&h=" + testServer,
			loginLink{"abc", "https://ecps.example.fr"}},
		{"upper-case scheme and host, spaces around", "  ECPS://LOGIN/?t=abc&h=" + testServer + "\r\n",
			loginLink{"abc", "https://ecps.example.fr"}},
		{"longest token", "ecps://login?t=" + strings.Repeat("A", 256) + "&h=" + testServer,
			loginLink{strings.Repeat("A", 256), "https://ecps.example.fr"}},
		{"ipv6 host", "ecps://login?t=abc&h=" + url.QueryEscape("http://[::1]:9000"),
			loginLink{"abc", "http://[::1]:9000"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseLoginURI(tc.in)
			if err != nil {
				t.Fatalf("parseLoginURI: %v", err)
			}
			if got != tc.want {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
			again, err := parseLoginURI(formatLoginURI(got))
			if err != nil || again != got {
				t.Fatalf("round trip: %+v, %v", again, err)
			}
		})
	}
}

func TestParseLoginURIInvalid(t *testing.T) {
	ok := "t=abc&h=" + testServer
	tests := []struct {
		name, in, wantErr string
	}{
		{"empty", "", "scheme"},
		{"malformed query", "ecps://login?%zz", "malformed query"},
		{"control character", "ecps://login?t=x\x00", "not a valid URI"},
		{"wrong scheme", "https://login?" + ok, "scheme"},
		{"no scheme", "login?" + ok, "scheme"},
		{"enrol URI", "ecps://enrol?a=x&s=" + testSecret + "&h=" + testServer, "ecps://login?"},
		{"opaque", "ecps:login?" + ok, "ecps://login?"},
		{"port", "ecps://login:1?" + ok, "ecps://login?"},
		{"user info", "ecps://u@login?" + ok, "user information"},
		{"path", "ecps://login/x?" + ok, "no path"},
		{"fragment", "ecps://login?" + ok + "#f", "no fragment"},
		{"semicolon", "ecps://login?" + ok + ";x=1", "malformed query"},
		{"t missing", "ecps://login?h=" + testServer, `"t" is missing`},
		{"t empty", "ecps://login?t=&h=" + testServer, `"t" is missing`},
		{"t twice", "ecps://login?t=def&" + ok, `"t" appears more than once`},
		{"t padded", "ecps://login?t=abc%3D&h=" + testServer, "t: not base64url"},
		{"t standard alphabet", "ecps://login?t=ab%2Fc&h=" + testServer, "t: not base64url"},
		{"t plus", "ecps://login?t=a%2Bb&h=" + testServer, "t: not base64url"},
		{"t space", "ecps://login?t=a+b&h=" + testServer, "t: not base64url"},
		{"t non-ASCII", "ecps://login?t=%C3%A9&h=" + testServer, "t: not base64url"},
		{"t too long", "ecps://login?t=" + strings.Repeat("A", 257) + "&h=" + testServer, "t: longer than 256"},
		{"h missing", "ecps://login?t=abc", `"h" is missing`},
		{"h twice", "ecps://login?h=" + testServer + "&" + ok, `"h" appears more than once`},
		{"h relative", "ecps://login?t=abc&h=%2Fapi", "absolute http"},
		{"h ftp", "ecps://login?t=abc&h=ftp%3A%2F%2Fx.fr", "absolute http"},
		{"h javascript", "ecps://login?t=abc&h=javascript%3Aalert(1)", "absolute http"},
		{"h no host", "ecps://login?t=abc&h=https%3A%2F%2F", "must have a host"},
		{"h user info", "ecps://login?t=abc&h=https%3A%2F%2Fu%3Ap%40x.fr", "user information"},
		{"h query", "ecps://login?t=abc&h=https%3A%2F%2Fx.fr%2F%3Fq%3D1", "no query"},
		{"h space", "ecps://login?t=abc&h=https%3A%2F%2Fx.fr%2Fa%20b", "spaces"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseLoginURI(tc.in)
			if err == nil {
				t.Fatalf("accepted: %+v", got)
			}
			if !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error %q, want it to contain %q", err, tc.wantErr)
			}
		})
	}
}

func TestSameServer(t *testing.T) {
	tests := []struct {
		a, b string
		want bool
	}{
		{"https://ecps.example.fr", "https://ecps.example.fr", true},
		{"https://ECPS.example.fr", "HTTPS://ecps.example.fr", true},
		{"https://ecps.example.fr:443", "https://ecps.example.fr", true},
		{"http://127.0.0.1:80/ecps", "http://127.0.0.1/ecps/", true},
		{"http://[::1]:9000", "http://[::1]:9000", true},
		{"http://ecps.example.fr", "https://ecps.example.fr", false},
		{"https://ecps.example.fr:8443", "https://ecps.example.fr", false},
		{"https://evil.example.fr", "https://ecps.example.fr", false},
		{"https://ecps.example.fr/a", "https://ecps.example.fr/A", false},
		{"https://ecps.example.fr/a", "https://ecps.example.fr", false},
		{"http://127.0.0.1:8080", "http://127.0.0.1:8081", false},
	}
	for _, tc := range tests {
		if got := sameServer(tc.a, tc.b); got != tc.want {
			t.Errorf("sameServer(%q, %q) = %v, want %v", tc.a, tc.b, got, tc.want)
		}
		if got := sameServer(tc.b, tc.a); got != tc.want {
			t.Errorf("sameServer(%q, %q) = %v, want %v", tc.b, tc.a, got, tc.want)
		}
	}
}

func FuzzParseLoginURI(f *testing.F) {
	for _, s := range []string{
		"ecps://login?t=" + testQRToken + "&h=" + testServer,
		"ecps://login?t=abc&h=http%3A%2F%2F127.0.0.1%3A8080%2Fecps%2F",
		"ecps://login?h=https://ecps.example.fr&t=A-b_c",
		"ECPS://LOGIN/?t=abc&h=" + url.QueryEscape("http://[::1]:9000/"),
		"ecps://login?t=abc&h=" + testServer + "&x=%zz",
		"ecps://login?t=abc&t=def&h=" + testServer,
		"ecps://login?t=abc%3D&h=" + testServer,
		"ecps://login?t=" + strings.Repeat("A", 257) + "&h=" + testServer,
		"ecps://enrol?a=x&s=" + testSecret + "&h=" + testServer,
		"ecps:login?t=x",
		"https://ecps.example.fr/login/abc",
		"ecps://login?t=abc&h=https%3A%2F%2F",
		"ecps://login?t=abc&h=javascript%3Aalert(1)",
		"",
		"%",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		l, err := parseLoginURI(s)
		if err != nil {
			return
		}
		if err := checkQRToken(l.Token); err != nil {
			t.Fatalf("accepted token %q: %v", l.Token, err)
		}
		u, err := url.Parse(l.Server)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
			t.Fatalf("accepted server %q: %v", l.Server, err)
		}
		if strings.HasSuffix(l.Server, "/") {
			t.Fatalf("server %q keeps a trailing slash", l.Server)
		}
		if !sameServer(l.Server, l.Server) {
			t.Fatalf("server %q is not the same as itself", l.Server)
		}
		again, err := parseLoginURI(formatLoginURI(l))
		if err != nil {
			t.Fatalf("re-encoded %+v rejected: %v", l, err)
		}
		if again != l {
			t.Fatalf("round trip changed %+v into %+v", l, again)
		}
	})
}
