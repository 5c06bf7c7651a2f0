package directory

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ecps-sante/ecps/token"
)

// Summary of an import, kept with its version (Status).
type Summary struct {
	Version  string    `json:"version"`
	Replaced string    `json:"replaced,omitempty"` // the version it replaced, if any
	Started  time.Time `json:"started"`
	Finished time.Time `json:"finished"`
	// Entries is the number of practitioners in the version.
	Entries     int64      `json:"entries"`
	Activity    FileStats  `json:"activity"`
	SavoirFaire *FileStats `json:"savoir_faire,omitempty"`
	// Repeats counts the runs of lines of an idNat met again after other
	// idNats' lines (the file not sorted there): each was merged into the
	// entry written before. Dropped counts the places of activity and
	// specialties beyond MaxActivities / MaxSpecialties met in such merges.
	Repeats int64 `json:"repeats,omitempty"`
	Dropped int64 `json:"dropped,omitempty"`
	// SpecialtiesAdded counts the specialties the savoir-faire file added;
	// Unmatched its idNats absent from the activity file (ignored).
	SpecialtiesAdded int64 `json:"savoir_faire_added,omitempty"`
	Unmatched        int64 `json:"savoir_faire_unmatched,omitempty"`
	// Leftover names a version that could not be removed after the switch
	// (the next import removes it).
	Leftover string `json:"-"`
}

// Progress of an import, reported every ImportOptions.ProgressEvery.
type Progress struct {
	File    FileKind
	Lines   int64 // lines read in File
	Entries int64 // practitioners written so far
	Elapsed time.Duration
}

// ImportOptions tune an import.
type ImportOptions struct {
	// Progress, when set, is called every ProgressEvery (default 1 s).
	Progress      func(Progress)
	ProgressEvery time.Duration
	// MinRatio refuses the switch (a *ShrinkError) when the new version
	// holds fewer than MinRatio × the current version's entries: a truncated
	// file must not replace a good directory. 0 disables the check.
	MinRatio float64
}

// ErrEmpty refuses to switch to a version without any entry.
var ErrEmpty = errors.New("directory: no valid line in the file: the current version stays")

// ShrinkError refuses to switch to a version much smaller than the current one.
type ShrinkError struct {
	Entries, Current int64
	MinRatio         float64
}

func (e *ShrinkError) Error() string {
	return fmt.Sprintf("directory: the new version holds %d entries, fewer than %.0f%% of the current one's %d: the current version stays",
		e.Entries, e.MinRatio*100, e.Current)
}

var (
	errLockLost = errors.New("directory: the import lost its lock (another import may have started): nothing switched")
	errKilled   = errors.New("directory: import killed (test)")
)

// batchSize is the number of practitioners written per pipeline.
const batchSize = 1000

