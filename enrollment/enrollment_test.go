package enrollment

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/redis/go-redis/v9"

	"github.com/ecps-sante/ecps/audit"
	"github.com/ecps-sante/ecps/deviceproof"
	"github.com/ecps-sante/ecps/idnat"
	"github.com/ecps-sante/ecps/redistest"
	"github.com/ecps-sante/ecps/token"
)

type vectors struct {
	Now           int64           `json:"now"`
	PublicJWK     json.RawMessage `json:"public_jwk"`
	DeviceID      string          `json:"device_id"`
	RequestProofs []struct {
		Method string `json:"method"`
		Path   string `json:"path"`
		Body   string `json:"body"`
		JWS    string `json:"jws"`
	} `json:"request_proofs"`
	EnrolmentProof struct {
		ActivationID string `json:"activation_id"`
		JWS          string `json:"jws"`
	} `json:"enrolment_proof"`
}

func loadVectors(t testing.TB) vectors {
	b, err := os.ReadFile("testdata/jose-vectors.json")
	if err != nil {
		t.Fatal(err)
	}
	var v vectors
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	return v
}

type fixture struct {
	svc   *Service
	rdb   redis.UniversalClient
	now   atomic.Int64 // unix nanos
	trips *redistest.RoundTrips
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	base, prefix := redistest.Client(t)
	// A client of our own, so that the hook counts only this test's commands.
	opt := base.(*redis.Client).Options()
	rdb := redis.NewClient(opt)
	t.Cleanup(func() { rdb.Close() })
	f := &fixture{rdb: rdb, trips: &redistest.RoundTrips{}}
	f.now.Store(time.Now().UnixNano())
	rdb.AddHook(f.trips)
	log := audit.New(rdb, prefix, 400*24*time.Hour)
	f.svc = New(rdb, log, Options{KeyPrefix: prefix, PublicURL: "https://ecps.test",
		Now: func() time.Time { return time.Unix(0, f.now.Load()) }})
	// Load every script once, as a long-running process has.
	for _, s := range []*redis.Script{createActivationScript, failAttemptScript, enrolScript, transitionScript, touchScript, setPushTokenScript} {
		if err := s.Load(context.Background(), rdb).Err(); err != nil {
			t.Fatal(err)
		}
	}
	return f
}

// putDevice stores a device as enrolment would, for the vectors' key.
func (f *fixture) putDevice(t testing.TB, deviceID, subject string, jwk []byte) {
	t.Helper()
	ctx := context.Background()
	pub, err := deviceproof.ParsePublicJWK(jwk)
	if err != nil {
		t.Fatal(err)
	}
	pj, _ := json.Marshal(devicePointer{Subject: subject, JWK: pub.JWK})
	dj, _ := json.Marshal(storedDevice{DeviceID: deviceID, Subject: subject, Status: StatusActive,
		Platform: "android", Model: "m", AppVersion: "1", CreatedAt: time.Now().UTC().Format(time.RFC3339), Thumbprint: pub.Thumbprint})
	if err := f.rdb.Set(ctx, f.svc.keys.device(deviceID), pj, 0).Err(); err != nil {
		t.Fatal(err)
	}
	if err := f.rdb.HSet(ctx, f.svc.keys.devices(subject), deviceID, dj).Err(); err != nil {
		t.Fatal(err)
	}
}

// The request proofs signed by another JOSE implementation verify through the
// whole device-proof path (lookup, signature, claims, jti) at their time, and
// are refused a few minutes later.
func TestInteropRequestProofs(t *testing.T) {
	v := loadVectors(t)
	f := newFixture(t)
	f.putDevice(t, v.DeviceID, "810001234565", v.PublicJWK)
	ctx := context.Background()
	for _, p := range v.RequestProofs {
		req := deviceproof.Request{Method: p.Method, Path: p.Path, Body: []byte(p.Body)}
		f.now.Store(time.Unix(v.Now, 0).Add(3 * time.Minute).UnixNano())
		if _, err := f.svc.AuthenticateRequest(ctx, p.JWS, req, nil); deviceproof.ReasonOf(err) != deviceproof.ReasonSkew {
			t.Fatalf("%s %s three minutes later: %v, want skew", p.Method, p.Path, err)
		}
		f.now.Store(time.Unix(v.Now, 0).Add(-3 * time.Minute).UnixNano())
		if _, err := f.svc.AuthenticateRequest(ctx, p.JWS, req, nil); deviceproof.ReasonOf(err) != deviceproof.ReasonSkew {
			t.Fatalf("%s %s three minutes earlier: %v, want skew", p.Method, p.Path, err)
		}
		f.now.Store(time.Unix(v.Now, 0).Add(10 * time.Second).UnixNano())
		d, err := f.svc.AuthenticateRequest(ctx, p.JWS, req, nil)
		if err != nil {
			t.Fatalf("%s %s at now: %v", p.Method, p.Path, err)
		}
		if d.DeviceID != v.DeviceID || d.LastUsedAt == nil {
			t.Fatalf("device %+v", d)
		}
		if _, err := f.svc.AuthenticateRequest(ctx, p.JWS, req, nil); deviceproof.ReasonOf(err) != deviceproof.ReasonReplay {
			t.Fatalf("replay: %v", err)
		}
	}
}

