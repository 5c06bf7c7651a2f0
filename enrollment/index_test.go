package enrollment

import (
	"context"
	"encoding/json"
	"maps"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ecps-sante/ecps/audit"
	"github.com/ecps-sante/ecps/deviceindex"
	"github.com/ecps-sante/ecps/deviceproof"
	"github.com/ecps-sante/ecps/idnat"
)

// enrolKey enrols a new device of subject (push token tok, none when empty)
// and returns it with its key.
func (f *fixture) enrolKey(t *testing.T, subject, tok string) (Device, testKey) {
	t.Helper()
	ctx := context.Background()
	id, _ := idnat.Parse(subject)
	act, err := f.svc.CreateActivation(ctx, id, audit.Actor{Type: audit.ActorOperator, ID: "d"})
	if err != nil {
		t.Fatal(err)
	}
	secret := act.EnrolURI[len("ecps://enrol?a=")+len(act.ActivationID)+len("&s="):][:22]
	k := newTestKey(t)
	now := time.Unix(0, f.now.Load())
	req := EnrolRequest{ActivationID: act.ActivationID, Secret: secret, PublicKey: k.jwk(),
		Proof:    k.sign(t, deviceproof.TypEnrol, "", map[string]any{"activation_id": act.ActivationID, "iat": now.Unix()}),
		Platform: "ios", Model: "m", AppVersion: "1"}
	if tok != "" {
		req.PushProvider, req.PushToken = "fcm", tok
	}
	d, err := f.svc.Enrol(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	return d, k
}

// prove sends a fresh request proof of the device.
func (f *fixture) prove(t *testing.T, k testKey, deviceID string) (Device, error) {
	t.Helper()
	now := time.Unix(0, f.now.Load())
	proof := k.sign(t, deviceproof.TypRequest, deviceID, map[string]any{"htm": "GET", "htu": "/api/v1/device/devices",
		"iat": now.Unix(), "jti": newOpaque(), "bh": deviceproof.BodyHash(nil)})
	return f.svc.AuthenticateRequest(context.Background(), proof, deviceproof.Request{Method: "GET", Path: "/api/v1/device/devices"}, nil)
}

// wantActive checks the active hash of subject: want (device_id -> token)
// plus the marker, and exactly what a build from the devices' JSON gives.
func (f *fixture) wantActive(t *testing.T, step, subject string, want map[string]string) {
	t.Helper()
	ctx := context.Background()
	got, err := f.rdb.HGetAll(ctx, f.svc.keys.active(subject)).Result()
	if err != nil {
		t.Fatal(err)
	}
	w := maps.Clone(want)
	w[deviceindex.Marker] = "1"
	if !maps.Equal(got, w) {
		t.Fatalf("%s: active = %v, want %v", step, got, w)
	}
	scratch := f.svc.keys.prefix + "{sub:" + subject + "}:active-check"
	build := redis.NewScript(deviceindex.Lua + `return device_index_build(KEYS[1], KEYS[2])`)
	if err := build.Run(ctx, f.rdb, []string{f.svc.keys.devices(subject), scratch}).Err(); err != nil {
		t.Fatal(err)
	}
	rebuilt, err := f.rdb.HGetAll(ctx, scratch).Result()
	if err != nil {
		t.Fatal(err)
	}
	f.rdb.Del(ctx, scratch)
	if !maps.Equal(got, rebuilt) {
		t.Fatalf("%s: active = %v, but the devices' JSON gives %v", step, got, rebuilt)
	}
}

func wantReason(t *testing.T, step string, err error, want deviceproof.Reason) {
	t.Helper()
	if got := deviceproof.ReasonOf(err); got != want {
		t.Fatalf("%s: %v (reason %q), want %q", step, err, got, want)
	}
}

// The active hash holds exactly the active devices and their tokens through
// every change: enrol, suspend, resume, token set, token cleared, revoke;
// and the proof check follows it.
func TestActiveDevicesStayExact(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	const subject = "810001234565"
	op := audit.Actor{Type: audit.ActorOperator, ID: "d"}
	transition := func(id, action string) {
		t.Helper()
		if _, err := f.svc.Transition(ctx, id, action, op, ""); err != nil {
			t.Fatalf("%s %s: %v", action, id, err)
		}
	}
	setToken := func(d Device, tok string) {
		t.Helper()
		if err := f.svc.SetPushToken(ctx, d, tok); err != nil {
			t.Fatalf("set token %s: %v", d.DeviceID, err)
		}
	}

	d1, k1 := f.enrolKey(t, subject, "tok-1")
	f.wantActive(t, "first enrolment", subject, map[string]string{d1.DeviceID: "tok-1"})
	d2, k2 := f.enrolKey(t, subject, "")
	f.wantActive(t, "second enrolment", subject, map[string]string{d1.DeviceID: "tok-1", d2.DeviceID: ""})

	transition(d1.DeviceID, ActionSuspend)
	f.wantActive(t, "suspend", subject, map[string]string{d2.DeviceID: ""})
	_, err := f.prove(t, k1, d1.DeviceID)
	wantReason(t, "suspended", err, deviceproof.ReasonSuspended)
	transition(d1.DeviceID, ActionSuspend) // no change
	f.wantActive(t, "suspend again", subject, map[string]string{d2.DeviceID: ""})

	setToken(d1, "tok-1b") // kept in the JSON while suspended
	f.wantActive(t, "token of a suspended device", subject, map[string]string{d2.DeviceID: ""})
	transition(d1.DeviceID, ActionResume)
	f.wantActive(t, "resume", subject, map[string]string{d1.DeviceID: "tok-1b", d2.DeviceID: ""})
	if _, err := f.prove(t, k1, d1.DeviceID); err != nil {
		t.Fatalf("resumed: %v", err)
	}

	setToken(d2, "tok-2")
	f.wantActive(t, "token set", subject, map[string]string{d1.DeviceID: "tok-1b", d2.DeviceID: "tok-2"})
	setToken(d2, "tok-2b")
	f.wantActive(t, "token changed", subject, map[string]string{d1.DeviceID: "tok-1b", d2.DeviceID: "tok-2b"})
	if ok, err := f.svc.ClearPushToken(ctx, d2.DeviceID, "tok-2", "unregistered"); err != nil || ok {
		t.Fatalf("clear an old token: %v %v", ok, err)
	}
	f.wantActive(t, "old token not cleared", subject, map[string]string{d1.DeviceID: "tok-1b", d2.DeviceID: "tok-2b"})
	if ok, err := f.svc.ClearPushToken(ctx, d2.DeviceID, "tok-2b", "unregistered"); err != nil || !ok {
		t.Fatalf("clear: %v %v", ok, err)
	}
	f.wantActive(t, "token cleared", subject, map[string]string{d1.DeviceID: "tok-1b", d2.DeviceID: ""})

	transition(d1.DeviceID, ActionRevoke)
	f.wantActive(t, "revoke", subject, map[string]string{d2.DeviceID: ""})
	_, err = f.prove(t, k1, d1.DeviceID)
	wantReason(t, "revoked", err, deviceproof.ReasonRevoked)
	if err := f.svc.SetPushToken(ctx, d1, "tok-late"); err == nil {
		t.Fatal("token set on a revoked device")
	}
	if _, err := f.svc.Transition(ctx, d1.DeviceID, ActionResume, op, ""); err != ErrRevoked {
		t.Fatalf("resume a revoked device: %v", err)
	}
	f.wantActive(t, "revoked stays out", subject, map[string]string{d2.DeviceID: ""})

	transition(d2.DeviceID, ActionSuspend)
	f.wantActive(t, "the last one suspended", subject, map[string]string{})
	transition(d2.DeviceID, ActionRevoke)
	f.wantActive(t, "all revoked", subject, map[string]string{})
	_, err = f.prove(t, k2, d2.DeviceID)
	wantReason(t, "revoked from suspended", err, deviceproof.ReasonRevoked)
}

// A device that is not active, unknown, or a replayed jti is refused as
// before; a refused proof records neither its jti nor a last use; the touch
// resent with its own op (a lost reply) is accepted again, not a replay.
func TestProofRefusals(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	const subject = "810001234565"
	d, k := f.enrolKey(t, subject, "tok")

	t.Run("ok", func(t *testing.T) {
		got, err := f.prove(t, k, d.DeviceID)
		if err != nil {
			t.Fatal(err)
		}
		now := time.Unix(0, f.now.Load()).UTC().Truncate(time.Second)
		if got.DeviceID != d.DeviceID || got.Subject != subject || got.Status != StatusActive ||
			got.LastUsedAt == nil || !got.LastUsedAt.Equal(now) {
			t.Fatalf("device %+v", got)
		}
		used, _ := f.rdb.HGet(ctx, f.svc.keys.used(subject), d.DeviceID).Result()
		if used != now.Format(time.RFC3339) {
			t.Fatalf("used = %q, want %s", used, now.Format(time.RFC3339))
		}
	})

	t.Run("fail/replay", func(t *testing.T) {
		now := time.Unix(0, f.now.Load())
		claims := map[string]any{"htm": "GET", "htu": "/api/v1/device/devices", "iat": now.Unix(), "jti": newOpaque(),
			"bh": deviceproof.BodyHash(nil)}
		r := deviceproof.Request{Method: "GET", Path: "/api/v1/device/devices"}
		if _, err := f.svc.AuthenticateRequest(ctx, k.sign(t, deviceproof.TypRequest, d.DeviceID, claims), r, nil); err != nil {
			t.Fatal(err)
		}
		_, err := f.svc.AuthenticateRequest(ctx, k.sign(t, deviceproof.TypRequest, d.DeviceID, claims), r, nil)
		wantReason(t, "same jti", err, deviceproof.ReasonReplay)
	})

	t.Run("ok/resent-with-its-op", func(t *testing.T) {
		keys := []string{f.svc.keys.devices(subject), f.svc.keys.jti(subject, d.DeviceID, "jti-resent"),
			f.svc.keys.active(subject), f.svc.keys.used(subject)}
		run := func(op string) string {
			res, err := touchScript.Run(ctx, f.rdb, keys, d.DeviceID, "2026-12-01T00:00:00Z", 60000, op).Text()
			if err != nil {
				t.Fatal(err)
			}
			return res
		}
		if a, b, c := run("op-1"), run("op-1"), run("op-2"); a != "ok" || b != "ok" || c != "replay" {
			t.Fatalf("first %s, resent %s, another op %s; want ok, ok, replay", a, b, c)
		}
	})

	t.Run("fail/unknown", func(t *testing.T) {
		// A pointer whose device is absent from the devices hash (a crash
		// between the enrolment's two writes): unknown, with or without an
		// active hash built.
		u, ku := "dev_"+newOpaque()[:16], newTestKey(t)
		f.putPointer(t, u, subject, ku.jwk())
		_, err := f.prove(t, ku, u)
		wantReason(t, "index built", err, deviceproof.ReasonUnknownDevice)
		const other = "810001234573"
		v, kv := "dev_"+newOpaque()[:16], newTestKey(t)
		f.putPointer(t, v, other, kv.jwk())
		_, err = f.prove(t, kv, v)
		wantReason(t, "no device at all", err, deviceproof.ReasonUnknownDevice)
		if n, _ := f.rdb.Exists(ctx, f.svc.keys.active(other), f.svc.keys.used(other)).Result(); n != 0 {
			t.Fatalf("an unknown practitioner got %d index keys", n)
		}
	})

	for _, c := range []struct {
		action string
		reason deviceproof.Reason
	}{{ActionSuspend, deviceproof.ReasonSuspended}, {ActionRevoke, deviceproof.ReasonRevoked}} {
		t.Run("fail/"+c.action, func(t *testing.T) {
			x, kx := f.enrolKey(t, subject, "")
			if _, err := f.svc.Transition(ctx, x.DeviceID, c.action, audit.Actor{Type: audit.ActorOperator, ID: "d"}, ""); err != nil {
				t.Fatal(err)
			}
			jtis, _ := f.rdb.Keys(ctx, f.svc.keys.jti(subject, x.DeviceID, "*")).Result()
			_, err := f.prove(t, kx, x.DeviceID)
			wantReason(t, c.action, err, c.reason)
			after, _ := f.rdb.Keys(ctx, f.svc.keys.jti(subject, x.DeviceID, "*")).Result()
			if len(after) != len(jtis) {
				t.Fatalf("a refused proof recorded its jti")
			}
			if ok, _ := f.rdb.HExists(ctx, f.svc.keys.used(subject), x.DeviceID).Result(); ok {
				t.Fatal("a refused proof wrote a last use")
			}
		})
	}
}

// putPointer stores only a device's immutable pointer.
func (f *fixture) putPointer(t *testing.T, deviceID, subject string, jwk []byte) {
	t.Helper()
	pub, err := deviceproof.ParsePublicJWK(jwk)
	if err != nil {
		t.Fatal(err)
	}
	pj, _ := json.Marshal(devicePointer{Subject: subject, JWK: pub.JWK})
	if err := f.rdb.Set(context.Background(), f.svc.keys.device(deviceID), pj, 0).Err(); err != nil {
		t.Fatal(err)
	}
}

// putOldDevice stores a device as the version before the active and used
// hashes did: its JSON only, last_used_at inside.
func (f *fixture) putOldDevice(t *testing.T, subject, status, tok, lastUsed string) (string, testKey) {
	t.Helper()
	id, k := "dev_"+newOpaque()[:16], newTestKey(t)
	f.putPointer(t, id, subject, k.jwk())
	pub, _ := deviceproof.ParsePublicJWK(k.jwk())
	raw, _ := json.Marshal(map[string]string{"device_id": id, "subject": subject, "status": status, "platform": "android",
		"model": "m", "app_version": "1", "created_at": "2026-01-01T00:00:00Z", "last_used_at": lastUsed,
		"push_token": tok, "thumbprint": pub.Thumbprint})
	if err := f.rdb.HSet(context.Background(), f.svc.keys.devices(subject), id, raw).Err(); err != nil {
		t.Fatal(err)
	}
	return id, k
}

// A Redis written by the previous version (devices as JSON only): the
// device list shows the stored last uses, a proof builds the active hash
// once and is accepted, refusals are as before, and the list then shows the
// new last use.
func TestUpgradeFromDevicesJSONOnly(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	const subject = "810001234565"
	const old = "2026-01-02T03:04:05Z"
	active, ka := f.putOldDevice(t, subject, StatusActive, "tok-a", old)
	suspended, ks := f.putOldDevice(t, subject, StatusSuspended, "tok-s", old)
	revoked, _ := f.putOldDevice(t, subject, StatusRevoked, "", "")

	lastUses := func() map[string]string {
		t.Helper()
		ds, err := f.svc.ListDevices(ctx, subject)
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]string{}
		for _, d := range ds {
			out[d.DeviceID] = ""
			if d.LastUsedAt != nil {
				out[d.DeviceID] = d.LastUsedAt.Format(time.RFC3339)
			}
		}
		return out
	}
	if got := lastUses(); !maps.Equal(got, map[string]string{active: old, suspended: old, revoked: ""}) {
		t.Fatalf("before any use: %v", got)
	}

	_, err := f.prove(t, ks, suspended)
	wantReason(t, "suspended", err, deviceproof.ReasonSuspended)
	f.wantActive(t, "built by a refused proof", subject, map[string]string{active: "tok-a"})

	f.svc.rdb.Del(ctx, f.svc.keys.active(subject)) // again unbuilt: the accepted proof builds it
	if _, err := f.prove(t, ka, active); err != nil {
		t.Fatalf("active device: %v", err)
	}
	f.wantActive(t, "built by an accepted proof", subject, map[string]string{active: "tok-a"})
	now := time.Unix(0, f.now.Load()).UTC().Format(time.RFC3339)
	if got := lastUses(); !maps.Equal(got, map[string]string{active: now, suspended: old, revoked: ""}) {
		t.Fatalf("after a use: %v", got)
	}

	// The first change of another old practitioner builds the hash too.
	const other = "810001234573"
	a2, _ := f.putOldDevice(t, other, StatusActive, "tok-x", old)
	b2, _ := f.putOldDevice(t, other, StatusActive, "", old)
	if _, err := f.svc.Transition(ctx, a2, ActionSuspend, audit.Actor{Type: audit.ActorOperator, ID: "d"}, ""); err != nil {
		t.Fatal(err)
	}
	f.wantActive(t, "built by a suspension", other, map[string]string{b2: ""})
	d, err := f.svc.Transition(ctx, a2, ActionResume, audit.Actor{Type: audit.ActorOperator, ID: "d"}, "")
	if err != nil || d.LastUsedAt == nil || d.LastUsedAt.Format(time.RFC3339) != old || !d.Push {
		t.Fatalf("resumed %+v, %v", d, err)
	}
	f.wantActive(t, "resumed", other, map[string]string{a2: "tok-x", b2: ""})
}
