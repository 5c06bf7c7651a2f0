package enrollment

import "errors"

// Errors carry meaning only; the HTTP layer maps them to the contract's codes.
var (
	// ErrInvalid: the request's shape is wrong (wrapped with a description
	// that holds no personal data).
	ErrInvalid = errors.New("invalid request")
	// ErrUnknownActivation: no activation has this id (or it is long gone).
	ErrUnknownActivation = errors.New("unknown activation")
	// ErrWrongSecret: the secret or code does not match; an attempt was used.
	ErrWrongSecret = errors.New("wrong activation secret or code")
	// ErrActivationEnded: the activation is expired, used or destroyed.
	ErrActivationEnded = errors.New("activation expired, used or destroyed")
	// ErrDeviceLimit: the practitioner already has the maximum of devices.
	ErrDeviceLimit = errors.New("device limit reached")
	// ErrKeyEnrolled: this public key is already enrolled.
	ErrKeyEnrolled = errors.New("public key already enrolled")
	// ErrNotFound: no such device or activation (or another practitioner's).
	ErrNotFound = errors.New("not found")
	// ErrRevoked: the device is revoked; it cannot be suspended or resumed.
	ErrRevoked = errors.New("device revoked")
	// ErrUnknownUser: a directory is loaded and the practitioner is absent
	// from it: no activation for them.
	ErrUnknownUser = errors.New("practitioner absent from the directory")
)
