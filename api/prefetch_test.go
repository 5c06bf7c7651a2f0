package api

import (
	"net/http"
	"strings"
	"testing"

	"github.com/ecps-sante/ecps/deviceproof"
)

// The phone's list and read of its challenges are read on the proof
// check's pipeline: a refused proof (replayed, suspended, revoked device)
// still gets its 401 or 403, and never the data read beside it.
func TestPrefetchedReadsNeedTheProof(t *testing.T) {
	e := newEnv(t, 1)
	p := e.newDevice(subjectA)
	e.createAuth(map[string]any{"login_hint": subjectA, "binding_message": "prefetch"})
	ch := e.pendingChallenge(p)
	id := ch["challenge_id"].(string)
	base := e.url()
	for _, path := range []string{"/api/v1/device/challenges", "/api/v1/device/challenges/" + id} {
		tok := p.proof(t, e.clock.Now(), "GET", path, nil)
		r := proofCall(t, base, "GET", path, nil, tok)
		r.wantStatus(t, http.StatusOK)
		if !strings.Contains(string(r.Body), id) {
			t.Fatalf("%s: %s", path, r.Body)
		}
		proofExpectRejection(t, e, 0, deviceproof.ReasonReplay, func() response {
			r := proofCall(t, base, "GET", path, nil, tok)
			if strings.Contains(string(r.Body), id) {
				t.Fatalf("a replayed proof read the challenge: %s", r.Body)
			}
			return r
		})
	}
	e.desk("POST", "/api/v1/desk/devices/"+p.deviceID+"/suspend", nil).wantStatus(t, http.StatusOK)
	for _, path := range []string{"/api/v1/device/challenges", "/api/v1/device/challenges/" + id} {
		r := e.call(base, p, "GET", path, nil)
		if r.Status == http.StatusOK || strings.Contains(string(r.Body), id) {
			t.Fatalf("suspended device read %s: %d %s", path, r.Status, r.Body)
		}
	}
}
