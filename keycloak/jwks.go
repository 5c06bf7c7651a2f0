package keycloak

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"
)

// VerifierOptions tune the token verification; zero values take the defaults.
type VerifierOptions struct {
	// HTTPClient fetches the JWKS; default a client with FetchTimeout.
	HTTPClient *http.Client
	// FetchTimeout bounds one JWKS fetch; default 5 s.
	FetchTimeout time.Duration
	// RefreshEvery: the JWKS is fetched again this long after the last
	// fetch; default 1 h.
	RefreshEvery time.Duration
	// MinRefetch: a token with an unknown kid makes the replica fetch the
	// JWKS again at most this often per realm; default 10 s.
	MinRefetch time.Duration
	// Leeway on exp, nbf and iat; default 10 s, at most MaxLeeway.
	Leeway  time.Duration
	Logger  *slog.Logger
	Metrics *Metrics
	Now     func() time.Time
}

func (o *VerifierOptions) defaults() {
	if o.FetchTimeout <= 0 {
		o.FetchTimeout = 5 * time.Second
	}
	if o.HTTPClient == nil {
		o.HTTPClient = &http.Client{Timeout: o.FetchTimeout}
	}
	if o.RefreshEvery <= 0 {
		o.RefreshEvery = time.Hour
	}
	if o.MinRefetch <= 0 {
		o.MinRefetch = 10 * time.Second
	}
	if o.Leeway <= 0 {
		o.Leeway = 10 * time.Second
	}
	o.Leeway = min(o.Leeway, MaxLeeway)
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
}

// Verifier verifies channel tokens against the configured realms' keys,
// which it caches per realm: fetched on first use, again every
// RefreshEvery (in the background, the cached keys serving meanwhile), and
// again on a token whose kid is unknown, at most once per MinRefetch.
type Verifier struct {
	realms map[string]*realmKeys // by issuer
	opts   VerifierOptions
}

// NewVerifier returns a Verifier of realms (checked by the caller).
func NewVerifier(realms []Realm, opts VerifierOptions) *Verifier {
	opts.defaults()
	v := &Verifier{realms: map[string]*realmKeys{}, opts: opts}
	for i := range realms {
		r := realms[i]
		v.realms[r.Issuer] = &realmKeys{realm: &r, opts: &v.opts}
	}
	return v
}

// realmKeys is one realm's cached JWKS.
type realmKeys struct {
	realm *Realm
	opts  *VerifierOptions

	mu      sync.Mutex
	keys    []jose.JSONWebKey
	fetched time.Time     // last successful load
	tried   time.Time     // last load started
	loading chan struct{} // closed when the load in flight ends; nil when none
}

// lookup returns the realm's keys that may have signed a token with kid and
// alg, loading the JWKS when needed.
func (rk *realmKeys) lookup(ctx context.Context, kid string, alg jose.SignatureAlgorithm) ([]jose.JSONWebKey, error) {
	for loaded := false; ; {
		rk.mu.Lock()
		now := rk.opts.Now()
		keys := matching(rk.keys, kid, alg)
		mayLoad := rk.loading == nil && (rk.tried.IsZero() || now.Sub(rk.tried) >= rk.opts.MinRefetch)
		stale := rk.fetched.IsZero() || now.Sub(rk.fetched) >= rk.opts.RefreshEvery
		switch {
		case len(keys) > 0:
			if stale && mayLoad { // refresh in the background; the cached keys serve meanwhile
				rk.startLoad(now)
			}
			rk.mu.Unlock()
			return keys, nil
		case loaded:
			rk.mu.Unlock()
			return nil, tokenErr(ReasonUnknownKey)
		case rk.loading != nil: // a load is in flight: wait for it
		case mayLoad:
			rk.startLoad(now)
		default: // fetched too recently to fetch again
			rk.mu.Unlock()
			return nil, tokenErr(ReasonUnknownKey)
		}
		wait := rk.loading
		rk.mu.Unlock()
		select {
		case <-wait:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		loaded = true
	}
}

// startLoad loads the JWKS in a goroutine of its own, detached from the
// request that needed it; rk.mu is held.
func (rk *realmKeys) startLoad(now time.Time) {
	rk.tried = now
	done := make(chan struct{})
	rk.loading = done
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), rk.opts.FetchTimeout)
		keys, err := rk.load(ctx)
		cancel()
		rk.mu.Lock()
		if err == nil {
			rk.keys, rk.fetched = keys, rk.opts.Now()
		}
		rk.loading = nil
		close(done)
		rk.mu.Unlock()
		result := "ok"
		if err != nil {
			result = "error"
			rk.opts.Logger.Warn("keycloak: cannot load the realm's JWKS; the cached keys stay", "issuer", rk.realm.Issuer, "err", err)
		} else {
			rk.opts.Logger.Info("keycloak: realm JWKS loaded", "issuer", rk.realm.Issuer, "keys", len(keys))
		}
		if rk.opts.Metrics != nil {
			rk.opts.Metrics.jwksLoads.WithLabelValues(result).Inc()
		}
	}()
}

