package challenge

import (
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/ecps-sante/ecps/token"
)

const (
	okTag    = "AbCdEfGh_-123456"       // 16
	okSecret = "0123456789abcdefABC-_z" // 22
)

func TestIDFixtures(t *testing.T) {
	if len(okTag) != tagLen || len(okSecret) != secretLen {
		t.Fatal("fixture lengths")
	}
	// Real identifiers are token.New's output.
	if len(token.New(12)) != tagLen || len(token.New(16)) != secretLen {
		t.Fatal("token.New lengths no longer match tagLen/secretLen")
	}
}

func TestSplitID(t *testing.T) {
	real := token.New(12) + "." + token.New(16)
	for _, tc := range []struct {
		name, in    string
		tag, secret string
		ok          bool
	}{
		{"ok", okTag + "." + okSecret, okTag, okSecret, true},
		{"real", real, real[:16], real[17:], true},
		{"empty", "", "", "", false},
		{"dot only", ".", "", "", false},
		{"no dot", okTag + okSecret, "", "", false},
		{"two dots", okTag + "." + okSecret + ".", "", "", false},
		{"dot inside secret", okTag + "." + okSecret[:10] + "." + okSecret[11:], "", "", false},
		{"dot first", "." + okTag + okSecret, "", "", false},
		{"dot last", okTag + okSecret + ".", "", "", false},
		{"dot one early", okTag[:15] + "." + okTag[15:] + okSecret, "", "", false},
		{"dot one late", okTag + okSecret[:1] + "." + okSecret[1:], "", "", false},
		{"short tag", okTag[:15] + "." + okSecret, "", "", false},
		{"long tag", okTag + "A." + okSecret, "", "", false},
		{"short secret", okTag + "." + okSecret[:21], "", "", false},
		{"long secret", okTag + "." + okSecret + "A", "", "", false},
		{"empty tag", "." + okSecret, "", "", false},
		{"empty secret", okTag + ".", "", "", false},
		{"plus in tag", "+" + okTag[1:] + "." + okSecret, "", "", false},
		{"slash in secret", okTag + "." + okSecret[:21] + "/", "", "", false},
		{"padding", okTag + "." + okSecret[:20] + "==", "", "", false},
		{"space", okTag + "." + okSecret[:21] + " ", "", "", false},
		{"percent", okTag + "." + "%41" + okSecret[3:], "", "", false},
		{"NUL", okTag + "." + okSecret[:21] + "\x00", "", "", false},
		{"newline", okTag + "\n" + okSecret[:21], "", "", false},
		{"unicode tag", "é" + okTag[2:] + "." + okSecret, "", "", false}, // 16 bytes
		{"unicode secret", okTag + "." + "€" + okSecret[3:], "", "", false},
		{"full-width dot", okTag + "．" + okSecret, "", "", false},
		{"invalid UTF-8", okTag + "." + "\xff" + okSecret[1:], "", "", false},
		{"chl_ is base64url", "chl_" + okTag[4:] + "." + okSecret, "chl_" + okTag[4:], okSecret, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tag, secret, ok := splitID(tc.in)
			if tag != tc.tag || secret != tc.secret || ok != tc.ok {
				t.Fatalf("splitID(%q) = %q, %q, %v; want %q, %q, %v", tc.in, tag, secret, ok, tc.tag, tc.secret, tc.ok)
			}
		})
	}
}

