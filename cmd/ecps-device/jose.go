package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// JWS "typ" values of the wire contract. Each is exact and case-sensitive.
const (
	typEnrolProof   = "ecps-enrol+jwt"
	typRequestProof = "ecps-proof+jwt"
	typDecision     = "ecps-decision+jwt"
)

// ecJWK is the public key as sent at enrolment: exactly kty, crv, x, y.
type ecJWK struct {
	Kty string `json:"kty"`
	Crv string `json:"crv"`
	X   string `json:"x"`
	Y   string `json:"y"`
}

// enrolClaims is the payload of the enrolment proof.
type enrolClaims struct {
	ActivationID string `json:"activation_id"`
	Iat          int64  `json:"iat"`
}

// proofClaims is the payload of the per-request proof (Authorization: ECPS-Proof).
type proofClaims struct {
	Htm string `json:"htm"`
	Htu string `json:"htu"`
	Iat int64  `json:"iat"`
	Jti string `json:"jti"`
	Bh  string `json:"bh"`
}

// newDeviceKey generates the device key: ECDSA P-256, the only curve the service accepts.
func newDeviceKey() (*ecdsa.PrivateKey, error) {
	return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
}

// publicJWK encodes a P-256 public key as a JWK with 32-byte, unpadded base64url coordinates.
func publicJWK(pub *ecdsa.PublicKey) (ecJWK, error) {
	if pub == nil || pub.Curve != elliptic.P256() {
		return ecJWK{}, errors.New("public key is not on P-256")
	}
	point, err := pub.Bytes() // 0x04 || X (32 bytes) || Y (32 bytes)
	if err != nil {
		return ecJWK{}, fmt.Errorf("encode public key: %w", err)
	}
	if len(point) != 65 || point[0] != 4 {
		return ecJWK{}, errors.New("unexpected P-256 point encoding")
	}
	return ecJWK{
		Kty: "EC",
		Crv: "P-256",
		X:   base64.RawURLEncoding.EncodeToString(point[1:33]),
		Y:   base64.RawURLEncoding.EncodeToString(point[33:65]),
	}, nil
}

// signJWS signs claims as a compact ES256 JWS whose protected header is exactly
// {"alg":"ES256","typ":typ} plus "kid" when kid is not empty.
func signJWS(key *ecdsa.PrivateKey, typ, kid string, claims any) (string, error) {
	if key == nil {
		return "", errors.New("no signing key")
	}
	payload, err := json.Marshal(claims)
	if err != nil {
		return "", fmt.Errorf("encode claims: %w", err)
	}
	opts := &jose.SignerOptions{}
	opts.WithHeader(jose.HeaderType, typ)
	if kid != "" {
		opts.WithHeader("kid", kid)
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: key}, opts)
	if err != nil {
		return "", fmt.Errorf("create signer: %w", err)
	}
	obj, err := signer.Sign(payload)
	if err != nil {
		return "", fmt.Errorf("sign: %w", err)
	}
	return obj.CompactSerialize()
}

// enrolProof is the proof of possession sent at enrolment (no kid: the device has no id yet).
func enrolProof(key *ecdsa.PrivateKey, activationID string, now time.Time) (string, error) {
	return signJWS(key, typEnrolProof, "", enrolClaims{ActivationID: activationID, Iat: now.Unix()})
}

// requestProof is the value after "ECPS-Proof " for one request under /api/v1/device/.
// path is the request path without query; body the exact bytes sent (nil for none).
func requestProof(key *ecdsa.PrivateKey, deviceID, method, path string, body []byte, now time.Time) (string, error) {
	jti, err := newJTI()
	if err != nil {
		return "", err
	}
	return signJWS(key, typRequestProof, deviceID, proofClaims{
		Htm: method,
		Htu: path,
		Iat: now.Unix(),
		Jti: jti,
		Bh:  bodyHash(body),
	})
}

// bodyHash is the unpadded base64url SHA-256 of the body (of "" when there is none).
func bodyHash(body []byte) string {
	sum := sha256.Sum256(body)
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// newJTI returns 128 random bits, base64url without padding.
func newJTI() (string, error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("random jti: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}
