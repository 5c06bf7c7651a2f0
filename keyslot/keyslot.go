// Package keyslot computes Redis Cluster's hash slot of a key, as the
// Cluster specification defines it ("Keys distribution model"): CRC16
// (XMODEM) of the key's hash tag, the part between its first "{" and the
// next "}" when that part is not empty, else of the whole key, mod 16384.
//
// The service places keys on purpose: a push login on its practitioner's
// slot (package challenge), the push queue's shards in equal slot ranges
// (package push). Redis itself (CLUSTER KEYSLOT) is the reference: the
// tests check this package against it.
package keyslot

import "strings"

// Count is the number of a Cluster's hash slots.
const Count = 16384

// Of is the slot of key.
func Of(key string) uint16 {
	return CRC16(Tag(key)) % Count
}

// Tag is the part of key that Redis Cluster hashes: its hash tag, or the
// whole key when it has none.
func Tag(key string) string {
	if i := strings.IndexByte(key, '{'); i >= 0 {
		if j := strings.IndexByte(key[i+1:], '}'); j > 0 {
			return key[i+1 : i+1+j]
		}
	}
	return key
}

// CRC16 is CRC-16/XMODEM (polynomial 0x1021, initial value 0). With a zero
// initial value it is linear: CRC16(a xor b) = CRC16(a) xor CRC16(b) for
// strings of one length, and leading zero bytes do not change it.
func CRC16(s string) uint16 {
	var crc uint16
	for i := 0; i < len(s); i++ {
		crc ^= uint16(s[i]) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return crc
}
