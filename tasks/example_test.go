package tasks_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/mxprobe/mxprobe/tasks"
)

// A registration service refuses a malformed address at once, before any
// task exists.
func ExampleClient_Enqueue_badAddress() {
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:0"}) // never reached
	c := tasks.NewClient(rdb)
	_, err := c.Enqueue(context.Background(), tasks.Request{Address: "alice@@example.com"})
	var re *tasks.RequestError
	if errors.As(err, &re) {
		fmt.Println("refused field:", re.Field)
	}
	// Output: refused field: address
}

// A sign-up flow that waits up to ten seconds for a verdict and otherwise
// goes on with the provisional one; the callback brings the final verdict.
func ExampleClient_Wait() {
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:6379"})
	c := tasks.NewClient(rdb)
	ctx := context.Background()
	id, err := c.Enqueue(ctx, tasks.Request{
		Address:     "alice@example.com",
		CallbackURL: "https://signup.example.com/hooks/mxprobe",
	}, tasks.Queue(tasks.QueueCritical))
	if err != nil {
		fmt.Println("enqueue:", err)
		return
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	st, err := c.Wait(wctx, id)
	if err != nil && st.Result == nil {
		fmt.Println("no verdict yet; the callback will bring it")
		return
	}
	if st.Result.Verdict == tasks.VerdictInvalid {
		fmt.Println("please check your address:", st.Result.Reason)
	}
}
