package challenge

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// Hub holds the process's one Redis subscription to the end-of-authentication
// channel and wakes the long-polls waiting in this process. Waiters never
// hold a Redis connection.
type Hub struct {
	rdb     redis.UniversalClient
	channel string
	log     *slog.Logger

	mu      sync.Mutex
	waiters map[string]map[chan struct{}]struct{} // tag -> waiters
	closing chan struct{}
	once    sync.Once
}

// NewHub returns a Hub; Run subscribes.
func NewHub(rdb redis.UniversalClient, prefix string, log *slog.Logger) *Hub {
	return &Hub{rdb: rdb, channel: keys{prefix}.channel(), log: log,
		waiters: map[string]map[chan struct{}]struct{}{}, closing: make(chan struct{})}
}

// Run keeps the subscription until ctx ends. go-redis re-subscribes by
// itself after a connection loss; each (re)subscription wakes every waiter,
// so that one that missed a message during the gap re-reads its state.
func (h *Hub) Run(ctx context.Context) {
	ps := h.rdb.Subscribe(ctx, h.channel)
	defer ps.Close()
	ch := ps.ChannelWithSubscriptions(redis.WithChannelHealthCheckInterval(5 * time.Second))
	for {
		select {
		case <-ctx.Done():
			return
		case msg, ok := <-ch:
			if !ok {
				return
			}
			switch m := msg.(type) {
			case *redis.Message:
				h.wake(m.Payload)
			case *redis.Subscription:
				if m.Kind == "subscribe" {
					h.wakeAll()
				}
			}
		}
	}
}

// Close wakes every waiter for good: the server is stopping, and long-polls
// answer authorization_pending.
func (h *Hub) Close() { h.once.Do(func() { close(h.closing) }) }

// Closing is closed when the server stops.
func (h *Hub) Closing() <-chan struct{} { return h.closing }

// register adds a waiter for tag; the returned func removes it.
func (h *Hub) register(tag string) (<-chan struct{}, func()) {
	c := make(chan struct{}, 1)
	h.mu.Lock()
	set := h.waiters[tag]
	if set == nil {
		set = map[chan struct{}]struct{}{}
		h.waiters[tag] = set
	}
	set[c] = struct{}{}
	h.mu.Unlock()
	return c, func() {
		h.mu.Lock()
		delete(set, c)
		if len(set) == 0 && h.waiters[tag] != nil && len(h.waiters[tag]) == 0 {
			delete(h.waiters, tag)
		}
		h.mu.Unlock()
	}
}

func (h *Hub) wake(tag string) {
	h.mu.Lock()
	for c := range h.waiters[tag] {
		select {
		case c <- struct{}{}:
		default:
		}
	}
	h.mu.Unlock()
}

func (h *Hub) wakeAll() {
	h.mu.Lock()
	for _, set := range h.waiters {
		for c := range set {
			select {
			case c <- struct{}{}:
			default:
			}
		}
	}
	h.mu.Unlock()
}

// Waiting returns how many requests wait in this process.
func (h *Hub) Waiting() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, set := range h.waiters {
		n += len(set)
	}
	return n
}
