package api

import (
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/ecps-sante/ecps/challenge"
	"github.com/ecps-sante/ecps/enrollment"
	"github.com/ecps-sante/ecps/redistest"
)

// Linearizability of a login, checked with porcupine: concurrent histories
// of creates, decisions (from two phones of the practitioner, some sent
// twice), polls (two IdP pollers), cancels and expiries (the clock jumping
// past the logins' expiry), sent to two replicas while the network to Redis
// misbehaves, must each be explained by some order of their operations, each
// taking effect at one instant between its call and its return, in the
// contract's state machine (linModel).

// linInput is an operation on one login (login -1: the clock's jump, which
// concerns every login).
type linInput struct {
	Op    string // create, decide, readable, poll, cancel, expire
	Login int
	ID    string // decide, readable: the decision (its JWS)
	Kind  string // decide: approved, denied:denied, denied:wrong_number
	// AfterJump: called after the clock's jump. The service reads the
	// clock when a request starts, before its script runs: a request
	// called before the jump may still judge the expiry by the time before
	// it, even if its script runs after a poll that saw the login expired.
	AfterJump bool
}

// Outputs: ok, conflict, gone (decide); pending, slow_down, expired,
// approved, denied:<reason>, cancelled, invalid_grant (poll); ok (cancel,
// create, readable, expire); unknown: a 503 or a lost answer, which may or
// may not have taken effect. Anything else is "bad:…", which no state
// allows.
type linOutput = string

// linState is one login as the contract sees it.
type linState struct {
	Created   bool
	Expired   bool   // the clock passed its expiry
	Cancelled bool   // the IdP cancelled it while undecided
	Winner    string // the decision that won
	Outcome   string // approved | denied:<reason>
	Readable  bool   // the decision is readable by the IdP (audited)
	Delivered bool   // the approval was delivered
}

// linStep is the contract's state machine: the states that an operation
// with this output can lead to (none: not allowed).
func linStep(s linState, in linInput, out linOutput) []linState {
	unknown := out == "unknown"
	maybe := func(next linState) []linState { // unknown: it did or did not happen
		if unknown {
			return []linState{next, s}
		}
		return []linState{next}
	}
	switch in.Op {
	case "create":
		s.Created = true
		return []linState{s}
	case "expire":
		if s.Created {
			s.Expired = true
		}
		return []linState{s}
	case "decide":
		// Exactly one decision wins; the same decision sent again answers
		// as it did; others: conflict; undecided and expired: gone.
		var want string
		next := s
		switch {
		case s.Winner == in.ID:
			want = "ok"
		case s.Winner != "" || s.Cancelled:
			want = "conflict"
		case s.Expired && in.AfterJump:
			want = "gone"
		default:
			want = "ok"
			next.Winner, next.Outcome, next.Readable = in.ID, in.Kind, false
		}
		if unknown {
			return maybe(next)
		}
		if s.Expired && !in.AfterJump && want == "ok" && out == "gone" {
			return []linState{s} // its clock read after the jump
		}
		if out != want {
			return nil
		}
		return []linState{next}
	case "readable":
		// By the time a decision is answered 204, its result is readable.
		if s.Winner != in.ID {
			if unknown {
				return []linState{s}
			}
			return nil
		}
		next := s
		next.Readable = true
		return maybe(next)
	case "poll":
		if s.Delivered {
			if out == "invalid_grant" || unknown {
				return []linState{s}
			}
			return nil
		}
		if out == "slow_down" {
			return []linState{s}
		}
		var want string
		next := s
		switch {
		case s.Winner != "" && s.Readable:
			want = s.Outcome
			if want == "approved" {
				next.Delivered = true // exactly once
			}
		case s.Cancelled:
			want = "cancelled"
		case s.Expired:
			want = "expired"
			if !in.AfterJump && out == "pending" {
				return []linState{s} // its clock read before the jump
			}
		default:
			want = "pending"
		}
		if unknown {
			return maybe(next)
		}
		if out != want {
			return nil
		}
		return []linState{next}
	case "cancel":
		next := s
		if s.Winner == "" && !s.Cancelled && (!s.Expired || !in.AfterJump) {
			next.Cancelled = true
		}
		if out != "ok" && !unknown {
			return nil
		}
		if unknown || (s.Expired && !in.AfterJump) {
			return []linState{next, s}
		}
		return []linState{next}
	}
	return nil
}

