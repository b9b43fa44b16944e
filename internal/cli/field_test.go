package cli_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/outpost-auth/outpost/internal/bundle"
	"github.com/outpost-auth/outpost/internal/cli"
	"github.com/outpost-auth/outpost/internal/cost"
	"github.com/outpost-auth/outpost/internal/keys"
	"github.com/outpost-auth/outpost/otp"
)

var fieldSeed = []byte("12345678901234567890")

// fieldServer is a signing key for bundles, with its public key in a PEM file.
func fieldServer(t *testing.T, dir string) (*keys.Signer, string) {
	t.Helper()
	m, err := keys.MasterFromBytes([]byte("outpost cli field test master k!"))
	if err != nil {
		t.Fatal(err)
	}
	s := m.Signer(0)
	return s, writeFile(t, dir, "server.pub", string(keys.MarshalPublicPEM(s.Public)))
}

func fieldBundle(t *testing.T, s *keys.Signer, dir, name string, mod func(*bundle.Request)) string {
	t.Helper()
	req := bundle.Request{Realm: "acme", User: "alice", TokenID: "tok-1", Device: "dev-7",
		Params: otp.Params{Type: otp.TypeHOTP, Algorithm: otp.SHA1, Digits: 6}, Secret: fieldSeed, Count: 10,
		KDF: cost.KDF{Time: 1, MemoryKiB: 64, Threads: 1}, Override: true,
		Secrets: map[string][]byte{"door": []byte("4711"), "wifi": []byte("hunter2")}, Now: time.Now()}
	if mod != nil {
		mod(&req)
	}
	data, _, err := bundle.Issue(context.Background(), req, s, nil)
	if err != nil {
		t.Fatal(err)
	}
	return writeFile(t, dir, name, string(data))
}

func hotpCode(t *testing.T, c uint64) string {
	t.Helper()
	code, err := otp.HOTP(otp.SHA1, fieldSeed, c, 6)
	if err != nil {
		t.Fatal(err)
	}
	return code
}

