package token

import (
	"encoding/base64"
	"testing"
)

func TestNew(t *testing.T) {
	a, b := New(16), New(16)
	if len(a) != 22 || a == b || !IsBase64URL(a) {
		t.Fatalf("New(16) = %q, %q", a, b)
	}
	if raw, err := base64.RawURLEncoding.DecodeString(a); err != nil || len(raw) != 16 {
		t.Fatalf("decode: %v", err)
	}
}

func TestSHA256Hex(t *testing.T) {
	if got := SHA256Hex("abc"); got != "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad" {
		t.Fatalf("SHA256Hex(abc) = %s", got)
	}
}

func TestIsBase64URL(t *testing.T) {
	for s, want := range map[string]bool{"": true, "aZ09-_": true, "a.b": false, "a=": false, "a+b": false, "é": false} {
		if IsBase64URL(s) != want {
			t.Errorf("IsBase64URL(%q) != %v", s, want)
		}
	}
}
