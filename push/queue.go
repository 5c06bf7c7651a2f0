package push

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
)

// TokenClearer clears a device's dead push token (enrollment.Service).
type TokenClearer interface {
	ClearPushToken(ctx context.Context, deviceID, token, reason string) (bool, error)
}

// QueueOptions tune the queue; zero values take the defaults.
type QueueOptions struct {
	KeyPrefix string
	// Provider names the provider in /readyz ("fcm").
	Provider string
	// Consumer is this replica's name in the consumer group; default
	// <hostname>-<random>, new at each start.
	Consumer string
	// Shards is the number of streams the queue is spread over (a login's
	// pushes go to one, chosen from its challenge id); default
	// DefaultShards. Every replica must use the same number: a replica reads
	// only the shards it knows. Each replica reads every shard.
	Shards int
	// Concurrency is the number of sends in flight per replica; default 32.
	Concurrency int
	// AttemptTimeout bounds one send attempt; default 10 s.
	AttemptTimeout time.Duration
	// ClaimAfter: a push taken by a replica and left idle this long (the
	// replica died) is taken over by another; default 30 s. Replicas renew
	// their lease on what they hold every ClaimAfter/3, and it must exceed
	// AttemptTimeout.
	ClaimAfter time.Duration
	// Housekeep is how often a replica takes over stale pushes, renews its
	// leases and measures the queue; default 5 s.
	Housekeep time.Duration
	// Block is how long one read waits for new pushes; default 1 s.
	Block time.Duration
	// Linger: after a read that did not fill a batch, the next read waits
	// this long, so that pushes arriving meanwhile are read together (fewer
	// round trips for a little latency); default 2 ms.
	Linger time.Duration
	// AckEvery: finished pushes are acknowledged and deleted in one round
	// trip this often; default 20 ms.
	AckEvery time.Duration
	// Batch is how many pushes one read takes at most; default Concurrency.
	Batch int
	// MaxHeld bounds the pushes one replica holds (sending or waiting to be
	// retried); default 10,000. Beyond, they wait in Redis.
	MaxHeld int
	// BackoffBase and BackoffMax shape the retry delays (exponential, with
	// jitter, at least the provider's Retry-After); defaults 500 ms and 30 s.
	BackoffBase, BackoffMax time.Duration
	// MinTTL: a push with less time left than this before its login expires
	// is dropped, never sent; default 1 s.
	MinTTL time.Duration
	// Retention: entries older than this are trimmed, whatever happened to
	// them (a login lives at most 5 minutes); default 10 min.
	Retention time.Duration
	Logger    *slog.Logger
	Metrics   *Metrics
	// Now is the clock of logins' expiries.
	Now func() time.Time
}

