package main

import (
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"os"
	"reflect"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/ecps-sante/ecps/challenge"
	"github.com/ecps-sante/ecps/keycloak"
	"github.com/ecps-sante/ecps/push"
)

// fileConfig is the YAML file of the contract (PROTOCOL.md, Operations and
// Keycloak CIBA channel), plus the keys this service adds: metrics_listen,
// pprof, trusted_proxies, redis.key_prefix, redis.min_replicas_ack,
// redis.replica_ack_timeout, push.fcm.timeout, push.fcm.concurrency and
// push.fcm.queue_shards.
// Durations are strings here; validate turns them into a Config.
type fileConfig struct {
	Listen         string         `yaml:"listen"`
	MetricsListen  string         `yaml:"metrics_listen,omitempty"`
	Pprof          bool           `yaml:"pprof,omitempty"` // net/http/pprof on metrics_listen
	PublicURL      string         `yaml:"public_url"`
	Dev            bool           `yaml:"dev"`
	TrustedProxies []string       `yaml:"trusted_proxies,omitempty"`
	Redis          redisConfig    `yaml:"redis"`
	Clients        []clientConfig `yaml:"clients"`
	DeskOperators  []opConfig     `yaml:"desk_operators"`
	Push           pushConfig     `yaml:"push"`
	Limits         limitsConfig   `yaml:"limits"`
	AuditRetention string         `yaml:"audit_retention"`
	Keycloak       keycloakConfig `yaml:"keycloak,omitempty"`
}

// keycloakConfig is the Keycloak CIBA channel: the realms allowed to
// delegate logins (docs/keycloak.md).
type keycloakConfig struct {
	Realms []realmConfig `yaml:"realms,omitempty"`
}

type realmConfig struct {
	Issuer          string            `yaml:"issuer"`
	JWKSURL         string            `yaml:"jwks_url"`
	JWKSFile        string            `yaml:"jwks_file"`
	CallbackURL     string            `yaml:"callback_url"`
	LoginHintPrefix string            `yaml:"login_hint_prefix"`
	RequireNumber   bool              `yaml:"require_number"`
	ClientNames     map[string]string `yaml:"client_names"`
}

type redisConfig struct {
	URL       string         `yaml:"url,omitempty"`
	Addrs     []string       `yaml:"addrs,omitempty"`
	Sentinel  sentinelConfig `yaml:"sentinel,omitempty"`
	Password  string         `yaml:"password,omitempty"`
	KeyPrefix string         `yaml:"key_prefix"`
	// MinReplicasAck: replicas that must acknowledge an enrolment or a
	// decision before it is answered (WAIT); 0: none (standalone).
	MinReplicasAck int `yaml:"min_replicas_ack"`
	// ReplicaAckTimeout bounds that wait; past it the answer is 503.
	ReplicaAckTimeout string `yaml:"replica_ack_timeout,omitempty"`
}

type sentinelConfig struct {
	Master string   `yaml:"master"`
	Addrs  []string `yaml:"addrs,omitempty"`
}

type clientConfig struct {
	ID           string   `yaml:"id"`
	Name         string   `yaml:"name"`
	SecretSHA256 hashList `yaml:"secret_sha256"`
	Scopes       []string `yaml:"scopes"`
	RedirectURIs []string `yaml:"redirect_uris"`
}

type opConfig struct {
	Name      string   `yaml:"name"`
	KeySHA256 hashList `yaml:"key_sha256"`
}

// hashList is a secret's SHA-256 (hex), or a list of them while a secret is
// rotated (PROTOCOL.md, Operations): each one is accepted.
type hashList []string

func (h *hashList) UnmarshalYAML(n *yaml.Node) error {
	switch n.Kind {
	case yaml.ScalarNode:
		*h = hashList{n.Value}
		return nil
	case yaml.SequenceNode:
		var list []string
		if err := n.Decode(&list); err != nil {
			return err
		}
		*h = list
		return nil
	}
	*h = hashList{wrongType} // reported here: validate says nothing more
	return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: want a hash or a list of hashes", n.Line)}}
}

// wrongType marks a hashList whose YAML was neither a string nor a list.
const wrongType = "\x00wrong type"

// MarshalYAML writes one hash as a string.
func (h hashList) MarshalYAML() (any, error) {
	if len(h) == 1 {
		return h[0], nil
	}
	return []string(h), nil
}

