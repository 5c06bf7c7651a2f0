package redistest

import (
	"bufio"
	"crypto/sha1"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// FaultProxy is a TCP proxy between a Redis client and a redis-server that
// loses replies on demand: it lets a chosen command through, waits for
// Redis's reply, and then closes the client's connection instead of passing
// the reply on. To the client this is a network failure after its write,
// which go-redis answers by sending the command again: the change is then
// made, and its answer lost, before the resend.
//
// It reads both directions as RESP (2 and 3), so it knows which reply
// belongs to which command, pipelines included.
//
// Besides lost replies it has the other faults of a network between a
// service and its Redis: Delay (latency), Stall (nothing passes, in either
// direction, until Unstall: a partition that keeps the connections open),
// ResetMidReply (part of a reply, then the connection closes) and Refuse
// (new connections are reset at once, as by a server that is gone).
type FaultProxy struct {
	t      testing.TB
	target string
	ln     net.Listener

	mu      sync.Mutex
	match   func(cmd []string) bool
	skip    int           // matching commands to let through before the next drop
	drops   int           // drops left
	delay   time.Duration // added before every reply
	stalled chan struct{} // non-nil while stalled: closed by Unstall
	resets  int           // replies to cut in the middle, from the next one on
	cut     int           // replies cut so far
	refuse  bool          // reset new connections at once
	refused int           // connections reset so far
	seen    [][]string    // every command, for Count
	dropped []string      // the commands whose reply was lost
	conns   map[net.Conn]struct{}
	scripts map[string]string // SHA-1 -> body of the scripts seen in EVAL
}

// NewFaultProxy listens on a loopback port and forwards to target (host:port);
// it stops when the test ends.
func NewFaultProxy(t testing.TB, target string) *FaultProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &FaultProxy{t: t, target: target, ln: ln, conns: map[net.Conn]struct{}{}, scripts: map[string]string{}}
	go p.accept()
	t.Cleanup(p.close)
	return p
}

// Addr is the proxy's host:port.
func (p *FaultProxy) Addr() string { return p.ln.Addr().String() }

// DropReply arms the proxy: of the commands from now on for which match is
// true, the n-th (1-based) has its reply lost. It replaces an earlier arming.
func (p *FaultProxy) DropReply(match func(cmd []string) bool, n int) {
	p.DropReplies(match, n, 1)
}

// DropReplies is DropReply for the n-th matching command and the times-1
// matching commands after it: with times 4, a command and go-redis's three
// resends of it all lose their reply, and the client's request fails.
func (p *FaultProxy) DropReplies(match func(cmd []string) bool, n, times int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.match, p.skip, p.drops = match, n-1, times
}

// ScriptWith returns a matcher of the script calls (EVAL, or EVALSHA of a
// script this proxy has seen in an EVAL or a SCRIPT LOAD) whose body
// contains part. Use a redis-server whose script cache starts empty.
func (p *FaultProxy) ScriptWith(part string) func(cmd []string) bool {
	return func(cmd []string) bool {
		if len(cmd) < 2 {
			return false
		}
		switch strings.ToUpper(cmd[0]) {
		case "EVAL":
			return strings.Contains(cmd[1], part)
		case "EVALSHA":
			return strings.Contains(p.scripts[strings.ToLower(cmd[1])], part) // under p.mu (fateOf)
		}
		return false
	}
}

// Disarm cancels a drop that has not happened yet.
func (p *FaultProxy) Disarm() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.drops = 0
}

// Dropped returns the commands (name and first key or argument) whose reply
// was lost, and forgets them.
func (p *FaultProxy) Dropped() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := p.dropped
	p.dropped = nil
	return out
}

// Delay holds every reply for d before passing it on (0: none).
func (p *FaultProxy) Delay(d time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.delay = d
}

// Stall stops forwarding in both directions: commands and replies wait in
// the proxy (the connections stay open) until Unstall lets them through.
// To the client, Redis has stopped answering, as behind a partition.
func (p *FaultProxy) Stall() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stalled == nil {
		p.stalled = make(chan struct{})
	}
}

