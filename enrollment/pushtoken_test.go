package enrollment

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/ecps-sante/ecps/audit"
	"github.com/ecps-sante/ecps/deviceproof"
	"github.com/ecps-sante/ecps/idnat"
)

// enrolWithToken enrols a new device of subject holding push token tok.
func (f *fixture) enrolWithToken(t *testing.T, subject, tok string) Device {
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
	d, err := f.svc.Enrol(ctx, EnrolRequest{ActivationID: act.ActivationID, Secret: secret, PublicKey: k.jwk(),
		Proof:    k.sign(t, deviceproof.TypEnrol, "", map[string]any{"activation_id": act.ActivationID, "iat": now.Unix()}),
		Platform: "ios", Model: "m", AppVersion: "1", PushProvider: "fcm", PushToken: tok})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// A dead token is cleared only while it is still the device's token; the
// clearing is audited once, by the system, without the token.
func TestClearPushToken(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	const subject = "810001234565"
	d := f.enrolWithToken(t, subject, "old-token-123")
	other := f.enrolWithToken(t, subject, "other-token-456")

	if ok, err := f.svc.ClearPushToken(ctx, d.DeviceID, "not-its-token", "unregistered"); err != nil || ok {
		t.Fatalf("another token: cleared=%v err=%v, want false, nil", ok, err)
	}
	if ok, err := f.svc.ClearPushToken(ctx, d.DeviceID, "old-token-123", "unregistered"); err != nil || !ok {
		t.Fatalf("its token: cleared=%v err=%v, want true, nil", ok, err)
	}
	if ok, err := f.svc.ClearPushToken(ctx, d.DeviceID, "old-token-123", "unregistered"); err != nil || ok {
		t.Fatalf("again: cleared=%v err=%v, want false, nil", ok, err)
	}
	if ok, err := f.svc.ClearPushToken(ctx, "dev_unknownunknownunknown", "x", "unregistered"); err != nil || ok {
		t.Fatalf("unknown device: cleared=%v err=%v", ok, err)
	}
	devices, err := f.svc.ListDevices(ctx, subject)
	if err != nil {
		t.Fatal(err)
	}
	for _, dv := range devices {
		want := dv.DeviceID == other.DeviceID
		if dv.Push != want {
			t.Fatalf("device %s push=%v, want %v", dv.DeviceID, dv.Push, want)
		}
	}

	// A phone that sent a new token keeps it whatever the old one's fate.
	if err := f.svc.SetPushToken(ctx, d, "new-token-789"); err != nil {
		t.Fatal(err)
	}
	if ok, _ := f.svc.ClearPushToken(ctx, d.DeviceID, "old-token-123", "unregistered"); ok {
		t.Fatal("cleared a token that was replaced")
	}

	entries, _, err := f.svc.audit.List(ctx, subject, "", 50)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range entries {
		raw, _ := json.Marshal(e)
		if strings.Contains(string(raw), "token-") {
			t.Fatalf("audit entry holds a token: %s", raw)
		}
		if e.Event != audit.DevicePushTokenClear {
			continue
		}
		n++
		if e.Actor != audit.System || e.Details["device_id"] != d.DeviceID || e.Details["reason"] != "unregistered" {
			t.Fatalf("entry %s", raw)
		}
	}
	if n != 1 {
		t.Fatalf("%d device.push_token_cleared entries, want 1", n)
	}
}
