package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/ecps-sante/ecps/keycloak"
)

const (
	testClientSecret = "psc-secret-0123456789abcdef"
	testDeskKey      = "desk-key-0123456789abcdef"
)

func hexSHA256(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

// baseYAML is a small valid configuration; each error case changes one thing.
var baseYAML = `listen: "127.0.0.1:8080"
public_url: "https://ecps.example.fr"
dev: false
redis:
  url: "redis://127.0.0.1:6379/0"
clients:
  - id: "psc"
    name: "Pro Santé Connect"
    secret_sha256: "` + hexSHA256(testClientSecret) + `"
    scopes: ["authentication", "activation"]
    redirect_uris: ["https://idp.example.fr/cb"]
desk_operators:
  - name: "desk-paris-1"
    key_sha256: "` + hexSHA256(testDeskKey) + `"
push:
  provider: "log"
limits:
  activation_ttl: "10m"
  activation_attempts: 5
  number_digits: 2
audit_retention: "400d"
`

// edit applies old→new replacements to baseYAML; every old must be present.
func edit(t *testing.T, pairs ...string) string {
	t.Helper()
	y := baseYAML
	for i := 0; i+1 < len(pairs); i += 2 {
		if !strings.Contains(y, pairs[i]) {
			t.Fatalf("test bug: %q not in the base config", pairs[i])
		}
		y = strings.Replace(y, pairs[i], pairs[i+1], 1)
	}
	return y
}

func writeConfig(t *testing.T, yaml string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "ecps.yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func envOf(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

// runConfig runs `ecpsd -config <file>` on yaml; it is only used on configs
// that must be refused (a valid one would start serving).
func runConfig(t *testing.T, yaml string, env map[string]string) (int, string) {
	t.Helper()
	path := writeConfig(t, yaml)
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // should it get as far as serving, stop at once
	var stdout, stderr bytes.Buffer
	code := run(ctx, []string{"-config", path}, strings.NewReader(""), &stdout, &stderr, envOf(env))
	return code, stderr.String()
}

func nonEmptyLines(s string) []string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.TrimSpace(l) != "" {
			out = append(out, l)
		}
	}
	return out
}

// hasLine reports whether one line of s contains every want.
func hasLine(s string, want ...string) bool {
	for _, l := range nonEmptyLines(s) {
		ok := true
		for _, w := range want {
			if !strings.Contains(l, w) {
				ok = false
				break
			}
		}
		if ok {
			return true
		}
	}
	return false
}