func TestSplitQRToken(t *testing.T) {
	real := token.New(12) + token.New(16)
	for _, tc := range []struct {
		name, in    string
		tag, secret string
		ok          bool
	}{
		{"ok", okTag + okSecret, okTag, okSecret, true},
		{"real", real, real[:16], real[16:], true},
		{"all dashes", strings.Repeat("-", 38), strings.Repeat("-", 16), strings.Repeat("-", 22), true},
		{"empty", "", "", "", false},
		{"short", (okTag + okSecret)[:37], "", "", false},
		{"long", okTag + okSecret + "A", "", "", false},
		{"with dot", okTag + "." + okSecret[1:], "", "", false},
		{"split ID form", okTag + "." + okSecret, "", "", false},
		{"dot first", "." + okTag + okSecret[1:], "", "", false},
		{"dot last", okTag + okSecret[1:] + ".", "", "", false},
		{"plus", okTag + okSecret[:21] + "+", "", "", false},
		{"slash", "/" + okTag[1:] + okSecret, "", "", false},
		{"padding", okTag + okSecret[:20] + "==", "", "", false},
		{"space", " " + okTag[1:] + okSecret, "", "", false},
		{"NUL", okTag + okSecret[:21] + "\x00", "", "", false},
		{"unicode", "é" + okTag[2:] + okSecret, "", "", false}, // 38 bytes
		{"emoji", "😀" + okTag[4:] + okSecret, "", "", false},   // 38 bytes
		{"invalid UTF-8", "\xff" + okTag[1:] + okSecret, "", "", false},
		{"query string", "t=" + okTag[2:] + okSecret, "", "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tag, secret, ok := splitQRToken(tc.in)
			if tag != tc.tag || secret != tc.secret || ok != tc.ok {
				t.Fatalf("splitQRToken(%q) = %q, %q, %v; want %q, %q, %v", tc.in, tag, secret, ok, tc.tag, tc.secret, tc.ok)
			}
		})
	}
}

func TestChallengeTag(t *testing.T) {
	for _, tc := range []struct {
		name, in, tag string
		ok            bool
	}{
		{"ok", "chl_" + okTag, okTag, true},
		{"empty", "", "", false},
		{"prefix only", "chl_", "", false},
		{"no prefix", okTag, "", false},
		{"bare tag of 20", "chl" + okTag + "A", "", false},
		{"upper-case prefix", "CHL_" + okTag, "", false},
		{"other prefix", "chx_" + okTag, "", false},
		{"leading space", " chl_" + okTag, "", false},
		{"double prefix", "chl_chl_" + okTag, "", false},
		{"double prefix of 16", "chl_chl_" + okTag[4:], "chl_" + okTag[4:], true}, // '_' is base64url
		{"short", "chl_" + okTag[:15], "", false},
		{"long", "chl_" + okTag + "A", "", false},
		{"with secret", "chl_" + okTag + "." + okSecret, "", false},
		{"dot", "chl_" + okTag[:15] + ".", "", false},
		{"plus", "chl_+" + okTag[1:], "", false},
		{"slash", "chl_" + okTag[:15] + "/", "", false},
		{"padding", "chl_" + okTag[:14] + "==", "", false},
		{"NUL", "chl_" + okTag[:15] + "\x00", "", false},
		{"unicode", "chl_é" + okTag[2:], "", false},
		{"invalid UTF-8", "chl_\xff" + okTag[1:], "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tag, ok := challengeTag(tc.in)
			if tag != tc.tag || ok != tc.ok {
				t.Fatalf("challengeTag(%q) = %q, %v; want %q, %v", tc.in, tag, ok, tc.tag, tc.ok)
			}
		})
	}
}

func isB64URL(s string) bool {
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return false
		}
	}
	return true
}

func FuzzSplitID(f *testing.F) {
	for _, s := range []string{"", ".", okTag + "." + okSecret, okTag + okSecret, okTag + "." + okSecret + ".",
		okTag + ".." + okSecret[1:], "é" + okTag[2:] + "." + okSecret, okTag + "." + okSecret[:21] + "=",
		token.New(12) + "." + token.New(16)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		tag, secret, ok := splitID(in)
		if !ok {
			if tag != "" || secret != "" {
				t.Fatalf("refused %q but returned %q, %q", in, tag, secret)
			}
			return
		}
		if len(tag) != tagLen || len(secret) != secretLen || !isB64URL(tag) || !isB64URL(secret) {
			t.Fatalf("accepted %q as %q, %q", in, tag, secret)
		}
		if tag+"."+secret != in {
			t.Fatalf("%q + . + %q != %q", tag, secret, in)
		}
		// The same parts are a valid QR token and challenge ID.
		if qt, qs, ok := splitQRToken(tag + secret); !ok || qt != tag || qs != secret {
			t.Fatalf("splitQRToken(%q) = %q, %q, %v", tag+secret, qt, qs, ok)
		}
		if ct, ok := challengeTag("chl_" + tag); !ok || ct != tag {
			t.Fatalf("challengeTag(chl_%s) = %q, %v", tag, ct, ok)
		}
	})
}

