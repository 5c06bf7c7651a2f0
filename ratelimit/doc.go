// Package ratelimit limits requests per second per key (an IdP client id),
// with the limit shared by every replica of the service through Redis, and
// without a Redis round trip on the request path (Limiter); and failed
// attempts per key over a sliding window, exactly, at one Redis script per
// attempt (Failures, failures.go: desk sign-ins per client address, where a
// guessed key must meet the same limit on every replica).
//
// # Windows
//
// Time is cut into fixed one-second windows, the Unix seconds. Each replica
// keeps, per key, the current window and the previous one, and for each of
// them:
//
//   - local: the requests this replica allowed in that window;
//   - flushed: how many of them it has already added to Redis;
//   - others: the requests of the other replicas in that window, as last read
//     from Redis.
//
// # Request path: Allow
//
// Allow only takes a mutex and touches memory. A request is allowed when
// others + local < rps, and then counted in local; a refused request is not
// counted, so a client hammering a refusing replica does not eat the next
// replicas' share. A refusal comes with the time left until the next second,
// when a fresh window starts.
//
// # Sync: Run
//
// Run wakes every SyncEvery (100 ms by default) and sends, in one pipeline,
// for each key:
//
//   - the windows with new local counts (the current one, and the previous one
//     if it was not fully flushed before the second turned):
//     INCRBY <prefix>{rl:<key>}:<unix second> <local - flushed> and
//     EXPIRE … 5 s;
//   - the current window when it has nothing new: GET of the same key, so
//     that a replica that has stopped adding (it refuses) still learns what
//     the others did, and a key busy in the last second has its others known
//     before its first request of the new second.
//
// The total read back, minus what this replica has flushed to that window,
// is the others count. Others only grows within a window: a smaller reading
// (a key lost in a Redis restart) does not lower it.
//
// Each key of Redis is a single counter, so the pipeline works on a cluster
// too (go-redis splits it by slot); the hash tag keeps the windows of a key
// together.
//
// # Accuracy
//
// The limit is approximate. A replica alone never allows more than rps per
// key and second, but between two syncs each decides without knowing what
// the others did: with steady traffic the excess is about what the other
// replicas allow in one SyncEvery; in the worst case (a burst hitting every
// replica at once within SyncEvery, or a key new to them) it is up to
// replicas × rps. Windows are fixed, so up to 2 × rps can pass across a
// second boundary. A command whose reply was lost is sent again later, so a
// Redis hiccup can count some requests twice (stricter, not looser).
//
// # Redis failures
//
// When Redis fails, Run logs a warning at most once every 10 s and keeps
// going; the counts not flushed are sent at the next sync that works, as
// long as their window is still the current or the previous one. Allow never
// waits for Redis: it fails open on the others' share (the last value read,
// or zero), while the local count still limits each replica to rps. Each
// sync is bounded by a one-second timeout: a count older than that is no use.
//
// # Memory
//
// Windows older than the previous second are forgotten, and a key without a
// request (allowed or refused) in the current and previous seconds is dropped
// at the next sync, so
// memory follows the keys active in the last two seconds. This cleaning is
// done by Run, which must therefore be running.
package ratelimit