func TestConfigMistakesAreRefusedNamingTheKey(t *testing.T) {
	cases := []struct {
		name  string
		edits []string // replacements in baseYAML
		yaml  string   // or a whole file
		want  []string // all on one line of stderr
	}{
		{name: "unknown top-level key", edits: []string{"dev: false", "dev: false\nlisten_port: 8080"},
			want: []string{"listen_port"}},
		{name: "pprof without metrics_listen", edits: []string{"dev: false", "dev: false\npprof: true"},
			want: []string{"pprof", "metrics_listen"}},
		{name: "unknown key limits.foo", edits: []string{"  number_digits: 2", "  number_digits: 2\n  foo: 1"},
			want: []string{"limits.foo"}},
		{name: "unknown key redis.urll", edits: []string{"  url: ", "  urll: "},
			want: []string{"redis.urll"}},
		{name: "unknown key clients[0].secret", edits: []string{"    secret_sha256: ", "    secret: "},
			want: []string{"clients[0].secret"}},
		{name: "secret_sha256: empty list", edits: []string{`secret_sha256: "` + hexSHA256(testClientSecret) + `"`, `secret_sha256: []`},
			want: []string{"clients[0].secret_sha256"}},
		{name: "secret_sha256: a bad hash in a list", edits: []string{`secret_sha256: "` + hexSHA256(testClientSecret) + `"`,
			`secret_sha256: ["` + hexSHA256(testClientSecret) + `", "nope"]`},
			want: []string{"clients[0].secret_sha256[1]"}},
		{name: "secret_sha256: the same hash twice", edits: []string{`secret_sha256: "` + hexSHA256(testClientSecret) + `"`,
			`secret_sha256: ["` + hexSHA256(testClientSecret) + `", "` + hexSHA256(testClientSecret) + `"]`},
			want: []string{"clients[0].secret_sha256[1]", "twice"}},
		{name: "key_sha256: a mapping", edits: []string{`key_sha256: "` + hexSHA256(testDeskKey) + `"`, `key_sha256: {new: x}`},
			want: []string{"desk_operators[0].key_sha256", "list of hashes"}},
		{name: "duration in words", edits: []string{`activation_ttl: "10m"`, `activation_ttl: "10 minutes"`},
			want: []string{"limits.activation_ttl", "10 minutes"}},
		{name: "negative duration", edits: []string{`activation_ttl: "10m"`, `activation_ttl: "-5s"`},
			want: []string{"limits.activation_ttl", "-5s"}},
		{name: "zero duration", edits: []string{`activation_ttl: "10m"`, `activation_ttl: "0s"`},
			want: []string{"limits.activation_ttl", "0s"}},
		{name: "min_replicas_ack negative", edits: []string{`  url: "redis://127.0.0.1:6379/0"`, "  url: \"redis://127.0.0.1:6379/0\"\n  min_replicas_ack: -1"},
			want: []string{"redis.min_replicas_ack", "-1"}},
		{name: "replica_ack_timeout too long", edits: []string{`  url: "redis://127.0.0.1:6379/0"`, "  url: \"redis://127.0.0.1:6379/0\"\n  replica_ack_timeout: \"5s\""},
			want: []string{"redis.replica_ack_timeout", "5s"}},
		{name: "unknown duration unit", edits: []string{`audit_retention: "400d"`, `audit_retention: "400x"`},
			want: []string{"audit_retention", "400x"}},
		{name: "client without secret_sha256", edits: []string{"    secret_sha256: \"" + hexSHA256(testClientSecret) + "\"\n", ""},
			want: []string{"clients[0].secret_sha256"}},
		{name: "secret_sha256 not hex", edits: []string{hexSHA256(testClientSecret), strings.Repeat("zz", 32)},
			want: []string{"clients[0].secret_sha256"}},
		{name: "secret_sha256 wrong length", edits: []string{hexSHA256(testClientSecret), hexSHA256(testClientSecret)[:62]},
			want: []string{"clients[0].secret_sha256"}},
		{name: "client without scopes", edits: []string{`    scopes: ["authentication", "activation"]` + "\n", ""},
			want: []string{"clients[0].scopes"}},
		{name: "unknown scope", edits: []string{`"activation"]`, `"openid"]`},
			want: []string{"clients[0].scopes", "openid"}},
		{name: "duplicate client id", edits: []string{"desk_operators:", `  - id: "psc"
    name: "Other"
    secret_sha256: "` + hexSHA256("other") + `"
    scopes: ["authentication"]
desk_operators:`},
			want: []string{"clients[1].id", "psc"}},
		{name: "desk operator without key_sha256", edits: []string{"    key_sha256: \"" + hexSHA256(testDeskKey) + "\"\n", ""},
			want: []string{"desk_operators[0].key_sha256"}},
		{name: "redis.url without scheme", edits: []string{`"redis://127.0.0.1:6379/0"`, `"localhost:6379"`},
			want: []string{"redis.url", "localhost:6379"}},
		{name: "redis.url http", edits: []string{`"redis://127.0.0.1:6379/0"`, `"http://x"`},
			want: []string{"redis.url", "http://x"}},
		{name: "redis.url without host", edits: []string{`"redis://127.0.0.1:6379/0"`, `"redis://"`},
			want: []string{"redis.url", "redis://"}},
		{name: "redis.url and redis.addrs", edits: []string{`  url: "redis://127.0.0.1:6379/0"`, `  url: "redis://127.0.0.1:6379/0"
  addrs: ["10.0.0.1:6379"]`},
			want: []string{"redis.url", "redis.addrs"}},
		{name: "redis.addrs entry without port", edits: []string{`  url: "redis://127.0.0.1:6379/0"`, `  addrs: ["10.0.0.1:6379", "10.0.0.2"]`},
			want: []string{"redis.addrs[1]", "10.0.0.2"}},
		{name: "sentinel without master", edits: []string{`  url: "redis://127.0.0.1:6379/0"`, `  sentinel: {addrs: ["10.0.0.1:26379"]}`},
			want: []string{"redis.sentinel.master"}},
		{name: "public_url missing", edits: []string{`public_url: "https://ecps.example.fr"` + "\n", ""},
			want: []string{"public_url"}},
		{name: "public_url http without dev", edits: []string{`"https://ecps.example.fr"`, `"http://ecps.example.fr"`},
			want: []string{"public_url", "http://ecps.example.fr"}},
		{name: "listen without port", edits: []string{`listen: "127.0.0.1:8080"`, `listen: "127.0.0.1"`},
			want: []string{"listen", "127.0.0.1"}},
		{name: "push.provider apns", edits: []string{`provider: "log"`, `provider: "apns"`},
			want: []string{"push.provider", "apns"}},
		{name: "fcm without project_id", edits: []string{`provider: "log"`, `provider: "fcm"`},
			want: []string{"push.fcm.project_id"}},
		{name: "desk_signin_failures 0", edits: []string{"  number_digits: 2", "  number_digits: 2\n  desk_signin_failures: 0"},
			want: []string{"limits.desk_signin_failures", "got 0"}},
		{name: "desk_signin_window zero", edits: []string{"  number_digits: 2", "  number_digits: 2\n  desk_signin_window: \"0s\""},
			want: []string{"limits.desk_signin_window", "0s"}},
		{name: "number_digits 1", edits: []string{"number_digits: 2", "number_digits: 1"},
			want: []string{"limits.number_digits", "got 1"}},
		{name: "number_digits 7", edits: []string{"number_digits: 2", "number_digits: 7"},
			want: []string{"limits.number_digits", "got 7"}},
		{name: "YAML syntax error", edits: []string{`audit_retention: "400d"`, `audit_retention: ["400d"`},
			want: []string{"line "}},
		{name: "value of the wrong type", edits: []string{"activation_attempts: 5", `activation_attempts: "five"`},
			want: []string{"limits.activation_attempts", "five"}},
		{name: "client id of a Keycloak client", edits: []string{`  - id: "psc"`, `  - id: "keycloak:psc"`},
			want: []string{"clients[0].id", "keycloak:"}},
		{name: "realm without issuer", edits: []string{`audit_retention: "400d"`, `audit_retention: "400d"
keycloak:
  realms:
    - login_hint_prefix: "psc-"`},
			want: []string{"keycloak.realms[0].issuer", "required"}},
		{name: "realm issuer over http", edits: []string{`audit_retention: "400d"`, `audit_retention: "400d"
keycloak:
  realms:
    - issuer: "http://auth.example.fr/realms/x"`},
			want: []string{"keycloak.realms[0].issuer", "https"}},
		{name: "realm issuer with a trailing slash", edits: []string{`audit_retention: "400d"`, `audit_retention: "400d"
keycloak:
  realms:
    - issuer: "https://auth.example.fr/realms/x/"`},
			want: []string{"keycloak.realms[0].issuer", "trailing"}},
		{name: "realm jwks_url and jwks_file", edits: []string{`audit_retention: "400d"`, `audit_retention: "400d"
keycloak:
  realms:
    - issuer: "https://auth.example.fr/realms/x"
      jwks_url: "https://auth.example.fr/realms/x/protocol/openid-connect/certs"
      jwks_file: "testdata/realm-jwks.json"`},
			want: []string{"keycloak.realms[0].jwks_url, jwks_file", "at most one"}},
		{name: "realm jwks_file missing", edits: []string{`audit_retention: "400d"`, `audit_retention: "400d"
keycloak:
  realms:
    - issuer: "https://auth.example.fr/realms/x"
      jwks_file: "testdata/no-such-jwks.json"`},
			want: []string{"keycloak.realms[0].jwks_file", "no-such-jwks.json"}},
		{name: "realm jwks_file without keys", edits: []string{`audit_retention: "400d"`, `audit_retention: "400d"
keycloak:
  realms:
    - issuer: "https://auth.example.fr/realms/x"
      jwks_file: "testdata/contract.yaml"`},
			want: []string{"keycloak.realms[0].jwks_file", "JWKS"}},
		{name: "realm callback_url relative", edits: []string{`audit_retention: "400d"`, `audit_retention: "400d"
keycloak:
  realms:
    - issuer: "https://auth.example.fr/realms/x"
      callback_url: "/cb"`},
			want: []string{"keycloak.realms[0].callback_url", "/cb"}},
		{name: "duplicate realm", edits: []string{`audit_retention: "400d"`, `audit_retention: "400d"
keycloak:
  realms:
    - issuer: "https://auth.example.fr/realms/x"
    - issuer: "https://auth.example.fr/realms/x"`},
			want: []string{"keycloak.realms[1].issuer", "duplicate"}},
		{name: "unknown key keycloak.realms[0].jwks", edits: []string{`audit_retention: "400d"`, `audit_retention: "400d"
keycloak:
  realms:
    - issuer: "https://auth.example.fr/realms/x"
      jwks: "x"`},
			want: []string{"keycloak.realms[0].jwks"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			y := tc.yaml
			if y == "" {
				y = edit(t, tc.edits...)
			}
			code, stderr := runConfig(t, y, nil)
			if code != exitConfig {
				t.Fatalf("exit code %d, want %d; stderr:\n%s", code, exitConfig, stderr)
			}
			if !hasLine(stderr, tc.want...) {
				t.Errorf("no stderr line contains all of %q; stderr:\n%s", tc.want, stderr)
			}
			// One line per mistake; a misspelt key may also leave a required
			// key missing, which gets its own line after the first.
			lines := nonEmptyLines(stderr)
			if n := len(lines); n != 1 && !(strings.HasPrefix(tc.name, "unknown key") && n == 2) {
				t.Errorf("one mistake gave %d lines, want 1:\n%s", n, stderr)
			}
			if !strings.Contains(lines[0], tc.want[0]) {
				t.Errorf("first line %q does not name %q", lines[0], tc.want[0])
			}
		})
	}
}

