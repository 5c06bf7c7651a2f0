package api

import (
	"net/http"
	"testing"
	"time"

	"github.com/ecps-sante/ecps/deviceproof"
)

// The decision checks its request proof in its own round trip
// (challenge.Service.Respond): a refused proof is still the answer, first,
// and the decision it carried is not taken.
func TestDecisionChecksItsProof(t *testing.T) {
	e := newEnv(t, 1)
	base := e.url()
	p := e.newDevice(subjectA)
	c := e.createAuth(map[string]any{"login_hint": subjectA, "binding_message": "proof"})
	ch := e.pendingChallenge(p)
	id := ch["challenge_id"].(string)
	path := "/api/v1/device/challenges/" + id + "/response"
	body := jsonBody(t, map[string]string{"response": p.decision(t, e.clock.Now(), ch, "approve", c.VerificationNumber)})

	// A proof accepted with a bad decision (400 invalid_grant) is used: sent
	// again, it is a replay (401), and nothing was decided.
	bad := jsonBody(t, map[string]string{"response": "not-a-jws"})
	usedBad := p.proof(t, e.clock.Now(), "POST", path, bad)
	proofCall(t, base, "POST", path, bad, usedBad).wantError(t, http.StatusBadRequest, "invalid_grant")
	proofExpectRejection(t, e, 0, deviceproof.ReasonReplay, func() response {
		return proofCall(t, base, "POST", path, bad, usedBad)
	})
	e.poll(0, c, "").wantError(t, http.StatusBadRequest, "authorization_pending")

	// The good decision, sent once: 204; the same proof again: replay, even
	// though the decision itself would answer 204 again.
	good := p.proof(t, e.clock.Now(), "POST", path, body)
	send := func() response { return proofCall(t, base, "POST", path, body, good) }
	send().wantStatus(t, http.StatusNoContent)
	proofExpectRejection(t, e, 0, deviceproof.ReasonReplay, send)
	e.clock.Advance(3 * time.Second)
	e.poll(0, c, "").wantStatus(t, http.StatusOK)
}

// A suspended device's decision is refused by its proof (whatever its
// body, malformed included) and not taken.
func TestDecisionOfSuspendedDevice(t *testing.T) {
	e := newEnv(t, 1)
	base := e.url()
	p := e.newDevice(subjectA)
	c := e.createAuth(map[string]any{"login_hint": subjectA, "binding_message": "suspended"})
	ch := e.pendingChallenge(p)
	path := "/api/v1/device/challenges/" + ch["challenge_id"].(string) + "/response"
	e.desk("POST", "/api/v1/desk/devices/"+p.deviceID+"/suspend", nil).wantStatus(t, http.StatusOK)
	for _, b := range [][]byte{
		jsonBody(t, map[string]string{"response": p.decision(t, e.clock.Now(), ch, "approve", c.VerificationNumber)}),
		jsonBody(t, map[string]string{"response": "not-a-jws"}),
	} {
		proofExpectRejection(t, e, 0, deviceproof.ReasonSuspended, func() response {
			return proofCall(t, base, "POST", path, b, p.proof(t, e.clock.Now(), "POST", path, b))
		})
	}
	e.poll(0, c, "").wantError(t, http.StatusBadRequest, "authorization_pending")
}
