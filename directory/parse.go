package directory

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
	"unicode/utf8"

	"golang.org/x/text/encoding/charmap"

	"github.com/ecps-sante/ecps/idnat"
)

// FileKind is which file of the extract a Parser reads.
type FileKind int

const (
	// ActivityFile is PS_LibreAcces_Personne_activite_<date>.txt: one line
	// per practitioner × place of activity.
	ActivityFile FileKind = iota + 1
	// SavoirFaireFile is PS_LibreAcces_SavoirFaire_<date>.txt: one line per
	// practitioner × specialty.
	SavoirFaireFile
)

func (k FileKind) String() string {
	if k == SavoirFaireFile {
		return "savoir-faire file"
	}
	return "activity file"
}

type column int

const (
	cType column = iota
	cIDNat
	cCivility
	cFamily
	cGiven
	cProfCode
	cProfLabel
	cCatCode
	cCatLabel
	cSFCode
	cSFLabel
	cModeCode
	cModeLabel
	cSectorCode
	cSectorLabel
	cSIRET
	cFINESS
	cName
	cSign
	cPostal
	cCity
	cDept
	numColumns
)

// columnNames are the header names of the columns used (PROTOCOL.md,
// Directory), matched ignoring case and surrounding spaces.
var columnNames = [numColumns]string{
	cType:        "Type d'identifiant PP",
	cIDNat:       "Identification nationale PP",
	cCivility:    "Libellé civilité d'exercice",
	cFamily:      "Nom d'exercice",
	cGiven:       "Prénom d'exercice",
	cProfCode:    "Code profession",
	cProfLabel:   "Libellé profession",
	cCatCode:     "Code catégorie professionnelle",
	cCatLabel:    "Libellé catégorie professionnelle",
	cSFCode:      "Code savoir-faire",
	cSFLabel:     "Libellé savoir-faire",
	cModeCode:    "Code mode exercice",
	cModeLabel:   "Libellé mode exercice",
	cSectorCode:  "Code secteur d'activité",
	cSectorLabel: "Libellé secteur d'activité",
	cSIRET:       "Numéro SIRET site",
	cFINESS:      "Numéro FINESS site",
	cName:        "Raison sociale site",
	cSign:        "Enseigne commerciale site",
	cPostal:      "Code postal (coord. structure)",
	cCity:        "Libellé commune (coord. structure)",
	cDept:        "Code Département (structure)",
}

// needed lists the columns a file's header must have: every column the
// contract uses for the activity file (a renamed column refuses the file
// rather than importing nulls), the idNat and the savoir-faire for the
// other. Type d'identifiant PP is checked against the idNat when present.
var needed = map[FileKind][]column{
	ActivityFile: {cType, cIDNat, cCivility, cFamily, cGiven, cProfCode, cProfLabel, cCatCode, cCatLabel,
		cSFCode, cSFLabel, cModeCode, cModeLabel, cSectorCode, cSectorLabel, cSIRET, cFINESS, cName, cSign,
		cPostal, cCity, cDept},
	SavoirFaireFile: {cIDNat, cSFCode, cSFLabel},
}

// Reasons for which a line is rejected (keys of FileStats.Rejected). A
// rejected line is counted, never fatal.
const (
	RejectColumns     = "column_count"        // not as many '|' as the header
	RejectEmptyLine   = "empty_line"          // nothing on the line
	RejectTooLong     = "line_too_long"       // longer than MaxLineBytes
	RejectIDNatEmpty  = "idnat_empty"         // Identification nationale PP is empty
	RejectIDNatBad    = "idnat_invalid"       // not an RPPS (8 + 11 digits, Luhn) or ADELI (0 + 9 digits) idNat
	RejectIDNatType   = "idnat_type_mismatch" // Type d'identifiant PP is not the idNat's first digit (8 RPPS, 0 ADELI)
	RejectNoSpecialty = "no_specialty"        // savoir-faire file: neither code nor label
	// The line's place of activity (or specialty) is beyond MaxActivities
	// (MaxSpecialties) for its practitioner and is dropped; the rest of the
	// line is read.
	RejectTooManyActivities  = "too_many_activities"
	RejectTooManySpecialties = "too_many_specialties"
)