func TestConfigYAMLSyntaxErrorNamesTheLine(t *testing.T) {
	// Line 5 has a tab-indented key, which YAML forbids.
	y := "listen: \":8080\"\npublic_url: \"https://ecps.example.fr\"\nredis:\n  url: \"redis://127.0.0.1:6379/0\"\n\tkey_prefix: \"x:\"\n"
	code, stderr := runConfig(t, y, nil)
	if code != exitConfig {
		t.Fatalf("exit code %d, want 2; stderr:\n%s", code, stderr)
	}
	if !regexp.MustCompile(`line [45]\b`).MatchString(stderr) {
		t.Errorf("stderr does not name line 4 or 5:\n%s", stderr)
	}
}

func TestConfigAcceptedVariants(t *testing.T) {
	cases := []struct {
		name  string
		edits []string
		check func(t *testing.T, cfg Config)
	}{
		{name: "audit_retention 400d", check: func(t *testing.T, cfg Config) {
			if cfg.AuditRetention != 400*24*time.Hour {
				t.Errorf("AuditRetention = %v, want 400 days", cfg.AuditRetention)
			}
		}},
		{name: "http public_url with dev", edits: []string{"dev: false", "dev: true", `"https://ecps.example.fr"`, `"http://127.0.0.1:8080"`},
			check: func(t *testing.T, cfg Config) {
				if cfg.File.PublicURL != "http://127.0.0.1:8080" || !cfg.File.Dev {
					t.Errorf("public_url %q dev %v", cfg.File.PublicURL, cfg.File.Dev)
				}
			}},
		{name: "number_digits 6", edits: []string{"number_digits: 2", "number_digits: 6"}, check: func(t *testing.T, cfg Config) {
			if cfg.File.Limits.NumberDigits != 6 {
				t.Errorf("NumberDigits = %d", cfg.File.Limits.NumberDigits)
			}
		}},
		{name: "redis cluster", edits: []string{`  url: "redis://127.0.0.1:6379/0"`, `  addrs: ["10.0.0.1:6379", "10.0.0.2:6379"]`},
			check: func(t *testing.T, cfg Config) {
				if len(cfg.File.Redis.Addrs) != 2 {
					t.Errorf("addrs %q", cfg.File.Redis.Addrs)
				}
			}},
		{name: "redis sentinel", edits: []string{`  url: "redis://127.0.0.1:6379/0"`, `  sentinel: {master: "ecps", addrs: ["10.0.0.1:26379"]}`},
			check: func(t *testing.T, cfg Config) {
				if cfg.File.Redis.Sentinel.Master != "ecps" {
					t.Errorf("sentinel %+v", cfg.File.Redis.Sentinel)
				}
			}},
		{name: "keycloak realms", edits: []string{`audit_retention: "400d"`, `audit_retention: "400d"
keycloak:
  realms:
    - issuer: "https://auth.example.fr/realms/esante"
      jwks_file: "testdata/realm-jwks.json"
      callback_url: "https://kc.internal:8443/realms/esante/protocol/openid-connect/ext/ciba/auth/callback"
      login_hint_prefix: "psc-"
      require_number: true
      client_names: {"dmp-web": "DMP (web)"}
    - issuer: "https://auth.example.fr/realms/other"`},
			check: func(t *testing.T, cfg Config) {
				want := []keycloak.Realm{{Issuer: "https://auth.example.fr/realms/esante", JWKSFile: "testdata/realm-jwks.json",
					CallbackURL:     "https://kc.internal:8443/realms/esante/protocol/openid-connect/ext/ciba/auth/callback",
					LoginHintPrefix: "psc-", RequireNumber: true, ClientNames: map[string]string{"dmp-web": "DMP (web)"}},
					{Issuer: "https://auth.example.fr/realms/other"}}
				if !reflect.DeepEqual(cfg.Realms, want) {
					t.Errorf("realms %+v", cfg.Realms)
				}
			}},
		{name: "keycloak realm over http with dev", edits: []string{"dev: false", "dev: true", `audit_retention: "400d"`, `audit_retention: "400d"
keycloak:
  realms:
    - issuer: "http://127.0.0.1:8180/realms/ecps-demo"`},
			check: func(t *testing.T, cfg Config) {
				if len(cfg.Realms) != 1 {
					t.Errorf("realms %+v", cfg.Realms)
				}
			}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := parseConfig([]byte(edit(t, tc.edits...)), envOf(nil))
			if err != nil {
				t.Fatalf("refused: %v", err)
			}
			tc.check(t, cfg)
		})
	}
}

