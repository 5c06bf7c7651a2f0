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

// Sender takes the jobs of one push login without waiting on the provider.
// An error means the jobs were not taken (for the FCM queue: Redis did not
// record them); nothing is pushed then and the phones poll.
type Sender interface {
	Send(ctx context.Context, jobs []Job) error
}

// LogSender logs each push instead of sending it.
type LogSender struct{ Log *slog.Logger }

// Send logs the jobs.
func (s LogSender) Send(ctx context.Context, jobs []Job) error {
	for _, j := range jobs {
		s.Log.InfoContext(ctx, "push (log provider)", "challenge_id", j.ChallengeID, "device_id", j.DeviceID,
			"ttl_s", int(time.Until(j.ExpiresAt).Seconds()))
	}
	return nil
}

// NoneSender drops every job: phones poll.
type NoneSender struct{}

// Send does nothing.
func (NoneSender) Send(context.Context, []Job) error { return nil }

// Recorder keeps the jobs it is given, for tests and demos.
type Recorder struct {
	ch chan Job
}

// NewRecorder returns a Recorder holding up to n jobs.
func NewRecorder(n int) *Recorder { return &Recorder{ch: make(chan Job, n)} }

// Send records the jobs (dropping them when full).
func (r *Recorder) Send(_ context.Context, jobs []Job) error {
	for _, j := range jobs {
		select {
		case r.ch <- j:
		default:
		}
	}
	return nil
}

// Jobs is where recorded jobs arrive.
func (r *Recorder) Jobs() <-chan Job { return r.ch }
