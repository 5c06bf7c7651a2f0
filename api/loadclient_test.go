package api

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// What the fault tests share: a client that goroutines can use (it never
// calls t.Fatal and records every answer with its latency), one whole push
// login run as an IdP and a phone would run it, and the checks of what a
// login's answers and audit entries may be.

// answer is one request's outcome.
type answer struct {
	step    string // create, read, decide, poll, poll-after
	replica int
	status  int
	code    string // the contract error code, if any
	reason  string // access_denied's reason
	body    []byte
	took    time.Duration
	limit   time.Duration // the longest this request may take
	err     error         // transport error: never a contract answer
	at      time.Time
}

func (a answer) String() string {
	if a.err != nil {
		return fmt.Sprintf("%s@%d: %v after %v", a.step, a.replica, a.err, a.took.Round(time.Millisecond))
	}
	return fmt.Sprintf("%s@%d: %d %s after %v", a.step, a.replica, a.status, a.code, a.took.Round(time.Millisecond))
}

func (a answer) is(status int, code string) bool {
	return a.err == nil && a.status == status && a.code == code
}

func (a answer) unavailable() bool {
	return a.is(http.StatusServiceUnavailable, "unavailable")
}

// loadClient sends requests from many goroutines to an env's replicas.
type loadClient struct {
	e  *env
	hc *http.Client
}

func newLoadClient(t testing.TB, e *env) *loadClient {
	tr := &http.Transport{MaxIdleConns: 200, MaxIdleConnsPerHost: 100}
	t.Cleanup(tr.CloseIdleConnections)
	// The client's own timeout only turns a hang into a visible failure.
	return &loadClient{e: e, hc: &http.Client{Transport: tr, Timeout: 60 * time.Second}}
}

func (lc *loadClient) send(step string, replica int, limit time.Duration, method, path string, body []byte, header map[string]string) answer {
	a := answer{step: step, replica: replica, limit: limit, at: time.Now()}
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, lc.e.replicas[replica].http.URL+path, rd)
	if err != nil {
		a.err = err
		return a
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	res, err := lc.hc.Do(req)
	if err != nil {
		a.err, a.took = err, time.Since(a.at)
		return a
	}
	a.body, a.err = io.ReadAll(res.Body)
	res.Body.Close()
	a.took, a.status = time.Since(a.at), res.StatusCode
	var e struct {
		Error  string `json:"error"`
		Reason string `json:"reason"`
	}
	if json.Unmarshal(a.body, &e) == nil {
		a.code, a.reason = e.Error, e.Reason
	}
	return a
}

func (lc *loadClient) idp(step string, replica int, limit time.Duration, method, path string, body any) answer {
	var b []byte
	if body != nil {
		b, _ = json.Marshal(body)
	}
	return lc.send(step, replica, limit, method, path, b, basicAuth("idp", testClientSecret))
}

func (lc *loadClient) device(step string, replica int, p *phone, method, path string, body []byte) answer {
	proof := p.proof(lc.e.t, lc.e.clock.Now(), method, path, body)
	return lc.send(step, replica, DefaultRequestBudget, method, path, body, map[string]string{"Authorization": "ECPS-Proof " + proof})
}

// followRealTime makes the env's clock follow the real one, plus a jump a
// test may add (jump.Add), until the test ends: requests from goroutines
// then meet the poll interval, and logins expire, as in production.
func followRealTime(t testing.TB, e *env) *atomic.Int64 {
	var jump atomic.Int64
	e.clock.Set(time.Now())
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				e.clock.Set(time.Now().Add(time.Duration(jump.Load())))
			}
		}
	}()
	t.Cleanup(func() { close(stop); <-done })
	return &jump
}

// loginRun is one push login as the IdP and the phone saw it.
type loginRun struct {
	subject   string
	authReqID string // empty when the create failed
	answers   []answer
	delivered int    // 200 answers to the IdP's polls
	failed    string // empty: approved and delivered once; else why not
	start     time.Time
	end       time.Time
}

var slowDownRE = regexp.MustCompile(`wait (\d+) s`)

