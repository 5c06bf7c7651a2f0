package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/ecps-sante/ecps/api"
	"github.com/ecps-sante/ecps/ecpstest"
	"github.com/ecps-sante/ecps/keycloak"
	"github.com/ecps-sante/ecps/keycloak/keycloaktest"
)

const (
	testDeskKey      = "demo-test-desk-key-0123456789abcdef"
	testClientID     = "demo-idp"
	testClientSecret = "demo-test-client-secret-0123456789"
	testSubject      = "810001234565" // valid idNat (RPPS, Luhn)
)

// startService runs the real service (api.New with enrollment, challenges
// and audit) on a real Redis, with the dev config's demo client and desk
// operator, and the practitioner directory of extract when not empty; it
// returns its base URL.
func startService(t *testing.T, extract string) string {
	t.Helper()
	return ecpstest.Start(t, ecpstest.Options{
		Clients: func(publicURL string) []api.Client {
			return []api.Client{{ID: testClientID, Name: "Démo IdP (dev)", SecretSHA256: sha256.Sum256([]byte(testClientSecret)),
				Scopes: []string{"authentication", "activation"}, RedirectURIs: []string{publicURL + "/demo/callback"}}}
		},
		Operators: []api.Operator{{Name: "demo-desk", KeySHA256: sha256.Sum256([]byte(testDeskKey))}},
		Directory: extract,
	})
}

// demoExtract is the practitioner directory that `make run` loads.
const demoExtract = "../../deploy/dev/PS_LibreAcces_Personne_activite_demo.txt"

// buildDevice builds the real ecps-device binary, as `make build` does.
func buildDevice(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "ecps-device")
	cmd := exec.Command("go", "build", "-o", bin, "github.com/ecps-sante/ecps/cmd/ecps-device")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ecps-device: %v\n%s", err, out)
	}
	return bin
}

func TestDemoLoginApproved(t *testing.T) {
	base := startService(t, "")
	device := buildDevice(t)
	stateDir := filepath.Join(t.TempDir(), "var", "demo")
	cfg := config{URL: base, ClientID: testClientID, ClientSecret: testClientSecret, DeskKey: testDeskKey,
		Device: device, StateDir: stateDir, Subject: testSubject, Wait: 10}

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var out bytes.Buffer
	if err := demo(ctx, cfg, &out); err != nil {
		t.Fatalf("demo: %v\noutput:\n%s", err, out.String())
	}
	got := out.String()

	// The approved result, as the IdP's long-poll returned it.
	m := regexp.MustCompile(`(?s)→ HTTP 200 after [^\n]*\n(\s*\{.*?\n\s*\})\n`).FindStringSubmatch(got)
	if m == nil {
		t.Fatalf("no HTTP 200 poll result in the output:\n%s", got)
	}
	var res struct {
		Status   string   `json:"status"`
		Sub      string   `json:"sub"`
		AMR      []string `json:"amr"`
		DeviceID string   `json:"device_id"`
	}
	if err := json.Unmarshal([]byte(m[1]), &res); err != nil {
		t.Fatalf("poll result %q: %v", m[1], err)
	}
	if res.Status != "approved" || res.Sub != testSubject || res.DeviceID == "" || len(res.AMR) == 0 {
		t.Errorf("poll result %+v, want approved for %s", res, testSubject)
	}

	// The phone's part is the real CLI, each command shown before its output;
	// the number typed is the IdP's verification_number.
	num := regexp.MustCompile(`verification_number\s+(\d+)`).FindStringSubmatch(got)
	if num == nil {
		t.Fatalf("no verification_number in the output:\n%s", got)
	}
	for _, want := range []*regexp.Regexp{
		regexp.MustCompile(`(?m)^\$ ` + regexp.QuoteMeta(device) + ` -state \S+ enrol 'ecps://enrol\?[^']+'\nenrolled device ` + res.DeviceID),
		regexp.MustCompile(`(?m)^\$ ` + regexp.QuoteMeta(device) + ` -state \S+ challenges\nCHALLENGE_ID`),
		regexp.MustCompile(`(?m)^\$ ` + regexp.QuoteMeta(device) + ` -state \S+ show chl_\S+\nchallenge: `),
		regexp.MustCompile(`(?m)^\$ ` + regexp.QuoteMeta(device) + ` -state \S+ approve (chl_\S+) --number ` + num[1] + `\napproved challenge chl_`),
	} {
		if !want.MatchString(got) {
			t.Errorf("output does not match %s:\n%s", want, got)
		}
	}
	// No directory: said at the lookup and after the approval.
	if !strings.Contains(got, "no practitioner directory is loaded: the desk checks the ID document alone") ||
		!strings.Contains(got, "(no `identity` in the result: no practitioner directory is loaded)") {
		t.Errorf("the output does not say that no directory is loaded:\n%s", got)
	}
	// The long-poll was started before the approval.
	if sent, approve := strings.Index(got, "request sent"), strings.Index(got, " approve chl_"); sent < 0 || approve < sent {
		t.Errorf("the long-poll is not shown started before the approval:\n%s", got)
	}
	// No secret is printed.
	for _, secret := range []string{testDeskKey, testClientSecret} {
		if strings.Contains(got, secret) {
			t.Errorf("the output shows a secret:\n%s", got)
		}
	}

	// Clean-up: the state file is gone, the demo device revoked.
	if entries, err := os.ReadDir(stateDir); err != nil || len(entries) != 0 {
		t.Errorf("state directory after the demo: %v, %v", entries, err)
	}
	if st := deskDeviceStatus(t, base, res.DeviceID); st != "revoked" {
		t.Errorf("demo device %s is %q after the demo, want revoked", res.DeviceID, st)
	}

	// Run again: the clean-up leaves the practitioner's limits free.
	out.Reset()
	if err := demo(ctx, cfg, &out); err != nil {
		t.Fatalf("second demo: %v\noutput:\n%s", err, out.String())
	}
}

