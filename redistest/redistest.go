// Package redistest gives tests a real redis-server: the shared one that
// `make test` starts (ECPS_TEST_REDIS_URL), or one of their own, started from
// the redis-server binary on a free loopback port, that they can stop and
// start again to test outages. There is no fake Redis.
package redistest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"net"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Client returns a client on the shared test Redis (or on a server of the
// test's own when ECPS_TEST_REDIS_URL is not set) and a key prefix unique to
// the test, so that tests never see each other's keys.
func Client(t testing.TB) (redis.UniversalClient, string) {
	t.Helper()
	url := os.Getenv("ECPS_TEST_REDIS_URL")
	if url == "" {
		url = Start(t).URL()
	}
	opt, err := redis.ParseURL(url)
	if err != nil {
		t.Fatalf("ECPS_TEST_REDIS_URL: %v", err)
	}
	rdb := redis.NewClient(opt)
	t.Cleanup(func() { _ = rdb.Close() })
	if err := rdb.Ping(context.Background()).Err(); err != nil {
		t.Fatalf("redis at %s: %v", url, err)
	}
	return rdb, Prefix()
}

// Prefix returns a fresh key prefix.
func Prefix() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return "t" + hex.EncodeToString(b) + ":"
}

// Server is a redis-server process of a test's own.
type Server struct {
	t    testing.TB
	port int
	dir  string
	cmd  *exec.Cmd
	args []string // extra redis-server arguments (a cluster node, a replica)
	conf string   // a config file: a sentinel (redis-server --sentinel)
}

// Start starts a redis-server on a free loopback port; it is stopped when the
// test ends.
func Start(t testing.TB) *Server {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Fatal("redis-server not found in PATH (Debian package redis-server; `make test` needs it)")
	}
	s := &Server{t: t, port: FreePort(t), dir: t.TempDir()}
	s.Restart()
	t.Cleanup(s.Stop)
	return s
}

// StartWith is Start with extra redis-server arguments, given after the
// defaults (so that they override them: e.g. "--appendonly", "yes").
func StartWith(t testing.TB, args ...string) *Server {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Fatal("redis-server not found in PATH (Debian package redis-server; `make test` needs it)")
	}
	s := &Server{t: t, port: FreePort(t), dir: t.TempDir(), args: args}
	s.Restart()
	t.Cleanup(s.Stop)
	return s
}

// Addr is host:port.
func (s *Server) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)) }

// URL is a redis:// URL for ParseURL.
func (s *Server) URL() string { return "redis://" + s.Addr() + "/0" }

// Stop kills the server (as a crash would) and waits for it to exit.
func (s *Server) Stop() {
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	_ = s.cmd.Wait()
	s.cmd = nil
}

// Restart starts the server again on the same port (it must be stopped).
func (s *Server) Restart() {
	s.t.Helper()
	var out bytes.Buffer
	var args []string
	if s.conf != "" {
		args = append(args, s.conf, "--sentinel") // the file comes first
	}
	args = append(args, "--port", strconv.Itoa(s.port), "--bind", "127.0.0.1", "--dir", s.dir)
	if s.conf == "" {
		args = append(args, "--save", "", "--appendonly", "no")
	}
	cmd := exec.Command("redis-server", append(args, s.args...)...)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		s.t.Fatalf("start redis-server: %v", err)
	}
	s.cmd = cmd
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		c, err := net.DialTimeout("tcp", s.Addr(), 100*time.Millisecond)
		if err == nil {
			_ = c.Close()
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	s.t.Fatalf("redis-server on %s did not start: %s", s.Addr(), out.String())
}

// FreePort is a loopback TCP port nothing listens on (for a server a test starts).
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Pause stops the server's process (SIGSTOP) without closing its
// connections: to the network it looks like a partitioned server.
func (s *Server) Pause() { _ = s.cmd.Process.Signal(syscall.SIGSTOP) }

// Resume lets a paused server run again (SIGCONT).
func (s *Server) Resume() { _ = s.cmd.Process.Signal(syscall.SIGCONT) }
