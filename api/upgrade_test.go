package api

import (
	"context"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/ecps-sante/ecps/deviceproof"
)

// A Redis written by the version before the active and used hashes
// (devices as JSON only, last_used_at inside): a push login reaches the
// active device's token only, the phone lists and approves it, a suspended
// device is still refused, and both device lists answer as before, the
// last use of the device that signed in updated.
func TestDevicesWrittenByThePreviousVersion(t *testing.T) {
	e := newEnv(t, 1)
	p := e.newPushDevice(subjectA)
	q := e.newPushDevice(subjectA)
	e.desk("POST", "/api/v1/desk/devices/"+q.deviceID+"/suspend", nil).wantStatus(t, http.StatusOK)

	// Back to the previous version's state: no active nor used hash, the
	// last use in each device's JSON.
	ctx := context.Background()
	const old = "2026-01-02T03:04:05Z"
	devices := e.prefix + "{sub:" + subjectA + "}:devices"
	for _, id := range []string{p.deviceID, q.deviceID} {
		raw, err := e.rdb.HGet(ctx, devices, id).Result()
		if err != nil {
			t.Fatal(err)
		}
		var d map[string]any
		if err := json.Unmarshal([]byte(raw), &d); err != nil {
			t.Fatal(err)
		}
		d["last_used_at"] = old
		b, _ := json.Marshal(d)
		e.rdb.HSet(ctx, devices, id, b)
	}
	e.rdb.Del(ctx, e.prefix+"{sub:"+subjectA+"}:active", e.prefix+"{sub:"+subjectA+"}:used")

	type listed struct {
		Devices []struct {
			DeviceID   string  `json:"device_id"`
			Status     string  `json:"status"`
			Push       bool    `json:"push"`
			LastUsedAt *string `json:"last_used_at"`
		} `json:"devices"`
	}
	wantList := func(step string, r response, want map[string]string) {
		t.Helper()
		r.wantStatus(t, http.StatusOK)
		var l listed
		if err := json.Unmarshal(r.Body, &l); err != nil {
			t.Fatal(err)
		}
		got := map[string]string{}
		for _, d := range l.Devices {
			if !d.Push || d.LastUsedAt == nil {
				t.Fatalf("%s: %s", step, r.Body)
			}
			got[d.DeviceID] = d.Status + " " + *d.LastUsedAt
		}
		if len(got) != len(want) {
			t.Fatalf("%s: %s", step, r.Body)
		}
		for id, w := range want {
			if got[id] != w {
				t.Fatalf("%s: %s is %q, want %q (%s)", step, id, got[id], w, r.Body)
			}
		}
	}
	listPath := "/api/v1/desk/practitioners/" + subjectA + "/devices"
	wantList("before", e.desk("GET", listPath, nil), map[string]string{p.deviceID: "active " + old, q.deviceID: "suspended " + old})

	c := e.createAuth(map[string]any{"login_hint": subjectA, "binding_message": "upgrade"})
	job := <-e.pushes.Jobs()
	if job.DeviceID != p.deviceID || job.Token != "tok-"+p.deviceID {
		t.Fatalf("push job %+v", job)
	}
	select {
	case j := <-e.pushes.Jobs():
		t.Fatalf("a push to the suspended device: %+v", j)
	default:
	}
	if v, _ := e.rdb.HGet(ctx, e.prefix+"{sub:"+subjectA+"}:active", "_v").Result(); v != "1" {
		t.Fatalf("active hash not built: marker %q", v)
	}
	ch := e.pendingChallenge(p)
	e.respond(0, p, ch["challenge_id"].(string), p.decision(t, e.clock.Now(), ch, "approve", c.VerificationNumber)).
		wantStatus(t, http.StatusNoContent)
	e.clock.Advance(3 * time.Second)
	e.poll(0, c, "").wantStatus(t, http.StatusOK)
	proofExpectRejection(t, e, 0, deviceproof.ReasonSuspended, func() response {
		return e.call(e.url(), q, "GET", "/api/v1/device/devices", nil)
	})

	used := e.clock.Now().Add(-3 * time.Second).UTC().Format(time.RFC3339) // the decision's proof
	want := map[string]string{p.deviceID: "active " + used, q.deviceID: "suspended " + old}
	wantList("desk, after", e.desk("GET", listPath, nil), want)
	r := e.call(e.url(), p, "GET", "/api/v1/device/devices", nil)
	want[p.deviceID] = "active " + e.clock.Now().UTC().Format(time.RFC3339) // this list's own proof
	wantList("phone, after", r, want)
}