// With make run's demo directory: the desk's lookup shows the
// practitioner's identity, and the approval carries it (printed as the JSON
// the IdP got, then as the desk shows it).
func TestDemoLoginWithIdentity(t *testing.T) {
	base := startService(t, demoExtract)
	cfg := config{URL: base, ClientID: testClientID, ClientSecret: testClientSecret, DeskKey: testDeskKey,
		Device: buildDevice(t), StateDir: filepath.Join(t.TempDir(), "var", "demo"), Subject: testSubject, Wait: 10}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var out bytes.Buffer
	if err := demo(ctx, cfg, &out); err != nil {
		t.Fatalf("demo: %v\noutput:\n%s", err, out.String())
	}
	got := out.String()
	identity := `     Docteur Hélène DUPRÉ-LEFÈVRE, Médecin (Civil)   [directory version `
	places := `     specialties   Médecine Générale (SM), Cardiologie et maladies vasculaires (SM)
     practises at CABINET DU DR DUPRÉ-LEFÈVRE, 75012 PARIS (75): Libéral, indépendant, artisan, commerçant; Cabinet individuel
                  CENTRE HOSPITALIER DE BASTIA, 20600 BASTIA (2B): Salarié; Etablissement public de santé
                  CENTRE DE SANTÉ DE SARTÈNE, 20100 SARTÈNE (2A): Bénévole; Centre de santé
`
	lookup := strings.Index(got, "Desk: look practitioner "+testSubject+" up in the directory")
	activate := strings.Index(got, "Desk: activate a phone")
	approved := strings.Index(got, "== the IdP now logs in practitioner "+testSubject)
	if lookup < 0 || activate < lookup || approved < activate {
		t.Fatalf("steps out of order (lookup %d, activation %d, approval %d):\n%s", lookup, activate, approved, got)
	}
	for what, part := range map[string]string{"the lookup": got[lookup:activate], "the approval": got[approved:]} {
		if !strings.Contains(part, identity) || !strings.Contains(part, places) {
			t.Errorf("%s does not show the identity:\n%s", what, part)
		}
	}
	if !strings.Contains(got[approved:], "with their identity from the RPPS directory (the result's `identity`):") {
		t.Errorf("the approval's identity is not introduced:\n%s", got[approved:])
	}
	// The IdP's JSON, as it got it.
	body := got[strings.Index(got, "IdP: the long-poll returns the result"):approved]
	for _, want := range []string{`"identity": {`, `"idnat": "810001234565"`, `"family_name": "DUPRÉ-LEFÈVRE"`, `"department": "2B"`} {
		if !strings.Contains(body, want) {
			t.Errorf("the poll result lacks %s:\n%s", want, body)
		}
	}

	// A practitioner absent from the directory: said before anything is created.
	cfg.Subject = "810100000016"
	out.Reset()
	err := demo(ctx, cfg, &out)
	if err == nil || !strings.Contains(err.Error(), "absent from the loaded directory") || strings.Contains(out.String(), "activate a phone") {
		t.Fatalf("demo for an absent practitioner: %v\n%s", err, out.String())
	}
}