func TestConfigSeveralMistakesOneLineEach(t *testing.T) {
	y := edit(t,
		`activation_ttl: "10m"`, `activation_ttl: "10 minutes"`,
		`"activation"]`, `"openid"]`,
		"number_digits: 2", "number_digits: 9",
		`provider: "log"`, `provider: "apns"`,
		`listen: "127.0.0.1:8080"`, `listen: "127.0.0.1"`,
	)
	code, stderr := runConfig(t, y, nil)
	if code != exitConfig {
		t.Fatalf("exit code %d, want 2; stderr:\n%s", code, stderr)
	}
	wants := [][]string{
		{"limits.activation_ttl", "10 minutes"},
		{"clients[0].scopes", "openid"},
		{"limits.number_digits", "9"},
		{"push.provider", "apns"},
		{"listen", `"127.0.0.1"`},
	}
	for _, w := range wants {
		if !hasLine(stderr, w...) {
			t.Errorf("no line with %q:\n%s", w, stderr)
		}
	}
	if n := len(nonEmptyLines(stderr)); n != len(wants) {
		t.Errorf("%d lines for %d mistakes:\n%s", n, len(wants), stderr)
	}
}

// loadConfig promises "all problems at once": an unknown key or a value of
// the wrong type must not hide the other mistakes of the file.
func TestConfigSeveralKindsOfMistakesAllReported(t *testing.T) {
	y := edit(t,
		"dev: false", "dev: false\nlisten_port: 8080",
		"activation_attempts: 5", `activation_attempts: "five"`,
		`audit_retention: "400d"`, `audit_retention: "400x"`,
		`provider: "log"`, `provider: "apns"`,
	)
	code, stderr := runConfig(t, y, nil)
	if code != exitConfig {
		t.Fatalf("exit code %d, want 2; stderr:\n%s", code, stderr)
	}
	wants := [][]string{
		{"listen_port"},
		{"limits.activation_attempts", "five"},
		{"audit_retention", "400x"},
		{"push.provider", "apns"},
	}
	for _, w := range wants {
		if !hasLine(stderr, w...) {
			t.Errorf("no line with %q:\n%s", w, stderr)
		}
	}
}

