package api

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ecps-sante/ecps/redistest"
)

// TestAOFKeepsAcknowledgedEnrolments: a stream of enrolments (4 desks and
// phones at once) on a Redis with AOF, killed (SIGKILL) in the middle and
// started again on its files: every enrolment answered 201 is there after
// the restart with appendfsync always, and the loss with everysec is
// measured (logged; docs/reliability.md). A SIGKILL of the process loses
// nothing that Redis wrote to its file before answering, fsynced or not;
// what everysec risks is the last second of writes on a crash of the
// machine itself, which no test here can cause.
func TestAOFKeepsAcknowledgedEnrolments(t *testing.T) {
	for _, policy := range []string{"everysec", "always"} {
		t.Run(policy, func(t *testing.T) {
			srv := redistest.StartWith(t, "--appendonly", "yes", "--appendfsync", policy)
			rdb := redis.NewClient(&redis.Options{Addr: srv.Addr(), ReadTimeout: time.Second, WriteTimeout: time.Second,
				DialTimeout: time.Second, ContextTimeoutEnabled: true})
			t.Cleanup(func() { _ = rdb.Close() })
			prefix := redistest.Prefix()
			e := newEnvOn(t, rdb, prefix, 1)
			lc := newLoadClient(t, e)
			type enrolled struct{ subject, device string }
			var mu sync.Mutex
			var acked []enrolled
			sent, failed := 0, 0
			stop := make(chan struct{})
			var wg sync.WaitGroup
			for range 4 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for {
						select {
						case <-stop:
							return
						default:
						}
						subject := adeliSubject()
						body, _ := json.Marshal(map[string]string{"subject": subject})
						r := lc.send("activation", 0, DefaultRequestBudget, "POST", "/api/v1/desk/activations", body, deskHeader())
						if r.status != http.StatusCreated {
							continue
						}
						var a activation
						_ = json.Unmarshal(r.body, &a)
						u, _ := url.Parse(a.EnrolURI)
						a.Secret = u.Query().Get("s")
						p := newPhone(t)
						b, _ := json.Marshal(p.enrolBody(t, e, a))
						r = lc.send("enrol", 0, DefaultRequestBudget, "POST", "/api/v1/enrollments", b, nil)
						mu.Lock()
						sent++
						if r.status == http.StatusCreated {
							var m map[string]any
							_ = json.Unmarshal(r.body, &m)
							acked = append(acked, enrolled{subject, m["device_id"].(string)})
						} else {
							failed++
						}
						mu.Unlock()
					}
				}()
			}
			time.Sleep(1500 * time.Millisecond)
			srv.Stop() // SIGKILL, enrolments in flight
			killed := time.Now()
			time.Sleep(200 * time.Millisecond)
			close(stop)
			wg.Wait()
			srv.Restart() // on its AOF
			ctx := context.Background()
			waitFor(t, func() bool { return rdb.Ping(ctx).Err() == nil })
			lost := 0
			for _, en := range acked {
				ok, err := rdb.HExists(ctx, prefix+"{sub:"+en.subject+"}:devices", en.device).Result()
				if err != nil {
					t.Fatal(err)
				}
				if !ok {
					lost++
				}
			}
			t.Logf("appendfsync %s: %d enrolments sent, %d answered 201, %d not (in flight at the kill %v); after the restart %d of the %d acknowledged lost",
				policy, sent, len(acked), failed, killed.Format("15:04:05.000"), lost, len(acked))
			if len(acked) == 0 {
				t.Fatal("no enrolment went through before the kill")
			}
			if policy == "always" && lost > 0 {
				t.Errorf("appendfsync always lost %d acknowledged enrolments", lost)
			}
		})
	}
}