// MaxLineBytes bounds a line (real lines are about 350 bytes).
const MaxLineBytes = 64 << 10

// maxFirstLines is how many line numbers are kept per reason.
const maxFirstLines = 10

// Rejects counts the lines rejected for one reason.
type Rejects struct {
	Count      int64   `json:"count"`
	FirstLines []int64 `json:"first_lines"` // the first ones, line 1 being the header
}

// FileStats describes one file read by a Parser.
type FileStats struct {
	Name     string `json:"name,omitempty"`
	Encoding string `json:"encoding"` // utf-8 or windows-1252, from the header
	Lines    int64  `json:"lines"`    // lines after the header
	// Windows1252Lines counts the lines of a UTF-8 file that were not valid
	// UTF-8 and were read as Windows-1252.
	Windows1252Lines int64               `json:"windows_1252_lines,omitempty"`
	Rejected         map[string]*Rejects `json:"rejected,omitempty"`
}

// RejectedLines is the number of lines rejected for any reason.
func (s FileStats) RejectedLines() int64 {
	var n int64
	for _, r := range s.Rejected {
		n += r.Count
	}
	return n
}

func (s *FileStats) reject(reason string, line int64) {
	if s.Rejected == nil {
		s.Rejected = map[string]*Rejects{}
	}
	r := s.Rejected[reason]
	if r == nil {
		r = &Rejects{}
		s.Rejected[reason] = r
	}
	r.Count++
	if len(r.FirstLines) < maxFirstLines {
		r.FirstLines = append(r.FirstLines, line)
	}
}

// HeaderError refuses a file whose header lacks a needed column.
type HeaderError struct {
	Kind    FileKind
	Missing []string // the names of the columns not found
}

func (e *HeaderError) Error() string {
	return fmt.Sprintf("directory: the header of the %s lacks the column(s) %s", e.Kind, strings.Join(quoteAll(e.Missing), ", "))
}

func quoteAll(s []string) []string {
	out := make([]string, len(s))
	for i, v := range s {
		out[i] = fmt.Sprintf("%q", v)
	}
	return out
}

// windows1252 maps every byte to its rune in Windows-1252 (x/text's table;
// the five bytes it leaves undefined map to U+FFFD).
var windows1252 = func() (t [256]rune) {
	for i := range t {
		t[i] = charmap.Windows1252.DecodeByte(byte(i))
	}
	return t
}()

// Parser reads one file of the extract as a stream, in constant memory.
// Next merges each run of contiguous lines of one idNat into one Identity;
// an idNat whose lines are not contiguous comes out once per run (the
// importer merges the runs).
//
// Encoding: decided once per file from the header, which always holds
// accented names ("Libellé…", "Prénom d'exercice"): a header that is valid
// UTF-8 makes a UTF-8 file, any other a Windows-1252 one. In a UTF-8 file a
// line that is not valid UTF-8 is read as Windows-1252 (and counted): invalid
// UTF-8 means Windows-1252. A Windows-1252 file is read as such throughout,
// even the rare line whose bytes happen to form valid UTF-8 ("Ã©"). A UTF-8
// byte-order mark is skipped; lines end with LF or CRLF.
type Parser struct {
	kind   FileKind
	r      *bufio.Reader
	col    [numColumns]int // index in the line, -1 when absent
	pipes  int             // '|' per line, as in the header
	cp1252 bool
	stats  FileStats
	line   int64 // number of the last line read; the header is line 1
	dec    []byte
	fields [][]byte
	intern map[string]string
	codes  map[Code]*Code
	cur    *Identity
	done   bool
}

// Bounds of the parser's caches of repeated values (codes, labels, postal
// codes, towns): beyond them values are simply not shared.
const (
	maxIntern = 1 << 15
	maxCodes  = 1 << 12
)

