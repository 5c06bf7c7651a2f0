// Package idnat parses the national identifier of a French health
// professional (idNat): "8" followed by an 11-digit RPPS number whose last
// digit is a Luhn check digit over the 11, or "0" followed by a 9-digit
// ADELI number. Anything else is rejected.
package idnat

import (
	"errors"
	"strings"
)

// ErrInvalid is returned for any string that is not a valid idNat.
var ErrInvalid = errors.New("idnat: not an RPPS (8 + 11 digits, Luhn) or ADELI (0 + 9 digits) identifier")

// Kind tells which register an idNat comes from.
type Kind int

const (
	RPPS Kind = iota + 1
	ADELI
)

// ID is a validated idNat. Its zero value is not valid.
type ID struct {
	s    string
	kind Kind
}

// Parse validates s exactly as given: no trimming, no spaces, ASCII digits only.
func Parse(s string) (ID, error) {
	switch {
	case len(s) == 12 && s[0] == '8' && allDigits(s) && luhnValid(s[1:]):
		return ID{s: s, kind: RPPS}, nil
	case len(s) == 10 && s[0] == '0' && allDigits(s):
		return ID{s: s, kind: ADELI}, nil
	}
	return ID{}, ErrInvalid
}

// String returns the full idNat. Do not log it at info level: use Masked.
func (id ID) String() string { return id.s }

// Kind returns the register of the identifier.
func (id ID) Kind() Kind { return id.kind }

// Masked returns the idNat with all but its last three digits hidden, for logs.
func (id ID) Masked() string { return Mask(id.s) }

// Mask hides all but the last three characters of s (any string), for logs.
func Mask(s string) string {
	if len(s) <= 3 {
		return strings.Repeat("*", len(s))
	}
	return strings.Repeat("*", len(s)-3) + s[len(s)-3:]
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// luhnValid reports whether the digit string ends with a valid Luhn check digit.
func luhnValid(digits string) bool {
	sum := 0
	double := false
	for i := len(digits) - 1; i >= 0; i-- {
		d := int(digits[i] - '0')
		if double {
			d *= 2
			if d > 9 {
				d -= 9
			}
		}
		sum += d
		double = !double
	}
	return sum%10 == 0
}