var linModel = porcupine.NondeterministicModel{
	Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
		by := map[int][]porcupine.Operation{}
		var jumps []porcupine.Operation
		for _, op := range history {
			in := op.Input.(linInput)
			if in.Login < 0 {
				jumps = append(jumps, op)
				continue
			}
			by[in.Login] = append(by[in.Login], op)
		}
		var out [][]porcupine.Operation
		for _, ops := range by {
			out = append(out, append(ops, jumps...))
		}
		return out
	},
	Init: func() []interface{} { return []interface{}{linState{}} },
	Step: func(state, input, output interface{}) []interface{} {
		var out []interface{}
		for _, s := range linStep(state.(linState), input.(linInput), output.(linOutput)) {
			out = append(out, s)
		}
		return out
	},
	DescribeOperation: func(input, output interface{}) string {
		in := input.(linInput)
		return fmt.Sprintf("%s %s %s -> %s", in.Op, in.ID, in.Kind, output)
	},
}

// linCheck runs porcupine on one history.
func linCheck(ops []porcupine.Operation) porcupine.CheckResult {
	return porcupine.CheckOperationsTimeout(linModel.ToModel(), ops, 30*time.Second)
}

// linRecorder collects a history from many goroutines.
type linRecorder struct {
	mu     sync.Mutex
	ops    []porcupine.Operation
	jumped atomic.Int64 // when the clock's jump returned (unix ns), 0 before
}

const never = math.MaxInt64 // the return of an operation whose effect is unknown

func (r *linRecorder) add(client int, in linInput, call time.Time, out linOutput) {
	ret := time.Now().UnixNano()
	if out == "unknown" {
		ret = never
	}
	if j := r.jumped.Load(); j != 0 && call.UnixNano() > j {
		in.AfterJump = true
	}
	r.mu.Lock()
	r.ops = append(r.ops, porcupine.Operation{ClientId: client, Input: in, Call: call.UnixNano(), Output: out, Return: ret})
	r.mu.Unlock()
}

// pollOutput maps an IdP poll's answer to the model's output.
func pollOutput(a answer) linOutput {
	switch {
	case a.err != nil || a.unavailable():
		return "unknown"
	case a.status == http.StatusOK:
		return "approved"
	case a.status == http.StatusBadRequest && a.code == "authorization_pending":
		return "pending"
	case a.status == http.StatusBadRequest && a.code == "slow_down":
		return "slow_down"
	case a.status == http.StatusBadRequest && a.code == "expired_token":
		return "expired"
	case a.status == http.StatusBadRequest && a.code == "invalid_grant":
		return "invalid_grant"
	case a.status == http.StatusBadRequest && a.code == "access_denied" && a.reason == "cancelled":
		return "cancelled"
	case a.status == http.StatusBadRequest && a.code == "access_denied":
		return "denied:" + a.reason
	}
	return fmt.Sprintf("bad:%d %s", a.status, a.code)
}

func decideOutput(a answer) linOutput {
	switch {
	case a.err != nil || a.unavailable():
		return "unknown"
	case a.status == http.StatusNoContent:
		return "ok"
	case a.status == http.StatusConflict:
		return "conflict"
	case a.status == http.StatusGone:
		return "gone"
	}
	return fmt.Sprintf("bad:%d %s", a.status, a.code)
}

func okOutput(a answer, want int) linOutput {
	switch {
	case a.err != nil || a.unavailable():
		return "unknown"
	case a.status == want:
		return "ok"
	}
	return fmt.Sprintf("bad:%d %s", a.status, a.code)
}

