package api

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ecps-sante/ecps/challenge"
	"github.com/ecps-sante/ecps/directory"
	"github.com/ecps-sante/ecps/enrollment"
)

// directoryEnv is two replicas with the practitioner directory wired as
// ecpsd wires it, and a directory loaded from the published-format extract
// of directory/testdata (Dr Hélène DUPRÉ-LEFÈVRE is subjectA, with three places
// of activity; subjectB is absent from it).
func directoryEnv(t *testing.T) (*env, *directory.Store) {
	t.Helper()
	rdb, prefix := redisClient(t)
	dir := importDirectory(t, rdb, prefix, testExtract)
	return newEnvWithDirectory(t, rdb, prefix, dir), dir
}

// testExtract is the published-format sample of directory/testdata: Dr
// Hélène DUPRÉ-LEFÈVRE (subjectA, three places of activity), Anaïs N'DIAYE
// (subjectC, ADELI), not subjectB.
const testExtract = "../directory/testdata/PS_LibreAcces_Personne_activite_202611150930.txt"

// importDirectory imports an activity file into a new directory store in
// the test's Redis and returns the store (it sees a new version within a
// millisecond, as replicas do within PointerTTL).
func importDirectory(t testing.TB, rdb redis.UniversalClient, prefix, path string) *directory.Store {
	t.Helper()
	dir := directory.NewStore(rdb, directory.Options{KeyPrefix: prefix, PointerTTL: time.Millisecond, Grace: 10 * time.Millisecond})
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := dir.Import(context.Background(), directory.Source{Activity: f, ActivityName: filepath.Base(path)}, directory.ImportOptions{}); err != nil {
		t.Fatal(err)
	}
	return dir
}

func newEnvWithDirectory(t *testing.T, rdb redis.UniversalClient, prefix string, dir *directory.Store) *env {
	e := newEnvWith(t, rdb, prefix, 0, func(eo *enrollment.Options, co *challenge.Options) {
		eo.Directory = dir
		co.Identities = dir
	})
	e.dir = dir
	for i := 0; i < 2; i++ {
		e.replicas = append(e.replicas, e.newReplica())
	}
	return e
}

