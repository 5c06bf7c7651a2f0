// Command gen writes a synthetic extract of the public RPPS directory in the
// published format (package directorytest), for benchmarks and load tests:
//
//	go run ./directory/internal/gen -lines 2300000 -out /tmp/PS_LibreAcces_Personne_activite_synth.txt
//	go run ./directory/internal/gen -lines 1000 -cp1252 -crlf > small.txt
//	go run ./directory/internal/gen -lines 1000 -savoir-faire sf.txt -out act.txt
//	go run ./directory/internal/gen -lines 2300000 -zip /tmp/PS_LibreAcces_202611150930.zip
package main

import (
	"archive/zip"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/ecps-sante/ecps/directory/directorytest"
)

func main() {
	lines := flag.Int("lines", 1000, "data lines of the activity file")
	seed := flag.Uint64("seed", 1, "random seed (same seed, same extract)")
	out := flag.String("out", "", "activity file to write (default stdout)")
	sfOut := flag.String("savoir-faire", "", "also write the savoir-faire file there")
	zipOut := flag.String("zip", "", "write a published-style .zip (activity + savoir-faire files) there instead")
	cp1252 := flag.Bool("cp1252", false, "encode as Windows-1252 instead of UTF-8")
	crlf := flag.Bool("crlf", false, "end lines with CRLF")
	flag.Parse()
	opt := directorytest.Options{Lines: *lines, Seed: *seed, Windows1252: *cp1252, CRLF: *crlf}
	if err := run(opt, *out, *sfOut, *zipOut); err != nil {
		fmt.Fprintln(os.Stderr, "gen:", err)
		os.Exit(1)
	}
}

func run(opt directorytest.Options, out, sfOut, zipOut string) error {
	if zipOut != "" {
		return writeZip(opt, zipOut)
	}
	var w io.Writer = os.Stdout
	if out != "" {
		f, err := os.Create(out)
		if err != nil {
			return err
		}
		defer f.Close()
		w = f
	}
	if sfOut != "" {
		f, err := os.Create(sfOut)
		if err != nil {
			return err
		}
		defer f.Close()
		opt.SavoirFaire = f
	}
	st, err := directorytest.Write(w, opt)
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "gen: %d lines, %d practitioners, %d savoir-faire lines\n", st.Lines, st.Practitioners, st.SavoirFaire)
	return nil
}

// writeZip writes both files into one zip named like the published one. The
// savoir-faire file goes through a temporary file: a zip is written one
// entry at a time.
func writeZip(opt directorytest.Options, path string) error {
	stamp := strings.TrimSuffix(strings.TrimPrefix(path[strings.LastIndex(path, "/")+1:], "PS_LibreAcces_"), ".zip")
	tmp, err := os.CreateTemp("", "sf-*.txt")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	opt.SavoirFaire = tmp
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	zw := zip.NewWriter(f)
	w, err := zw.Create("PS_LibreAcces_Personne_activite_" + stamp + ".txt")
	if err != nil {
		return err
	}
	st, err := directorytest.Write(w, opt)
	if err != nil {
		return err
	}
	w, err = zw.Create("PS_LibreAcces_SavoirFaire_" + stamp + ".txt")
	if err != nil {
		return err
	}
	if _, err := tmp.Seek(0, io.SeekStart); err != nil {
		return err
	}
	if _, err := io.Copy(w, tmp); err != nil {
		return err
	}
	if err := zw.Close(); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "gen: %s: %d lines, %d practitioners, %d savoir-faire lines\n", path, st.Lines, st.Practitioners, st.SavoirFaire)
	return f.Close()
}