// login runs one push login with replicas taking turns: the IdP creates it,
// the phone reads the challenge and approves it (the same signed decision
// sent again after a 503, as the app does), the IdP long-polls until the
// result, then polls once more (which must be invalid_grant). The IdP does
// not create again after a failed create: that login failed. Every step
// stops trying at deadline.
func (lc *loadClient) login(p *phone, first int, deadline time.Time) (run loginRun) {
	n := len(lc.e.replicas)
	rep := func(i int) int { return (first + i) % n }
	run = loginRun{subject: p.subject, start: time.Now()}
	defer func() { run.end = time.Now() }()
	add := func(a answer) answer { run.answers = append(run.answers, a); return a }
	retry := func(a answer) bool {
		if !a.unavailable() || time.Now().After(deadline) {
			return false
		}
		time.Sleep(100 * time.Millisecond)
		return true
	}

	a := add(lc.idp("create", rep(0), DefaultRequestBudget, "POST", "/api/v1/authentications",
		map[string]any{"login_hint": p.subject, "binding_message": "Connexion"}))
	if a.err != nil || a.status != http.StatusCreated {
		run.failed = "create: " + a.String()
		return run
	}
	var c created
	_ = json.Unmarshal(a.body, &c)
	run.authReqID = c.AuthReqID
	challengeID := "chl_" + strings.SplitN(c.AuthReqID, ".", 2)[0]

	var ch map[string]any
	for {
		a = add(lc.device("read", rep(1), p, "GET", "/api/v1/device/challenges/"+challengeID, nil))
		if !retry(a) {
			break
		}
	}
	if a.err != nil || a.status != http.StatusOK {
		run.failed = "read: " + a.String()
		return run
	}
	_ = json.Unmarshal(a.body, &ch)

	jws := p.decision(lc.e.t, lc.e.clock.Now(), ch, "approve", c.VerificationNumber)
	body, _ := json.Marshal(map[string]string{"response": jws})
	for {
		a = add(lc.device("decide", rep(0), p, "POST", "/api/v1/device/challenges/"+challengeID+"/response", body))
		if !retry(a) {
			break
		}
	}
	if a.err != nil || a.status != http.StatusNoContent {
		run.failed = "decide: " + a.String()
		return run
	}

	const wait = 2 * time.Second
	for time.Now().Before(deadline) {
		a = add(lc.idp("poll", rep(1), DefaultRequestBudget+wait, "GET", "/api/v1/authentications/"+c.AuthReqID+"?wait=2", nil))
		switch {
		case a.status == http.StatusOK:
			run.delivered++
		case a.is(http.StatusBadRequest, "authorization_pending"):
			continue
		case a.is(http.StatusBadRequest, "slow_down"):
			s := 6
			if m := slowDownRE.FindSubmatch(a.body); m != nil {
				s, _ = strconv.Atoi(string(m[1]))
			}
			time.Sleep(time.Duration(s) * time.Second)
			continue
		case retry(a):
			continue
		default:
			run.failed = "poll: " + a.String()
			return run
		}
		break
	}
	if run.delivered == 0 {
		run.failed = "poll: no result before the deadline"
		return run
	}
	// Polled again after the interval: the result was delivered, once.
	time.Sleep(time.Duration(c.Interval) * time.Second)
	for {
		a = add(lc.idp("poll-after", rep(0), DefaultRequestBudget, "GET", "/api/v1/authentications/"+c.AuthReqID, nil))
		if a.status == http.StatusOK {
			run.delivered++
		}
		if !retry(a) {
			break
		}
	}
	return run
}

// contractAnswer reports why a is not an answer the contract allows for its
// step, or "" when it is. 503 unavailable is always allowed; a transport
// error, a 500, a 401 on a valid proof or a request over its time limit
// never are.
func contractAnswer(a answer) string {
	if a.err != nil {
		return "transport error"
	}
	if a.took > a.limit+time.Second {
		return fmt.Sprintf("took %v, over its limit of %v", a.took.Round(time.Millisecond), a.limit)
	}
	if a.unavailable() {
		return ""
	}
	ok := map[string][]string{
		"create":     {"201"},
		"read":       {"200"},
		"decide":     {"204"},
		"poll":       {"200", "400 authorization_pending", "400 slow_down"},
		"poll-after": {"400 invalid_grant"},
		"devices":    {"200"},
	}[a.step]
	got := strconv.Itoa(a.status)
	if a.code != "" {
		got += " " + a.code
	}
	if slices.Contains(ok, got) {
		return ""
	}
	return "not a contract answer for this step"
}

