package directory

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"io"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"

	"golang.org/x/text/encoding/charmap"

	"github.com/ecps-sante/ecps/directory/directorytest"
	"github.com/ecps-sante/ecps/idnat"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

const (
	activityFile    = "testdata/PS_LibreAcces_Personne_activite_202611150930.txt"
	savoirFaireFile = "testdata/PS_LibreAcces_SavoirFaire_202611150930.txt"
	cp1252File      = "testdata/PS_LibreAcces_Personne_activite_cp1252.txt"
)

// idNats of testdata/.
const (
	idDupre   = "810001234565" // two places in a run, a duplicate line, a third place later
	idNdiaye  = "0751234567"   // ADELI only
	idBenoit  = "810002345675" // no civility, no category
	idGarcon  = "810003456786" // no place of activity
	idHebert  = "810004567896" // first line rejected (type mismatch), then two places
	idMartin  = "810005678908" // only rejected lines; in the savoir-faire file
	idNoel    = "810006789019" // Windows-1252 file
	idLemaitr = "810007890121" // Windows-1252 file
)

var header = directorytest.Line(directorytest.ActivityHeader) + "\n"

// row is a complete activity line; set overrides columns by name.
func row(id string, set map[string]string) string {
	v := map[string]string{
		"Type d'identifiant PP": id[:1], "Identifiant PP": id[1:], "Identification nationale PP": id,
		"Code civilité d'exercice": "DR", "Libellé civilité d'exercice": "Docteur",
		"Nom d'exercice": "MARTIN", "Prénom d'exercice": "Jean",
		"Code profession": "10", "Libellé profession": "Médecin",
		"Code catégorie professionnelle": "C", "Libellé catégorie professionnelle": "Civil",
		"Code savoir-faire": "SM54", "Libellé savoir-faire": "Médecine Générale (SM)",
		"Code mode exercice": "L", "Libellé mode exercice": "Libéral",
		"Code secteur d'activité": "SA07", "Libellé secteur d'activité": "Cabinet individuel",
		"Numéro SIRET site": "12345678900012", "Numéro FINESS site": "750000001",
		"Raison sociale site": "CABINET MARTIN", "Enseigne commerciale site": "LE CABINET",
		"Code postal (coord. structure)": "69003", "Libellé commune (coord. structure)": "LYON",
		"Code Département (structure)": "69", "Téléphone (coord. structure)": "0400000000",
	}
	for k, val := range set {
		if !slices.Contains(directorytest.ActivityHeader, k) {
			panic("no column " + k)
		}
		v[k] = val
	}
	out := make([]string, len(directorytest.ActivityHeader))
	for i, name := range directorytest.ActivityHeader {
		out[i] = v[name]
	}
	return directorytest.Line(out) + "\n"
}

func parseAll(t testing.TB, r io.Reader, kind FileKind) ([]*Identity, FileStats) {
	t.Helper()
	p, err := NewParser(r, kind)
	if err != nil {
		t.Fatalf("NewParser: %v", err)
	}
	var out []*Identity
	for {
		e, err := p.Next()
		if errors.Is(err, io.EOF) {
			return out, p.Stats()
		}
		if err != nil {
			t.Fatalf("Next: %v", err)
		}
		out = append(out, e)
	}
}

func parseString(t testing.TB, s string) ([]*Identity, FileStats) {
	return parseAll(t, strings.NewReader(s), ActivityFile)
}

