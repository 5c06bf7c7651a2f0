package idnat

import (
	"encoding/json"
	"os"
	"testing"
)

type vectorFile struct {
	IDNat struct {
		Valid   []string `json:"valid"`
		Invalid []string `json:"invalid"`
	} `json:"idnat"`
}

func loadVectors(t testing.TB) vectorFile {
	t.Helper()
	b, err := os.ReadFile("testdata/jose-vectors.json")
	if err != nil {
		t.Fatal(err)
	}
	var v vectorFile
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	return v
}

func TestParseVectors(t *testing.T) {
	v := loadVectors(t)
	if len(v.IDNat.Valid) == 0 || len(v.IDNat.Invalid) == 0 {
		t.Fatal("no idNat vectors")
	}
	for _, s := range v.IDNat.Valid {
		if _, err := Parse(s); err != nil {
			t.Errorf("ok/%q: %v", s, err)
		}
	}
	for _, s := range v.IDNat.Invalid {
		if _, err := Parse(s); err == nil {
			t.Errorf("fail/%q: accepted", s)
		}
	}
}

func TestParse(t *testing.T) {
	tests := []struct {
		name string
		in   string
		kind Kind
	}{
		{"ok/rpps", "810001234565", RPPS},
		{"ok/adeli", "0751234567", ADELI},
		{"fail/rpps-bad-luhn", "810001234566", 0},
		{"fail/rpps-leading-space", " 810001234565", 0},
		{"fail/rpps-trailing-newline", "810001234565\n", 0},
		{"fail/wrong-prefix", "710001234565", 0},
		{"fail/adeli-short", "075123456", 0},
		{"fail/empty", "", 0},
		{"fail/fullwidth-digits", "８１０００１２３４５６５", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, err := Parse(tt.in)
			if tt.kind == 0 {
				if err == nil {
					t.Fatalf("Parse(%q) accepted", tt.in)
				}
				return
			}
			if err != nil || id.Kind() != tt.kind || id.String() != tt.in {
				t.Fatalf("Parse(%q) = %v, %v", tt.in, id, err)
			}
		})
	}
}

func TestMask(t *testing.T) {
	if got := Mask("810001234565"); got != "*********565" {
		t.Fatalf("Mask = %q", got)
	}
	if got := Mask("ab"); got != "**" {
		t.Fatalf("Mask short = %q", got)
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"810001234565", "0751234567", "810001234566", "", "8", "0", "8100012345650", "９１２３"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		id, err := Parse(s)
		if err != nil {
			return
		}
		if id.String() != s {
			t.Fatalf("accepted %q but returned %q", s, id.String())
		}
		if !allDigits(s) || (len(s) != 12 && len(s) != 10) {
			t.Fatalf("accepted malformed %q", s)
		}
		if id.Kind() == RPPS && !luhnValid(s[1:]) {
			t.Fatalf("accepted RPPS with bad Luhn %q", s)
		}
		// Changing one digit of a valid RPPS must break its check digit.
		if id.Kind() == RPPS {
			b := []byte(s)
			b[5] = '0' + (b[5]-'0'+1)%10
			if _, err := Parse(string(b)); err == nil {
				t.Fatalf("Luhn did not catch a changed digit in %q", b)
			}
		}
	})
}