// TestFieldCommands drives the field commands through the real binary. It is
// long on purpose: one story whose steps depend on the ones before.
func TestFieldCommands(t *testing.T) {
	tmp := t.TempDir()
	fdir := filepath.Join(tmp, "field")
	s, pub := fieldServer(t, tmp)
	r := mustRun(t, nil, "field", "init", "--data", fdir, "--server-key", pub, "--device-id", "dev-7", "--max-failures", "3", "--delay", "0")
	if !strings.Contains(r.stdout, "dev-7") || !strings.Contains(r.stdout, keys.KeyID(s.Public)) {
		t.Fatalf("init output does not name the device and server key:\n%s", r)
	}
	if _, err := os.Stat(filepath.Join(fdir, "device.pub")); err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(fdir); err != nil || st.Mode().Perm() != 0o700 {
		t.Fatalf("field dir: %v, %v", st, err)
	}
	expectCode(t, cli.ExitError, nil, "field", "init", "--data", fdir, "--server-key", pub, "--device-id", "dev-7")
	expectCode(t, cli.ExitUsage, nil, "field", "init", "--data", filepath.Join(tmp, "f2"), "--server-key", writeFile(t, tmp, "junk.pub", "junk"), "--device-id", "x")

	// Bad bundles: each refused with its exit code, nothing stored.
	other := fieldBundle(t, s, tmp, "other.bundle", func(r *bundle.Request) { r.Device = "dev-8" })
	expired := fieldBundle(t, s, tmp, "expired.bundle", func(r *bundle.Request) {
		r.NotBefore, r.NotAfter = time.Now().Add(-48*time.Hour), time.Now().Add(-24*time.Hour)
	})
	good := fieldBundle(t, s, tmp, "alice.bundle", nil)
	data := readFile(t, good)
	flipped := []byte(string(data))
	flipped[len(flipped)/2] ^= 1
	truncated := writeFile(t, tmp, "trunc.bundle", string(data[:len(data)/2]))
	for path, code := range map[string]int{
		other: cli.ExitRefused, expired: cli.ExitRefused,
		writeFile(t, tmp, "flipped.bundle", string(flipped)): cli.ExitTampered,
		truncated: cli.ExitTampered,
		"../../offline/testdata/fail_unknown_key.bundle": cli.ExitTampered,
	} {
		r := expectCode(t, code, nil, "field", "import", "--data", fdir, path)
		if !strings.Contains(r.stderr, "refused") {
			t.Errorf("import %s: message does not say it was refused:\n%s", path, r)
		}
	}
	r = mustRun(t, nil, "field", "status", "--data", fdir, "--json")
	var st struct {
		Device string            `json:"device"`
		Tokens []json.RawMessage `json:"tokens"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil || st.Device != "dev-7" || len(st.Tokens) != 0 {
		t.Fatalf("status after refused imports: %v\n%s", err, r)
	}

	r = mustRun(t, nil, "field", "import", "--data", fdir, good)
	if !strings.Contains(r.stdout, "acme/alice/tok-1") || !strings.Contains(r.stdout, "10 entries") {
		t.Fatalf("import output:\n%s", r)
	}
	if r := mustRun(t, nil, "field", "import", "--data", fdir, good); !strings.Contains(r.stdout, "Already imported") {
		t.Fatalf("second import:\n%s", r)
	}

	// Verify: accepted once, then refused; wrong length is a usage error.
	c0 := hotpCode(t, 0)
	r = mustRun(t, nil, "field", "verify", "--data", fdir, "--user", "alice", "--code", c0)
	if !strings.Contains(r.stdout, "OK") || !strings.Contains(r.stdout, "counter 0") {
		t.Fatalf("verify output:\n%s", r)
	}
	expectCode(t, cli.ExitRefused, nil, "field", "verify", "--data", fdir, "--user", "alice", "--code", c0)
	r = expectCode(t, cli.ExitUsage, nil, "field", "verify", "--data", fdir, "--user", "alice", "--code", "12345")
	if !strings.Contains(r.stderr, "6 digits") {
		t.Errorf("wrong length message:\n%s", r)
	}
	expectCode(t, cli.ExitUsage, nil, "field", "verify", "--data", fdir, "--user", "alice", "--code", c0, "--pin", "1234")
	expectCode(t, cli.ExitRefused, nil, "field", "verify", "--data", fdir, "--user", "nobody", "--code", c0)

	// Unlock: the unknown secret name is refused before the code is used.
	c1 := hotpCode(t, 1)
	r = expectCode(t, cli.ExitUsage, nil, "field", "unlock", "--data", fdir, "--user", "alice", "--code", c1, "--secret", "safe")
	if !strings.Contains(r.stderr, "door") || !strings.Contains(r.stderr, "not used") {
		t.Errorf("unknown secret message:\n%s", r)
	}
	r = mustRun(t, nil, "field", "unlock", "--data", fdir, "--user", "alice", "--code", c1, "--secret", "door")
	if strings.TrimSpace(r.stdout) != "4711" {
		t.Fatalf("unlock --secret door printed %q", r.stdout)
	}
	r = mustRun(t, nil, "field", "unlock", "--data", fdir, "--user", "alice", "--code", hotpCode(t, 2), "--json")
	var un struct {
		OK      bool              `json:"ok"`
		Counter uint64            `json:"counter"`
		Secrets map[string]string `json:"secrets"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &un); err != nil || !un.OK || un.Counter != 2 || un.Secrets["wifi"] != "hunter2" {
		t.Fatalf("unlock --json: %v\n%s", err, r)
	}
	notLeaked(t, mustRun(t, nil, "field", "verify", "--data", fdir, "--user", "alice", "--code", hotpCode(t, 3)), "4711", "hunter2")

	// Three wrong codes wipe (policy --max-failures 3): exit 3, 3, then 4.
	for i, want := range []int{cli.ExitRefused, cli.ExitRefused, cli.ExitLocked} {
		r := expectCode(t, want, nil, "field", "verify", "--data", fdir, "--user", "alice", "--code", "000000")
		if i == 2 && !strings.Contains(r.stderr, "wiped") && !strings.Contains(r.stderr, "deleted") {
			t.Fatalf("third failure does not say the entries were wiped:\n%s", r)
		}
	}
	r = expectCode(t, cli.ExitLocked, nil, "field", "verify", "--data", fdir, "--user", "alice", "--code", hotpCode(t, 4))
	r = mustRun(t, nil, "field", "status", "--data", fdir)
	if !strings.Contains(r.stdout, "WIPED") {
		t.Fatalf("status does not show the wipe:\n%s", r)
	}

	// A damaged store: exit 5 with a message saying what to do.
	db := filepath.Join(fdir, "field.db")
	os.Remove(db + "-wal")
	os.Remove(db + "-shm")
	if err := os.WriteFile(db, []byte(strings.Repeat("garbage ", 600)), 0o600); err != nil {
		t.Fatal(err)
	}
	r = expectCode(t, cli.ExitTampered, nil, "field", "verify", "--data", fdir, "--user", "alice", "--code", c0)
	if !strings.Contains(r.stderr, "damaged") {
		t.Errorf("damaged store message:\n%s", r)
	}
	expectCode(t, cli.ExitError, nil, "field", "status", "--data", filepath.Join(tmp, "nowhere"))
}