type pushConfig struct {
	Provider string    `yaml:"provider"`
	FCM      fcmConfig `yaml:"fcm,omitempty"`
}

type fcmConfig struct {
	ProjectID       string `yaml:"project_id"`
	CredentialsFile string `yaml:"credentials_file"`
	Endpoint        string `yaml:"endpoint"`
	// Timeout bounds one send attempt (default 10 s); Concurrency is the
	// number of sends in flight per replica (default 32); QueueShards is
	// the number of streams the push queue is spread over (default 16,
	// push.DefaultShards; the same on every replica).
	Timeout     string `yaml:"timeout,omitempty"`
	Concurrency int    `yaml:"concurrency,omitempty"`
	QueueShards int    `yaml:"queue_shards,omitempty"`
}

type limitsConfig struct {
	ActivationTTL      string `yaml:"activation_ttl"`
	ActivationAttempts int    `yaml:"activation_attempts"`
	DevicesPerSubject  int    `yaml:"devices_per_subject"`
	PendingPerSubject  int    `yaml:"pending_per_subject"`
	PushesPerSubject   int    `yaml:"pushes_per_subject"`
	PushesWindow       string `yaml:"pushes_window"`
	DenialsBeforeBlock int    `yaml:"denials_before_block"`
	BlockDuration      string `yaml:"block_duration"`
	ClientRPS          int    `yaml:"client_rps"`
	ProofMaxSkew       string `yaml:"proof_max_skew"`
	QRTokenTTL         string `yaml:"qr_token_ttl"`
	NumberDigits       int    `yaml:"number_digits"`
	PollInterval       string `yaml:"poll_interval"`
	// Failed desk sign-ins per client address within the window before its
	// sign-ins are refused (this server's keys).
	DeskSignInFailures int    `yaml:"desk_signin_failures"`
	DeskSignInWindow   string `yaml:"desk_signin_window"`
}

// defaults are the contract's defaults.
func defaults() fileConfig {
	return fileConfig{
		Listen:    ":8080",
		PublicURL: "",
		Redis:     redisConfig{KeyPrefix: "ecps:", ReplicaAckTimeout: "100ms"},
		Push:      pushConfig{Provider: "log", FCM: fcmConfig{Timeout: "10s", Concurrency: 32, QueueShards: push.DefaultShards}},
		Limits: limitsConfig{ActivationTTL: "10m", ActivationAttempts: 5, DevicesPerSubject: 5,
			PendingPerSubject: 3, PushesPerSubject: 10, PushesWindow: "5m", DenialsBeforeBlock: 5,
			BlockDuration: "15m", ClientRPS: 100, ProofMaxSkew: "60s", QRTokenTTL: "30s",
			NumberDigits: 2, PollInterval: "2s", DeskSignInFailures: 10, DeskSignInWindow: "1m"},
		AuditRetention: "400d",
	}
}

// Config is the validated configuration.
type Config struct {
	File              fileConfig
	ActivationTTL     time.Duration
	PushesWindow      time.Duration
	BlockDuration     time.Duration
	ProofMaxSkew      time.Duration
	QRTokenTTL        time.Duration
	PollInterval      time.Duration
	DeskSignInWindow  time.Duration
	AuditRetention    time.Duration
	PushTimeout       time.Duration
	ReplicaAckTimeout time.Duration
	TrustedProxies    []string
	Clients           []client
	Operators         []operator
	Realms            []keycloak.Realm
}

type client struct {
	ID, Name     string
	SecretSHA256 [][32]byte // each accepted (two while a secret is rotated)
	Scopes       []string
	RedirectURIs []string
}

type operator struct {
	Name      string
	KeySHA256 [][32]byte // each accepted (two while a key is rotated)
}

// configError lists every problem found, one line each, naming the key.
type configError []string

func (e configError) Error() string { return strings.Join(e, "\n") }

// loadConfig reads the file, applies ECPS_<KEY> overrides from env and
// validates everything, returning all problems at once.
func loadConfig(path string, env func(string) string) (Config, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return Config{}, configError{fmt.Sprintf("config: cannot read %s: %v", path, errors.Unwrap(err))}
	}
	return parseConfig(raw, env)
}