// linHistory records one history: logins logins of the practitioners of
// phones (two phones each), decided, polled and cancelled concurrently on
// both replicas; the clock jumps past every existing login's expiry once,
// at a random time; fault (if any) is on for part of it.
func linHistory(t *testing.T, e *env, lc *loadClient, jump *atomic.Int64, phones [][2]*phone, logins int,
	fault func(stop <-chan struct{})) []porcupine.Operation {
	rec := &linRecorder{}
	var clients atomic.Int64
	client := func() int { return int(clients.Add(1)) }
	var wg sync.WaitGroup
	faultStop := make(chan struct{})
	if fault != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			time.Sleep(time.Duration(rand.IntN(300)) * time.Millisecond)
			fault(faultStop)
		}()
	}
	wg.Add(1)
	go func() { // the clock's jump: every login created before it expires
		defer wg.Done()
		time.Sleep(time.Duration(300+rand.IntN(1200)) * time.Millisecond)
		call := time.Now()
		jump.Add(int64(31 * time.Second))
		time.Sleep(5 * time.Millisecond) // the clock follows within 2 ms
		rec.add(0, linInput{Op: "expire", Login: -1}, call, "ok")
		rec.jumped.Store(time.Now().UnixNano())
	}()
	for l := 0; l < logins; l++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			time.Sleep(time.Duration(rand.IntN(400)) * time.Millisecond)
			pair := phones[l%len(phones)]
			subject := pair[0].subject
			call := time.Now()
			a := lc.idp("create", l%2, DefaultRequestBudget, "POST", "/api/v1/authentications",
				map[string]any{"login_hint": subject, "requested_expiry": 30})
			if a.status != http.StatusCreated {
				return // no auth_req_id: not in the history
			}
			rec.add(client(), linInput{Op: "create", Login: l}, call, "ok")
			var c created
			_ = json.Unmarshal(a.body, &c)
			challengeID := "chl_" + strings.SplitN(c.AuthReqID, ".", 2)[0]
			var ch map[string]any
			for range 20 { // the phone reads the challenge (for its nonce)
				r := lc.device("read", (l+1)%2, pair[0], "GET", "/api/v1/device/challenges/"+challengeID, nil)
				if r.status == http.StatusOK {
					_ = json.Unmarshal(r.body, &ch)
					break
				}
				if !r.unavailable() && r.err == nil {
					break // ended already (expired, cancelled)
				}
				time.Sleep(50 * time.Millisecond)
			}
			var inner sync.WaitGroup
			if ch != nil {
				for d, p := range pair { // two phones decide
					inner.Add(1)
					go func() {
						defer inner.Done()
						time.Sleep(time.Duration(rand.IntN(200)) * time.Millisecond)
						decision, number, kind := "approve", c.VerificationNumber, "approved"
						switch rand.IntN(4) {
						case 0:
							decision, number, kind = "deny", "", "denied:denied"
						case 1:
							number, kind = wrongNumber(number), "denied:wrong_number"
						}
						jws := p.decision(t, e.clock.Now(), ch, decision, number)
						id := jws[len(jws)-12:]
						body, _ := json.Marshal(map[string]string{"response": jws})
						cl := client()
						for range 1 + rand.IntN(2) { // sometimes sent again
							call := time.Now()
							a := lc.device("decide", (l+d)%2, p, "POST", "/api/v1/device/challenges/"+challengeID+"/response", body)
							out := decideOutput(a)
							rec.add(cl, linInput{Op: "decide", Login: l, ID: id, Kind: kind}, call, out)
							if out == "ok" || out == "unknown" {
								// Readable by the time it is answered.
								rec.add(cl, linInput{Op: "readable", Login: l, ID: id}, call, out)
							}
						}
					}()
				}
			}
			for q := range 2 { // two IdP pollers
				inner.Add(1)
				go func() {
					defer inner.Done()
					cl := client()
					for range 4 {
						time.Sleep(time.Duration(rand.IntN(300)) * time.Millisecond)
						call := time.Now()
						a := lc.idp("poll", (l+q)%2, DefaultRequestBudget+time.Second, "GET",
							"/api/v1/authentications/"+c.AuthReqID+"?wait=1", nil)
						rec.add(cl, linInput{Op: "poll", Login: l}, call, pollOutput(a))
					}
				}()
			}
			if rand.IntN(3) == 0 { // the user leaves the page
				inner.Add(1)
				go func() {
					defer inner.Done()
					time.Sleep(time.Duration(rand.IntN(400)) * time.Millisecond)
					call := time.Now()
					a := lc.idp("cancel", l%2, DefaultRequestBudget, "DELETE", "/api/v1/authentications/"+c.AuthReqID, nil)
					rec.add(client(), linInput{Op: "cancel", Login: l}, call, okOutput(a, http.StatusNoContent))
				}()
			}
			inner.Wait()
		}()
	}
	// The fault lasts until every login's operations are done but the last
	// second; then the network heals.
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(1500 * time.Millisecond):
	}
	close(faultStop)
	<-done
	sort.Slice(rec.ops, func(i, j int) bool { return rec.ops[i].Call < rec.ops[j].Call })
	return rec.ops
}

