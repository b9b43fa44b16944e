package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/outpost-auth/outpost/internal/bundle"
	"github.com/outpost-auth/outpost/internal/cost"
	"github.com/outpost-auth/outpost/internal/datadir"
	"github.com/outpost-auth/outpost/internal/devicelog"
	"github.com/outpost-auth/outpost/internal/eventlog"
	"github.com/outpost-auth/outpost/internal/fieldsync"
	"github.com/outpost-auth/outpost/internal/keys"
	"github.com/outpost-auth/outpost/internal/store"
	"github.com/outpost-auth/outpost/offline"
	"github.com/outpost-auth/outpost/otp"
)

// TestSyncSurvivesSIGKILL is the sync issue's crash test. Real processes on
// real databases: an `outpost serve` process and `outpost field sync`
// processes, each killed with SIGKILL at random points of many syncs (the
// server restarted each time), while the test uses codes offline on two
// field devices and online through the API. At the end, after one clean
// sync, it proves that every entry of each device log is in the server's
// audit log exactly once, that the server and each device agree on each
// token's last used counter, and that it is the maximum of what either side
// accepted.
func TestSyncSurvivesSIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("kills and restarts servers")
	}
	rounds := 16
	if v, err := strconv.Atoi(os.Getenv("OUTPOST_SYNC_KILL_ROUNDS")); err == nil && v > 0 {
		rounds = v
	}
	eachEngine(t, func(t *testing.T, dsn string) { syncKill(t, dsn, rounds) })
}

// killServer is one `outpost serve` process that may be killed and restarted on the same port.
type killServer struct {
	t       *testing.T
	dir     string
	dsn     string
	addr    string
	url     string
	cmd     *exec.Cmd
	done    chan error
	logs    *bytes.Buffer
	mu      sync.Mutex
	started int
	// extra are more flags of `outpost serve`.
	extra []string
}

func (s *killServer) start() {
	s.t.Helper()
	ready := filepath.Join(s.t.TempDir(), "ready")
	addr := s.addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	args := []string{"serve", "--data", s.dir, "--listen", addr, "--plaintext", "--dev-insecure-unsealed", "--ready-file", ready, "--log-level", "warn"}
	if s.dsn != "" {
		args = append(args, "--database", s.dsn)
	}
	args = append(args, s.extra...)
attempts:
	for attempt := 0; ; attempt++ {
		cmd := exec.Command(bin, args...)
		s.logs = &bytes.Buffer{}
		cmd.Stdout, cmd.Stderr = killWriter(s.write), killWriter(s.write)
		if err := cmd.Start(); err != nil {
			s.t.Fatal(err)
		}
		s.cmd, s.done = cmd, make(chan error, 1)
		go func(c *exec.Cmd, d chan error) { d <- c.Wait() }(cmd, s.done)
		deadline := time.Now().Add(60 * time.Second)
		for {
			if b, err := os.ReadFile(ready); err == nil && len(b) > 0 {
				s.url = strings.TrimSpace(string(b))
				s.addr = strings.TrimPrefix(s.url, "http://")
				s.started++
				return
			}
			select {
			case err := <-s.done:
				// The port may still be held for a moment after a kill: try again.
				if attempt < 20 && strings.Contains(s.logText(), "address already in use") {
					time.Sleep(100 * time.Millisecond)
					continue attempts
				}
				s.t.Fatalf("server exited: %v\n%s", err, s.logText())
			default:
			}
			if time.Now().After(deadline) {
				s.t.Fatalf("server did not start:\n%s", s.logText())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

func (s *killServer) write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.logs.Write(p)
}

func (s *killServer) logText() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.logs.String()
}

// kill sends SIGKILL and waits for the process to be gone.
func (s *killServer) kill() {
	_ = s.cmd.Process.Signal(syscall.SIGKILL)
	<-s.done
}

func (s *killServer) stop() {
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(30 * time.Second):
		s.kill()
	}
}

// api calls the server with the admin token.
func (s *killServer) api(method, path string, body, out any) int {
	s.t.Helper()
	tok, err := os.ReadFile(filepath.Join(s.dir, "admin.token"))
	if err != nil {
		s.t.Fatal(err)
	}
	b, err := json.Marshal(body)
	if err != nil {
		s.t.Fatal(err)
	}
	req, err := http.NewRequest(method, s.url+path, bytes.NewReader(b))
	if err != nil {
		s.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(tok)))
	req.Header.Set("Content-Type", "application/json")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	defer res.Body.Close()
	if out != nil {
		if err := json.NewDecoder(res.Body).Decode(out); err != nil && !errors.Is(err, io.EOF) {
			s.t.Fatalf("%s %s: answer %d is not JSON: %v", method, path, res.StatusCode, err)
		}
	}
	return res.StatusCode
}

// killDevice is a field store with one user's HOTP token.
type killDevice struct {
	id, user, dir string
	s             *offline.Store
	p             otp.Params
	seed          []byte
	// maxOffline is the highest counter this device accepted.
	maxOffline int64
}

func (d *killDevice) code(t *testing.T, c uint64) string {
	t.Helper()
	code, err := d.p.CodeAt(d.seed, c)
	if err != nil {
		t.Fatal(err)
	}
	return code
}