func parseConfig(raw []byte, env func(string) string) (Config, error) {
	var root yaml.Node
	if err := yaml.Unmarshal(raw, &root); err != nil {
		return Config{}, configError{"config: not valid YAML: " + strings.TrimPrefix(err.Error(), "yaml: ")}
	}
	fc := defaults()
	var problems configError
	if len(root.Content) > 0 {
		keyAt := map[int]string{} // line -> dotted key, to name the key of a type error
		problems = append(problems, unknownKeys(root.Content[0], reflect.TypeOf(fc), "", keyAt)...)
		// Unknown keys are reported above; decode the rest to find every other problem too.
		if err := root.Decode(&fc); err != nil {
			problems = append(problems, describeYAMLError(err, keyAt)...)
		}
	}
	problems = append(problems, applyEnv(reflect.ValueOf(&fc).Elem(), "", env)...)
	cfg, err := validate(fc)
	if err != nil {
		problems = append(problems, err.(configError)...)
	}
	if len(problems) > 0 {
		return Config{}, problems
	}
	return cfg, nil
}

// unknownKeys walks the YAML mapping and names every key the struct lacks.
func unknownKeys(n *yaml.Node, t reflect.Type, path string, keyAt map[int]string) []string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	var out []string
	switch {
	case t.Kind() == reflect.Struct && n.Kind == yaml.MappingNode:
		fields := map[string]reflect.Type{}
		for i := 0; i < t.NumField(); i++ {
			tag := strings.Split(t.Field(i).Tag.Get("yaml"), ",")[0]
			fields[tag] = t.Field(i).Type
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			keyAt[k.Line] = join(path, k.Value)
			ft, ok := fields[k.Value]
			if !ok {
				out = append(out, fmt.Sprintf("config: unknown key %q (line %d)", join(path, k.Value), k.Line))
				continue
			}
			out = append(out, unknownKeys(v, ft, join(path, k.Value), keyAt)...)
		}
	case t.Kind() == reflect.Slice && n.Kind == yaml.SequenceNode:
		for i, item := range n.Content {
			keyAt[item.Line] = fmt.Sprintf("%s[%d]", path, i)
			out = append(out, unknownKeys(item, t.Elem(), fmt.Sprintf("%s[%d]", path, i), keyAt)...)
		}
	}
	return out
}

// describeYAMLError names the key of each type error ("line 19: cannot
// unmarshal !!str `five` into int" → "config: limits.activation_attempts: …").
func describeYAMLError(err error, keyAt map[int]string) []string {
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		return []string{"config: " + err.Error()}
	}
	var out []string
	for _, msg := range te.Errors {
		var line int
		if _, err := fmt.Sscanf(msg, "line %d:", &line); err == nil && keyAt[line] != "" {
			_, rest, _ := strings.Cut(msg, ": ")
			msg = keyAt[line] + ": wrong type (" + rest + ")"
		}
		out = append(out, "config: "+msg)
	}
	return out
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// applyEnv overrides each scalar key from ECPS_<KEY> (upper case, "." → "_").
func applyEnv(v reflect.Value, path string, env func(string) string) []string {
	var out []string
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		key := join(path, strings.Split(t.Field(i).Tag.Get("yaml"), ",")[0])
		f := v.Field(i)
		if f.Kind() == reflect.Struct {
			out = append(out, applyEnv(f, key, env)...)
			continue
		}
		name := "ECPS_" + strings.ToUpper(strings.ReplaceAll(key, ".", "_"))
		val := env(name)
		if val == "" {
			continue
		}
		switch f.Kind() {
		case reflect.String:
			f.SetString(val)
		case reflect.Bool:
			b, err := strconv.ParseBool(val)
			if err != nil {
				out = append(out, fmt.Sprintf("config: %s (%s): want true or false, got %q", key, name, val))
				continue
			}
			f.SetBool(b)
		case reflect.Int:
			n, err := strconv.Atoi(val)
			if err != nil {
				out = append(out, fmt.Sprintf("config: %s (%s): want an integer, got %q", key, name, val))
				continue
			}
			f.SetInt(int64(n))
		default:
			out = append(out, fmt.Sprintf("config: %s (%s): only scalar keys can be set from the environment; put it in the file", key, name))
		}
	}
	return out
}

// parseDuration accepts Go durations plus a "d" (24 h) suffix: "400d".
func parseDuration(s string) (time.Duration, error) {
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.Atoi(days)
		if err != nil || n <= 0 {
			return 0, fmt.Errorf("bad duration %q", s)
		}
		return time.Duration(n) * 24 * time.Hour, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("bad duration %q (want e.g. \"90s\", \"10m\", \"400d\")", s)
	}
	return d, nil
}

