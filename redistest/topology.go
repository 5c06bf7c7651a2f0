package redistest

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Cluster is a Redis Cluster of the test's own: 3 masters and 3 replicas,
// made by `redis-cli --cluster create` from Debian's redis-server, on
// loopback ports. It is stopped when the test ends.
type Cluster struct {
	t     testing.TB
	Nodes []*Server
}

// StartCluster starts a 3-master / 3-replica cluster and waits until every
// node says cluster_state:ok.
func StartCluster(t testing.TB) *Cluster {
	t.Helper()
	need(t, "redis-server", "redis-cli")
	c := &Cluster{t: t}
	var addrs []string
	for i := 0; i < 6; i++ {
		dir := t.TempDir()
		s := &Server{t: t, port: freeClusterPort(t), dir: dir, args: []string{
			"--cluster-enabled", "yes", "--cluster-config-file", filepath.Join(dir, "nodes.conf"),
			"--cluster-node-timeout", "2000", "--cluster-replica-validity-factor", "0",
		}}
		s.Restart()
		t.Cleanup(s.Stop)
		c.Nodes = append(c.Nodes, s)
		addrs = append(addrs, s.Addr())
	}
	args := append([]string{"--cluster", "create"}, addrs...)
	args = append(args, "--cluster-replicas", "1", "--cluster-yes")
	if out, err := exec.Command("redis-cli", args...).CombinedOutput(); err != nil {
		t.Fatalf("redis-cli --cluster create: %v\n%s", err, out)
	}
	c.waitOK()
	return c
}

// Addrs are every node's host:port, for redis.ClusterOptions.
func (c *Cluster) Addrs() []string {
	var out []string
	for _, n := range c.Nodes {
		out = append(out, n.Addr())
	}
	return out
}

// Client returns a cluster client (closed when the test ends) and a fresh
// key prefix.
func (c *Cluster) Client(t testing.TB) (*redis.ClusterClient, string) {
	t.Helper()
	rdb := redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs(), DialTimeout: 2 * time.Second,
		ReadTimeout: time.Second, WriteTimeout: time.Second, ContextTimeoutEnabled: true})
	t.Cleanup(func() { _ = rdb.Close() })
	return rdb, Prefix()
}