// Import reads src and makes it the current version. Both headers are
// checked first: a *HeaderError refuses the import before anything is
// written. Then, holding the lock, it removes what killed imports left
// behind, writes the new version beside the current one, switches the
// pointer in one step, and removes the replaced version after Grace.
// Readers see the old version or the new one, never a mix or nothing. On
// any error before the switch the current version stays and the new one is
// removed (or, if the process dies, left for the next import to remove).
func (s *Store) Import(ctx context.Context, src Source, opt ImportOptions) (sum Summary, err error) {
	act, err := NewParser(src.Activity, ActivityFile)
	if err != nil {
		return sum, err
	}
	var sf *Parser
	if src.SavoirFaire != nil {
		if sf, err = NewParser(src.SavoirFaire, SavoirFaireFile); err != nil {
			return sum, err
		}
	}
	l, err := s.lock(ctx)
	if err != nil {
		return sum, err
	}
	defer func() {
		if errors.Is(err, errKilled) {
			l.abandon()
			return
		}
		l.release()
	}()
	cur, err := s.readPointer(ctx)
	if err != nil {
		return sum, err
	}
	if err := s.removeAllBut(ctx, cur.version); err != nil {
		return sum, fmt.Errorf("directory: removing the leftovers of earlier imports: %w", err)
	}

	now := s.opt.Now().UTC()
	im := &importer{s: s, lock: l, opt: opt, version: now.Format("20060102T150405Z") + "-" + token.New(3),
		buckets: s.opt.Buckets, labels: newLabelTable(), start: time.Now()}
	sum.Version, sum.Started, sum.Replaced = im.version, now, cur.version
	_, err = s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.SAdd(ctx, s.k.versions(), im.version)
		p.HSet(ctx, s.k.meta(im.version), "state", "importing", "buckets", im.buckets,
			"started", now.Format(time.RFC3339), "file", src.ActivityName)
		return nil
	})
	if err != nil {
		return sum, err
	}
	defer func() {
		if err != nil && !errors.Is(err, errKilled) {
			cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
			defer cancel()
			_ = s.removeVersion(cctx, im.version) // else the next import does
		}
	}()

	if err := im.activityPass(ctx, act); err != nil {
		return sum, err
	}
	sum.Activity = act.Stats()
	sum.Activity.Name = src.ActivityName
	if sf != nil {
		if err := im.savoirFairePass(ctx, sf); err != nil {
			return sum, err
		}
		st := sf.Stats()
		st.Name = src.SavoirFaireName
		sum.SavoirFaire = &st
	}
	sum.Repeats, sum.Dropped = im.repeats+im.wRepeats, im.dropped+im.wDropped
	sum.SpecialtiesAdded, sum.Unmatched = im.sfAdded, im.sfUnmatched
	if err := s.rdb.Set(ctx, s.k.labels(im.version), im.labels.marshal(), 0).Err(); err != nil {
		return sum, err
	}
	if sum.Entries, err = im.count(ctx); err != nil {
		return sum, err
	}
	if sum.Entries == 0 {
		return sum, ErrEmpty
	}
	if cur.version != "" && opt.MinRatio > 0 {
		prev, err := s.summary(ctx, cur.version)
		if err != nil {
			return sum, err
		}
		if float64(sum.Entries) < opt.MinRatio*float64(prev.Entries) {
			return sum, &ShrinkError{Entries: sum.Entries, Current: prev.Entries, MinRatio: opt.MinRatio}
		}
	}

	sum.Finished = s.opt.Now().UTC()
	js, err := json.Marshal(sum)
	if err != nil {
		return sum, err
	}
	res, err := switchScript.Run(ctx, s.rdb, []string{s.k.lock(), s.k.current(), s.k.meta(im.version)},
		l.token, im.version, im.buckets, js).StringSlice()
	if err != nil {
		return sum, err
	}
	if res[0] != "ok" {
		return sum, errLockLost
	}
	s.forgetPointer()
	if old := res[1]; old != "" {
		// Readers that read the pointer just before the switch still use
		// the old version for up to PointerTTL.
		if sleep(ctx, s.opt.Grace) != nil || s.removeVersion(ctx, old) != nil {
			sum.Leftover = old
		}
	}
	return sum, nil
}

func (s *Store) summary(ctx context.Context, version string) (Summary, error) {
	var sum Summary
	raw, err := s.rdb.HGet(ctx, s.k.meta(version), "summary").Bytes()
	if err == nil {
		err = json.Unmarshal(raw, &sum)
	}
	if err != nil {
		return sum, fmt.Errorf("directory: summary of version %s: %w", version, err)
	}
	return sum, nil
}

// importer writes one version.
type importer struct {
	s       *Store
	lock    *importLock
	opt     ImportOptions
	version string
	buckets int
	labels  *labelTable // the writer's (the writing goroutine's)
	start   time.Time
	written atomic.Int64 // new fields written (progress only; count() is exact)
	batches int

	repeats, dropped   int64 // producer side: runs merged within a batch
	wRepeats, wDropped int64 // writer side: runs merged with an entry already written
	sfAdded            int64
	sfUnmatched        int64
}

type item struct {
	e     *Identity
	maybe bool // the idNat may have been written by an earlier batch
}

func (im *importer) key(idNat string) string {
	return im.s.k.bucket(im.version, bucketOf(idNat, im.buckets))
}

func (im *importer) report(kind FileKind, p *Parser, last *time.Time) {
	every := im.opt.ProgressEvery
	if every <= 0 {
		every = time.Second
	}
	if im.opt.Progress == nil || time.Since(*last) < every {
		return
	}
	*last = time.Now()
	im.opt.Progress(Progress{File: kind, Lines: p.stats.Lines, Entries: im.written.Load(), Elapsed: time.Since(im.start)})
}

// activityPass reads the activity file in this goroutine and writes in
// another, one batch ahead at most: parsing and Redis's work overlap, and
// memory stays bounded (three batches).
func (im *importer) activityPass(ctx context.Context, p *Parser) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	batches := make(chan []item, 1)
	werr := make(chan error, 1)
	go func() {
		var err error
		for b := range batches {
			if err == nil {
				if err = im.writeBatch(ctx, b); err != nil {
					cancel(err)
				}
			}
		}
		werr <- err
	}()
	perr := im.produce(ctx, p, batches)
	if err := <-werr; err != nil {
		return err
	}
	return perr
}

