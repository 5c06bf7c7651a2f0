package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/redis/go-redis/v9"
)

// WaitersReport is the report of `ecps-bench waiters`: what n long-polls
// waiting at once, each on its own connection, cost one replica.
type WaitersReport struct {
	Target       string             `json:"target"`
	Waiters      int                `json:"waiters"`
	Connected    int64              `json:"connected"` // requests written, each on its own connection
	Before       map[string]float64 `json:"before"`
	During       map[string]float64 `json:"during"`
	PerWaiter    map[string]float64 `json:"per_waiter"`                        // bytes (or count) per waiter
	Answers      map[string]int64   `json:"answers"`                           // how the long-polls ended
	AnsweredInMS Percentiles        `json:"answered_after_ms"`                 // from being sent to the answer
	RedisClients []int64            `json:"redis_connected_clients,omitempty"` // before, while waiting (-redis)
	Notes        []string           `json:"notes,omitempty"`
}

var waiterMetrics = []string{"process_resident_memory_bytes", "go_memstats_heap_inuse_bytes", "go_memstats_stack_inuse_bytes",
	"go_goroutines", "process_open_fds"}

// runWaiters: `ecps-bench waiters -targets URL -n 10000`: creates n QR
// logins (nothing pushed), opens a long-poll (?wait=) for each at once on
// its own connection to one replica, and reads the replica's memory
// (RSS, Go heap and stacks; after a GC forced through pprof when it is
// on) before and while they all wait; then waits for their answers
// (authorization_pending when the wait ends).
func runWaiters(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var c common
	fs := flag.NewFlagSet("ecps-bench waiters", flag.ContinueOnError)
	fs.SetOutput(stderr)
	c.register(fs)
	n := fs.Int("n", 10000, "long-polls waiting at once")
	metricsURL := fs.String("metrics", "", "the replica's /metrics `URL` (default: the target's /metrics)")
	wait := fs.Int("wait", 30, "?wait= of each long-poll (1..30 s)")
	conc := fs.Int("create-concurrency", 32, "logins created at a time")
	dials := fs.Int("dial-concurrency", 256, "connections being opened at a time")
	jsonPath := fs.String("json", "", "write the JSON report to this `file`")
	redisURL := fs.String("redis", "", "the replica's Redis `URL`: its connected clients before and while the long-polls wait")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	if err := c.resolve(false); err != nil || *n < 1 || *wait < 1 || *wait > 30 || len(c.targets) != 1 {
		if err == nil {
			err = errors.New("want one -targets URL, -n ≥ 1, -wait 1..30")
		}
		fmt.Fprintf(stderr, "ecps-bench waiters: %v\n", err)
		return exitUsage
	}
	if *metricsURL == "" {
		*metricsURL = c.targets[0] + "/metrics"
	}
	rep, err := waiters(ctx, c, *n, *wait, *conc, *dials, *metricsURL, *redisURL, stderr)
	if rep != nil {
		printWaiters(stdout, rep)
		if *jsonPath != "" {
			b, _ := json.MarshalIndent(rep, "", "  ")
			if werr := os.WriteFile(*jsonPath, append(b, '\n'), 0o644); werr != nil && err == nil {
				err = werr
			}
		}
	}
	if err != nil {
		fmt.Fprintf(stderr, "ecps-bench waiters: %v\n", err)
		return exitError
	}
	return exitOK
}

// raiseFileLimit lifts this process's open-file limit to its hard limit.
func raiseFileLimit() uint64 {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return 0
	}
	l.Cur = l.Max
	_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l)
	_ = syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l)
	return l.Cur
}

// redisClients is INFO clients' connected_clients.
func redisClients(ctx context.Context, redisURL string) int64 {
	opt, err := redis.ParseURL(redisURL)
	if err != nil {
		return -1
	}
	rdb := redis.NewClient(opt)
	defer rdb.Close()
	s, err := rdb.Info(ctx, "clients").Result()
	if err != nil {
		return -1
	}
	for _, line := range strings.Split(s, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "connected_clients:"); ok {
			n, _ := strconv.ParseInt(v, 10, 64)
			return n - 1 // not this one
		}
	}
	return -1
}