func wrongNumber(n string) string {
	b := []byte(n)
	b[0] = '0' + (b[0]-'0'+1)%10
	return string(b)
}

// linFaults are the network faults of the histories (nil: none).
var linFaults = []struct {
	name string
	on   func(p *redistest.FaultProxy, stop <-chan struct{})
}{
	{"none", nil},
	{"latency", func(p *redistest.FaultProxy, stop <-chan struct{}) {
		p.Delay(150 * time.Millisecond)
		<-stop
		p.Delay(0)
	}},
	{"stall", func(p *redistest.FaultProxy, stop <-chan struct{}) {
		p.Stall()
		select {
		case <-stop:
		case <-time.After(800 * time.Millisecond):
		}
		p.Unstall()
	}},
	{"reset-mid-reply", func(p *redistest.FaultProxy, stop <-chan struct{}) {
		tick := time.NewTicker(15 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				p.ResetMidReply(0)
				return
			case <-tick.C:
				p.ResetMidReply(1)
			}
		}
	}},
	{"lost-replies", func(p *redistest.FaultProxy, stop <-chan struct{}) {
		// Every script's reply lost now and then (go-redis resends it).
		for i := 1; ; i++ {
			p.DropReply(redistest.IsScript, 1+i%5)
			select {
			case <-stop:
				p.Disarm()
				return
			case <-time.After(40 * time.Millisecond):
			}
		}
	}},
	{"refused", func(p *redistest.FaultProxy, stop <-chan struct{}) {
		p.Refuse(true, true)
		select {
		case <-stop:
		case <-time.After(600 * time.Millisecond):
		}
		p.Refuse(false, false)
	}},
}

// linHistories is how many histories TestLinearizable checks: more when
// ECPS_TOPOLOGY_TESTS is set (make test-topologies).
func linHistories() int {
	if os.Getenv("ECPS_TOPOLOGY_TESTS") != "" {
		return 60
	}
	return 12
}

