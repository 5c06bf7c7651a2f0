// Package push tells phones that a login waits for them.
//
// Creating a push login hands one Job per active device with a push token to
// a Sender, which never waits on the provider: the IdP's request never waits
// on FCM. A push carries only {"type":"challenge","challenge_id"}: no name,
// idNat, client name, binding message, verification number or device_id ever
// reaches the provider. Senders: Queue (production, provider "fcm"),
// LogSender ("log": development, logs without the token), NoneSender ("none":
// phones poll), Recorder (tests).
//
// # The queue
//
// The queue is Shards Redis streams (default 16), {push:<n>:<k>}:jobs, on
// hash tags that a Cluster spreads over its masters (redis.go). Queue.Send
// records a login's pushes in its shard, chosen from the challenge id, in
// one round trip (a Lua script that also marks the login as queued in the
// same slot, so a retried enqueue adds nothing). Every replica runs
// Queue.Run: a member of the consumer group "senders" of every shard that
// reads pushes (read.go: one blocking reader per shard on a Cluster, which
// refuses a read across slots; one reader for all the shards on one Redis),
// sends each with Concurrency sends in flight at most (attempt.go), and
// acknowledges and deletes them in batches (ack.go). Leases, take-over,
// trimming and the hand-back at a stop work on each push's own shard
// (lease.go). A push is durable from the moment the IdP gets its 201: if
// the replica that created the login dies, any replica sends it. The one
// stream of the versions before the shards, {push}:jobs, is drained while it
// exists (legacy.go).
//
// States of one push (one device of one login):
//
//	queued ──(XREADGROUP: a replica takes it; it is in that replica's pending list)──▶ taken
//	taken ──(FCM accepts it)──▶ sent: XACK + XDEL
//	taken ──(FCM: token dead)──▶ token cleared on the device (audited), the device polls: XACK + XDEL
//	taken ──(FCM refuses the message otherwise: our bug or config)──▶ rejected, logged: XACK + XDEL
//	taken ──(transient or authentication error, time left)──▶ waiting (in memory) ──(backoff)──▶ taken
//	taken, waiting ──(less than MinTTL left before the login's expiry)──▶ dropped, never sent: XACK + XDEL
//	taken, waiting ──(the replica stops gracefully)──▶ queued again (copy added, original
//	                                                   acknowledged and deleted, one script;
//	                                                   a waiting push's copy keeps the time of
//	                                                   its retry, and the replica that takes it
//	                                                   waits until then)
//	taken, waiting ──(the replica died: idle for ClaimAfter)──▶ taken by another replica (XAUTOCLAIM)
//
// A replica renews its lease (XCLAIM to itself, when it still owns the
// entry) on what it holds every ClaimAfter/3, and one attempt lasts at most
// AttemptTimeout < ClaimAfter, so a live replica's pushes are never taken
// over and the service's own retries never send one push twice. A replica
// that dies between FCM's answer and the acknowledgement (a window of
// milliseconds) leaves a push that another replica sends again: delivery is
// at least once, and the app de-duplicates by challenge_id.
//
// # Attempts and errors
//
// Each attempt is one FCM v1 messages:send, bounded by AttemptTimeout and by
// the login's expiry, and carries the TTL left at that attempt (Android ttl;
// APNs apns-expiration is the expiry itself). Errors are classified from the
// SDK's error values before anything wraps them:
//
//   - transient (UNAVAILABLE, INTERNAL, QUOTA_EXCEEDED, HTTP 429 and 5xx,
//     timeouts, network): retried with exponential backoff and jitter, at
//     least the provider's Retry-After, while time is left;
//   - dead token (UNREGISTERED, SENDER_ID_MISMATCH, INVALID_ARGUMENT about
//     the token: "not a valid FCM registration token" or a field violation on
//     message.token): the device's token is cleared if it is still that one
//     (TokenClearer), its "push" flag turns false and it polls;
//   - authentication (401/403 from FCM, THIRD_PARTY_AUTH_ERROR from APNs, an
//     OAuth token that cannot be obtained): logged loudly, shown by Status on
//     /readyz and in ecps_push_auth_failing, and retried like a transient
//     error: pushes start again as soon as the credentials are fixed;
//   - any other refusal (INVALID_ARGUMENT about the payload, 404), or a
//     message the SDK refuses itself, before any request: logged as an
//     error, not retried, the token kept.
//
// The Firebase Admin SDK retries network errors and 503 by itself, with the
// message of its first try and holding the sender while it waits; FCM's HTTP
// client goes through attemptObserver, which ends the SDK's call at the first
// such answer, so that one attempt is one request and this package does the
// retrying.
package push
