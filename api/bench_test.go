package api

import (
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/redis/go-redis/v9"
)

// BenchmarkVerifyProof runs the whole device-proof middleware (parse, key
// lookup, ES256 verify, claims, jti and status in Redis) in front of an empty
// handler, with real Redis. Compare with BenchmarkVerifyBaseline: one P-256
// ecdsa.Verify plus one Redis round trip. Target: within 1.3x.
func BenchmarkVerifyProof(b *testing.B) {
	e := newEnv(b, 1)
	p := e.newDevice(subjectA)
	s := e.replicas[0].srv
	r := gin.New()
	r.Use(s.bodyCap)
	r.GET("/api/v1/device/bench", s.deviceAuth, func(c *gin.Context) { c.Status(http.StatusNoContent) })

	// Proofs are signed before the clock starts: each one is single use.
	proofs := make([]string, b.N)
	for i := range proofs {
		proofs[i] = p.proof(b, e.clock.Now(), "GET", "/api/v1/device/bench", nil)
	}
	req := httptest.NewRequest("GET", "/api/v1/device/bench", nil)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		req.Header.Set("Authorization", "ECPS-Proof "+proofs[i])
		w := httptest.NewRecorder()
		r.ServeHTTP(w, req)
		if w.Code != http.StatusNoContent {
			b.Fatalf("status %d: %s", w.Code, w.Body)
		}
	}
}

// BenchmarkVerifyBaseline is the floor of BenchmarkVerifyProof: one P-256
// signature verification and one Redis round trip (a SET NX with a TTL, as
// the jti check does).
func BenchmarkVerifyBaseline(b *testing.B) {
	e := newEnv(b, 1)
	p := newPhone(b)
	digest := sha256.Sum256([]byte("header.payload"))
	sig, err := ecdsa.SignASN1(rand.Reader, p.key, digest[:])
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	key := e.prefix + "bench"
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if !ecdsa.VerifyASN1(&p.key.PublicKey, digest[:], sig) {
			b.Fatal("verify")
		}
		if err := e.rdb.SetArgs(ctx, key, "1", redisSetNXPX).Err(); err != nil && err.Error() != "redis: nil" {
			b.Fatal(err)
		}
	}
}

var redisSetNXPX = redis.SetArgs{Mode: "NX", TTL: 120 * time.Second}