// waitOK waits until every node that runs reports cluster_state:ok and
// every master has its replica in sync.
func (c *Cluster) waitOK() {
	c.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		ok := true
		for _, n := range c.Nodes {
			if n.cmd == nil {
				continue
			}
			info, err := n.cli("CLUSTER", "INFO")
			if err != nil || !strings.Contains(info, "cluster_state:ok") {
				ok = false
				break
			}
			// A master's replica in sync (state=online).
			repl, err := n.cli("INFO", "replication")
			if err != nil || (strings.Contains(repl, "role:master") && !strings.Contains(repl, "state=online")) {
				ok = false
				break
			}
		}
		if ok {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	c.t.Fatalf("cluster did not reach cluster_state:ok")
}

// StateOK reports whether every node that runs says cluster_state:ok.
func (c *Cluster) StateOK() bool {
	for _, n := range c.Nodes {
		if n.cmd == nil {
			continue
		}
		if info, err := n.cli("CLUSTER", "INFO"); err != nil || !strings.Contains(info, "cluster_state:ok") {
			return false
		}
	}
	return true
}

// Masters returns the nodes that are masters now.
func (c *Cluster) Masters() []*Server {
	var out []*Server
	for _, n := range c.Nodes {
		if n.cmd == nil {
			continue
		}
		if role, err := n.cli("ROLE"); err == nil && strings.HasPrefix(role, "master") {
			out = append(out, n)
		}
	}
	return out
}

// OwnsSlot reports whether this cluster node serves slot (CLUSTER NODES,
// its own line: the slot ranges from the 9th field on).
func (s *Server) OwnsSlot(slot int) bool {
	nodes, err := s.cli("CLUSTER", "NODES")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(nodes, "\n") {
		f := strings.Fields(line)
		if len(f) < 9 || !strings.Contains(f[2], "myself") {
			continue
		}
		for _, r := range f[8:] {
			lo, hi, ok := strings.Cut(r, "-")
			if !ok {
				hi = lo
			}
			a, err1 := strconv.Atoi(lo)
			b, err2 := strconv.Atoi(hi)
			if err1 == nil && err2 == nil && slot >= a && slot <= b {
				return true
			}
		}
	}
	return false
}

// Sentinel is a Sentinel set of the test's own: a master, a replica and 3
// sentinels watching them under the name "ecps", on loopback ports.
type Sentinel struct {
	t         testing.TB
	Master    *Server
	Replica   *Server
	Sentinels []*Server
}

// SentinelMaster is the name the sentinels know the master by.
const SentinelMaster = "ecps"

// StartSentinel starts the set and waits until the sentinels see the
// replica and each other.
func StartSentinel(t testing.TB) *Sentinel {
	t.Helper()
	need(t, "redis-server", "redis-cli")
	st := &Sentinel{t: t}
	// A replica's full sync starts at once (Redis waits 5 s by default for
	// more replicas): a node restarted after a failover (RestartOldMaster)
	// holds the data within milliseconds, not seconds during which a second
	// failover under load could promote it empty.
	st.Master = &Server{t: t, port: FreePort(t), dir: t.TempDir(), args: []string{"--repl-diskless-sync-delay", "0"}}
	st.Master.Restart()
	t.Cleanup(st.Master.Stop)
	st.Replica = &Server{t: t, port: FreePort(t), dir: t.TempDir(),
		args: []string{"--replicaof", "127.0.0.1", strconv.Itoa(st.Master.port), "--repl-diskless-sync-delay", "0"}}
	st.Replica.Restart()
	t.Cleanup(st.Replica.Stop)
	for i := 0; i < 3; i++ {
		dir := t.TempDir()
		conf := filepath.Join(dir, "sentinel.conf")
		body := fmt.Sprintf("sentinel monitor %s 127.0.0.1 %d 2\n"+
			"sentinel down-after-milliseconds %[1]s 1000\n"+
			"sentinel failover-timeout %[1]s 5000\n"+
			"sentinel parallel-syncs %[1]s 1\n", SentinelMaster, st.Master.port)
		if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		s := &Server{t: t, port: FreePort(t), dir: dir, conf: conf}
		s.Restart()
		t.Cleanup(s.Stop)
		st.Sentinels = append(st.Sentinels, s)
	}
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		// The replica in sync (state=online), and the sentinels seeing it
		// and each other.
		info, err := st.Master.cli("INFO", "replication")
		ok := err == nil && strings.Contains(info, "state=online")
		for _, s := range st.Sentinels {
			if !ok {
				break
			}
			out, err := s.cli("SENTINEL", "MASTER", SentinelMaster)
			if err != nil || !strings.Contains(out, "num-other-sentinels\n2") || !strings.Contains(out, "num-slaves\n1") {
				ok = false
				break
			}
		}
		if ok {
			return st
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("the sentinels did not find each other and the replica")
	return nil
}

// Addrs are the sentinels' host:port, for redis.FailoverOptions.
func (st *Sentinel) Addrs() []string {
	var out []string
	for _, s := range st.Sentinels {
		out = append(out, s.Addr())
	}
	return out
}

// Client returns a Sentinel-backed client (closed when the test ends) and a
// fresh key prefix.
func (st *Sentinel) Client(t testing.TB) (*redis.Client, string) {
	t.Helper()
	rdb := redis.NewFailoverClient(&redis.FailoverOptions{MasterName: SentinelMaster, SentinelAddrs: st.Addrs(),
		DialTimeout: 2 * time.Second, ReadTimeout: time.Second, WriteTimeout: time.Second, ContextTimeoutEnabled: true})
	t.Cleanup(func() { _ = rdb.Close() })
	return rdb, Prefix()
}

// CurrentMaster asks a sentinel for the master's address.
func (st *Sentinel) CurrentMaster(ctx context.Context) (string, error) {
	for _, s := range st.Sentinels {
		if addr, err := s.masterAddr(); err == nil {
			return addr, nil
		}
	}
	return "", fmt.Errorf("no sentinel knows the master")
}

// masterAddr asks the sentinel s for the master's address.
func (s *Server) masterAddr() (string, error) {
	out, err := s.cli("SENTINEL", "GET-MASTER-ADDR-BY-NAME", SentinelMaster)
	f := strings.Fields(out)
	if err != nil || len(f) != 2 {
		return "", fmt.Errorf("sentinel %s: no master address (%v): %q", s.Addr(), err, out)
	}
	return net.JoinHostPort(f[0], f[1]), nil
}

// AwaitAgreedMaster waits until every sentinel names the same master,
// other than the killed one (up to 30 s).
func (st *Sentinel) AwaitAgreedMaster() {
	st.t.Helper()
	old := st.Master.Addr()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if a, agreed := st.agreedMaster(); agreed && a != old {
			return
		}
		if time.Now().After(deadline) {
			st.t.Fatalf("the sentinels did not all name a new master within 30 s")
		}
	}
}

// agreedMaster reports the master's address when every sentinel names the
// same one.
func (st *Sentinel) agreedMaster() (string, bool) {
	addr := ""
	for _, s := range st.Sentinels {
		a, err := s.masterAddr()
		if err != nil || (addr != "" && a != addr) {
			return "", false
		}
		addr = a
	}
	return addr, addr != ""
}

// cli runs redis-cli against the server and returns its output.
func (s *Server) cli(args ...string) (string, error) {
	out, err := exec.Command("redis-cli", append([]string{"-p", strconv.Itoa(s.port)}, args...)...).CombinedOutput()
	return string(out), err
}

func need(t testing.TB, bins ...string) {
	t.Helper()
	for _, b := range bins {
		if _, err := exec.LookPath(b); err != nil {
			t.Fatalf("%s not found in PATH (Debian package redis-server; `make test` installs it)", b)
		}
	}
}

// freeClusterPort finds a port free for a node and for its cluster bus
// (port + 10000).
func freeClusterPort(t testing.TB) int {
	t.Helper()
	for i := 0; i < 100; i++ {
		p := FreePort(t)
		if p+10000 > 65535 {
			continue
		}
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p+10000)))
		if err != nil {
			continue
		}
		l.Close()
		return p
	}
	t.Fatal("no free port pair for a cluster node")
	return 0
}

