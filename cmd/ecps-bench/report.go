package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"strings"
	"text/tabwriter"
)

// Report is the JSON report (-json) of a load run.
type Report struct {
	Label       string   `json:"label,omitempty"`
	StartedAt   string   `json:"started_at"`
	Mode        string   `json:"mode"` // closed | open
	Concurrency int      `json:"concurrency,omitempty"`
	Rate        float64  `json:"rate,omitempty"`
	Push        string   `json:"push"` // fcm | poll
	Targets     []string `json:"targets"`
	Replicas    int      `json:"replicas"`
	Devices     int      `json:"devices"`
	Subjects    int      `json:"subjects"`
	DurationS   float64  `json:"duration_s"`

	Logins            int64    `json:"logins"`
	LoginsPerS        float64  `json:"logins_per_s"`
	CeilingLoginsPerS float64  `json:"ceiling_logins_per_s"`
	Ratio             float64  `json:"ratio"`
	Ceiling           Ceiling  `json:"ceiling"`
	CeilingAfter      *Ceiling `json:"ceiling_after,omitempty"` // measured again after the load: how steady the machine was
	// CPU time of everything in the test (replicas, Redis, the bench's IdP,
	// phones and fake FCM) per login, and the crypto's share of it (3
	// signatures + 3 verifications, in CPU time): what the ratio would be on
	// a machine doing nothing else, a figure that other processes on a
	// shared machine disturb much less than logins/s.
	CPUPerLoginUS      float64          `json:"system_cpu_per_login_us,omitempty"`
	BenchCPUPerLoginUS float64          `json:"bench_cpu_per_login_us"`
	CryptoCPUPerLogin  float64          `json:"crypto_cpu_per_login_us"`
	CPURatio           float64          `json:"cpu_ratio,omitempty"`
	Errors             map[string]int64 `json:"errors"`
	ErrorsTotal        int64            `json:"errors_total"`
	DecisionToResultMS struct {
		P50 float64 `json:"p50"`
		P99 float64 `json:"p99"`
		Max float64 `json:"max"`
	} `json:"decision_to_result_ms"`
	Steps    map[string]Percentiles     `json:"steps"`
	Spectrum map[string][][2]float64    `json:"spectrum"` // step → [percentile, ms], for `ecps-bench plot`
	Redis    *RedisReport               `json:"redis,omitempty"`
	CPU      *ReplicaCPUReport          `json:"replica_cpu,omitempty"`
	LoadAvg  map[string][]float64       `json:"machine_loadavg,omitempty"` // before / after: 1, 5, 15 min
	FCM      map[string]int             `json:"fcm,omitempty"`
	Notes    []string                   `json:"notes,omitempty"`
	Extra    map[string]json.RawMessage `json:"extra,omitempty"`
}

// RedisReport is Redis's work per login, from INFO before and after the
// load (commandstats counts the commands scripts run, each by its name).
type RedisReport struct {
	CommandsPerLogin       float64            `json:"commands_per_login"`
	RoundTripsPerLogin     float64            `json:"round_trips_per_login"` // read events on client sockets (total_reads_processed)
	CPUPerLoginUS          float64            `json:"cpu_per_login_us"`
	Commands               int64              `json:"commands"`
	CPUSeconds             float64            `json:"cpu_s"`
	CommandsByNamePerLogin map[string]float64 `json:"commands_by_name_per_login"`
}

// ReplicaCPUReport is the replicas' CPU (process_cpu_seconds_total of
// their /metrics) per login, all replicas together.
type ReplicaCPUReport struct {
	PerLoginUS float64   `json:"per_login_us"`
	Seconds    []float64 `json:"seconds"` // each replica's, over the load
}

// jsonFloat writes NaN as null.
func nanToZero(v float64) float64 {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return 0
	}
	return v
}

