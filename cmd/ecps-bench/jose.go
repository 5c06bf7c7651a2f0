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
	"math/big"
	"time"
)

// JWS "typ" values of the wire contract (PROTOCOL.md, JWS headers).
const (
	typEnrolProof   = "ecps-enrol+jwt"
	typRequestProof = "ecps-proof+jwt"
	typDecision     = "ecps-decision+jwt"
)

var b64 = base64.RawURLEncoding

// signer makes the compact ES256 JWSs of one device key: the enrolment
// proof, request proofs and decisions. It is written by hand (not with
// go-jose) so that the phones played by the bench spend on each JWS little
// more than the ECDSA signature: they share the machine with the service.
type signer struct {
	key *ecdsa.PrivateKey
	kid string // the device id, once enrolled
}

func newSigner() (*signer, error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	return &signer{key: k}, nil
}

// jwk is the public key as sent at enrolment.
func (s *signer) jwk() (map[string]string, error) {
	point, err := s.key.PublicKey.Bytes() // 0x04 ‖ X ‖ Y
	if err != nil || len(point) != 65 {
		return nil, fmt.Errorf("encode public key: %v", err)
	}
	return map[string]string{"kty": "EC", "crv": "P-256", "x": b64.EncodeToString(point[1:33]), "y": b64.EncodeToString(point[33:])}, nil
}

// sign returns the compact JWS of claims with the header
// {"alg":"ES256","typ":typ} plus "kid" when the device has one (never for
// the enrolment proof). The signature is R‖S, 32 bytes each (RFC 7518 §3.4).
func (s *signer) sign(typ string, claims any) (string, error) {
	hdr := map[string]string{"alg": "ES256", "typ": typ}
	if s.kid != "" && typ != typEnrolProof {
		hdr["kid"] = s.kid
	}
	h, err := json.Marshal(hdr)
	if err != nil {
		return "", err
	}
	p, err := json.Marshal(claims)
	if err != nil {
		return "", fmt.Errorf("encode claims: %w", err)
	}
	input := b64.EncodeToString(h) + "." + b64.EncodeToString(p)
	sum := sha256.Sum256([]byte(input))
	r, ss, err := ecdsa.Sign(rand.Reader, s.key, sum[:])
	if err != nil {
		return "", err
	}
	var sig [64]byte
	r.FillBytes(sig[:32])
	ss.FillBytes(sig[32:])
	return input + "." + b64.EncodeToString(sig[:]), nil
}

// proof is the Authorization value of one request under /api/v1/device/.
func (s *signer) proof(method, path string, body []byte, now time.Time) (string, error) {
	if s.kid == "" {
		return "", errors.New("device not enrolled")
	}
	var jti [16]byte
	if _, err := rand.Read(jti[:]); err != nil {
		return "", err
	}
	bh := sha256.Sum256(body)
	jws, err := s.sign(typRequestProof, map[string]any{
		"htm": method, "htu": path, "iat": now.Unix(), "jti": b64.EncodeToString(jti[:]), "bh": b64.EncodeToString(bh[:]),
	})
	if err != nil {
		return "", err
	}
	return "ECPS-Proof " + jws, nil
}

// verifyES256 checks a compact JWS's signature with pub (the ceiling's
// verify, and the tests').
func verifyES256(pub *ecdsa.PublicKey, jws string) bool {
	dot2 := -1
	for i := len(jws) - 1; i >= 0; i-- {
		if jws[i] == '.' {
			dot2 = i
			break
		}
	}
	if dot2 < 0 {
		return false
	}
	sig, err := b64.DecodeString(jws[dot2+1:])
	if err != nil || len(sig) != 64 {
		return false
	}
	sum := sha256.Sum256([]byte(jws[:dot2]))
	return ecdsa.Verify(pub, sum[:], new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:]))
}
