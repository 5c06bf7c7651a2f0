package api

import (
	"bufio"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/ecps-sante/ecps/internal/syncbuf"
	"github.com/ecps-sante/ecps/redistest"
)

// TestRequestLines: at info level, a request answered 2xx writes no line
// (the metrics count it; its line is at debug level), a refused one writes
// its line, with its route and status, never its path or a secret.
func TestRequestLines(t *testing.T) {
	rdb, prefix := redistest.Client(t)
	var logs syncbuf.Buffer
	e := newEnvWith(t, rdb, prefix, 0, nil)
	e.log = &logs
	e.replicas = append(e.replicas, e.newReplica())

	e.newPushDevice(subjectA)
	c := e.createAuth(map[string]any{"login_hint": subjectA})
	e.poll(0, c, "").wantError(t, http.StatusBadRequest, "authorization_pending")
	e.idp(0, "GET", "/api/v1/authentications/"+c.AuthReqID+"x", nil).wantError(t, http.StatusBadRequest, "invalid_grant")

	var lines []map[string]any
	sc := bufio.NewScanner(strings.NewReader(logs.String()))
	for sc.Scan() {
		var l map[string]any
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			t.Fatalf("log line %q: %v", sc.Text(), err)
		}
		if l["msg"] == "request" {
			lines = append(lines, l)
		}
	}
	if len(lines) != 2 {
		t.Fatalf("%d request lines at info level, want 2 (the two polls answered 400): %s", len(lines), logs.String())
	}
	for _, l := range lines {
		if l["level"] != "INFO" || l["route"] != "/api/v1/authentications/:auth_req_id" || l["status"].(float64) < 400 {
			t.Errorf("request line %v", l)
		}
	}
	if strings.Contains(logs.String(), c.AuthReqID) || strings.Contains(logs.String(), testClientSecret) {
		t.Errorf("the log holds an auth_req_id or a secret: %s", logs.String())
	}
}