func readFile(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func toJSON(t testing.TB, v any) string {
	t.Helper()
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	return string(b) + "\n"
}

// golden compares got with testdata/name, or writes it with -update.
func golden(t *testing.T, name, got string) {
	t.Helper()
	path := "testdata/" + name
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want := string(readFile(t, path))
	if got != want {
		t.Errorf("%s differs (run with -update to accept):\n--- got\n%s", path, got)
	}
}

// The runs of the published-format sample, as the parser yields them: one
// per run of contiguous lines, rejected lines counted with their numbers.
func TestParseSample(t *testing.T) {
	f, err := os.Open(activityFile)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	runs, st := parseAll(t, f, ActivityFile)
	golden(t, "activity.golden.json", toJSON(t, map[string]any{"runs": runs, "stats": st}))

	var ids []string
	for _, e := range runs {
		ids = append(ids, e.IDNat)
	}
	want := []string{idDupre, idNdiaye, idBenoit, idGarcon, idDupre, idHebert}
	if !slices.Equal(ids, want) {
		t.Errorf("runs %v, want %v", ids, want)
	}
	if st.Encoding != "utf-8" || st.Lines != 13 || st.RejectedLines() != 4 {
		t.Errorf("stats %+v, want utf-8, 13 lines, 4 rejected", st)
	}
	dupre := runs[0]
	if len(dupre.Activities) != 2 || len(dupre.Specialties) != 2 {
		t.Errorf("first run of %s: %d activities, %d specialties, want 2 and 2 (the third line repeats the first)",
			idDupre, len(dupre.Activities), len(dupre.Specialties))
	}
	if got := runs[3]; len(got.Activities) != 0 {
		t.Errorf("%s has no place of activity: activities %#v, want none", idGarcon, got.Activities)
	}
	if b, _ := json.Marshal(runs[3]); !bytes.Contains(b, []byte(`"specialties":[],"activities":[]`)) {
		t.Errorf("empty lists must read []: %s", b)
	}
	if b, _ := json.Marshal(runs[2]); !bytes.Contains(b, []byte(`"civility":null`)) || !bytes.Contains(b, []byte(`"category":null`)) ||
		!bytes.Contains(b, []byte(`"finess":null`)) {
		t.Errorf("absent values must read null: %s", b)
	}
}

// Each column used lands in its field; empty strings are absent values.
func TestParseEachColumn(t *testing.T) {
	const id = "810001234565"
	ptr := func(code, label string) *Code { return &Code{Code: Text(code), Label: Text(label)} }
	tests := []struct {
		name  string
		set   map[string]string
		check func(e *Identity) any // returns what is checked
		want  any
	}{
		{"civility", map[string]string{"Libellé civilité d'exercice": "Professeur"}, func(e *Identity) any { return e.Civility }, Text("Professeur")},
		{"civility/absent", map[string]string{"Libellé civilité d'exercice": ""}, func(e *Identity) any { return e.Civility }, Text("")},
		{"family_name", map[string]string{"Nom d'exercice": "DE LA FONTAINE"}, func(e *Identity) any { return e.FamilyName }, Text("DE LA FONTAINE")},
		{"given_name", map[string]string{"Prénom d'exercice": "Marie-Hélène"}, func(e *Identity) any { return e.GivenName }, Text("Marie-Hélène")},
		{"given_name/spaces trimmed", map[string]string{"Prénom d'exercice": "  Zoé "}, func(e *Identity) any { return e.GivenName }, Text("Zoé")},
		{"profession", map[string]string{"Code profession": "21", "Libellé profession": "Pharmacien"}, func(e *Identity) any { return e.Profession }, Code{"21", "Pharmacien"}},
		{"profession/absent is an object of nulls", map[string]string{"Code profession": "", "Libellé profession": ""}, func(e *Identity) any { return e.Profession }, Code{}},
		{"category", map[string]string{"Code catégorie professionnelle": "M", "Libellé catégorie professionnelle": "Militaire"}, func(e *Identity) any { return e.Category }, ptr("M", "Militaire")},
		{"category/absent", map[string]string{"Code catégorie professionnelle": "", "Libellé catégorie professionnelle": ""}, func(e *Identity) any { return e.Category }, (*Code)(nil)},
		{"category/label only", map[string]string{"Code catégorie professionnelle": "", "Libellé catégorie professionnelle": "Civil"}, func(e *Identity) any { return e.Category }, ptr("", "Civil")},
		{"specialty", map[string]string{"Code savoir-faire": "SM04", "Libellé savoir-faire": "Cardiologie"}, func(e *Identity) any { return e.Specialties }, []Code{{"SM04", "Cardiologie"}}},
		{"specialty/absent", map[string]string{"Code savoir-faire": "", "Libellé savoir-faire": ""}, func(e *Identity) any { return e.Specialties }, []Code(nil)},
		{"mode", map[string]string{"Code mode exercice": "S", "Libellé mode exercice": "Salarié"}, func(e *Identity) any { return e.Activities[0].Mode }, ptr("S", "Salarié")},
		{"mode/absent", map[string]string{"Code mode exercice": "", "Libellé mode exercice": ""}, func(e *Identity) any { return e.Activities[0].Mode }, (*Code)(nil)},
		{"sector", map[string]string{"Code secteur d'activité": "SA01", "Libellé secteur d'activité": "Etablissement public de santé"}, func(e *Identity) any { return e.Activities[0].Sector }, ptr("SA01", "Etablissement public de santé")},
		{"sector/absent", map[string]string{"Code secteur d'activité": "", "Libellé secteur d'activité": ""}, func(e *Identity) any { return e.Activities[0].Sector }, (*Code)(nil)},
		{"siret", map[string]string{"Numéro SIRET site": "26750045200011"}, func(e *Identity) any { return e.Activities[0].Site.SIRET }, Text("26750045200011")},
		{"finess", map[string]string{"Numéro FINESS site": "750100042"}, func(e *Identity) any { return e.Activities[0].Site.FINESS }, Text("750100042")},
		{"name", map[string]string{"Raison sociale site": "HÔPITAL SAINT-ANTOINE"}, func(e *Identity) any { return e.Activities[0].Site.Name }, Text("HÔPITAL SAINT-ANTOINE")},
		{"name/sign when no raison sociale", map[string]string{"Raison sociale site": "", "Enseigne commerciale site": "PHARMACIE DU PORT"}, func(e *Identity) any { return e.Activities[0].Site.Name }, Text("PHARMACIE DU PORT")},
		{"postal_code", map[string]string{"Code postal (coord. structure)": "35000"}, func(e *Identity) any { return e.Activities[0].Site.PostalCode }, Text("35000")},
		{"city", map[string]string{"Libellé commune (coord. structure)": "SAINT-ÉTIENNE"}, func(e *Identity) any { return e.Activities[0].Site.City }, Text("SAINT-ÉTIENNE")},
		{"department/from the file", map[string]string{"Code Département (structure)": "2A", "Code postal (coord. structure)": "20000"}, func(e *Identity) any { return e.Activities[0].Site.Department }, Text("2A")},
		{"department/from the file, even unlike the postal code", map[string]string{"Code Département (structure)": "93", "Code postal (coord. structure)": "75012"}, func(e *Identity) any { return e.Activities[0].Site.Department }, Text("93")},
		{"department/derived", map[string]string{"Code Département (structure)": "", "Code postal (coord. structure)": "20600"}, func(e *Identity) any { return e.Activities[0].Site.Department }, Text("2B")},
		{"department/none to derive", map[string]string{"Code Département (structure)": "", "Code postal (coord. structure)": ""}, func(e *Identity) any { return e.Activities[0].Site.Department }, Text("")},
		{"activity/none when every activity column is empty", map[string]string{"Code mode exercice": "", "Libellé mode exercice": "",
			"Code secteur d'activité": "", "Libellé secteur d'activité": "", "Numéro SIRET site": "", "Numéro FINESS site": "",
			"Raison sociale site": "", "Enseigne commerciale site": "", "Code postal (coord. structure)": "",
			"Libellé commune (coord. structure)": "", "Code Département (structure)": ""}, func(e *Identity) any { return len(e.Activities) }, 0},
		{"activity/site of nulls with only a mode", map[string]string{"Numéro SIRET site": "", "Numéro FINESS site": "",
			"Raison sociale site": "", "Enseigne commerciale site": "", "Code postal (coord. structure)": "",
			"Libellé commune (coord. structure)": "", "Code Département (structure)": ""}, func(e *Identity) any { return e.Activities[0].Site }, Site{}},
		{"columns not used are ignored", map[string]string{"Libellé rôle": "Titulaire", "Adresse e-mail (coord. structure)": "x@y.fr"}, func(e *Identity) any { return e.FamilyName }, Text("MARTIN")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			runs, st := parseString(t, header+row(id, tt.set))
			if len(runs) != 1 || st.RejectedLines() != 0 {
				t.Fatalf("%d runs, %+v", len(runs), st.Rejected)
			}
			if got := tt.check(runs[0]); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %#v, want %#v", got, tt.want)
			}
		})
	}
}

