package directory

import (
	"bufio"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ecps-sante/ecps/directory/directorytest"
	"github.com/ecps-sante/ecps/redistest"
)

// benchLines is the size of the synthetic extract of the benchmarks:
// ECPS_BENCH_DIRECTORY_LINES, default 200,000 (the real one has 2.3 M).
func benchLines(b *testing.B) int {
	n := 200000
	if s := os.Getenv("ECPS_BENCH_DIRECTORY_LINES"); s != "" {
		var err error
		if n, err = strconv.Atoi(s); err != nil {
			b.Fatalf("ECPS_BENCH_DIRECTORY_LINES: %v", err)
		}
	}
	return n
}

// syntheticFile writes a synthetic extract of n lines to a temporary file.
func syntheticFile(b *testing.B, n int) string {
	path := filepath.Join(b.TempDir(), "PS_LibreAcces_Personne_activite_synth.txt")
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	if _, err := directorytest.Write(f, directorytest.Options{Lines: n, Seed: 1}); err != nil {
		b.Fatal(err)
	}
	return path
}

func usedMemory(b *testing.B, rdb redis.UniversalClient) int64 {
	info, err := rdb.Info(context.Background(), "memory").Result()
	if err != nil {
		b.Fatal(err)
	}
	for _, l := range strings.Split(info, "\r\n") {
		if v, ok := strings.CutPrefix(l, "used_memory:"); ok {
			n, _ := strconv.ParseInt(v, 10, 64)
			return n
		}
	}
	b.Fatal("no used_memory in INFO memory")
	return 0
}

// BenchmarkImport imports a synthetic extract into a redis-server of its
// own and reports lines/s and the Redis memory per practitioner (INFO
// memory's used_memory after the import minus before, over the entries).
//
//	ECPS_BENCH_DIRECTORY_LINES=2300000 go test -run '^$' -bench Import -benchtime 1x ./directory/
func BenchmarkImport(b *testing.B) {
	n := benchLines(b)
	path := syntheticFile(b, n)
	rdb, _ := redistest.Client(b)
	if os.Getenv("ECPS_TEST_REDIS_URL") != "" { // a server of our own: its memory is ours
		srv := redistest.Start(b)
		opt, _ := redis.ParseURL(srv.URL())
		rdb = redis.NewClient(opt)
		defer rdb.Close()
	}
	ctx := context.Background()
	s := NewStore(rdb, Options{KeyPrefix: "ecps:", Grace: 100 * time.Millisecond})
	before := usedMemory(b, rdb)
	var sum Summary
	for b.Loop() {
		f, err := os.Open(path)
		if err != nil {
			b.Fatal(err)
		}
		sum, err = s.Import(ctx, Source{Activity: f, ActivityName: filepath.Base(path)}, ImportOptions{})
		f.Close()
		if err != nil {
			b.Fatal(err)
		}
	}
	time.Sleep(500 * time.Millisecond) // UNLINK frees in the background
	after := usedMemory(b, rdb)
	b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "lines/s")
	b.ReportMetric(float64(after-before)/float64(sum.Entries), "redis-B/entry")
	// The compact values themselves, over a sample of buckets.
	var values, count int64
	for bk := 0; bk < 100; bk++ {
		m, err := rdb.HGetAll(ctx, s.k.bucket(sum.Version, bk)).Result()
		if err != nil {
			b.Fatal(err)
		}
		for _, v := range m {
			values += int64(len(v))
			count++
		}
	}
	b.ReportMetric(float64(values)/float64(count), "value-B/entry")
	b.ReportMetric(float64(sum.Entries), "entries")
}

// BenchmarkParse is the parser alone, on the same file.
func BenchmarkParse(b *testing.B) {
	n := benchLines(b)
	path := syntheticFile(b, n)
	for b.Loop() {
		f, err := os.Open(path)
		if err != nil {
			b.Fatal(err)
		}
		p, err := NewParser(bufio.NewReaderSize(f, 1<<20), ActivityFile)
		if err != nil {
			b.Fatal(err)
		}
		for {
			if _, err := p.Next(); errors.Is(err, io.EOF) {
				break
			} else if err != nil {
				b.Fatal(err)
			}
		}
		f.Close()
	}
	b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "lines/s")
}

// BenchmarkLookup: lookups of random practitioners of a loaded directory.
func BenchmarkLookup(b *testing.B) {
	rdb, prefix := redistest.Client(b)
	s := NewStore(rdb, Options{KeyPrefix: prefix})
	extract := synthetic(b, 20000, 1)
	runs, _ := parseAll(b, strings.NewReader(string(extract)), ActivityFile)
	if _, err := s.Import(context.Background(), Source{Activity: strings.NewReader(string(extract))}, ImportOptions{}); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			if _, err := s.Lookup(context.Background(), runs[i%len(runs)].IDNat); err != nil {
				b.Error(err)
				return
			}
			i += 7919
		}
	})
}
