package push

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the push queue's Prometheus metrics.
type Metrics struct {
	sent         prometheus.Counter
	failed       *prometheus.CounterVec
	attemptErrs  *prometheus.CounterVec
	tokensClear  prometheus.Counter
	reclaimed    prometheus.Counter
	authFailing  *prometheus.GaugeVec
	depth        prometheus.Gauge
	pending      prometheus.Gauge
	oldest       prometheus.Gauge
	sendLatency  prometheus.Histogram
	delivery     prometheus.Histogram
	enqueueTotal prometheus.Counter
}

// Final reasons of a push that was not sent (ecps_push_failed_total).
const (
	FailExpired   = "expired"    // reached its login's expiry before any attempt (queue backlog)
	FailDeadToken = "dead_token" // FCM said the token is dead; it was cleared
	FailRejected  = "rejected"   // FCM refused the message for another reason (a bug or a config error)
	FailTransient = "transient"  // retried until the expiry, the last error transient
	FailAuth      = "auth"       // retried until the expiry, the last error the service account's or APNs's auth
)

// NewMetrics registers the push metrics on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		sent: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ecps_push_sent_total", Help: "Pushes accepted by the provider.",
		}),
		failed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ecps_push_failed_total", Help: "Pushes that ended without being sent, by reason (expired, dead_token, rejected, transient, auth).",
		}, []string{"reason"}),
		attemptErrs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ecps_push_attempt_errors_total", Help: "Failed send attempts, by error (unavailable, internal, quota, http_429, http_5xx, timeout, network, unregistered, sender_id_mismatch, invalid_token, invalid_argument, credentials, apns_auth, other).",
		}, []string{"error"}),
		tokensClear: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ecps_push_tokens_cleared_total", Help: "Dead push tokens cleared from their device (which then polls).",
		}),
		reclaimed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ecps_push_reclaimed_total", Help: "Queued pushes taken over from a consumer that stopped (crashed replica).",
		}),
		authFailing: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "ecps_push_auth_failing", Help: "1 while the provider rejects this replica's credentials (kind credentials: the service account; apns: the APNs key in Firebase).",
		}, []string{"kind"}),
		depth: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "ecps_push_queue_depth", Help: "Pushes in the queue (waiting or being sent), as last measured.",
		}),
		pending: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "ecps_push_queue_pending", Help: "Pushes taken by a replica and not yet finished, as last measured.",
		}),
		oldest: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "ecps_push_queue_oldest_age_seconds", Help: "Age of the oldest push in the queue (0 when empty), as last measured.",
		}),
		sendLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "ecps_push_send_duration_seconds", Help: "Duration of one send attempt to the provider.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}),
		delivery: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "ecps_push_delivery_seconds", Help: "From the login's creation (enqueue) to the provider's acceptance.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300},
		}),
		enqueueTotal: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ecps_push_enqueued_total", Help: "Pushes queued (one per device of a push login).",
		}),
	}
	reg.MustRegister(m.sent, m.failed, m.attemptErrs, m.tokensClear, m.reclaimed, m.authFailing, m.depth,
		m.pending, m.oldest, m.sendLatency, m.delivery, m.enqueueTotal)
	for _, r := range []string{FailExpired, FailDeadToken, FailRejected, FailTransient, FailAuth} {
		m.failed.WithLabelValues(r)
	}
	for _, k := range []string{authKindCredentials, authKindAPNs} {
		m.authFailing.WithLabelValues(k)
	}
	return m
}
