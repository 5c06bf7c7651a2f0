// Package push hands challenge notifications to a push provider.
//
// Creating a push login hands one Job per active device with a push token to
// a Sender, which must not wait on the provider: the IdP's request never
// waits on FCM. A push carries only {"type":"challenge","challenge_id"}: no
// name, idNat, client name, binding message, verification number or
// device_id ever reaches the provider.
//
// Providers: "log" (development: logs that a push would be sent, without the
// token) and "none" (phones poll). The FCM sender with its durable queue
// implements the same interface.
package push

import (
	"context"
	"log/slog"
	"time"
)

// Job is one push to one device.
type Job struct {
	ChallengeID string
	DeviceID    string
	Token       string // never logged
	ExpiresAt   time.Time
}

// Sender takes jobs without waiting on the provider.
type Sender interface {
	Send(ctx context.Context, jobs []Job)
}

// LogSender logs each push instead of sending it.
type LogSender struct{ Log *slog.Logger }

// Send logs the jobs.
func (s LogSender) Send(ctx context.Context, jobs []Job) {
	for _, j := range jobs {
		s.Log.InfoContext(ctx, "push (log provider)", "challenge_id", j.ChallengeID, "device_id", j.DeviceID,
			"ttl_s", int(time.Until(j.ExpiresAt).Seconds()))
	}
}

// NoneSender drops every job: phones poll.
type NoneSender struct{}

// Send does nothing.
func (NoneSender) Send(context.Context, []Job) {}

// Recorder keeps the jobs it is given, for tests and demos.
type Recorder struct {
	ch chan Job
}

// NewRecorder returns a Recorder holding up to n jobs.
func NewRecorder(n int) *Recorder { return &Recorder{ch: make(chan Job, n)} }

// Send records the jobs (dropping them when full).
func (r *Recorder) Send(_ context.Context, jobs []Job) {
	for _, j := range jobs {
		select {
		case r.ch <- j:
		default:
		}
	}
}

// Jobs is where recorded jobs arrive.
func (r *Recorder) Jobs() <-chan Job { return r.ch }
