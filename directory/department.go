package directory

// Department derives a French department code from a postal code, for the
// lines whose `Code Département (structure)` is empty: the first two digits;
// 2A (Corse-du-Sud) for 200xx and 201xx, 2B (Haute-Corse) for 202xx and
// 206xx; the first three digits overseas (97x, 98x), except 97133
// (Saint-Barthélemy, 977) and 97150 (Saint-Martin, 978), which share
// Guadeloupe's 971. It returns "" for anything else: not five ASCII digits,
// 00xxx, the other 20xxx, and 980xx (Monaco, which has French postal codes
// but is no department).
//
// Stored entries rely on this rule (encode.go): changing it needs a new
// entry format.
func Department(postal string) string {
	if len(postal) != 5 {
		return ""
	}
	for i := 0; i < 5; i++ {
		if postal[i] < '0' || postal[i] > '9' {
			return ""
		}
	}
	switch p := postal[:3]; {
	case postal == "97133":
		return "977"
	case postal == "97150":
		return "978"
	case postal[:2] == "00":
		return ""
	case p == "200" || p == "201":
		return "2A"
	case p == "202" || p == "206":
		return "2B"
	case postal[:2] == "20":
		return ""
	case p == "980":
		return ""
	case postal[:2] == "97" || postal[:2] == "98":
		return p
	}
	return postal[:2]
}
