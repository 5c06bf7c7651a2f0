package api

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ecps-sante/ecps/challenge"
	"github.com/ecps-sante/ecps/durable"
	"github.com/ecps-sante/ecps/enrollment"
	"github.com/ecps-sante/ecps/redistest"
)

// Master failures during a stream of logins: a master is killed (SIGKILL),
// Sentinel or the Cluster promotes its replica, and the killed node is
// started again (empty, as by a supervisor) and comes back as a replica.
// Enrolments, decisions and deliveries wait for one replica
// (redis.min_replicas_ack: 1), as a deployment on these topologies runs.

// failoverLoad is the load of these tests: loginWorkers practitioners, each
// running logins one after another on two replicas.
const loginWorkers = 6

// durableEnv is two replicas on rdb whose writes that must survive wait for
// one replica, with limits that a stream of logins never reaches.
func durableEnv(t *testing.T, rdb redis.UniversalClient, prefix string) *env {
	acked := durable.New(rdb, 1, 300*time.Millisecond)
	e := newEnvWith(t, rdb, prefix, 2, func(eo *enrollment.Options, co *challenge.Options) {
		eo.Durable, co.Durable = acked, acked
		co.PendingPerSubject, co.PushesPerSubject = 1000, 100000
		co.PollInterval = time.Second
	})
	followRealTime(t, e)
	return e
}

// failover is what a kill function reports.
type failover struct {
	killed   time.Time // the master got SIGKILL
	promoted time.Time // its replica was seen as the master
}

// runFailover runs the login stream, kills the master after a warm-up, goes
// on until 12 s after the promotion, and checks and reports: every answer
// a contract answer within its deadline, no approval delivered twice or
// without its audit entry, logins back within 10 s of the new master.
func runFailover(t *testing.T, e *env, kill func() failover) {
	var phones []*phone
	for range loginWorkers {
		phones = append(phones, e.newDevice(adeliSubject()))
	}
	lc := newLoadClient(t, e)
	stop := make(chan struct{})
	fo := make(chan failover, 1)
	go func() {
		time.Sleep(3 * time.Second)
		f := kill()
		fo <- f
		time.Sleep(time.Until(f.promoted.Add(12 * time.Second)))
		close(stop)
	}()
	runs := lc.loadStream(phones, stop, 15*time.Second)
	f := <-fo
	checkRuns(t, runs)
	checkLoginAudit(t, e, runs)

	// back: the start of the first login after the promotion from which on
	// every login went through.
	var back time.Time
	for _, r := range runs {
		if r.start.Before(f.promoted) {
			continue
		}
		if r.failed != "" {
			back = time.Time{}
		} else if back.IsZero() {
			back = r.start
		}
	}
	// The window: logins running at some time between the kill and back.
	end := back
	if end.IsZero() {
		end = time.Now()
	}
	var window, windowFailed int
	reasons := map[string]int{}
	for _, r := range runs {
		if r.start.Before(end) && r.end.After(f.killed) {
			window++
			if r.failed != "" {
				windowFailed++
				step, _, _ := strings.Cut(r.failed, ":")
				reasons[step]++
			}
		} else if r.failed != "" {
			t.Errorf("a login failed outside the failover window: %s", r.failed)
		}
	}
	rate := 0.0
	if window > 0 {
		rate = 100 * float64(windowFailed) / float64(window)
	}
	total, failed := 0, 0
	var all []answer
	for _, r := range runs {
		total++
		if r.failed != "" {
			failed++
		}
		all = append(all, r.answers...)
	}
	t.Logf("promoted %v after the kill; logins back %v after the promotion",
		f.promoted.Sub(f.killed).Round(time.Millisecond), durationOrNever(back, f.promoted))
	t.Logf("logins running between the kill and back: %d, %d failed (%.1f %%, failed at %v); over the whole run %d of %d failed (%.1f %%)",
		window, windowFailed, rate, reasons, failed, total, 100*float64(failed)/float64(max(total, 1)))
	t.Logf("answers %v; latency %s", statusCounts(all), latencies(all))
	for _, r := range runs {
		if r.failed != "" {
			t.Logf("failed login %v after the kill: %s", r.start.Sub(f.killed).Round(time.Millisecond), r.failed)
		}
	}
	if back.IsZero() || back.Sub(f.promoted) > 10*time.Second {
		t.Errorf("logins not back within 10 s of the new master (%v)", durationOrNever(back, f.promoted))
	}
}

func durationOrNever(t, from time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return t.Sub(from).Round(time.Millisecond).String()
}

// TestFailoverDuringLoginsOnSentinel: the Sentinel set's master is killed
// during the stream of logins.
func TestFailoverDuringLoginsOnSentinel(t *testing.T) {
	set := redistest.StartSentinel(t)
	rdb, prefix := set.Client(t)
	e := durableEnv(t, rdb, prefix)
	runFailover(t, e, func() failover {
		old := set.Master.Addr()
		f := failover{killed: time.Now()}
		set.Master.Stop()
		deadline := time.Now().Add(30 * time.Second)
		for {
			if addr, err := set.CurrentMaster(context.Background()); err == nil && addr != old {
				break
			}
			if time.Now().After(deadline) {
				t.Error("no Sentinel failover within 30 s")
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		f.promoted = time.Now()
		set.RestartOldMaster(context.Background()) // empty, a replica of the new master
		return f
	})
}

// TestFailoverDuringLoginsOnCluster: one of the Cluster's 3 masters is
// killed during the stream of logins; its replica takes over its slots.
func TestFailoverDuringLoginsOnCluster(t *testing.T) {
	cluster := redistest.StartCluster(t)
	rdb, prefix := cluster.Client(t)
	e := durableEnv(t, rdb, prefix)
	runFailover(t, e, func() failover {
		victim := cluster.Masters()[0]
		f := failover{killed: time.Now()}
		victim.Stop()
		deadline := time.Now().Add(30 * time.Second)
		for len(cluster.Masters()) < 3 || !cluster.StateOK() {
			if time.Now().After(deadline) {
				t.Error("no Cluster failover within 30 s")
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		f.promoted = time.Now()
		victim.Restart() // empty; it rejoins as the new master's replica
		return f
	})
}
