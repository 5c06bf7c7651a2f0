// Package prometheus holds the tests of the alert rules in this directory and
// of the Grafana dashboard (deploy/grafana): promtool checks and unit tests,
// and every metric they name is one that a running ecpsd exposes.
package prometheus

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/ecps-sante/ecps/internal/syncbuf"
	"github.com/ecps-sante/ecps/push/fcmtest"
	"github.com/ecps-sante/ecps/redistest"
)

const (
	rulesFile     = "ecpsd-rules.yml"
	rulesTestFile = "ecpsd-rules_test.yml"
	dashboardFile = "../grafana/ecpsd-dashboard.json"
)

// fromPrometheus are the series Prometheus writes itself, not ecpsd.
var fromPrometheus = map[string]bool{"up": true}

// promtool finds promtool or fails saying how to get it.
func promtool(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatal("promtool not found in PATH: it checks the alert rules. Run `make check-ops` or `make test` " +
			"(as root they install Debian's prometheus package, which ships promtool), or apt-get install prometheus")
	}
	return p
}

func runPromtool(t *testing.T, args ...string) {
	t.Helper()
	out, err := exec.Command(promtool(t), args...).CombinedOutput()
	if err != nil {
		t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// TestRules: promtool check rules, then the rules' unit tests.
func TestRules(t *testing.T) {
	runPromtool(t, "check", "rules", rulesFile)
	runPromtool(t, "test", "rules", rulesTestFile)
}

type ruleFile struct {
	Groups []struct {
		Name  string `json:"name"`
		Rules []struct {
			Record      string            `json:"record"`
			Alert       string            `json:"alert"`
			Expr        string            `json:"expr"`
			Labels      map[string]string `json:"labels"`
			Annotations map[string]string `json:"annotations"`
		} `json:"rules"`
	} `json:"groups"`
}

func readRules(t *testing.T) ruleFile {
	t.Helper()
	raw, err := os.ReadFile(rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	var f ruleFile
	if err := yaml.Unmarshal(raw, &f); err != nil {
		t.Fatal(err)
	}
	return f
}

// dashboardQueries are the PromQL of every panel target and template
// variable of the dashboard (label_values(X, l) gives X).
func dashboardQueries(t *testing.T) []string {
	t.Helper()
	raw, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Panels []struct {
			Type    string `json:"type"`
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
		Templating struct {
			List []struct {
				Type  string `json:"type"`
				Query any    `json:"query"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(raw, &d); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	var out []string
	for _, p := range d.Panels {
		if p.Type == "row" {
			continue
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			out = append(out, tg.Expr)
		}
	}
	labelValues := regexp.MustCompile(`^label_values\((.+),\s*\w+\)$`)
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		q, _ := v.Query.(map[string]any)
		s, _ := q["query"].(string)
		m := labelValues.FindStringSubmatch(s)
		if m == nil {
			t.Errorf("template variable query %q: want label_values(SELECTOR, label)", s)
			continue
		}
		out = append(out, m[1])
	}
	return out
}

var grafanaVars = strings.NewReplacer("$__rate_interval", "5m", "$__interval", "1m", "$__range", "1h",
	"$namespace", "ecps", "$job", "ecpsd")

// TestDashboardPromQL: every dashboard query parses as PromQL (promtool
// checks them as the expressions of recording rules).
func TestDashboardPromQL(t *testing.T) {
	var b strings.Builder
	b.WriteString("groups:\n  - name: dashboard\n    rules:\n")
	for i, q := range dashboardQueries(t) {
		expr, _ := json.Marshal(grafanaVars.Replace(q))
		fmt.Fprintf(&b, "      - record: dashboard:query_%d\n        expr: %s\n", i, expr)
	}
	f := filepath.Join(t.TempDir(), "dashboard-rules.yml")
	if err := os.WriteFile(f, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	runPromtool(t, "check", "rules", f)
}

// metricNames returns the metric names of a PromQL expression: the
// identifiers that are neither functions, keywords, label names nor parts of
// strings, durations or numbers.
func metricNames(expr string) []string {
	s := regexp.MustCompile("\"(?:[^\"\\\\]|\\\\.)*\"|'(?:[^'\\\\]|\\\\.)*'|`[^`]*`").ReplaceAllString(expr, `""`)
	s = regexp.MustCompile(`\$\{\w+\}|\$\w+`).ReplaceAllString(s, "")
	s = regexp.MustCompile(`\{[^}]*\}`).ReplaceAllString(s, "{}")
	s = regexp.MustCompile(`\[[^\]]*\]`).ReplaceAllString(s, "")
	s = regexp.MustCompile(`\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)`).ReplaceAllString(s, "")
	keywords := map[string]bool{"and": true, "or": true, "unless": true, "offset": true, "bool": true, "by": true,
		"without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true, "inf": true, "nan": true,
		"start": true, "end": true}
	var out []string
	for _, loc := range regexp.MustCompile(`[A-Za-z_:][A-Za-z0-9_:]*`).FindAllStringIndex(s, -1) {
		tok := s[loc[0]:loc[1]]
		if loc[0] > 0 && strings.ContainsAny(s[loc[0]-1:loc[0]], "0123456789.") {
			continue // 1e3, 5m
		}
		rest := strings.TrimLeft(s[loc[1]:], " \t\n")
		if strings.HasPrefix(rest, "(") || keywords[strings.ToLower(tok)] {
			continue
		}
		out = append(out, tok)
	}
	return out
}

func TestMetricNames(t *testing.T) {
	for expr, want := range map[string][]string{
		`sum by (route) (rate(ecps_http_requests_total{route=~"/api/v1/.*", status="5xx"}[5m]))`: {"ecps_http_requests_total"},
		`histogram_quantile(0.99, sum by (le) (rate(a_bucket{x="$job"}[$__rate_interval])))`:     {"a_bucket"},
		`ecps:x:rate1h > (14.4 * 0.001) and b > 1e3 unless on (job) c offset 1d`:                 {"ecps:x:rate1h", "b", "c"},
		`max by (namespace, job, kind) (d) == 1`:                                                 {"d"},
		`1 - sum without (instance) (rate(e[1h])) / sum(rate(f[1h] @ start()))`:                  {"e", "f"},
		`up{job="ecpsd"} == 0`: {"up"},
	} {
		if got := metricNames(expr); !slices.Equal(got, want) {
			t.Errorf("metricNames(%s) = %q, want %q", expr, got, want)
		}
	}
}

// TestNamesExist starts ecpsd for real (FCM through the fake of
// push/fcmtest, a real Redis), enrols a phone with a push token, plays a
// whole login with cmd/ecps-demo (a push that FCM first refuses), scrapes
// /metrics, and checks that every metric named by an alert or recording
// rule and by the dashboard is there (histograms as _bucket, _sum, _count).
func TestNamesExist(t *testing.T) {
	exposed := scrape(t)
	rules := readRules(t)
	recorded := map[string]bool{}
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			if r.Record != "" {
				recorded[r.Record] = true
			}
		}
	}
	check := func(where, expr string) {
		names := metricNames(expr)
		if len(names) == 0 {
			t.Errorf("%s: no metric in %q", where, expr)
		}
		for _, n := range names {
			if !exposed[n] && !recorded[n] && !fromPrometheus[n] {
				t.Errorf("%s: %s is not on ecpsd's /metrics (nor a recording rule): %s", where, n, expr)
			}
		}
	}
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			check(rulesFile+": "+r.Record+r.Alert, r.Expr)
		}
	}
	for _, q := range dashboardQueries(t) {
		check("dashboard", q)
	}
	for _, want := range []string{"ecps_http_requests_total", "ecps_push_sent_total", "ecps_push_attempt_errors_total",
		"ecps_decisions_total", "ecps_authentications_created_total", "ecps_push_delivery_seconds_bucket"} {
		if !exposed[want] {
			t.Errorf("the scenario did not make %s appear", want)
		}
	}
}

// scrape runs the scenario and returns the names /metrics exposes, with the
// _bucket, _sum and _count of histograms and the _sum and _count of summaries.
func scrape(t *testing.T) map[string]bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	bin := t.TempDir()
	build := exec.CommandContext(ctx, "go", "build", "-o", bin+"/", "./cmd/ecpsd", "./cmd/ecps-device", "./cmd/ecps-demo")
	build.Dir = "../.."
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	redisURL := os.Getenv("ECPS_TEST_REDIS_URL")
	if redisURL == "" {
		redisURL = redistest.Start(t).URL()
	}
	fake := fcmtest.New(t, "ecps-metrics")
	fake.ScriptNext(fcmtest.Unavailable("")) // the first send fails: an attempt error, then a retry
	port, mport := redistest.FreePort(t), redistest.FreePort(t)
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	const clientSecret, deskKey, subject = "metrics-test-client-secret-0123456789", "metrics-test-desk-key-0123456789abcd", "810001234565"
	config := fmt.Sprintf(`listen: "127.0.0.1:%d"
metrics_listen: "127.0.0.1:%d"
public_url: %q
dev: true
redis:
  url: %q
  key_prefix: %q
clients:
  - id: "idp"
    name: "Metrics IdP"
    secret_sha256: %q
    scopes: ["authentication", "activation"]
desk_operators:
  - name: "desk-1"
    key_sha256: %q
push:
  provider: "fcm"
  fcm:
    project_id: "ecps-metrics"
    endpoint: %q
`, port, mport, base, redisURL, redistest.Prefix(), sum(clientSecret), sum(deskKey), fake.Endpoint())
	cfgFile := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(cfgFile, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	logs := &syncbuf.Buffer{}
	srv := exec.Command(filepath.Join(bin, "ecpsd"), "-config", cfgFile)
	srv.Env = slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, "ECPS_") })
	srv.Stdout, srv.Stderr = logs, logs
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- srv.Wait() }()
	defer func() {
		_ = srv.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(45 * time.Second):
			_ = srv.Process.Kill()
		}
		if t.Failed() {
			t.Logf("ecpsd's log:\n%s", logs.String())
		}
	}()
	waitReady(t, base, exited)

	// A phone with a push token, enrolled through the desk.
	req, _ := http.NewRequestWithContext(ctx, "POST", base+"/api/v1/desk/activations", strings.NewReader(`{"subject":"`+subject+`"}`))
	req.Header.Set("Authorization", "Bearer "+deskKey)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var act struct {
		EnrolURI string `json:"enrol_uri"`
	}
	err = json.NewDecoder(resp.Body).Decode(&act)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusCreated {
		t.Fatalf("desk activation: %d %v", resp.StatusCode, err)
	}
	state := filepath.Join(t.TempDir(), "phone.json")
	device := func(args ...string) {
		t.Helper()
		cmd := exec.CommandContext(ctx, filepath.Join(bin, "ecps-device"), append([]string{"-state", state}, args...)...)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("ecps-device %s: %v\n%s", args[0], err, out)
		}
	}
	device("enrol", act.EnrolURI)
	device("push-token", "metrics-test-push-token")

	// A whole login (the demo enrols its own phone, which approves); its
	// push goes to the phone above.
	demo := exec.CommandContext(ctx, filepath.Join(bin, "ecps-demo"), "-credentials", "", "-url", base,
		"-client-id", "idp", "-client-secret", clientSecret, "-desk-key", deskKey,
		"-device", filepath.Join(bin, "ecps-device"), "-state-dir", t.TempDir(), "-subject", subject, "-timeout", "2m")
	if out, err := demo.CombinedOutput(); err != nil {
		t.Fatalf("ecps-demo: %v\n%s", err, out)
	}
	if _, ok := fake.WaitReceived(1, time.Minute); !ok {
		t.Fatal("FCM did not receive the login's push")
	}

	// Then /metrics, once the push's metrics are in.
	var text []byte
	for deadline := time.Now().Add(30 * time.Second); ; {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", mport))
		if err != nil {
			t.Fatal(err)
		}
		text, _ = io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("/metrics: %d", resp.StatusCode)
		}
		if bytes.Contains(text, []byte("\necps_push_sent_total 1\n")) || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	return exposition(text)
}

// exposition reads the names of the Prometheus text format.
func exposition(text []byte) map[string]bool {
	names := map[string]bool{}
	sc := bufio.NewScanner(bytes.NewReader(text))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		l := sc.Text()
		if f := strings.Fields(l); len(f) == 4 && f[0] == "#" && f[1] == "TYPE" {
			names[f[2]] = true
			switch f[3] {
			case "histogram":
				names[f[2]+"_bucket"], names[f[2]+"_sum"], names[f[2]+"_count"] = true, true, true
			case "summary":
				names[f[2]+"_sum"], names[f[2]+"_count"] = true, true
			}
			continue
		}
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		if i := strings.IndexAny(l, "{ "); i > 0 {
			names[l[:i]] = true
		}
	}
	return names
}

func waitReady(t *testing.T, base string, exited <-chan error) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); ; {
		resp, err := http.Get(base + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		select {
		case err := <-exited:
			t.Fatalf("ecpsd exited: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz not 200 within 30 s: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func sum(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}
