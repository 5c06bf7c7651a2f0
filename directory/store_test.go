package directory

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ecps-sante/ecps/directory/directorytest"
	"github.com/ecps-sante/ecps/keyslot"
	"github.com/ecps-sante/ecps/redistest"
)

// fixture is a Store on the test Redis, with short timings, and a hook that
// counts round trips and checks that no command crosses Cluster slots.
type fixture struct {
	t      *testing.T
	s      *Store
	rdb    redis.UniversalClient
	prefix string
	hook   *hook
	opt    Options
}

func newFixture(t *testing.T, opt Options) *fixture {
	t.Helper()
	rdb, prefix := redistest.Client(t)
	opt.KeyPrefix = prefix
	if opt.PointerTTL == 0 {
		opt.PointerTTL = 50 * time.Millisecond
	}
	if opt.Grace == 0 {
		opt.Grace = 150 * time.Millisecond
	}
	if opt.Buckets == 0 {
		opt.Buckets = 64
	}
	h := &hook{t: t}
	rdb.AddHook(h)
	return &fixture{t: t, s: NewStore(rdb, opt), rdb: rdb, prefix: prefix, hook: h, opt: opt}
}

// reader is another process's Store on the same Redis (its own caches).
func (f *fixture) reader() *Store { return NewStore(f.rdb, f.opt) }

func (f *fixture) importFiles(act, sf string, opt ImportOptions) (Summary, error) {
	f.t.Helper()
	src := Source{Activity: bytes.NewReader(readFile(f.t, act)), ActivityName: act}
	if sf != "" {
		src.SavoirFaire, src.SavoirFaireName = bytes.NewReader(readFile(f.t, sf)), sf
	}
	return f.s.Import(context.Background(), src, opt)
}

func (f *fixture) importBytes(act []byte, opt ImportOptions) (Summary, error) {
	return f.s.Import(context.Background(), Source{Activity: bytes.NewReader(act), ActivityName: "test.txt"}, opt)
}

// keys lists the fixture's keys in Redis.
func (f *fixture) keys() []string {
	f.t.Helper()
	var out []string
	iter := f.rdb.Scan(context.Background(), 0, f.prefix+"*", 1000).Iterator()
	for iter.Next(context.Background()) {
		out = append(out, strings.TrimPrefix(iter.Val(), f.prefix))
	}
	if err := iter.Err(); err != nil {
		f.t.Fatal(err)
	}
	slices.Sort(out)
	return out
}

// keysOf lists the keys of version v (buckets, labels, meta).
func (f *fixture) keysOf(v string) []string {
	var out []string
	for _, k := range f.keys() {
		if strings.HasSuffix(k, ":"+v) {
			out = append(out, k)
		}
	}
	return out
}

func (f *fixture) lookup(id string) (Identity, error) {
	return f.s.Lookup(context.Background(), id)
}

// hook counts round trips and fails the test on a command (or a MULTI
// block) whose keys are not all in one Cluster slot.
type hook struct {
	t     *testing.T
	trips atomic.Int64
}

func (h *hook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *hook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.trips.Add(1)
		h.checkSlots([]redis.Cmder{cmd}, false)
		return next(ctx, cmd)
	}
}

func (h *hook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		h.trips.Add(1)
		tx := len(cmds) > 0 && cmds[0].Name() == "multi"
		h.checkSlots(cmds, tx)
		return next(ctx, cmds)
	}
}

// checkSlots: every command's keys in one slot; with tx, all commands' keys.
func (h *hook) checkSlots(cmds []redis.Cmder, tx bool) {
	slot := -1
	for _, cmd := range cmds {
		if !tx {
			slot = -1
		}
		for _, k := range cmdKeys(cmd) {
			s := int(keyslot.Of(k))
			if slot >= 0 && s != slot {
				h.t.Errorf("CROSSSLOT in a Cluster: %v (tx %v)", cmd.Args(), tx)
			}
			slot = s
		}
	}
}