// TestLinearizable records histories under each network fault in turn and
// checks every one with porcupine; then it plants a second winning
// decision and a second delivery into a recorded history, which the
// checker must reject.
func TestLinearizable(t *testing.T) {
	e, proxy := proxiedEnvWith(t, func(_ *enrollment.Options, o *challenge.Options) {
		o.PendingPerSubject, o.PushesPerSubject, o.DenialsBeforeBlock = 1000, 100000, 100000
		o.PollInterval = time.Second
	})
	jump := followRealTime(t, e)
	lc := newLoadClient(t, e)
	var phones [][2]*phone
	for range 3 {
		p := e.newDevice(adeliSubject())
		q := newPhone(t)
		e.enrol(q, e.createActivation(p.subject))
		phones = append(phones, [2]*phone{p, q})
	}
	n := linHistories()
	verdicts := map[porcupine.CheckResult]int{}
	outputs := map[string]int{}
	var kept []porcupine.Operation
	totalOps := 0
	for h := 0; h < n; h++ {
		f := linFaults[h%len(linFaults)]
		var fault func(stop <-chan struct{})
		if f.on != nil {
			fault = func(stop <-chan struct{}) { f.on(proxy, stop) }
		}
		ops := linHistory(t, e, lc, jump, phones, 6, fault)
		totalOps += len(ops)
		for _, op := range ops {
			in := op.Input.(linInput)
			outputs[in.Op+" "+op.Output.(string)]++
		}
		res := linCheck(ops)
		verdicts[res]++
		if res != porcupine.Ok {
			t.Errorf("history %d (%s, %d operations): %s", h, f.name, len(ops), res)
			logIllegal(t, ops)
		}
		if kept == nil && res == porcupine.Ok && hasDelivery(ops) {
			kept = ops
		}
	}
	t.Logf("porcupine over %d histories (%d operations): %v", n, totalOps, verdicts)
	t.Logf("outputs: %v", outputs)
	for k := range outputs {
		if strings.HasPrefix(k, "decide bad") || strings.HasPrefix(k, "poll bad") || strings.HasPrefix(k, "cancel bad") {
			t.Errorf("an answer outside the contract: %s", k)
		}
	}
	if kept == nil {
		t.Fatal("no history delivered an approval: nothing to plant faults in")
	}
	// Planted faults: the checker must reject them.
	if res := linCheck(plantDoubleDecision(kept)); res != porcupine.Illegal {
		t.Errorf("a history with two winning decisions: %s, want Illegal", res)
	}
	if res := linCheck(plantDoubleDelivery(kept)); res != porcupine.Illegal {
		t.Errorf("a history with two deliveries: %s, want Illegal", res)
	}
}

// logIllegal logs the operations of each login whose history is illegal,
// in call order, times in ms from the first call.
func logIllegal(t *testing.T, ops []porcupine.Operation) {
	t0 := ops[0].Call
	for _, part := range linModel.Partition(ops) {
		if linCheck(part) == porcupine.Ok {
			continue
		}
		sort.Slice(part, func(i, j int) bool { return part[i].Call < part[j].Call })
		t.Logf("login %d:", part[0].Input.(linInput).Login)
		for _, op := range part {
			ret := "∞"
			if op.Return != never {
				ret = strconv.FormatInt((op.Return-t0)/1e6, 10)
			}
			t.Logf("  %d..%s ms client %d %+v -> %v", (op.Call-t0)/1e6, ret, op.ClientId, op.Input, op.Output)
		}
	}
}

func hasDelivery(ops []porcupine.Operation) bool {
	for _, op := range ops {
		if op.Input.(linInput).Op == "poll" && op.Output == "approved" {
			return true
		}
	}
	return false
}

// plantDoubleDecision adds, after a login's winning decision was answered,
// another decision of the same login answered 204 too.
func plantDoubleDecision(ops []porcupine.Operation) []porcupine.Operation {
	out := append([]porcupine.Operation(nil), ops...)
	for _, op := range ops {
		in := op.Input.(linInput)
		if in.Op == "decide" && op.Output == "ok" {
			other := linInput{Op: "decide", Login: in.Login, ID: "planted", Kind: "denied:denied"}
			out = append(out, porcupine.Operation{ClientId: 999, Input: other, Output: "ok", Call: op.Return + 1, Return: op.Return + 2})
			return out
		}
	}
	return out
}

// plantDoubleDelivery adds, after a delivering poll, another poll that
// gets the approval too.
func plantDoubleDelivery(ops []porcupine.Operation) []porcupine.Operation {
	out := append([]porcupine.Operation(nil), ops...)
	for _, op := range ops {
		in := op.Input.(linInput)
		if in.Op == "poll" && op.Output == "approved" {
			again := porcupine.Operation{ClientId: 999, Input: in, Output: "approved", Call: op.Return + 1, Return: op.Return + 2}
			return append(out, again)
		}
	}
	return out
}