func TestFieldTOTPWithPINFile(t *testing.T) {
	tmp := t.TempDir()
	fdir := filepath.Join(tmp, "field")
	s, pub := fieldServer(t, tmp)
	mustRun(t, nil, "field", "init", "--data", fdir, "--server-key", pub, "--device-id", "dev-7")
	now := time.Now()
	b := fieldBundle(t, s, tmp, "bob.bundle", func(r *bundle.Request) {
		r.User, r.Params, r.Count, r.From, r.Until, r.PIN = "bob", otp.DefaultTOTP, 0, now.Add(-time.Minute), now.Add(10*time.Minute), "2468"
		r.Secrets = nil
	})
	mustRun(t, nil, "field", "import", "--data", fdir, b)
	code, err := otp.DefaultTOTP.Generate(fieldSeed, 0, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	expectCode(t, cli.ExitUsage, nil, "field", "verify", "--data", fdir, "--user", "bob", "--code", code)
	pin := writeFile(t, tmp, "pin", "2468\n")
	r := mustRun(t, nil, "field", "verify", "--data", fdir, "--user", "bob", "--code", code, "--pin-file", pin, "--json")
	notLeaked(t, r, "2468")
	if !strings.Contains(r.stdout, `"ok": true`) {
		t.Fatalf("verify --json:\n%s", r)
	}
	r = expectCode(t, cli.ExitRefused, nil, "field", "verify", "--data", fdir, "--user", "bob", "--code", code, "--pin-file", pin, "--json")
	if !strings.Contains(r.stdout, `"ok": false`) {
		t.Fatalf("refused verify --json:\n%s", r)
	}
	expectCode(t, cli.ExitUsage, nil, "field", "unlock", "--data", fdir, "--user", "bob", "--code", code, "--pin-file", pin)
}

func TestOfflineCost(t *testing.T) {
	r := mustRun(t, nil, "offline", "cost", "--digits", "6", "--pin-digits", "4", "--duration", "24h")
	for _, want := range []string{"2880 entries", "68 days", "RTX 4090", "H100", "OK"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("cost output lacks %q:\n%s", want, r)
		}
	}
	r = expectCode(t, cli.ExitRefused, nil, "offline", "cost", "--digits", "6", "--entries", "100", "--check")
	if !strings.Contains(r.stdout, "BELOW") || !strings.Contains(r.stderr, "PIN of 4 digits") {
		t.Errorf("below-floor output:\n%s", r)
	}
	r = mustRun(t, nil, "offline", "cost", "--digits", "8", "--entries", "100", "--kdf-memory", "19MiB", "--kdf-time", "2", "--json")
	var out struct {
		Report struct {
			KDF       cost.KDF `json:"kdf"`
			Reference struct {
				PerEntry float64 `json:"per_entry_seconds"`
			} `json:"reference"`
		} `json:"report"`
		Meets bool `json:"meets_floor"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &out); err != nil {
		t.Fatalf("cost --json: %v\n%s", err, r)
	}
	if out.Meets || out.Report.KDF.MemoryKiB != 19<<10 || out.Report.Reference.PerEntry < 11000 || out.Report.Reference.PerEntry > 12000 {
		t.Fatalf("cost --json = %+v", out)
	}
	for _, args := range [][]string{
		{"--digits", "5", "--entries", "10"},
		{"--entries", "10", "--kdf-memory", "lots"},
		{"--entries", "10", "--kdf-memory", "4KiB"},
		{"--entries", "10", "--duration", "1h"},
		{},
	} {
		expectCode(t, cli.ExitUsage, nil, append([]string{"offline", "cost"}, args...)...)
	}
}

func TestBenchOfflineQuick(t *testing.T) {
	r := mustRun(t, nil, "bench", "offline", "--kdf-memory", "256KiB", "--kdf-time", "1", "--entries", "4", "--rounds", "1")
	for _, want := range []string{"Generation", "1 worker", "2 worker", "100-entry HOTP", "1-day 30 s TOTP", "extrapolated", "TOTP, steps -1..+1", "HOTP, look-ahead 4", "bytes/entry", "MiB"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("bench output lacks %q:\n%s", want, r)
		}
	}
	r = mustRun(t, nil, "bench", "offline", "--kdf-memory", "256KiB", "--kdf-time", "1", "--entries", "4", "--rounds", "1", "--no-memory", "--json")
	var out struct {
		Generation []struct {
			EntriesPerS float64 `json:"entries_per_second"`
		} `json:"generation"`
		Sizes []struct {
			PerEntry float64 `json:"bytes_per_entry"`
		} `json:"bundle_size"`
		Verify []struct {
			Calls int `json:"kdf_calls"`
		} `json:"verify"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &out); err != nil {
		t.Fatalf("bench --json: %v\n%s", err, r)
	}
	if len(out.Generation) != 2 || out.Generation[0].EntriesPerS <= 0 || len(out.Sizes) != 2 || out.Sizes[1].PerEntry < 48 || len(out.Verify) != 2 || out.Verify[0].Calls != 3 || out.Verify[1].Calls != 5 {
		t.Fatalf("bench --json = %+v", out)
	}
}
