package enrollment

import (
	"crypto/rand"
	"encoding/binary"
	"slices"
	"strings"
)

// crockford is Crockford's base32 alphabet: digits and capitals without I, L, O, U.
const crockford = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

// newCode returns 10 random Crockford base32 characters: 50 bits.
func newCode() string {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err)
	}
	v := binary.BigEndian.Uint64(b[:])
	out := make([]byte, 10)
	for i := range out {
		out[i] = crockford[v&31]
		v >>= 5
	}
	return string(out)
}

// formatCode shows a code as XXXX-XXXX-XX.
func formatCode(c string) string { return c[:4] + "-" + c[4:8] + "-" + c[8:] }

// normalizeCode reads typed input: case-insensitive, '-' and spaces ignored.
func normalizeCode(s string) string {
	s = strings.ToUpper(s)
	return strings.Map(func(r rune) rune {
		if r == '-' || r == ' ' {
			return -1
		}
		return r
	}, s)
}

func sortDevices(ds []Device) {
	slices.SortFunc(ds, func(a, b Device) int {
		if c := a.CreatedAt.Compare(b.CreatedAt); c != 0 {
			return c
		}
		return strings.Compare(a.DeviceID, b.DeviceID)
	})
}
