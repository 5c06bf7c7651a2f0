// Command ecps-bench measures an e-CPS deployment from outside: it plays the
// IdP and many phones against one or more ecpsd replicas, over real HTTP
// with real ES256 keys.
//
//	ecps-bench -targets URL[,URL…] [-credentials FILE] [-devices N] [-fcm ADDR]
//	           [-concurrency C | -rate R] [-duration D] [-redis URL] [-json FILE]
//	ecps-bench waiters -targets URL [-n 10000]   long-polls waiting at once: the replica's memory per waiter
//	ecps-bench memory -targets URL -redis URL    Redis memory per device and per pending login
//	ecps-bench plot [-o FILE.svg] [-steps result,total] REPORT.json…   latency plot of reports
//
// A load run enrols -devices phones (an activation each, by the desk's
// operator key or the IdP's activation scope, then the phone's enrolment
// with a fresh P-256 key), measures the machine's crypto ceiling, then runs
// full push logins: the IdP creates one (login_hint) and long-polls at
// once (?wait=); the phone learns the challenge from the fake FCM server
// the bench plays (-fcm) or by polling its list, reads it, and sends its
// signed decision with the number; the long-poll returns the result.
// Closed loop (-concurrency) or open loop (-rate per second, latency from
// each login's intended start: no coordinated omission). A progress line
// each second, then a table and, with -json, the report. With -redis, the
// Redis commands and CPU per login (INFO before and after); the replicas'
// CPU per login from their /metrics (process_cpu_seconds_total).
//
// Credentials: -credentials reads a file like var/dev-credentials.env
// (written by `ecpsd dev-config`); -client-id, -client-secret and
// -desk-key override it. The IdP client needs the scope authentication
// (and activation with -enrol idp).
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"strings"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
)

const (
	exitOK    = 0
	exitError = 1
	exitUsage = 2
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		switch args[0] {
		case "plot":
			return runPlot(args[1:], stdout, stderr)
		case "waiters":
			return runWaiters(ctx, args[1:], stdout, stderr)
		case "memory":
			return runMemory(ctx, args[1:], stdout, stderr)
		}
	}
	return runLoad(ctx, args, stdout, stderr)
}

// credentials of the IdP client and the desk operator.
type credentials struct {
	URL, ClientID, ClientSecret, DeskKey string
}

// common are the flags every mode shares: where the service is and who
// the bench is to it.
type common struct {
	targets     []string
	credentials string
	cred        credentials
	timeout     time.Duration
}

func (c *common) register(fs *flag.FlagSet) {
	fs.Func("targets", "comma-separated base `URLs` of the replicas (default: ECPS_DEMO_URL of -credentials)", func(v string) error {
		c.targets = splitList(v)
		return nil
	})
	fs.StringVar(&c.credentials, "credentials", "var/dev-credentials.env", "`file` of KEY=VALUE credentials as `ecpsd dev-config` writes; empty: flags only")
	fs.StringVar(&c.cred.ClientID, "client-id", "", "IdP client `id` (overrides ECPS_DEMO_CLIENT_ID)")
	fs.StringVar(&c.cred.ClientSecret, "client-secret", "", "IdP client `secret` (overrides ECPS_DEMO_CLIENT_SECRET)")
	fs.StringVar(&c.cred.DeskKey, "desk-key", "", "desk operator `key` (overrides ECPS_DEMO_DESK_KEY)")
	fs.DurationVar(&c.timeout, "timeout", 10*time.Second, "timeout of one request (long-polls: their wait + 10 s)")
}