func TestConfigContractYAMLAndDefaults(t *testing.T) {
	t.Run("contract file", func(t *testing.T) {
		cfg, err := loadConfig(filepath.Join("testdata", "contract.yaml"), envOf(nil))
		if err != nil {
			t.Fatalf("the contract's YAML is refused: %v", err)
		}
		if len(cfg.Clients) != 1 || cfg.Clients[0].ID != "psc" || cfg.Clients[0].Name != "Pro Santé Connect" {
			t.Fatalf("clients = %+v", cfg.Clients)
		}
		if got := hex.EncodeToString(cfg.Clients[0].SecretSHA256[0][:]); got != hexSHA256(testClientSecret) {
			t.Errorf("client hash %s", got)
		}
		if !reflect.DeepEqual(cfg.Clients[0].Scopes, []string{"authentication", "activation"}) ||
			!reflect.DeepEqual(cfg.Clients[0].RedirectURIs, []string{"https://idp.example.fr/cb"}) {
			t.Errorf("client = %+v", cfg.Clients[0])
		}
		if len(cfg.Operators) != 1 || cfg.Operators[0].Name != "desk-paris-1" ||
			hex.EncodeToString(cfg.Operators[0].KeySHA256[0][:]) != hexSHA256(testDeskKey) {
			t.Errorf("operators = %+v", cfg.Operators)
		}
		if cfg.File.Push.Provider != "fcm" || cfg.File.Push.FCM.ProjectID != "…" ||
			cfg.File.Push.FCM.CredentialsFile != "/etc/ecps/fcm.json" {
			t.Errorf("push = %+v", cfg.File.Push)
		}
		if cfg.File.Listen != ":8080" || cfg.File.Redis.URL != "redis://127.0.0.1:6379/0" {
			t.Errorf("listen %q redis %q", cfg.File.Listen, cfg.File.Redis.URL)
		}
		if len(cfg.Realms) != 1 || cfg.Realms[0].Issuer != "https://auth.example.fr/realms/esante-wallet" ||
			cfg.Realms[0].JWKSURL != "" || cfg.Realms[0].RequireNumber {
			t.Errorf("realms = %+v", cfg.Realms)
		}
		checkContractDefaults(t, cfg)
	})
	t.Run("limits left out", func(t *testing.T) {
		y := edit(t, "limits:\n  activation_ttl: \"10m\"\n  activation_attempts: 5\n  number_digits: 2\n", "",
			`audit_retention: "400d"`+"\n", "")
		cfg, err := parseConfig([]byte(y), envOf(nil))
		if err != nil {
			t.Fatal(err)
		}
		checkContractDefaults(t, cfg)
	})
	t.Run("desk sign-in limit, from the file and the environment", func(t *testing.T) {
		y := edit(t, "  number_digits: 2", "  number_digits: 2\n  desk_signin_failures: 3")
		cfg, err := parseConfig([]byte(y), envOf(map[string]string{"ECPS_LIMITS_DESK_SIGNIN_WINDOW": "5m"}))
		if err != nil {
			t.Fatal(err)
		}
		if cfg.File.Limits.DeskSignInFailures != 3 || cfg.DeskSignInWindow != 5*time.Minute {
			t.Errorf("desk sign-in limit %d per %v, want 3 per 5m", cfg.File.Limits.DeskSignInFailures, cfg.DeskSignInWindow)
		}
	})
	t.Run("one limit given, the others defaulted", func(t *testing.T) {
		y := edit(t, "limits:\n  activation_ttl: \"10m\"\n  activation_attempts: 5\n  number_digits: 2\n",
			"limits:\n  client_rps: 7\n")
		cfg, err := parseConfig([]byte(y), envOf(nil))
		if err != nil {
			t.Fatal(err)
		}
		if cfg.File.Limits.ClientRPS != 7 {
			t.Errorf("client_rps = %d, want 7", cfg.File.Limits.ClientRPS)
		}
		cfg.File.Limits.ClientRPS = 100
		checkContractDefaults(t, cfg)
	})
}

func checkContractDefaults(t *testing.T, cfg Config) {
	t.Helper()
	durs := []struct {
		name      string
		got, want time.Duration
	}{
		{"activation_ttl", cfg.ActivationTTL, 10 * time.Minute},
		{"pushes_window", cfg.PushesWindow, 5 * time.Minute},
		{"block_duration", cfg.BlockDuration, 15 * time.Minute},
		{"proof_max_skew", cfg.ProofMaxSkew, 60 * time.Second},
		{"qr_token_ttl", cfg.QRTokenTTL, 30 * time.Second},
		{"poll_interval", cfg.PollInterval, 2 * time.Second},
		{"desk_signin_window", cfg.DeskSignInWindow, time.Minute},
		{"audit_retention", cfg.AuditRetention, 400 * 24 * time.Hour},
	}
	for _, d := range durs {
		if d.got != d.want {
			t.Errorf("%s = %v, want %v", d.name, d.got, d.want)
		}
	}
	l := cfg.File.Limits
	ints := []struct {
		name      string
		got, want int
	}{
		{"activation_attempts", l.ActivationAttempts, 5},
		{"devices_per_subject", l.DevicesPerSubject, 5},
		{"pending_per_subject", l.PendingPerSubject, 3},
		{"pushes_per_subject", l.PushesPerSubject, 10},
		{"denials_before_block", l.DenialsBeforeBlock, 5},
		{"client_rps", l.ClientRPS, 100},
		{"number_digits", l.NumberDigits, 2},
		{"desk_signin_failures", l.DeskSignInFailures, 10},
	}
	for _, n := range ints {
		if n.got != n.want {
			t.Errorf("%s = %d, want %d", n.name, n.got, n.want)
		}
	}
}

