package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/sha256"
	"encoding/json"
	"encoding/xml"
	"errors"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/ecps-sante/ecps/idnat"
)

func bodyHash(s string) string {
	sum := sha256.Sum256([]byte(s))
	return b64.EncodeToString(sum[:])
}

func TestRPPSIDsAreValidAndDistinct(t *testing.T) {
	ids := rppsIDs(500)
	seen := map[string]bool{}
	for _, id := range ids {
		if _, err := idnat.Parse(id); err != nil {
			t.Fatalf("%s: %v", id, err)
		}
		if seen[id] {
			t.Fatalf("%s twice", id)
		}
		seen[id] = true
	}
	// A known RPPS: 810001234565 (the demo's) has check digit 5.
	if d := luhnCheckDigit("1000123456"); d != 5 {
		t.Fatalf("check digit of 1000123456 = %d, want 5", d)
	}
}

// The hand-made JWSs are what go-jose (the service's parser) accepts:
// ES256, the contract's typ and kid, R‖S signatures.
func TestSignerMakesES256JWS(t *testing.T) {
	s, err := newSigner()
	if err != nil {
		t.Fatal(err)
	}
	jwkMap, err := s.jwk()
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := json.Marshal(jwkMap)
	var jwk jose.JSONWebKey
	if err := jwk.UnmarshalJSON(raw); err != nil {
		t.Fatalf("JWK %s: %v", raw, err)
	}
	pub, ok := jwk.Key.(*ecdsa.PublicKey)
	if !ok || !pub.Equal(&s.key.PublicKey) {
		t.Fatal("the JWK is not the signer's public key")
	}
	enrol, err := s.sign(typEnrolProof, map[string]any{"activation_id": "act_x", "iat": 1})
	if err != nil {
		t.Fatal(err)
	}
	s.kid = "dev_1"
	proof, err := s.proof("POST", "/api/v1/device/challenges/chl_1/response", []byte(`{"response":"x"}`), time.Unix(1700000000, 0))
	if err != nil {
		t.Fatal(err)
	}
	decision, err := s.sign(typDecision, map[string]any{"challenge_id": "chl_1", "decision": "approve"})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		jws, typ, kid string
	}{
		{enrol, typEnrolProof, ""},
		{strings.TrimPrefix(proof, "ECPS-Proof "), typRequestProof, "dev_1"},
		{decision, typDecision, "dev_1"},
	} {
		obj, err := jose.ParseSignedCompact(c.jws, []jose.SignatureAlgorithm{jose.ES256})
		if err != nil {
			t.Fatalf("%s: %v", c.typ, err)
		}
		h := obj.Signatures[0].Protected
		if h.Algorithm != "ES256" || h.ExtraHeaders[jose.HeaderType] != c.typ || h.KeyID != c.kid {
			t.Errorf("%s: header %+v", c.typ, h)
		}
		if _, err := obj.Verify(pub); err != nil {
			t.Errorf("%s: go-jose refuses the signature: %v", c.typ, err)
		}
		if !verifyES256(pub, c.jws) {
			t.Errorf("%s: verifyES256 refuses it", c.typ)
		}
	}
	if !strings.HasPrefix(proof, "ECPS-Proof ") {
		t.Errorf("proof %q", proof)
	}
	obj, _ := jose.ParseSignedCompact(strings.TrimPrefix(proof, "ECPS-Proof "), []jose.SignatureAlgorithm{jose.ES256})
	var claims map[string]any
	_ = json.Unmarshal(obj.UnsafePayloadWithoutVerification(), &claims)
	if claims["htm"] != "POST" || claims["htu"] != "/api/v1/device/challenges/chl_1/response" || claims["iat"] != float64(1700000000) ||
		len(claims["jti"].(string)) < 16 || claims["bh"] != bodyHash(`{"response":"x"}`) {
		t.Errorf("proof claims %v", claims)
	}
	if verifyES256(pub, decision[:len(decision)-2]+"AA") {
		t.Error("verifyES256 takes a broken signature")
	}
}