func (im *importer) produce(ctx context.Context, p *Parser, out chan<- []item) error {
	defer close(out)
	seen := newSeenFilter()
	batch := make([]item, 0, batchSize)
	index := make(map[string]int, batchSize)
	last := time.Now()
	send := func() error {
		select {
		case out <- batch:
		case <-ctx.Done():
			return context.Cause(ctx)
		}
		batch = make([]item, 0, batchSize)
		clear(index)
		return nil
	}
	for n := 0; ; n++ {
		e, err := p.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("directory: reading the activity file at line %d: %w", p.Line(), err)
		}
		if i, ok := index[e.IDNat]; ok {
			im.dropped += int64(batch[i].e.merge(e))
			im.repeats++
			continue
		}
		index[e.IDNat] = len(batch)
		batch = append(batch, item{e: e, maybe: seen.add(e.IDNat)})
		if len(batch) == batchSize {
			if err := send(); err != nil {
				return err
			}
		}
		if n%256 == 0 {
			im.report(ActivityFile, p, &last)
		}
	}
	if len(batch) > 0 {
		return send()
	}
	return nil
}

// writeBatch merges the entries an earlier batch may have written, then
// writes the batch.
func (im *importer) writeBatch(ctx context.Context, b []item) error {
	if im.lock.lost.Load() {
		return errLockLost
	}
	gets := make([]*redis.StringCmd, len(b))
	pipe := im.s.rdb.Pipeline()
	for i, it := range b {
		if it.maybe {
			gets[i] = pipe.HGet(ctx, im.key(it.e.IDNat), it.e.IDNat)
		}
	}
	if pipe.Len() > 0 {
		if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
			return err
		}
	}
	for i, g := range gets {
		if g == nil {
			continue
		}
		stored, found, err := im.decode(g, b[i].e.IDNat)
		if err != nil {
			return err
		}
		if found {
			im.wDropped += int64(stored.merge(b[i].e))
			im.wRepeats++
			b[i].e = stored
		}
	}
	return im.put(ctx, b)
}

func (im *importer) decode(g *redis.StringCmd, idNat string) (*Identity, bool, error) {
	raw, err := g.Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	e, err := decode(raw, im.labels.list)
	if err != nil {
		return nil, false, fmt.Errorf("directory: reading back %s: %w", idNat, err)
	}
	e.IDNat = idNat
	return &e, true, nil
}

// put writes the entries: one HSET per bucket, all in one pipeline.
func (im *importer) put(ctx context.Context, b []item) error {
	groups := make(map[int][]any, len(b))
	var arena []byte
	for _, it := range b {
		start := len(arena)
		arena = im.labels.encode(arena, it.e)
		bk := bucketOf(it.e.IDNat, im.buckets)
		groups[bk] = append(groups[bk], it.e.IDNat, arena[start:len(arena):len(arena)])
	}
	pipe := im.s.rdb.Pipeline()
	cmds := make([]*redis.IntCmd, 0, len(groups))
	for bk, args := range groups {
		cmds = append(cmds, pipe.HSet(ctx, im.s.k.bucket(im.version, bk), args...))
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return err
	}
	for _, c := range cmds {
		im.written.Add(c.Val())
	}
	im.batches++
	if im.s.crashAfter > 0 && im.batches >= im.s.crashAfter {
		return errKilled
	}
	return nil
}

// savoirFairePass adds the savoir-faire file's specialties to the entries
// written: per batch, one pipeline reads them, one writes them back.
func (im *importer) savoirFairePass(ctx context.Context, p *Parser) error {
	batch := make([]item, 0, batchSize)
	index := make(map[string]int, batchSize)
	last := time.Now()
	flush := func() error {
		if im.lock.lost.Load() {
			return errLockLost
		}
		pipe := im.s.rdb.Pipeline()
		gets := make([]*redis.StringCmd, len(batch))
		for i, it := range batch {
			gets[i] = pipe.HGet(ctx, im.key(it.e.IDNat), it.e.IDNat)
		}
		if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
			return err
		}
		var found []item
		for i, g := range gets {
			stored, ok, err := im.decode(g, batch[i].e.IDNat)
			if err != nil {
				return err
			}
			if !ok {
				im.sfUnmatched++
				continue
			}
			n := len(stored.Specialties)
			im.wDropped += int64(stored.merge(batch[i].e))
			if added := len(stored.Specialties) - n; added > 0 {
				im.sfAdded += int64(added)
				found = append(found, item{e: stored})
			}
		}
		batch = batch[:0]
		clear(index)
		if len(found) == 0 {
			return nil
		}
		return im.put(ctx, found)
	}
	for n := 0; ; n++ {
		e, err := p.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("directory: reading the savoir-faire file at line %d: %w", p.Line(), err)
		}
		if i, ok := index[e.IDNat]; ok {
			im.dropped += int64(batch[i].e.merge(e))
			continue
		}
		index[e.IDNat] = len(batch)
		batch = append(batch, item{e: e})
		if len(batch) == batchSize {
			if err := flush(); err != nil {
				return err
			}
		}
		if n%256 == 0 {
			im.report(SavoirFaireFile, p, &last)
		}
	}
	if len(batch) > 0 {
		return flush()
	}
	return nil
}

