package worker

// OnStoreFinal makes f see every attempt to store a decided verdict, until
// the returned function is called.
func OnStoreFinal(f func(taskID string, err error)) (stop func()) {
	onStoreFinal.Store(&f)
	return func() { onStoreFinal.Store(nil) }
}