// resolve reads the credentials file and checks what the flags gave.
func (c *common) resolve(needDesk bool) error {
	file := credentials{}
	if c.credentials != "" {
		env, err := readEnvFile(c.credentials)
		switch {
		case errors.Is(err, os.ErrNotExist) && (c.cred.ClientID != "" || len(c.targets) > 0):
			// flags only
		case err != nil:
			return fmt.Errorf("-credentials: %v", err)
		default:
			file = credentials{URL: env["ECPS_DEMO_URL"], ClientID: env["ECPS_DEMO_CLIENT_ID"],
				ClientSecret: env["ECPS_DEMO_CLIENT_SECRET"], DeskKey: env["ECPS_DEMO_DESK_KEY"]}
		}
	}
	if c.cred.ClientID == "" {
		c.cred.ClientID = file.ClientID
	}
	if c.cred.ClientSecret == "" {
		c.cred.ClientSecret = file.ClientSecret
	}
	if c.cred.DeskKey == "" {
		c.cred.DeskKey = file.DeskKey
	}
	if len(c.targets) == 0 && file.URL != "" {
		c.targets = []string{file.URL}
	}
	var missing []string
	if len(c.targets) == 0 {
		missing = append(missing, "-targets")
	}
	if c.cred.ClientID == "" || c.cred.ClientSecret == "" {
		missing = append(missing, "-client-id and -client-secret")
	}
	if needDesk && c.cred.DeskKey == "" {
		missing = append(missing, "-desk-key (or -enrol idp)")
	}
	if len(missing) > 0 {
		return fmt.Errorf("missing %s (or a -credentials file that has them)", strings.Join(missing, ", "))
	}
	for i, t := range c.targets {
		c.targets[i] = strings.TrimRight(t, "/")
		if !strings.HasPrefix(t, "http://") && !strings.HasPrefix(t, "https://") {
			return fmt.Errorf("-targets: want http(s) URLs, got %q", t)
		}
	}
	return nil
}

