//go:build !linux

package workpool

import "errors"

// Nice is Linux only; elsewhere it changes nothing and says so.
func Nice(n int) (int, error) { return 0, errors.New("workpool: thread priority is only set on Linux") }

// Niceness is Linux only.
func Niceness(tid int) (int, error) {
	return 0, errors.New("workpool: thread priority is only read on Linux")
}
