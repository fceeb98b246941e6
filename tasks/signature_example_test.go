package tasks_test

import (
	"bytes"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"time"

	"github.com/mxprobe/mxprobe/tasks"
)

// A receiver of mxprobe callbacks: verify the signature before trusting the
// body, answer 2xx quickly, and de-duplicate on the event ID because delivery
// is at least once. Answering 410 Gone tells mxprobe never to retry.
func ExampleVerifyRequest() {
	// Hold both secrets while rotating; one is enough otherwise.
	secrets := [][]byte{[]byte("new-callback-secret"), []byte("old-callback-secret")}

	var mu sync.Mutex
	seen := map[string]bool{} // use a table with a unique key in production

	receiver := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := tasks.VerifyRequest(r, secrets, 64<<10)
		if err != nil {
			http.Error(w, "invalid signature", http.StatusUnauthorized)
			fmt.Println("rejected:", err)
			return
		}
		id := r.Header.Get(tasks.HeaderEventID)
		mu.Lock()
		dup := seen[id]
		seen[id] = true
		mu.Unlock()
		if dup {
			w.WriteHeader(http.StatusOK) // already handled: acknowledge, do nothing
			fmt.Println("duplicate:", id)
			return
		}
		fmt.Printf("event %s: %s\n", id, body)
		w.WriteHeader(http.StatusNoContent)
	})

	// What the worker sends (normally over the network).
	post := func(secret []byte, body []byte) int {
		now := time.Now()
		r := httptest.NewRequest(http.MethodPost, "/mxprobe/callback", bytes.NewReader(body))
		r.Header.Set("Content-Type", "application/json")
		r.Header.Set(tasks.HeaderEventID, "7f9c2e/validated")
		r.Header.Set(tasks.HeaderTimestamp, strconv.FormatInt(now.Unix(), 10))
		r.Header.Set(tasks.HeaderSignature, tasks.Sign(secret, now, body))
		w := httptest.NewRecorder()
		receiver.ServeHTTP(w, r)
		return w.Code
	}
	body := []byte(`{"address":"jane@example.com","verdict":"valid"}`)
	fmt.Println(post([]byte("old-callback-secret"), body))
	fmt.Println(post([]byte("new-callback-secret"), body)) // a redelivery
	fmt.Println(post([]byte("guessed-secret"), body))

	// Output:
	// event 7f9c2e/validated: {"address":"jane@example.com","verdict":"valid"}
	// 204
	// duplicate: 7f9c2e/validated
	// 200
	// rejected: callback signature mismatch
	// 401
}