// RestartOldMaster starts the killed master again, empty, as a replica of
// the current one, the way a deployment brings a failed node back (it asks
// the sentinels who the master is before it starts). Started as a master,
// it would hold that role, empty, until Sentinel demotes it, and a Sentinel
// that has not yet settled the failover may even pick it again: every write
// since would be lost, a test's data included.
//
// A client may still be sent to it by a sentinel that has not yet learned
// of the failover (go-redis asks one sentinel at each dial): until its full
// sync it answers MASTERDOWN (replica-serve-stale-data no), then reads from
// its copy and READONLY to writes, both retried by go-redis. A test that
// must not meet it calls AwaitAgreedMaster first.
func (st *Sentinel) RestartOldMaster(ctx context.Context) {
	st.t.Helper()
	addr, err := st.CurrentMaster(ctx)
	if err != nil {
		st.t.Fatalf("current master: %v", err)
	}
	host, port, _ := strings.Cut(addr, ":")
	saved := st.Master.args
	// Until it has synced, it answers reads with MASTERDOWN (go-redis
	// retries it), not with its empty data, to a client a stale sentinel
	// sends to it.
	st.Master.args = append(append([]string{}, saved...), "--replicaof", host, port, "--replica-serve-stale-data", "no")
	st.Master.Restart()
	st.Master.args = saved
}
