// Package durable makes a write survive the failover of the Redis master
// that took it: the write and a WAIT for replicas' acknowledgement go on one
// connection to the master that owns the write's key, and the write counts
// as done only once enough replicas have it.
//
// Redis replication is asynchronous: a master that fails right after
// answering may take its last writes with it, and a replica promoted in its
// place never had them. An enrolment or a decision that the client was told
// about must not vanish that way. WAIT n timeout (sent after the write, on
// the same connection) returns how many replicas acknowledged every write of
// that connection so far; fewer than n within the timeout is ErrNotDurable:
// the request answers 503 and the client sends it again (every write of this
// service is safe to send twice).
//
// With n = 0 (the default, and what a standalone Redis wants) nothing is
// waited for: a Writer then only runs the pipeline.
package durable

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// ErrNotDurable: the write was made but fewer replicas than required
// acknowledged it in time. It may or may not survive a failover.
var ErrNotDurable = errors.New("durable: not acknowledged by enough replicas")

// Writer runs writes that must reach Replicas replicas before they count.
type Writer struct {
	rdb      redis.UniversalClient
	replicas int
	timeout  time.Duration
}

// New returns a Writer; replicas 0 waits for nothing.
func New(rdb redis.UniversalClient, replicas int, timeout time.Duration) *Writer {
	if timeout <= 0 {
		timeout = 100 * time.Millisecond
	}
	return &Writer{rdb: rdb, replicas: replicas, timeout: timeout}
}

// Replicas is how many replicas must acknowledge a write.
func (w *Writer) Replicas() int {
	if w == nil {
		return 0
	}
	return w.replicas
}

// Do runs write, then, when replicas are required, WAIT for them: write
// gets a connection of its own to the master that owns key (all it writes
// must be on key's slot), so that WAIT counts exactly its writes. With no
// replicas required, write gets the client itself and nothing more is sent.
// Do's error is write's, or ErrNotDurable.
func (w *Writer) Do(ctx context.Context, key string, write func(c redis.Cmdable) error) error {
	if w.Replicas() == 0 {
		return write(w.rdb)
	}
	switch c := w.rdb.(type) {
	case *redis.ClusterClient:
		// WAIT is keyless: sent through the Cluster client it would go to
		// any node. The key's master is asked directly; right after a
		// failover the client's map of the slots may be stale, and the node
		// asked answers MOVED (running nothing): the map is read again and
		// the step sent to the new master.
		for attempt := 0; ; attempt++ {
			m, err := c.MasterForKey(ctx, key)
			if err != nil {
				return fmt.Errorf("durable: master of %s: %w", key, err)
			}
			err = w.on(ctx, m, write)
			if !isMoved(err) || attempt == 2 {
				return err
			}
			c.ReloadState(ctx)
			select {
			case <-ctx.Done():
				return err
			case <-time.After(100 * time.Millisecond):
			}
		}
	case *redis.Client: // standalone, or Sentinel (the current master)
		return w.on(ctx, c, write)
	default:
		return fmt.Errorf("durable: unsupported client %T", w.rdb)
	}
}

// isMoved reports whether err is a Cluster redirection: the node asked
// does not serve the key's slot (any more), and ran nothing.
func isMoved(err error) bool {
	var re redis.Error
	if !errors.As(err, &re) {
		return false
	}
	msg := re.Error()
	return strings.HasPrefix(msg, "MOVED ") || strings.HasPrefix(msg, "ASK ")
}

// on runs write, then WAIT, on one connection of client.
func (w *Writer) on(ctx context.Context, client *redis.Client, write func(c redis.Cmdable) error) error {
	conn := client.Conn()
	defer conn.Close()
	if err := write(conn); err != nil {
		return err
	}
	acked, err := conn.Wait(ctx, w.replicas, w.timeout).Result()
	if err != nil {
		return fmt.Errorf("durable: WAIT: %w", err)
	}
	if acked < int64(w.replicas) {
		return fmt.Errorf("%w: %d of %d replicas within %v", ErrNotDurable, acked, w.replicas, w.timeout)
	}
	return nil
}
