package challenge

import (
	"sync"

	"github.com/ecps-sante/ecps/keyslot"
)

// This file places a push login on its practitioner's Redis Cluster slot.
//
// A login's keys carry the tag of its ids ({a:<tag>}), and a practitioner's
// carry {sub:<idNat>}. A Lua script may touch keys of one slot only, so the
// decision, which changes both, would take one script per slot. A Cluster
// slot is CRC16(hash tag) mod 16384 (the Cluster specification, "Keys
// distribution model"), so a push login's tag is chosen, among the random
// ones, to fall in its practitioner's slot: its last three characters are
// picked for that. Every step of its decision is then one script. On one
// Redis (standalone, Sentinel) every key is in "the same slot".

// The tag's last characters that steer it to a slot.
const steerLen = 3

var (
	steerOnce sync.Once
	steerBy   [keyslot.Count]string // slot bits of CRC16(suffix) -> suffix
)

const base64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

// steerTable lists, for every value of the slot's 14 bits, one suffix of
// steerLen base64url characters whose CRC16 has them (64³ suffixes cover
// the 16,384 values: TestSteerTableComplete).
func steerTable() *[keyslot.Count]string {
	steerOnce.Do(func() {
		var b [steerLen]byte
		for i := range len(base64URL) * len(base64URL) * len(base64URL) {
			b[0], b[1], b[2] = base64URL[i/4096], base64URL[i/64%64], base64URL[i%64]
			s := string(b[:])
			if v := keyslot.CRC16(s) % keyslot.Count; steerBy[v] == "" {
				steerBy[v] = s
			}
		}
	})
	return &steerBy
}

// steerTag returns tag with its last steerLen characters replaced so that
// the key prefix+"{a:"+result+"}" falls in slot. CRC16 with a zero initial
// value is linear: crc(P‖S) = crc(P‖0…0) xor crc(S) for a suffix S of fixed
// length, so the suffix is looked up, not searched.
func steerTag(tag string, slot uint16) string {
	head := tag[:len(tag)-steerLen]
	base := keyslot.CRC16("a:"+head+"\x00\x00\x00") % keyslot.Count
	return head + steerTable()[base^slot]
}
