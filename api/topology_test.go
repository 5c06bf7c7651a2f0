package api

import (
	"context"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ecps-sante/ecps/challenge"
	"github.com/ecps-sante/ecps/durable"
	"github.com/ecps-sante/ecps/enrollment"
	"github.com/ecps-sante/ecps/redistest"
)

// The whole contract flow on the topologies a deployment may use: a Redis
// Cluster (3 masters, 3 replicas: every multi-key step must stay on one
// hash tag, or Redis answers CROSSSLOT) and a Sentinel set, two replicas of
// the service each.

func TestFlowsOnCluster(t *testing.T) {
	cluster := redistest.StartCluster(t)
	rdb, prefix := cluster.Client(t)
	e := newEnvOn(t, rdb, prefix, 2)
	runFlows(t, e)
}

func TestFlowsOnSentinel(t *testing.T) {
	set := redistest.StartSentinel(t)
	rdb, prefix := set.Client(t)
	e := newEnvOn(t, rdb, prefix, 2)
	runFlows(t, e)
}

func runFlows(t *testing.T, e *env) {
	t.Helper()
	for _, f := range []flow{pushLogin, qrLogin, cancelledLogin} {
		t.Run(f.name, func(t *testing.T) {
			subject := adeliSubject()
			f.run(t, e, subject, func(string) {})
			checkAuditOnce(t, e, subject, f.events)
		})
	}
}

// TestLongPollAcrossSentinelFailover: the master stops answering (as if cut
// off), Sentinel fails over to the replica, and the old master comes back
// still believing it is the master. A long-poll waiting through it gets the
// decision taken on the new master within seconds, not when its wait ends:
// the hub's subscription, left on the old master, notices that its probes
// no longer reach it and subscribes again (to the new master).
func TestLongPollAcrossSentinelFailover(t *testing.T) {
	set := redistest.StartSentinel(t)
	rdb, prefix := set.Client(t)
	e := newEnvOn(t, rdb, prefix, 2)
	subject := adeliSubject()
	p := e.newDevice(subject)
	c := e.createAuth(map[string]any{"login_hint": subject})
	ch := e.pendingChallenge(p)

	result := make(chan response, 1)
	go func() { result <- e.poll(0, c, "?wait=30") }()
	waitFor(t, func() bool { return e.replicas[0].hub.Waiting() == 1 })

	// What was written so far is on the replica (replication is
	// asynchronous: without WAIT, a failover may lose the last writes).
	if err := rdb.Do(context.Background(), "WAIT", 1, 5000).Err(); err != nil {
		t.Fatal(err)
	}
	old := set.Master.Addr()
	set.Master.Pause()
	deadline := time.Now().Add(20 * time.Second)
	for {
		if addr, err := set.CurrentMaster(context.Background()); err == nil && addr != old {
			break
		}
		if time.Now().After(deadline) {
			set.Master.Resume()
			t.Fatal("no failover within 20 s")
		}
		time.Sleep(100 * time.Millisecond)
	}
	set.Master.Resume()

	// The decision, on whichever master the client now finds (retried
	// while go-redis moves over: a 503 is a contract answer).
	// The same signed decision each time: sent again, it answers as the first.
	jws := p.decision(t, e.clock.Now(), ch, "approve", c.VerificationNumber)
	var r response
	waitFor(t, func() bool {
		r = e.respond(1, p, ch["challenge_id"].(string), jws)
		return r.Status != http.StatusServiceUnavailable
	})
	r.wantStatus(t, http.StatusNoContent)
	decided := time.Now()
	select {
	case r := <-result:
		r.wantStatus(t, http.StatusOK)
		t.Logf("result %v after the decision", time.Since(decided).Round(time.Millisecond))
	case <-time.After(10 * time.Second):
		t.Fatal("the long-poll did not get the decision within 10 s of it: its wake-up was lost")
	}
}

// TestLongPollOnClusterUsesShardedChannels: on a Cluster the wake-ups go
// through sharded channels (SSUBSCRIBE / SPUBLISH), spread over the masters;
// a long-poll on one replica gets a decision taken through the other at once.
func TestLongPollOnClusterUsesShardedChannels(t *testing.T) {
	cluster := redistest.StartCluster(t)
	rdb, prefix := cluster.Client(t)
	e := newEnvOn(t, rdb, prefix, 2)
	ctx := context.Background()
	owners := map[string]bool{}
	waitFor(t, func() bool {
		clear(owners)
		for i := 0; i < 16; i++ {
			ch := prefix + "{auth-events:" + strconv.Itoa(i) + "}"
			slot, err := rdb.ClusterKeySlot(ctx, ch).Result()
			if err != nil {
				return false
			}
			subscribed := false
			for _, m := range cluster.Masters() {
				if !m.OwnsSlot(int(slot)) {
					continue
				}
				owners[m.Addr()] = true
				node := redis.NewClient(&redis.Options{Addr: m.Addr()})
				n, err := node.PubSubShardNumSub(ctx, ch).Result()
				node.Close()
				subscribed = err == nil && n[ch] == 2 // one subscription per replica, on the owner
			}
			if !subscribed {
				return false
			}
		}
		return true
	})
	if len(owners) != 3 {
		t.Fatalf("the 16 channels live on %d masters, want all 3", len(owners))
	}

	subject := adeliSubject()
	p := e.newDevice(subject)
	c := e.createAuth(map[string]any{"login_hint": subject})
	ch := e.pendingChallenge(p)
	result := make(chan response, 1)
	go func() { result <- e.poll(0, c, "?wait=30") }()
	waitFor(t, func() bool { return e.replicas[0].hub.Waiting() == 1 })
	e.respond(1, p, ch["challenge_id"].(string), p.decision(t, e.clock.Now(), ch, "approve", c.VerificationNumber)).
		wantStatus(t, http.StatusNoContent)
	select {
	case r := <-result:
		r.wantStatus(t, http.StatusOK)
	case <-time.After(10 * time.Second):
		t.Fatal("the long-poll did not get the decision: its wake-up was lost")
	}
}