// Percentiles of merged shards are those of every value recorded.
func TestMergeShards(t *testing.T) {
	a, b, all := newShard(), newShard(), newShard()
	for i := 1; i <= 2000; i++ {
		r := loginResult{steps: map[string]time.Duration{stepTotal: time.Duration(i) * time.Millisecond, stepCreate: time.Duration(i) * time.Microsecond}}
		if i%2 == 0 {
			a.add(r)
		} else {
			b.add(r)
		}
		all.add(r)
	}
	a.add(loginResult{err: "create:too_many_requests"})
	b.add(loginResult{err: "create:too_many_requests"})
	b.add(loginResult{err: "learn:no_push"})
	m := merge(a, b)
	if m.ok != 2000 || m.errorCount() != 3 || m.errors["create:too_many_requests"] != 2 || m.errors["learn:no_push"] != 1 {
		t.Fatalf("ok %d errors %v", m.ok, m.errors)
	}
	got, want := summarize(m.steps[stepTotal]), summarize(all.steps[stepTotal])
	if got != want {
		t.Fatalf("merged %+v, one histogram %+v", got, want)
	}
	// 3 significant digits: within 0.1 %.
	for _, c := range []struct{ got, want float64 }{{got.P50, 1000}, {got.P99, 1980}, {got.P999, 1998}, {got.Max, 2000}, {got.Mean, 1000.5}} {
		if math.Abs(c.got-c.want) > c.want/1000 {
			t.Errorf("got %v, want %v", c.got, c.want)
		}
	}
	if got.Count != 2000 {
		t.Errorf("count %d", got.Count)
	}
	if p := summarize(m.steps[stepCreate]); p.Max != 2 || p.P50 != 1 {
		t.Errorf("µs values: %+v", p)
	}
	if p := summarize(m.steps[stepRead]); p != (Percentiles{}) {
		t.Errorf("empty step: %+v", p)
	}
	sp := spectrum(m.steps[stepTotal])
	if len(sp) != len(spectrumQuantiles) || sp[0][1] != 1 || math.Abs(sp[len(sp)-1][1]-2000) > 2 {
		t.Errorf("spectrum %v", sp)
	}
	for i := 1; i < len(sp); i++ {
		if sp[i][1] < sp[i-1][1] {
			t.Errorf("spectrum not monotonic: %v", sp)
		}
	}
}

func TestIntendedStart(t *testing.T) {
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	cases := []struct {
		rate float64
		i    int64
		want time.Duration
	}{
		{100, 0, 0},
		{100, 1, 10 * time.Millisecond},
		{100, 100, time.Second},
		{100, 1_000_000, 10_000 * time.Second}, // no drift over a long run
		{3, 1, 333_333_333 * time.Nanosecond},
		{3, 3, time.Second},
		{0.5, 2, 4 * time.Second},
	}
	for _, c := range cases {
		if got := intendedStart(start, c.rate, c.i).Sub(start); got != c.want {
			t.Errorf("rate %v, login %d: %v, want %v", c.rate, c.i, got, c.want)
		}
	}
}

// The open loop starts each login at its own intended time, whatever the
// earlier ones do, and measures from that time.
func TestOpenLoopStartsOnTime(t *testing.T) {
	b := &bench{iv: newHist(), shards: []*shard{newShard(), newShard()}}
	var mu sync.Mutex
	type start struct {
		n        int64
		due, got time.Time
	}
	var starts []start
	b.loginFn = func(ctx context.Context, n int64, due time.Time) loginResult {
		mu.Lock()
		starts = append(starts, start{n, due, time.Now()})
		mu.Unlock()
		time.Sleep(30 * time.Millisecond) // slower than the interval: logins overlap
		return loginResult{steps: map[string]time.Duration{stepTotal: time.Since(due)}}
	}
	const rate = 200.0 // one every 5 ms
	t0 := time.Now()
	b.openLoop(context.Background(), rate, 1000, t0, t0.Add(100*time.Millisecond), func() {})
	if len(starts) != 20 {
		t.Fatalf("%d logins started in 100 ms at 200/s, want 20", len(starts))
	}
	seen := map[int64]bool{}
	for _, s := range starts {
		seen[s.n] = true
		if want := t0.Add(time.Duration(s.n) * 5 * time.Millisecond); !s.due.Equal(want) {
			t.Errorf("login %d due %v, want %v", s.n, s.due.Sub(t0), want.Sub(t0))
		}
		if late := s.got.Sub(s.due); late < 0 || late > 25*time.Millisecond {
			t.Errorf("login %d started %v after its time", s.n, late)
		}
	}
	if len(seen) != 20 {
		t.Errorf("login numbers %v", seen)
	}
	m := merge(b.shards...)
	if m.ok != 20 || summarize(m.steps[stepTotal]).P50 < 30 {
		t.Errorf("ok %d, total %+v", m.ok, summarize(m.steps[stepTotal]))
	}
}

// A login due while -max-inflight are running is not started: it is an
// error, never a delay of the ones after it.
func TestOpenLoopMaxInflight(t *testing.T) {
	b := &bench{iv: newHist(), shards: []*shard{newShard()}}
	release := make(chan struct{})
	b.loginFn = func(ctx context.Context, n int64, due time.Time) loginResult {
		<-release
		return loginResult{steps: map[string]time.Duration{stepTotal: time.Millisecond}}
	}
	t0 := time.Now()
	done := make(chan struct{})
	go func() {
		b.openLoop(context.Background(), 1000, 3, t0, t0.Add(20*time.Millisecond), func() {})
		close(done)
	}()
	time.Sleep(60 * time.Millisecond)
	close(release)
	<-done
	m := merge(b.shards...)
	if m.ok != 3 || m.errors["start:max_inflight"] != 17 || b.dropped.Load() != 17 {
		t.Fatalf("ok %d, errors %v, dropped %d", m.ok, m.errors, b.dropped.Load())
	}
}