// TestDirectoryFlow: with a directory loaded, the desk reads a
// practitioner's identity, an activation, a login_hint or a QR claim for a
// practitioner absent from it is unknown_user_id, and an approval carries
// the identity (on whichever replica); cleared, everything is as without a
// directory.
func TestDirectoryFlow(t *testing.T) {
	e, dir := directoryEnv(t)

	// The desk: the identity, or 404.
	r := do(t, e.replicas[1].http.URL, "GET", "/api/v1/desk/practitioners/"+subjectA, nil, deskHeader())
	r.wantStatus(t, http.StatusOK)
	var id map[string]any
	_ = json.Unmarshal(r.Body, &id)
	if id["family_name"] != "DUPRÉ-LEFÈVRE" || id["given_name"] != "Hélène" || id["civility"] != "Docteur" {
		t.Fatalf("identity %s", r.Body)
	}
	if acts, _ := id["activities"].([]any); len(acts) != 3 {
		t.Fatalf("activities %v, want her three distinct places of activity", id["activities"])
	}
	wantLookupReason(t, e.desk("GET", "/api/v1/desk/practitioners/"+subjectB, nil), "not_in_directory")
	e.desk("GET", "/api/v1/desk/practitioners/81000123456", nil).wantError(t, http.StatusBadRequest, "invalid_request")

	// Activations: refused for an absent practitioner (desk and IdP).
	e.desk("POST", "/api/v1/desk/activations", map[string]string{"subject": subjectB}).
		wantError(t, http.StatusBadRequest, "unknown_user_id")
	do(t, e.url(), "POST", "/api/v1/activations", jsonBody(t, map[string]string{"subject": subjectB}),
		basicAuth("idp-act", testActClientSec)).wantError(t, http.StatusBadRequest, "unknown_user_id")

	// A login_hint absent from it.
	e.idp(0, "POST", "/api/v1/authentications", map[string]any{"login_hint": subjectB}).
		wantError(t, http.StatusBadRequest, "unknown_user_id")

	// A push login of a known practitioner: the approval carries the identity.
	p := e.newDevice(subjectA)
	c := e.createAuth(map[string]any{"login_hint": subjectA})
	ch := e.pendingChallenge(p)
	e.respond(1, p, ch["challenge_id"].(string), p.decision(t, e.clock.Now(), ch, "approve", c.VerificationNumber)).wantStatus(t, http.StatusNoContent)
	r = e.poll(1, c, "")
	r.wantStatus(t, http.StatusOK)
	var res struct {
		Sub      string         `json:"sub"`
		Identity map[string]any `json:"identity"`
	}
	_ = json.Unmarshal(r.Body, &res)
	if res.Sub != subjectA || res.Identity["family_name"] != "DUPRÉ-LEFÈVRE" || res.Identity["directory_version"] == "" ||
		res.Identity["idnat"] != subjectA {
		t.Fatalf("approval %s", r.Body)
	}

	// A QR login claimed by a practitioner absent from the directory stays
	// claimable; claimed by a known one, its approval carries the identity.
	outsider := e.deviceWithoutDirectory(t, dir, subjectB)
	q := e.createAuth(map[string]any{})
	loginID := strings.TrimPrefix(q.LoginURL, "https://ecps.test/login/")
	tok := e.qrToken(loginID)
	claim := func(ph *phone) response {
		return e.call(e.url(), ph, "POST", "/api/v1/device/challenges/claim", jsonBody(t, map[string]string{"qr_token": tok}))
	}
	claim(outsider).wantError(t, http.StatusBadRequest, "unknown_user_id")
	r = claim(p)
	r.wantStatus(t, http.StatusOK)
	qch := r.json(t)
	e.respond(0, p, qch["challenge_id"].(string), p.decision(t, e.clock.Now(), qch, "approve", q.VerificationNumber)).wantStatus(t, http.StatusNoContent)
	r = e.poll(0, q, "")
	r.wantStatus(t, http.StatusOK)
	if !strings.Contains(string(r.Body), `"family_name":"DUPRÉ-LEFÈVRE"`) {
		t.Fatalf("QR approval %s", r.Body)
	}

	// Cleared: as without a directory (no identity, no refusal).
	if _, err := dir.Clear(context.Background()); err != nil {
		t.Fatal(err)
	}
	time.Sleep(5 * time.Millisecond) // the replicas' pointer (PointerTTL 1 ms here)
	wantLookupReason(t, e.desk("GET", "/api/v1/desk/practitioners/"+subjectA, nil), "no_directory")
	e.createActivation(subjectB)
	c = e.createAuth(map[string]any{"login_hint": subjectA})
	ch = e.pendingChallenge(p)
	e.respond(0, p, ch["challenge_id"].(string), p.decision(t, e.clock.Now(), ch, "approve", c.VerificationNumber)).wantStatus(t, http.StatusNoContent)
	r = e.poll(0, c, "")
	r.wantStatus(t, http.StatusOK)
	if strings.Contains(string(r.Body), "identity") {
		t.Fatalf("an approval without a directory carries an identity: %s", r.Body)
	}
}

// wantLookupReason checks a desk practitioner lookup's 404 and its reason:
// no_directory (activations stay possible) or not_in_directory (they are
// unknown_user_id).
func wantLookupReason(t *testing.T, r response, reason string) {
	t.Helper()
	r.wantError(t, http.StatusNotFound, "not_found")
	if got := r.json(t)["reason"]; got != reason {
		t.Fatalf("reason %v, want %s: %s", got, reason, r.Body)
	}
}

// TestDeskLookupWithoutDirectory: a server without a directory at all
// answers the lookup as one with none loaded.
func TestDeskLookupWithoutDirectory(t *testing.T) {
	e := newEnv(t, 1)
	wantLookupReason(t, e.desk("GET", "/api/v1/desk/practitioners/"+subjectA, nil), "no_directory")
	e.createActivation(subjectA)
}

// deviceWithoutDirectory enrols a device for a practitioner absent from the
// directory (as one enrolled before the directory was loaded): the
// directory is cleared for the activation, then loaded again.
func (e *env) deviceWithoutDirectory(t *testing.T, dir *directory.Store, subject string) *phone {
	t.Helper()
	ctx := context.Background()
	version, err := dir.Loaded(ctx)
	if err != nil || version == "" {
		t.Fatalf("no directory loaded: %v", err)
	}
	if _, err := dir.Clear(ctx); err != nil {
		t.Fatal(err)
	}
	time.Sleep(5 * time.Millisecond)
	p := e.newDevice(subject)
	f, err := os.Open(testExtract)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := dir.Import(ctx, directory.Source{Activity: f, ActivityName: "testdata"}, directory.ImportOptions{}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(5 * time.Millisecond)
	return p
}