var knownScopes = map[string]bool{"authentication": true, "activation": true}

func validate(fc fileConfig) (Config, error) {
	var p configError
	bad := func(key, format string, args ...any) {
		p = append(p, "config: "+key+": "+fmt.Sprintf(format, args...))
	}
	cfg := Config{File: fc}

	if _, _, err := net.SplitHostPort(fc.Listen); err != nil {
		bad("listen", "want host:port, got %q", fc.Listen)
	}
	if fc.MetricsListen != "" {
		if _, _, err := net.SplitHostPort(fc.MetricsListen); err != nil {
			bad("metrics_listen", "want host:port, got %q", fc.MetricsListen)
		}
	}
	if fc.Pprof && fc.MetricsListen == "" {
		bad("pprof", "needs metrics_listen: the profiles are served only on the metrics listener, never on the public one")
	}
	if u, err := url.Parse(fc.PublicURL); err != nil || !u.IsAbs() || u.Host == "" || u.RawQuery != "" || u.Fragment != "" ||
		(u.Scheme != "https" && !(fc.Dev && u.Scheme == "http")) {
		bad("public_url", "want an absolute https URL (http only with dev: true), got %q", fc.PublicURL)
	}
	for i, tp := range fc.TrustedProxies {
		if _, err := netip.ParsePrefix(tp); err != nil {
			if _, err := netip.ParseAddr(tp); err != nil {
				bad(fmt.Sprintf("trusted_proxies[%d]", i), "want an IP address or CIDR, got %q", tp)
			}
		}
	}
	cfg.TrustedProxies = fc.TrustedProxies
	validateRedis(fc.Redis, bad)
	if fc.Redis.MinReplicasAck < 0 || fc.Redis.MinReplicasAck > 5 {
		bad("redis.min_replicas_ack", "want 0 (no wait) to 5, got %d", fc.Redis.MinReplicasAck)
	}
	if d, err := parseDuration(fc.Redis.ReplicaAckTimeout); err != nil || d < 10*time.Millisecond || d > time.Second {
		bad("redis.replica_ack_timeout", "want a duration from 10ms to 1s, got %q", fc.Redis.ReplicaAckTimeout)
	} else {
		cfg.ReplicaAckTimeout = d
	}

	seen := map[string]bool{}
	for i, c := range fc.Clients {
		key := fmt.Sprintf("clients[%d]", i)
		switch {
		case c.ID == "":
			bad(key+".id", "required")
		case seen[c.ID]:
			bad(key+".id", "duplicate client id %q", c.ID)
		case strings.HasPrefix(c.ID, challenge.KeycloakClientPrefix):
			bad(key+".id", "%q: ids starting with %q name the Keycloak realms' CIBA clients", c.ID, challenge.KeycloakClientPrefix)
		}
		seen[c.ID] = true
		if c.Name == "" {
			bad(key+".name", "required (shown on the phone as client_name)")
		}
		h := parseHashes(key+".secret_sha256", c.SecretSHA256, bad)
		if len(c.Scopes) == 0 {
			bad(key+".scopes", "at least one of authentication, activation")
		}
		for _, s := range c.Scopes {
			if !knownScopes[s] {
				bad(key+".scopes", "unknown scope %q (want authentication or activation)", s)
			}
		}
		for j, r := range c.RedirectURIs {
			if u, err := url.Parse(r); err != nil || !u.IsAbs() || u.Host == "" || u.Fragment != "" ||
				(u.Scheme != "https" && !(fc.Dev && u.Scheme == "http")) {
				bad(fmt.Sprintf("%s.redirect_uris[%d]", key, j), "want an absolute https URL, got %q", r)
			}
		}
		cfg.Clients = append(cfg.Clients, client{ID: c.ID, Name: c.Name, SecretSHA256: h, Scopes: c.Scopes, RedirectURIs: c.RedirectURIs})
	}
	seen = map[string]bool{}
	for i, o := range fc.DeskOperators {
		key := fmt.Sprintf("desk_operators[%d]", i)
		if o.Name == "" {
			bad(key+".name", "required")
		} else if seen[o.Name] {
			bad(key+".name", "duplicate operator name %q", o.Name)
		}
		seen[o.Name] = true
		h := parseHashes(key+".key_sha256", o.KeySHA256, bad)
		cfg.Operators = append(cfg.Operators, operator{Name: o.Name, KeySHA256: h})
	}

	switch fc.Push.Provider {
	case "log", "none":
	case "fcm":
		if fc.Push.FCM.ProjectID == "" {
			bad("push.fcm.project_id", "required with push.provider fcm")
		}
		if fc.Push.FCM.Endpoint != "" {
			if u, err := url.Parse(fc.Push.FCM.Endpoint); err != nil || !u.IsAbs() || u.Host == "" {
				bad("push.fcm.endpoint", "want an absolute URL, got %q", fc.Push.FCM.Endpoint)
			}
		}
		if d, err := parseDuration(fc.Push.FCM.Timeout); err != nil || d < time.Second || d > time.Minute {
			bad("push.fcm.timeout", "want a duration from 1s to 1m, got %q", fc.Push.FCM.Timeout)
		} else {
			cfg.PushTimeout = d
		}
		if n := fc.Push.FCM.Concurrency; n < 1 || n > 1024 {
			bad("push.fcm.concurrency", "want 1..1024, got %d", n)
		}
		if n := fc.Push.FCM.QueueShards; n < 1 || n > 256 {
			bad("push.fcm.queue_shards", "want 1..256, got %d", n)
		}
	default:
		bad("push.provider", "want fcm, log or none, got %q", fc.Push.Provider)
	}

	durations := []struct {
		key string
		val string
		dst *time.Duration
	}{
		{"limits.activation_ttl", fc.Limits.ActivationTTL, &cfg.ActivationTTL},
		{"limits.pushes_window", fc.Limits.PushesWindow, &cfg.PushesWindow},
		{"limits.block_duration", fc.Limits.BlockDuration, &cfg.BlockDuration},
		{"limits.proof_max_skew", fc.Limits.ProofMaxSkew, &cfg.ProofMaxSkew},
		{"limits.qr_token_ttl", fc.Limits.QRTokenTTL, &cfg.QRTokenTTL},
		{"limits.poll_interval", fc.Limits.PollInterval, &cfg.PollInterval},
		{"limits.desk_signin_window", fc.Limits.DeskSignInWindow, &cfg.DeskSignInWindow},
		{"audit_retention", fc.AuditRetention, &cfg.AuditRetention},
	}
	for _, d := range durations {
		v, err := parseDuration(d.val)
		if err != nil {
			bad(d.key, "%v", err)
		}
		*d.dst = v
	}
	ints := []struct {
		key      string
		val, min int
	}{
		{"limits.activation_attempts", fc.Limits.ActivationAttempts, 1},
		{"limits.devices_per_subject", fc.Limits.DevicesPerSubject, 1},
		{"limits.pending_per_subject", fc.Limits.PendingPerSubject, 1},
		{"limits.pushes_per_subject", fc.Limits.PushesPerSubject, 1},
		{"limits.denials_before_block", fc.Limits.DenialsBeforeBlock, 1},
		{"limits.client_rps", fc.Limits.ClientRPS, 1},
		{"limits.desk_signin_failures", fc.Limits.DeskSignInFailures, 1},
	}
	for _, n := range ints {
		if n.val < n.min {
			bad(n.key, "want an integer ≥ %d, got %d", n.min, n.val)
		}
	}
	if fc.Limits.NumberDigits < 2 || fc.Limits.NumberDigits > 6 {
		bad("limits.number_digits", "want 2..6, got %d", fc.Limits.NumberDigits)
	}
	cfg.Realms = validateRealms(fc.Keycloak, fc.Dev, bad)
	if len(p) > 0 {
		return Config{}, p
	}
	return cfg, nil
}