// recordIssued records a bundle signed outside the server as issued to the
// device, in the running server's database, as the server does for the
// bundles it issues: sync accepts the device's claims only within it.
func recordIssued(t *testing.T, srv *killServer, signer *keys.Signer, data []byte, device string) {
	t.Helper()
	dsn := srv.dsn
	if dsn == "" {
		dsn = filepath.Join(srv.dir, datadir.DatabaseFile)
	}
	st, err := store.Open(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	svc := &fieldsync.Service{Store: st, Sync: st.(store.SyncStore), Signer: signer}
	if err := svc.RecordIssued(context.Background(), data, device); err != nil {
		t.Fatal(err)
	}
}

func syncKill(t *testing.T, dsn string, rounds int) {
	ctx := context.Background()
	tmp := t.TempDir()
	srv := &killServer{t: t, dir: filepath.Join(tmp, "data"), dsn: dsn}
	srv.start()
	defer func() {
		if srv.cmd.ProcessState == nil {
			srv.stop()
		}
	}()
	m, _, err := datadir.LoadMaster(srv.dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	signer := m.Signer(0)

	var devices []*killDevice
	maxOnline := map[string]int64{}
	for i := range 2 {
		d := &killDevice{id: fmt.Sprint("van-", i), user: fmt.Sprint("tech-", i), dir: filepath.Join(tmp, fmt.Sprint("field-", i))}
		if st := srv.api("POST", "/v1/users", map[string]string{"id": d.user}, nil); st != 201 {
			t.Fatalf("user: %d", st)
		}
		var tok struct {
			ID  string `json:"id"`
			URI string `json:"otpauth_uri"`
		}
		if st := srv.api("POST", "/v1/users/"+d.user+"/tokens", map[string]string{"type": "hotp"}, &tok); st != 201 {
			t.Fatalf("token: %d", st)
		}
		k, err := otp.ParseURI(tok.URI)
		if err != nil {
			t.Fatal(err)
		}
		d.p, d.seed = k.Params, k.Secret
		if st := srv.api("POST", "/v1/users/"+d.user+"/tokens/"+tok.ID+"/confirm", map[string]string{"code": d.code(t, 0)}, nil); st != 200 {
			t.Fatalf("confirm: %d", st)
		}
		d.s, err = offline.Init(ctx, d.dir, offline.Config{DeviceID: d.id, ServerKey: signer.Public,
			Policy: offline.Policy{MaxFailures: 1000, ClockTolerance: time.Hour, TOTPBack: 1, TOTPForward: 1, HOTPLookahead: 20}},
			offline.Options{Workers: 1})
		if err != nil {
			t.Fatal(err)
		}
		defer d.s.Close()
		if st := srv.api("POST", "/v1/devices", map[string]string{"id": d.id, "public_key": string(keys.MarshalPublicPEM(d.s.DevicePublicKey()))}, nil); st != 201 {
			t.Fatalf("register: %d", st)
		}
		// A cheap bundle signed with the server's key: the crash test is about sync, not the KDF.
		data, _, err := bundle.Issue(ctx, bundle.Request{Realm: "default", User: d.user, TokenID: tok.ID, Params: d.p, Secret: d.seed,
			Device: d.id, First: 1, Count: 4000, KDF: cost.KDF{Time: 1, MemoryKiB: 8, Threads: 1}, Override: true,
			Now: time.Now(), NotAfter: time.Now().Add(24 * time.Hour)}, signer, nil)
		if err != nil {
			t.Fatal(err)
		}
		recordIssued(t, srv, signer, data, d.id)
		if _, err := d.s.Import(ctx, data); err != nil {
			t.Fatal(err)
		}
		d.maxOffline = -1
		maxOnline[d.user] = 0 // counter 0: the confirmation
		devices = append(devices, d)
	}

	seed := uint64(time.Now().UnixNano())
	if v, err := strconv.ParseUint(os.Getenv("OUTPOST_SYNC_KILL_SEED"), 10, 64); err == nil {
		seed = v
	}
	t.Logf("schedule seed %d (OUTPOST_SYNC_KILL_SEED=%d repeats the choices, not the timing)", seed, seed)
	rng := rand.New(rand.NewPCG(seed, 7))
	syncProc := func(d *killDevice) *exec.Cmd {
		cmd := exec.Command(bin, "field", "sync", "--data", d.dir, "--server", srv.url)
		cmd.Env = os.Environ()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		return cmd
	}
	kills := map[string]int{}
	for range rounds {
		// Use codes: offline on each device, online through the API.
		for _, d := range devices {
			st, err := d.s.Lookup(ctx, "", d.user, "")
			if err != nil {
				t.Fatal(err)
			}
			last := int64(0)
			if st.LastUsed != nil {
				last = int64(*st.LastUsed)
			}
			for range rng.IntN(4) {
				c := uint64(last + 1 + rng.Int64N(3))
				if _, err := d.s.Verify(ctx, offline.Attempt{User: d.user, Code: d.code(t, c)}); err == nil {
					d.maxOffline = max(d.maxOffline, int64(c))
					last = int64(c)
				} else if !strings.Contains(err.Error(), "refused") {
					t.Fatalf("offline verify: %v", err)
				}
			}
			if rng.IntN(2) == 0 {
				c := uint64(maxOnline[d.user] + 1 + rng.Int64N(4))
				var out struct {
					OK bool `json:"ok"`
				}
				if st := srv.api("POST", "/v1/verify", map[string]string{"user": d.user, "code": d.code(t, c)}, &out); st == 200 {
					maxOnline[d.user] = max(maxOnline[d.user], int64(c))
				} else {
					// Behind what a device used: a failure; keep the user out of lockout.
					if st := srv.api("DELETE", "/v1/users/"+d.user+"/lockout", nil, nil); st != 204 {
						t.Fatalf("lockout reset: %d", st)
					}
				}
			}
		}
		// Sync both devices at once; kill clients and the server at random moments.
		var procs []*exec.Cmd
		for _, d := range devices {
			procs = append(procs, syncProc(d))
		}
		mode := rng.IntN(4) // 0: no kill, 1: kill clients, 2: kill the server, 3: both
		time.Sleep(time.Duration(rng.IntN(700)) * time.Millisecond)
		if mode&2 != 0 {
			srv.kill()
			kills["server"]++
		}
		for _, p := range procs {
			if mode&1 != 0 {
				_ = p.Process.Signal(syscall.SIGKILL)
			} else if mode&2 != 0 {
				_ = p.Process.Signal(syscall.SIGKILL) // no server to talk to: end its retries
			}
			if err := p.Wait(); err != nil {
				if ee, ok := err.(*exec.ExitError); ok && ee.Sys().(syscall.WaitStatus).Signaled() {
					kills["client killed mid-sync"]++
				} else {
					kills["client failed (server gone)"]++
				}
			} else {
				kills["client finished"]++
			}
		}
		if mode&2 != 0 {
			srv.start()
		}
	}
	t.Logf("kills: %v, server starts %d", kills, srv.started)

	// A clean sync of each device (twice: the second must change nothing).
	for _, d := range devices {
		for range 2 {
			if out, err := exec.Command(bin, "field", "sync", "--data", d.dir, "--server", srv.url).CombinedOutput(); err != nil {
				t.Fatalf("final sync of %s: %v\n%s", d.id, err, out)
			}
		}
	}
	srv.stop()

	// Check the server's database directly.
	if dsn == "" {
		dsn = filepath.Join(srv.dir, datadir.DatabaseFile)
	}
	st, err := store.Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	var all []eventlog.Entry
	for {
		page, err := st.ListAudit(ctx, uint64(len(all)), store.MaxListLimit)
		if err != nil {
			t.Fatal(err)
		}
		if len(page) == 0 {
			break
		}
		all = append(all, page...)
	}
	if i, err := eventlog.VerifyChain(nil, all, nil); err != nil {
		t.Fatalf("the audit chain is broken at %d: %v", i, err)
	}
	for _, d := range devices {
		log, err := devicelog.ReadFile(ctx, filepath.Join(d.dir, offline.DatabaseFile))
		if err != nil {
			t.Fatal(err)
		}
		recorded := map[uint64]int{}
		for _, e := range all {
			if e.Actor != "device:"+d.id || !strings.HasPrefix(e.Kind, "offline.") {
				continue
			}
			var v struct {
				Seq  uint64 `json:"seq"`
				Hash []byte `json:"hash"`
			}
			if err := json.Unmarshal(e.Data, &v); err != nil {
				t.Fatal(err)
			}
			recorded[v.Seq]++
			if v.Seq < 1 || v.Seq > uint64(len(log)) || !bytes.Equal(v.Hash, log[v.Seq-1].Hash) {
				t.Errorf("%s: audit entry %d records device entry %d with another hash", d.id, e.Seq, v.Seq)
			}
		}
		for _, e := range log {
			if recorded[e.Seq] != 1 {
				t.Errorf("%s: device entry %d (%s) is in the audit log %d times", d.id, e.Seq, e.Kind, recorded[e.Seq])
			}
		}
		toks, err := st.ListTokens(ctx, "default", d.user)
		if err != nil || len(toks) != 1 {
			t.Fatalf("tokens of %s: %v", d.user, err)
		}
		ts, err := d.s.Lookup(ctx, "", d.user, "")
		if err != nil || ts.LastUsed == nil {
			t.Fatalf("device state of %s: %+v %v", d.user, ts, err)
		}
		want := max(d.maxOffline, maxOnline[d.user])
		if toks[0].LastUsed != want || int64(*ts.LastUsed) != want {
			t.Errorf("%s: server last used %d, device %d; want the maximum of both sides %d (offline %d, online %d)",
				d.user, toks[0].LastUsed, *ts.LastUsed, want, d.maxOffline, maxOnline[d.user])
		}
		t.Logf("%s: %d log entries recorded once each; last used %d (offline max %d, online max %d)", d.id, len(log), want, d.maxOffline, maxOnline[d.user])
	}
}

type killWriter func([]byte) (int, error)

func (f killWriter) Write(p []byte) (int, error) { return f(p) }
