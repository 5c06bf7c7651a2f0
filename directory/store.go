package directory

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ecps-sante/ecps/idnat"
)

// Meaning-only errors.
var (
	// ErrNotLoaded: no directory is loaded; callers behave as without one.
	ErrNotLoaded = errors.New("directory: no directory loaded")
	// ErrNotFound: a directory is loaded and the idNat is not in it.
	ErrNotFound = errors.New("directory: idNat not in the directory")
	// ErrBusy: another import or clear holds the lock.
	ErrBusy = errors.New("directory: another import or clear is running (its lock expires one LockTTL after it stops)")
)

// Defaults of Options.
const (
	DefaultPointerTTL = time.Second
	DefaultGrace      = 10 * time.Second
	DefaultBuckets    = 16384
	DefaultLockTTL    = time.Minute
)

// Options of a Store.
type Options struct {
	KeyPrefix string
	// PointerTTL is how long a reader uses the version pointer it read
	// before reading it again (default 1 s): the only cost of a lookup
	// beyond its HGET, once per PointerTTL per process.
	PointerTTL time.Duration
	// Grace is how long an import or clear keeps the replaced version after
	// the switch before removing it (default 10 s). It must exceed every
	// reader's PointerTTL plus the duration of a lookup: a reader that read
	// the old pointer just before the switch still finds the old version.
	Grace time.Duration
	// Buckets is the number of bucket hashes of a new version (default
	// 16384: ~80 practitioners each for the 1.3 M of the real extract).
	Buckets int
	// LockTTL bounds how long a killed import blocks the next one (default
	// 1 min); a running import renews its lock every LockTTL/3.
	LockTTL time.Duration
	Now     func() time.Time
}

// Store is the directory in Redis: imports write versions, readers look
// practitioners up in the current one. Safe for concurrent use.
type Store struct {
	rdb redis.UniversalClient
	k   keys
	opt Options

	mu       sync.Mutex
	ptr      pointer
	ptrAt    time.Time // when the read of ptr was sent
	ptrOK    bool
	fetching chan struct{} // closed when the pointer read in flight ends
	labels   map[string][]Code

	// crashAfter, in tests, makes Import stop dead after that many written
	// batches, as if the process were killed: no cleanup, lock kept.
	crashAfter int
}

type pointer struct {
	version string // "" when no directory is loaded
	buckets int
}

// NewStore returns the store on rdb.
func NewStore(rdb redis.UniversalClient, opt Options) *Store {
	if opt.PointerTTL <= 0 {
		opt.PointerTTL = DefaultPointerTTL
	}
	if opt.Grace <= 0 {
		opt.Grace = DefaultGrace
	}
	if opt.Buckets <= 0 {
		opt.Buckets = DefaultBuckets
	}
	if opt.LockTTL <= 0 {
		opt.LockTTL = DefaultLockTTL
	}
	if opt.Now == nil {
		opt.Now = time.Now
	}
	return &Store{rdb: rdb, k: keys{opt.KeyPrefix}, opt: opt, labels: map[string][]Code{}}
}

// pointer returns the current version, read at most PointerTTL ago.
func (s *Store) pointer(ctx context.Context) (pointer, error) {
	for {
		s.mu.Lock()
		if s.ptrOK && time.Since(s.ptrAt) < s.opt.PointerTTL {
			p := s.ptr
			s.mu.Unlock()
			return p, nil
		}
		if ch := s.fetching; ch != nil { // another goroutine is reading it
			s.mu.Unlock()
			select {
			case <-ch:
				continue
			case <-ctx.Done():
				return pointer{}, ctx.Err()
			}
		}
		ch := make(chan struct{})
		s.fetching = ch
		s.mu.Unlock()
		start := time.Now()
		p, err := s.readPointer(ctx)
		s.mu.Lock()
		s.fetching = nil
		if err == nil {
			s.ptr, s.ptrAt, s.ptrOK = p, start, true
		}
		s.mu.Unlock()
		close(ch)
		return p, err
	}
}

func (s *Store) readPointer(ctx context.Context) (pointer, error) {
	vals, err := s.rdb.HMGet(ctx, s.k.current(), "version", "buckets").Result()
	if err != nil {
		return pointer{}, err
	}
	v, _ := vals[0].(string)
	if v == "" {
		return pointer{}, nil
	}
	b, _ := vals[1].(string)
	n, err := strconv.Atoi(b)
	if err != nil || n <= 0 {
		return pointer{}, fmt.Errorf("directory: bad pointer %s: buckets %q", s.k.current(), b)
	}
	return pointer{version: v, buckets: n}, nil
}

// forgetPointer makes the next read of the pointer go to Redis.
func (s *Store) forgetPointer() {
	s.mu.Lock()
	s.ptrOK = false
	s.mu.Unlock()
}

// Loaded returns the current version's id, or "" when no directory is
// loaded (as seen at most PointerTTL ago).
func (s *Store) Loaded(ctx context.Context) (string, error) {
	p, err := s.pointer(ctx)
	return p.version, err
}

