package tasks

import (
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
)

// Queue shards. asynq keeps each queue's keys under one hash tag
// ("asynq:{default}:…"), so on a Redis Cluster a whole queue — its pending
// list, its task hashes with their results — lives on one master, and a
// backlog fills that master while the others stay empty. Sharding splits
// each priority's queue into several asynq queues whose hash slots lie in
// different parts of the slot space: a producer puts each task in one
// shard picked at random, and workers consume every shard with its
// priority's weight, so priorities keep their meaning (docs/design.md,
// "Queues on a Redis Cluster").
//
// Shard i of n is named "<priority>.<k>" with k the smallest number whose
// name hashes into the i-th of n equal slot ranges. redis-cli --cluster
// create gives each of n masters one such range, so with n shards for n
// masters every master holds one shard of each priority; after resharding
// the spread is only as even as the slot ranges. One shard (the default)
// keeps the plain priority name, the layout of an unsharded deployment.
//
// A task's id starts with its shard's name ("default.12_<uuid>"), so Get,
// Wait and Peek find it whatever the reader's shard setting.

// MaxShards bounds Shards settings: beyond the number of masters a larger
// count buys nothing and costs workers a poll per queue.
const MaxShards = 64

// clusterSlots is the number of Redis Cluster hash slots.
const clusterSlots = 16384

// ShardQueues returns the asynq queue names of priority split into n
// shards: the priority itself for n = 1.
func ShardQueues(priority string, n int) ([]string, error) {
	if !isPriority(priority) {
		return nil, fmt.Errorf("tasks: unknown queue %q (want critical, default or bulk)", priority)
	}
	if n < 1 || n > MaxShards {
		return nil, fmt.Errorf("tasks: queue shards %d: want 1 to %d", n, MaxShards)
	}
	if n == 1 {
		return []string{priority}, nil
	}
	names := make([]string, 0, n)
	for i := range n {
		lo, hi := i*clusterSlots/n, (i+1)*clusterSlots/n
		for k := 0; ; k++ {
			name := priority + "." + strconv.Itoa(k)
			if s := int(keySlot(name)); s >= lo && s < hi {
				names = append(names, name)
				break
			}
		}
	}
	return names, nil
}

// AllShardQueues returns the shards of every priority, highest priority
// first.
func AllShardQueues(n int) ([]string, error) {
	var all []string
	for _, p := range Queues {
		names, err := ShardQueues(p, n)
		if err != nil {
			return nil, err
		}
		all = append(all, names...)
	}
	return all, nil
}

// PriorityOf returns the priority (QueueCritical, QueueDefault or
// QueueBulk) of an asynq queue name, a priority or one of its shards, and
// false for a queue that is not mxprobe's.
func PriorityOf(queue string) (string, bool) {
	p, k, sharded := strings.Cut(queue, ".")
	if !isPriority(p) {
		return "", false
	}
	if !sharded {
		return p, true
	}
	if k == "" || len(k) > 6 || strings.Trim(k, "0123456789") != "" || (len(k) > 1 && k[0] == '0') {
		return "", false
	}
	return p, true
}

func isPriority(q string) bool {
	for _, name := range Queues {
		if q == name {
			return true
		}
	}
	return false
}

// WithShards makes Enqueue put each task in one of n shards of its queue,
// picked at random (see ShardQueues). Workers must consume them: give
// them the same setting (worker.Config.QueueShards). An n out of range
// makes NewClient's first Enqueue fail with the reason.
func WithShards(n int) ClientOption { return func(c *Client) { c.shards = n } }

// shardFor picks the asynq queue of one task of priority.
func (c *Client) shardFor(priority string) (string, error) {
	if c.shards == 0 || c.shards == 1 {
		return priority, nil
	}
	names, err := c.shardNames(priority)
	if err != nil {
		return "", err
	}
	return names[rand.IntN(len(names))], nil
}

// shardNames caches ShardQueues per priority: the names are computed by
// a search over hash slots.
func (c *Client) shardNames(priority string) ([]string, error) {
	c.shardMu.Lock()
	defer c.shardMu.Unlock()
	if names, ok := c.shardCache[priority]; ok {
		return names, nil
	}
	names, err := ShardQueues(priority, c.shards)
	if err != nil {
		return nil, err
	}
	if c.shardCache == nil {
		c.shardCache = map[string][]string{}
	}
	c.shardCache[priority] = names
	return names, nil
}

// keySlot is Redis Cluster's hash slot of key: CRC16 (XMODEM) of the key,
// or of its hash tag when it has one, modulo 16384 (Redis Cluster
// specification, "Keys distribution model"). Written here rather than
// imported: go-redis keeps its copy internal, and the test compares this
// one with a real cluster's CLUSTER KEYSLOT.
func keySlot(key string) uint16 {
	if s := strings.IndexByte(key, '{'); s >= 0 {
		if e := strings.IndexByte(key[s+1:], '}'); e > 0 {
			key = key[s+1 : s+1+e]
		}
	}
	var crc uint16
	for i := 0; i < len(key); i++ {
		crc ^= uint16(key[i]) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return crc % clusterSlots
}