// Columns are found by name: another order, extra columns, other case.
func TestParseColumnsByName(t *testing.T) {
	want, _ := parseAll(t, bytes.NewReader(readFile(t, activityFile)), ActivityFile)

	// Reverse the columns and add one at the front, on every line.
	var b strings.Builder
	for i, l := range strings.Split(strings.TrimSuffix(string(readFile(t, activityFile)), "\n"), "\n") {
		f := strings.Split(strings.TrimSuffix(l, "|"), "|")
		slices.Reverse(f)
		extra := "x"
		if i == 0 {
			extra = "Nouvelle colonne"
			for j := range f {
				f[j] = strings.ToUpper(f[j])
			}
		}
		b.WriteString(directorytest.Line(append([]string{extra}, f...)) + "\n")
	}
	got, st := parseString(t, b.String())
	if !reflect.DeepEqual(got, want) {
		t.Errorf("columns moved: got\n%s\nwant\n%s", toJSON(t, got), toJSON(t, want))
	}
	if st.RejectedLines() != 4 {
		t.Errorf("rejected %d, want 4", st.RejectedLines())
	}
}

func TestParseEncodings(t *testing.T) {
	t.Run("windows-1252 file", func(t *testing.T) {
		f, err := os.Open(cp1252File)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		runs, st := parseAll(t, f, ActivityFile)
		if st.Encoding != "windows-1252" || st.Lines != 2 || len(runs) != 2 {
			t.Fatalf("%+v, %d runs", st, len(runs))
		}
		e := runs[0]
		if e.IDNat != idNoel || e.FamilyName != "NOËL" || e.GivenName != "Françoise" || e.Profession.Label != "Médecin" ||
			e.Activities[0].Site.Name != "CLINIQUE DU SACRÉ-CŒUR" || e.Activities[0].Site.City != "SAINT-ÉTIENNE" ||
			e.Activities[0].Mode.Label != "Salarié" {
			t.Errorf("decoded %s", toJSON(t, e))
		}
		if runs[1].FamilyName != "LEMAÎTRE" || runs[1].GivenName != "Jérôme" || runs[1].Activities[0].Site.Department != "972" {
			t.Errorf("decoded %s", toJSON(t, runs[1]))
		}
	})
	t.Run("the same file in UTF-8 reads the same", func(t *testing.T) {
		utf, err := charmap.Windows1252.NewDecoder().Bytes(readFile(t, cp1252File))
		if err != nil {
			t.Fatal(err)
		}
		want, _ := parseAll(t, bytes.NewReader(readFile(t, cp1252File)), ActivityFile)
		got, st := parseAll(t, bytes.NewReader(utf), ActivityFile)
		if st.Encoding != "utf-8" || !reflect.DeepEqual(got, want) {
			t.Errorf("%s: got %s want %s", st.Encoding, toJSON(t, got), toJSON(t, want))
		}
	})
	t.Run("a Windows-1252 line in a UTF-8 file", func(t *testing.T) {
		bad, _ := charmap.Windows1252.NewEncoder().String(row(idDupre, map[string]string{"Nom d'exercice": "LEFÈVRE", "Libellé commune (coord. structure)": "SAINT-ÉTIENNE"}))
		runs, st := parseString(t, header+row(idNoel, map[string]string{"Nom d'exercice": "NOËL"})+bad)
		if st.Encoding != "utf-8" || st.Windows1252Lines != 1 || len(runs) != 2 {
			t.Fatalf("%+v, %d runs", st, len(runs))
		}
		if runs[0].FamilyName != "NOËL" || runs[1].FamilyName != "LEFÈVRE" || runs[1].Activities[0].Site.City != "SAINT-ÉTIENNE" {
			t.Errorf("got %q and %q", runs[0].FamilyName, runs[1].FamilyName)
		}
	})
	t.Run("UTF-8 byte-order mark", func(t *testing.T) {
		runs, st := parseString(t, "\xef\xbb\xbf"+header+row(idDupre, nil))
		if len(runs) != 1 || st.RejectedLines() != 0 || st.Encoding != "utf-8" {
			t.Errorf("%d runs, %+v", len(runs), st)
		}
	})
	t.Run("every value is valid UTF-8", func(t *testing.T) {
		// 0x81 is undefined in Windows-1252: it reads as U+FFFD.
		runs, _ := parseString(t, header+strings.Replace(row(idDupre, nil), "MARTIN", "MA\x81RTIN\xff", 1))
		if runs[0].FamilyName != "MA\uFFFDRTINÿ" {
			t.Errorf("got %q", runs[0].FamilyName)
		}
	})
}

