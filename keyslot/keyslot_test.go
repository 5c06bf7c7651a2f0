package keyslot

import "testing"

// The check value of CRC-16/XMODEM and the slots Redis's documentation
// gives for CLUSTER KEYSLOT (tests on a real Cluster compare more keys:
// push.TestQueueShardsOnCluster).
func TestOf(t *testing.T) {
	if got := CRC16("123456789"); got != 0x31C3 {
		t.Fatalf("CRC16(123456789) = %#x, want 0x31c3", got)
	}
	for key, want := range map[string]uint16{
		"somekey": 11058, "foo{hash_tag}": 2515, "bar{hash_tag}": 2515, "hash_tag": 2515,
		"123456789": 12739, "{user1000}.following": 3443, "foo": 12182,
	} {
		if got := Of(key); got != want {
			t.Errorf("Of(%q) = %d, want %d", key, got, want)
		}
	}
	for key, tag := range map[string]string{"a{b}c": "b", "x{}y": "x{}y", "{}": "{}", "{a}{b}": "a", "no": "no", "a{b": "a{b"} {
		if got := Tag(key); got != tag {
			t.Errorf("Tag(%q) = %q, want %q", key, got, tag)
		}
	}
}

// CRC16's linearity, which challenge.steerTag relies on.
func TestCRC16Linear(t *testing.T) {
	a, b := "a:ABCDEFGHIJKLM\x00\x00\x00", "\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00xyz"
	x := make([]byte, len(a))
	for i := range x {
		x[i] = a[i] ^ b[i]
	}
	if CRC16(string(x)) != CRC16(a)^CRC16(b) || CRC16(b) != CRC16("xyz") {
		t.Fatal("CRC16 is not linear")
	}
}