// validateRealms checks keycloak.realms: each realm's URLs, a unique
// issuer, and a jwks_file that holds a usable signing key.
func validateRealms(kc keycloakConfig, dev bool, bad func(key, format string, args ...any)) []keycloak.Realm {
	var out []keycloak.Realm
	seen := map[string]bool{}
	for i, rc := range kc.Realms {
		key := fmt.Sprintf("keycloak.realms[%d]", i)
		r := keycloak.Realm{Issuer: rc.Issuer, JWKSURL: rc.JWKSURL, JWKSFile: rc.JWKSFile, CallbackURL: rc.CallbackURL,
			LoginHintPrefix: rc.LoginHintPrefix, RequireNumber: rc.RequireNumber, ClientNames: rc.ClientNames}
		for _, problem := range r.Check(dev) {
			field, msg, _ := strings.Cut(problem, ": ")
			bad(key+"."+field, "%s", msg)
		}
		if rc.Issuer != "" && seen[rc.Issuer] {
			bad(key+".issuer", "duplicate realm %q", rc.Issuer)
		}
		seen[rc.Issuer] = true
		if rc.JWKSFile != "" {
			if data, err := os.ReadFile(rc.JWKSFile); err != nil {
				bad(key+".jwks_file", "cannot read %s: %v", rc.JWKSFile, errors.Unwrap(err))
			} else if _, err := keycloak.ParseJWKS(data); err != nil {
				bad(key+".jwks_file", "%s: %v", rc.JWKSFile, err)
			}
		}
		out = append(out, r)
	}
	return out
}