func waiters(ctx context.Context, c common, n, wait, conc, dials int, metricsURL, redisURL string, logw io.Writer) (*WaitersReport, error) {
	logf := func(format string, args ...any) { fmt.Fprintf(logw, "ecps-bench waiters: "+format+"\n", args...) }
	if lim := raiseFileLimit(); lim < uint64(n)+100 {
		return nil, fmt.Errorf("open-file limit %d: %d connections need more (ulimit -n)", lim, n)
	}
	target := c.targets[0]
	api := newAPIClient(c.cred, 2*conc, c.timeout)
	if err := waitReady(ctx, api.hc, c.targets, 30*time.Second); err != nil {
		return nil, err
	}
	rep := &WaitersReport{Target: target, Waiters: n, Answers: map[string]int64{}}
	pprofBase := strings.TrimSuffix(metricsURL, "/metrics") + "/debug/pprof/"
	gc := func() { // a GC on the replica, when its pprof is on: heap?gc=1 runs one first
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, pprofBase+"heap?gc=1", nil)
		if res, err := api.hc.Do(req); err == nil {
			io.Copy(io.Discard, res.Body)
			res.Body.Close()
			if res.StatusCode != http.StatusOK && len(rep.Notes) == 0 {
				rep.Notes = append(rep.Notes, "no pprof on the replica: no GC forced before reading its memory")
			}
		}
	}
	read := func() (map[string]float64, error) {
		gc()
		return scrapeMetrics(ctx, api.hc, metricsURL, waiterMetrics...)
	}

	// n QR logins.
	t := time.Now()
	ids := make([]string, n)
	var next atomic.Int64
	var wg sync.WaitGroup
	errc := make(chan error, conc)
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1) - 1
				if i >= int64(n) || ctx.Err() != nil {
					return
				}
				r, err := api.call(ctx, http.MethodPost, target+"/api/v1/authentications", map[string]any{"requested_expiry": 300}, idpAuth{api}, 0)
				if err != nil || r.status != http.StatusCreated {
					errc <- fmt.Errorf("create a QR login: %s %v", r.describe(), err)
					return
				}
				var cr created
				if err := json.Unmarshal(r.body, &cr); err != nil {
					errc <- err
					return
				}
				ids[i] = cr.AuthReqID
			}
		}()
	}
	wg.Wait()
	select {
	case err := <-errc:
		return nil, err
	default:
	}
	logf("created %d QR logins in %.1f s", n, time.Since(t).Seconds())

	before, err := read()
	if err != nil {
		return nil, fmt.Errorf("replica metrics: %w", err)
	}
	rep.Before = before
	if redisURL != "" {
		rep.RedisClients = append(rep.RedisClients, redisClients(ctx, redisURL))
	}

	// One connection per long-poll: a transport that keeps none idle, and
	// requests sent all at once.
	hc := &http.Client{Transport: &http.Transport{Proxy: nil, MaxIdleConnsPerHost: -1, DisableKeepAlives: true, DisableCompression: true},
		Timeout: time.Duration(wait+20) * time.Second}
	var written atomic.Int64
	sem := make(chan struct{}, dials)
	answered := newHist()
	var mu sync.Mutex
	pctx, cancel := context.WithCancel(ctx)
	defer cancel()
	t = time.Now()
	for _, id := range ids {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			var once sync.Once
			release := func() { once.Do(func() { <-sem }) }
			defer release()
			trace := &httptrace.ClientTrace{WroteRequest: func(httptrace.WroteRequestInfo) { written.Add(1); release() }}
			req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(pctx, trace), http.MethodGet,
				target+"/api/v1/authentications/"+url.PathEscape(id)+fmt.Sprintf("?wait=%d", wait), nil)
			req.SetBasicAuth(c.cred.ClientID, c.cred.ClientSecret)
			sent := time.Now()
			res, err := hc.Do(req)
			kind := ""
			if err != nil {
				kind = errorKind("poll", reply{}, err)
			} else {
				b, _ := io.ReadAll(io.LimitReader(res.Body, 4096))
				res.Body.Close()
				var e struct {
					Error string `json:"error"`
				}
				_ = json.Unmarshal(b, &e)
				kind = fmt.Sprintf("%d %s", res.StatusCode, e.Error)
			}
			mu.Lock()
			rep.Answers[kind]++
			record(answered, time.Since(sent))
			mu.Unlock()
		}()
	}
	for written.Load() < int64(n) && time.Since(t) < time.Duration(wait)*time.Second/2 {
		time.Sleep(10 * time.Millisecond)
	}
	rep.Connected = written.Load()
	logf("%d long-polls sent in %.1f s, each on its own connection", rep.Connected, time.Since(t).Seconds())
	time.Sleep(time.Second) // the last ones reach the hub
	during, err := read()
	if err != nil {
		return rep, fmt.Errorf("replica metrics: %w", err)
	}
	rep.During = during
	if redisURL != "" {
		rep.RedisClients = append(rep.RedisClients, redisClients(ctx, redisURL))
	}
	rep.PerWaiter = map[string]float64{}
	for _, k := range waiterMetrics {
		if d := during[k] - before[k]; !math.IsNaN(d) && rep.Connected > 0 {
			rep.PerWaiter[k] = round3(d / float64(rep.Connected))
		}
	}
	logf("measured; waiting for the long-polls' answers (up to %d s)", wait)
	wg.Wait()
	rep.AnsweredInMS = summarize(answered)
	return rep, nil
}

func printWaiters(w io.Writer, r *WaitersReport) {
	fmt.Fprintf(w, "%d long-polls waiting at once on %s (%d connected)\n", r.Waiters, r.Target, r.Connected)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "metric\tbefore\twhile waiting\tper waiter\t\n")
	for _, k := range waiterMetrics {
		fmt.Fprintf(tw, "%s\t%.0f\t%.0f\t%.1f\t\n", k, r.Before[k], r.During[k], r.PerWaiter[k])
	}
	tw.Flush()
	for _, k := range sortedKeys(r.Answers) {
		fmt.Fprintf(w, "answers %-30s %d\n", k, r.Answers[k])
	}
	fmt.Fprintf(w, "answered after p50 %.0f ms, max %.0f ms\n", r.AnsweredInMS.P50, r.AnsweredInMS.Max)
	if len(r.RedisClients) == 2 {
		fmt.Fprintf(w, "Redis connections (every client of the server): %d before, %d while waiting\n", r.RedisClients[0], r.RedisClients[1])
	}
	for _, n := range r.Notes {
		fmt.Fprintf(w, "note: %s\n", n)
	}
}
