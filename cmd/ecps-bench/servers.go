package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"strconv"
	"strings"
	"syscall"

	"github.com/redis/go-redis/v9"
)

// redisStats is what INFO tells of the work Redis has done so far.
type redisStats struct {
	Calls      map[string]int64 // command → calls, those run inside scripts included
	CPUSeconds float64          // used_cpu_sys + used_cpu_user of the whole server
	UsedMemory int64
	// Reads is total_reads_processed: the read events on client sockets.
	// A client that waits for each reply before sending more (go-redis: one
	// command or pipeline per connection at a time) causes one per round
	// trip, so its growth counts the round trips.
	Reads int64
}

// readRedisStats runs INFO commandstats, cpu, memory and stats.
func readRedisStats(ctx context.Context, rdb redis.UniversalClient) (redisStats, error) {
	s, err := rdb.Info(ctx, "commandstats", "cpu", "memory", "stats").Result()
	if err != nil {
		return redisStats{}, fmt.Errorf("redis INFO: %w", err)
	}
	return parseRedisInfo(s)
}

// parseRedisInfo reads the INFO sections commandstats
// ("cmdstat_get:calls=3,usec=…"), cpu and memory.
func parseRedisInfo(s string) (redisStats, error) {
	st := redisStats{Calls: map[string]int64{}}
	var sys, user float64
	var haveCPU int
	for _, line := range strings.Split(s, "\n") {
		line = strings.TrimSpace(line)
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		switch {
		case strings.HasPrefix(k, "cmdstat_"):
			for _, f := range strings.Split(v, ",") {
				if n, ok := strings.CutPrefix(f, "calls="); ok {
					c, err := strconv.ParseInt(n, 10, 64)
					if err != nil {
						return st, fmt.Errorf("redis INFO: %q", line)
					}
					st.Calls[strings.TrimPrefix(k, "cmdstat_")] = c
				}
			}
		case k == "used_cpu_sys" || k == "used_cpu_user":
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				return st, fmt.Errorf("redis INFO: %q", line)
			}
			if k == "used_cpu_sys" {
				sys = f
			} else {
				user = f
			}
			haveCPU++
		case k == "used_memory":
			st.UsedMemory, _ = strconv.ParseInt(v, 10, 64)
		case k == "total_reads_processed":
			st.Reads, _ = strconv.ParseInt(v, 10, 64)
		}
	}
	if haveCPU != 2 {
		return st, fmt.Errorf("redis INFO: no used_cpu_sys/used_cpu_user")
	}
	st.CPUSeconds = sys + user
	return st, nil
}

// excludedCommands are the bench's own reads of Redis, left out of the
// per-login counts.
var excludedCommands = map[string]bool{"info": true, "memory|usage": true, "scan": true, "ping": true}

// redisDelta is the work done between two INFO readings: calls by
// command (the bench's own left out) and their total.
func redisDelta(before, after redisStats) (map[string]int64, int64) {
	out := map[string]int64{}
	var total int64
	for cmd, n := range after.Calls {
		if excludedCommands[cmd] {
			continue
		}
		if d := n - before.Calls[cmd]; d > 0 {
			out[cmd] = d
			total += d
		}
	}
	return out, total
}

// scrapeCPU reads process_cpu_seconds_total from a Prometheus text page;
// NaN when the page has none (e.g. a service built without the process
// collector).
func scrapeCPU(ctx context.Context, hc *http.Client, url string) (float64, error) {
	v, err := scrapeMetrics(ctx, hc, url, "process_cpu_seconds_total")
	return v["process_cpu_seconds_total"], err
}

// scrapeMetrics returns the values of the named unlabelled metrics (NaN
// for those absent).
func scrapeMetrics(ctx context.Context, hc *http.Client, url string, names ...string) (map[string]float64, error) {
	out := map[string]float64{}
	for _, n := range names {
		out[n] = math.NaN()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return out, err
	}
	res, err := hc.Do(req)
	if err != nil {
		return out, err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return out, fmt.Errorf("GET %s: HTTP %d", url, res.StatusCode)
	}
	return parseMetrics(res.Body, names...), nil
}

func parseMetrics(r io.Reader, names ...string) map[string]float64 {
	out := map[string]float64{}
	want := map[string]bool{}
	for _, n := range names {
		out[n] = math.NaN()
		want[n] = true
	}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		name, val, ok := strings.Cut(line, " ")
		if !ok || !want[name] {
			continue
		}
		if f, err := strconv.ParseFloat(strings.Fields(val)[0], 64); err == nil {
			out[name] = f
		}
	}
	return out
}

// selfCPU is this process's user + system CPU time so far, in seconds.
func selfCPU() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return math.NaN()
	}
	return float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9
}

// loadAvg is /proc/loadavg's 1, 5 and 15 minute averages (nil if unknown).
func loadAvg() []float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return nil
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return nil
	}
	out := make([]float64, 3)
	for i := range out {
		out[i], _ = strconv.ParseFloat(f[i], 64)
	}
	return out
}