func TestConfigEnvOverrides(t *testing.T) {
	env := map[string]string{
		"ECPS_REDIS_URL":                  "redis://10.1.2.3:6380/2",
		"ECPS_LIMITS_ACTIVATION_TTL":      "3m",
		"ECPS_DEV":                        "true",
		"ECPS_LIMITS_DEVICES_PER_SUBJECT": "7",
		"ECPS_PUBLIC_URL":                 "http://127.0.0.1:9999", // allowed because ECPS_DEV=true
		"ECPS_UNRELATED":                  "ignored",
	}
	y := edit(t, "limits:\n", "limits:\n  devices_per_subject: 4\n")
	cfg, err := parseConfig([]byte(y), envOf(env))
	if err != nil {
		t.Fatalf("refused: %v", err)
	}
	if cfg.File.Redis.URL != "redis://10.1.2.3:6380/2" {
		t.Errorf("redis.url = %q", cfg.File.Redis.URL)
	}
	if cfg.ActivationTTL != 3*time.Minute {
		t.Errorf("activation_ttl = %v", cfg.ActivationTTL)
	}
	if !cfg.File.Dev {
		t.Error("dev not overridden")
	}
	if cfg.File.Limits.DevicesPerSubject != 7 {
		t.Errorf("devices_per_subject = %d, want 7", cfg.File.Limits.DevicesPerSubject)
	}
	if cfg.File.PublicURL != "http://127.0.0.1:9999" {
		t.Errorf("public_url = %q", cfg.File.PublicURL)
	}
	if cfg.File.Limits.ActivationAttempts != 5 {
		t.Errorf("activation_attempts = %d", cfg.File.Limits.ActivationAttempts)
	}
}

func TestConfigEnvOverrideIsValidated(t *testing.T) {
	// An override goes through the same validation as the file.
	code, stderr := runConfig(t, baseYAML, map[string]string{"ECPS_LIMITS_ACTIVATION_TTL": "-1m"})
	if code != exitConfig || !hasLine(stderr, "limits.activation_ttl", "-1m") {
		t.Errorf("exit %d, stderr:\n%s", code, stderr)
	}
}

func TestConfigBadEnvOverrides(t *testing.T) {
	cases := []struct {
		env  map[string]string
		want []string
	}{
		{map[string]string{"ECPS_DEV": "maybe"}, []string{"ECPS_DEV", "maybe"}},
		{map[string]string{"ECPS_LIMITS_DEVICES_PER_SUBJECT": "x"}, []string{"ECPS_LIMITS_DEVICES_PER_SUBJECT", `"x"`}},
		{map[string]string{"ECPS_CLIENTS": "x"}, []string{"ECPS_CLIENTS"}},
		{map[string]string{"ECPS_DESK_OPERATORS": "x"}, []string{"ECPS_DESK_OPERATORS"}},
		{map[string]string{"ECPS_REDIS_ADDRS": "10.0.0.1:6379"}, []string{"ECPS_REDIS_ADDRS"}},
		{map[string]string{"ECPS_KEYCLOAK_REALMS": "x"}, []string{"ECPS_KEYCLOAK_REALMS", "in the file"}},
	}
	for _, tc := range cases {
		var name string
		for k := range tc.env {
			name = k
		}
		t.Run(name, func(t *testing.T) {
			code, stderr := runConfig(t, baseYAML, tc.env)
			if code != exitConfig {
				t.Fatalf("exit code %d, want 2; stderr:\n%s", code, stderr)
			}
			if !hasLine(stderr, tc.want...) {
				t.Errorf("no line with %q:\n%s", tc.want, stderr)
			}
		})
	}
}

func TestConfigMissingFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "nope", "ecps.yaml")
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), []string{"-config", path}, strings.NewReader(""), &stdout, &stderr, envOf(nil))
	if code != exitConfig {
		t.Errorf("exit code %d, want 2", code)
	}
	if !strings.Contains(stderr.String(), path) {
		t.Errorf("stderr does not name %s:\n%s", path, stderr.String())
	}
}

func TestRunUsage(t *testing.T) {
	for _, args := range [][]string{nil, {"-config"}, {"-config", "a.yaml", "extra"}, {"-nope"}} {
		var stdout, stderr bytes.Buffer
		if code := run(context.Background(), args, strings.NewReader(""), &stdout, &stderr, envOf(nil)); code != exitConfig {
			t.Errorf("run(%q) = %d, want 2", args, code)
		}
		if stderr.Len() == 0 {
			t.Errorf("run(%q): nothing on stderr", args)
		}
	}
}

func TestHashSecret(t *testing.T) {
	t.Run("newline trimmed", func(t *testing.T) {
		for _, in := range []string{"abc\n", "abc\r\n", "abc"} {
			var stdout, stderr bytes.Buffer
			code := run(context.Background(), []string{"hash-secret"}, strings.NewReader(in), &stdout, &stderr, envOf(nil))
			if code != exitOK {
				t.Fatalf("%q: exit %d; stderr %s", in, code, stderr.String())
			}
			const want = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad\n"
			if stdout.String() != want {
				t.Errorf("%q: stdout %q, want %q", in, stdout.String(), want)
			}
		}
	})
	t.Run("empty stdin", func(t *testing.T) {
		for _, in := range []string{"", "\n"} {
			var stdout, stderr bytes.Buffer
			code := run(context.Background(), []string{"hash-secret"}, strings.NewReader(in), &stdout, &stderr, envOf(nil))
			if code != exitConfig {
				t.Errorf("%q: exit %d, want 2", in, code)
			}
			if stdout.Len() != 0 || stderr.Len() == 0 {
				t.Errorf("%q: stdout %q stderr %q", in, stdout.String(), stderr.String())
			}
		}
	})
}

