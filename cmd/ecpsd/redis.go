package main

import (
	"context"
	"fmt"
	"log/slog"
	"runtime"
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
// blocked connections stay blocked in Redis (the push queue's readers) and
// are added to go-redis's default pool size (10 per CPU, per node on a
// Cluster), so that requests never wait for a connection they hold.
func newRedis(r redisConfig, blocked int) (redis.UniversalClient, error) {
	opt := &redis.UniversalOptions{
		PoolSize:              10*runtime.GOMAXPROCS(0) + blocked,
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

// pushReaders is the number of the push queue's blocking readers in this
// process: one per shard on a Cluster, one for all on one Redis (push.Queue).
func pushReaders(cfg Config) int {
	switch {
	case cfg.File.Push.Provider != "fcm":
		return 0
	case len(cfg.File.Redis.Addrs) > 0:
		return cfg.File.Push.FCM.QueueShards
	}
	return 1
}

// slogRedisLogger routes go-redis's own messages (dial failures) to slog.
type slogRedisLogger struct{ log *slog.Logger }

func (l slogRedisLogger) Printf(ctx context.Context, format string, v ...any) {
	l.log.WarnContext(ctx, "redis: "+fmt.Sprintf(format, v...))
}
