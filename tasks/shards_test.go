package tasks_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/mxprobe/mxprobe/internal/testenv/redistest"
	"github.com/mxprobe/mxprobe/tasks"
)

func TestShardQueuesSpreadOverSlots(t *testing.T) {
	t.Parallel()
	srv := redistest.StartCluster(t)
	c := srv.Client(t)
	ctx := context.Background()
	for _, p := range tasks.Queues {
		one, err := tasks.ShardQueues(p, 1)
		if err != nil || !slices.Equal(one, []string{p}) {
			t.Errorf("ShardQueues(%s, 1) = %v, %v; want the plain name", p, one, err)
		}
		for n := 2; n <= 8; n++ {
			names, err := tasks.ShardQueues(p, n)
			if err != nil || len(names) != n {
				t.Fatalf("ShardQueues(%s, %d) = %v, %v", p, n, names, err)
			}
			for i, name := range names {
				if got, ok := tasks.PriorityOf(name); !ok || got != p {
					t.Errorf("PriorityOf(%q) = %q, %v; want %s", name, got, ok, p)
				}
				// The slot asynq's keys of this queue land in, asked of a
				// real cluster.
				slot, err := c.ClusterKeySlot(ctx, "asynq:{"+name+"}:pending").Result()
				if err != nil {
					t.Fatal(err)
				}
				if lo, hi := int64(i*16384/n), int64((i+1)*16384/n); slot < lo || slot >= hi {
					t.Errorf("shard %d of %d (%s) is in slot %d; want [%d, %d)", i, n, name, slot, lo, hi)
				}
			}
		}
	}
	all, err := tasks.AllShardQueues(3)
	if err != nil || len(all) != 9 || !strings.HasPrefix(all[0], tasks.QueueCritical+".") || !strings.HasPrefix(all[8], tasks.QueueBulk+".") {
		t.Errorf("AllShardQueues(3) = %v, %v; want 9 names, critical first", all, err)
	}
}

func TestShardSettingsRefused(t *testing.T) {
	t.Parallel()
	for _, n := range []int{0, -1, tasks.MaxShards + 1} {
		if _, err := tasks.ShardQueues(tasks.QueueDefault, n); err == nil || !strings.Contains(err.Error(), "shards") {
			t.Errorf("ShardQueues(default, %d) = %v; want an error naming shards", n, err)
		}
	}
	if _, err := tasks.ShardQueues("urgent", 2); err == nil || !strings.Contains(err.Error(), `"urgent"`) {
		t.Errorf("ShardQueues(urgent) = %v; want an error naming the queue", err)
	}
	for _, q := range []string{"", "default.", "default.x", "default.01", "default.1234567", "defaults", "urgent.1", ".1", "default.1.2", "default.-1"} {
		if p, ok := tasks.PriorityOf(q); ok {
			t.Errorf("PriorityOf(%q) = %q; want not ours", q, p)
		}
	}
	// A client with a bad setting refuses to enqueue and says why.
	c := tasks.NewClient(redistest.Client(t), tasks.WithShards(tasks.MaxShards+1))
	defer c.Close()
	if _, err := c.Enqueue(context.Background(), tasks.Request{Address: "a@example.com"}); err == nil || !strings.Contains(err.Error(), "shards") {
		t.Errorf("Enqueue with %d shards = %v; want the setting refused", tasks.MaxShards+1, err)
	}
	// An id naming a queue that is not ours is no task.
	c1 := tasks.NewClient(redistest.Client(t))
	defer c1.Close()
	for _, id := range []string{"default.x_abc", "urgent.1_abc", "default._abc"} {
		if _, err := c1.Get(context.Background(), id); err != tasks.ErrNotFound {
			t.Errorf("Get(%q) = %v; want ErrNotFound", id, err)
		}
	}
}

// On a 3-master cluster one unsharded queue puts every task on one master;
// three shards put about a third on each, and Get and Peek find them all.
func TestShardedQueueSpreadsOverMasters(t *testing.T) {
	t.Parallel()
	c := redistest.StartClusterN(t, 3, 5*time.Second)
	rdb := redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs()})
	t.Cleanup(func() { _ = rdb.Close() })
	ctx := context.Background()
	const n = 300
	for _, shards := range []int{1, 3} {
		t.Run(fmt.Sprintf("shards=%d", shards), func(t *testing.T) {
			perMaster := func() []int64 {
				var out []int64
				for _, m := range c.Masters {
					mc := m.Client(t)
					keys, err := mc.Keys(ctx, "asynq:{*}:t:*").Result()
					if err != nil {
						t.Fatal(err)
					}
					out = append(out, int64(len(keys)))
				}
				return out
			}
			before := perMaster()
			client := tasks.NewClient(rdb, tasks.WithShards(shards))
			defer client.Close()
			var ids []string
			for i := range n {
				id, err := client.Enqueue(ctx, tasks.Request{Address: fmt.Sprintf("u%d@shards%d.example", i, shards)})
				if err != nil {
					t.Fatal(err)
				}
				ids = append(ids, id)
			}
			after := perMaster()
			var added []int64
			for i := range after {
				added = append(added, after[i]-before[i])
			}
			t.Logf("tasks per master: %v", added)
			switch shards {
			case 1:
				if slices.Max(added) != n {
					t.Errorf("unsharded: tasks per master %v; want all %d on one", added, n)
				}
			default:
				for i, k := range added {
					if k < n/6 {
						t.Errorf("master %d holds %d of %d tasks (%v); want about a third each", i, k, n, added)
					}
				}
			}
			// A reader with another setting finds every task: the id names
			// its shard.
			reader := tasks.NewClient(rdb)
			defer reader.Close()
			found, missing, err := reader.Peek(ctx, ids)
			if err != nil || len(found) != n || len(missing) != 0 {
				t.Fatalf("Peek: %d found, %d missing, %v", len(found), len(missing), err)
			}
			st, err := reader.Get(ctx, ids[n-1])
			if err != nil || st.State != "pending" {
				t.Fatalf("Get(%s) = %+v, %v; want pending", ids[n-1], st, err)
			}
			if p, ok := tasks.PriorityOf(st.Queue); !ok || p != tasks.QueueDefault {
				t.Errorf("Get's queue %q: want a shard of default", st.Queue)
			}
		})
	}
}
