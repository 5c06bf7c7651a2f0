package api

import (
	"net/http"
	"testing"
)

// Each decision's audit entry names the login's client and challenge, with
// the uv of an approval and the reason of a denial: the one-script decision
// builds these entries before it knows the client (it puts it in).
func TestDecisionAuditEntries(t *testing.T) {
	for _, tc := range []struct {
		decision, number, event, reason string
	}{
		{"approve", "right", "authentication.approved", ""},
		{"approve", "00", "authentication.denied", "wrong_number"},
		{"deny", "", "authentication.denied", "denied"},
		{"fraud", "", "authentication.denied", "fraud"},
	} {
		t.Run(tc.decision+"-"+tc.reason, func(t *testing.T) {
			e := newEnv(t, 1)
			p := e.newPushDevice(subjectA)
			c := e.createAuth(map[string]any{"login_hint": subjectA, "binding_message": "audit"})
			ch := e.pendingChallenge(p)
			number := tc.number
			if number == "right" {
				number = c.VerificationNumber
			} else if number == "00" && c.VerificationNumber == "00" {
				number = "01"
			}
			e.respond(0, p, ch["challenge_id"].(string), p.decision(t, e.clock.Now(), ch, tc.decision, number)).
				wantStatus(t, http.StatusNoContent)
			en := e.auditEntry(subjectA, tc.event)
			d := en.Details
			if d["client_id"] != "idp" || d["challenge_id"] != ch["challenge_id"] || en.Actor.ID != p.deviceID {
				t.Fatalf("entry %+v", en)
			}
			if tc.reason == "" && d["uv"] != "fingerprint" || tc.reason != "" && d["reason"] != tc.reason {
				t.Fatalf("entry %+v", en)
			}
			if tc.decision == "fraud" {
				if f := e.auditEntry(subjectA, "fraud.reported"); f.Details["client_id"] != "idp" || f.Details["challenge_id"] != ch["challenge_id"] {
					t.Fatalf("fraud entry %+v", f)
				}
			}
		})
	}
}
