// Package deviceproof verifies what a phone signs with its enrolled device
// key, with no storage and no HTTP: it is pure code, fuzzed and checked
// against another JOSE implementation's vectors (testdata/jose-vectors.json).
//
// Three kinds of compact JWS exist, told apart by their exact `typ`; one is
// never accepted as another:
//
//	ecps-enrol+jwt     {"activation_id","iat"}            signed by the key being enrolled
//	ecps-proof+jwt     {"htm","htu","iat","jti","bh"}     one per /api/v1/device/ request, kid = device_id
//	ecps-decision+jwt  {"challenge_id","nonce","decision","number","uv","iat"}, kid = device_id
//
// Verification order for a token: the header is decoded and `alg` must be
// exactly ES256 (read, checked, never trusted to pick an algorithm), `typ`
// must be exact; the caller resolves `kid` to a public key; the signature is
// verified (raw 64-byte R||S only, as RFC 7518 says); then the claims are
// checked against the clock and the request. Replay (`jti` seen before) is the
// caller's job, with storage. Every rejection carries a Reason, used as a
// metric label.
package deviceproof