func TestPoolPushBudget(t *testing.T) {
	subs := []*subject{{idnat: "a"}, {idnat: "b"}}
	now := time.Unix(1000, 0)
	p := newPool(subs, 2, time.Minute)
	p.now = func() time.Time { return now }
	ctx := context.Background()
	var got []string
	for range 4 {
		s, err := p.acquire(ctx)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, s.idnat)
		p.release(s)
	}
	if strings.Join(got, "") != "abab" {
		t.Errorf("lent in order %v, want each in turn", got)
	}
	if _, err := p.acquire(ctx); !errors.Is(err, errBudget) {
		t.Fatalf("a 5th push with 2 × 2 allowed: %v", err)
	}
	now = now.Add(time.Minute) // the window has passed
	s, err := p.acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// The other one is free; a third acquire waits for a release.
	s2, err := p.acquire(ctx)
	if err != nil || s2 == s {
		t.Fatal(err)
	}
	go func() { time.Sleep(20 * time.Millisecond); p.release(s) }()
	if s3, err := p.acquire(ctx); err != nil || s3 != s {
		t.Fatalf("after a release: %v %v", s3, err)
	}
	unlimited := newPool(subs[:1], 0, time.Minute)
	for range 100 {
		s, err := unlimited.acquire(ctx)
		if err != nil {
			t.Fatal(err)
		}
		unlimited.release(s)
	}
}

func TestReportMaths(t *testing.T) {
	// 2 cores, 100 µs a signature and 200 µs a verification: 900 µs of
	// one core per login → 2222 logins/s.
	if got := ceilingFrom(2, 100, 200); math.Abs(got-2222.222) > 0.01 {
		t.Errorf("ceiling %v", got)
	}
	if ceilingFrom(2, 0, 0) != 0 {
		t.Error("ceiling of free crypto")
	}
	if got := perLogin(10.5, 10.8, 1000); math.Abs(got-0.0003) > 1e-12 {
		t.Errorf("perLogin %v", got)
	}
	for _, c := range [][3]float64{{1, 2, 0}, {math.NaN(), 2, 10}, {3, 2, 10}} {
		if !math.IsNaN(perLogin(c[0], c[1], int64(c[2]))) {
			t.Errorf("perLogin%v is not unknown", c)
		}
	}
	info := "# Commandstats\r\ncmdstat_evalsha:calls=800,usec=9000,usec_per_call=11.25,rejected_calls=0,failed_calls=0\r\n" +
		"cmdstat_hset:calls=120,usec=100,usec_per_call=0.8,rejected_calls=0,failed_calls=0\r\n" +
		"cmdstat_info:calls=7,usec=700,usec_per_call=100,rejected_calls=0,failed_calls=0\r\n" +
		"# CPU\r\nused_cpu_sys:1.500000\r\nused_cpu_user:2.250000\r\nused_cpu_sys_children:9.000000\r\n" +
		"# Memory\r\nused_memory:123456\r\n# Stats\r\ntotal_reads_processed:5000\r\n"
	after, err := parseRedisInfo(info)
	if err != nil {
		t.Fatal(err)
	}
	if after.CPUSeconds != 3.75 || after.UsedMemory != 123456 || after.Calls["evalsha"] != 800 || after.Reads != 5000 {
		t.Fatalf("parsed %+v", after)
	}
	before := redisStats{Calls: map[string]int64{"evalsha": 300, "info": 2}}
	byName, total := redisDelta(before, after)
	if total != 620 || byName["evalsha"] != 500 || byName["hset"] != 120 || byName["info"] != 0 {
		t.Errorf("delta %v %d", byName, total)
	}
	if _, err := parseRedisInfo("# CPU\r\nused_cpu_sys:1\r\n"); err == nil {
		t.Error("INFO without used_cpu_user accepted")
	}
	m := parseMetrics(strings.NewReader("# HELP process_cpu_seconds_total x\n# TYPE process_cpu_seconds_total counter\n"+
		"process_cpu_seconds_total 12.34\nprocess_cpu_seconds_total_other 1\ngo_goroutines{a=\"b\"} 3\ngo_goroutines 42\n"),
		"process_cpu_seconds_total", "go_goroutines", "absent")
	if m["process_cpu_seconds_total"] != 12.34 || m["go_goroutines"] != 42 || !math.IsNaN(m["absent"]) {
		t.Errorf("metrics %v", m)
	}
	if k := sortedKeys(map[string]int64{"b": 2, "a": 2, "c": 5}); strings.Join(k, "") != "cab" {
		t.Errorf("sortedKeys %v", k)
	}
}

