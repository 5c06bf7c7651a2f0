package api

import (
	"testing"

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
