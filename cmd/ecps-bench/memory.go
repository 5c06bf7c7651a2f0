package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/redis/go-redis/v9"
)

// MemoryReport is the report of `ecps-bench memory`: Redis memory
// (MEMORY USAGE of every key, summed by key class) per enrolled device,
// per pending push login and per ended login.
type MemoryReport struct {
	Devices int `json:"devices"`
	Logins  int `json:"logins"`
	// bytes per unit, by key class ("{sub:*}:devices", "{a:*}", …) and in all
	PerDevice       map[string]float64 `json:"per_device_bytes"`
	PerPendingLogin map[string]float64 `json:"per_pending_login_bytes"`
	PerEndedLogin   map[string]float64 `json:"per_ended_login_bytes"` // cancelled, kept for the IdP and the audit
	UsedMemory      map[string]float64 `json:"used_memory_delta_per_unit"`
	Notes           []string           `json:"notes,omitempty"`
}

// runMemory: `ecps-bench memory -targets URL -redis URL`: sums MEMORY USAGE
// over every key before and after enrolling -devices devices (one per
// practitioner), after creating one push login for each (pending), and
// after cancelling them.
func runMemory(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var o options
	fs := flag.NewFlagSet("ecps-bench memory", flag.ContinueOnError)
	fs.SetOutput(stderr)
	o.common.register(fs)
	fs.IntVar(&o.devices, "devices", 500, "devices to enrol, one per practitioner; as many push logins")
	fs.StringVar(&o.redisURL, "redis", "", "the replicas' Redis `URL` (required)")
	fs.StringVar(&o.fcm, "fcm", "", "play the fake FCM server at this `address` (as for a load run), so that the pushes are sent and leave the queue")
	fs.StringVar(&o.fcmProject, "fcm-project", "ecps-bench", "FCM project id of the replicas")
	match := fs.String("match", "*", "SCAN MATCH `pattern` of the service's keys (its redis.key_prefix + \"*\")")
	jsonPath := fs.String("json", "", "write the JSON report to this `file`")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	o.enrolVia = "desk"
	if err := o.resolve(true); err != nil || o.redisURL == "" || o.devices < 1 {
		if err == nil {
			err = errors.New("-redis and -devices ≥ 1 are required")
		}
		fmt.Fprintf(stderr, "ecps-bench memory: %v\n", err)
		return exitUsage
	}
	rep, err := memory(ctx, o, *match, stderr)
	if rep != nil {
		printMemory(stdout, rep)
		if *jsonPath != "" {
			b, _ := json.MarshalIndent(rep, "", "  ")
			if werr := os.WriteFile(*jsonPath, append(b, '\n'), 0o644); werr != nil && err == nil {
				err = werr
			}
		}
	}
	if err != nil {
		fmt.Fprintf(stderr, "ecps-bench memory: %v\n", err)
		return exitError
	}
	return exitOK
}

// keyClass names the kind of a key: the hash tag's id and every other
// segment that is not a plain lower-case word become "*"
// ("ecps:{sub:810001234565}:jti:dev_x:abc" → "{sub:*}:jti:*:*").
func keyClass(key string) string {
	if i := strings.Index(key, "{"); i >= 0 {
		key = key[i:]
	}
	var out []string
	rest := key
	if strings.HasPrefix(rest, "{") {
		end := strings.Index(rest, "}")
		if end < 0 {
			return key
		}
		tag := rest[:end+1]
		if name, _, ok := strings.Cut(tag[1:], ":"); ok {
			tag = "{" + name + ":*}"
		}
		out = append(out, tag)
		rest = strings.TrimPrefix(rest[end+1:], ":")
		if rest == "" {
			return tag
		}
	}
	for _, seg := range strings.Split(rest, ":") {
		if seg == "" || len(seg) > 12 || strings.IndexFunc(seg, func(r rune) bool { return r < 'a' || r > 'z' }) >= 0 {
			seg = "*"
		}
		out = append(out, seg)
	}
	return strings.Join(out, ":")
}

// keyMemory is MEMORY USAGE (exact: SAMPLES 0) of every key matching
// match, by key.
func keyMemory(ctx context.Context, rdb *redis.Client, match string) (map[string]int64, error) {
	out := map[string]int64{}
	var cursor uint64
	for {
		keys, next, err := rdb.Scan(ctx, cursor, match, 1000).Result()
		if err != nil {
			return nil, err
		}
		pipe := rdb.Pipeline()
		cmds := make([]*redis.IntCmd, len(keys))
		for i, k := range keys {
			cmds[i] = pipe.MemoryUsage(ctx, k, 0)
		}
		if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
			return nil, err
		}
		for i, k := range keys {
			if v, err := cmds[i].Result(); err == nil {
				out[k] = v
			}
		}
		if cursor = next; cursor == 0 {
			return out, nil
		}
	}
}