func deskDeviceStatus(t *testing.T, base, id string) string {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, base+"/api/v1/desk/practitioners/"+testSubject+"/devices", nil)
	req.Header.Set("Authorization", "Bearer "+testDeskKey)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var list struct {
		Devices []struct {
			DeviceID string `json:"device_id"`
			Status   string `json:"status"`
		} `json:"devices"`
	}
	if err := json.NewDecoder(res.Body).Decode(&list); err != nil {
		t.Fatal(err)
	}
	for _, d := range list.Devices {
		if d.DeviceID == id {
			return d.Status
		}
	}
	return ""
}

func writeCredentials(t *testing.T, url string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "dev-credentials.env")
	body := "# Development only\nECPS_DEMO_URL=" + url + "\nECPS_DEMO_CLIENT_ID=" + testClientID +
		"\nECPS_DEMO_CLIENT_SECRET=" + testClientSecret + "\nECPS_DEMO_DESK_KEY=" + testDeskKey + "\n"
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func runDemo(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), args, &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

// Without `make run`, the demo says so before creating anything.
func TestDemoWithoutService(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "http://" + ln.Addr().String()
	ln.Close() // nothing listens there now

	// A phone client that exists, so that only the service is missing.
	device := filepath.Join(t.TempDir(), "ecps-device")
	if err := os.WriteFile(device, []byte("#!/bin/sh\nexit 3\n"), 0o700); err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr := runDemo(t, "-credentials", writeCredentials(t, url), "-device", device)
	if code != exitError || !strings.Contains(stderr, "no e-CPS service answers at "+url) || !strings.Contains(stderr, "make run") {
		t.Errorf("exit %d, stderr %q; want 1 and a message naming the URL and make run", code, stderr)
	}
	if stdout != "" {
		t.Errorf("stdout %q, want nothing", stdout)
	}
}

func TestDemoCredentials(t *testing.T) {
	t.Run("fail/missing file", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "dev-credentials.env")
		code, _, stderr := runDemo(t, "-credentials", path)
		if code != exitUsage || !strings.Contains(stderr, path+" not found") || !strings.Contains(stderr, "make run") {
			t.Errorf("exit %d, stderr %q", code, stderr)
		}
	})
	t.Run("fail/incomplete", func(t *testing.T) {
		code, _, stderr := runDemo(t, "-credentials", "", "-url", "http://127.0.0.1:1")
		if code != exitUsage || !strings.Contains(stderr, "-client-id") || !strings.Contains(stderr, "-desk-key") {
			t.Errorf("exit %d, stderr %q", code, stderr)
		}
	})
	t.Run("fail/not KEY=VALUE", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "bad.env")
		if err := os.WriteFile(path, []byte("# ok\nECPS_DEMO_URL\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if code, _, stderr := runDemo(t, "-credentials", path); code != exitUsage || !strings.Contains(stderr, path+":2") {
			t.Errorf("exit %d, stderr %q", code, stderr)
		}
	})
	t.Run("ok/file, flags override", func(t *testing.T) {
		path := writeCredentials(t, "http://127.0.0.1:8080/")
		cfg, err := loadConfig(path, config{DeskKey: "other-key"})
		if err != nil {
			t.Fatal(err)
		}
		want := config{URL: "http://127.0.0.1:8080", ClientID: testClientID, ClientSecret: testClientSecret, DeskKey: "other-key"}
		if cfg != want {
			t.Errorf("config %+v, want %+v", cfg, want)
		}
	})
	t.Run("ok/flags only, file missing", func(t *testing.T) {
		flags := config{URL: "http://h:1", ClientID: "c", ClientSecret: "s", DeskKey: "k"}
		cfg, err := loadConfig(filepath.Join(t.TempDir(), "none.env"), flags)
		if err != nil || cfg != flags {
			t.Errorf("config %+v, %v", cfg, err)
		}
	})
	t.Run("ok/quoted values and export", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "q.env")
		body := "export ECPS_DEMO_URL=\"http://h:2\"\nECPS_DEMO_CLIENT_ID='c'\nECPS_DEMO_CLIENT_SECRET=s\n\nECPS_DEMO_DESK_KEY=k\n"
		if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		cfg, err := loadConfig(path, config{})
		if want := (config{URL: "http://h:2", ClientID: "c", ClientSecret: "s", DeskKey: "k"}); err != nil || cfg != want {
			t.Errorf("config %+v, %v; want %+v", cfg, err, want)
		}
	})
}

