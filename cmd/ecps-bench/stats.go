package main

import (
	"math"
	"sort"
	"sync"
	"time"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"
)

// Steps of one login, in order. Each has an HDR histogram of its latency.
const (
	stepCreate = "create" // IdP: POST /api/v1/authentications → 201
	stepLearn  = "learn"  // phone: from the 201 to knowing the challenge (push delivered, or list polled)
	stepRead   = "read"   // phone: GET /api/v1/device/challenges/{id} (push mode only: the list carries the object)
	stepDecide = "decide" // phone: POST …/response → 204
	stepResult = "result" // IdP: from sending the decision to the long-poll's answer (decision_to_result)
	stepTotal  = "total"  // from the login's intended start to the IdP's result
)

var stepOrder = []string{stepCreate, stepLearn, stepRead, stepDecide, stepResult, stepTotal}

// Histogram range: 1 µs to 10 min, 3 significant digits.
const (
	histMin = 1
	histMax = int64(10 * time.Minute / time.Microsecond)
)

func newHist() *hdrhistogram.Histogram { return hdrhistogram.New(histMin, histMax, 3) }

// record adds d (rounded to µs, clamped to the range) to h.
func record(h *hdrhistogram.Histogram, d time.Duration) {
	us := d.Microseconds()
	us = min(max(us, histMin), histMax)
	_ = h.RecordValue(us)
}

// shard is the part of the results that one group of logins writes: a
// histogram per step, errors by kind, and the count of logins that ended
// approved. Shards keep locks uncontended; merge adds them up.
type shard struct {
	mu     sync.Mutex
	steps  map[string]*hdrhistogram.Histogram
	errors map[string]int64
	ok     int64
}

func newShard() *shard {
	s := &shard{steps: map[string]*hdrhistogram.Histogram{}, errors: map[string]int64{}}
	for _, st := range stepOrder {
		s.steps[st] = newHist()
	}
	return s
}

// loginResult is what one login measured: step → latency, or the kind of
// error that ended it.
type loginResult struct {
	steps map[string]time.Duration
	err   string // "" when approved
}

func (s *shard) add(r loginResult) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if r.err != "" {
		s.errors[r.err]++
		return
	}
	s.ok++
	for st, d := range r.steps {
		h := s.steps[st]
		if h == nil {
			h = newHist()
			s.steps[st] = h
		}
		record(h, d)
	}
}

// merge adds every shard up into a new one. HDR histograms merge exactly:
// the percentiles of the merge are those of all the values recorded.
func merge(shards ...*shard) *shard {
	out := newShard()
	for _, s := range shards {
		s.mu.Lock()
		out.ok += s.ok
		for k, n := range s.errors {
			out.errors[k] += n
		}
		for st, h := range s.steps {
			if out.steps[st] == nil {
				out.steps[st] = newHist()
			}
			out.steps[st].Merge(h)
		}
		s.mu.Unlock()
	}
	return out
}

func (s *shard) errorCount() int64 {
	var n int64
	for _, v := range s.errors {
		n += v
	}
	return n
}

// Percentiles are the summary of one step's histogram, in milliseconds.
type Percentiles struct {
	Count int64   `json:"count"`
	Mean  float64 `json:"mean_ms"`
	P50   float64 `json:"p50_ms"`
	P90   float64 `json:"p90_ms"`
	P99   float64 `json:"p99_ms"`
	P999  float64 `json:"p999_ms"`
	Max   float64 `json:"max_ms"`
}

func ms(us int64) float64 { return round3(float64(us) / 1000) }

func round3(v float64) float64 { return math.Round(v*1000) / 1000 }

func summarize(h *hdrhistogram.Histogram) Percentiles {
	if h == nil || h.TotalCount() == 0 {
		return Percentiles{}
	}
	return Percentiles{
		Count: h.TotalCount(),
		Mean:  round3(h.Mean() / 1000),
		P50:   ms(h.ValueAtQuantile(50)),
		P90:   ms(h.ValueAtQuantile(90)),
		P99:   ms(h.ValueAtQuantile(99)),
		P999:  ms(h.ValueAtQuantile(99.9)),
		Max:   ms(h.Max()),
	}
}

// spectrumQuantiles are the percentiles written for the latency plot:
// log-spaced towards the tail, as HDR plots are.
var spectrumQuantiles = []float64{0, 10, 25, 50, 75, 90, 95, 99, 99.5, 99.9, 99.95, 99.99, 100}

// spectrum is [percentile, ms] pairs of h, for plotting.
func spectrum(h *hdrhistogram.Histogram) [][2]float64 {
	if h == nil || h.TotalCount() == 0 {
		return nil
	}
	out := make([][2]float64, 0, len(spectrumQuantiles))
	for _, q := range spectrumQuantiles {
		v := h.ValueAtQuantile(q)
		if q == 100 {
			v = h.Max()
		} else if q == 0 {
			v = h.Min()
		}
		out = append(out, [2]float64{q, ms(v)})
	}
	return out
}

// intendedStart is the time the i-th login (from 0) of an open-loop run at
// rate per second is due: start + i/rate, computed from i each time (no
// accumulated rounding), so that a late login does not delay the next ones.
func intendedStart(start time.Time, rate float64, i int64) time.Time {
	return start.Add(time.Duration(float64(i) * float64(time.Second) / rate))
}

// perLogin divides a counter's increase by the number of logins; NaN (null
// in the report) when either is unknown.
func perLogin(before, after float64, logins int64) float64 {
	if logins <= 0 || math.IsNaN(before) || math.IsNaN(after) || after < before {
		return math.NaN()
	}
	return (after - before) / float64(logins)
}

// sortedKeys returns m's keys, largest value first (then by name).
func sortedKeys[V int64 | float64](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if m[keys[i]] != m[keys[j]] {
			return m[keys[i]] > m[keys[j]]
		}
		return keys[i] < keys[j]
	})
	return keys
}
