package directory

import (
	"archive/zip"
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

type zipEntry struct {
	name string
	data []byte
}

// writeZip writes entries into a zip, stored (not compressed) so that a
// test can corrupt their bytes.
func writeZip(t *testing.T, entries ...zipEntry) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "PS_LibreAcces_202611150930.zip")
	var b bytes.Buffer
	zw := zip.NewWriter(&b)
	for _, e := range entries {
		w, err := zw.CreateHeader(&zip.FileHeader{Name: e.name, Method: zip.Store})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write(e.data); err != nil {
			t.Fatal(err)
		}
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func publishedZip(t *testing.T) string {
	return writeZip(t,
		zipEntry{"PS_LibreAcces_Dipl_AutExerc_202611150930.txt", []byte("Type d'identifiant PP|\n")},
		zipEntry{"PS_LibreAcces_202611150930/" + filepath.Base(savoirFaireFile), readFile(t, savoirFaireFile)},
		zipEntry{filepath.Base(activityFile), readFile(t, activityFile)},
	)
}

func TestOpenZip(t *testing.T) {
	f := newFixture(t, Options{})
	src, closer, err := OpenZip(publishedZip(t))
	if err != nil {
		t.Fatal(err)
	}
	defer closer.Close()
	if src.ActivityName != filepath.Base(activityFile) || src.SavoirFaireName != filepath.Base(savoirFaireFile) {
		t.Errorf("picked %q and %q", src.ActivityName, src.SavoirFaireName)
	}
	sum, err := f.s.Import(context.Background(), src, ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if sum.Entries != 5 || sum.SpecialtiesAdded != 2 || sum.Activity.Name != src.ActivityName || sum.SavoirFaire.Name != src.SavoirFaireName {
		t.Errorf("summary %s", toJSON(t, sum))
	}
}

func TestOpenZipRefusals(t *testing.T) {
	act := readFile(t, activityFile)
	for _, tt := range []struct {
		name    string
		entries []zipEntry
		want    string
	}{
		{"no activity file", []zipEntry{{"PS_LibreAcces_SavoirFaire_1.txt", act}, {"readme.txt", nil}},
			"holds no PS_LibreAcces_Personne_activite_*.txt (it holds: PS_LibreAcces_SavoirFaire_1.txt, readme.txt)"},
		{"two activity files", []zipEntry{{"PS_LibreAcces_Personne_activite_1.txt", act}, {"x/PS_LibreAcces_Personne_activite_2.txt", act}},
			"two files named"},
		{"two savoir-faire files", []zipEntry{{"PS_LibreAcces_Personne_activite_1.txt", act}, {"PS_LibreAcces_SavoirFaire_1.txt", nil}, {"PS_LibreAcces_SavoirFaire_2.txt", nil}},
			"two files named"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := OpenZip(writeZip(t, tt.entries...))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("OpenZip = %v, want %q", err, tt.want)
			}
		})
	}
	t.Run("not a zip", func(t *testing.T) {
		if _, _, err := OpenZip(activityFile); err == nil {
			t.Error("OpenZip of a .txt succeeded")
		}
	})
}

// A corrupt download fails the zip's CRC check at the end of the file: the
// import fails and the current version stays.
func TestImportCorruptZip(t *testing.T) {
	f := newFixture(t, Options{})
	v1, err := f.importFiles(cp1252File, "", ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	before := f.keys()
	path := publishedZip(t)
	raw := readFile(t, path)
	i := bytes.LastIndex(raw, []byte("CABINET HÉBERT"))
	raw[i] = 'K' // same length, wrong CRC
	if err := os.WriteFile(path, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	src, closer, err := OpenZip(path)
	if err != nil {
		t.Fatal(err)
	}
	defer closer.Close()
	_, err = f.s.Import(context.Background(), src, ImportOptions{})
	if !errors.Is(err, zip.ErrChecksum) {
		t.Fatalf("Import = %v, want zip.ErrChecksum", err)
	}
	if after := f.keys(); !equalStrings(after, before) {
		t.Errorf("keys changed:\n%v\n%v", before, after)
	}
	if e, err := f.lookup(idNoel); err != nil || e.Version != v1.Version {
		t.Errorf("Lookup = %q, %v", e.Version, err)
	}
}

func equalStrings(a, b []string) bool { return strings.Join(a, "\n") == strings.Join(b, "\n") }
