package main

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/redis/go-redis/v9"
)

func redisURLOptions(raw string) (*redis.Options, error) {
	opt, err := redis.ParseURL(raw)
	if err != nil {
		return nil, fmt.Errorf("cannot parse: %v", err)
	}
	return opt, nil
}

// newRedis builds the one Redis client of the process: standalone from
// redis.url, Cluster from redis.addrs, Sentinel from redis.sentinel.
func newRedis(r redisConfig) (redis.UniversalClient, error) {
	opt := &redis.UniversalOptions{
		Password:              r.Password,
		DialTimeout:           2 * time.Second,
		ReadTimeout:           time.Second,
		WriteTimeout:          time.Second,
		PoolTimeout:           2 * time.Second,
		ContextTimeoutEnabled: true,
	}
	switch {
	case r.URL != "":
		u, err := redisURLOptions(r.URL)
		if err != nil {
			return nil, err
		}
		opt.Addrs = []string{u.Addr}
		opt.DB = u.DB
		opt.Username = u.Username
		if u.Password != "" {
			opt.Password = u.Password
		}
		opt.TLSConfig = u.TLSConfig
		opt.Protocol = u.Protocol
	case len(r.Addrs) > 0:
		opt.Addrs = r.Addrs
		opt.IsClusterMode = true
	default:
		opt.MasterName = r.Sentinel.Master
		opt.Addrs = r.Sentinel.Addrs
	}
	return redis.NewUniversalClient(opt), nil
}

// slogRedisLogger routes go-redis's own messages (dial failures) to slog.
type slogRedisLogger struct{ log *slog.Logger }

func (l slogRedisLogger) Printf(ctx context.Context, format string, v ...any) {
	l.log.WarnContext(ctx, "redis: "+fmt.Sprintf(format, v...))
}
