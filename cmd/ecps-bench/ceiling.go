package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// Crypto operations of one full push login: the phone signs two request
// proofs and the decision; the service verifies the same three.
const (
	signsPerLogin    = 3
	verifiesPerLogin = 3
)

// Ceiling is the machine's crypto ceiling: how many logins per second it
// could serve if everything but the ES256 signatures were free,
// cores / (3 verifies + 3 signs).
type Ceiling struct {
	Cores    int     `json:"cores"`
	SignUS   float64 `json:"sign_us"`   // one ES256 signature, µs of one core (wall time × cores / signatures)
	VerifyUS float64 `json:"verify_us"` // one ES256 verification, µs of one core
	// The same in CPU time (getrusage): what the operations cost, however
	// busy the machine is with other work.
	SignCPUUS        float64 `json:"sign_cpu_us"`
	VerifyCPUUS      float64 `json:"verify_cpu_us"`
	LoginsPerS       float64 `json:"logins_per_s"`
	MeasuredForS     float64 `json:"measured_for_s"`
	SignsPerLogin    int     `json:"signs_per_login"`
	VerifiesPerLogin int     `json:"verifies_per_login"`
}

// ceilingFrom is cores / (signs·sign + verifies·verify), with the per-op
// times in µs of one core.
func ceilingFrom(cores int, signUS, verifyUS float64) float64 {
	per := signsPerLogin*signUS + verifiesPerLogin*verifyUS
	if per <= 0 {
		return 0
	}
	return float64(cores) * 1e6 / per
}

// measureCeiling times ES256 signatures, then verifications, of a
// proof-sized message on every core (one goroutine per core), d/2 each.
// What it measures is what the machine gives now: on a shared machine the
// ceiling drops with the load, as the run's own throughput does.
func measureCeiling(ctx context.Context, d time.Duration) Ceiling {
	cores := runtime.NumCPU()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	msg := make([]byte, 300) // about a request proof's signing input
	_, _ = rand.Read(msg)
	sum := sha256.Sum256(msg)
	sig, _ := ecdsa.SignASN1(rand.Reader, key, sum[:])

	run := func(op func()) (wallUS, cpuUS float64) {
		var n atomic.Int64
		cpu0 := selfCPU()
		stop := make(chan struct{})
		var wg sync.WaitGroup
		start := time.Now()
		for range cores {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					select {
					case <-stop:
						return
					default:
					}
					op()
					n.Add(1)
				}
			}()
		}
		select {
		case <-time.After(d / 2):
		case <-ctx.Done():
		}
		close(stop)
		wg.Wait()
		elapsed := time.Since(start)
		if n.Load() == 0 {
			return 0, 0
		}
		ops := float64(n.Load())
		return float64(cores) * float64(elapsed.Microseconds()) / ops, (selfCPU() - cpu0) * 1e6 / ops
	}
	start := time.Now()
	signUS, signCPU := run(func() {
		h := sha256.Sum256(msg)
		_, _ = ecdsa.SignASN1(rand.Reader, key, h[:])
	})
	verifyUS, verifyCPU := run(func() {
		h := sha256.Sum256(msg)
		_ = ecdsa.VerifyASN1(&key.PublicKey, h[:], sig)
	})
	return Ceiling{
		Cores: cores, SignUS: round3(signUS), VerifyUS: round3(verifyUS), SignCPUUS: round3(signCPU), VerifyCPUUS: round3(verifyCPU),
		LoginsPerS:    round3(ceilingFrom(cores, signUS, verifyUS)),
		MeasuredForS:  round3(time.Since(start).Seconds()),
		SignsPerLogin: signsPerLogin, VerifiesPerLogin: verifiesPerLogin,
	}
}