// Unstall lets what waited through, in order.
func (p *FaultProxy) Unstall() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stalled != nil {
		close(p.stalled)
		p.stalled = nil
	}
}

// waitStall blocks while the proxy is stalled.
func (p *FaultProxy) waitStall() {
	p.mu.Lock()
	c := p.stalled
	p.mu.Unlock()
	if c != nil {
		<-c
	}
}

// ResetMidReply cuts the next n replies (of any command but pub/sub): the
// first half of each reply's bytes is passed on, then the connection is
// reset. The command ran; the client reads a truncated reply and an error.
func (p *FaultProxy) ResetMidReply(n int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.resets = n
}

// Cut returns how many replies ResetMidReply has cut so far.
func (p *FaultProxy) Cut() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cut
}

// Refuse makes every new connection reset at once (RST) while on; with
// dropOpen, the open connections are reset too. To the client, Redis is
// gone: every dial fails until Refuse(false, …).
func (p *FaultProxy) Refuse(on, dropOpen bool) {
	p.mu.Lock()
	p.refuse = on
	var open []net.Conn
	if dropOpen {
		for c := range p.conns {
			open = append(open, c)
		}
	}
	p.mu.Unlock()
	for _, c := range open {
		reset(c)
	}
}

// Refused returns how many connections Refuse has reset at accept.
func (p *FaultProxy) Refused() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.refused
}

// reset closes c with an RST rather than a FIN.
func reset(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = c.Close()
}

// Count returns how many commands for which match is true went through.
func (p *FaultProxy) Count(match func(cmd []string) bool) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, cmd := range p.seen {
		if match(cmd) {
			n++
		}
	}
	return n
}

// IsScript reports whether cmd runs a script: the state changes of this
// service.
func IsScript(cmd []string) bool {
	name := strings.ToUpper(cmd[0])
	return name == "EVALSHA" || name == "EVAL"
}

// IsCommand reports whether cmd is an ordinary command: not part of a
// connection's set-up (HELLO, CLIENT, PING, SELECT, AUTH) nor of pub/sub.
func IsCommand(cmd []string) bool {
	switch strings.ToUpper(cmd[0]) {
	case "HELLO", "CLIENT", "PING", "SELECT", "AUTH", "QUIT":
		return false
	}
	return !isPubSub(cmd)
}

func isPubSub(cmd []string) bool {
	switch strings.ToUpper(cmd[0]) {
	case "SUBSCRIBE", "PSUBSCRIBE", "SSUBSCRIBE", "UNSUBSCRIBE", "PUNSUBSCRIBE", "SUNSUBSCRIBE":
		return true
	}
	return false
}

func (p *FaultProxy) close() {
	p.ln.Close()
	p.mu.Lock()
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
}

func (p *FaultProxy) accept() {
	for {
		client, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		refuse := p.refuse
		if refuse {
			p.refused++
		}
		p.mu.Unlock()
		if refuse {
			reset(client)
			continue
		}
		server, err := net.Dial("tcp", p.target)
		if err != nil {
			client.Close()
			continue
		}
		p.mu.Lock()
		p.conns[client], p.conns[server] = struct{}{}, struct{}{}
		p.mu.Unlock()
		go p.serve(client, server)
	}
}

// fate is what happens to one command's reply.
type fate struct {
	drop bool
	cut  bool // pass half the reply on, then reset
	what string
}

