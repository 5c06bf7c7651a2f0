package api

import (
	"testing"
	"time"

	"github.com/ecps-sante/ecps/challenge"
	"github.com/ecps-sante/ecps/enrollment"
	"github.com/ecps-sante/ecps/redistest"
)

// netFault is a fault of the network between the replicas and Redis, put
// on and taken off the proxy.
type netFault struct {
	name string
	on   func(p *redistest.FaultProxy, stop <-chan struct{})
	off  func(p *redistest.FaultProxy)
}

var netFaults = []netFault{
	{name: "latency-250ms", on: func(p *redistest.FaultProxy, _ <-chan struct{}) { p.Delay(250 * time.Millisecond) },
		off: func(p *redistest.FaultProxy) { p.Delay(0) }},
	{name: "latency-1500ms", on: func(p *redistest.FaultProxy, _ <-chan struct{}) { p.Delay(1500 * time.Millisecond) },
		off: func(p *redistest.FaultProxy) { p.Delay(0) }},
	{name: "stall", on: func(p *redistest.FaultProxy, _ <-chan struct{}) { p.Stall() },
		off: func(p *redistest.FaultProxy) { p.Unstall() }},
	{name: "reset-mid-reply", on: func(p *redistest.FaultProxy, stop <-chan struct{}) {
		// About one reply in ten cut in the middle, all along the fault.
		go func() {
			tick := time.NewTicker(20 * time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case <-stop:
					p.ResetMidReply(0)
					return
				case <-tick.C:
					p.ResetMidReply(1)
				}
			}
		}()
	}, off: func(p *redistest.FaultProxy) {}},
	{name: "refused", on: func(p *redistest.FaultProxy, _ <-chan struct{}) { p.Refuse(true, true) },
		off: func(p *redistest.FaultProxy) { p.Refuse(false, false) }},
}

// TestNetworkFaults runs a stream of push logins (4 IdP/phone pairs, two
// replicas) while the network to Redis misbehaves for 3 s: latency, a
// stall, replies cut in the middle, refused connections. Invariants: every
// request ends within its deadline with a contract answer (503 unavailable
// when Redis cannot answer, never a 500, a hang or a wrong answer such as a
// 409 for a resent decision or a 401 for a valid proof); no login is created
// or decided twice in the audit when commands are resent; no approval is
// delivered twice or without its audit entry; logins work again once the
// fault ends. The latency under each fault is logged.
func TestNetworkFaults(t *testing.T) {
	e, proxy := proxiedEnvWith(t, func(_ *enrollment.Options, o *challenge.Options) {
		o.PendingPerSubject, o.PushesPerSubject = 1000, 100000
		o.PollInterval = time.Second
	})
	followRealTime(t, e)
	lc := newLoadClient(t, e)
	var phones []*phone
	for range 6 {
		phones = append(phones, e.newDevice(adeliSubject()))
	}
	const (
		before   = 500 * time.Millisecond
		duration = 3 * time.Second
		after    = 3 * time.Second
	)
	for _, f := range netFaults {
		t.Run(f.name, func(t *testing.T) {
			stop := make(chan struct{})
			faultStop := make(chan struct{})
			var on, off time.Time
			go func() {
				time.Sleep(before)
				on = time.Now()
				f.on(proxy, faultStop)
				time.Sleep(duration)
				close(faultStop)
				f.off(proxy)
				off = time.Now()
				time.Sleep(after)
				close(stop)
			}()
			probed := make(chan []answer, 1)
			go func() { probed <- lc.probeStream(phones[0], stop) }()
			runs := lc.loadStream(phones, stop, duration+after)
			probes := <-probed
			runs = append(runs, loginRun{subject: phones[0].subject, answers: probes, failed: "probe"})
			checkRuns(t, runs)
			checkLoginAudit(t, e, runs)

			var during, rest []answer
			failed, recovered := 0, 0
			for _, r := range runs {
				for _, a := range r.answers {
					if a.at.After(on) && a.at.Before(off) {
						during = append(during, a)
					} else {
						rest = append(rest, a)
					}
				}
				if r.failed == "probe" {
					continue
				}
				if r.failed != "" {
					failed++
				} else if r.start.After(off) {
					recovered++
				}
			}
			t.Logf("%s: %d logins, %d failed; requests during the fault: %s %v; outside it: %s",
				f.name, len(runs)-1, failed, latencies(during), statusCounts(during), latencies(rest))
			if recovered == 0 {
				t.Errorf("no login started after the fault ended went through")
			}
		})
	}
	if n := e.metric(0, "redis_errors"); n == 0 {
		t.Errorf("no Redis error counted: the faults did not reach the service")
	}
}
