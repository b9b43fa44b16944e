// Package proctest runs the real processes that Outpost's tests start (a
// server, a field client) and collects their output while the test reads it.
//
//	p := proctest.Start(t, exec.Command(bin, "serve", …))   // SIGTERM at cleanup
//	url := p.WaitFile(t, readyFile)                          // fails if it exits first
//	t.Log(p.Logs.String())
package proctest

import (
	"bytes"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Buffer is a bytes.Buffer safe for a process to write while a test reads.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *Buffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *Buffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// Process is a started command.
type Process struct {
	Cmd  *exec.Cmd
	Logs *Buffer // standard output and error, unless the caller set them
	done chan error
}

// Start starts cmd and stops it at the end of the test: SIGTERM, then
// SIGKILL after 30 seconds.
func Start(t testing.TB, cmd *exec.Cmd) *Process {
	t.Helper()
	p := &Process{Cmd: cmd, Logs: &Buffer{}, done: make(chan error, 1)}
	if cmd.Stdout == nil {
		cmd.Stdout = p.Logs
	}
	if cmd.Stderr == nil {
		cmd.Stderr = p.Logs
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.done <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
		}
	})
	return p
}

// WaitFor polls ready until it reports true, for up to a minute; the test
// fails if the process exits first or the minute runs out.
func (p *Process) WaitFor(t testing.TB, what string, ready func() bool) {
	t.Helper()
	for deadline := time.Now().Add(time.Minute); !ready(); time.Sleep(50 * time.Millisecond) {
		select {
		case err := <-p.done:
			p.done <- err
			t.Fatalf("%s exited before %s: %v\n%s", p.Cmd.Path, what, err, p.Logs.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: no %s after a minute:\n%s", p.Cmd.Path, what, p.Logs.String())
		}
	}
}

// WaitFile waits until the process has written a non-empty file at path
// (a server's --ready-file) and returns its content, trimmed.
func (p *Process) WaitFile(t testing.TB, path string) string {
	t.Helper()
	var s string
	p.WaitFor(t, "writing "+path, func() bool {
		b, err := os.ReadFile(path)
		s = strings.TrimSpace(string(b))
		return err == nil && s != ""
	})
	return s
}