// sentinelEnvDurable is two replicas on a Sentinel set, with enrolments and
// decisions waiting for one replica's acknowledgement (redis.min_replicas_ack: 1).
func sentinelEnvDurable(t *testing.T) (*env, *redistest.Sentinel, redis.UniversalClient) {
	set := redistest.StartSentinel(t)
	rdb, prefix := set.Client(t)
	// WAIT returns as soon as the replica acknowledges: the timeout only
	// bounds a wait that fails. 300 ms was too short on a loaded machine
	// (the enrolment before the failover answered 503 in a fresh-Debian run).
	acked := durable.New(rdb, 1, time.Second)
	e := newEnvWith(t, rdb, prefix, 2, func(eo *enrollment.Options, co *challenge.Options) {
		eo.Durable, co.Durable = acked, acked
	})
	return e, set, rdb
}

// TestDurableDecisionSurvivesFailover: a decision answered 204 is on the
// replica: the master killed right after it (SIGKILL, no time to
// replicate anything later), the login is still approved on the new master
// and delivered once. The same for the enrolment before it.
func TestDurableDecisionSurvivesFailover(t *testing.T) {
	e, set, _ := sentinelEnvDurable(t)
	subject := adeliSubject()
	p := e.newDevice(subject)
	c := e.createAuth(map[string]any{"login_hint": subject})
	ch := e.pendingChallenge(p)
	e.respond(1, p, ch["challenge_id"].(string), p.decision(t, e.clock.Now(), ch, "approve", c.VerificationNumber)).
		wantStatus(t, http.StatusNoContent)
	old := set.Master.Addr()
	set.Master.Stop() // SIGKILL
	deadline := time.Now().Add(20 * time.Second)
	for {
		if addr, err := set.CurrentMaster(context.Background()); err == nil && addr != old {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no failover within 20 s")
		}
		time.Sleep(100 * time.Millisecond)
	}
	// The killed master comes back (empty) as the new master's replica:
	// the delivering poll waits for a replica too. It comes back once
	// every sentinel knows the new master: one that did not would send a
	// new connection of the client to it, whose empty data says
	// invalid_grant (1 run in 5 before this wait).
	set.AwaitAgreedMaster()
	set.RestartOldMaster(context.Background())
	var r response
	deadline = time.Now().Add(40 * time.Second)
	for {
		r = e.poll(0, c, "")
		if r.Status != http.StatusServiceUnavailable || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
		e.clock.Advance(3 * time.Second) // the IdP's interval
	}
	r.wantStatus(t, http.StatusOK)
	e.clock.Advance(3 * time.Second)
	e.poll(1, c, "").wantError(t, http.StatusBadRequest, "invalid_grant")
	// The device, enrolled before, authenticates on the new master.
	e.call(e.url(), p, "GET", "/api/v1/device/devices", nil).wantStatus(t, http.StatusOK)
}

// TestDurableWithoutReplicaIs503: with the replica stopped, a decision
// cannot be acknowledged: the phone gets 503 unavailable (not 204), and the
// same decision sent again once the replica is back answers 204.
func TestDurableWithoutReplicaIs503(t *testing.T) {
	e, set, _ := sentinelEnvDurable(t)
	subject := adeliSubject()
	p := e.newDevice(subject)
	c := e.createAuth(map[string]any{"login_hint": subject})
	ch := e.pendingChallenge(p)
	jws := p.decision(t, e.clock.Now(), ch, "approve", c.VerificationNumber)
	set.Replica.Pause()
	r := e.respond(0, p, ch["challenge_id"].(string), jws)
	set.Replica.Resume()
	r.wantError(t, http.StatusServiceUnavailable, "unavailable")
	waitFor(t, func() bool {
		return e.respond(1, p, ch["challenge_id"].(string), jws).Status == http.StatusNoContent
	})
	e.poll(0, c, "").wantStatus(t, http.StatusOK)
}