func TestErrorKind(t *testing.T) {
	cases := []struct {
		r    reply
		err  error
		want string
	}{
		{reply{status: 429, code: "too_many_requests"}, nil, "create:too_many_requests"},
		{reply{status: 502}, nil, "create:http_502"},
		{reply{}, context.DeadlineExceeded, "create:timeout"},
		{reply{}, context.Canceled, "create:cancelled"},
		{reply{}, errors.New("connection refused"), "create:transport"},
	}
	for _, c := range cases {
		if got := errorKind("create", c.r, c.err); got != c.want {
			t.Errorf("%+v %v: %q, want %q", c.r, c.err, got, c.want)
		}
	}
}

func TestFCMAddr(t *testing.T) {
	for in, want := range map[string]string{"127.0.0.1:9099": "127.0.0.1:9099", "http://127.0.0.1:9099": "127.0.0.1:9099",
		"http://127.0.0.1:9099/v1": "127.0.0.1:9099"} {
		if got, err := fcmAddr(in); err != nil || got != want {
			t.Errorf("%s: %q %v", in, got, err)
		}
	}
	for _, bad := range []string{"https://x:1", "127.0.0.1", "http://"} {
		if _, err := fcmAddr(bad); err == nil {
			t.Errorf("%s accepted", bad)
		}
	}
}

func sha256Of(s string) [32]byte { return sha256.Sum256([]byte(s)) }

func TestPlot(t *testing.T) {
	dir := t.TempDir()
	r := Report{Label: "a <b>", Mode: "open", LoginsPerS: 12, Spectrum: map[string][][2]float64{
		stepResult: {{0, 0.5}, {50, 1}, {99, 2}, {99.99, 3}, {100, 3.5}},
		stepTotal:  {{0, 1}, {50, 3}, {100, 9}},
	}}
	b, _ := json.Marshal(r)
	in := filepath.Join(dir, "r.json")
	if err := os.WriteFile(in, b, 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "p.svg")
	var stderr bytes.Buffer
	if code := run(context.Background(), []string{"plot", "-o", out, in, in}, io.Discard, &stderr); code != exitOK {
		t.Fatalf("plot: %d %s", code, stderr.String())
	}
	svg, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	d := xml.NewDecoder(bytes.NewReader(svg))
	lines := 0
	for {
		tok, err := d.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("not XML: %v\n%s", err, svg)
		}
		if se, ok := tok.(xml.StartElement); ok && se.Name.Local == "polyline" {
			lines++
		}
	}
	if lines != 4 || !strings.Contains(string(svg), "a &lt;b&gt;") {
		t.Errorf("%d lines in\n%s", lines, svg)
	}
	if code := run(context.Background(), []string{"plot", "-steps", "read", in}, io.Discard, &stderr); code != exitError {
		t.Errorf("a step absent from the reports: exit %d", code)
	}
	if top, step := niceCeil(37); top != 50 || step != 10 {
		t.Errorf("niceCeil(37) = %v, %v", top, step)
	}
	if tailX(0) != 0 || tailX(99) != 2 || math.Abs(tailX(99.9)-3) > 1e-9 || tailX(100) <= tailX(99.99) {
		t.Error("tailX")
	}
}

func TestKeyClassAndMemDelta(t *testing.T) {
	for key, want := range map[string]string{
		"ecps:{sub:810001234565}:devices":         "{sub:*}:devices",
		"ecps:{sub:810001234565}:jti:dev_x:Xk3_a": "{sub:*}:jti:*:*",
		"ecps:{a:AbC12}":                          "{a:*}",
		"ecps:{a:AbC12}:qr":                       "{a:*}:qr",
		"ecps:{push}:enq:chl_x":                   "{push}:enq:*",
		"ecps:{audit}:all":                        "{audit}:all",
		"ecps:{rl:bench-idp}:1700000000":          "{rl:*}:*",
		"plain":                                   "plain",
	} {
		if got := keyClass(key); got != want {
			t.Errorf("keyClass(%q) = %q, want %q", key, got, want)
		}
	}
	a := map[string]int64{"p:{sub:1}:devices": 100, "p:{a:x}": 50, "p:{audit}:all": 1000}
	b := map[string]int64{"p:{sub:1}:devices": 300, "p:{sub:2}:devices": 200, "p:{audit}:all": 1400, "p:{dev:y}": 100}
	got := memDelta(a, b, 2)
	want := map[string]float64{"{sub:*}:devices": 200, "{audit}:all": 200, "{dev:*}": 50, "{a:*}": -25, "all": 425}
	if len(got) != len(want) {
		t.Fatalf("memDelta %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("memDelta[%s] = %v, want %v", k, got[k], v)
		}
	}
}
