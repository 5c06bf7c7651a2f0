package challenge

import (
	"strings"
	"testing"

	"github.com/ecps-sante/ecps/keyslot"
	"github.com/ecps-sante/ecps/token"
)

func TestSteerTableComplete(t *testing.T) {
	for v, s := range steerTable() {
		if len(s) != steerLen || !token.IsBase64URL(s) || keyslot.CRC16(s)%keyslot.Count != uint16(v) {
			t.Fatalf("steer[%d] = %q", v, s)
		}
	}
}

// A steered tag is still a valid tag, keeps its random head, and its key
// falls in the slot asked for.
func TestSteerTag(t *testing.T) {
	k := keys{prefix: "ecps:"}
	for i := range 2000 {
		subject := "8" + strings.Repeat("1", 10)[:i%10]
		want := keyslot.Of(k.logins(subject))
		tag := token.New(12)
		got := steerTag(tag, want)
		if _, ok := challengeTag("chl_" + got); !ok {
			t.Fatalf("steered tag %q is not a tag", got)
		}
		if got[:tagLen-steerLen] != tag[:tagLen-steerLen] {
			t.Fatalf("steered %q from %q: the head changed", got, tag)
		}
		if s := keyslot.Of(k.auth(got)); s != want {
			t.Fatalf("auth key of %q in slot %d, want %d", got, s, want)
		}
		if s := keyslot.Of(k.auth(got)); s != keyslot.Of(k.qr(got)) {
			t.Fatal("a login's keys must share their slot")
		}
	}
}
