package replicabench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/outpost-auth/outpost/internal/bench"
	"github.com/outpost-auth/outpost/internal/datadir"
)

// ServeArgs are the flags every replica runs with besides its data
// directory, database and ready file: plain HTTP on a loopback port, an
// access log of errors only (a line per verification would dominate the
// measurement), and nothing in the background that is not verification
// (no audit checkpoints, no bundle pool).
var ServeArgs = []string{"--plaintext", "--listen", "127.0.0.1:0", "--access-log", "errors",
	"--audit-checkpoint-every", "0", "--bundle-workers", "0"}

// replica is one `outpost serve` process.
type replica struct {
	cmd  *exec.Cmd
	url  string // base URL, http://127.0.0.1:PORT
	logs string // path of its standard output and error
	done chan error
}

// startReplicas starts n `outpost serve` processes of exe on dsn, each with
// a data directory of its own under dir holding a copy of masterKey (the
// file's bytes), and waits until each is ready. On error it stops those it
// started.
func startReplicas(ctx context.Context, exe, dir, dsn string, masterKey []byte, n int) ([]*replica, error) {
	var rs []*replica
	for i := range n {
		r, err := startReplica(ctx, exe, filepath.Join(dir, fmt.Sprintf("replica-%d", i)), dsn, masterKey)
		if err != nil {
			_ = stopReplicas(rs)
			return nil, fmt.Errorf("replica %d of %d: %w", i+1, n, err)
		}
		rs = append(rs, r)
	}
	return rs, nil
}

func startReplica(ctx context.Context, exe, dir, dsn string, masterKey []byte) (*replica, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	mk := filepath.Join(dir, datadir.MasterKeyFile)
	if _, err := os.Stat(mk); errors.Is(err, os.ErrNotExist) {
		if err := datadir.WriteFileExclusive(mk, masterKey, 0o600); err != nil {
			return nil, err
		}
	}
	ready := filepath.Join(dir, "ready")
	_ = os.Remove(ready)
	logs := filepath.Join(dir, "serve.log")
	lf, err := os.OpenFile(logs, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	defer lf.Close() // the child holds its own descriptor
	args := append([]string{"serve", "--data", dir, "--database", dsn, "--ready-file", ready}, ServeArgs...)
	cmd := exec.Command(exe, args...)
	cmd.Stdout, cmd.Stderr = lf, lf
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", exe, err)
	}
	r := &replica{cmd: cmd, logs: logs, done: make(chan error, 1)}
	go func() { r.done <- cmd.Wait() }()
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(20 * time.Millisecond) {
		if b, err := os.ReadFile(ready); err == nil && len(strings.TrimSpace(string(b))) > 0 {
			r.url = strings.TrimSpace(string(b))
			return r, nil
		}
		select {
		case err := <-r.done:
			r.done <- err
			return nil, fmt.Errorf("outpost serve exited before it was ready (%v):\n%s", err, tail(logs))
		case <-ctx.Done():
			_ = r.stop()
			return nil, ctx.Err()
		default:
		}
		if time.Now().After(deadline) {
			_ = r.stop()
			return nil, fmt.Errorf("outpost serve not ready after a minute:\n%s", tail(logs))
		}
	}
}

// stop sends SIGTERM and waits for the process to exit (SIGKILL after
// 30 s); an exit other than a clean one is an error.
func (r *replica) stop() error {
	if r.cmd.ProcessState != nil {
		return nil
	}
	_ = r.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-r.done:
		r.done <- err
		if err != nil {
			return fmt.Errorf("outpost serve (pid %d) on SIGTERM: %w:\n%s", r.cmd.Process.Pid, err, tail(r.logs))
		}
		return nil
	case <-time.After(30 * time.Second):
		_ = r.cmd.Process.Kill()
		return fmt.Errorf("outpost serve (pid %d) did not stop within 30 s of SIGTERM; killed", r.cmd.Process.Pid)
	}
}

// stopReplicas stops every replica of rs at once and returns their errors.
func stopReplicas(rs []*replica) error {
	errs := make([]error, len(rs))
	bench.Parallel(len(rs), func(i int) { errs[i] = rs[i].stop() })
	return errors.Join(errs...)
}

// keepLogs copies the log of each replica of rs into a new directory that
// outlives the run (the replicas' own directories, which hold the master
// key, are removed), for a run whose requests failed, and returns its path.
func keepLogs(rs []*replica) (string, error) {
	dir, err := os.MkdirTemp("", "outpost-replicas-logs-")
	if err != nil {
		return "", err
	}
	for i, r := range rs {
		b, err := os.ReadFile(r.logs)
		if err == nil {
			err = os.WriteFile(filepath.Join(dir, fmt.Sprintf("replica-%d.log", i)), b, 0o600)
		}
		if err != nil {
			os.RemoveAll(dir)
			return "", err
		}
	}
	return dir, nil
}

// tail is the end of the log file at path, for an error message.
func tail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "(no log: " + err.Error() + ")"
	}
	const keep = 2000
	if len(b) > keep {
		b = b[len(b)-keep:]
	}
	return string(b)
}

// serverErrors returns up to max lines of the log at path that record a
// server error (level ERROR, or an answer with a 5xx status), for a run
// whose requests failed.
func serverErrors(path string, max int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "(no log: " + err.Error() + ")\n"
	}
	var out strings.Builder
	n := 0
	for line := range strings.Lines(string(b)) {
		if n < max && (strings.Contains(line, `"level":"ERROR"`) || strings.Contains(line, `"status":5`)) {
			out.WriteString(line)
			n++
		}
	}
	if n == 0 {
		return "(none)\n"
	}
	return out.String()
}
