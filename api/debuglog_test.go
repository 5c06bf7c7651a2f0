package api

import (
	"io"
	"log/slog"
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

// apiLogger is a replica's API logger: to w at info level when the test
// reads its lines, else debugLog's.
func apiLogger(w io.Writer) *slog.Logger {
	if w != nil {
		return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	return slog.New(slog.NewJSONHandler(debugLog(), nil))
}
