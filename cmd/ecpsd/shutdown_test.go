package main

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/ecps-sante/ecps/redistest"
)

// longPollAnswer is one long-poll's answer, read in a goroutine.
type longPollAnswer struct {
	status int
	body   string
	took   time.Duration
	err    error
}

// The stop (SIGTERM: serve's ctx ends) answers every waiting long-poll at
// once with authorization_pending, instead of letting it run to its wait,
// and serve returns nil.
func TestShutdownAnswersWaitingLongPolls(t *testing.T) {
	srv := redistest.Start(t)
	s := startServe(t, configFor(t, srv.URL(), ""))
	cl := &http.Client{Timeout: 40 * time.Second}

	idp := func(method, path string, body []byte) (*http.Request, error) {
		var rd io.Reader
		if body != nil {
			rd = bytes.NewReader(body)
		}
		req, err := http.NewRequest(method, s.base+path, rd)
		if err != nil {
			return nil, err
		}
		req.SetBasicAuth("psc", testClientSecret)
		if body != nil {
			req.Header.Set("Content-Type", "application/json")
		}
		return req, nil
	}

	// Two QR logins (no device needed), each long-polled with wait=25.
	const n = 2
	ids := make([]string, n)
	for i := range ids {
		req, err := idp("POST", "/api/v1/authentications", []byte(`{}`))
		if err != nil {
			t.Fatal(err)
		}
		res, err := cl.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != http.StatusCreated {
			t.Fatalf("create = %d %s", res.StatusCode, b)
		}
		var c struct {
			AuthReqID string `json:"auth_req_id"`
		}
		if err := json.Unmarshal(b, &c); err != nil || c.AuthReqID == "" {
			t.Fatalf("create body %s (%v)", b, err)
		}
		ids[i] = c.AuthReqID
	}

	answers := make(chan longPollAnswer, n)
	for _, id := range ids {
		req, err := idp("GET", "/api/v1/authentications/"+id+"?wait=25", nil)
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			start := time.Now()
			res, err := cl.Do(req)
			if err != nil {
				answers <- longPollAnswer{err: err, took: time.Since(start)}
				return
			}
			b, err := io.ReadAll(res.Body)
			res.Body.Close()
			answers <- longPollAnswer{status: res.StatusCode, body: string(b), took: time.Since(start), err: err}
		}()
	}
	time.Sleep(500 * time.Millisecond) // the long-polls are in flight, waiting

	select {
	case a := <-answers:
		t.Fatalf("a long-poll answered before the stop: %d %s (%v)", a.status, a.body, a.err)
	default:
	}
	stopAt := time.Now()
	s.cancel()

	for i := 0; i < n; i++ {
		select {
		case a := <-answers:
			if a.err != nil {
				t.Fatalf("long-poll failed on the stop after %v: %v", time.Since(stopAt), a.err)
			}
			if a.status != http.StatusBadRequest || errorCode(t, a.body) != "authorization_pending" {
				t.Errorf("long-poll on the stop = %d %s, want 400 authorization_pending", a.status, a.body)
			}
			if d := time.Since(stopAt); d > 5*time.Second {
				t.Errorf("long-poll answered %v after the stop began, want promptly (its wait was 25 s)", d)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("long-poll still waiting 10 s after the stop began (its wait was 25 s)")
		}
	}

	select {
	case err := <-s.done:
		if err != nil {
			t.Errorf("serve returned %v, want nil", err)
		}
		s.done <- nil // for the cleanup
	case <-time.After(5 * time.Second):
		t.Fatal("serve did not return within 5 s of the long-polls' answers")
	}
	if d := time.Since(stopAt); d > 5*time.Second {
		t.Errorf("serve took %v to stop", d)
	}
}
