package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ecps-sante/ecps/push/fcmtest"
)

// fakeFCM is a push/fcmtest server played by the bench: the replicas send
// their pushes to it (push.fcm.endpoint = http://<addr>/v1, no
// credentials), and each push it accepts is handed to the phone whose
// token it carries, as FCM would deliver it.
//
// fcmtest listens on a port of its own choosing; to give the replicas a
// fixed endpoint, the bench accepts connections on addr and forwards them
// to it byte for byte.
type fakeFCM struct {
	srv       *fcmtest.Server
	ln        net.Listener
	byToken   sync.Map // token → *device
	delivered atomic.Int64
	unknown   atomic.Int64 // pushes for a token no phone of this run holds
	wg        sync.WaitGroup
}

// fcmAddr turns the -fcm value (http://host:port[/v1] or host:port) into a
// listen address.
func fcmAddr(v string) (string, error) {
	if !strings.Contains(v, "://") {
		v = "http://" + v
	}
	u, err := url.Parse(v)
	if err != nil || u.Scheme != "http" || u.Port() == "" {
		return "", fmt.Errorf("-fcm: want http://host:port (the replicas' push.fcm.endpoint without /v1), got %q", v)
	}
	return u.Host, nil
}

func startFakeFCM(addr, project string) (*fakeFCM, error) {
	f := &fakeFCM{srv: fcmtest.Start(project)}
	if addr != "" {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			f.srv.Close()
			return nil, fmt.Errorf("-fcm: %w", err)
		}
		f.ln = ln
		backend := strings.TrimPrefix(f.srv.URL(), "http://")
		f.wg.Add(1)
		go func() { defer f.wg.Done(); f.forward(backend) }()
	}
	return f, nil
}

// Endpoint is the base URL to configure as push.fcm.endpoint.
func (f *fakeFCM) Endpoint() string {
	if f.ln != nil {
		return "http://" + f.ln.Addr().String() + "/v1"
	}
	return f.srv.Endpoint()
}

func (f *fakeFCM) forward(backend string) {
	for {
		c, err := f.ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			b, err := net.Dial("tcp", backend)
			if err != nil {
				return
			}
			defer b.Close()
			done := make(chan struct{})
			go func() { _, _ = io.Copy(b, c); b.(*net.TCPConn).CloseWrite(); close(done) }()
			_, _ = io.Copy(c, b)
			c.(*net.TCPConn).CloseWrite()
			<-done
		}()
	}
}

func (f *fakeFCM) register(d *device) { f.byToken.Store(d.token, d) }

// run hands each accepted push to its phone until ctx ends. Pushes are
// picked up in batches, at most every 5 ms: fcmtest keeps every message
// it accepted and returns a copy of them all at each call, so each pick-up
// costs the bench in proportion to the pushes so far (and its memory grows
// by a message's size, about 2 KB, per push: fine for runs of minutes).
func (f *fakeFCM) run(ctx context.Context) {
	seen := 0
	for ctx.Err() == nil {
		msgs, _ := f.srv.WaitReceived(seen+1, 100*time.Millisecond)
		for _, m := range msgs[min(seen, len(msgs)):] {
			data, _ := m.Message["data"].(map[string]any)
			id, _ := data["challenge_id"].(string)
			v, ok := f.byToken.Load(m.Token)
			if !ok || id == "" {
				f.unknown.Add(1)
				continue
			}
			d := v.(*device)
			select {
			case d.subj.pushes <- pushNote{challengeID: id, dev: d}:
				f.delivered.Add(1)
			default: // nobody is reading: a late push of an ended login
			}
		}
		seen = max(seen, len(msgs))
		select {
		case <-ctx.Done():
		case <-time.After(5 * time.Millisecond):
		}
	}
}

func (f *fakeFCM) Close() {
	if f.ln != nil {
		f.ln.Close()
	}
	f.srv.Close()
	f.wg.Wait()
}

// Requests is how many requests the fake answered, and how many of them
// were refused (any status but 200).
func (f *fakeFCM) Requests() (total, refused int) {
	for _, r := range f.srv.Requests() {
		total++
		if r.Status != 200 {
			refused++
		}
	}
	return total, refused
}