func (o *QueueOptions) defaults() {
	defDur := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	defInt := func(i *int, v int) {
		if *i <= 0 {
			*i = v
		}
	}
	defInt(&o.Shards, DefaultShards)
	defInt(&o.Concurrency, 32)
	defDur(&o.AttemptTimeout, 10*time.Second)
	defDur(&o.ClaimAfter, 30*time.Second)
	if o.ClaimAfter <= o.AttemptTimeout {
		o.ClaimAfter = 3 * o.AttemptTimeout
	}
	defDur(&o.Housekeep, 5*time.Second)
	defDur(&o.Block, time.Second)
	defDur(&o.Linger, 2*time.Millisecond)
	defDur(&o.AckEvery, 20*time.Millisecond)
	defInt(&o.Batch, o.Concurrency)
	defInt(&o.MaxHeld, 10_000)
	defDur(&o.BackoffBase, 500*time.Millisecond)
	defDur(&o.BackoffMax, 30*time.Second)
	defDur(&o.MinTTL, time.Second)
	defDur(&o.Retention, 10*time.Minute)
	if o.Provider == "" {
		o.Provider = "fcm"
	}
	if o.Consumer == "" {
		host, _ := os.Hostname()
		b := make([]byte, 4)
		_, _ = rand.Read(b)
		o.Consumer = strings.ReplaceAll(host, " ", "_") + "-" + hex.EncodeToString(b)
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Metrics == nil {
		o.Metrics = NewMetrics(prometheus.NewRegistry())
	}
	if o.Now == nil {
		o.Now = time.Now
	}
}

// streamTTL: a shard's stream expires this long after its last enqueue.
const streamTTL = 24 * time.Hour

// DefaultShards is the default number of shard streams. On a Cluster the
// shards are spread over the masters by their hash tags: 16 puts a few on
// each of 3 to 6 masters and one on each of up to 16, while each costs a
// replica little when idle (one blocking read per Block on a Cluster, two
// commands per Housekeep). It is also the number of the wake-up channels
// ({auth-events:0..15}).
const DefaultShards = 16

// Queue is the durable push queue: Send records a login's pushes in a Redis
// stream; Run, in every replica, sends them through the Provider. See the
// package documentation for the states of a push.
type Queue struct {
	rdb      redis.UniversalClient
	provider Provider
	tokens   TokenClearer
	keys     keys
	opts     QueueOptions
	log      *slog.Logger
	m        *Metrics
	health   *health

	mu    sync.Mutex
	held  map[entryRef]*task // entry -> task this replica holds
	retry taskHeap           // held tasks waiting for their next attempt
	wake  chan struct{}
	acks  chan entryRef
}

// NewQueue returns a queue sending through provider; tokens clears dead tokens.
func NewQueue(rdb redis.UniversalClient, provider Provider, tokens TokenClearer, opts QueueOptions) *Queue {
	opts.defaults()
	return &Queue{rdb: rdb, provider: provider, tokens: tokens, keys: newKeys(opts.KeyPrefix, opts.Shards), opts: opts,
		log: opts.Logger, m: opts.Metrics, health: newHealth(opts.Logger, opts.Metrics),
		held: map[entryRef]*task{}, wake: make(chan struct{}, 1)}
}

// Status is the provider's health as this replica sees it, for /readyz.
func (q *Queue) Status() Status { return q.health.status(q.opts.Provider) }

// Consumer is this replica's name in the consumer group.
func (q *Queue) Consumer() string { return q.opts.Consumer }

// entryRef names one stream entry: ids are unique in their stream only.
type entryRef struct{ stream, id string }

// task is one push held by this replica.
type task struct {
	stream   string // the shard's stream (or the legacy stream) it was read from
	id       string
	job      Job
	enqueued time.Time // the login's creation, for the delivery latency
	attempts int
	last     Result    // the last attempt's result
	leased   time.Time // last delivery or lease renewal (monotonic)
	next     time.Time // next attempt (monotonic)
	lost     bool      // another replica took it over
	index    int       // in the retry heap, -1 when not there
}

func (t *task) ref() entryRef { return entryRef{t.stream, t.id} }

// Run sends queued pushes until ctx ends, then stops gracefully: attempts in
// flight finish (each within AttemptTimeout), pushes waiting for a retry go
// back to the queue for another replica, and acknowledgements are flushed.
// It reads every shard (readSets: one reader per shard on a Cluster, one
// for all on one Redis) and feeds Concurrency senders; one housekeeper
// renews, measures, takes over and drains the old stream for all shards.
func (q *Queue) Run(ctx context.Context) {
	q.acks = make(chan entryRef, 8192)
	ackDone := make(chan struct{})
	go func() { defer close(ackDone); q.acker() }()

	ready := make(chan *task)
	var senders sync.WaitGroup
	for i := 0; i < q.opts.Concurrency; i++ {
		senders.Add(1)
		go func() {
			defer senders.Done()
			for t := range ready {
				q.attempt(ctx, t)
			}
		}()
	}
	if q.ensureGroup(ctx, q.keys.streams()) {
		var feeders sync.WaitGroup
		for _, streams := range q.readSets() {
			feeders.Add(1)
			go func() { defer feeders.Done(); q.reader(ctx, ready, streams) }()
		}
		feeders.Add(2)
		go func() { defer feeders.Done(); q.scheduler(ctx, ready) }()
		go func() { defer feeders.Done(); q.housekeeper(ctx) }()
		feeders.Wait()
	}
	close(ready)
	senders.Wait()
	q.releaseHeld()
	close(q.acks)
	<-ackDone
}

// scrub renders an error for the log without the push token.
func scrub(err error, token string) string {
	if err == nil {
		return ""
	}
	s := err.Error()
	if token != "" {
		s = strings.ReplaceAll(s, token, "<token>")
	}
	return s
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// taskHeap orders waiting tasks by their next attempt.
type taskHeap []*task

func (h taskHeap) Len() int           { return len(h) }
func (h taskHeap) Less(i, j int) bool { return h[i].next.Before(h[j].next) }
func (h taskHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index = i
	h[j].index = j
}
func (h *taskHeap) Push(x any) {
	t := x.(*task)
	t.index = len(*h)
	*h = append(*h, t)
}
func (h *taskHeap) Pop() any {
	old := *h
	t := old[len(old)-1]
	old[len(old)-1] = nil
	t.index = -1
	*h = old[:len(old)-1]
	return t
}