func TestParseCRLF(t *testing.T) {
	lf := readFile(t, activityFile)
	crlf := bytes.ReplaceAll(lf, []byte("\n"), []byte("\r\n"))
	want, wst := parseAll(t, bytes.NewReader(lf), ActivityFile)
	got, gst := parseAll(t, bytes.NewReader(crlf), ActivityFile)
	if !reflect.DeepEqual(got, want) || !reflect.DeepEqual(gst, wst) {
		t.Errorf("CRLF: got %s %+v, want %s %+v", toJSON(t, got), gst, toJSON(t, want), wst)
	}
	// No end of line after the last line.
	got, gst = parseAll(t, bytes.NewReader(bytes.TrimSuffix(crlf, []byte("\r\n"))), ActivityFile)
	if !reflect.DeepEqual(got, want) || gst.Lines != wst.Lines {
		t.Errorf("without a final end of line: %d lines, want %d", gst.Lines, wst.Lines)
	}
}

func TestParseRejects(t *testing.T) {
	const id = "810001234565"
	many := func(n int, f func(i int) map[string]string) string {
		var b strings.Builder
		for i := range n {
			b.WriteString(row(id, f(i)))
		}
		return b.String()
	}
	tests := []struct {
		name   string
		kind   FileKind
		body   string // after the header, which is line 1
		reason string
		lines  []int64
		runs   int
	}{
		{"column_count/one short", ActivityFile, row(id, nil) + strings.TrimSuffix(row(id, nil), "|\n") + "\n", RejectColumns, []int64{3}, 1},
		{"column_count/one more", ActivityFile, row(id, nil) + strings.TrimSuffix(row(id, nil), "\n") + "x|\n", RejectColumns, []int64{3}, 1},
		{"column_count/not the format at all", ActivityFile, "hello\n" + row(id, nil), RejectColumns, []int64{2}, 1},
		{"empty_line", ActivityFile, row(id, nil) + "\r\n" + row(id, nil), RejectEmptyLine, []int64{3}, 1},
		{"line_too_long", ActivityFile, strings.Repeat("x", MaxLineBytes+10) + "\n" + row(id, nil), RejectTooLong, []int64{2}, 1},
		{"line_too_long/at the end", ActivityFile, row(id, nil) + strings.Repeat("é", MaxLineBytes), RejectTooLong, []int64{3}, 1},
		{"idnat_empty", ActivityFile, row(id, map[string]string{"Identification nationale PP": ""}), RejectIDNatEmpty, []int64{2}, 0},
		{"idnat_empty/spaces", ActivityFile, row(id, map[string]string{"Identification nationale PP": "  "}), RejectIDNatEmpty, []int64{2}, 0},
		{"idnat_invalid/Luhn", ActivityFile, row(id, map[string]string{"Identification nationale PP": "810001234566"}), RejectIDNatBad, []int64{2}, 0},
		{"idnat_invalid/RPPS number without its type", ActivityFile, row(id, map[string]string{"Identification nationale PP": "10001234565"}), RejectIDNatBad, []int64{2}, 0},
		{"idnat_invalid/letters", ActivityFile, row(id, map[string]string{"Identification nationale PP": "0A51234567"}), RejectIDNatBad, []int64{2}, 0},
		{"idnat_type_mismatch", ActivityFile, row(id, map[string]string{"Type d'identifiant PP": "0"}), RejectIDNatType, []int64{2}, 0},
		{"idnat_type_mismatch/ADELI", ActivityFile, row("0751234567", map[string]string{"Type d'identifiant PP": "8"}), RejectIDNatType, []int64{2}, 0},
		{"too_many_activities", ActivityFile, many(MaxActivities+2, func(i int) map[string]string {
			return map[string]string{"Numéro SIRET site": strings.Repeat("1", i+1)}
		}), RejectTooManyActivities, []int64{MaxActivities + 2, MaxActivities + 3}, 1},
		{"too_many_specialties", ActivityFile, many(MaxSpecialties+1, func(i int) map[string]string {
			return map[string]string{"Code savoir-faire": strings.Repeat("S", i+1)}
		}), RejectTooManySpecialties, []int64{MaxSpecialties + 2}, 1},
		{"no_specialty", SavoirFaireFile, directorytest.Line([]string{"8", id[1:], id, "MARTIN", "Jean", "10", "Médecin", "C", "Civil", "", "", "", ""}) + "\n",
			RejectNoSpecialty, []int64{2}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := header
			if tt.kind == SavoirFaireFile {
				h = directorytest.Line(directorytest.SavoirFaireHeader) + "\n"
			}
			runs, st := parseAll(t, strings.NewReader(h+tt.body), tt.kind)
			if len(runs) != tt.runs {
				t.Errorf("%d runs, want %d", len(runs), tt.runs)
			}
			r := st.Rejected[tt.reason]
			if r == nil || r.Count != int64(len(tt.lines)) || !slices.Equal(r.FirstLines, tt.lines) || st.RejectedLines() != r.Count {
				t.Errorf("rejected %s, want %s at lines %v", toJSON(t, st.Rejected), tt.reason, tt.lines)
			}
		})
	}
	t.Run("first line numbers are kept up to ten", func(t *testing.T) {
		body := strings.Repeat(row(id, map[string]string{"Identification nationale PP": ""}), 25)
		_, st := parseString(t, header+body)
		r := st.Rejected[RejectIDNatEmpty]
		if r.Count != 25 || !slices.Equal(r.FirstLines, []int64{2, 3, 4, 5, 6, 7, 8, 9, 10, 11}) {
			t.Errorf("got %+v", r)
		}
	})
}

