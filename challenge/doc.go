// Package challenge runs logins: an IdP creates an authentication, the
// practitioner's phone reads the challenge and signs a decision, and the IdP
// polls (CIBA style, with long-poll) until it gets the result, exactly once.
//
// States of an authentication:
//
//	pending ──(phone claims the QR code; QR logins only)──▶ claimed
//	pending, claimed ──(signed decision: approve with the right number)──▶ approved
//	pending, claimed ──(deny, fraud, or approve with a wrong number)──▶ denied
//	pending, claimed ──(IdP DELETE)──▶ cancelled
//	pending, claimed ──(expires_in passes)──▶ expired (computed, never written)
//	approved ──(first poll that reads it)──▶ delivered: every later poll is invalid_grant
//
// A decision is taken by one Lua script: exactly one decision wins whatever
// the concurrency and the replica; the losers get conflict. The same script
// audits it, updates the practitioner's denial counter and fraud block, and
// makes the result readable ("audited"); the wake-up on the pub/sub channel
// rides in the same round trip. It can, because a push login's tag is chosen
// to fall in its practitioner's Redis Cluster slot (slot.go), and on one
// Redis every key is in "the same slot". A QR login on a Cluster has a slot of
// its own: its decision takes three steps, each safe to run again (the
// decision on the login's tag, then its audit and counters on the
// practitioner's, then "audited" and the wake-up). Either way no result is
// readable before its audit entry exists. With redis.min_replicas_ack every
// decision takes the three steps, each acknowledged by replicas; for a
// Keycloak login (its callback is queued first) "audited" is set by a later
// step.
//
// Identifiers: auth_req_id (the IdP's), challenge_id (the phone's), login_id
// (the browser's) and QR tokens share a random tag that names the
// authentication's hash tag, followed by a secret of 128 bits, stored as
// SHA-256: every operation finds its keys without a lookup. The auth_req_id's
// and the login_id's secrets are random: knowing one never gives the other.
// QR tokens are derived from the login_id's secret, one per 25 s slot (qr.go):
// the page's holder can compute them, a token gives nothing back.
//
// Long-poll: each process holds one Redis subscription (Hub) and wakes its
// waiting requests in memory. A waiter subscribes, then re-reads the state,
// and re-reads it again on wake-up and on timeout, so a lost message never
// loses a result.
//
// Keycloak logins (keycloak.go): a push login that Keycloak's CIBA channel
// delegates (package keycloak) carries the expiry and the verification
// number it is given, possibly none (number_digits 0: the approval carries
// no number). Its decision is handed to Options.OnKeycloakDecision after the
// decision's audit entry and before the result is readable, so that its
// callback to Keycloak is queued first.
//
// Abuse limits, checked atomically with the creation of a push login on the
// practitioner's hash tag: pending authentications, pushes per window, a
// block after consecutive denials or a fraud report. The practitioner's
// side of their logins is one hash ({sub:<idNat>}:logins), read whole: the
// phone's list is one command.
//
// Every step is safe to run twice (docs/redis.md, "Retries, lost replies and
// deadlines"): a decision is named by its JWS, a delivering poll, a claim
// and a proof by an operation id stored with the change.
package challenge
