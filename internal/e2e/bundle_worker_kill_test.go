package e2e

import (
	"net/http"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/outpost-auth/outpost/internal/proctest"
	"github.com/outpost-auth/outpost/otp"
)

// TestBundleWorkerKilledJobTakenOver: `outpost serve --bundle-workers 0`
// only queues a bundle job; an `outpost worker` on the same database claims
// it and is killed (SIGKILL) mid-job; a second worker takes the job over
// once the first one's lease runs out and finishes it; the server hands the
// bundle out. On each engine (SQLite: the file is shared on one host).
func TestBundleWorkerKilledJobTakenOver(t *testing.T) {
	if testing.Short() {
		t.Skip("kills a worker process")
	}
	eachEngine(t, func(t *testing.T, dsn string) {
		s := &killServer{t: t, dir: t.TempDir() + "/data", dsn: dsn, extra: []string{"--bundle-workers", "0"}}
		s.start()
		defer s.stop()
		if st := s.api("POST", "/v1/users", map[string]string{"id": "ana"}, nil); st != 201 {
			t.Fatalf("user: %d", st)
		}
		var tok struct {
			ID  string `json:"id"`
			URI string `json:"otpauth_uri"`
		}
		if st := s.api("POST", "/v1/users/ana/tokens", map[string]string{"type": "hotp"}, &tok); st != 201 {
			t.Fatalf("token: %d", st)
		}
		k, err := otp.ParseURI(tok.URI)
		if err != nil {
			t.Fatal(err)
		}
		c0, _ := k.Params.CodeAt(k.Secret, 0)
		if st := s.api("POST", "/v1/users/ana/tokens/"+tok.ID+"/confirm", map[string]string{"code": c0}, nil); st != 200 {
			t.Fatalf("confirm: %d", st)
		}
		body := map[string]any{"user": "ana", "device": "van-1", "count": 12, "override_floor": true}
		var ans map[string]any
		if st := s.api("POST", "/v1/offline/bundles", body, &ans); st != 503 {
			t.Fatalf("a synchronous bundle on an enqueue-only server: %d %v", st, ans)
		}
		var job struct {
			Job string `json:"job"`
		}
		if st := s.api("POST", "/v1/offline/bundles?async=true", body, &job); st != 202 || job.Job == "" {
			t.Fatalf("job: %d %+v", st, job)
		}
		type status struct {
			State       string
			Done, Total int
		}
		poll := func(until func(status) bool, what string) status {
			t.Helper()
			for deadline := time.Now().Add(3 * time.Minute); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
				var st status
				if code := s.api("GET", "/v1/offline/jobs/"+job.Job, nil, &st); code != 200 {
					t.Fatalf("job status: %d", code)
				}
				if until(st) {
					return st
				}
			}
			t.Fatalf("job never %s", what)
			return status{}
		}
		time.Sleep(300 * time.Millisecond)
		if st := poll(func(status) bool { return true }, "answered"); st.Done != 0 || st.State != "running" {
			t.Fatalf("computed without a worker: %+v", st)
		}

		first := startWorker(t, s)
		st := poll(func(st status) bool { return st.Done > 0 }, "progressed")
		if st.Done == st.Total {
			t.Fatalf("the first worker finished before it was killed (%+v): raise the count", st)
		}
		_ = first.Cmd.Process.Signal(syscall.SIGKILL) // its lease is left to run out
		killedAt := poll(func(status) bool { return true }, "answered").Done

		second := startWorker(t, s)
		st = poll(func(st status) bool { return st.State != "running" }, "ended")
		if st.State != "done" || st.Done != st.Total || st.Total != 12 {
			t.Fatalf("after the take-over: %+v (killed at %d)\nfirst worker:\n%s\nsecond:\n%s", st, killedAt, first.Logs, second.Logs)
		}
		if code := s.api("GET", "/v1/offline/jobs/"+job.Job+"/bundle", nil, nil); code != http.StatusOK {
			t.Fatalf("bundle: %d", code)
		}
	})
}

// startWorker starts `outpost worker` on s's database with a short lease.
func startWorker(t *testing.T, s *killServer) *proctest.Process {
	t.Helper()
	args := []string{"worker", "--data", s.dir, "--lease", "2s", "--bundle-workers", "1", "--log-level", "warn"}
	if s.dsn != "" {
		args = append(args, "--database", s.dsn)
	}
	return proctest.Start(t, exec.Command(bin, args...))
}
