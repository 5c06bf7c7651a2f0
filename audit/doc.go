// Package audit keeps the append-only audit trail of the service in Redis
// Streams: one stream per practitioner, so that reading one practitioner's
// entries never scans another's, and one global stream for operators.
//
// An entry is written once and never changed. Writers are idempotent: go-redis
// retries a command whose reply was lost, so every append carries an
// operation id remembered for an hour beside the stream (same hash tag), and a
// retried append of the same operation is a no-op. Domain scripts that must
// write their entry in the same atomic step as their state change (an
// enrolment, a decision) append to the practitioner's stream themselves with
// AppendLua, and then copy the entry to the global stream with AppendGlobal.
//
// Retention: each append trims entries older than the retention with
// XADD MINID ~, and the practitioner's stream expires after the retention
// when nothing new is written to it.
package audit