func cmdKeys(cmd redis.Cmder) []string {
	args := cmd.Args()
	str := func(a []any) []string {
		var out []string
		for _, v := range a {
			out = append(out, fmt.Sprint(v))
		}
		return out
	}
	switch cmd.Name() {
	case "multi", "exec", "ping", "scan", "info", "hello", "client", "select":
		return nil
	case "evalsha", "eval":
		n := 0
		fmt.Sscan(fmt.Sprint(args[2]), &n)
		return str(args[3 : 3+n])
	case "unlink", "del", "exists", "mget":
		return str(args[1:])
	}
	if len(args) < 2 {
		return nil
	}
	return str(args[1:2])
}

// The sample with its savoir-faire file: entries merged across runs and
// files, every value as the contract shapes it.
func TestImportAndLookup(t *testing.T) {
	f := newFixture(t, Options{})
	sum, err := f.importFiles(activityFile, savoirFaireFile, ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if sum.Entries != 5 || sum.Repeats != 1 || sum.SpecialtiesAdded != 2 || sum.Unmatched != 1 || sum.Replaced != "" || sum.Leftover != "" {
		t.Errorf("summary %s", toJSON(t, sum))
	}
	if sum.Activity.Lines != 13 || sum.Activity.RejectedLines() != 4 || sum.SavoirFaire == nil ||
		sum.SavoirFaire.Lines != 5 || sum.SavoirFaire.RejectedLines() != 1 || sum.SavoirFaire.Rejected[RejectIDNatEmpty] == nil {
		t.Errorf("file stats %s", toJSON(t, sum))
	}
	if v, err := f.s.Loaded(context.Background()); err != nil || v != sum.Version {
		t.Errorf("Loaded = %q, %v; want %q", v, err, sum.Version)
	}
	var all []Identity
	for _, id := range []string{idDupre, idNdiaye, idBenoit, idGarcon, idHebert} {
		e, err := f.lookup(id)
		if err != nil {
			t.Fatalf("Lookup(%s): %v", id, err)
		}
		if e.Version != sum.Version {
			t.Errorf("directory_version %q, want %q", e.Version, sum.Version)
		}
		e.Version = "<version>"
		all = append(all, e)
	}
	golden(t, "lookup.golden.json", toJSON(t, all))

	dupre := all[0]
	var places, specialties []string
	for _, a := range dupre.Activities {
		places = append(places, string(a.Site.City)+" "+string(a.Site.Department))
	}
	for _, s := range dupre.Specialties {
		specialties = append(specialties, string(s.Code))
	}
	if !slices.Equal(places, []string{"PARIS 75", "BASTIA 2B", "SARTÈNE 2A"}) || !slices.Equal(specialties, []string{"SM54", "SM04", "SM32"}) {
		t.Errorf("%s: places %v, specialties %v", idDupre, places, specialties)
	}
	for _, id := range []string{idMartin, "810000000397", "not an idnat", ""} {
		if _, err := f.lookup(id); !errors.Is(err, ErrNotFound) {
			t.Errorf("Lookup(%q) = %v, want ErrNotFound", id, err)
		}
	}
	st, err := f.s.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	sum.Started, st.Started = sum.Started.UTC(), st.Started.UTC()
	sum.Finished, st.Finished = sum.Finished.UTC(), st.Finished.UTC()
	if !reflect.DeepEqual(st, sum) {
		t.Errorf("Status %s, want %s", toJSON(t, st), toJSON(t, sum))
	}
}

func TestNothingLoaded(t *testing.T) {
	f := newFixture(t, Options{})
	ctx := context.Background()
	if _, err := f.lookup(idDupre); !errors.Is(err, ErrNotLoaded) {
		t.Errorf("Lookup = %v, want ErrNotLoaded", err)
	}
	if v, err := f.s.Loaded(ctx); v != "" || err != nil {
		t.Errorf("Loaded = %q, %v", v, err)
	}
	if _, err := f.s.Status(ctx); !errors.Is(err, ErrNotLoaded) {
		t.Errorf("Status = %v, want ErrNotLoaded", err)
	}
	if v, err := f.s.Clear(ctx); v != "" || err != nil {
		t.Errorf("Clear = %q, %v", v, err)
	}
	if k := f.keys(); len(k) != 0 {
		t.Errorf("keys left: %v", k)
	}
}

func TestImportWindows1252(t *testing.T) {
	f := newFixture(t, Options{})
	sum, err := f.importFiles(cp1252File, "", ImportOptions{})
	if err != nil || sum.Activity.Encoding != "windows-1252" || sum.Entries != 2 {
		t.Fatalf("%v %s", err, toJSON(t, sum))
	}
	e, err := f.lookup(idNoel)
	if err != nil || e.FamilyName != "NOËL" || e.Activities[0].Site.Name != "CLINIQUE DU SACRÉ-CŒUR" {
		t.Errorf("%v %s", err, toJSON(t, e))
	}
}

// A header without a needed column is refused before anything is written:
// the current version and every key stay as they were.
func TestImportHeaderRefused(t *testing.T) {
	f := newFixture(t, Options{})
	v1, err := f.importFiles(activityFile, "", ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * f.opt.PointerTTL)
	before := f.keys()
	sample := readFile(t, activityFile)
	for _, tt := range []struct {
		name     string
		act, sf  []byte
		wantKind FileKind
	}{
		{"activity", bytes.Replace(sample, []byte("|Code postal (coord. structure)|"), []byte("|Code postal|"), 1), nil, ActivityFile},
		{"savoir-faire", sample, bytes.Replace(readFile(t, savoirFaireFile), []byte("Code savoir-faire"), []byte("Code"), 1), SavoirFaireFile},
	} {
		t.Run(tt.name, func(t *testing.T) {
			src := Source{Activity: bytes.NewReader(tt.act)}
			if tt.sf != nil {
				src.SavoirFaire = bytes.NewReader(tt.sf)
			}
			f.hook.trips.Store(0)
			_, err := f.s.Import(context.Background(), src, ImportOptions{})
			var he *HeaderError
			if !errors.As(err, &he) || he.Kind != tt.wantKind {
				t.Fatalf("Import = %v, want a HeaderError of the %s", err, tt.wantKind)
			}
			if n := f.hook.trips.Load(); n != 0 {
				t.Errorf("%d round trips to Redis, want none", n)
			}
			if after := f.keys(); !slices.Equal(after, before) {
				t.Errorf("keys changed:\n%v\n%v", before, after)
			}
			if e, err := f.lookup(idDupre); err != nil || e.Version != v1.Version {
				t.Errorf("Lookup = %v, %v", e.Version, err)
			}
		})
	}
}

// synthetic returns a synthetic extract and the same practitioners with
// every family name prefixed by mark.
func synthetic(t testing.TB, lines int, seed uint64) []byte {
	t.Helper()
	var b bytes.Buffer
	if _, err := directorytest.Write(&b, directorytest.Options{Lines: lines, Seed: seed}); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func remark(t testing.TB, extract []byte, mark string) []byte {
	t.Helper()
	col := slices.Index(directorytest.ActivityHeader, "Nom d'exercice")
	lines := bytes.Split(extract, []byte("\n"))
	for i := 1; i < len(lines); i++ {
		f := bytes.Split(lines[i], []byte("|"))
		if len(f) > col {
			f[col] = append([]byte(mark), f[col]...)
			lines[i] = bytes.Join(f, []byte("|"))
		}
	}
	return bytes.Join(lines, []byte("\n"))
}

// expected parses an extract into the entries a lookup must return.
func expected(t testing.TB, extract []byte) map[string]Identity {
	t.Helper()
	runs, _ := parseAll(t, bytes.NewReader(extract), ActivityFile)
	out := map[string]Identity{}
	for _, e := range runs {
		if prev, ok := out[e.IDNat]; ok {
			prev.merge(e)
			out[e.IDNat] = prev
			continue
		}
		out[e.IDNat] = normalized(*e)
	}
	return out
}

// Lookups running in a loop in other "processes" during an import see the
// old version or the new one, each entry whole, never nothing; once a
// reader has seen the new version it never sees the old one again.
func TestSwitchIsAtomic(t *testing.T) {
	f := newFixture(t, Options{})
	old := remark(t, synthetic(t, 6000, 7), "OLD-")
	neu := remark(t, synthetic(t, 6000, 7), "NEW-")
	want := map[string]map[string]Identity{"OLD-": expected(t, old), "NEW-": expected(t, neu)}
	var ids []string
	for id := range want["OLD-"] {
		ids = append(ids, id)
	}
	v1, err := f.importBytes(old, ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}

	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var seen [2]atomic.Int64
	for r := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := f.reader()
			rng := rand.New(rand.NewPCG(uint64(r), 1))
			sawNew := false
			for ctx.Err() == nil {
				id := ids[rng.IntN(len(ids))]
				e, err := s.Lookup(context.Background(), id)
				if err != nil {
					t.Errorf("reader %d: Lookup(%s) = %v", r, id, err)
					return
				}
				mark := "OLD-"
				if e.Version != v1.Version {
					mark, sawNew = "NEW-", true
				} else if sawNew {
					t.Errorf("reader %d: saw the old version after the new one", r)
					return
				}
				if !strings.HasPrefix(string(e.FamilyName), mark) {
					t.Errorf("reader %d: version %s with family name %q: a mix", r, e.Version, e.FamilyName)
					return
				}
				e.Version = ""
				if w := want[mark][id]; !reflect.DeepEqual(e, w) {
					t.Errorf("reader %d: %s\n%s\nwant\n%s", r, mark, toJSON(t, e), toJSON(t, w))
					return
				}
				seen[len(mark)-4+boolInt(mark == "NEW-")].Add(1)
			}
		}()
	}
	time.Sleep(100 * time.Millisecond)
	v2, err := f.importBytes(neu, ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * f.opt.PointerTTL)
	stop()
	wg.Wait()
	t.Logf("lookups: %d old, %d new", seen[0].Load(), seen[1].Load())
	if seen[0].Load() == 0 || seen[1].Load() == 0 {
		t.Errorf("lookups saw %d old, %d new: want both", seen[0].Load(), seen[1].Load())
	}
	if v2.Replaced != v1.Version || len(f.keysOf(v1.Version)) != 0 {
		t.Errorf("replaced %q; keys of the old version left: %v", v2.Replaced, f.keysOf(v1.Version))
	}
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// An import killed midway (no cleanup, lock kept until it expires) leaves
// the current version serving; the next import removes its leftovers.
func TestKilledImportIsCleanedByTheNext(t *testing.T) {
	f := newFixture(t, Options{LockTTL: 300 * time.Millisecond})
	v1extract := synthetic(t, 3000, 1)
	v1, err := f.importBytes(v1extract, ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	f.s.crashAfter = 2
	_, err = f.importBytes(synthetic(t, 9000, 2), ImportOptions{})
	if !errors.Is(err, errKilled) {
		t.Fatalf("Import = %v, want it killed", err)
	}
	f.s.crashAfter = 0
	versions, _ := f.rdb.SMembers(context.Background(), f.prefix+"{dir}:versions").Result()
	if len(versions) != 2 {
		t.Fatalf("versions %v, want the current one and the killed one", versions)
	}
	killed := versions[0]
	if killed == v1.Version {
		killed = versions[1]
	}
	if n := len(f.keysOf(killed)); n < 10 {
		t.Fatalf("the killed import left %d keys, want its buckets", n)
	}
	if _, err := f.importBytes(v1extract, ImportOptions{}); !errors.Is(err, ErrBusy) {
		t.Errorf("import while the killed one's lock lives = %v, want ErrBusy", err)
	}
	r := f.reader()
	for id, want := range expected(t, v1extract) {
		e, err := r.Lookup(context.Background(), id)
		if err != nil || e.Version != v1.Version {
			t.Fatalf("after the kill, Lookup(%s) = %s, %v", id, e.Version, err)
		}
		if e.Version = ""; !reflect.DeepEqual(e, want) {
			t.Fatalf("after the kill, Lookup(%s) = %s", id, toJSON(t, e))
		}
	}
	time.Sleep(f.opt.LockTTL + 50*time.Millisecond)
	v3, err := f.importBytes(synthetic(t, 3000, 3), ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if left := f.keysOf(killed); len(left) != 0 {
		t.Errorf("keys of the killed import left: %v", left)
	}
	var want []string
	for b := range f.opt.Buckets {
		if n, _ := f.rdb.Exists(context.Background(), f.s.k.bucket(v3.Version, b)).Result(); n == 1 {
			want = append(want, strings.TrimPrefix(f.s.k.bucket(v3.Version, b), f.prefix))
		}
	}
	want = append(want, "{dir}:current", "{dir}:labels:"+v3.Version, "{dir}:meta:"+v3.Version, "{dir}:versions")
	slices.Sort(want)
	if got := f.keys(); !slices.Equal(got, want) {
		t.Errorf("keys after the next import:\n%v\nwant\n%v", got, want)
	}
}

// An import that fails before its switch removes what it wrote.
func TestFailedImportsLeaveNothing(t *testing.T) {
	f := newFixture(t, Options{})
	v1, err := f.importBytes(synthetic(t, 200, 1), ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	before := f.keys()
	check := func(t *testing.T) {
		t.Helper()
		if after := f.keys(); !slices.Equal(after, before) {
			t.Errorf("keys changed:\n%v\n%v", before, after)
		}
		if e, err := f.reader().Lookup(context.Background(), firstID(t, synthetic(t, 200, 1))); err != nil || e.Version != v1.Version {
			t.Errorf("Lookup = %q, %v", e.Version, err)
		}
	}
	t.Run("empty", func(t *testing.T) {
		_, err := f.importBytes([]byte(header+row(idDupre, map[string]string{"Identification nationale PP": ""})), ImportOptions{})
		if !errors.Is(err, ErrEmpty) {
			t.Errorf("Import = %v, want ErrEmpty", err)
		}
		check(t)
	})
	t.Run("shrunk", func(t *testing.T) {
		_, err := f.importBytes(synthetic(t, 100, 1), ImportOptions{MinRatio: 0.9})
		var se *ShrinkError
		if !errors.As(err, &se) || se.Current != v1.Entries {
			t.Errorf("Import = %v, want a ShrinkError", err)
		}
		check(t)
	})
	t.Run("read error", func(t *testing.T) {
		src := Source{Activity: failingReader(synthetic(t, 3000, 5), errors.New("disk on fire"))}
		_, err := f.s.Import(context.Background(), src, ImportOptions{})
		if err == nil || !strings.Contains(err.Error(), "disk on fire") {
			t.Errorf("Import = %v", err)
		}
		check(t)
	})
	t.Run("cancelled", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		extract := synthetic(t, 20000, 5)
		r := &cancelAt{r: bytes.NewReader(extract), at: len(extract) / 2, cancel: cancel}
		_, err := f.s.Import(ctx, Source{Activity: r}, ImportOptions{})
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Import = %v", err)
		}
		check(t)
	})
	t.Run("shrunk but forced", func(t *testing.T) {
		if _, err := f.importBytes(synthetic(t, 100, 1), ImportOptions{}); err != nil {
			t.Error(err)
		}
	})
}

func firstID(t testing.TB, extract []byte) string {
	runs, _ := parseAll(t, bytes.NewReader(extract), ActivityFile)
	return runs[0].IDNat
}

func TestImportBusy(t *testing.T) {
	f := newFixture(t, Options{})
	if err := f.rdb.Set(context.Background(), f.prefix+"{dir}:lock", "someone", time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	if _, err := f.importFiles(activityFile, "", ImportOptions{}); !errors.Is(err, ErrBusy) {
		t.Errorf("Import = %v, want ErrBusy", err)
	}
	if _, err := f.s.Clear(context.Background()); !errors.Is(err, ErrBusy) {
		t.Errorf("Clear = %v, want ErrBusy", err)
	}
}

func TestClear(t *testing.T) {
	f := newFixture(t, Options{})
	v1, err := f.importFiles(activityFile, savoirFaireFile, ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	r := f.reader()
	if _, err := r.Lookup(context.Background(), idDupre); err != nil {
		t.Fatal(err)
	}
	v, err := f.s.Clear(context.Background())
	if err != nil || v != v1.Version {
		t.Fatalf("Clear = %q, %v", v, err)
	}
	if _, err := f.lookup(idDupre); !errors.Is(err, ErrNotLoaded) {
		t.Errorf("Lookup after Clear = %v, want ErrNotLoaded", err)
	}
	time.Sleep(f.opt.PointerTTL)
	if _, err := r.Lookup(context.Background(), idDupre); !errors.Is(err, ErrNotLoaded) {
		t.Errorf("another process's Lookup after Clear = %v, want ErrNotLoaded", err)
	}
	if k := f.keys(); len(k) != 0 {
		t.Errorf("keys left: %v", k)
	}
}

// A file whose practitioners' lines are scattered gives the same entries
// (up to the order of places of activity) as the sorted file.
func TestImportUnsorted(t *testing.T) {
	f := newFixture(t, Options{})
	sorted := synthetic(t, 5000, 11)
	lines := bytes.SplitAfter(sorted, []byte("\n"))
	body := lines[1:]
	rand.New(rand.NewPCG(1, 2)).Shuffle(len(body), func(i, j int) { body[i], body[j] = body[j], body[i] })
	shuffled := bytes.Join(append([][]byte{lines[0]}, body...), nil)
	sum, err := f.importBytes(shuffled, ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	want := expected(t, sorted)
	if sum.Entries != int64(len(want)) || sum.Repeats == 0 {
		t.Errorf("entries %d, want %d; repeats %d", sum.Entries, len(want), sum.Repeats)
	}
	for id, w := range want {
		e, err := f.lookup(id)
		if err != nil {
			t.Fatal(err)
		}
		e.Version = ""
		if !reflect.DeepEqual(sortedLists(e), sortedLists(w)) {
			t.Fatalf("%s:\n%s\nwant\n%s", id, toJSON(t, e), toJSON(t, w))
		}
	}
}

func sortedLists(e Identity) Identity {
	e.Activities = slices.Clone(e.Activities)
	slices.SortFunc(e.Activities, func(a, b Activity) int { return strings.Compare(toKey(a), toKey(b)) })
	e.Specialties = slices.Clone(e.Specialties)
	slices.SortFunc(e.Specialties, func(a, b Code) int { return strings.Compare(string(a.Code+a.Label), string(b.Code+b.Label)) })
	return e
}

func toKey(a Activity) string { return fmt.Sprintf("%v %v %v", a.Mode, a.Sector, a.Site) }

// Round trips of a lookup: one HGET once the pointer and the labels are
// cached; none of its own when prefetched on the caller's pipeline.
func TestLookupRoundTrips(t *testing.T) {
	f := newFixture(t, Options{PointerTTL: time.Hour})
	if _, err := f.importFiles(activityFile, "", ImportOptions{}); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	r := NewStore(f.rdb, Options{KeyPrefix: f.prefix, PointerTTL: time.Hour})
	f.hook.trips.Store(0)
	if _, err := r.Lookup(ctx, idDupre); err != nil {
		t.Fatal(err)
	}
	if n := f.hook.trips.Load(); n != 2 {
		t.Errorf("first lookup of a process: %d round trips, want 2 (pointer; entry + labels)", n)
	}
	f.hook.trips.Store(0)
	if _, err := r.Lookup(ctx, idHebert); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Lookup(ctx, idMartin); !errors.Is(err, ErrNotFound) {
		t.Fatal(err)
	}
	if n := f.hook.trips.Load(); n != 2 {
		t.Errorf("two lookups: %d round trips, want 2", n)
	}

	f.hook.trips.Store(0)
	pipe := f.rdb.Pipeline()
	own := pipe.Get(ctx, f.prefix+"callers-key")
	pf := r.Prefetch(ctx, pipe, idNdiaye)
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		t.Fatal(err)
	}
	e, err := pf.Identity()
	if err != nil || e.FamilyName != "N'DIAYE" || !errors.Is(own.Err(), redis.Nil) {
		t.Fatalf("prefetched %s, %v; caller's command %v", toJSON(t, e), err, own.Err())
	}
	if n := f.hook.trips.Load(); n != 1 {
		t.Errorf("prefetch on the caller's pipeline: %d round trips, want 1 (the caller's)", n)
	}
}

// failingReader is the extract followed by a read error.
func failingReader(b []byte, err error) *errReader { return &errReader{b: b, err: err} }

type errReader struct {
	b   []byte
	err error
}

func (r *errReader) Read(p []byte) (int, error) {
	if len(r.b) == 0 {
		return 0, r.err
	}
	n := copy(p, r.b)
	r.b = r.b[n:]
	return n, nil
}

// cancelAt cancels a context once at bytes have been read (a SIGTERM midway).
type cancelAt struct {
	r      *bytes.Reader
	n, at  int
	cancel context.CancelFunc
}

func (c *cancelAt) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if c.n += n; c.n >= c.at {
		c.cancel()
	}
	return n, err
}
