package api

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ecps-sante/ecps/challenge"
	"github.com/ecps-sante/ecps/directory"
	"github.com/ecps-sante/ecps/enrollment"
	"github.com/ecps-sante/ecps/redistest"
)

// TestLoginCost counts what a push login costs Redis: the round trips the
// replica's client makes and the commands Redis runs (scripts' commands
// included, from INFO commandstats of a server of the test's own), for the
// IdP's create, the phone's list, the decision and the IdP's poll. Counts,
// not times: it cannot flake on a busy machine.
// With a directory loaded, the identity is read once, when the login is
// created (one more round trip there), and given by the poll with no read
// of its own.
func TestLoginCost(t *testing.T) {
	// Round trips: create 1, the phone's list with its proof 1, the
	// decision with its proof 1, the poll 1; the directory's lookup at
	// creation 1 more. Commands, scripts' included: today's count, so that
	// a change that adds one is seen (docs/performance.md).
	for _, tc := range []struct {
		name            string
		directory       bool
		trips, commands float64
	}{{"without-directory", false, 4, 28}, {"with-directory", true, 5, 29}} {
		t.Run(tc.name, func(t *testing.T) {
			rt, commands := loginCost(t, tc.directory)
			if rt > tc.trips {
				t.Errorf("%.2f round trips per login, want at most %v", rt, tc.trips)
			}
			if commands > tc.commands {
				t.Errorf("%.2f Redis commands per login, want at most %v", commands, tc.commands)
			}
		})
	}
}

func loginCost(t *testing.T, withDirectory bool) (roundTrips, commands float64) {
	srv := redistest.Start(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr(), ContextTimeoutEnabled: true})
	t.Cleanup(func() { rdb.Close() })
	trips := &redistest.RoundTrips{}
	rdb.AddHook(trips)
	prefix := redistest.Prefix()
	var dir *directory.Store
	if withDirectory {
		dir = directory.NewStore(rdb, directory.Options{KeyPrefix: prefix})
		f, err := os.Open("../directory/testdata/PS_LibreAcces_Personne_activite_202611150930.txt")
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if _, err := dir.Import(context.Background(), directory.Source{Activity: f}, directory.ImportOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	e := newEnvWith(t, rdb, prefix, 1, func(eo *enrollment.Options, o *challenge.Options) {
		o.PendingPerSubject = 1 << 30
		o.PushesPerSubject = 1 << 30
		if dir != nil {
			eo.Directory, o.Identities = dir, dir
		}
	})
	p := e.newPushDevice(subjectA)
	login := func() {
		c := e.createAuth(map[string]any{"login_hint": subjectA, "binding_message": "cost"})
		<-e.pushes.Jobs()
		r := e.call(e.url(), p, "GET", "/api/v1/device/challenges", nil)
		var list struct{ Challenges []map[string]any }
		_ = json.Unmarshal(r.Body, &list)
		if len(list.Challenges) != 1 {
			t.Fatalf("challenges %s", r.Body)
		}
		ch := list.Challenges[0]
		e.respond(0, p, ch["challenge_id"].(string), p.decision(t, e.clock.Now(), ch, "approve", c.VerificationNumber)).
			wantStatus(t, http.StatusNoContent)
		e.poll(0, c, "?wait=5").wantStatus(t, http.StatusOK)
	}
	login() // warm: scripts loaded, device key cached
	time.Sleep(100 * time.Millisecond)
	ctx := context.Background()
	before, err := redistest.CommandCalls(ctx, rdb)
	if err != nil {
		t.Fatal(err)
	}
	trips.Reset()
	const n = 20
	for range n {
		login()
	}
	rt := trips.N()
	time.Sleep(150 * time.Millisecond) // the audit copier's last batch
	after, err := redistest.CommandCalls(ctx, rdb)
	if err != nil {
		t.Fatal(err)
	}
	var total int64
	var parts []string
	for name, calls := range after {
		if d := calls - before[name]; d > 0 && name != "info" {
			total += d
			parts = append(parts, name+"="+strconvF(float64(d)/n))
		}
	}
	sort.Strings(parts)
	t.Logf("per login: %.2f round trips, %.2f commands (%s)", float64(rt)/n, float64(total)/n, strings.Join(parts, " "))
	return float64(rt) / n, float64(total) / n
}

func strconvF(f float64) string {
	b, _ := json.Marshal(float64(int(f*100+0.5)) / 100)
	return string(b)
}
