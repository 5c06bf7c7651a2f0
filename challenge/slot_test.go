package challenge

import (
	"strings"
	"testing"

	"github.com/ecps-sante/ecps/token"
)

// The slots Redis's documentation gives for CLUSTER KEYSLOT, and the
// check value of CRC-16/XMODEM.
func TestSlotOf(t *testing.T) {
	if got := crc16("123456789"); got != 0x31C3 {
		t.Fatalf("crc16(123456789) = %#x, want 0x31c3", got)
	}
	for key, want := range map[string]uint16{
		"somekey": 11058, "foo{hash_tag}": 2515, "bar{hash_tag}": 2515,
		"hash_tag": 2515,
	} {
		if got := slotOf(key); got != want {
			t.Errorf("slotOf(%q) = %d, want %d", key, got, want)
		}
	}
	// An empty tag hashes the whole key.
	if slotOf("x{}y") != crc16("x{}y")%clusterSlots {
		t.Error("an empty hash tag must hash the whole key")
	}
}

func TestSteerTableComplete(t *testing.T) {
	for v, s := range steerTable() {
		if len(s) != steerLen || !token.IsBase64URL(s) || crc16(s)%clusterSlots != uint16(v) {
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
		want := slotOf(k.logins(subject))
		tag := token.New(12)
		got := steerTag(tag, want)
		if _, ok := challengeTag("chl_" + got); !ok {
			t.Fatalf("steered tag %q is not a tag", got)
		}
		if got[:tagLen-steerLen] != tag[:tagLen-steerLen] {
			t.Fatalf("steered %q from %q: the head changed", got, tag)
		}
		if s := slotOf(k.auth(got)); s != want {
			t.Fatalf("auth key of %q in slot %d, want %d", got, s, want)
		}
		if s := slotOf(k.auth(got)); s != slotOf(k.qr(got)) {
			t.Fatal("a login's keys must share their slot")
		}
	}
}