// The enrolment proof of the vectors verifies with its own key.
func TestInteropEnrolmentProof(t *testing.T) {
	v := loadVectors(t)
	pub, err := deviceproof.ParsePublicJWK(v.PublicJWK)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(v.Now, 0)
	if err := deviceproof.VerifyEnrol(v.EnrolmentProof.JWS, pub.Key, v.EnrolmentProof.ActivationID, now, time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := deviceproof.VerifyEnrol(v.EnrolmentProof.JWS, pub.Key, v.EnrolmentProof.ActivationID, now.Add(5*time.Minute), time.Minute); err == nil {
		t.Fatal("accepted five minutes later")
	}
}

type testKey struct{ priv *ecdsa.PrivateKey }

func newTestKey(t testing.TB) testKey {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return testKey{k}
}

func (k testKey) sign(t testing.TB, typ, kid string, claims any) string {
	opts := (&jose.SignerOptions{}).WithType(jose.ContentType(typ))
	if kid != "" {
		opts = opts.WithHeader("kid", kid)
	}
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: k.priv}, opts)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(claims)
	obj, err := s.Sign(b)
	if err != nil {
		t.Fatal(err)
	}
	out, _ := obj.CompactSerialize()
	return out
}

func (k testKey) jwk() []byte {
	b, _ := jose.JSONWebKey{Key: &k.priv.PublicKey}.MarshalJSON()
	return b
}

// Enrolment takes at most two Redis round trips; a request proof one, once
// the device's key is cached.
func TestRoundTrips(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	subject, _ := idnat.Parse("810001234565")
	act, err := f.svc.CreateActivation(ctx, subject, audit.Actor{Type: audit.ActorOperator, ID: "d"})
	if err != nil {
		t.Fatal(err)
	}
	secret := act.EnrolURI[len("ecps://enrol?a=")+len(act.ActivationID)+len("&s="):]
	secret = secret[:22]
	k := newTestKey(t)
	now := time.Unix(0, f.now.Load())
	req := EnrolRequest{ActivationID: act.ActivationID, Secret: secret, PublicKey: k.jwk(),
		Proof:    k.sign(t, deviceproof.TypEnrol, "", map[string]any{"activation_id": act.ActivationID, "iat": now.Unix()}),
		Platform: "android", Model: "m", AppVersion: "1"}
	f.trips.Reset()
	d, err := f.svc.Enrol(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if n := f.trips.N(); n > 2 {
		t.Fatalf("enrolment took %d round trips, want ≤ 2", n)
	} else {
		t.Logf("enrolment: %d round trips", n)
	}

	proof := func() string {
		return k.sign(t, deviceproof.TypRequest, d.DeviceID, map[string]any{"htm": "GET", "htu": "/api/v1/device/devices",
			"iat": now.Unix(), "jti": newOpaque(), "bh": deviceproof.BodyHash(nil)})
	}
	r := deviceproof.Request{Method: "GET", Path: "/api/v1/device/devices"}
	if _, err := f.svc.AuthenticateRequest(ctx, proof(), r, nil); err != nil { // warms the key cache
		t.Fatal(err)
	}
	f.trips.Reset()
	if _, err := f.svc.AuthenticateRequest(ctx, proof(), r, nil); err != nil {
		t.Fatal(err)
	}
	if n := f.trips.N(); n != 1 {
		t.Fatalf("request proof took %d round trips, want 1", n)
	}
}

func newOpaque() string { return token.New(16) }