func (p *FaultProxy) serve(client, server net.Conn) {
	fates := make(chan fate, 1<<16)
	hangUp := func() {
		client.Close()
		server.Close()
		p.mu.Lock()
		delete(p.conns, client)
		delete(p.conns, server)
		p.mu.Unlock()
	}
	// Commands: client -> server, each given its reply's fate first.
	go func() {
		defer hangUp()
		r := bufio.NewReader(client)
		for {
			raw, args, err := readRESP(r)
			if err != nil {
				return
			}
			if len(args) > 0 && !isPubSub(args) {
				fates <- p.fateOf(args)
			}
			p.waitStall()
			if _, err := server.Write(raw); err != nil {
				return
			}
		}
	}()
	// Replies: server -> client, unless lost.
	defer hangUp()
	r := bufio.NewReader(server)
	for {
		raw, _, err := readRESP(r)
		if err != nil {
			return
		}
		p.waitStall()
		if raw[0] == '>' { // RESP3 push (pub/sub): no command of its own
			if _, err := client.Write(raw); err != nil {
				return
			}
			continue
		}
		var f fate
		select {
		case f = <-fates:
		default: // a reply to a pub/sub command (RESP2)
		}
		if f.drop {
			p.mu.Lock()
			p.dropped = append(p.dropped, f.what)
			p.mu.Unlock()
			return
		}
		if f.cut {
			_, _ = client.Write(raw[:len(raw)/2])
			reset(client)
			return
		}
		p.mu.Lock()
		d := p.delay
		p.mu.Unlock()
		if d > 0 {
			time.Sleep(d)
		}
		if _, err := client.Write(raw); err != nil {
			return
		}
	}
}

func (p *FaultProxy) fateOf(args []string) fate {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.seen = append(p.seen, args)
	switch {
	case strings.EqualFold(args[0], "EVAL") && len(args) > 1:
		p.scripts[fmt.Sprintf("%x", sha1.Sum([]byte(args[1])))] = args[1]
	case strings.EqualFold(args[0], "SCRIPT") && len(args) > 2 && strings.EqualFold(args[1], "LOAD"):
		p.scripts[fmt.Sprintf("%x", sha1.Sum([]byte(args[2])))] = args[2]
	}
	if p.resets > 0 && IsCommand(args) {
		p.resets--
		p.cut++
		return fate{cut: true, what: strings.ToUpper(args[0])}
	}
	if p.drops == 0 || p.match == nil || !p.match(args) {
		return fate{}
	}
	if p.skip > 0 {
		p.skip--
		return fate{}
	}
	p.drops--
	what := strings.ToUpper(args[0])
	if len(args) > 1 {
		what += " " + args[1]
	}
	return fate{drop: true, what: what}
}

// readRESP reads one RESP2/RESP3 value and returns its bytes and, for an
// array of strings (a command), its items.
func readRESP(r *bufio.Reader) (raw []byte, args []string, err error) {
	var buf []byte
	var items []string
	var read func(top bool) error
	read = func(top bool) error {
		line, err := r.ReadBytes('\n')
		if err != nil {
			return err
		}
		if len(line) < 3 || line[len(line)-2] != '\r' {
			return errors.New("resp: bad line")
		}
		buf = append(buf, line...)
		body := string(line[1 : len(line)-2])
		switch line[0] {
		case '+', '-', ':', '_', ',', '#', '(':
			return nil
		case '$', '!', '=':
			n, err := strconv.Atoi(body)
			if err != nil {
				return fmt.Errorf("resp: bad length %q", body)
			}
			if n < 0 {
				return nil
			}
			data := make([]byte, n+2)
			if _, err := io.ReadFull(r, data); err != nil {
				return err
			}
			buf = append(buf, data...)
			if !top {
				items = append(items, string(data[:n]))
			}
			return nil
		case '*', '~', '>', '%', '|':
			n, err := strconv.Atoi(body)
			if err != nil {
				return fmt.Errorf("resp: bad count %q", body)
			}
			if line[0] == '%' || line[0] == '|' {
				n *= 2
			}
			for i := 0; i < n; i++ {
				if err := read(false); err != nil {
					return err
				}
			}
			if line[0] == '|' { // attributes come before the value itself
				return read(top)
			}
			return nil
		}
		return fmt.Errorf("resp: unknown type %q", line[0])
	}
	if err := read(true); err != nil {
		return nil, nil, err
	}
	if buf[0] == '*' {
		args = items
	}
	return buf, args, nil
}
