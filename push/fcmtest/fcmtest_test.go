package fcmtest

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
)

func post(t *testing.T, url, body string) (int, map[string]any) {
	t.Helper()
	resp, err := http.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var m map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&m)
	return resp.StatusCode, m
}

// The fake refuses what FCM refuses, with FCM's error shape.
func TestChecksRequestsAsFCM(t *testing.T) {
	s := New(t, "p1")
	send := s.Endpoint() + "/projects/p1/messages:send"
	cases := []struct {
		name, url, body string
		status          int
	}{
		{"ok", send, `{"message":{"token":"t","data":{"a":"b"},"android":{"priority":"high","ttl":"12s"},"apns":{"headers":{"apns-priority":"10"},"payload":{"aps":{"mutable-content":1}}}}}`, 200},
		{"fail/path", s.URL() + "/v1/messages:send", `{}`, 404},
		{"fail/project", s.Endpoint() + "/projects/other/messages:send", `{"message":{"token":"t"}}`, 404},
		{"fail/json", send, `{"message":`, 400},
		{"fail/unknown_top", send, `{"message":{"token":"t"},"extra":1}`, 400},
		{"fail/unknown_field", send, `{"message":{"token":"t","badge":1}}`, 400},
		{"fail/no_target", send, `{"message":{"data":{"a":"b"}}}`, 400},
		{"fail/two_targets", send, `{"message":{"token":"t","topic":"x"}}`, 400},
		{"fail/empty_token", send, `{"message":{"token":""}}`, 400},
		{"fail/data_not_string", send, `{"message":{"token":"t","data":{"n":1}}}`, 400},
		{"fail/data_reserved", send, `{"message":{"token":"t","data":{"google.x":"1"}}}`, 400},
		{"fail/priority", send, `{"message":{"token":"t","android":{"priority":"urgent"}}}`, 400},
		{"fail/ttl", send, `{"message":{"token":"t","android":{"ttl":"12"}}}`, 400},
		{"fail/apns_header", send, `{"message":{"token":"t","apns":{"headers":{"apns-priority":10}}}}`, 400},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			status, body := post(t, c.url, c.body)
			if status != c.status {
				t.Fatalf("status %d, want %d (%v)", status, c.status, body)
			}
			if status >= 400 {
				e, _ := body["error"].(map[string]any)
				if e == nil || e["status"] == "" || e["message"] == "" {
					t.Fatalf("error body %v", body)
				}
			}
		})
	}
	if got := s.Received(); len(got) != 1 || got[0].Token != "t" {
		t.Fatalf("received %+v", got)
	}
}

// Scripts apply per token, then to the next requests, then the default;
// validate_only messages are not delivered.
func TestScripts(t *testing.T) {
	s := New(t, "p1")
	send := s.Endpoint() + "/projects/p1/messages:send"
	s.Script("a", Unregistered(), QuotaExceeded("3"))
	s.ScriptNext(Internal())
	s.SetDefault(OK())
	want := []struct {
		token  string
		status int
	}{{"a", 404}, {"a", 429}, {"b", 500}, {"a", 200}, {"b", 200}}
	for i, w := range want {
		status, _ := post(t, send, `{"message":{"token":"`+w.token+`"}}`)
		if status != w.status {
			t.Fatalf("request %d for %s: %d, want %d", i, w.token, status, w.status)
		}
	}
	if status, _ := post(t, send, `{"validate_only":true,"message":{"token":"c"}}`); status != 200 {
		t.Fatal(status)
	}
	if n := len(s.Received()); n != 2 {
		t.Fatalf("%d delivered, want 2", n)
	}
	if s.RequestsFor("a") != 3 {
		t.Fatalf("requests for a: %d", s.RequestsFor("a"))
	}
}
