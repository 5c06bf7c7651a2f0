package main

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"go.yaml.in/yaml/v3"
)

// devCredentialsFile is written next to the dev configuration: the demo
// credentials in clear, for `make demo` (cmd/ecps-demo). Development only.
const devCredentialsFile = "dev-credentials.env"

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
	if err := fs.Parse(args); err != nil || *out == "" {
		fmt.Fprintln(stderr, "usage: ecpsd dev-config -out FILE [-listen ADDR] [-redis-url URL] [-public-url URL]")
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
	credPath := filepath.Join(filepath.Dir(*out), devCredentialsFile)
	if err := writePrivateFile(credPath, devCredentials(*out, *publicURL, fc.Clients[0].ID, clientSecret, deskKey)); err != nil {
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
func devCredentials(configPath, publicURL, clientID, clientSecret, deskKey string) []byte {
	return fmt.Appendf(nil, `# Development only: the demo credentials of the dev server configured by
# %s, in clear (that file holds only their hashes). Written by
# `+"`ecpsd dev-config`"+` on every `+"`make run`"+`; read by `+"`make demo`"+` (cmd/ecps-demo).
# Never copy these lines into a production setup.
ECPS_DEMO_URL=%s
ECPS_DEMO_CLIENT_ID=%s
ECPS_DEMO_CLIENT_SECRET=%s
ECPS_DEMO_DESK_KEY=%s
`, configPath, publicURL, clientID, clientSecret, deskKey)
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