// latencies summarises answers' latencies.
func latencies(as []answer) string {
	if len(as) == 0 {
		return "no request"
	}
	d := make([]time.Duration, len(as))
	for i, a := range as {
		d[i] = a.took
	}
	sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
	q := func(f float64) time.Duration { return d[int(f*float64(len(d)-1))].Round(time.Millisecond) }
	return fmt.Sprintf("n=%d p50=%v p90=%v max=%v", len(d), q(0.5), q(0.9), q(1))
}

// statusCounts counts answers by "status code".
func statusCounts(as []answer) map[string]int {
	out := map[string]int{}
	for _, a := range as {
		k := strconv.Itoa(a.status)
		if a.code != "" {
			k += " " + a.code
		}
		if a.err != nil {
			k = "transport error"
		}
		out[k]++
	}
	return out
}

// auditByChallenge reads a practitioner's whole audit (desk API) and counts
// its entries by event and challenge_id.
func auditByChallenge(t testing.TB, e *env, subject string) map[string]map[string]int {
	t.Helper()
	entries, _ := deskAllAudit(t, e, subject)
	out := map[string]map[string]int{}
	for _, en := range entries {
		var event string
		var details struct {
			ChallengeID string `json:"challenge_id"`
		}
		_ = json.Unmarshal(en["event"], &event)
		_ = json.Unmarshal(en["details"], &details)
		if out[event] == nil {
			out[event] = map[string]int{}
		}
		out[event][details.ChallengeID]++
	}
	return out
}

// checkLoginAudit checks the audit against what the IdP saw: each login
// created and decided at most once in the audit, and every approval the IdP
// got has its audit entry.
func checkLoginAudit(t testing.TB, e *env, runs []loginRun) {
	t.Helper()
	bySubject := map[string][]loginRun{}
	for _, r := range runs {
		bySubject[r.subject] = append(bySubject[r.subject], r)
	}
	for subject, rs := range bySubject {
		audit := auditByChallenge(t, e, subject)
		for _, event := range []string{"authentication.created", "authentication.approved", "authentication.denied"} {
			for id, n := range audit[event] {
				if n > 1 {
					t.Errorf("%s: %d × %s for %s", subject, n, event, id)
				}
			}
		}
		for _, r := range rs {
			if r.delivered == 0 {
				continue
			}
			id := "chl_" + strings.SplitN(r.authReqID, ".", 2)[0]
			if audit["authentication.approved"][id] != 1 {
				t.Errorf("%s: approval of %s delivered without its audit entry", subject, id)
			}
		}
	}
}

// checkRuns checks every answer and every delivery of runs.
func checkRuns(t testing.TB, runs []loginRun) {
	t.Helper()
	bad := 0
	for _, r := range runs {
		for _, a := range r.answers {
			if why := contractAnswer(a); why != "" {
				if bad++; bad <= 20 {
					t.Errorf("login of %s: %v: %s %s", r.subject, a, why, a.body)
				}
			}
		}
		if r.delivered > 1 {
			t.Errorf("login %s delivered %d times", r.authReqID, r.delivered)
		}
	}
}

// probeStream sends a phone's GET /api/v1/device/devices (a proof and a
// read) every 20 ms, replicas taking turns, until stop is closed: a steady
// sample of latencies whatever the logins are doing.
func (lc *loadClient) probeStream(p *phone, stop <-chan struct{}) []answer {
	var out []answer
	for i := 0; ; i++ {
		select {
		case <-stop:
			return out
		case <-time.After(20 * time.Millisecond):
		}
		out = append(out, lc.device("devices", i%len(lc.e.replicas), p, "GET", "/api/v1/device/devices", nil))
	}
}

// loadStream runs logins from workers goroutines (one practitioner and phone
// each) until stop is closed, replicas taking turns; it returns every run.
func (lc *loadClient) loadStream(phones []*phone, stop <-chan struct{}, loginDeadline time.Duration) []loginRun {
	var mu sync.Mutex
	var runs []loginRun
	var wg sync.WaitGroup
	for w, p := range phones {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				r := lc.login(p, w+i, time.Now().Add(loginDeadline))
				mu.Lock()
				runs = append(runs, r)
				mu.Unlock()
				if r.failed != "" {
					// The user tries again a little later, not in a loop.
					time.Sleep(500 * time.Millisecond)
				}
			}
		}()
	}
	wg.Wait()
	sort.Slice(runs, func(i, j int) bool { return runs[i].start.Before(runs[j].start) })
	return runs
}