// count is the exact number of entries: the sum of the buckets' HLEN.
func (im *importer) count(ctx context.Context) (int64, error) {
	var total int64
	for from := 0; from < im.buckets; from += 1000 {
		pipe := im.s.rdb.Pipeline()
		cmds := make([]*redis.IntCmd, 0, 1000)
		for b := from; b < min(from+1000, im.buckets); b++ {
			cmds = append(cmds, pipe.HLen(ctx, im.s.k.bucket(im.version, b)))
		}
		if _, err := pipe.Exec(ctx); err != nil {
			return 0, err
		}
		for _, c := range cmds {
			total += c.Val()
		}
	}
	return total, nil
}

// removeVersion removes a version that is not current: its buckets (one
// UNLINK per key, pipelined by 1000: Redis frees them in the background),
// then its labels and meta, and last its name in {dir}:versions, so that a
// removal cut short is taken up again by the next import.
func (s *Store) removeVersion(ctx context.Context, v string) error {
	buckets, err := s.rdb.HGet(ctx, s.k.meta(v), "buckets").Int()
	if err != nil && !errors.Is(err, redis.Nil) {
		return err
	}
	// Without meta (written before any bucket, removed after all) no bucket is left.
	for from := 0; from < buckets; from += 1000 {
		pipe := s.rdb.Pipeline()
		for b := from; b < min(from+1000, buckets); b++ {
			pipe.Unlink(ctx, s.k.bucket(v, b))
		}
		if _, err := pipe.Exec(ctx); err != nil {
			return err
		}
	}
	_, err = s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.Unlink(ctx, s.k.labels(v), s.k.meta(v))
		p.SRem(ctx, s.k.versions(), v)
		return nil
	})
	return err
}

// removeAllBut removes every version but keep.
func (s *Store) removeAllBut(ctx context.Context, keep string) error {
	vs, err := s.rdb.SMembers(ctx, s.k.versions()).Result()
	if err != nil {
		return err
	}
	for _, v := range vs {
		if v == keep {
			continue
		}
		if err := s.removeVersion(ctx, v); err != nil {
			return err
		}
	}
	return nil
}

// importLock is the lock of an import or clear, renewed while held.
type importLock struct {
	s     *Store
	token string
	lost  atomic.Bool
	stop  chan struct{}
	done  chan struct{}
}

func (s *Store) lock(ctx context.Context) (*importLock, error) {
	l := &importLock{s: s, token: token.New(16), stop: make(chan struct{}), done: make(chan struct{})}
	ok, err := s.rdb.SetNX(ctx, s.k.lock(), l.token, s.opt.LockTTL).Result()
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, ErrBusy
	}
	go l.renew()
	return l, nil
}

func (l *importLock) renew() {
	defer close(l.done)
	t := time.NewTicker(l.s.opt.LockTTL / 3)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
			ctx, cancel := context.WithTimeout(context.Background(), l.s.opt.LockTTL/3)
			n, err := renewLockScript.Run(ctx, l.s.rdb, []string{l.s.k.lock()}, l.token, l.s.opt.LockTTL.Milliseconds()).Int()
			cancel()
			if err == nil && n == 0 {
				l.lost.Store(true)
			}
		}
	}
}

// release stops the renewal and gives the lock back.
func (l *importLock) release() {
	l.abandon()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = unlockScript.Run(ctx, l.s.rdb, []string{l.s.k.lock()}, l.token).Err()
}

// abandon stops the renewal only: the lock expires after LockTTL.
func (l *importLock) abandon() {
	close(l.stop)
	<-l.done
}