func TestDevConfig(t *testing.T) {
	out := filepath.Join(t.TempDir(), "sub", "dev.yaml")
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), []string{"dev-config", "-out", out, "-listen", "127.0.0.1:18080",
		"-redis-url", "redis://127.0.0.1:6390/3"}, strings.NewReader(""), &stdout, &stderr, envOf(nil))
	if code != exitOK {
		t.Fatalf("exit %d; stderr:\n%s", code, stderr.String())
	}
	fi, err := os.Stat(out)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", fi.Mode().Perm())
	}
	raw, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := parseConfig(raw, envOf(nil))
	if err != nil {
		t.Fatalf("parseConfig refuses the dev config: %v\n%s", err, raw)
	}
	secret := regexp.MustCompile(`secret: (\S+)`).FindStringSubmatch(stdout.String())
	key := regexp.MustCompile(`desk operator\s+key: (\S+)`).FindStringSubmatch(stdout.String())
	if secret == nil || key == nil {
		t.Fatalf("stdout does not show the client secret and desk key:\n%s", stdout.String())
	}
	if len(secret[1]) < 22 || len(key[1]) < 22 || secret[1] == key[1] {
		t.Errorf("weak or equal secrets: %q %q", secret[1], key[1])
	}
	if len(cfg.Clients) != 1 || len(cfg.Operators) != 1 {
		t.Fatalf("clients %d operators %d", len(cfg.Clients), len(cfg.Operators))
	}
	if len(cfg.Clients[0].SecretSHA256) != 1 || cfg.Clients[0].SecretSHA256[0] != sha256.Sum256([]byte(secret[1])) {
		t.Error("the printed client secret does not hash to the file's secret_sha256")
	}
	if len(cfg.Operators[0].KeySHA256) != 1 || cfg.Operators[0].KeySHA256[0] != sha256.Sum256([]byte(key[1])) {
		t.Error("the printed desk key does not hash to the file's key_sha256")
	}
	if bytes.Contains(raw, []byte(secret[1])) || bytes.Contains(raw, []byte(key[1])) {
		t.Error("the file holds a secret in clear")
	}
	if cfg.File.Listen != "127.0.0.1:18080" || cfg.File.Redis.URL != "redis://127.0.0.1:6390/3" ||
		cfg.File.PublicURL != "http://127.0.0.1:18080" || !cfg.File.Dev {
		t.Errorf("file = %+v", cfg.File)
	}
	checkContractDefaults(t, cfg)

	// The demo's env file, next to the config: the printed secrets in clear, mode 0600.
	credPath := filepath.Join(filepath.Dir(out), "dev-credentials.env")
	wantEnv := map[string]string{
		"ECPS_DEMO_URL":             "http://127.0.0.1:18080",
		"ECPS_DEMO_CLIENT_ID":       "demo-idp",
		"ECPS_DEMO_CLIENT_SECRET":   secret[1],
		"ECPS_DEMO_DESK_KEY":        key[1],
		"ECPS_DEMO_KEYCLOAK_ISSUER": "http://127.0.0.1:8180/realms/ecps-demo",
		"ECPS_DEMO_KEYCLOAK_KEYS":   filepath.Join(filepath.Dir(out), "dev-keycloak-keys.json"),
	}
	checkDevCredentials(t, credPath, wantEnv)
	// The demo realm: configured by its issuer, its private keys in a 0600 file.
	if len(cfg.Realms) != 1 || cfg.Realms[0].Issuer != "http://127.0.0.1:8180/realms/ecps-demo" {
		t.Errorf("realms %+v", cfg.Realms)
	}
	if fi, err := os.Stat(wantEnv["ECPS_DEMO_KEYCLOAK_KEYS"]); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("realm keys file: %v %v", fi, err)
	}
	if !strings.Contains(stdout.String(), credPath) {
		t.Errorf("stdout does not name %s:\n%s", credPath, stdout.String())
	}

	// A second run makes new credentials, and rewrites the env file with them.
	var stdout2 bytes.Buffer
	if code := run(context.Background(), []string{"dev-config", "-out", out}, strings.NewReader(""), &stdout2, &stderr, envOf(nil)); code != exitOK {
		t.Fatalf("second run: exit %d", code)
	}
	s2 := regexp.MustCompile(`secret: (\S+)`).FindStringSubmatch(stdout2.String())
	k2 := regexp.MustCompile(`desk operator\s+key: (\S+)`).FindStringSubmatch(stdout2.String())
	if s2 == nil || s2[1] == secret[1] || k2 == nil || k2[1] == key[1] {
		t.Fatal("second dev-config run did not make new credentials")
	}
	wantEnv["ECPS_DEMO_URL"] = "http://127.0.0.1:8080"
	wantEnv["ECPS_DEMO_CLIENT_SECRET"] = s2[1]
	wantEnv["ECPS_DEMO_DESK_KEY"] = k2[1]
	checkDevCredentials(t, credPath, wantEnv)
}

// checkDevCredentials checks dev-credentials.env: mode 0600 and exactly the
// wanted KEY=VALUE lines (besides comments).
func checkDevCredentials(t *testing.T, path string, want map[string]string) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatalf("demo credentials file: %v", err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("%s: mode %v, want 0600", path, fi.Mode().Perm())
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, l := range nonEmptyLines(string(raw)) {
		if strings.HasPrefix(l, "#") {
			continue
		}
		k, v, ok := strings.Cut(l, "=")
		if !ok {
			t.Errorf("%s: line %q is not KEY=VALUE", path, l)
			continue
		}
		got[k] = v
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("%s holds %q, want %q", path, got, want)
	}
}

func TestDevConfigWithoutOut(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := run(context.Background(), []string{"dev-config"}, strings.NewReader(""), &stdout, &stderr, envOf(nil)); code != exitConfig {
		t.Errorf("exit %d, want 2", code)
	}
}