// NewParser reads the header of r. It returns a *HeaderError when the header
// lacks a column the kind of file needs.
func NewParser(r io.Reader, kind FileKind) (*Parser, error) {
	p := &Parser{kind: kind, r: bufio.NewReaderSize(r, MaxLineBytes), intern: map[string]string{}, codes: map[Code]*Code{}}
	for i := range p.col {
		p.col[i] = -1
	}
	header, err := p.r.ReadSlice('\n')
	if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, bufio.ErrBufferFull) {
		return nil, err
	}
	p.line = 1
	header = bytes.TrimPrefix(header, []byte("\xef\xbb\xbf"))
	header = trimEOL(header)
	p.stats.Encoding = "utf-8"
	if !utf8.Valid(header) {
		p.cp1252 = true
		p.stats.Encoding = "windows-1252"
		header = p.decode1252(header)
	}
	p.pipes = bytes.Count(header, []byte{'|'})
	for i, name := range strings.Split(string(header), "|") {
		name = strings.TrimSpace(name)
		for c := range numColumns {
			if p.col[c] < 0 && strings.EqualFold(name, columnNames[c]) {
				p.col[c] = i
			}
		}
	}
	var missing []string
	for _, c := range needed[kind] {
		if p.col[c] < 0 {
			missing = append(missing, columnNames[c])
		}
	}
	if len(missing) > 0 {
		return nil, &HeaderError{Kind: kind, Missing: missing}
	}
	return p, nil
}

// Stats returns what was read so far.
func (p *Parser) Stats() FileStats { return p.stats }

// Line is the number of the last line read (the header is line 1).
func (p *Parser) Line() int64 { return p.line }

// Next returns the next practitioner: the merge of a run of contiguous
// lines with the same idNat. It returns io.EOF at the end of the file.
// Lines that cannot be read are counted in Stats and skipped.
func (p *Parser) Next() (*Identity, error) {
	for !p.done {
		line, ok, err := p.readLine()
		if err != nil {
			return nil, err
		}
		if !ok {
			p.done = true
			break
		}
		if line == nil {
			continue // rejected
		}
		if out := p.parseLine(line); out != nil {
			return out, nil
		}
	}
	if p.cur != nil {
		out := p.cur
		p.cur = nil
		return out, nil
	}
	return nil, io.EOF
}

func trimEOL(b []byte) []byte {
	b = bytes.TrimSuffix(b, []byte{'\n'})
	return bytes.TrimSuffix(b, []byte{'\r'})
}

// readLine returns the next line, decoded to UTF-8, without its end of
// line; ok is false at the end of the input. A line too long is counted
// and returned as nil.
func (p *Parser) readLine() (line []byte, ok bool, err error) {
	b, err := p.r.ReadSlice('\n')
	switch {
	case errors.Is(err, bufio.ErrBufferFull):
		for errors.Is(err, bufio.ErrBufferFull) {
			_, err = p.r.ReadSlice('\n')
		}
		if err != nil && !errors.Is(err, io.EOF) {
			return nil, false, err
		}
		p.line++
		p.stats.Lines++
		p.stats.reject(RejectTooLong, p.line)
		return nil, true, nil
	case errors.Is(err, io.EOF):
		if len(b) == 0 {
			return nil, false, nil
		}
	case err != nil:
		return nil, false, err
	}
	p.line++
	p.stats.Lines++
	b = trimEOL(b)
	if p.cp1252 {
		if hasHigh(b) {
			b = p.decode1252(b)
		}
	} else if !utf8.Valid(b) {
		p.stats.Windows1252Lines++
		b = p.decode1252(b)
	}
	if len(b) == 0 {
		p.stats.reject(RejectEmptyLine, p.line)
		return nil, true, nil
	}
	return b, true, nil
}

func hasHigh(b []byte) bool {
	for _, c := range b {
		if c >= 0x80 {
			return true
		}
	}
	return false
}

func (p *Parser) decode1252(b []byte) []byte {
	p.dec = p.dec[:0]
	for _, c := range b {
		if c < 0x80 {
			p.dec = append(p.dec, c)
		} else {
			p.dec = utf8.AppendRune(p.dec, windows1252[c])
		}
	}
	return p.dec
}

// field is the value of column c on the current line, spaces trimmed.
func (p *Parser) field(c column) []byte {
	if p.col[c] < 0 {
		return nil
	}
	return bytes.TrimSpace(p.fields[p.col[c]])
}

