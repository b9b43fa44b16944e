// Package e2e runs the real outpost binary as separate processes: a server
// started on an empty data directory with the README's command, the admin
// CLI and curl against it over HTTPS, SIGTERM and restart, and two replicas
// racing on one PostgreSQL database.
package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/outpost-auth/outpost/internal/apiclient"
	"github.com/outpost-auth/outpost/internal/proctest"
	"github.com/outpost-auth/outpost/internal/store/storetest"
	"github.com/outpost-auth/outpost/otp"
)

var bin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "outpost-e2e-")
	if err != nil {
		panic(err)
	}
	if bin, err = proctest.BuildOutpost(dir, "-race"); err != nil {
		fmt.Println(err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

const passphrase = "e2e correct horse battery staple"

// server is one `outpost serve` process.
type server struct {
	t      *testing.T
	cmd    *exec.Cmd
	dir    string
	url    string
	logs   *proctest.Buffer
	done   chan error
	client *apiclient.Client
}

func startServer(t *testing.T, dir string, extra ...string) *server {
	t.Helper()
	ready := filepath.Join(t.TempDir(), "ready")
	args := append([]string{"serve", "--data", dir, "--listen", "127.0.0.1:0", "--ready-file", ready}, extra...)
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), "OUTPOST_PASSPHRASE="+passphrase)
	logs := &proctest.Buffer{}
	cmd.Stderr, cmd.Stdout = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s := &server{t: t, cmd: cmd, dir: dir, logs: logs, done: make(chan error, 1)}
	go func() { s.done <- cmd.Wait() }()
	t.Cleanup(func() { s.stop() })
	deadline := time.Now().Add(60 * time.Second)
	for {
		b, err := os.ReadFile(ready)
		if err == nil && len(b) > 0 {
			s.url = strings.TrimSpace(string(b))
			break
		}
		select {
		case err := <-s.done:
			t.Fatalf("server exited early: %v\n%s", err, logs.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("server did not start:\n%s", logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	// A replica sharing another's database writes no token file of its own.
	tok, err := os.ReadFile(filepath.Join(dir, "admin.token"))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		t.Fatal(err)
	}
	ca := ""
	if strings.HasPrefix(s.url, "https://") {
		ca = filepath.Join(dir, "tls", "ca.pem")
	}
	c, err := apiclient.New(s.url, strings.TrimSpace(string(tok)), ca)
	if err != nil {
		t.Fatal(err)
	}
	s.client = c
	return s
}

// stop sends SIGTERM and waits for a clean exit.
func (s *server) stop() error {
	if s.cmd.ProcessState != nil {
		return nil
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-s.done:
		s.done <- err
		return err
	case <-time.After(30 * time.Second):
		_ = s.cmd.Process.Kill()
		return fmt.Errorf("server did not stop within 30 s of SIGTERM")
	}
}

// outpost runs the CLI and returns stdout, stderr and the exit code.
func outpost(t *testing.T, env []string, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return out.String(), errb.String(), code
}

func pyotpNow(t *testing.T, uri string) string {
	t.Helper()
	out, err := exec.Command("/usr/bin/python3", "-c", "import sys,pyotp; print(pyotp.parse_uri(sys.argv[1]).now())", uri).Output()
	if err != nil {
		if os.Getenv("OUTPOST_REQUIRE_INTEROP") == "1" {
			t.Fatalf("pyotp: %v (apt-get install python3-pyotp)", err)
		}
		t.Skipf("pyotp not available: %v", err)
	}
	return strings.TrimSpace(string(out))
}

// TestServeFreshDataDir is the README's run command on an empty directory,
// driven by the admin CLI, curl and pyotp, then stopped and restarted.
func TestServeFreshDataDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	s := startServer(t, dir)
	if !strings.HasPrefix(s.url, "https://") {
		t.Fatalf("default is not HTTPS: %s", s.url)
	}
	st, err := os.Stat(filepath.Join(dir, "admin.token"))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("admin.token: %v %v", err, st)
	}
	if !strings.Contains(s.logs.String(), filepath.Join(dir, "admin.token")) {
		t.Errorf("the admin token path is not printed")
	}
	ca := filepath.Join(dir, "tls", "ca.pem")
	if _, err := exec.LookPath("curl"); err == nil {
		out, err := exec.Command("curl", "-sS", "--fail", "--cacert", ca, s.url+"/readyz").CombinedOutput()
		if err != nil || !strings.Contains(string(out), `"ready"`) {
			t.Fatalf("curl over HTTPS with the server's CA: %v %s", err, out)
		}
		// Without the CA, curl refuses the certificate.
		if err := exec.Command("curl", "-sS", "--fail", s.url+"/healthz").Run(); err == nil {
			t.Fatal("curl accepted the self-signed certificate without --cacert")
		}
	}
	env := []string{"OUTPOST_SERVER=" + s.url}
	auth := []string{"--token-file", filepath.Join(dir, "admin.token"), "--cacert", ca}
	if _, e, code := outpost(t, env, append([]string{"admin", "user", "add", "alice"}, auth...)...); code != 0 {
		t.Fatalf("user add: %d %s", code, e)
	}
	out, e, code := outpost(t, env, append([]string{"admin", "token", "add", "--user", "alice", "--json"}, auth...)...)
	if code != 0 {
		t.Fatalf("token add: %d %s", code, e)
	}
	var tok struct {
		ID  string `json:"id"`
		URI string `json:"otpauth_uri"`
	}
	if err := json.Unmarshal([]byte(out), &tok); err != nil {
		t.Fatalf("token add --json: %v %s", err, out)
	}
	code1 := pyotpNow(t, tok.URI)
	if _, e, c := outpost(t, env, append([]string{"admin", "token", "confirm", "--user", "alice", "--token", tok.ID, "--code", code1}, auth...)...); c != 0 {
		t.Fatalf("confirm: %d %s", c, e)
	}
	// The confirming code is spent: verifying it again is refused with exit code 3.
	if _, e, c := outpost(t, env, append([]string{"admin", "verify", "--user", "alice", "--code", code1}, auth...)...); c != 3 || !strings.Contains(e, "replayed") {
		t.Fatalf("replay: exit %d %s", c, e)
	}
	// Restart on the same directory: state persists, the token file is kept.
	before, err := os.ReadFile(filepath.Join(dir, "admin.token"))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.stop(); err != nil {
		t.Fatalf("SIGTERM: %v\n%s", err, s.logs.String())
	}
	if !strings.Contains(s.logs.String(), `"msg":"stopped"`) {
		t.Errorf("no graceful stop in the logs:\n%s", s.logs.String())
	}
	s2 := startServer(t, dir)
	after, err := os.ReadFile(filepath.Join(dir, "admin.token"))
	if err != nil || !bytes.Equal(before, after) {
		t.Fatal("restart rewrote admin.token")
	}
	env2 := []string{"OUTPOST_SERVER=" + s2.url}
	if _, e, c := outpost(t, env2, append([]string{"admin", "verify", "--user", "alice", "--code", code1}, auth...)...); c != 3 {
		t.Fatalf("replay after restart: exit %d %s", c, e)
	}
	if out, e, c := outpost(t, nil, "audit", "verify", "--data", dir, "--json"); c != 0 || !strings.Contains(out, `"ok": true`) {
		t.Fatalf("audit verify: %d %s %s", c, out, e)
	}
	// No secret in the logs: the admin token, the seed.
	k, err := otp.ParseURI(tok.URI)
	if err != nil {
		t.Fatal(err)
	}
	logs := s.logs.String() + s2.logs.String()
	for _, secret := range []string{strings.TrimSpace(string(before)), otp.EncodeSecret(k.Secret), passphrase} {
		if strings.Contains(logs, secret) {
			t.Errorf("a secret (%.6s…) appears in the server logs", secret)
		}
	}
}

func TestPlaintextOnlyOnLoopback(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	_, e, code := outpost(t, []string{"OUTPOST_PASSPHRASE=" + passphrase}, "serve", "--data", dir, "--plaintext", "--listen", "0.0.0.0:0")
	if code != 2 || !strings.Contains(e, "loopback") {
		t.Fatalf("plaintext on 0.0.0.0: exit %d %s", code, e)
	}
	s := startServer(t, dir, "--plaintext")
	if !strings.HasPrefix(s.url, "http://127.0.0.1:") {
		t.Fatalf("plaintext url %s", s.url)
	}
	res, err := http.Get(s.url + "/healthz")
	if err != nil || res.StatusCode != 200 {
		t.Fatalf("healthz: %v", err)
	}
	res.Body.Close()
}

// TestReplicasNeverAcceptOneCodeTwice runs two `outpost serve` processes on
// one PostgreSQL database and fires the same code at both at once, many times.
func TestReplicasNeverAcceptOneCodeTwice(t *testing.T) {
	dsn := storetest.PostgresDSN(t)
	dirA := filepath.Join(t.TempDir(), "a")
	a := startServer(t, dirA, "--database", dsn, "--plaintext")
	dirB := filepath.Join(t.TempDir(), "b")
	if err := os.MkdirAll(dirB, 0o700); err != nil {
		t.Fatal(err)
	}
	mk, err := os.ReadFile(filepath.Join(dirA, "master.key"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dirB, "master.key"), mk, 0o600); err != nil {
		t.Fatal(err)
	}
	b := startServer(t, dirB, "--database", dsn, "--plaintext")
	b.client.Token = a.client.Token // replica B has no token file of its own: the database is shared
	ctx := context.Background()
	if err := a.client.Do(ctx, "POST", "/v1/users", map[string]string{"id": "racer"}, nil); err != nil {
		t.Fatal(err)
	}
	var tok struct {
		ID  string `json:"id"`
		URI string `json:"otpauth_uri"`
	}
	if err := a.client.Do(ctx, "POST", "/v1/users/racer/tokens", map[string]any{"type": "hotp"}, &tok); err != nil {
		t.Fatal(err)
	}
	k, err := otp.ParseURI(tok.URI)
	if err != nil {
		t.Fatal(err)
	}
	c0, err := k.CodeAt(k.Secret, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.client.Do(ctx, "POST", "/v1/users/racer/tokens/"+tok.ID+"/confirm", map[string]string{"code": c0}, nil); err != nil {
		t.Fatal(err)
	}
	const rounds, perRound = 30, 16
	for ctr := uint64(1); ctr <= rounds; ctr++ {
		code, err := k.CodeAt(k.Secret, ctr)
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		var mu sync.Mutex
		ok, statuses := 0, map[int]int{}
		for i := range perRound {
			cl := a.client
			if i%2 == 1 {
				cl = b.client
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				err := cl.Do(ctx, "POST", "/v1/verify", map[string]string{"user": "racer", "code": code}, nil)
				mu.Lock()
				defer mu.Unlock()
				if err == nil {
					ok++
					statuses[200]++
					return
				}
				if ae, isAPI := err.(*apiclient.Error); isAPI {
					statuses[ae.Status]++
				} else {
					t.Errorf("transport: %v", err)
				}
			}()
		}
		wg.Wait()
		if ok != 1 {
			t.Fatalf("counter %d: %d of %d requests across two replicas accepted the same code (statuses %v)", ctr, ok, perRound, statuses)
		}
		// The replay failures must not lock the user out of the next round.
		if err := a.client.Do(ctx, "DELETE", "/v1/users/racer/lockout", nil, nil); err != nil {
			t.Fatal(err)
		}
	}
}
