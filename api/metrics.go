package api

import (
	"context"
	"errors"
	"net"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/ecps-sante/ecps/deviceproof"
)

// Metrics are the service's Prometheus metrics.
type Metrics struct {
	requests        *prometheus.CounterVec
	latency         *prometheus.HistogramVec
	redisErrors     prometheus.Counter
	enrolments      *prometheus.CounterVec
	activations     *prometheus.CounterVec
	proofRejections *prometheus.CounterVec
	authentications *prometheus.CounterVec
	limitHits       *prometheus.CounterVec
	deskSignIns     *prometheus.CounterVec
	decisions       *prometheus.CounterVec
}

// NewMetrics registers the service's metrics on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ecps_http_requests_total", Help: "HTTP requests by route, method and status.",
		}, []string{"route", "method", "status"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "ecps_http_request_duration_seconds", Help: "HTTP request latency by route and method.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"route", "method"}),
		redisErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ecps_redis_errors_total", Help: "Redis commands that failed (absent keys are not failures).",
		}),
		enrolments: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ecps_enrolments_total", Help: "Enrolment attempts by result.",
		}, []string{"result"}),
		activations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ecps_activations_created_total", Help: "Activations created, by creator type.",
		}, []string{"by"}),
		proofRejections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ecps_device_proof_rejections_total", Help: "Device request proofs rejected, by reason.",
		}, []string{"reason"}),
	}
	m.authentications = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "ecps_authentications_created_total", Help: "Authentications created, by kind (push, qr).",
	}, []string{"kind"})
	m.limitHits = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "ecps_limit_hits_total", Help: "Requests refused by an abuse limit, by limit.",
	}, []string{"limit"})
	m.deskSignIns = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "ecps_desk_signins_total", Help: "Desk sign-ins (POST /desk/session) by result: ok, wrong_key, refused (over the failure limit).",
	}, []string{"result"})
	m.decisions = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "ecps_decisions_total", Help: "Logins decided on a phone, by outcome (approved, denied, wrong_number, fraud).",
	}, []string{"outcome"})
	reg.MustRegister(m.requests, m.latency, m.redisErrors, m.enrolments, m.activations, m.proofRejections,
		m.authentications, m.limitHits, m.deskSignIns, m.decisions)
	for _, o := range []string{"approved", "denied", "wrong_number", "fraud"} {
		m.decisions.WithLabelValues(o)
	}
	for _, l := range []string{"blocked", "pending_per_subject", "pushes_per_subject", "client_rps", "desk_signin"} {
		m.limitHits.WithLabelValues(l)
	}
	for _, r := range []string{"ok", "wrong_key", "refused"} {
		m.deskSignIns.WithLabelValues(r)
	}
	for _, r := range deviceproof.Reasons {
		m.proofRejections.WithLabelValues(string(r))
	}
	return m
}

func (m *Metrics) observeRequest(route, method string, status int, d time.Duration) {
	m.requests.WithLabelValues(route, method, strconv.Itoa(status)).Inc()
	m.latency.WithLabelValues(route, method).Observe(d.Seconds())
}

// Decided counts a login decided on a phone: give it as challenge.Options.OnDecision.
func (m *Metrics) Decided(outcome string) { m.decisions.WithLabelValues(outcome).Inc() }

func (m *Metrics) proofRejected(r deviceproof.Reason) {
	m.proofRejections.WithLabelValues(string(r)).Inc()
}

// RedisHook counts failed Redis commands; add it with AddHook.
func (m *Metrics) RedisHook() redis.Hook { return redisHook{m.redisErrors} }

type redisHook struct{ errors prometheus.Counter }

func (h redisHook) DialHook(next redis.DialHook) redis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := next(ctx, network, addr)
		if err != nil {
			h.errors.Inc()
		}
		return c, err
	}
}

func (h redisHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		if err != nil && !errors.Is(err, redis.Nil) {
			h.errors.Inc()
		}
		return err
	}
}

func (h redisHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		err := next(ctx, cmds)
		if err != nil && !errors.Is(err, redis.Nil) {
			h.errors.Inc()
		}
		return err
	}
}
