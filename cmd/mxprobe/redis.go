package main

import (
	"context"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/mxprobe/mxprobe/internal/redact"
	"github.com/mxprobe/mxprobe/internal/redisconn"
)

// openRedis connects to the Redis named by rawURL:
//
//	redis://[:password@]host:port[/db]          one server
//	rediss://…                                   the same over TLS
//	redis-sentinel://[:password@]h1:p1,h2:p2/master[?db=N]
//	redis-cluster://[:password@]h1:p1,h2:p2      Redis Cluster
//
// and pings it, so a wrong URL fails at start-up with a clear message.
func openRedis(ctx context.Context, rawURL string) (redis.UniversalClient, error) {
	rdb, err := redisClient(rawURL)
	if err != nil {
		return nil, err
	}
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := rdb.Ping(pctx).Err(); err != nil {
		rdb.Close()
		return nil, fmt.Errorf("redis at %s does not answer: %w", redact.URL(rawURL), err)
	}
	return rdb, nil
}

func redisClient(rawURL string) (redis.UniversalClient, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, usagef("redis URL: %v", redact.URLError(err))
	}
	password, _ := u.User.Password()
	username := u.User.Username()
	hosts := strings.Split(u.Host, ",")
	switch u.Scheme {
	case "redis", "rediss", "unix":
		opt, err := redis.ParseURL(rawURL)
		if err != nil {
			return nil, usagef("redis URL %s: %v", redact.URL(rawURL), redact.URLError(err))
		}
		return redis.NewClient(opt), nil
	case "redis-sentinel":
		master := strings.Trim(u.Path, "/")
		if master == "" || u.Host == "" {
			return nil, usagef("redis-sentinel URL needs sentinel hosts and a master name: redis-sentinel://h1:26379,h2:26379/mymaster")
		}
		db := 0
		if s := u.Query().Get("db"); s != "" {
			if db, err = strconv.Atoi(s); err != nil || db < 0 {
				return nil, usagef("redis-sentinel URL: bad db %q", s)
			}
		}
		return redis.NewFailoverClient(&redis.FailoverOptions{MasterName: master, SentinelAddrs: hosts,
			Username: username, Password: password, DB: db}), nil
	case "redis-cluster":
		if u.Host == "" {
			return nil, usagef("redis-cluster URL needs node addresses: redis-cluster://h1:6379,h2:6379")
		}
		return redisconn.NewClusterClient(&redis.ClusterOptions{Addrs: hosts, Username: username, Password: password}), nil
	}
	return nil, usagef("redis URL scheme %q: want redis, rediss, redis-sentinel or redis-cluster", u.Scheme)
}
