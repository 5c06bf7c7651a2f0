// Package directory keeps the practitioner directory, taken from the public
// RPPS extract of the Annuaire Santé, in Redis, and looks practitioners up in
// it: the contract's `identity` (PROTOCOL.md, Directory).
//
// # Reading the extract
//
// A Parser streams one file of the extract (the activity file, or the
// savoir-faire file): '|'-separated, a header line, a '|' ending every line,
// LF or CRLF. Columns are found by their header name, whatever their order;
// a header lacking a needed column is a *HeaderError, before anything is
// written. The encoding is decided from the header, which always holds
// accented column names: valid UTF-8 makes a UTF-8 file, anything else a
// Windows-1252 one; in a UTF-8 file, a line that is not valid UTF-8 is read
// as Windows-1252 (counted). A line that cannot be used is counted by reason
// (Reject* constants) with its line number, never fatal.
//
// The parser merges each run of contiguous lines of one `Identification
// nationale PP` into one Identity: the first non-empty name, civility,
// profession and category; the distinct specialties and places of activity
// in file order. An empty department is derived from the postal code
// (Department).
//
// # Constant memory
//
// The published extract lists a practitioner's lines together, but nothing
// relies on it: the importer holds one batch of practitioners (1000) and a
// fixed 8 MiB "seen" filter. An idNat greater than all before it is new for
// sure (the sorted case: no cost); otherwise the Bloom filter says whether
// it may have been written already, and then its stored entry is read back
// and merged (Summary.Repeats counts it). The savoir-faire file is merged the
// same way, by batches of read-merge-write. Memory does not grow with the
// file; the number of places of activity and specialties of one entry is
// capped (MaxActivities, MaxSpecialties) so that no file can make an entry
// unbounded.
//
// # Storage: versions, one pointer, no mix
//
// An import writes a new version beside the current one, then switches one
// pointer, then removes the old version:
//
//	{dir}:current           hash {version, buckets}: what readers use; absent = none loaded
//	{dir:<b>}:<version>     hash idNat -> compact entry, b = FNV-1a(idNat) mod buckets
//	{dir}:labels:<version>  the version's label table
//	{dir}:meta:<version>    hash: state, buckets, the import's Summary
//	{dir}:versions          set of the versions present (current, importing, leftovers)
//	{dir}:lock              the running import or clear (SET NX PX, renewed)
//
// Each bucket is on a hash tag of its own, so a Cluster spreads a version
// over its nodes; writes and removals are one key per command, sent in
// pipelines (no multi-key command across slots); the switch is one script on
// the {dir} tag (lock still ours → HSET current). 16384 buckets hold about
// 80 practitioners each for the 1.3 million of the real extract.
//
// An entry is one compact binary value (encode.go): names and site fields as
// length-prefixed strings, every (code, label) pair as a one- or two-byte
// index into the version's label table (a few hundred pairs: professions,
// specialties, modes, sectors, civilities), a department that the postal code
// gives stored as absent: 128 bytes per practitioner on average on the
// synthetic extract, about 210 bytes of Redis memory with the hash-table
// overhead (docs/directory.md has the measures).
//
// A killed import leaves the current version serving (the pointer is the
// last write) and its own keys listed in {dir}:versions; the next import,
// under the lock, removes every version but the current one before writing.
// An import refuses to switch to an empty version (ErrEmpty) or, with
// ImportOptions.MinRatio, to one much smaller than the current (*ShrinkError).
//
// # Reading: one round trip, or none of its own
//
// A reader keeps the pointer it read for PointerTTL (1 s) and a version's
// label table for as long as the version lives (it never changes). A Lookup
// is then one HGET (plus, once per version and process, the labels, in the
// same round trip). The old version is removed Grace (10 s) after the
// switch, longer than any reader keeps the old pointer: a lookup finds
// either the old version whole or the new one whole, never a mix, never
// nothing. ErrNotLoaded (no directory) and ErrNotFound (loaded, idNat
// absent) are meaning-only errors for the caller to map.
//
// Prefetch queues the HGET on a caller's pipeline instead, so that the
// lookup rides a round trip the caller makes anyway: e.g. the pipeline that
// runs a login's after-decision script, whose result can then be stored with
// the authentication so that the IdP's poll reads the identity with no
// extra round trip at all. A Lua script of the caller cannot read the entry
// itself: the entry's key is on another hash tag (another slot in a Cluster).
package directory
