// Command ecps-demo plays one e-CPS login from end to end against a running
// service (the one `make run` starts) and prints every step: the desk looks
// the practitioner up in the directory (their identity, when one is loaded)
// and activates a phone, the reference phone client (bin/ecps-device, run as
// a separate program, each command printed before its output) enrols, the
// IdP creates a push login and long-polls for its result, the phone lists its
// challenges and approves with the number the IdP shows, and the IdP's poll
// returns the approved result, with the practitioner's identity. At the end
// the demo device is revoked and its state file removed, so that demos can be
// run again and again.
//
// With -keycloak (make demo-keycloak) the relying party is a Keycloak realm
// instead of an IdP client: ecps-demo plays the realm that `make run`
// configured (keycloak/keycloaktest, with the realm's throw-away keys that
// `ecpsd dev-config` wrote), sends Keycloak's CIBA channel requests and
// shows the callbacks the service sends back: once with the verification
// number as binding message, once with a message and no number.
//
//	ecps-demo [-keycloak] [-credentials var/dev-credentials.env] [-url URL -client-id ID -client-secret S -desk-key K]
//
// The credentials are the dev server's demo ones, which `ecpsd dev-config`
// (run by `make run`) writes in clear to var/dev-credentials.env: a dev-only
// file. Flags override the file's values.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

// Exit codes.
const (
	exitOK    = 0
	exitError = 1 // the demo failed
	exitUsage = 2 // bad command line or credentials
)

