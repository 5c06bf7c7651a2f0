package directory

import (
	"errors"
	"reflect"
	"strconv"
	"testing"
)

func sampleIdentity() *Identity {
	return &Identity{
		IDNat: "810001234565", Civility: "Docteur", FamilyName: "DUPRÉ-LEFÈVRE", GivenName: "Hélène",
		Profession: Code{"10", "Médecin"}, Category: &Code{"C", "Civil"},
		Specialties: []Code{{"SM54", "Médecine Générale (SM)"}, {"SM04", "Cardiologie"}},
		Activities: []Activity{
			{Mode: &Code{"L", "Libéral"}, Sector: &Code{"SA07", "Cabinet individuel"},
				Site: Site{Name: "CABINET", SIRET: "12345678900012", PostalCode: "75012", City: "PARIS", Department: "75"}},
			{Site: Site{PostalCode: "20600", City: "BASTIA", Department: "2B"}},
			{Mode: &Code{"S", "Salarié"}, Site: Site{PostalCode: "75012", Department: "93"}},
			{Sector: &Code{"SA01", ""}, Site: Site{Name: "SANS CODE POSTAL", Department: "2A"}},
		},
	}
}

func TestEncodeRoundTrip(t *testing.T) {
	for _, tt := range []struct {
		name string
		e    *Identity
	}{
		{"full", sampleIdentity()},
		{"empty", &Identity{IDNat: "0751234567"}},
		{"profession absent, no lists", &Identity{IDNat: "0751234567", FamilyName: "X", Specialties: []Code{}, Activities: []Activity{}}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			labels := newLabelTable()
			raw := labels.encode(nil, tt.e)
			list, err := parseLabels(labels.marshal())
			if err != nil {
				t.Fatal(err)
			}
			got, err := decode(raw, list)
			if err != nil {
				t.Fatal(err)
			}
			got.IDNat = tt.e.IDNat
			if !reflect.DeepEqual(got, normalized(*tt.e)) {
				t.Errorf("got\n%s\nwant\n%s", toJSON(t, got), toJSON(t, tt.e))
			}
		})
	}
}

// Every code costs one byte (an index into the label table, for the first
// 126 pairs); a department that the postal code gives costs one.
func TestEncodeIsCompact(t *testing.T) {
	labels := newLabelTable()
	e := sampleIdentity()
	got := len(labels.encode(nil, e))
	var text int
	for _, s := range []Text{e.FamilyName, e.GivenName} {
		text += len(s) + 1
	}
	for _, a := range e.Activities {
		for _, s := range []Text{a.Site.Name, a.Site.SIRET, a.Site.FINESS, a.Site.PostalCode, a.Site.City} {
			text += len(s) + 1
		}
	}
	// format + civility + profession + category + 2 counts + 2 specialties
	// + per activity mode, sector, department (absent when derived: 1 byte)
	want := text + 1 + 3 + 2 + 2 + 4*2 + 4*1 + len("93") + len("2A")
	if got != want {
		t.Errorf("encoded %d bytes, want %d", got, want)
	}
}

func TestEncodeLabelTableFull(t *testing.T) {
	labels := newLabelTable()
	for i := range maxLabels {
		labels.appendRef(nil, Code{Code: Text(strconv.Itoa(i))})
	}
	e := &Identity{IDNat: "0751234567", Profession: Code{"new", "after the table is full"}}
	raw := labels.encode(nil, e)
	if len(labels.list) != maxLabels {
		t.Fatalf("table grew to %d", len(labels.list))
	}
	got, err := decode(raw, labels.list)
	if err != nil || got.Profession != e.Profession {
		t.Errorf("inline code: %+v, %v", got.Profession, err)
	}
}

func TestDecodeCorrupt(t *testing.T) {
	labels := newLabelTable()
	raw := labels.encode(nil, sampleIdentity())
	for _, bad := range [][]byte{
		nil, {}, {2}, raw[:len(raw)-1], append(append([]byte{}, raw...), 0),
		{formatV1, 200}, // a label index beyond the table
		{formatV1, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}, // varint overflow
	} {
		if _, err := decode(bad, labels.list); !errors.Is(err, errCorrupt) {
			t.Errorf("decode(%x) = %v, want errCorrupt", bad, err)
		}
	}
	for _, bad := range [][]byte{{}, {5}, {1, 3, 'a'}, append(labels.marshal(), 0)} {
		if _, err := parseLabels(bad); !errors.Is(err, errCorrupt) {
			t.Errorf("parseLabels(%x) = %v, want errCorrupt", bad, err)
		}
	}
}