// A Redis password must never be echoed in an error, whatever else is wrong
// with the URL.
func TestConfigRedisURLErrorHidesPassword(t *testing.T) {
	const pw = "S3cretRedisPw"
	for _, tc := range []struct{ name, url string }{
		{"bad port", "redis://:" + pw + "@cache.internal:x/0"},
		{"bad db", "redis://user:" + pw + "@cache.internal:6379/abc"},
		{"bad scheme", "http://user:" + pw + "@cache.internal:6379/0"},
		{"space", "redis://user:" + pw + "@cache.internal:6379/0 x"},
	} {
		u := tc.url
		t.Run(tc.name, func(t *testing.T) {
			code, stderr := runConfig(t, edit(t, `"redis://127.0.0.1:6379/0"`, `"`+u+`"`), nil)
			if code != exitConfig {
				t.Fatalf("%s: exit %d, want 2; stderr:\n%s", u, code, stderr)
			}
			if !strings.Contains(stderr, "redis.url") {
				t.Errorf("%s: stderr does not name redis.url:\n%s", u, stderr)
			}
			if strings.Contains(stderr, pw) {
				t.Errorf("%s: stderr shows the password:\n%s", u, stderr)
			}
		})
	}
}

// -out is "file to write (mode 0600)": also when the file already exists with
// a wider mode.
func TestDevConfigOverwriteIsMode0600(t *testing.T) {
	out := filepath.Join(t.TempDir(), "dev.yaml")
	creds := filepath.Join(filepath.Dir(out), "dev-credentials.env")
	for _, p := range []string{out, creds} {
		if err := os.WriteFile(p, []byte("old\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, 0o644); err != nil { // whatever the umask
			t.Fatal(err)
		}
	}
	var stdout, stderr bytes.Buffer
	if code := run(context.Background(), []string{"dev-config", "-out", out}, strings.NewReader(""), &stdout, &stderr, envOf(nil)); code != exitOK {
		t.Fatalf("exit %d; stderr:\n%s", code, stderr.String())
	}
	for _, p := range []string{out, creds} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v after overwriting a 0644 file, want 0600", filepath.Base(p), fi.Mode().Perm())
		}
	}
}

func TestCheckConfig(t *testing.T) {
	check := func(yaml string, env map[string]string) (int, string, string) {
		var stdout, stderr bytes.Buffer
		code := run(context.Background(), []string{"check-config", "-config", writeConfig(t, yaml)}, strings.NewReader(""), &stdout, &stderr, envOf(env))
		return code, stdout.String(), stderr.String()
	}
	t.Run("ok", func(t *testing.T) {
		code, stdout, stderr := check(baseYAML, nil)
		if code != exitOK || !strings.HasPrefix(stdout, "config ok: ") || stderr != "" {
			t.Errorf("exit %d, stdout %q, stderr %q", code, stdout, stderr)
		}
	})
	t.Run("fail/every problem, overrides included", func(t *testing.T) {
		code, stdout, stderr := check(edit(t, `listen: "127.0.0.1:8080"`, `listen: "127.0.0.1:8080"`+"\nlisten_typo: 1"),
			map[string]string{"ECPS_LIMITS_CLIENT_RPS": "many"})
		if code != exitConfig || stdout != "" {
			t.Errorf("exit %d, stdout %q", code, stdout)
		}
		for _, want := range []string{`unknown key "listen_typo"`, "limits.client_rps (ECPS_LIMITS_CLIENT_RPS)"} {
			if !strings.Contains(stderr, want) {
				t.Errorf("stderr lacks %q:\n%s", want, stderr)
			}
		}
	})
	t.Run("fail/usage", func(t *testing.T) {
		for _, args := range [][]string{{"check-config"}, {"check-config", "-config", "a", "b"}} {
			var stdout, stderr bytes.Buffer
			if code := run(context.Background(), args, strings.NewReader(""), &stdout, &stderr, envOf(nil)); code != exitConfig || stderr.Len() == 0 {
				t.Errorf("%q: exit %d, stderr %q", args, code, stderr.String())
			}
		}
	})
}

// While a secret or key is rotated, the config lists both hashes (PROTOCOL.md, Operations).
func TestConfigHashListsWhileRotating(t *testing.T) {
	const newSecret, newKey = "client-secret-next-0123456789abc", "desk-key-next-0123456789abcdef"
	y := edit(t, `secret_sha256: "`+hexSHA256(testClientSecret)+`"`,
		`secret_sha256: ["`+hexSHA256(testClientSecret)+`", "`+hexSHA256(newSecret)+`"]`,
		`key_sha256: "`+hexSHA256(testDeskKey)+`"`,
		"key_sha256:\n      - \""+hexSHA256(newKey)+"\"\n      - \""+hexSHA256(testDeskKey)+"\"")
	cfg, err := parseConfig([]byte(y), envOf(nil))
	if err != nil {
		t.Fatal(err)
	}
	want := func(got [][32]byte, secrets ...string) {
		t.Helper()
		if len(got) != len(secrets) {
			t.Fatalf("%d hashes, want %d", len(got), len(secrets))
		}
		for i, s := range secrets {
			if got[i] != sha256.Sum256([]byte(s)) {
				t.Errorf("hash %d is not that of %q", i, s)
			}
		}
	}
	want(cfg.Clients[0].SecretSHA256, testClientSecret, newSecret)
	want(cfg.Operators[0].KeySHA256, newKey, testDeskKey)
}