// text is a value that is mostly unique (names, numbers).
func (p *Parser) text(c column) Text { return Text(p.field(c)) }

// shared is a value that repeats (codes, labels, towns): one string each.
func (p *Parser) shared(c column) Text {
	b := p.field(c)
	if len(b) == 0 {
		return ""
	}
	if s, ok := p.intern[string(b)]; ok {
		return Text(s)
	}
	s := string(b)
	if len(p.intern) < maxIntern {
		p.intern[s] = s
	}
	return Text(s)
}

func (p *Parser) code(code, label column) Code {
	return Code{Code: p.shared(code), Label: p.shared(label)}
}

// optCode is a code that may be absent (nil); equal codes share a pointer.
func (p *Parser) optCode(code, label column) *Code {
	c := p.code(code, label)
	if c.IsZero() {
		return nil
	}
	if ptr, ok := p.codes[c]; ok {
		return ptr
	}
	ptr := &c
	if len(p.codes) < maxCodes {
		p.codes[c] = ptr
	}
	return ptr
}

// parseLine reads one line into the current run. It returns the previous
// run when this line starts another one.
func (p *Parser) parseLine(line []byte) (done *Identity) {
	if bytes.Count(line, []byte{'|'}) != p.pipes {
		p.stats.reject(RejectColumns, p.line)
		return nil
	}
	p.fields = p.fields[:0]
	for {
		i := bytes.IndexByte(line, '|')
		if i < 0 {
			p.fields = append(p.fields, line)
			break
		}
		p.fields = append(p.fields, line[:i])
		line = line[i+1:]
	}
	raw := p.field(cIDNat)
	if len(raw) == 0 {
		p.stats.reject(RejectIDNatEmpty, p.line)
		return nil
	}
	if p.cur == nil || p.cur.IDNat != string(raw) {
		if _, err := idnat.Parse(string(raw)); err != nil {
			p.stats.reject(RejectIDNatBad, p.line)
			return nil
		}
	}
	if typ := p.field(cType); len(typ) > 0 && (len(typ) != 1 || typ[0] != raw[0]) {
		p.stats.reject(RejectIDNatType, p.line)
		return nil
	}
	e := p.cur
	if e == nil || e.IDNat != string(raw) {
		done = p.cur
		e = &Identity{IDNat: string(raw)}
		p.cur = e
	}
	if p.kind == SavoirFaireFile {
		c := p.code(cSFCode, cSFLabel)
		if c.IsZero() {
			p.stats.reject(RejectNoSpecialty, p.line)
		} else if !e.addSpecialty(c) {
			p.stats.reject(RejectTooManySpecialties, p.line)
		}
		return done
	}
	if e.Civility == "" {
		e.Civility = p.shared(cCivility)
	}
	if e.FamilyName == "" {
		e.FamilyName = p.text(cFamily)
	}
	if e.GivenName == "" {
		e.GivenName = p.text(cGiven)
	}
	if e.Profession.IsZero() {
		e.Profession = p.code(cProfCode, cProfLabel)
	}
	if e.Category == nil {
		e.Category = p.optCode(cCatCode, cCatLabel)
	}
	if !e.addSpecialty(p.code(cSFCode, cSFLabel)) {
		p.stats.reject(RejectTooManySpecialties, p.line)
	}
	a := Activity{
		Mode:   p.optCode(cModeCode, cModeLabel),
		Sector: p.optCode(cSectorCode, cSectorLabel),
		Site: Site{
			Name:       p.text(cName),
			SIRET:      p.text(cSIRET),
			FINESS:     p.text(cFINESS),
			PostalCode: p.shared(cPostal),
			City:       p.shared(cCity),
			Department: p.shared(cDept),
		},
	}
	if a.Site.Name == "" {
		a.Site.Name = p.text(cSign)
	}
	if a.Site.Department == "" {
		a.Site.Department = Text(Department(string(a.Site.PostalCode)))
	}
	if !e.addActivity(a) {
		p.stats.reject(RejectTooManyActivities, p.line)
	}
	return done
}
