package api

import (
	"bytes"
	"encoding/json"
	"net/http"

	"github.com/hibiken/asynq"
	"github.com/hibiken/asynqmon"
	"github.com/redis/go-redis/v9"
)

// sharedConn hands asynqmon our own client, so it opens no second pool and
// reaches Sentinel and Cluster deployments exactly as we do. asynqmon's
// Close would close it: the Server never calls it.
type sharedConn struct{ rdb redis.UniversalClient }

func (c sharedConn) MakeRedisClient() any { return c.rdb }

var _ asynq.RedisConnOpt = sharedConn{}

// prettyJSON indents our payloads and results for asynqmon's task pages.
func prettyJSON(_ string, b []byte) string {
	var out bytes.Buffer
	if json.Indent(&out, b, "", "  ") != nil {
		return asynqmon.DefaultPayloadFormatter.FormatPayload("", b)
	}
	return out.String()
}

// monitoring mounts asynqmon at /monitoring. asynqmon has no authentication
// of its own (docs/design.md): the route sits behind requireKey. ReadOnly only
// refuses its non-GET API calls, which is all that changes queues.
func (s *Server) monitoring() http.Handler {
	return asynqmon.New(asynqmon.Options{
		RootPath:         "/monitoring",
		RedisConnOpt:     sharedConn{s.rdb},
		ReadOnly:         !s.cfg.MonitoringWrite,
		PayloadFormatter: asynqmon.PayloadFormatterFunc(prettyJSON),
		ResultFormatter:  asynqmon.ResultFormatterFunc(prettyJSON),
	})
}
