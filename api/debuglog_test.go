package api

import (
	"io"
	"os"
)

// debugLog is where the test replicas' logs go: nowhere, or stderr with
// ECPS_DEBUG_LOG=1 (to see why a test's requests got 503 or 500).
func debugLog() io.Writer {
	if os.Getenv("ECPS_DEBUG_LOG") != "" {
		return os.Stderr
	}
	return io.Discard
}
