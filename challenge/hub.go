package challenge

import (
	"context"
	"hash/fnv"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ecps-sante/ecps/scripts"
	"github.com/ecps-sante/ecps/token"
)

// Hub holds the process's Redis subscriptions to the end-of-authentication
// channels and wakes the long-polls waiting in this process. Waiters never
// hold a Redis connection.
//
// On a standalone Redis or a Sentinel set there is one channel (SUBSCRIBE,
// PUBLISH). On a Redis Cluster there are clusterChannels sharded channels
// (SSUBSCRIBE, SPUBLISH, Redis 7), each in its own slot: a decision's
// wake-up goes to the one shard that owns its channel instead of being
// broadcast to every node, and the channels spread over the masters.
//
// A subscription can outlive its server's role: after a Sentinel failover
// go-redis sends new commands to the new master, but a subscription it
// made to the old one stays there until that server is demoted (seconds).
// So each subscription checks itself: every probeEvery the hub publishes a
// probe on the channel through the ordinary client (which follows the
// master); a subscription that has not heard its probe for probeStale is
// made again. Every (re)subscription wakes every waiter, so that one that
// missed a message meanwhile reads its state again.
type Hub struct {
	rdb      redis.UniversalClient
	channels []string
	sharded  bool
	id       string // this hub's probes
	log      *slog.Logger

	mu      sync.Mutex
	waiters map[string]map[chan struct{}]struct{} // tag -> waiters
	closing chan struct{}
	once    sync.Once
}

// clusterChannels is the number of sharded channels on a Redis Cluster.
const clusterChannels = 16

const (
	probeEvery = time.Second
	probeStale = 3 * time.Second
)

// NewHub returns a Hub; Run subscribes.
func NewHub(rdb redis.UniversalClient, prefix string, log *slog.Logger) *Hub {
	h := &Hub{rdb: rdb, log: log, id: token.New(9),
		waiters: map[string]map[chan struct{}]struct{}{}, closing: make(chan struct{})}
	if _, ok := rdb.(*redis.ClusterClient); ok {
		h.sharded = true
		for i := 0; i < clusterChannels; i++ {
			// Each channel its own hash tag, hence its own slot.
			h.channels = append(h.channels, prefix+"{auth-events:"+strconv.Itoa(i)+"}")
		}
	} else {
		h.channels = []string{keys{prefix}.channel()}
	}
	return h
}

// channelOf is the channel that carries the end of authentication tag.
func (h *Hub) channelOf(tag string) string {
	if len(h.channels) == 1 {
		return h.channels[0]
	}
	f := fnv.New32a()
	_, _ = f.Write([]byte(tag))
	return h.channels[f.Sum32()%uint32(len(h.channels))]
}

// announce runs the writes that build queues (scripts by EVALSHA, used
// listing them: scripts.Exec), which must be visible before the wake-up,
// then wakes the waiters of authentication tag on every replica. On one
// Redis the PUBLISH rides in the same pipeline, after the writes. A Cluster
// runs a pipeline's commands on their nodes in parallel: there the SPUBLISH
// is sent once the writes' replies are in, or a waiter could wake before
// the write it must read.
func (h *Hub) announce(ctx context.Context, tag string, used []*redis.Script, build func(p redis.Pipeliner)) error {
	if !h.sharded {
		return scripts.Exec(ctx, h.rdb, used, func(p redis.Pipeliner) {
			build(p)
			p.Publish(ctx, h.channelOf(tag), tag)
		})
	}
	if err := scripts.Exec(ctx, h.rdb, used, build); err != nil {
		return err
	}
	return h.rdb.SPublish(ctx, h.channelOf(tag), tag).Err()
}

// Run keeps the subscriptions until ctx ends.
func (h *Hub) Run(ctx context.Context) {
	var wg sync.WaitGroup
	for _, ch := range h.channels {
		wg.Add(1)
		go func() { defer wg.Done(); h.keep(ctx, ch) }()
	}
	wg.Wait()
}

// keep subscribes to channel again and again until ctx ends.
func (h *Hub) keep(ctx context.Context, channel string) {
	for ctx.Err() == nil {
		h.subscribe(ctx, channel)
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// subscribe holds one subscription until ctx ends or it goes stale.
// go-redis re-subscribes by itself after a connection loss.
func (h *Hub) subscribe(ctx context.Context, channel string) {
	var ps *redis.PubSub
	if h.sharded {
		ps = h.rdb.SSubscribe(ctx, channel)
	} else {
		ps = h.rdb.Subscribe(ctx, channel)
	}
	defer ps.Close()
	msgs := ps.ChannelWithSubscriptions(redis.WithChannelHealthCheckInterval(5 * time.Second))
	probe := "probe:" + h.id
	heard := time.Now()
	tick := time.NewTicker(probeEvery)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			if time.Since(heard) > probeStale {
				h.log.Warn("auth-events subscription heard nothing of its probes: subscribing again", "channel", channel)
				return
			}
			go h.sendProbe(ctx, channel, probe)
		case msg, ok := <-msgs:
			if !ok {
				return
			}
			switch m := msg.(type) {
			case *redis.Message:
				if m.Payload == probe {
					heard = time.Now()
				} else {
					h.wake(m.Payload)
				}
			case *redis.Subscription:
				if m.Kind == "subscribe" || m.Kind == "ssubscribe" {
					heard = time.Now()
					h.wakeAll()
				}
			}
		}
	}
}

func (h *Hub) sendProbe(ctx context.Context, channel, probe string) {
	ctx, cancel := context.WithTimeout(ctx, probeEvery)
	defer cancel()
	if h.sharded {
		_ = h.rdb.SPublish(ctx, channel, probe).Err()
	} else {
		_ = h.rdb.Publish(ctx, channel, probe).Err()
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
