package directory

import (
	"encoding/json"
)

// Text is a value of the directory: empty in the file means absent, and an
// absent value reads as JSON null.
type Text string

// MarshalJSON writes null for an absent (empty) value.
func (t Text) MarshalJSON() ([]byte, error) {
	if t == "" {
		return []byte("null"), nil
	}
	return json.Marshal(string(t))
}

// UnmarshalJSON reads null as absent.
func (t *Text) UnmarshalJSON(b []byte) error {
	var s *string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	*t = ""
	if s != nil {
		*t = Text(*s)
	}
	return nil
}

// Code is a coded value of the directory with its label (a profession, a
// category, a specialty, a mode or sector of activity).
type Code struct {
	Code  Text `json:"code"`
	Label Text `json:"label"`
}

// IsZero reports whether both the code and the label are absent.
func (c Code) IsZero() bool { return c.Code == "" && c.Label == "" }

// Site is a place of activity.
type Site struct {
	Name       Text `json:"name"` // Raison sociale site, else Enseigne commerciale site
	SIRET      Text `json:"siret"`
	FINESS     Text `json:"finess"`
	PostalCode Text `json:"postal_code"`
	City       Text `json:"city"`
	Department Text `json:"department"` // from the file, else derived from the postal code
}

// IsZero reports whether every field of the site is absent.
func (s Site) IsZero() bool { return s == Site{} }

// Activity is one place of activity of a practitioner: how (mode: libéral,
// salarié, bénévole) and in which sector they practise there.
type Activity struct {
	Mode   *Code `json:"mode"`   // nil when absent
	Sector *Code `json:"sector"` // nil when absent
	Site   Site  `json:"site"`
}

func (a Activity) equal(b Activity) bool {
	return eqCode(a.Mode, b.Mode) && eqCode(a.Sector, b.Sector) && a.Site == b.Site
}

func (a Activity) isZero() bool { return a.Mode == nil && a.Sector == nil && a.Site.IsZero() }

func eqCode(a, b *Code) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}

// Identity is a practitioner's entry: the contract's `identity` object
// (PROTOCOL.md, Directory). Specialties and Activities are never nil: an
// empty list reads as [].
type Identity struct {
	IDNat       string     `json:"idnat"`
	Civility    Text       `json:"civility"`
	FamilyName  Text       `json:"family_name"`
	GivenName   Text       `json:"given_name"`
	Profession  Code       `json:"profession"`
	Category    *Code      `json:"category"`    // nil when absent
	Specialties []Code     `json:"specialties"` // distinct, in file order
	Activities  []Activity `json:"activities"`  // distinct, in file order
	Version     string     `json:"directory_version"`
}

// MarshalJSON writes [] rather than null for empty lists.
func (e Identity) MarshalJSON() ([]byte, error) {
	type plain Identity
	if e.Specialties == nil {
		e.Specialties = []Code{}
	}
	if e.Activities == nil {
		e.Activities = []Activity{}
	}
	return json.Marshal(plain(e))
}

// Limits of one entry: a practitioner listed with more places of activity or
// specialties than this keeps the first ones (the lines beyond are counted
// as rejected, reason too_many_activities or too_many_specialties). They
// bound the memory of an import whatever the file holds.
const (
	MaxActivities  = 100
	MaxSpecialties = 50
)

// addSpecialty adds c unless it is absent or already listed. It reports
// false when c is new but the list is full.
func (e *Identity) addSpecialty(c Code) bool {
	if c.IsZero() {
		return true
	}
	for _, s := range e.Specialties {
		if s == c {
			return true
		}
	}
	if len(e.Specialties) >= MaxSpecialties {
		return false
	}
	e.Specialties = append(e.Specialties, c)
	return true
}

// addActivity adds a unless it is empty or already listed. It reports false
// when a is new but the list is full.
func (e *Identity) addActivity(a Activity) bool {
	if a.isZero() {
		return true
	}
	for _, b := range e.Activities {
		if b.equal(a) {
			return true
		}
	}
	if len(e.Activities) >= MaxActivities {
		return false
	}
	e.Activities = append(e.Activities, a)
	return true
}

// merge adds o, read from later lines of the file, to e: the first non-empty
// name, civility, profession and category win; specialties and activities
// are appended when new. It returns how many were dropped by the limits.
func (e *Identity) merge(o *Identity) (dropped int) {
	if e.Civility == "" {
		e.Civility = o.Civility
	}
	if e.FamilyName == "" {
		e.FamilyName = o.FamilyName
	}
	if e.GivenName == "" {
		e.GivenName = o.GivenName
	}
	if e.Profession.IsZero() {
		e.Profession = o.Profession
	}
	if e.Category == nil {
		e.Category = o.Category
	}
	for _, s := range o.Specialties {
		if !e.addSpecialty(s) {
			dropped++
		}
	}
	for _, a := range o.Activities {
		if !e.addActivity(a) {
			dropped++
		}
	}
	return dropped
}
