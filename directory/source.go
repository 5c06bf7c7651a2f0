package directory

import (
	"archive/zip"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"
)

// Source is what an import reads: the activity file and, optionally, the
// savoir-faire file.
type Source struct {
	Activity        io.Reader
	ActivityName    string // for the summary and status
	SavoirFaire     io.Reader
	SavoirFaireName string
}

// File name patterns in the published zip.
const (
	ActivityPattern    = "PS_LibreAcces_Personne_activite_*.txt"
	SavoirFairePattern = "PS_LibreAcces_SavoirFaire_*.txt"
)

// OpenZip opens the published zip (PS_LibreAcces_<date>.zip) and picks its
// files by name: the activity file (required) and the savoir-faire file (used
// when present). The zip's CRC checks catch a truncated download: the read
// then fails and the import stops before its switch. Close the returned
// closer when done.
func OpenZip(name string) (Source, io.Closer, error) {
	zr, err := zip.OpenReader(name)
	if err != nil {
		return Source{}, nil, err
	}
	src := Source{}
	var act, sf *zip.File
	for _, f := range zr.File {
		base := path.Base(f.Name)
		for _, m := range []struct {
			pattern string
			dst     **zip.File
		}{{ActivityPattern, &act}, {SavoirFairePattern, &sf}} {
			if ok, _ := path.Match(m.pattern, base); ok {
				if *m.dst != nil {
					zr.Close()
					return Source{}, nil, fmt.Errorf("directory: %s holds two files named %s: %s and %s", name, m.pattern, (*m.dst).Name, f.Name)
				}
				*m.dst = f
			}
		}
	}
	if act == nil {
		var names []string
		for _, f := range zr.File {
			names = append(names, f.Name)
		}
		zr.Close()
		return Source{}, nil, fmt.Errorf("directory: %s holds no %s (it holds: %s)", name, ActivityPattern, strings.Join(names, ", "))
	}
	closers := multiCloser{zr}
	r, err := act.Open()
	if err != nil {
		zr.Close()
		return Source{}, nil, err
	}
	closers = append(closers, r)
	src.Activity, src.ActivityName = r, path.Base(act.Name)
	if sf != nil {
		r, err := sf.Open()
		if err != nil {
			closers.Close()
			return Source{}, nil, err
		}
		closers = append(closers, r)
		src.SavoirFaire, src.SavoirFaireName = r, path.Base(sf.Name)
	}
	return src, closers, nil
}

type multiCloser []io.Closer

func (m multiCloser) Close() error {
	var errs []error
	for i := len(m) - 1; i >= 0; i-- {
		errs = append(errs, m[i].Close())
	}
	return errors.Join(errs...)
}
