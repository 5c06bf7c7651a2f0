// Package scripts runs this service's Lua scripts inside pipelines by their
// SHA-1 (EVALSHA), as Script.Run does outside them.
//
// Script.Run sends EVALSHA and falls back to EVAL with the script's text
// when Redis answers NOSCRIPT (after a restart, a failover, a SCRIPT FLUSH).
// A pipeline cannot fall back command by command, so scripts in pipelines
// were sent as full-text EVAL every time: a few kilobytes per call for Redis
// to read and hash. Exec sends EVALSHA; when Redis does not know a script,
// it loads the pipeline's scripts (SCRIPT LOAD, on every master of a
// Cluster) and runs the whole pipeline again. Running again is safe: every
// state change of this service answers a second run as it did the first
// (docs/redis.md, "Retries, lost replies and deadlines").
package scripts

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/redis/go-redis/v9"
)

// Exec builds a pipeline on c with build, which queues its scripts with
// Script.EvalSha, and runs it; on NOSCRIPT it loads used and runs a new
// pipeline built again. The commands' results are read from what the last
// build queued. A redis.Nil of a command is not an error of Exec.
func Exec(ctx context.Context, c redis.Cmdable, used []*redis.Script, build func(p redis.Pipeliner)) error {
	err := exec(ctx, c, build)
	if !isNoScript(err) {
		return err
	}
	for _, s := range used {
		if err := s.Load(ctx, c).Err(); err != nil {
			return fmt.Errorf("script load: %w", err)
		}
	}
	return exec(ctx, c, build)
}

func exec(ctx context.Context, c redis.Cmdable, build func(p redis.Pipeliner)) error {
	p := c.Pipeline()
	build(p)
	_, err := p.Exec(ctx)
	if errors.Is(err, redis.Nil) {
		return nil
	}
	return err
}

func isNoScript(err error) bool {
	return err != nil && strings.HasPrefix(err.Error(), "NOSCRIPT")
}
