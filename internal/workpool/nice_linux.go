package workpool

import (
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// Nice raises the niceness of every thread of this process to at least n
// (Linux threads each have their own; threads started later inherit it from
// the thread that starts them, so Nice walks the threads twice). It returns
// how many threads it lowered and the first error; raising niceness needs no
// privilege, so an error means the system refused (a seccomp filter, a
// container policy) and the caller carries on at normal priority.
func Nice(n int) (int, error) {
	var first error
	lowered := 0
	for range 2 {
		ents, err := os.ReadDir("/proc/self/task")
		if err != nil {
			return lowered, err
		}
		for _, e := range ents {
			tid, err := strconv.Atoi(e.Name())
			if err != nil {
				continue
			}
			ok, err := niceThread(tid, n)
			if err != nil && first == nil {
				first = err
			}
			if ok {
				lowered++
			}
		}
	}
	return lowered, first
}

// niceThread raises thread tid's niceness to n unless it is already at
// least n (lowering it would need privilege).
func niceThread(tid, n int) (bool, error) {
	cur, err := Niceness(tid)
	if err != nil {
		return false, err
	}
	if cur >= n {
		return false, nil
	}
	if err := setpriority(tid, n); err != nil {
		return false, err
	}
	return true, nil
}

// setpriority is unix.Setpriority, replaced in tests to see the fallback.
var setpriority = func(tid, n int) error { return unix.Setpriority(unix.PRIO_PROCESS, tid, n) }

// Niceness returns thread tid's nice value (0 is the calling thread).
func Niceness(tid int) (int, error) {
	// The raw system call answers 20 - nice (1 to 40), x/sys passes it on.
	p, err := unix.Getpriority(unix.PRIO_PROCESS, tid)
	if err != nil {
		return 0, err
	}
	return 20 - p, nil
}