func TestParseHeaderMissingColumn(t *testing.T) {
	for _, c := range needed[ActivityFile] {
		name := columnNames[c]
		t.Run(name, func(t *testing.T) {
			h := strings.Replace(header, name+"|", "Autre colonne|", 1)
			_, err := NewParser(strings.NewReader(h+row(idDupre, nil)), ActivityFile)
			var he *HeaderError
			if !errors.As(err, &he) || !slices.Equal(he.Missing, []string{name}) || he.Kind != ActivityFile {
				t.Fatalf("err = %v, want a HeaderError naming %q", err, name)
			}
			if !strings.Contains(err.Error(), name) {
				t.Errorf("message %q does not name the column", err)
			}
		})
	}
	for _, tt := range []struct{ name, input string }{{"empty file", ""}, {"not the format", "a,b,c\n1,2,3\n"}} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewParser(strings.NewReader(tt.input), ActivityFile)
			var he *HeaderError
			if !errors.As(err, &he) || len(he.Missing) != len(needed[ActivityFile]) {
				t.Errorf("err = %v, want every column missing", err)
			}
		})
	}
	t.Run("savoir-faire", func(t *testing.T) {
		h := strings.Replace(directorytest.Line(directorytest.SavoirFaireHeader), "Libellé savoir-faire", "Libelle", 1)
		_, err := NewParser(strings.NewReader(h+"\n"), SavoirFaireFile)
		var he *HeaderError
		if !errors.As(err, &he) || !slices.Equal(he.Missing, []string{"Libellé savoir-faire"}) || he.Kind != SavoirFaireFile {
			t.Errorf("err = %v", err)
		}
	})
}

