package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/ecps-sante/ecps/directory"
)

const directoryUsage = `usage: ecpsd directory import [-config FILE] [-savoir-faire FILE] [-force] [-if-none] FILE.zip|FILE.txt|-
       ecpsd directory status [-config FILE]
       ecpsd directory clear  [-config FILE]

import   loads the public RPPS extract (the published PS_LibreAcces_<date>.zip, one
         PS_LibreAcces_Personne_activite_<date>.txt, or - for that file on stdin) as a
         new version, then switches to it; prints progress on stderr, a summary on stdout;
         -if-none: only when no directory is loaded (make run's demo directory never
         replaces one loaded by hand)
status   prints the current version: its files, time and counts
clear    removes the directory (back to the behaviour with none loaded)

-config is the server's configuration file (ECPS_<KEY> variables override it); without
it Redis is ECPS_REDIS_URL (standalone; a Cluster or Sentinel needs the file) and the
key prefix ECPS_REDIS_KEY_PREFIX (default "ecps:").
`

// Store options and progress period of the directory commands (tests
// shorten them).
var (
	directoryOptions       = directory.Options{}
	directoryProgressEvery = time.Second
)

// defaultMinRatio: an import holding fewer than 90% of the current
// version's practitioners is refused unless -force (a truncated file).
const defaultMinRatio = 0.9

// directoryCmd runs `ecpsd directory import|status|clear`.
func directoryCmd(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer, env func(string) string) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, directoryUsage)
		return exitConfig
	}
	sub := args[0]
	fs := flag.NewFlagSet("ecpsd directory "+sub, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, directoryUsage) }
	configPath := fs.String("config", "", "the server's YAML configuration file")
	var sfPath *string
	var force, ifNone *bool
	switch sub {
	case "import":
		sfPath = fs.String("savoir-faire", "", "the savoir-faire .txt to merge (a .zip brings its own)")
		force = fs.Bool("force", false, "switch even to a version with far fewer practitioners than the current one")
		ifNone = fs.Bool("if-none", false, "import only when no directory is loaded (otherwise exit 0 without reading FILE)")
	case "status", "clear":
	default:
		fmt.Fprintf(stderr, "ecpsd directory: unknown command %q\n%s", sub, directoryUsage)
		return exitConfig
	}
	if err := fs.Parse(args[1:]); err != nil {
		return exitConfig
	}
	wantArgs := 0
	if sub == "import" {
		wantArgs = 1
	}
	if fs.NArg() != wantArgs {
		fmt.Fprint(stderr, directoryUsage)
		return exitConfig
	}
	rc, err := directoryRedisConfig(*configPath, env)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return exitConfig
	}
	rdb, err := newRedis(rc, 0)
	if err != nil {
		fmt.Fprintln(stderr, "config: redis:", err)
		return exitConfig
	}
	defer rdb.Close()
	opt := directoryOptions
	opt.KeyPrefix = rc.KeyPrefix
	store := directory.NewStore(rdb, opt)

	switch sub {
	case "status":
		return directoryStatus(ctx, store, stdout, stderr)
	case "clear":
		v, err := store.Clear(ctx)
		if err != nil {
			fmt.Fprintln(stderr, "ecpsd directory clear:", strings.TrimPrefix(err.Error(), "directory: "))
			return exitFailed
		}
		if v == "" {
			fmt.Fprintln(stdout, "directory: none was loaded; nothing left in Redis")
		} else {
			fmt.Fprintf(stdout, "directory: version %s cleared; no directory loaded\n", v)
		}
		return exitOK
	}
	if *ifNone {
		v, err := store.Loaded(ctx)
		if err != nil {
			fmt.Fprintln(stderr, "ecpsd directory import:", strings.TrimPrefix(err.Error(), "directory: "))
			return exitFailed
		}
		if v != "" {
			fmt.Fprintf(stdout, "directory: version %s is loaded; nothing imported (-if-none)\n", v)
			return exitOK
		}
	}
	minRatio := defaultMinRatio
	if *force {
		minRatio = 0
	}
	return directoryImport(ctx, store, fs.Arg(0), *sfPath, minRatio, stdin, stdout, stderr)
}

// directoryRedisConfig is the redis section of the server's configuration
// file, or, without one, of the defaults and ECPS_ variables.
func directoryRedisConfig(path string, env func(string) string) (redisConfig, error) {
	if path != "" {
		cfg, err := loadConfig(path, env)
		return cfg.File.Redis, err
	}
	fc := defaults()
	var p configError
	p = append(p, applyEnv(reflect.ValueOf(&fc).Elem(), "", env)...)
	validateRedis(fc.Redis, func(key, format string, args ...any) {
		p = append(p, "config: "+key+": "+fmt.Sprintf(format, args...)+" (give -config FILE, or ECPS_REDIS_URL)")
	})
	if len(p) > 0 {
		return redisConfig{}, p
	}
	return fc.Redis, nil
}

