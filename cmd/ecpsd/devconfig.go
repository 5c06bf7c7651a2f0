package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/go-jose/go-jose/v4"
	"go.yaml.in/yaml/v3"
)

// devCredentialsFile is written next to the dev configuration: the demo
// credentials in clear, for `make demo` (cmd/ecps-demo). Development only.
const devCredentialsFile = "dev-credentials.env"

// devKeycloakKeysFile is written next to the dev configuration: the
// throw-away private keys of the demo Keycloak realm, for `make
// demo-keycloak`, which plays that realm. Development only.
const devKeycloakKeysFile = "dev-keycloak-keys.json"

// Names of the demo Keycloak realm and CIBA client.
const (
	devKeycloakRealm  = "ecps-demo"
	devKeycloakClient = "ecps-demo-client"
)

// devConfig writes a development configuration with fresh demo credentials
// and prints them once. The configuration stores them only hashed; for the
// scripted demo they are also written in clear, mode 0600, to
// <dir of -out>/dev-credentials.env (dev only: production configs are
// written by hand, with `ecpsd hash-secret`, and have no such file).
func devConfig(args []string, stdout, stderr io.Writer, env func(string) string) int {
	fs := flag.NewFlagSet("ecpsd dev-config", flag.ContinueOnError)
	fs.SetOutput(stderr)
	out := fs.String("out", "", "file to write (mode 0600)")
	listen := fs.String("listen", "127.0.0.1:8080", "listen address")
	redisURL := fs.String("redis-url", "redis://127.0.0.1:6379/0", "Redis URL")
	publicURL := fs.String("public-url", "", "public base URL (default http://<listen>)")
	kcListen := fs.String("keycloak-listen", "127.0.0.1:8180", "address of the demo Keycloak realm that `make demo-keycloak` plays (empty: none)")
	if err := fs.Parse(args); err != nil || *out == "" {
		fmt.Fprintln(stderr, "usage: ecpsd dev-config -out FILE [-listen ADDR] [-redis-url URL] [-public-url URL] [-keycloak-listen ADDR]")
		return exitConfig
	}
	if *publicURL == "" {
		*publicURL = "http://" + *listen
	}
	clientSecret, deskKey := randomSecret(), randomSecret()
	fc := defaults()
	fc.Listen = *listen
	fc.PublicURL = *publicURL
	fc.Dev = true
	fc.Redis.URL = *redisURL
	fc.Push.Provider = "log"
	fc.Clients = []clientConfig{{ID: "demo-idp", Name: "Démo IdP (dev)", SecretSHA256: hashList{sha256Hex(clientSecret)},
		Scopes: []string{"authentication", "activation"}, RedirectURIs: []string{*publicURL + "/demo/callback"}}}
	fc.DeskOperators = []opConfig{{Name: "demo-desk", KeySHA256: hashList{sha256Hex(deskKey)}}}
	var kcIssuer, kcKeys string
	if *kcListen != "" {
		kcIssuer = "http://" + *kcListen + "/realms/" + devKeycloakRealm
		kcKeys = filepath.Join(filepath.Dir(*out), devKeycloakKeysFile)
		fc.Keycloak.Realms = []realmConfig{{Issuer: kcIssuer,
			ClientNames: map[string]string{devKeycloakClient: "Démo Keycloak (dev)"}}}
	}
	if _, err := validate(fc); err != nil {
		fmt.Fprintln(stderr, err)
		return exitConfig
	}
	b, err := yaml.Marshal(fc)
	if err != nil {
		fmt.Fprintln(stderr, "dev-config:", err)
		return exitFailed
	}
	if err := os.MkdirAll(filepath.Dir(*out), 0o700); err != nil {
		fmt.Fprintln(stderr, "dev-config:", err)
		return exitFailed
	}
	header := "# Development configuration written by `ecpsd dev-config`. Not for production.\n"
	if err := writePrivateFile(*out, append([]byte(header), b...)); err != nil {
		fmt.Fprintln(stderr, "dev-config:", err)
		return exitFailed
	}
	if kcKeys != "" {
		keys, err := devRealmKeys()
		if err == nil {
			err = writePrivateFile(kcKeys, keys)
		}
		if err != nil {
			fmt.Fprintln(stderr, "dev-config: demo Keycloak realm keys:", err)
			return exitFailed
		}
	}
	credPath := filepath.Join(filepath.Dir(*out), devCredentialsFile)
	if err := writePrivateFile(credPath, devCredentials(*out, *publicURL, fc.Clients[0].ID, clientSecret, deskKey, kcIssuer, kcKeys)); err != nil {
		fmt.Fprintln(stderr, "dev-config:", err)
		return exitFailed
	}
	fmt.Fprintf(stdout, `== e-CPS dev server: demo credentials (stored only hashed in %s;
   in clear, for `+"`make demo`"+` only, in %s, mode 0600: dev only)
   public URL      %s
   IdP client      id: demo-idp   secret: %s
   desk operator   key: %s
   try:            curl -s -H "Authorization: Bearer %s" -H 'Content-Type: application/json' \
                     -d '{"subject":"810001234565"}' %s/api/v1/desk/activations
`, *out, credPath, *publicURL, clientSecret, deskKey, deskKey, *publicURL)
	return exitOK
}

// devCredentials is the content of dev-credentials.env: KEY=VALUE lines
// (values need no quoting: a URL and base64url secrets), also readable by
// a shell's `.`.
func devCredentials(configPath, publicURL, clientID, clientSecret, deskKey, kcIssuer, kcKeys string) []byte {
	b := fmt.Appendf(nil, `# Development only: the demo credentials of the dev server configured by
# %s, in clear (that file holds only their hashes). Written by
# `+"`ecpsd dev-config`"+` on every `+"`make run`"+`; read by `+"`make demo`"+` (cmd/ecps-demo).
# Never copy these lines into a production setup.
ECPS_DEMO_URL=%s
ECPS_DEMO_CLIENT_ID=%s
ECPS_DEMO_CLIENT_SECRET=%s
ECPS_DEMO_DESK_KEY=%s
`, configPath, publicURL, clientID, clientSecret, deskKey)
	if kcIssuer != "" {
		b = fmt.Appendf(b, `# The demo Keycloak realm that `+"`make demo-keycloak`"+` plays, and its throw-away private keys.
ECPS_DEMO_KEYCLOAK_ISSUER=%s
ECPS_DEMO_KEYCLOAK_KEYS=%s
`, kcIssuer, kcKeys)
	}
	return b
}

// devRealmKeys makes the demo realm's throw-away signing keys, RS256 (what
// Keycloak uses by default) and ES256, as a JWKS with the private parts.
func devRealmKeys() ([]byte, error) {
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	set := jose.JSONWebKeySet{Keys: []jose.JSONWebKey{
		{Key: rsaKey, KeyID: "demo-rs256-" + randomSecret()[:8], Algorithm: string(jose.RS256), Use: "sig"},
		{Key: ecKey, KeyID: "demo-es256-" + randomSecret()[:8], Algorithm: string(jose.ES256), Use: "sig"},
	}}
	return json.MarshalIndent(set, "", "  ")
}

func randomSecret() string {
	b := make([]byte, 24)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

func sha256Hex(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

// writePrivateFile writes a 0600 file through a temporary file and a rename,
// so that an existing file of another mode is replaced, not reused.
func writePrivateFile(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".dev-config-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
