// Package enrollment activates new phones and keeps the devices of each
// practitioner, with their state in Redis.
//
// Activation states:
//
//	pending ──(right secret or code, key and proof good, under the device limit)──▶ used
//	pending ──(5th wrong secret or code)──▶ destroyed
//	pending ──(activation_ttl passes)──▶ expired (computed from expires_at)
//
// Only a wrong secret or code uses an attempt; a malformed request, a bad key
// or proof, a key already enrolled or the device limit leave the activation
// usable. An ended activation stays readable by the desk for 24 hours.
//
// Device states:
//
//	active ◀──▶ suspended      (desk: suspend / resume)
//	active, suspended ──▶ revoked   (desk or the practitioner; final)
//
// A public key is enrolled at most once, ever: its RFC 7638 thumbprint is
// claimed with SET NX and never released once a device holds it.
//
// Every check-and-change step is one Lua script on one hash tag, the
// practitioner's ({sub:<idNat>}), which also appends the audit entry of the
// change to the practitioner's audit stream in the same step. docs/redis.md
// lists the keys.
//
// A device is stored as JSON in the practitioner's devices hash: its
// descriptive part and its status, the source of truth, read and written by
// the rare steps (enrolment, suspend, resume, revoke, push tokens). The hot
// path never decodes it: beside it, package deviceindex keeps the active
// devices with their push tokens ({sub:<idNat>}:active, kept exact by every
// script that changes a status or a token, in the same run) and each
// device's last use ({sub:<idNat>}:used). A request proof's script checks
// the active hash, records the jti and writes the last use, all plain
// strings; only a device that is not active reads its JSON, to say why. The
// device list merges the last uses in Go, in the same round trip. An active
// hash without its marker (a Redis written before it existed) is built from
// the JSON by the first script that needs it.
//
// Round trips: an enrolment takes two (read the activation and claim the
// key; write the device pointer and run the enrolment script),
// one more per replica wait with redis.min_replicas_ack; a device request
// proof takes one once its device's public key is cached (keys are
// immutable), or none of its own: VerifyRequest checks it in memory and
// its Redis step (Proof) rides on the request's own pipeline, the phone's
// list and read of its challenges, or its decision, whose script runs only
// if the proof's jti holds the request's op (Proof.Accepted).
//
// Every step is safe to run twice (go-redis resends a command whose reply
// was lost; a phone sends a request again after a timeout): the device id
// derives from the activation and the key, a wrong attempt counts once per
// operation id, a proof's jti is recorded with the request it belongs to.
package enrollment
