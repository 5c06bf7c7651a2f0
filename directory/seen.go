package directory

import "hash/maphash"

// seenFilter tells whether an idNat may already have been written by this
// import, in constant memory: an idNat greater than every one before it is
// new for sure (a file in idNat order never needs more); otherwise a Bloom
// filter answers "maybe" (then the importer reads the stored entry back and
// merges) or "no". 8 MiB and 5 hashes: at 1.4 M practitioners a false
// "maybe" (one needless read) happens about once in 100,000 checks.
type seenFilter struct {
	max  string
	bits []uint64
	seed maphash.Seed
}

const seenBits = 8 << 20 * 8 // 8 MiB

func newSeenFilter() *seenFilter {
	return &seenFilter{bits: make([]uint64, seenBits/64), seed: maphash.MakeSeed()}
}

// add records id and reports whether it may have been added before.
func (f *seenFilter) add(id string) (maybe bool) {
	h := maphash.String(f.seed, id)
	h1, h2 := uint32(h), uint32(h>>32)|1
	maybe = true
	for i := uint32(0); i < 5; i++ {
		bit := (h1 + i*h2) % seenBits
		w, m := bit/64, uint64(1)<<(bit%64)
		if f.bits[w]&m == 0 {
			maybe = false
			f.bits[w] |= m
		}
	}
	if id > f.max {
		f.max = id
		return false
	}
	return maybe
}
