package worker

import (
	"testing"
	"time"

	"github.com/mxprobe/mxprobe/tasks"
)

// outlives decides which holds end a task at once: any wait past the
// producer's deadline; a wait longer than giveUpGrace past the give-up
// horizon or once the retries are spent; never a wait that ends in time.
func TestOutlives(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	w := &Worker{now: func() time.Time { return now }}
	w.retry = RetryPolicy{FirstDelay: time.Minute, Multiplier: 2, MaxDelay: time.Hour, GiveUpAfter: 2 * time.Hour, Jitter: 0.1}.withDefaults()
	spent := w.retry.MaxRetries()
	fresh := tasks.ValidatePayload{EnqueuedAt: now}
	old := tasks.ValidatePayload{EnqueuedAt: now.Add(-110 * time.Minute)} // 10 min before the horizon
	tests := []struct {
		name    string
		p       tasks.ValidatePayload
		retried int
		wait    time.Duration
		want    bool
	}{
		{"ends before the deadline", tasks.ValidatePayload{EnqueuedAt: now, RespondBy: now.Add(time.Minute)}, 0, 59 * time.Second, false},
		{"ends at the deadline", tasks.ValidatePayload{EnqueuedAt: now, RespondBy: now.Add(time.Minute)}, 0, time.Minute, false},
		{"ends after the deadline", tasks.ValidatePayload{EnqueuedAt: now, RespondBy: now.Add(time.Minute)}, 0, time.Minute + time.Millisecond, true},
		{"seconds past the deadline: no grace", tasks.ValidatePayload{EnqueuedAt: now, RespondBy: now.Add(time.Second)}, 0, 2 * time.Second, true},
		{"deadline already gone", tasks.ValidatePayload{EnqueuedAt: now, RespondBy: now.Add(-time.Second)}, 0, 10 * time.Millisecond, true},
		{"no deadline, inside the horizon", fresh, 0, time.Hour, false},
		{"no deadline, past the horizon", fresh, 0, 3 * time.Hour, true},
		{"ends inside the horizon", old, 0, 9 * time.Minute, false},
		{"ends past the horizon", old, 0, 15 * time.Minute, true},
		{"past the horizon within the grace", tasks.ValidatePayload{EnqueuedAt: now.Add(-3 * time.Hour)}, 0, giveUpGrace, false},
		{"past the horizon beyond the grace", tasks.ValidatePayload{EnqueuedAt: now.Add(-3 * time.Hour)}, 0, giveUpGrace + time.Second, true},
		{"retries spent, short wait", fresh, spent, 5 * time.Second, false},
		{"retries spent, long wait", fresh, spent, 15 * time.Minute, true},
		{"no enqueue time: only the retries count", tasks.ValidatePayload{}, 0, 100 * time.Hour, false},
		{"no enqueue time, retries spent", tasks.ValidatePayload{}, spent, 15 * time.Minute, true},
	}
	for _, tt := range tests {
		if got := w.outlives(tt.p, tt.retried, tt.wait); got != tt.want {
			t.Errorf("%s: outlives = %v, want %v", tt.name, got, tt.want)
		}
	}
}