// Lookup returns idNat's entry in the current version: ErrNotLoaded when no
// directory is loaded, ErrNotFound when the idNat is not in it (or is not a
// valid idNat). One round trip (HGET), plus one per PointerTTL per process to
// read the pointer, plus the first time a process reads a version's labels
// (same round trip).
func (s *Store) Lookup(ctx context.Context, idNat string) (Identity, error) {
	pipe := s.rdb.Pipeline()
	f := s.Prefetch(ctx, pipe, idNat)
	_, _ = pipe.Exec(ctx) // errors are read per command by Identity; nothing queued: no round trip
	return f.Identity()
}

// Prefetched is a lookup queued on a caller's pipeline.
type Prefetched struct {
	idNat   string
	version string
	s       *Store
	err     error
	entry   *redis.StringCmd
	labels  *redis.StringCmd
}

// Prefetch queues the read of idNat's entry on pipe, a pipeline that the
// caller executes with its own commands, so that the lookup rides a round
// trip that happens anyway (the key is on a hash tag of its own: pipelines
// are fine on a Cluster, scripts are not). After pipe.Exec, Identity gives
// the result. Prefetch itself may read the pointer (one round trip, at most
// once per PointerTTL per process).
func (s *Store) Prefetch(ctx context.Context, pipe redis.Pipeliner, idNat string) *Prefetched {
	f := &Prefetched{idNat: idNat, s: s}
	p, err := s.pointer(ctx)
	switch {
	case err != nil:
		f.err = err
	case p.version == "":
		f.err = ErrNotLoaded
	default:
		if _, err := idnat.Parse(idNat); err != nil {
			f.err = ErrNotFound
			break
		}
		f.version = p.version
		f.entry = pipe.HGet(ctx, s.k.bucket(p.version, bucketOf(idNat, p.buckets)), idNat)
		if s.cachedLabels(p.version) == nil {
			f.labels = pipe.Get(ctx, s.k.labels(p.version))
		}
	}
	return f
}

// Identity returns the prefetched entry, once the pipeline has run.
func (f *Prefetched) Identity() (Identity, error) {
	if f.err != nil {
		return Identity{}, f.err
	}
	raw, err := f.entry.Bytes()
	if errors.Is(err, redis.Nil) {
		return Identity{}, ErrNotFound
	}
	if err != nil {
		return Identity{}, err
	}
	labels := f.s.cachedLabels(f.version)
	if labels == nil {
		if f.labels == nil {
			return Identity{}, fmt.Errorf("directory: labels of version %s not read", f.version)
		}
		b, err := f.labels.Bytes()
		if err != nil {
			return Identity{}, fmt.Errorf("directory: labels of version %s: %w", f.version, err)
		}
		if labels, err = parseLabels(b); err != nil {
			return Identity{}, fmt.Errorf("directory: labels of version %s: %w", f.version, err)
		}
		f.s.cacheLabels(f.version, labels)
	}
	e, err := decode(raw, labels)
	if err != nil {
		return Identity{}, fmt.Errorf("directory: entry %s of version %s: %w", idnat.Mask(f.idNat), f.version, err)
	}
	e.IDNat, e.Version = f.idNat, f.version
	return e, nil
}

func (s *Store) cachedLabels(version string) []Code {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.labels[version]
}

// cacheLabels keeps the labels of the last two versions seen (a version's
// labels never change).
func (s *Store) cacheLabels(version string, labels []Code) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.labels) >= 2 {
		clear(s.labels)
	}
	if labels == nil {
		labels = []Code{}
	}
	s.labels[version] = labels
}

// Status returns the summary of the current version's import, read from
// Redis now: ErrNotLoaded when none is loaded.
func (s *Store) Status(ctx context.Context) (Summary, error) {
	p, err := s.readPointer(ctx)
	if err != nil {
		return Summary{}, err
	}
	if p.version == "" {
		return Summary{}, ErrNotLoaded
	}
	raw, err := s.rdb.HGet(ctx, s.k.meta(p.version), "summary").Result()
	if err != nil {
		return Summary{}, fmt.Errorf("directory: summary of version %s: %w", p.version, err)
	}
	var sum Summary
	if err := json.Unmarshal([]byte(raw), &sum); err != nil {
		return Summary{}, fmt.Errorf("directory: summary of version %s: %w", p.version, err)
	}
	return sum, nil
}

// Clear unloads the directory: the pointer is removed at once (readers see
// no directory within PointerTTL), then, after Grace, every version. It
// returns the version that was current ("" if none).
func (s *Store) Clear(ctx context.Context) (string, error) {
	l, err := s.lock(ctx)
	if err != nil {
		return "", err
	}
	defer l.release()
	res, err := unloadScript.Run(ctx, s.rdb, []string{s.k.lock(), s.k.current()}, l.token).StringSlice()
	if err != nil {
		return "", err
	}
	if res[0] != "ok" {
		return "", errLockLost
	}
	s.forgetPointer()
	old := res[1]
	if err := sleep(ctx, s.opt.Grace); err != nil {
		return old, err
	}
	return old, s.removeAllBut(ctx, "")
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
