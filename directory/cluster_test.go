package directory

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// startCluster starts a Redis Cluster of three masters on loopback ports
// (stopped when the test ends) and returns a client on it.
func startCluster(t *testing.T) *redis.ClusterClient {
	t.Helper()
	if _, err := exec.LookPath("redis-cli"); err != nil {
		t.Fatal("redis-cli not found in PATH (Debian package redis-server)")
	}
	var addrs []string
	for range 3 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		dir := t.TempDir()
		cmd := exec.Command("redis-server", "--port", strconv.Itoa(port), "--bind", "127.0.0.1",
			"--cluster-enabled", "yes", "--cluster-config-file", dir+"/nodes.conf",
			"--save", "", "--appendonly", "no", "--dir", dir)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		deadline := time.Now().Add(10 * time.Second)
		for {
			c, err := net.DialTimeout("tcp", addr, 100*time.Millisecond)
			if err == nil {
				c.Close()
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("redis-server on %s did not start", addr)
			}
			time.Sleep(20 * time.Millisecond)
		}
		addrs = append(addrs, addr)
	}
	out, err := exec.Command("redis-cli", append([]string{"--cluster", "create"}, append(addrs, "--cluster-replicas", "0", "--cluster-yes")...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("redis-cli --cluster create: %v\n%s", err, out)
	}
	c := redis.NewClusterClient(&redis.ClusterOptions{Addrs: addrs})
	t.Cleanup(func() { _ = c.Close() })
	deadline := time.Now().Add(20 * time.Second)
	for {
		info, err := c.ClusterInfo(context.Background()).Result()
		if err == nil && strings.Contains(info, "cluster_state:ok") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("cluster not ready: %v %s", err, info)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return c
}

// The whole life of a directory on a real Cluster: import, lookups,
// replacement, clear. A cross-slot command would fail with CROSSSLOT.
func TestCluster(t *testing.T) {
	c := startCluster(t)
	ctx := context.Background()
	s := NewStore(c, Options{KeyPrefix: "ecps:", PointerTTL: 50 * time.Millisecond, Grace: 100 * time.Millisecond})
	src := func(b []byte) Source { return Source{Activity: bytes.NewReader(b)} }
	extract := synthetic(t, 5000, 3)
	v1, err := s.Import(ctx, Source{Activity: bytes.NewReader(readFile(t, activityFile)),
		SavoirFaire: bytes.NewReader(readFile(t, savoirFaireFile))}, ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if e, err := s.Lookup(ctx, idDupre); err != nil || len(e.Specialties) != 3 || e.Version != v1.Version {
		t.Fatalf("Lookup = %s, %v", toJSON(t, e), err)
	}
	v2, err := s.Import(ctx, src(extract), ImportOptions{MinRatio: 0.5})
	if err != nil {
		t.Fatal(err)
	}
	want := expected(t, extract)
	if v2.Entries != int64(len(want)) || v2.Replaced != v1.Version {
		t.Errorf("entries %d, want %d; replaced %q", v2.Entries, len(want), v2.Replaced)
	}
	for id, w := range want {
		e, err := s.Lookup(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		e.Version = ""
		if !equalJSON(t, e, w) {
			t.Fatalf("%s: %s", id, toJSON(t, e))
		}
		break
	}
	// The buckets are spread over the three masters.
	var mu sync.Mutex
	perNode := map[string]int64{}
	err = c.ForEachMaster(ctx, func(ctx context.Context, n *redis.Client) error {
		size, err := n.DBSize(ctx).Result()
		mu.Lock()
		perNode[n.Options().Addr] = size
		mu.Unlock()
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	for addr, n := range perNode {
		if n < 500 {
			t.Errorf("node %s holds %d keys: the version is not spread (%v)", addr, n, perNode)
		}
	}
	if _, err := s.Clear(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Lookup(ctx, idDupre); !errors.Is(err, ErrNotLoaded) {
		t.Errorf("Lookup after Clear = %v", err)
	}
	err = c.ForEachMaster(ctx, func(ctx context.Context, n *redis.Client) error {
		if size, err := n.DBSize(ctx).Result(); err != nil || size != 0 {
			t.Errorf("node %s: %d keys left after Clear (%v)", n.Options().Addr, size, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func equalJSON(t *testing.T, a, b any) bool { return toJSON(t, a) == toJSON(t, b) }