// TestLinearizabilityModel: the model on small hand-written histories, so
// that a model that allows anything is caught: legal ones pass, a double
// decision, a double delivery, a result before its decision, a decision
// after a cancel and a pending after a 204 are rejected.
func TestLinearizabilityModel(t *testing.T) {
	type op struct {
		in       linInput
		out      string
		call, rt int64
	}
	c := func(o string, id, kind string) linInput { return linInput{Op: o, Login: 1, ID: id, Kind: kind} }
	hist := func(ops ...op) []porcupine.Operation {
		var out []porcupine.Operation
		for i, o := range ops {
			out = append(out, porcupine.Operation{ClientId: i, Input: o.in, Output: o.out, Call: o.call, Return: o.rt})
		}
		return out
	}
	created := op{c("create", "", ""), "ok", 0, 1}
	for _, tc := range []struct {
		name string
		ops  []porcupine.Operation
		want porcupine.CheckResult
	}{
		{"ok/approved-once", hist(created,
			op{c("decide", "a", "approved"), "ok", 2, 5}, op{c("readable", "a", ""), "ok", 2, 5},
			op{c("decide", "b", "denied:denied"), "conflict", 3, 4},
			op{c("poll", "", ""), "pending", 3, 4}, // concurrent with the decision
			op{c("poll", "", ""), "approved", 6, 7}, op{c("poll", "", ""), "invalid_grant", 8, 9}), porcupine.Ok},
		{"ok/resent-decision", hist(created,
			op{c("decide", "a", "approved"), "unknown", 2, never}, op{c("decide", "a", "approved"), "ok", 3, 4},
			op{c("readable", "a", ""), "ok", 3, 4}, op{c("poll", "", ""), "approved", 5, 6}), porcupine.Ok},
		{"ok/expired-then-gone", hist(created, op{linInput{Op: "expire", Login: -1}, "ok", 2, 3},
			op{c("poll", "", ""), "expired", 4, 5}, op{c("decide", "a", "approved"), "gone", 6, 7}), porcupine.Ok},
		{"ok/cancel", hist(created, op{c("cancel", "", ""), "ok", 2, 3}, op{c("decide", "a", "approved"), "conflict", 4, 5},
			op{c("poll", "", ""), "cancelled", 6, 7}), porcupine.Ok},
		{"fail/double-decision", hist(created,
			op{c("decide", "a", "approved"), "ok", 2, 3}, op{c("decide", "b", "denied:denied"), "ok", 4, 5}), porcupine.Illegal},
		{"fail/double-delivery", hist(created,
			op{c("decide", "a", "approved"), "ok", 2, 3}, op{c("readable", "a", ""), "ok", 2, 3},
			op{c("poll", "", ""), "approved", 4, 5}, op{c("poll", "", ""), "approved", 6, 7}), porcupine.Illegal},
		{"fail/result-before-decision", hist(created,
			op{c("poll", "", ""), "approved", 2, 3}, op{c("decide", "a", "approved"), "ok", 4, 5}), porcupine.Illegal},
		{"fail/pending-after-204", hist(created,
			op{c("decide", "a", "approved"), "ok", 2, 3}, op{c("readable", "a", ""), "ok", 2, 3},
			op{c("poll", "", ""), "pending", 4, 5}), porcupine.Illegal},
		{"fail/decision-called-after-expiry", hist(created, op{linInput{Op: "expire", Login: -1}, "ok", 2, 3},
			op{linInput{Op: "decide", Login: 1, ID: "a", Kind: "approved", AfterJump: true}, "ok", 4, 5}), porcupine.Illegal},
		{"fail/pending-called-after-expiry", hist(created, op{linInput{Op: "expire", Login: -1}, "ok", 2, 3},
			op{linInput{Op: "poll", Login: 1, AfterJump: true}, "pending", 4, 5}), porcupine.Illegal},
		{"fail/decision-after-cancel", hist(created, op{c("cancel", "", ""), "ok", 2, 3},
			op{c("decide", "a", "approved"), "ok", 4, 5}), porcupine.Illegal},
		{"fail/wrong-outcome", hist(created,
			op{c("decide", "a", "denied:wrong_number"), "ok", 2, 3}, op{c("readable", "a", ""), "ok", 2, 3},
			op{c("poll", "", ""), "approved", 4, 5}), porcupine.Illegal},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := linCheck(tc.ops); got != tc.want {
				t.Fatalf("%s, want %s", got, tc.want)
			}
		})
	}
}