func writeJSON(path string, r *Report) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// printTable writes the human summary of r.
func printTable(w io.Writer, r *Report) {
	if r.Label != "" {
		fmt.Fprintf(w, "== %s\n", r.Label)
	}
	load := ""
	if r.Mode == "open" {
		load = fmt.Sprintf("open loop, %.0f logins/s offered", r.Rate)
	} else {
		load = fmt.Sprintf("closed loop, concurrency %d", r.Concurrency)
	}
	fmt.Fprintf(w, "%s; push: %s; %d replica(s); %d devices over %d practitioners; %.1f s\n",
		load, r.Push, r.Replicas, r.Devices, r.Subjects, r.DurationS)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "figure\tvalue\n")
	fmt.Fprintf(tw, "logins approved\t%d\n", r.Logins)
	fmt.Fprintf(tw, "logins/s\t%.1f\n", r.LoginsPerS)
	fmt.Fprintf(tw, "crypto ceiling, logins/s (%d cores; sign %.0f µs, verify %.0f µs)\t%.1f\n",
		r.Ceiling.Cores, r.Ceiling.SignUS, r.Ceiling.VerifyUS, r.CeilingLoginsPerS)
	fmt.Fprintf(tw, "share of the ceiling\t%.1f %%\n", 100*r.Ratio)
	if r.CeilingAfter != nil {
		fmt.Fprintf(tw, "crypto ceiling measured again after the load\t%.1f\n", r.CeilingAfter.LoginsPerS)
	}
	fmt.Fprintf(tw, "errors\t%d\n", r.ErrorsTotal)
	if r.Redis != nil {
		fmt.Fprintf(tw, "Redis commands per login (inside scripts included)\t%.1f\n", r.Redis.CommandsPerLogin)
		fmt.Fprintf(tw, "Redis round trips per login (read events, total_reads_processed)\t%.1f\n", r.Redis.RoundTripsPerLogin)
		fmt.Fprintf(tw, "Redis CPU per login\t%.0f µs\n", r.Redis.CPUPerLoginUS)
	}
	if r.CPU != nil {
		fmt.Fprintf(tw, "replicas' CPU per login (all replicas)\t%.0f µs\n", r.CPU.PerLoginUS)
	}
	fmt.Fprintf(tw, "the bench's CPU per login (IdP, phones, fake FCM)\t%.0f µs\n", r.BenchCPUPerLoginUS)
	if r.CPUPerLoginUS > 0 {
		fmt.Fprintf(tw, "CPU per login, all of it (replicas + Redis + bench)\t%.0f µs\n", r.CPUPerLoginUS)
		fmt.Fprintf(tw, "crypto's share of that CPU (3 signs + 3 verifies: %.0f µs)\t%.1f %%\n", r.CryptoCPUPerLogin, 100*r.CPURatio)
	}
	fmt.Fprintf(tw, "decision → IdP result p50 / p99 / max\t%.2f / %.2f / %.2f ms\n",
		r.DecisionToResultMS.P50, r.DecisionToResultMS.P99, r.DecisionToResultMS.Max)
	tw.Flush()

	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "step (ms)\tcount\tmean\tp50\tp90\tp99\tp99.9\tmax\t\n")
	for _, st := range stepOrder {
		p, ok := r.Steps[st]
		if !ok || p.Count == 0 {
			continue
		}
		fmt.Fprintf(tw, "%s\t%d\t%.2f\t%.2f\t%.2f\t%.2f\t%.2f\t%.2f\t\n", st, p.Count, p.Mean, p.P50, p.P90, p.P99, p.P999, p.Max)
	}
	tw.Flush()
	if len(r.Errors) > 0 {
		fmt.Fprintln(w)
		fmt.Fprintln(w, "errors by kind:")
		for _, k := range sortedKeys(r.Errors) {
			fmt.Fprintf(w, "  %-40s %d\n", k, r.Errors[k])
		}
	}
	if r.Redis != nil && len(r.Redis.CommandsByNamePerLogin) > 0 {
		fmt.Fprintln(w)
		var parts []string
		for i, k := range sortedKeys(r.Redis.CommandsByNamePerLogin) {
			if i == 12 {
				parts = append(parts, "…")
				break
			}
			parts = append(parts, fmt.Sprintf("%s %.2f", k, r.Redis.CommandsByNamePerLogin[k]))
		}
		fmt.Fprintf(w, "Redis commands per login by name: %s\n", strings.Join(parts, ", "))
	}
	for _, n := range r.Notes {
		fmt.Fprintf(w, "note: %s\n", n)
	}
}