func TestDepartment(t *testing.T) {
	for postal, want := range map[string]string{
		"75012": "75", "01000": "01", "69003": "69", "95000": "95",
		"20000": "2A", "20090": "2A", "20100": "2A", "20190": "2A",
		"20200": "2B", "20290": "2B", "20600": "2B", "20620": "2B",
		"20300": "", "20500": "", "20700": "",
		"97100": "971", "97133": "977", "97150": "978", "97190": "971", "97200": "972", "97300": "973", "97400": "974", "97500": "975", "97600": "976",
		"98600": "986", "98700": "987", "98800": "988", "98000": "",
		"00100": "", "": "", "7501": "", "750120": "", "7501A": "", " 7501": "",
	} {
		if got := Department(postal); got != want {
			t.Errorf("Department(%q) = %q, want %q", postal, got, want)
		}
	}
}

// FuzzParser: whatever the bytes after a valid header, the parser neither
// panics nor loops, accounts for every line, yields valid idNats and valid
// UTF-8, within the limits, and every entry survives the compact encoding.
func FuzzParser(f *testing.F) {
	// Small seeds: the fuzzer minimizes every new input, which takes long on big ones.
	cp, _ := charmap.Windows1252.NewEncoder().String(row(idNoel, map[string]string{"Nom d'exercice": "NOËL"}))
	f.Add([]byte(cp))
	f.Add([]byte(row(idDupre, nil) + row(idDupre, map[string]string{"Numéro SIRET site": ""}) + "\n\r\n|||\n"))
	f.Add([]byte("8|10001234565|810001234565|" + strings.Repeat("|", 53) + "\r\n"))
	f.Fuzz(func(t *testing.T, body []byte) {
		for _, h := range []string{header, "\xef\xbb\xbf" + strings.ReplaceAll(header, "é", "\xe9")} {
			p, err := NewParser(io.MultiReader(strings.NewReader(h), bytes.NewReader(body)), ActivityFile)
			if err != nil {
				t.Fatal(err)
			}
			labels := newLabelTable()
			for {
				e, err := p.Next()
				if errors.Is(err, io.EOF) {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				if _, err := idnat.Parse(e.IDNat); err != nil {
					t.Fatalf("invalid idNat %q came out", e.IDNat)
				}
				if len(e.Activities) > MaxActivities || len(e.Specialties) > MaxSpecialties {
					t.Fatalf("limits exceeded: %d activities, %d specialties", len(e.Activities), len(e.Specialties))
				}
				js, err := json.Marshal(e)
				if err != nil || !json.Valid(js) || !utf8Valid(js) {
					t.Fatalf("JSON %q: %v", js, err)
				}
				back, err := decode(labels.encode(nil, e), labels.list)
				if err != nil {
					t.Fatal(err)
				}
				back.IDNat = e.IDNat
				if !reflect.DeepEqual(normalized(back), normalized(*e)) {
					t.Fatalf("round trip:\n%s\n%s", toJSON(t, back), toJSON(t, e))
				}
			}
			st := p.Stats()
			if n := int64(bytes.Count(body, []byte("\n"))); st.Lines < n || st.Lines > n+1 {
				t.Fatalf("%d lines read, the input holds %d line ends", st.Lines, n)
			}
			if st.Lines+1 != p.Line() {
				t.Fatalf("Lines %d, Line %d", st.Lines, p.Line())
			}
		}
	})
}

func utf8Valid(b []byte) bool { return strings.ToValidUTF8(string(b), "?") == string(b) }

// normalized makes empty lists non-nil, as decode returns them.
func normalized(e Identity) Identity {
	if e.Specialties == nil {
		e.Specialties = []Code{}
	}
	if e.Activities == nil {
		e.Activities = []Activity{}
	}
	return e
}