// memDelta is the growth from a to b by key class, divided by n, with the
// sum under "all".
func memDelta(a, b map[string]int64, n int) map[string]float64 {
	byClass := map[string]int64{}
	for k, v := range b {
		byClass[keyClass(k)] += v - a[k]
	}
	for k, v := range a {
		if _, ok := b[k]; !ok {
			byClass[keyClass(k)] -= v
		}
	}
	out := map[string]float64{}
	var all int64
	for c, v := range byClass {
		if v != 0 {
			out[c] = round3(float64(v) / float64(n))
			all += v
		}
	}
	out["all"] = round3(float64(all) / float64(n))
	return out
}

func memory(ctx context.Context, o options, match string, logw io.Writer) (*MemoryReport, error) {
	b := &bench{opts: o, targets: o.targets, api: newAPIClient(o.cred, 64, o.timeout), log: logw}
	if err := waitReady(ctx, b.api.hc, o.targets, 30*time.Second); err != nil {
		return nil, err
	}
	ropt, err := redis.ParseURL(o.redisURL)
	if err != nil {
		return nil, fmt.Errorf("-redis: %v", err)
	}
	rdb := redis.NewClient(ropt)
	defer rdb.Close()
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
	}
	rep := &MemoryReport{Devices: o.devices, Logins: o.devices, UsedMemory: map[string]float64{}}
	snap := func() (map[string]int64, int64, error) {
		m, err := keyMemory(ctx, rdb, match)
		if err != nil {
			return nil, 0, err
		}
		st, err := readRedisStats(ctx, rdb)
		return m, st.UsedMemory, err
	}
	m0, u0, err := snap()
	if err != nil {
		return nil, err
	}
	subjects, err := b.enrolAll(ctx, o.devices, 1, 8)
	if err != nil {
		return nil, fmt.Errorf("enrolment: %w", err)
	}
	time.Sleep(500 * time.Millisecond) // the global audit copies
	m1, u1, err := snap()
	if err != nil {
		return nil, err
	}
	rep.PerDevice = memDelta(m0, m1, o.devices)
	rep.UsedMemory["device"] = round3(float64(u1-u0) / float64(o.devices))
	b.logf("enrolled %d devices", o.devices)

	var ids []string
	for _, s := range subjects {
		r, err := b.api.call(ctx, http.MethodPost, o.targets[0]+"/api/v1/authentications",
			map[string]any{"login_hint": s.idnat, "binding_message": "ecps-bench memory"}, idpAuth{b.api}, 0)
		if err != nil || r.status != http.StatusCreated {
			return rep, fmt.Errorf("create: %s %v", r.describe(), err)
		}
		var c created
		_ = json.Unmarshal(r.body, &c)
		ids = append(ids, c.AuthReqID)
	}
	time.Sleep(time.Second) // pushes sent (with -fcm), audit copied
	m2, u2, err := snap()
	if err != nil {
		return rep, err
	}
	rep.PerPendingLogin = memDelta(m1, m2, len(ids))
	rep.UsedMemory["pending_login"] = round3(float64(u2-u1) / float64(len(ids)))
	b.logf("created %d pending push logins", len(ids))
	if o.fcm == "" {
		rep.Notes = append(rep.Notes, "without -fcm, pushes may wait in the push queue: its entries count in the pending login's memory")
	}

	for _, id := range ids {
		r, err := b.api.call(ctx, http.MethodDelete, o.targets[0]+"/api/v1/authentications/"+url.PathEscape(id), nil, idpAuth{b.api}, 0)
		if err != nil || r.status != http.StatusNoContent {
			return rep, fmt.Errorf("cancel: %s %v", r.describe(), err)
		}
	}
	time.Sleep(500 * time.Millisecond)
	m3, u3, err := snap()
	if err != nil {
		return rep, err
	}
	rep.PerEndedLogin = memDelta(m1, m3, len(ids))
	rep.UsedMemory["ended_login"] = round3(float64(u3-u1) / float64(len(ids)))
	return rep, nil
}

func printMemory(w io.Writer, r *MemoryReport) {
	fmt.Fprintf(w, "Redis memory (MEMORY USAGE summed by key class), %d devices (one per practitioner), %d push logins\n", r.Devices, r.Logins)
	for _, part := range []struct {
		title string
		m     map[string]float64
	}{{"per device", r.PerDevice}, {"per pending push login", r.PerPendingLogin}, {"per ended (cancelled) login, while kept", r.PerEndedLogin}} {
		if part.m == nil {
			continue
		}
		fmt.Fprintf(w, "\n%s: %.0f bytes\n", part.title, part.m["all"])
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		for _, k := range sortedKeys(part.m) {
			if k != "all" {
				fmt.Fprintf(tw, "  %s\t%.0f\n", k, part.m[k])
			}
		}
		tw.Flush()
	}
	fmt.Fprintf(w, "\nINFO used_memory growth per unit: %v\n", r.UsedMemory)
	for _, n := range r.Notes {
		fmt.Fprintf(w, "note: %s\n", n)
	}
}