func validateRedis(r redisConfig, bad func(key, format string, args ...any)) {
	set := 0
	if r.URL != "" {
		set++
	}
	if len(r.Addrs) > 0 {
		set++
	}
	if r.Sentinel.Master != "" || len(r.Sentinel.Addrs) > 0 {
		set++
	}
	if set != 1 {
		bad("redis", "set exactly one of redis.url (standalone), redis.addrs (Cluster) or redis.sentinel (Sentinel)")
		return
	}
	if r.URL != "" {
		if u, err := url.Parse(r.URL); err != nil || (u.Scheme != "redis" && u.Scheme != "rediss") || u.Host == "" {
			bad("redis.url", "want redis://host:port/db or rediss://host:port/db, got %q", redactURL(r.URL))
		} else if _, err := redisURLOptions(r.URL); err != nil {
			bad("redis.url", "%v", err)
		}
	}
	for i, a := range r.Addrs {
		if _, _, err := net.SplitHostPort(a); err != nil {
			bad(fmt.Sprintf("redis.addrs[%d]", i), "want host:port, got %q", a)
		}
	}
	if r.Sentinel.Master != "" || len(r.Sentinel.Addrs) > 0 {
		if r.Sentinel.Master == "" {
			bad("redis.sentinel.master", "required with redis.sentinel")
		}
		if len(r.Sentinel.Addrs) == 0 {
			bad("redis.sentinel.addrs", "at least one host:port")
		}
		for i, a := range r.Sentinel.Addrs {
			if _, _, err := net.SplitHostPort(a); err != nil {
				bad(fmt.Sprintf("redis.sentinel.addrs[%d]", i), "want host:port, got %q", a)
			}
		}
	}
	if strings.ContainsAny(r.KeyPrefix, "{}") {
		bad("redis.key_prefix", "must not contain { or } (they are hash tags)")
	}
}

// redactURL hides a password in a URL for error messages, even in a URL
// that does not parse.
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err == nil {
		if u.User == nil {
			return s
		}
		return u.Redacted()
	}
	scheme, rest, ok := strings.Cut(s, "://")
	if at := strings.LastIndex(rest, "@"); ok && at >= 0 {
		return scheme + "://xxxxx@" + rest[at+1:]
	}
	if at := strings.LastIndex(s, "@"); at >= 0 {
		return "xxxxx@" + s[at+1:]
	}
	return s
}

// parseHashes checks a hash or a list of hashes (key is the config key).
func parseHashes(key string, list hashList, bad func(key, format string, args ...any)) [][32]byte {
	const want = "want 64 hex characters (output of `ecpsd hash-secret`)"
	if len(list) == 0 {
		bad(key, "%s, or a list of them while a secret is rotated", want)
		return nil
	}
	if len(list) == 1 && list[0] == wrongType {
		return nil
	}
	var out [][32]byte
	seen := map[[32]byte]bool{}
	for i, s := range list {
		k := key
		if len(list) > 1 {
			k = fmt.Sprintf("%s[%d]", key, i)
		}
		h, ok := parseHash(s)
		switch {
		case !ok:
			bad(k, want)
		case seen[h]:
			bad(k, "the same hash twice")
		default:
			seen[h] = true
			out = append(out, h)
		}
	}
	return out
}

func parseHash(s string) ([32]byte, bool) {
	var h [32]byte
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != 32 {
		return h, false
	}
	copy(h[:], b)
	return h, true
}
