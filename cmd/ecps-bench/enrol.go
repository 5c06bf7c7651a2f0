package main

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// subject is one practitioner (idNat) and the phones enrolled for them. A
// login holds its subject from create to result: at most one pending login
// per subject, far below limits.pending_per_subject.
type subject struct {
	idnat   string
	devices []*device
	pushes  chan pushNote // challenges pushed to one of its devices

	// Owned by the login holding the subject:
	seen   [8]string   // recent challenge ids handled (late pushes of the same login are skipped)
	nseen  int         //
	recent []time.Time // push logins created, for limits.pushes_per_subject
}

func (s *subject) markSeen(id string) {
	s.seen[s.nseen%len(s.seen)] = id
	s.nseen++
}

func (s *subject) wasSeen(id string) bool {
	for _, v := range s.seen {
		if v == id {
			return true
		}
	}
	return false
}

// device is one enrolled phone.
type device struct {
	id    string
	sig   *signer
	token string // FCM registration token given at enrolment ("" without push)
	subj  *subject
}

// pushNote is a push the fake FCM received for a device.
type pushNote struct {
	challengeID string
	dev         *device
}

// rppsIDs returns n distinct valid RPPS idNats ("8" + 10 digits + Luhn
// check digit) from a random base, so that runs against the same Redis do
// not meet each other's devices.
func rppsIDs(n int) []string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	base := 1_000_000_000 + binary.BigEndian.Uint64(b[:])%(8_000_000_000-uint64(n))
	out := make([]string, n)
	for i := range out {
		digits := strconv.FormatUint(base+uint64(i), 10) // 10 digits
		out[i] = "8" + digits + string(rune('0'+luhnCheckDigit(digits)))
	}
	return out
}

// luhnCheckDigit is the digit that makes digits+digit pass the Luhn check.
func luhnCheckDigit(digits string) int {
	sum := 0
	for i := len(digits) - 1; i >= 0; i-- {
		d := int(digits[i] - '0')
		if (len(digits)-1-i)%2 == 0 { // every second digit from the right, starting next to the check digit
			d *= 2
			if d > 9 {
				d -= 9
			}
		}
		sum += d
	}
	return (10 - sum%10) % 10
}

// enrolAll enrols n devices, perSubject per practitioner, each through an
// activation (the desk's, or the IdP's activation scope) and the phone's
// enrolment, spread over the targets, with conc at a time.
func (b *bench) enrolAll(ctx context.Context, n, perSubject, conc int) ([]*subject, error) {
	ids := rppsIDs((n + perSubject - 1) / perSubject)
	subjects := make([]*subject, len(ids))
	type job struct {
		s *subject
		i int
	}
	jobs := make(chan job)
	for i, id := range ids {
		subjects[i] = &subject{idnat: id, pushes: make(chan pushNote, 16)}
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		mu       sync.Mutex
		firstErr error
		done     atomic.Int64
		wg       sync.WaitGroup
	)
	for w := 0; w < conc; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range jobs {
				d, err := b.enrolOne(ctx, j.s, j.i)
				mu.Lock()
				if err != nil && firstErr == nil {
					firstErr = err
					cancel()
				}
				if err == nil {
					j.s.devices = append(j.s.devices, d)
				}
				mu.Unlock()
				if k := done.Add(1); k%500 == 0 {
					b.logf("enrolled %d/%d devices", k, n)
				}
			}
		}()
	}
	k := 0
feed:
	for i := 0; i < n; i++ {
		select {
		case jobs <- job{subjects[i/perSubject], i}:
			k++
		case <-ctx.Done():
			break feed
		}
	}
	close(jobs)
	wg.Wait()
	if firstErr != nil {
		return nil, firstErr
	}
	if err := ctx.Err(); err != nil && k < n {
		return nil, err
	}
	return subjects, nil
}

// enrolOne: an activation for s, then the phone's enrolment with its secret.
func (b *bench) enrolOne(ctx context.Context, s *subject, i int) (*device, error) {
	target := b.targets[i%len(b.targets)]
	var r reply
	var err error
	if b.opts.enrolVia == "idp" {
		r, err = b.api.call(ctx, http.MethodPost, target+"/api/v1/activations", map[string]string{"subject": s.idnat}, idpAuth{b.api}, 0)
	} else {
		r, err = b.api.call(ctx, http.MethodPost, target+"/api/v1/desk/activations", map[string]string{"subject": s.idnat}, deskAuth{b.api}, 0)
	}
	if err != nil {
		return nil, fmt.Errorf("activation (%s): %w", b.opts.enrolVia, err)
	}
	if r.status != http.StatusCreated {
		return nil, fmt.Errorf("activation (%s) for %s: %s", b.opts.enrolVia, s.idnat, r.describe())
	}
	var act struct {
		ActivationID string `json:"activation_id"`
		EnrolURI     string `json:"enrol_uri"`
	}
	if err := json.Unmarshal(r.body, &act); err != nil {
		return nil, fmt.Errorf("activation answer: %w", err)
	}
	u, err := url.Parse(act.EnrolURI)
	if err != nil || u.Query().Get("s") == "" || u.Query().Get("a") != act.ActivationID {
		return nil, fmt.Errorf("activation answer: bad enrol_uri %q", act.EnrolURI)
	}
	sig, err := newSigner()
	if err != nil {
		return nil, err
	}
	jwk, err := sig.jwk()
	if err != nil {
		return nil, err
	}
	proof, err := sig.sign(typEnrolProof, map[string]any{"activation_id": act.ActivationID, "iat": time.Now().Unix()})
	if err != nil {
		return nil, err
	}
	d := &device{sig: sig, subj: s}
	body := map[string]any{
		"activation_id": act.ActivationID, "secret": u.Query().Get("s"), "public_key": jwk, "proof": proof,
		"platform": "android", "model": "ecps-bench", "app_version": "bench",
	}
	if b.fcm != nil {
		d.token = fmt.Sprintf("bench-%s-%d-%s", s.idnat, i, randomToken())
		body["push"] = map[string]string{"provider": "fcm", "token": d.token}
	}
	r, err = b.api.call(ctx, http.MethodPost, b.targets[(i+1)%len(b.targets)]+"/api/v1/enrollments", body, noAuth{}, 0)
	if err != nil {
		return nil, fmt.Errorf("enrolment: %w", err)
	}
	if r.status != http.StatusCreated {
		return nil, fmt.Errorf("enrolment for %s: %s", s.idnat, r.describe())
	}
	var enrolled struct {
		DeviceID string `json:"device_id"`
	}
	if err := json.Unmarshal(r.body, &enrolled); err != nil || enrolled.DeviceID == "" {
		return nil, fmt.Errorf("enrolment answer: %s", r.describe())
	}
	d.id = enrolled.DeviceID
	sig.kid = d.id
	if b.fcm != nil {
		b.fcm.register(d)
	}
	return d, nil
}

func randomToken() string {
	var t [12]byte
	_, _ = rand.Read(t[:])
	return b64.EncodeToString(t[:])
}