func directoryImport(ctx context.Context, store *directory.Store, input, sfPath string, minRatio float64,
	stdin io.Reader, stdout, stderr io.Writer) int {
	fail := func(err error) int {
		fmt.Fprintln(stderr, "ecpsd directory import:", strings.TrimPrefix(err.Error(), "directory: "))
		return exitFailed
	}
	var src directory.Source
	isZip, err := looksLikeZip(input)
	if err != nil {
		return fail(err)
	}
	switch {
	case isZip:
		if sfPath != "" {
			fmt.Fprintln(stderr, "ecpsd directory import: -savoir-faire goes with a .txt; a .zip brings its own savoir-faire file")
			return exitConfig
		}
		var closer io.Closer
		if src, closer, err = directory.OpenZip(input); err != nil {
			return fail(err)
		}
		defer closer.Close()
	case input == "-":
		src = directory.Source{Activity: bufio.NewReaderSize(stdin, 1<<20), ActivityName: "(stdin)"}
	default:
		f, err := os.Open(input)
		if err != nil {
			return fail(err)
		}
		defer f.Close()
		src = directory.Source{Activity: f, ActivityName: filepath.Base(input)}
	}
	if sfPath != "" {
		f, err := os.Open(sfPath)
		if err != nil {
			return fail(err)
		}
		defer f.Close()
		src.SavoirFaire, src.SavoirFaireName = f, filepath.Base(sfPath)
	}
	fmt.Fprintf(stderr, "directory import: reading %s\n", src.ActivityName)
	sum, err := store.Import(ctx, src, directory.ImportOptions{
		MinRatio:      minRatio,
		ProgressEvery: directoryProgressEvery,
		Progress: func(p directory.Progress) {
			fmt.Fprintf(stderr, "directory import: %s: %d lines, %d practitioners written, %.0f lines/s\n",
				p.File, p.Lines, p.Entries, float64(p.Lines)/p.Elapsed.Seconds())
		},
	})
	if err != nil {
		var he *directory.HeaderError
		var se *directory.ShrinkError
		switch {
		case errors.As(err, &he):
			return fail(fmt.Errorf("%w; nothing was written, the current version stays", err))
		case errors.As(err, &se):
			return fail(fmt.Errorf("%w; -force switches anyway", err))
		}
		return fail(err)
	}
	fmt.Fprintf(stdout, "directory: version %s is current", sum.Version)
	if sum.Replaced != "" {
		fmt.Fprintf(stdout, " (it replaced %s)", sum.Replaced)
	}
	fmt.Fprintln(stdout)
	printSummary(stdout, sum)
	if sum.Leftover != "" {
		fmt.Fprintf(stderr, "directory import: warning: the replaced version %s could not be removed; the next import removes it\n", sum.Leftover)
	}
	return exitOK
}

// looksLikeZip: a name ending in .zip, or a file starting with a zip header.
func looksLikeZip(input string) (bool, error) {
	if input == "-" {
		return false, nil
	}
	if strings.EqualFold(filepath.Ext(input), ".zip") {
		return true, nil
	}
	f, err := os.Open(input)
	if err != nil {
		return false, err
	}
	defer f.Close()
	magic := make([]byte, 4)
	n, _ := io.ReadFull(f, magic)
	return n == 4 && string(magic) == "PK\x03\x04", nil
}

func directoryStatus(ctx context.Context, store *directory.Store, stdout, stderr io.Writer) int {
	sum, err := store.Status(ctx)
	if errors.Is(err, directory.ErrNotLoaded) {
		fmt.Fprintln(stdout, "directory: none loaded")
		return exitOK
	}
	if err != nil {
		fmt.Fprintln(stderr, "ecpsd directory status:", strings.TrimPrefix(err.Error(), "directory: "))
		return exitFailed
	}
	fmt.Fprintf(stdout, "directory: version %s is current\n", sum.Version)
	printSummary(stdout, sum)
	return exitOK
}

// printSummary writes an import's summary, one fact per line.
func printSummary(w io.Writer, s directory.Summary) {
	took := s.Finished.Sub(s.Started)
	fmt.Fprintf(w, "  imported      %s, in %s", s.Finished.UTC().Format(time.RFC3339), took.Round(100*time.Millisecond))
	if took > 0 {
		fmt.Fprintf(w, " (%.0f lines/s)", float64(s.Activity.Lines)/took.Seconds())
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "  entries       %d practitioners\n", s.Entries)
	printFile(w, "activity file", s.Activity)
	if s.Repeats > 0 {
		fmt.Fprintf(w, "    merged      %d run(s) of a practitioner's lines met again after other practitioners' lines\n", s.Repeats)
	}
	if s.Dropped > 0 {
		fmt.Fprintf(w, "    dropped     %d place(s) of activity or specialties beyond the limits\n", s.Dropped)
	}
	if s.SavoirFaire != nil {
		printFile(w, "savoir-faire", *s.SavoirFaire)
		fmt.Fprintf(w, "    added       %d specialties; %d idNat(s) not in the activity file, ignored\n", s.SpecialtiesAdded, s.Unmatched)
	}
}

func printFile(w io.Writer, title string, f directory.FileStats) {
	fmt.Fprintf(w, "  %-13s %s (%s)\n", title, f.Name, f.Encoding)
	fmt.Fprintf(w, "    lines       %d, %d rejected\n", f.Lines, f.RejectedLines())
	if f.Windows1252Lines > 0 {
		fmt.Fprintf(w, "    read as Windows-1252: %d lines that were not valid UTF-8\n", f.Windows1252Lines)
	}
	reasons := make([]string, 0, len(f.Rejected))
	for r := range f.Rejected {
		reasons = append(reasons, r)
	}
	slices.Sort(reasons)
	for i, r := range reasons {
		rej := f.Rejected[r]
		lines := make([]string, len(rej.FirstLines))
		for j, n := range rej.FirstLines {
			lines[j] = fmt.Sprint(n)
		}
		more := ""
		if rej.Count > int64(len(rej.FirstLines)) {
			more = ", …"
		}
		label := "rejected"
		if i > 0 {
			label = ""
		}
		word := "line"
		if len(lines) > 1 {
			word = "lines"
		}
		fmt.Fprintf(w, "    %-11s %s: %d (%s %s%s)\n", label, r, rej.Count, word, strings.Join(lines, ", "), more)
	}
}