func TestShellQuote(t *testing.T) {
	for in, want := range map[string]string{
		"bin/ecps-device":                       "bin/ecps-device",
		"--number":                              "--number",
		"ecps://enrol?a=x&s=y&h=http%3A%2F%2Fh": "'ecps://enrol?a=x&s=y&h=http%3A%2F%2Fh'",
		"it's":                                  `'it'\''s'`,
		"":                                      "''",
	} {
		if got := shellQuote(in); got != want {
			t.Errorf("shellQuote(%q) = %s, want %s", in, got, want)
		}
	}
}

func TestDemoKeycloak(t *testing.T) {
	// The demo realm: an issuer on a free port, throw-away keys in a file.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	issuer := "http://" + ln.Addr().String() + "/realms/ecps-demo"
	ln.Close()
	var keys jose.JSONWebKeySet
	for _, alg := range []jose.SignatureAlgorithm{jose.RS256, jose.ES256} {
		k, err := keycloaktest.NewKey(alg)
		if err != nil {
			t.Fatal(err)
		}
		keys.Keys = append(keys.Keys, k)
	}
	keysFile := filepath.Join(t.TempDir(), "dev-keycloak-keys.json")
	b, _ := json.Marshal(keys)
	if err := os.WriteFile(keysFile, b, 0o600); err != nil {
		t.Fatal(err)
	}
	base := ecpstest.Start(t, ecpstest.Options{
		Operators:      []api.Operator{{Name: "demo-desk", KeySHA256: sha256.Sum256([]byte(testDeskKey))}},
		KeycloakRealms: []keycloak.Realm{{Issuer: issuer, ClientNames: map[string]string{"ecps-demo-client": "Démo Keycloak (dev)"}}},
	})
	device := buildDevice(t)
	stateDir := filepath.Join(t.TempDir(), "var", "demo")
	cfg := config{URL: base, ClientID: testClientID, ClientSecret: testClientSecret, DeskKey: testDeskKey,
		Device: device, StateDir: stateDir, Subject: testSubject, Wait: 10, KeycloakIssuer: issuer, KeycloakKeys: keysFile}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var out bytes.Buffer
	if err := keycloakDemo(ctx, cfg, &out); err != nil {
		t.Fatalf("demo: %v\noutput:\n%s", err, out.String())
	}
	got := out.String()
	if testing.Verbose() {
		t.Log(got)
	}
	for _, want := range []*regexp.Regexp{
		regexp.MustCompile(`POST \S+/api/v1/keycloak/ciba[^\n]*\n(.*\n)*?   → HTTP 201 Created`),
		regexp.MustCompile(`(?m)^\$ ` + regexp.QuoteMeta(device) + ` -state \S+ approve chl_\S+ --number \d\d\napproved challenge chl_`),
		regexp.MustCompile(`(?m)^\$ ` + regexp.QuoteMeta(device) + ` -state \S+ approve chl_\S+\napproved challenge chl_`),
		regexp.MustCompile(`"status": "SUCCEED"`),
		regexp.MustCompile(`"amr": "hwk mfa pin"`),
		regexp.MustCompile(`Keycloak's request is now approved`),
		regexp.MustCompile(`client:          Démo Keycloak \(dev\)`),
		regexp.MustCompile(`no number to type`),
	} {
		if !want.MatchString(got) {
			t.Errorf("output does not match %s:\n%s", want, got)
		}
	}
	if strings.Count(got, "Keycloak's request is now approved") != 2 {
		t.Errorf("want two approved logins:\n%s", got)
	}
	if entries, err := os.ReadDir(stateDir); err != nil || len(entries) != 0 {
		t.Errorf("state directory after the demo: %v, %v", entries, err)
	}
}