// maxJWKS bounds a JWKS document.
const maxJWKS = 1 << 20

// load reads the realm's JWKS from its file or URL.
func (rk *realmKeys) load(ctx context.Context) ([]jose.JSONWebKey, error) {
	var data []byte
	if rk.realm.JWKSFile != "" {
		b, err := os.ReadFile(rk.realm.JWKSFile)
		if err != nil {
			return nil, err
		}
		data = b
	} else {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, rk.realm.jwksURL(), nil)
		if err != nil {
			return nil, err
		}
		req.Header.Set("Accept", "application/json")
		res, err := rk.opts.HTTPClient.Do(req)
		if err != nil {
			return nil, err
		}
		defer res.Body.Close()
		if res.StatusCode != http.StatusOK {
			return nil, fmt.Errorf("GET %s: HTTP %d", rk.realm.jwksURL(), res.StatusCode)
		}
		if data, err = io.ReadAll(io.LimitReader(res.Body, maxJWKS+1)); err != nil {
			return nil, err
		}
		if len(data) > maxJWKS {
			return nil, errors.New("JWKS over 1 MiB")
		}
	}
	return ParseJWKS(data)
}

// ParseJWKS reads the public signing keys of a JWKS: RSA keys of 2048 bits
// or more and EC P-256 keys, whose use is "sig" or unset. Keys of other
// types or uses (Keycloak also publishes its RSA-OAEP encryption key) are
// skipped; a set with no usable key is an error.
func ParseJWKS(data []byte) ([]jose.JSONWebKey, error) {
	var set struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(data, &set); err != nil {
		return nil, fmt.Errorf("JWKS: %v", err)
	}
	var out []jose.JSONWebKey
	for _, raw := range set.Keys {
		var k jose.JSONWebKey
		if err := k.UnmarshalJSON(raw); err != nil { // an unknown kty: skipped, not fatal
			continue
		}
		if !k.Valid() || !k.IsPublic() || (k.Use != "" && k.Use != "sig") || usable(k) == "" {
			continue
		}
		out = append(out, k)
	}
	if len(out) == 0 {
		return nil, errors.New("JWKS: no usable signing key (RSA ≥ 2048 bits or EC P-256, use sig)")
	}
	return out, nil
}

// usable returns the key's family ("RSA" or "EC256"), "" for a key we never use.
func usable(k jose.JSONWebKey) string {
	switch pub := k.Key.(type) {
	case *rsa.PublicKey:
		if pub.N.BitLen() >= 2048 {
			return "RSA"
		}
	case *ecdsa.PublicKey:
		if pub.Curve == elliptic.P256() {
			return "EC256"
		}
	}
	return ""
}

// matching returns the keys that may verify a token with kid and alg: the
// same kid (any key when the token names none), a key type that fits alg,
// and the key's own alg, when it states one, equal to alg.
func matching(keys []jose.JSONWebKey, kid string, alg jose.SignatureAlgorithm) []jose.JSONWebKey {
	want := ""
	switch alg {
	case jose.RS256, jose.PS256:
		want = "RSA"
	case jose.ES256:
		want = "EC256"
	}
	var out []jose.JSONWebKey
	for _, k := range keys {
		if (kid == "" || k.KeyID == kid) && (k.Algorithm == "" || k.Algorithm == string(alg)) && usable(k) == want && want != "" {
			out = append(out, k)
		}
	}
	return out
}