func FuzzSplitQRToken(f *testing.F) {
	for _, s := range []string{"", okTag + okSecret, okTag + "." + okSecret, (okTag + okSecret)[:37],
		okTag + okSecret + "A", "😀" + okTag[4:] + okSecret, strings.Repeat("-", 38),
		token.New(12) + token.New(16)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		tag, secret, ok := splitQRToken(in)
		if !ok {
			if tag != "" || secret != "" {
				t.Fatalf("refused %q but returned %q, %q", in, tag, secret)
			}
			return
		}
		if len(tag) != tagLen || len(secret) != secretLen || !isB64URL(tag) || !isB64URL(secret) {
			t.Fatalf("accepted %q as %q, %q", in, tag, secret)
		}
		if tag+secret != in {
			t.Fatalf("%q + %q != %q", tag, secret, in)
		}
		if it, is, ok := splitID(tag + "." + secret); !ok || it != tag || is != secret {
			t.Fatalf("splitID(%q) = %q, %q, %v", tag+"."+secret, it, is, ok)
		}
	})
}

func TestRandomDigits(t *testing.T) {
	for n := 2; n <= 6; n++ {
		leadingZero := false
		seen := map[string]bool{}
		runs := 5000
		for i := 0; i < runs; i++ {
			s := randomDigits(n)
			if len(s) != n || !allDigits(s) {
				t.Fatalf("randomDigits(%d) = %q", n, s)
			}
			leadingZero = leadingZero || s[0] == '0'
			seen[s] = true
		}
		// P(no leading zero in 5000 draws) = 0.9^5000: never.
		if !leadingZero {
			t.Errorf("randomDigits(%d): no leading zero in %d runs", n, runs)
		}
		// Not a constant: for n=2 all 100 values show up (P(miss) ~ 100*0.99^5000).
		if n == 2 && len(seen) != 100 {
			t.Errorf("randomDigits(2): %d distinct values in %d runs", len(seen), runs)
		}
		space := 1
		for i := 0; i < n; i++ {
			space *= 10
		}
		if n > 2 && len(seen) < min(runs/2, space*9/10) {
			t.Errorf("randomDigits(%d): only %d distinct values in %d runs", n, len(seen), runs)
		}
	}
}

func TestAllDigits(t *testing.T) {
	for in, want := range map[string]bool{
		"00": true, "7": true, "123456": true, "000000": true,
		"": false, "1234567": false, "12a": false, " 12": false, "-1": false, "+1": false,
		"１２": false, "1.0": false, "٣": false,
	} {
		if got := allDigits(in); got != want {
			t.Errorf("allDigits(%q) = %v, want %v", in, got, want)
		}
	}
}

func TestValidBindingMessage(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		ok       bool
	}{
		{"empty", "", true},
		{"ascii", "Connexion à Doctolib", true},
		{"64 ascii", strings.Repeat("a", 64), true},
		{"65 ascii", strings.Repeat("a", 65), false},
		{"64 accented", strings.Repeat("é", 64), true}, // 128 bytes
		{"65 accented", strings.Repeat("é", 65), false},
		{"64 emoji", strings.Repeat("😀", 64), true}, // 256 bytes
		{"65 emoji", strings.Repeat("😀", 65), false},
		{"mixed 64", strings.Repeat("aé€😀", 16), true},
		{"mixed 65", strings.Repeat("aé€😀", 16) + "x", false},
		{"space and punctuation", "Code : 12-34 (ok) ?", true},
		{"non-breaking space", "a\u00a0b", true},
		{"newline", "a\nb", false},
		{"tab", "a\tb", false},
		{"carriage return", "a\rb", false},
		{"NUL", "a\x00b", false},
		{"escape", "\x1b[31mred", false},
		{"DEL", "a\x7fb", false},
		{"C1 control", "a\u0085b", false},
		{"C1 control CSI", "a\u009bb", false},
		{"invalid UTF-8", "a\xffb", false},
		{"truncated UTF-8", "caf\xc3", false},
		{"surrogate encoded", "a\xed\xa0\x80b", false},
		{"overlong", "a\xc0\xafb", false},
		{"64 runes then invalid", strings.Repeat("a", 63) + "\xff", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := validBindingMessage(tc.in); got != tc.ok {
				t.Fatalf("validBindingMessage(%q) [%d runes] = %v, want %v", tc.in, utf8.RuneCountInString(tc.in), got, tc.ok)
			}
		})
	}
}
