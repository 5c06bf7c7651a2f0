package api

import (
	"net/http"
	"sort"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"

	"github.com/ecps-sante/ecps/keycloak/keycloaktest"
)

// jsonRoutes lists the routes whose openapi.yaml operation takes a JSON body.
func jsonRoutes(t *testing.T) []Route {
	t.Helper()
	doc, err := openapi3.NewLoader().LoadFromFile("openapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var out []Route
	for path, item := range doc.Paths.Map() {
		for method, op := range item.Operations() {
			if op.RequestBody != nil && op.RequestBody.Value != nil && op.RequestBody.Value.Content.Get("application/json") != nil {
				out = append(out, Route{Method: method, Path: path})
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path+out[i].Method < out[j].Path+out[j].Method })
	return out
}

// Every JSON body is one JSON object: anything after it (a stray "}", a
// second value, junk) is 400 invalid_request on every JSON route, and so is
// a value that is not an object. Each route gets a body that works, so that
// only the trailing data can be the reason of the 400; the body alone is
// then sent and must work.
func TestJSONBodyIsOneObject(t *testing.T) {
	e, kc := newKeycloakEnv(t, 1, keycloaktest.Options{}, nil)
	p := e.newDevice(subjectA)
	clientAuth := basicAuth("idp-act", testActClientSec) // both scopes

	// send sends body to a route, authenticated as the route needs.
	type sender func(body []byte) response
	// valid returns a body that works on the route, and how to send it.
	valid := map[Route]func() ([]byte, sender){
		{"POST", "/api/v1/activations"}: func() ([]byte, sender) {
			return jsonBody(t, map[string]string{"subject": subjectB}), func(b []byte) response {
				return do(t, e.url(), "POST", "/api/v1/activations", b, clientAuth)
			}
		},
		{"POST", "/api/v1/desk/activations"}: func() ([]byte, sender) {
			return jsonBody(t, map[string]string{"subject": subjectB}), func(b []byte) response {
				return do(t, e.url(), "POST", "/api/v1/desk/activations", b, deskHeader())
			}
		},
		{"POST", "/api/v1/authentications"}: func() ([]byte, sender) {
			return []byte(`{"binding_message":"x"}`), func(b []byte) response {
				return do(t, e.url(), "POST", "/api/v1/authentications", b, clientAuth)
			}
		},
		{"POST", "/api/v1/enrollments"}: func() ([]byte, sender) {
			return jsonBody(t, newPhone(t).enrolBody(t, e, e.createActivation(subjectC))), func(b []byte) response {
				return do(t, e.url(), "POST", "/api/v1/enrollments", b, nil)
			}
		},
		{"PUT", "/api/v1/device/push-token"}: func() ([]byte, sender) {
			return []byte(`{"provider":"fcm","token":"tok"}`), func(b []byte) response {
				return e.call(e.url(), p, "PUT", "/api/v1/device/push-token", b)
			}
		},
		{"POST", "/api/v1/device/challenges/claim"}: func() ([]byte, sender) {
			c := e.createAuth(map[string]any{})
			tok := e.qrToken(strings.TrimPrefix(c.LoginURL, "https://ecps.test/login/"))
			return jsonBody(t, map[string]string{"qr_token": tok}), func(b []byte) response {
				return e.call(e.url(), p, "POST", "/api/v1/device/challenges/claim", b)
			}
		},
		{"POST", "/api/v1/keycloak/ciba"}: func() ([]byte, sender) {
			c := keycloaktest.CIBA{LoginHint: subjectA, BindingMessage: "42"}
			tok, err := kc.Sign(kc.Claims(c), "RS256")
			if err != nil {
				t.Fatal(err)
			}
			return keycloaktest.Body(c), func(b []byte) response { return e.channelRequest(tok, b) }
		},
		{"POST", "/api/v1/device/challenges/{challenge_id}/response"}: func() ([]byte, sender) {
			c := e.createAuth(map[string]any{"login_hint": subjectA})
			id := "chl_" + c.AuthReqID[:strings.Index(c.AuthReqID, ".")]
			r := e.call(e.url(), p, "GET", "/api/v1/device/challenges/"+id, nil)
			r.wantStatus(t, http.StatusOK)
			ch := r.json(t)
			path := "/api/v1/device/challenges/" + id + "/response"
			jws := p.decision(t, e.clock.Now(), ch, "deny", "")
			return jsonBody(t, map[string]string{"response": jws}), func(b []byte) response {
				return e.call(e.url(), p, "POST", path, b)
			}
		},
	}

	routes := jsonRoutes(t)
	if len(routes) < len(valid) {
		t.Fatalf("openapi.yaml lists %d JSON routes, want at least %d: %v", len(routes), len(valid), routes)
	}
	for _, r := range routes {
		t.Run(r.Method+" "+r.Path, func(t *testing.T) {
			mk, ok := valid[r]
			if !ok {
				t.Fatalf("no test body for the JSON route %s %s: add one", r.Method, r.Path)
			}
			body, send := mk()
			for _, bad := range []string{
				string(body) + "}",
				string(body) + " {}",
				string(body) + "\n" + string(body),
				string(body) + " x",
				string(body) + "]",
				string(body) + " null",
				string(body) + "{",
				"null",
				"[" + string(body) + "]",
				`"` + strings.ReplaceAll(string(body), `"`, `\"`) + `"`,
			} {
				res := send([]byte(bad))
				if res.Status != http.StatusBadRequest || res.json(t)["error"] != "invalid_request" {
					t.Errorf("body %.60q: %d %s, want 400 invalid_request", bad, res.Status, res.Body)
				}
			}
			// Trailing white space is no trailing data.
			if res := send(append(append([]byte(" \n"), body...), " \r\n\t"...)); res.Status/100 != 2 {
				t.Errorf("the valid body with white space around: %d %s", res.Status, res.Body)
			}
		})
	}
}
