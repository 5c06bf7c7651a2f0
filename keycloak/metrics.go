package keycloak

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the Keycloak channel's Prometheus metrics.
type Metrics struct {
	requests     *prometheus.CounterVec
	rejections   *prometheus.CounterVec
	jwksLoads    *prometheus.CounterVec
	callbacks    *prometheus.CounterVec
	attempts     *prometheus.CounterVec
	deliveryTime prometheus.Histogram
}

// Results of a channel request (ecps_keycloak_requests_total).
const (
	RequestAccepted = "accepted" // 201, a push login started
	RequestRefused  = "refused"  // 201, the login could not start: the callback says UNAUTHORIZED
	RequestInvalid  = "invalid"  // 400
	RequestToken    = "token"    // 401
	RequestError    = "error"    // 503 (Redis)
)

// Callback statuses, as Keycloak's AuthenticationChannelResponse names them.
const (
	StatusSucceed      = "SUCCEED"
	StatusUnauthorized = "UNAUTHORIZED"
)

// Outcomes of a callback (ecps_keycloak_callbacks_total), as audited.
const (
	OutcomeSent    = "sent"    // Keycloak answered 200
	OutcomeFailed  = "failed"  // refused by Keycloak, or not taken before the token's exp
	OutcomeUnknown = "unknown" // a SUCCEED whose fate is unknown: never sent again
)

// Results of one callback attempt (ecps_keycloak_callback_attempts_total).
var attemptResults = []string{"ok", "connect", "http_5xx", "http_403_early", "http_403", "http_4xx", "http_other",
	"timeout", "reset"}

// NewMetrics registers the Keycloak metrics on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ecps_keycloak_requests_total", Help: "Keycloak CIBA channel requests, by result (accepted, refused, invalid, token, error).",
		}, []string{"result"}),
		rejections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ecps_keycloak_token_rejections_total", Help: "Keycloak channel tokens rejected, by reason.",
		}, []string{"reason"}),
		jwksLoads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ecps_keycloak_jwks_loads_total", Help: "Loads of a realm's JWKS (URL or file), by result (ok, error).",
		}, []string{"result"}),
		callbacks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ecps_keycloak_callbacks_total", Help: "Keycloak callbacks ended, by status (SUCCEED, UNAUTHORIZED) and outcome (sent, failed, unknown).",
		}, []string{"status", "outcome"}),
		attempts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ecps_keycloak_callback_attempts_total", Help: "Keycloak callback attempts, by result (ok, connect, http_5xx, http_403_early, http_403, http_4xx, http_other, timeout, reset).",
		}, []string{"result"}),
		deliveryTime: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "ecps_keycloak_callback_delivery_seconds", Help: "From the decision (or the refusal) to Keycloak's 200.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300},
		}),
	}
	reg.MustRegister(m.requests, m.rejections, m.jwksLoads, m.callbacks, m.attempts, m.deliveryTime)
	for _, r := range []string{RequestAccepted, RequestRefused, RequestInvalid, RequestToken, RequestError} {
		m.requests.WithLabelValues(r)
	}
	for _, r := range TokenReasons {
		m.rejections.WithLabelValues(r)
	}
	for _, s := range []string{StatusSucceed, StatusUnauthorized} {
		for _, o := range []string{OutcomeSent, OutcomeFailed, OutcomeUnknown} {
			m.callbacks.WithLabelValues(s, o)
		}
	}
	for _, r := range attemptResults {
		m.attempts.WithLabelValues(r)
	}
	return m
}

// CallbackCounter is the counter of ended callbacks of status and outcome.
func (m *Metrics) CallbackCounter(status, outcome string) prometheus.Counter {
	return m.callbacks.WithLabelValues(status, outcome)
}

// Rejections is the counter of tokens rejected for reason.
func (m *Metrics) Rejections(reason string) prometheus.Counter {
	return m.rejections.WithLabelValues(reason)
}

// Attempts is the counter of callback attempts with result.
func (m *Metrics) Attempts(result string) prometheus.Counter {
	return m.attempts.WithLabelValues(result)
}