// Keys of the credentials file (written by `ecpsd dev-config`).
const (
	envURL          = "ECPS_DEMO_URL"
	envClientID     = "ECPS_DEMO_CLIENT_ID"
	envClientSecret = "ECPS_DEMO_CLIENT_SECRET"
	envDeskKey      = "ECPS_DEMO_DESK_KEY"
	envKCIssuer     = "ECPS_DEMO_KEYCLOAK_ISSUER"
	envKCKeys       = "ECPS_DEMO_KEYCLOAK_KEYS"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// config is what one demo run needs.
type config struct {
	URL          string // service base URL
	ClientID     string // IdP client (HTTP Basic), scope authentication
	ClientSecret string
	DeskKey      string // desk operator key (Bearer)
	Device       string // the ecps-device binary
	StateDir     string // where the throw-away device state file goes
	Subject      string // the practitioner's idNat
	Wait         int    // ?wait= of the IdP's long-poll, seconds
	// The Keycloak realm that -keycloak plays: its issuer and the file of
	// its private keys (a JWKS).
	KeycloakIssuer string
	KeycloakKeys   string
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("ecps-demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	credentials := fs.String("credentials", "var/dev-credentials.env", "dev credentials `file` written by `ecpsd dev-config` (make run); empty: flags only")
	var flagCfg config
	fs.StringVar(&flagCfg.URL, "url", "", "service base `URL` (overrides "+envURL+")")
	fs.StringVar(&flagCfg.ClientID, "client-id", "", "IdP client `id` (overrides "+envClientID+")")
	fs.StringVar(&flagCfg.ClientSecret, "client-secret", "", "IdP client `secret` (overrides "+envClientSecret+")")
	fs.StringVar(&flagCfg.DeskKey, "desk-key", "", "desk operator `key` (overrides "+envDeskKey+")")
	device := fs.String("device", "bin/ecps-device", "the ecps-device `binary` that plays the phone")
	stateDir := fs.String("state-dir", "var/demo", "`directory` of the demo device's throw-away state file")
	subject := fs.String("subject", "810001234565", "the practitioner's `idNat`")
	timeout := fs.Duration("timeout", 2*time.Minute, "give up after this long")
	withKeycloak := fs.Bool("keycloak", false, "play a Keycloak realm's CIBA logins instead of an IdP client's (make demo-keycloak)")
	fs.StringVar(&flagCfg.KeycloakIssuer, "keycloak-issuer", "", "the Keycloak realm's `issuer` (overrides "+envKCIssuer+")")
	fs.StringVar(&flagCfg.KeycloakKeys, "keycloak-keys", "", "`file` of the realm's private keys (overrides "+envKCKeys+")")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	if fs.NArg() != 0 {
		fmt.Fprintf(stderr, "ecps-demo: unexpected argument %q\n", fs.Arg(0))
		fs.Usage()
		return exitUsage
	}
	cfg, err := loadConfig(*credentials, flagCfg)
	if err == nil && *withKeycloak && (cfg.KeycloakIssuer == "" || cfg.KeycloakKeys == "") {
		err = fmt.Errorf("-keycloak needs the demo realm (%s and %s, written by `make run`, or -keycloak-issuer and -keycloak-keys):"+
			" restart `make run`, whose dev config now has the realm", envKCIssuer, envKCKeys)
	}
	if err != nil {
		fmt.Fprintf(stderr, "ecps-demo: %v\n", err)
		return exitUsage
	}
	cfg.Device, cfg.StateDir, cfg.Subject, cfg.Wait = *device, *stateDir, *subject, 10
	if *timeout <= 0 {
		fmt.Fprintln(stderr, "ecps-demo: -timeout must be positive")
		return exitUsage
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	run := demo
	if *withKeycloak {
		run = keycloakDemo
	}
	if err := run(ctx, cfg, stdout); err != nil {
		fmt.Fprintf(stderr, "ecps-demo: %v\n", err)
		return exitError
	}
	return exitOK
}

// loadConfig reads the credentials file (if path is not empty) and lets the
// non-empty fields of flags override it. A missing file is an error only
// when the flags do not give everything.
func loadConfig(path string, flags config) (config, error) {
	var cfg config
	var fileErr error
	if path != "" {
		env, err := readEnvFile(path)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			fileErr = fmt.Errorf("%s not found: start the dev server with `make run` in another terminal (it writes that file), or give -url, -client-id, -client-secret and -desk-key", path)
		case err != nil:
			return config{}, err
		default:
			cfg = config{URL: env[envURL], ClientID: env[envClientID], ClientSecret: env[envClientSecret], DeskKey: env[envDeskKey],
				KeycloakIssuer: env[envKCIssuer], KeycloakKeys: env[envKCKeys]}
		}
	}
	for _, f := range []struct {
		dst *string
		v   string
	}{
		{&cfg.URL, flags.URL}, {&cfg.ClientID, flags.ClientID}, {&cfg.ClientSecret, flags.ClientSecret}, {&cfg.DeskKey, flags.DeskKey},
		{&cfg.KeycloakIssuer, flags.KeycloakIssuer}, {&cfg.KeycloakKeys, flags.KeycloakKeys},
	} {
		if f.v != "" {
			*f.dst = f.v
		}
	}
	var missing []string
	for _, f := range []struct{ name, v string }{
		{"-url (" + envURL + ")", cfg.URL}, {"-client-id (" + envClientID + ")", cfg.ClientID},
		{"-client-secret (" + envClientSecret + ")", cfg.ClientSecret}, {"-desk-key (" + envDeskKey + ")", cfg.DeskKey},
	} {
		if f.v == "" {
			missing = append(missing, f.name)
		}
	}
	if len(missing) > 0 {
		if fileErr != nil {
			return config{}, fileErr
		}
		return config{}, fmt.Errorf("missing %s", strings.Join(missing, ", "))
	}
	cfg.URL = strings.TrimRight(cfg.URL, "/")
	return cfg, nil
}

// readEnvFile reads KEY=VALUE lines; blank lines and # comments are skipped,
// a value may be wrapped in single or double quotes.
func readEnvFile(path string) (map[string]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	env := map[string]string{}
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(strings.TrimPrefix(line, "export "), "=")
		if !ok || strings.TrimSpace(k) == "" {
			return nil, fmt.Errorf("%s:%d: not a KEY=VALUE line", path, n)
		}
		v = strings.TrimSpace(v)
		if len(v) >= 2 && (v[0] == '"' || v[0] == '\'') && v[len(v)-1] == v[0] {
			v = v[1 : len(v)-1]
		}
		env[strings.TrimSpace(k)] = v
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return env, nil
}
