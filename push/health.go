package push

import (
	"log/slog"
	"sync"
	"time"
)

// Kinds of authentication failure.
const (
	authKindCredentials = "credentials" // FCM refuses the service account (401/403, token not obtained)
	authKindAPNs        = "apns"        // FCM cannot reach APNs with the key uploaded to Firebase (THIRD_PARTY_AUTH_ERROR)
)

// apnsClearAfter: an APNs auth failure is reported this long after the last
// one. (Any accepted push proves the service account works, but not APNs:
// an Android push says nothing about the iOS key.)
const apnsClearAfter = 10 * time.Minute

// authLogEvery bounds how often a persisting failure is logged again.
const authLogEvery = time.Minute

// Status is the provider's health, as /readyz shows it.
type Status struct {
	Provider string     `json:"provider"`
	Status   string     `json:"status"` // ok | auth_error
	Detail   string     `json:"detail,omitempty"`
	Since    *time.Time `json:"since,omitempty"`
}

// health tracks authentication failures of the provider, as this replica
// sees them.
type health struct {
	log     *slog.Logger
	metrics *Metrics

	mu    sync.Mutex
	fails map[string]*authFailure
}

type authFailure struct {
	since, last, logged time.Time
}

func newHealth(log *slog.Logger, m *Metrics) *health {
	return &health{log: log, metrics: m, fails: map[string]*authFailure{}}
}

// authFailed records a failure, logging it loudly when it starts and at most
// once a minute while it lasts. errText must hold no token.
func (h *health) authFailed(kind, errText string) {
	now := time.Now()
	h.mu.Lock()
	f := h.fails[kind]
	start := f == nil
	if start {
		f = &authFailure{since: now}
		h.fails[kind] = f
	}
	f.last = now
	logIt := now.Sub(f.logged) >= authLogEvery
	if logIt {
		f.logged = now
	}
	h.mu.Unlock()
	h.metrics.authFailing.WithLabelValues(kind).Set(1)
	if logIt {
		msg := "push: FCM refuses this service's credentials; pushes are retried until each login expires and phones poll meanwhile. Check push.fcm.credentials_file, the service account's role (Firebase Cloud Messaging API Admin) and project_id"
		if kind == authKindAPNs {
			msg = "push: FCM cannot authenticate to APNs (THIRD_PARTY_AUTH_ERROR); iOS pushes fail and iPhones poll. Check the APNs key uploaded in the Firebase console"
		}
		h.log.Error(msg, "kind", kind, "since", f.since, "err", errText)
	}
}

// sent records an accepted push: the service account works.
func (h *health) sent() {
	h.mu.Lock()
	f := h.fails[authKindCredentials]
	delete(h.fails, authKindCredentials)
	h.mu.Unlock()
	if f != nil {
		h.metrics.authFailing.WithLabelValues(authKindCredentials).Set(0)
		h.log.Info("push: FCM accepts this service's credentials again", "failing_since", f.since)
	}
}

// status reports the worst current failure.
func (h *health) status(provider string) Status {
	now := time.Now()
	h.mu.Lock()
	defer h.mu.Unlock()
	if f := h.fails[authKindAPNs]; f != nil && now.Sub(f.last) > apnsClearAfter {
		delete(h.fails, authKindAPNs)
		h.metrics.authFailing.WithLabelValues(authKindAPNs).Set(0)
	}
	if f := h.fails[authKindCredentials]; f != nil {
		since := f.since.UTC().Truncate(time.Second)
		return Status{Provider: provider, Status: "auth_error", Since: &since,
			Detail: "FCM refuses the service account's credentials: pushes are retried until their login expires; phones poll"}
	}
	if f := h.fails[authKindAPNs]; f != nil {
		since := f.since.UTC().Truncate(time.Second)
		return Status{Provider: provider, Status: "auth_error", Since: &since,
			Detail: "FCM cannot authenticate to APNs (THIRD_PARTY_AUTH_ERROR): iOS pushes fail; iPhones poll"}
	}
	return Status{Provider: provider, Status: "ok"}
}
