package directory

import (
	"encoding/binary"
	"errors"
)

// The compact value of an entry: one field of a bucket hash, named by the
// idNat (which is therefore not repeated in the value).
//
//	format byte (1)
//	ref civility (code absent), str family_name, str given_name,
//	ref profession, ref category,
//	uvarint n, n × ref specialty,
//	uvarint n, n × (ref mode, ref sector, str name, str siret, str finess,
//	                str postal_code, str city, str department)
//
// str is a uvarint byte length then UTF-8 bytes (length 0: absent). ref is a
// uvarint: 0 absent; 1 inline, followed by str code and str label; k ≥ 2 the
// entry k−2 of the version's label table, so that "Médecin", "Libéral,
// indépendant, artisan, commerçant" or "Cabinet individuel" cost one byte. A
// department equal to the one the postal code gives (Department) is stored
// absent and derived again when read: a change to Department's rule needs a
// new format byte (or every stored version imported again).
const formatV1 = 1

// maxLabels bounds the label table of a version (and so the memory of an
// import and of a reader's cache); codes beyond it are stored inline.
const maxLabels = 1 << 16

var errCorrupt = errors.New("directory: corrupt entry")

// labelTable numbers the distinct (code, label) pairs of a version.
type labelTable struct {
	index map[Code]uint64
	list  []Code
}

func newLabelTable() *labelTable { return &labelTable{index: map[Code]uint64{}} }

func appendStr(b []byte, s Text) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func (t *labelTable) appendRef(b []byte, c Code) []byte {
	if c.IsZero() {
		return append(b, 0)
	}
	i, ok := t.index[c]
	if !ok && len(t.list) < maxLabels {
		i, ok = uint64(len(t.list)), true
		t.index[c] = i
		t.list = append(t.list, c)
	}
	if !ok {
		b = append(b, 1)
		return appendStr(appendStr(b, c.Code), c.Label)
	}
	return binary.AppendUvarint(b, i+2)
}

func (t *labelTable) appendOptRef(b []byte, c *Code) []byte {
	if c == nil {
		return append(b, 0)
	}
	return t.appendRef(b, *c)
}

// encode appends the compact value of e.
func (t *labelTable) encode(b []byte, e *Identity) []byte {
	b = append(b, formatV1)
	b = t.appendRef(b, Code{Label: e.Civility})
	b = appendStr(b, e.FamilyName)
	b = appendStr(b, e.GivenName)
	b = t.appendRef(b, e.Profession)
	b = t.appendOptRef(b, e.Category)
	b = binary.AppendUvarint(b, uint64(len(e.Specialties)))
	for _, s := range e.Specialties {
		b = t.appendRef(b, s)
	}
	b = binary.AppendUvarint(b, uint64(len(e.Activities)))
	for _, a := range e.Activities {
		b = t.appendOptRef(b, a.Mode)
		b = t.appendOptRef(b, a.Sector)
		s := a.Site
		b = appendStr(b, s.Name)
		b = appendStr(b, s.SIRET)
		b = appendStr(b, s.FINESS)
		b = appendStr(b, s.PostalCode)
		b = appendStr(b, s.City)
		dept := s.Department
		if dept == Text(Department(string(s.PostalCode))) {
			dept = ""
		}
		b = appendStr(b, dept)
	}
	return b
}

// marshal is the table as stored: uvarint n, then n × (str code, str label).
func (t *labelTable) marshal() []byte {
	b := binary.AppendUvarint(nil, uint64(len(t.list)))
	for _, c := range t.list {
		b = appendStr(appendStr(b, c.Code), c.Label)
	}
	return b
}

func parseLabels(b []byte) ([]Code, error) {
	d := decoder{b: b}
	n := d.uvarint()
	if n > maxLabels {
		return nil, errCorrupt
	}
	list := make([]Code, 0, n)
	for i := uint64(0); i < n && d.err == nil; i++ {
		list = append(list, Code{Code: d.str(), Label: d.str()})
	}
	if d.err != nil || len(d.b) != 0 {
		return nil, errCorrupt
	}
	return list, nil
}

type decoder struct {
	b      []byte
	labels []Code
	err    error
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.err = errCorrupt
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) str() Text {
	n := d.uvarint()
	if d.err != nil || n > uint64(len(d.b)) {
		d.err = errCorrupt
		return ""
	}
	s := Text(d.b[:n])
	d.b = d.b[n:]
	return s
}

// ref reads a code; ok is false when it is absent.
func (d *decoder) ref() (c Code, ok bool) {
	switch k := d.uvarint(); {
	case d.err != nil || k == 0:
		return Code{}, false
	case k == 1:
		return Code{Code: d.str(), Label: d.str()}, true
	case k-2 < uint64(len(d.labels)):
		return d.labels[k-2], true
	default:
		d.err = errCorrupt
		return Code{}, false
	}
}

func (d *decoder) optRef() *Code {
	if c, ok := d.ref(); ok {
		return &c
	}
	return nil
}

// count reads a list length, bounded by what the rest of the value can hold
// (each element takes at least one byte).
func (d *decoder) count() int {
	n := d.uvarint()
	if n > uint64(len(d.b)) {
		d.err = errCorrupt
		return 0
	}
	return int(n)
}

// decode reads a compact value (the IDNat and Version are the caller's).
func decode(b []byte, labels []Code) (Identity, error) {
	if len(b) == 0 || b[0] != formatV1 {
		return Identity{}, errCorrupt
	}
	d := decoder{b: b[1:], labels: labels}
	var e Identity
	civ, _ := d.ref()
	e.Civility = civ.Label
	e.FamilyName = d.str()
	e.GivenName = d.str()
	e.Profession, _ = d.ref()
	e.Category = d.optRef()
	n := d.count()
	e.Specialties = make([]Code, 0, n)
	for i := 0; i < n && d.err == nil; i++ {
		c, _ := d.ref()
		e.Specialties = append(e.Specialties, c)
	}
	n = d.count()
	e.Activities = make([]Activity, 0, n)
	for i := 0; i < n && d.err == nil; i++ {
		var a Activity
		a.Mode = d.optRef()
		a.Sector = d.optRef()
		a.Site.Name = d.str()
		a.Site.SIRET = d.str()
		a.Site.FINESS = d.str()
		a.Site.PostalCode = d.str()
		a.Site.City = d.str()
		a.Site.Department = d.str()
		if a.Site.Department == "" {
			a.Site.Department = Text(Department(string(a.Site.PostalCode)))
		}
		e.Activities = append(e.Activities, a)
	}
	if d.err != nil || len(d.b) != 0 {
		return Identity{}, errCorrupt
	}
	return e, nil
}