// waitReady waits until every target answers GET /readyz with 200.
func waitReady(ctx context.Context, hc *http.Client, targets []string, d time.Duration) error {
	deadline := time.Now().Add(d)
	for _, t := range targets {
		for {
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, t+"/readyz", nil)
			res, err := hc.Do(req)
			if err == nil {
				res.Body.Close()
				if res.StatusCode == http.StatusOK {
					break
				}
				err = fmt.Errorf("HTTP %d", res.StatusCode)
			}
			if time.Now().After(deadline) || ctx.Err() != nil {
				return fmt.Errorf("%s/readyz: %v", t, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	return nil
}

// options of a load run.
type options struct {
	common
	metrics          []string
	enrolVia         string
	devices          int
	perSubject       int
	enrolConc        int
	concurrency      int
	rate             float64
	duration         time.Duration
	maxInflight      int
	wait             int
	pushTimeout      time.Duration
	phonePoll        time.Duration
	fcm              string
	fcmProject       string
	pushesPerSubject int
	pushesWindow     time.Duration
	redisURL         string
	ceilingTime      time.Duration
	jsonPath         string
	label            string
	readyWait        time.Duration
	profile          string
	ceilingAfter     bool
	selfProfile      string
}

func runLoad(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var o options
	fs := flag.NewFlagSet("ecps-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	o.common.register(fs)
	fs.Func("metrics", "comma-separated /metrics `URLs` of the replicas, in -targets order (default: each target's /metrics; \"none\": no CPU figures)", func(v string) error {
		o.metrics = splitList(v)
		return nil
	})
	fs.StringVar(&o.enrolVia, "enrol", "", "how activations are made: desk (operator key) or idp (client with scope activation); default desk when a desk key is given")
	fs.IntVar(&o.devices, "devices", 200, "devices to enrol")
	fs.IntVar(&o.perSubject, "devices-per-subject", 1, "devices per practitioner (1..5: limits.devices_per_subject); each gets the practitioner's pushes")
	fs.IntVar(&o.enrolConc, "enrol-concurrency", 8, "enrolments at a time")
	fs.IntVar(&o.concurrency, "concurrency", 16, "closed loop: logins at a time")
	fs.Float64Var(&o.rate, "rate", 0, "open loop: `logins` started per second (0: closed loop)")
	fs.DurationVar(&o.duration, "duration", 30*time.Second, "how long logins are started")
	fs.IntVar(&o.maxInflight, "max-inflight", 5000, "open loop: logins at most in flight (a login due beyond it is an error, start:max_inflight)")
	fs.IntVar(&o.wait, "wait", 30, "the IdP's long-poll ?wait= (1..30 s)")
	fs.DurationVar(&o.pushTimeout, "push-timeout", 10*time.Second, "how long a phone waits for its push (or for the challenge in its list)")
	fs.DurationVar(&o.phonePoll, "phone-poll", 20*time.Millisecond, "without -fcm: interval of a phone's polls of its challenge list")
	fs.StringVar(&o.fcm, "fcm", "", "play the fake FCM server at this `address` (http://127.0.0.1:9099): the replicas' push.fcm.endpoint is http://ADDR/v1; empty: phones poll their list")
	fs.StringVar(&o.fcmProject, "fcm-project", "ecps-bench", "FCM project id the replicas are configured with (push.fcm.project_id)")
	fs.IntVar(&o.pushesPerSubject, "pushes-per-subject", 10, "the replicas' limits.pushes_per_subject: each practitioner gets at most this many logins per -pushes-window (0: no limit, for a config that raised it)")
	fs.DurationVar(&o.pushesWindow, "pushes-window", 5*time.Minute, "the replicas' limits.pushes_window")
	fs.StringVar(&o.redisURL, "redis", "", "the replicas' Redis `URL`, for INFO (commands and CPU per login); empty: not measured")
	fs.DurationVar(&o.ceilingTime, "ceiling-time", 2*time.Second, "how long the crypto ceiling is measured, before the load")
	fs.StringVar(&o.selfProfile, "cpuprofile", "", "write a CPU profile of the bench itself during the load to this `file`")
	fs.BoolVar(&o.ceilingAfter, "ceiling-after", true, "measure the crypto ceiling again after the load (reported beside the first: on a shared machine they differ)")
	fs.StringVar(&o.jsonPath, "json", "", "write the JSON report to this `file`")
	fs.StringVar(&o.label, "label", "", "a label for the report (e.g. \"baseline, commit abc123\")")
	fs.DurationVar(&o.readyWait, "ready-wait", 30*time.Second, "how long to wait for every target's /readyz")
	fs.StringVar(&o.profile, "profile", "", "save a CPU profile of the first replica during the load to this `file` (its /debug/pprof/profile on the metrics listener: ecpsd's pprof: true)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "ecps-bench: unexpected argument %q\n", fs.Arg(0))
		return exitUsage
	}
	if err := o.check(); err != nil {
		fmt.Fprintf(stderr, "ecps-bench: %v\n", err)
		return exitUsage
	}
	rep, err := load(ctx, o, stderr)
	if rep != nil {
		printTable(stdout, rep)
		if o.jsonPath != "" {
			if werr := writeJSON(o.jsonPath, rep); werr != nil {
				fmt.Fprintf(stderr, "ecps-bench: %v\n", werr)
				return exitError
			}
		}
	}
	if err != nil {
		fmt.Fprintf(stderr, "ecps-bench: %v\n", err)
		return exitError
	}
	return exitOK
}

func (o *options) check() error {
	if o.enrolVia == "" {
		o.enrolVia = "idp"
		if o.cred.DeskKey != "" || o.credentials != "" {
			o.enrolVia = "desk"
		}
	}
	if o.enrolVia != "desk" && o.enrolVia != "idp" {
		return fmt.Errorf("-enrol: want desk or idp, got %q", o.enrolVia)
	}
	if err := o.resolve(o.enrolVia == "desk"); err != nil {
		return err
	}
	switch {
	case o.devices < 1:
		return errors.New("-devices: at least 1")
	case o.perSubject < 1 || o.perSubject > 5:
		return errors.New("-devices-per-subject: 1..5")
	case o.enrolConc < 1:
		return errors.New("-enrol-concurrency: at least 1")
	case o.rate < 0 || (o.rate == 0 && o.concurrency < 1):
		return errors.New("-concurrency: at least 1 (or -rate > 0)")
	case o.duration <= 0:
		return errors.New("-duration: positive")
	case o.wait < 1 || o.wait > 30:
		return errors.New("-wait: 1..30")
	case o.maxInflight < 1:
		return errors.New("-max-inflight: at least 1")
	case o.pushesPerSubject < 0:
		return errors.New("-pushes-per-subject: 0 or more")
	}
	if len(o.metrics) == 0 {
		for _, t := range o.targets {
			o.metrics = append(o.metrics, t+"/metrics")
		}
	} else if len(o.metrics) == 1 && o.metrics[0] == "none" {
		o.metrics = nil
	} else if len(o.metrics) != len(o.targets) {
		return fmt.Errorf("-metrics: %d URLs for %d targets", len(o.metrics), len(o.targets))
	}
	return nil
}

// load runs a whole load run and builds its report.
func load(ctx context.Context, o options, logw io.Writer) (*Report, error) {
	maxConns := max(o.concurrency, 64)
	if o.rate > 0 {
		maxConns = max(int(o.rate*2), 256)
	}
	b := &bench{opts: o, targets: o.targets, api: newAPIClient(o.cred, 2*maxConns, o.timeout), log: logw, iv: newHist()}
	b.loginFn = b.login
	if err := waitReady(ctx, b.api.hc, o.targets, o.readyWait); err != nil {
		return nil, err
	}
	var rdb *redis.Client
	if o.redisURL != "" {
		ropt, err := redis.ParseURL(o.redisURL)
		if err != nil {
			return nil, fmt.Errorf("-redis: %v", err)
		}
		rdb = redis.NewClient(ropt)
		defer rdb.Close()
		if _, err := readRedisStats(ctx, rdb); err != nil {
			return nil, err
		}
	}
	if o.fcm != "" {
		addr, err := fcmAddr(o.fcm)
		if err != nil {
			return nil, err
		}
		if b.fcm, err = startFakeFCM(addr, o.fcmProject); err != nil {
			return nil, err
		}
		defer b.fcm.Close()
		fctx, stop := context.WithCancel(ctx)
		defer stop()
		go b.fcm.run(fctx)
		b.logf("fake FCM at %s (project %s)", b.fcm.Endpoint(), o.fcmProject)
	}

	t := time.Now()
	subjects, err := b.enrolAll(ctx, o.devices, o.perSubject, o.enrolConc)
	if err != nil {
		return nil, fmt.Errorf("enrolment: %w", err)
	}
	b.logf("enrolled %d devices for %d practitioners in %.1f s (%s activations)", o.devices, len(subjects), time.Since(t).Seconds(), o.enrolVia)
	b.pool = newPool(subjects, o.pushesPerSubject, o.pushesWindow)
	var notes []string
	if o.pushesPerSubject > 0 {
		budget := len(subjects) * o.pushesPerSubject
		if o.rate > 0 && o.rate*o.duration.Seconds() > float64(budget) && o.duration < o.pushesWindow {
			b.logf("warning: %.0f logins offered, but %d practitioners × %d pushes per %s allow %d: the run stops early (more -devices, or a config with a higher limit and -pushes-per-subject 0)",
				o.rate*o.duration.Seconds(), len(subjects), o.pushesPerSubject, o.pushesWindow, budget)
		}
	} else {
		notes = append(notes, "the replicas' limits.pushes_per_subject was raised for the bench (-pushes-per-subject 0)")
	}
	if o.rate == 0 && o.concurrency > len(subjects) {
		notes = append(notes, fmt.Sprintf("concurrency %d > %d practitioners: at most %d logins at a time (one per practitioner)",
			o.concurrency, len(subjects), len(subjects)))
	}

	b.logf("measuring the crypto ceiling for %s on %d cores", o.ceilingTime, runtime.NumCPU())
	ceil := measureCeiling(ctx, o.ceilingTime)
	b.logf("ceiling: sign %.0f µs, verify %.0f µs → %.0f logins/s", ceil.SignUS, ceil.VerifyUS, ceil.LoginsPerS)

	// Counters before.
	loadBefore := loadAvg()
	var rBefore redisStats
	if rdb != nil {
		if rBefore, err = readRedisStats(ctx, rdb); err != nil {
			return nil, err
		}
	}
	cpuBefore := b.replicaCPU(ctx)
	selfBefore := selfCPU()

	n := 2 * runtime.GOMAXPROCS(0)
	if o.rate == 0 {
		n = o.concurrency
	}
	for range n {
		b.shards = append(b.shards, newShard())
	}
	mode := "closed"
	if o.rate > 0 {
		mode = "open"
		b.logf("open loop: %.1f logins/s for %s", o.rate, o.duration)
	} else {
		b.logf("closed loop: %d at a time for %s", o.concurrency, o.duration)
	}
	runCtx, stopRun := context.WithCancel(ctx)
	defer stopRun()
	hard, stopHard := context.WithTimeout(runCtx, o.duration+time.Duration(o.wait+20)*time.Second)
	defer stopHard()
	if o.selfProfile != "" {
		f, err := os.Create(o.selfProfile)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return nil, err
		}
	}
	start := time.Now()
	end := start.Add(o.duration)
	pctx, stopProgress := context.WithCancel(ctx)
	go b.progress(pctx, start)
	profiled := make(chan error, 1)
	if o.profile != "" {
		go func() { profiled <- b.saveProfile(pctx, o.profile, o.duration) }()
	} else {
		profiled <- nil
	}
	if o.rate > 0 {
		b.openLoop(hard, o.rate, o.maxInflight, start, end, stopRun)
	} else {
		b.closedLoop(hard, o.concurrency, end, stopRun)
	}
	elapsed := time.Since(start)
	selfAfter := selfCPU()
	if o.selfProfile != "" {
		pprof.StopCPUProfile()
	}
	if err := <-profiled; err != nil {
		b.logf("profile: %v", err)
	}
	stopProgress()

	// Counters after.
	rep := &Report{
		Label: o.label, StartedAt: start.UTC().Format(time.RFC3339), Mode: mode, Targets: o.targets, Replicas: len(o.targets),
		Devices: o.devices, Subjects: len(subjects), DurationS: round3(elapsed.Seconds()), Ceiling: ceil,
		CeilingLoginsPerS: ceil.LoginsPerS, Push: "poll", Notes: notes,
		LoadAvg: map[string][]float64{"before": loadBefore, "after": loadAvg()},
	}
	if mode == "open" {
		rep.Rate = o.rate
	} else {
		rep.Concurrency = o.concurrency
	}
	all := merge(b.shards...)
	rep.Logins = all.ok
	rep.Errors = all.errors
	rep.ErrorsTotal = all.errorCount()
	rep.LoginsPerS = round3(float64(all.ok) / elapsed.Seconds())
	if ceil.LoginsPerS > 0 {
		rep.Ratio = round3(rep.LoginsPerS / ceil.LoginsPerS)
	}
	rep.Steps = map[string]Percentiles{}
	rep.Spectrum = map[string][][2]float64{}
	for _, st := range stepOrder {
		rep.Steps[st] = summarize(all.steps[st])
		if sp := spectrum(all.steps[st]); sp != nil {
			rep.Spectrum[st] = sp
		}
	}
	d := rep.Steps[stepResult]
	rep.DecisionToResultMS.P50, rep.DecisionToResultMS.P99, rep.DecisionToResultMS.Max = d.P50, d.P99, d.Max
	if rdb != nil {
		rAfter, err := readRedisStats(context.WithoutCancel(ctx), rdb)
		if err != nil {
			return rep, err
		}
		byName, total := redisDelta(rBefore, rAfter)
		rr := &RedisReport{Commands: total, CPUSeconds: round3(rAfter.CPUSeconds - rBefore.CPUSeconds),
			CommandsByNamePerLogin: map[string]float64{}}
		if all.ok > 0 {
			rr.CommandsPerLogin = round3(float64(total) / float64(all.ok))
			rr.RoundTripsPerLogin = round3(float64(rAfter.Reads-rBefore.Reads-1) / float64(all.ok)) // -1: the INFO that reads them
			rr.CPUPerLoginUS = round3(nanToZero(perLogin(rBefore.CPUSeconds, rAfter.CPUSeconds, all.ok)) * 1e6)
			for k, v := range byName {
				rr.CommandsByNamePerLogin[k] = round3(float64(v) / float64(all.ok))
			}
		}
		rep.Redis = rr
	}
	if cpuAfter := b.replicaCPU(context.WithoutCancel(ctx)); cpuBefore != nil && cpuAfter != nil {
		c := &ReplicaCPUReport{}
		var sum float64
		for i := range cpuAfter {
			c.Seconds = append(c.Seconds, round3(cpuAfter[i]-cpuBefore[i]))
			sum += cpuAfter[i] - cpuBefore[i]
		}
		if all.ok > 0 {
			c.PerLoginUS = round3(sum / float64(all.ok) * 1e6)
		}
		rep.CPU = c
	} else if len(o.metrics) > 0 {
		rep.Notes = append(rep.Notes, "no process_cpu_seconds_total on the replicas' /metrics: their CPU per login is not measured")
	}
	if all.ok > 0 {
		rep.BenchCPUPerLoginUS = round3(nanToZero(perLogin(selfBefore, selfAfter, all.ok)) * 1e6)
	}
	rep.CryptoCPUPerLogin = round3(signsPerLogin*ceil.SignCPUUS + verifiesPerLogin*ceil.VerifyCPUUS)
	if rep.Redis != nil && rep.CPU != nil && all.ok > 0 {
		rep.CPUPerLoginUS = round3(rep.Redis.CPUPerLoginUS + rep.CPU.PerLoginUS + rep.BenchCPUPerLoginUS)
		if rep.CPUPerLoginUS > 0 {
			rep.CPURatio = round3(rep.CryptoCPUPerLogin / rep.CPUPerLoginUS)
		}
	}
	if o.ceilingAfter && ctx.Err() == nil {
		after := measureCeiling(ctx, o.ceilingTime)
		rep.CeilingAfter = &after
		b.logf("ceiling after the load: sign %.0f µs, verify %.0f µs → %.0f logins/s", after.SignUS, after.VerifyUS, after.LoginsPerS)
	}
	if b.fcm != nil {
		rep.Push = "fcm"
		total, refused := b.fcm.Requests()
		rep.FCM = map[string]int{"requests": total, "refused": refused, "delivered": int(b.fcm.delivered.Load()),
			"unknown_token": int(b.fcm.unknown.Load())}
	}
	if rep.Errors["subject_budget"] > 0 {
		rep.Notes = append(rep.Notes, errBudget.Error())
	}
	if ctx.Err() != nil {
		return rep, ctx.Err()
	}
	return rep, nil
}

// replicaCPU reads each replica's process_cpu_seconds_total; nil when any
// is unknown.
func (b *bench) replicaCPU(ctx context.Context) []float64 {
	if len(b.opts.metrics) == 0 {
		return nil
	}
	out := make([]float64, len(b.opts.metrics))
	for i, u := range b.opts.metrics {
		v, err := scrapeCPU(ctx, b.api.hc, u)
		if err != nil || math.IsNaN(v) {
			return nil
		}
		out[i] = v
	}
	return out
}

// saveProfile saves a CPU profile of the first replica, taken from 1 s
// into the load for the rest of it (at most 30 s).
func (b *bench) saveProfile(ctx context.Context, path string, load time.Duration) error {
	if len(b.opts.metrics) == 0 {
		return errors.New("-profile needs the replicas' metrics listeners (-metrics)")
	}
	secs := int(min(max(load-2*time.Second, time.Second), 30*time.Second) / time.Second)
	select {
	case <-time.After(time.Second):
	case <-ctx.Done():
		return ctx.Err()
	}
	u := strings.TrimSuffix(b.opts.metrics[0], "/metrics") + fmt.Sprintf("/debug/pprof/profile?seconds=%d", secs)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	res, err := (&http.Client{Timeout: time.Duration(secs+15) * time.Second}).Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: HTTP %d (is pprof: true set?)", u, res.StatusCode)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, res.Body); err != nil {
		f.Close()
		return err
	}
	b.logf("CPU profile of %s (%d s) saved to %s", b.targets[0], secs, path)
	return f.Close()
}

func splitList(v string) []string {
	var out []string
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

// readEnvFile reads KEY=VALUE lines (blank lines and # comments skipped; a
// value may be quoted), as cmd/ecps-demo does.
func readEnvFile(path string) (map[string]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	env := map[string]string{}
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(strings.TrimPrefix(line, "export "), "=")
		if !ok || strings.TrimSpace(k) == "" {
			return nil, fmt.Errorf("%s:%d: not a KEY=VALUE line", path, n)
		}
		v = strings.TrimSpace(v)
		if len(v) >= 2 && (v[0] == '"' || v[0] == '\'') && v[len(v)-1] == v[0] {
			v = v[1 : len(v)-1]
		}
		env[strings.TrimSpace(k)] = v
	}
	return env, sc.Err()
}
