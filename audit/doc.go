// Package audit keeps the append-only audit trail of the service in Redis
// Streams: one stream per practitioner, so that reading one practitioner's
// entries never scans another's, and a system stream for the few entries
// that concern no practitioner (an IdP client's rate limit, desk sign-in
// limits).
//
// An entry is written once, in one place, and never changed. Domain scripts
// write the entry of a state change (an enrolment, a decision) to the
// practitioner's stream themselves with AppendLua, in the same atomic step
// as the change: a script run again (go-redis resends a command whose reply
// was lost) changes nothing and writes nothing. Append writes the other
// entries; it carries an operation id remembered for an hour beside the
// stream (same hash tag), so that a resent append is a no-op.
//
// Retention: each append trims entries older than the retention with
// XADD MINID ~, and the practitioner's stream expires after the retention
// when nothing new is written to it.
package audit
