package tasks

import "time"

// SetSafetyNet changes how often c's Waits poll while its DoneChannel
// subscription is up: an hour makes a Wait that returns prove it was woken
// by the announcement.
func SetSafetyNet(c *Client, first, most time.Duration) { c.safetyNet = [2]time.Duration{first, most} }
