package devicelog

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/outpost-auth/outpost/internal/eventlog"
	"github.com/outpost-auth/outpost/internal/sqlitedb"
)

func openDB(t *testing.T, path string) *sql.DB {
	t.Helper()
	db, err := sqlitedb.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if err := Migrate(context.Background(), db); err != nil {
		t.Fatal(err)
	}
	return db
}

func appendN(t *testing.T, db *sql.DB, key ed25519.PrivateKey, n int) []eventlog.Entry {
	t.Helper()
	ctx := context.Background()
	var out []eventlog.Entry
	for i := range n {
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		e, err := Append(ctx, tx, key, eventlog.Entry{
			Time: time.Date(2026, 3, 1, 12, 0, i, 123456789, time.UTC), Kind: "verify.ok",
			Actor: "site-1", Subject: fmt.Sprintf("tech-%d", i), Data: json.RawMessage(`{"step":` + fmt.Sprint(i) + `}`),
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
		out = append(out, e)
	}
	return out
}

func TestAppendSinceLastVerify(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "site.db")
	db := openDB(t, path)
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)

	if l, err := Last(ctx, db); err != nil || l != nil {
		t.Fatalf("Last on empty log = %v, %v", l, err)
	}
	if bad, err := Verify(ctx, db, pub); err != nil || bad != 0 {
		t.Fatalf("Verify empty = %d, %v", bad, err)
	}
	written := appendN(t, db, priv, 25)
	if written[0].Seq != 1 || written[24].Seq != 25 {
		t.Fatalf("seqs %d..%d", written[0].Seq, written[24].Seq)
	}
	// Reopen the file: everything must come back byte for byte.
	db.Close()
	db = openDB(t, path)
	got, err := Since(ctx, db, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 25 {
		t.Fatalf("Since returned %d entries", len(got))
	}
	for i := range got {
		a, errA := json.Marshal(got[i])
		b, errB := json.Marshal(written[i])
		if errA != nil || errB != nil || string(a) != string(b) {
			t.Fatalf("entry %d round trip:\n got %s\nwant %s", i, a, b)
		}
	}
	if _, err := eventlog.VerifyChain(nil, got, pub); err != nil {
		t.Fatal(err)
	}
	page, err := Since(ctx, db, 10, 5)
	if err != nil || len(page) != 5 || page[0].Seq != 11 {
		t.Fatalf("Since(10, 5) = %d entries from %v, %v", len(page), page[0].Seq, err)
	}
	if l, err := Last(ctx, db); err != nil || l.Seq != 25 {
		t.Fatalf("Last = %+v, %v", l, err)
	}
	if bad, err := Verify(ctx, db, pub); err != nil || bad != 0 {
		t.Fatalf("Verify = %d, %v", bad, err)
	}
	otherPub, _, _ := ed25519.GenerateKey(rand.Reader)
	if bad, err := Verify(ctx, db, otherPub); !errors.Is(err, eventlog.ErrBroken) || bad != 1 {
		t.Fatalf("Verify with another device's key = %d, %v", bad, err)
	}
}

func TestAppendRollsBackWithTheTransaction(t *testing.T) {
	ctx := context.Background()
	db := openDB(t, filepath.Join(t.TempDir(), "d.db"))
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	appendN(t, db, priv, 2)
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Append(ctx, tx, priv, eventlog.Entry{Kind: "verify.fail", Time: testTime}); err != nil {
		t.Fatal(err)
	}
	if err := tx.Rollback(); err != nil {
		t.Fatal(err)
	}
	if l, err := Last(ctx, db); err != nil || l.Seq != 2 {
		t.Fatalf("rolled-back append is visible: last seq %d", l.Seq)
	}
	appendN(t, db, priv, 1)
	if bad, err := Verify(ctx, db, pub); err != nil {
		t.Fatalf("Verify = %d, %v", bad, err)
	}
}

func TestAppendRejectsBadEntries(t *testing.T) {
	ctx := context.Background()
	db := openDB(t, filepath.Join(t.TempDir(), "d.db"))
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	for name, tc := range map[string]struct {
		key ed25519.PrivateKey
		e   eventlog.Entry
	}{
		"no key":       {nil, eventlog.Entry{Kind: "x"}},
		"no kind":      {priv, eventlog.Entry{}},
		"invalid json": {priv, eventlog.Entry{Kind: "x", Data: json.RawMessage(`{`)}},
		"long subject": {priv, eventlog.Entry{Kind: "x", Subject: strings.Repeat("s", eventlog.MaxSubjectLen+1)}},
	} {
		t.Run(name, func(t *testing.T) {
			tx, err := db.BeginTx(ctx, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer tx.Rollback()
			if _, err := Append(ctx, tx, tc.key, tc.e); err == nil {
				t.Fatal("Append accepted it")
			}
		})
	}
}

func TestTriggersRefuseUpdateAndDelete(t *testing.T) {
	db := openDB(t, filepath.Join(t.TempDir(), "d.db"))
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	appendN(t, db, priv, 3)
	for _, q := range []string{`UPDATE device_log SET kind = 'x' WHERE seq = 2`, `DELETE FROM device_log WHERE seq = 3`} {
		if _, err := db.Exec(q); err == nil || !strings.Contains(err.Error(), "append-only") {
			t.Errorf("%s: err = %v, want append-only refusal", q, err)
		}
	}
}

// TestTamperDetection edits the real SQLite file the way an attacker with
// write access would (dropping the triggers first) and checks that Verify
// names the first bad entry.
func TestTamperDetection(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name    string
		sql     []string
		wantBad uint64
	}{
		{"altered subject", []string{`UPDATE device_log SET subject = 'tech-99' WHERE seq = 4`}, 4},
		{"altered data", []string{`UPDATE device_log SET data = CAST('{"step":0}' AS BLOB) WHERE seq = 7`}, 7},
		{"altered time", []string{`UPDATE device_log SET time_us = time_us + 1 WHERE seq = 1`}, 1},
		{"signature copied from another entry",
			[]string{`UPDATE device_log SET sig = (SELECT sig FROM device_log WHERE seq = 2) WHERE seq = 3`}, 3},
		{"entry removed", []string{`DELETE FROM device_log WHERE seq = 5`}, 6},
		{"first entry removed", []string{`DELETE FROM device_log WHERE seq = 1`}, 2},
		{"entries swapped", []string{
			`UPDATE device_log SET seq = 100 WHERE seq = 3`,
			`UPDATE device_log SET seq = 3 WHERE seq = 4`,
			`UPDATE device_log SET seq = 4 WHERE seq = 100`}, 3},
		{"signature stripped", []string{`UPDATE device_log SET sig = NULL WHERE seq = 8`}, 8},
		{"entry inserted", []string{`INSERT INTO device_log SELECT 11, time_us, kind, actor, subject, data, prev, hash, sig FROM device_log WHERE seq = 10`}, 11},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "site.db")
			db := openDB(t, path)
			pub, priv, _ := ed25519.GenerateKey(rand.Reader)
			appendN(t, db, priv, 10)
			db.Close()

			raw, err := sqlitedb.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			for _, q := range append([]string{`DROP TRIGGER device_log_no_update`, `DROP TRIGGER device_log_no_delete`}, tc.sql...) {
				if _, err := raw.Exec(q); err != nil {
					t.Fatalf("%s: %v", q, err)
				}
			}
			raw.Close()

			db = openDB(t, path)
			bad, err := Verify(ctx, db, pub)
			if !errors.Is(err, eventlog.ErrBroken) || bad != tc.wantBad {
				t.Fatalf("Verify = %d, %v; want %d and ErrBroken", bad, err, tc.wantBad)
			}
		})
	}
}

func TestConcurrentAppendersKeepOneChain(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "d.db")
	db := openDB(t, path)
	db2 := openDB(t, path) // a second pool on the same file, as a second process would be
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	var wg sync.WaitGroup
	errs := make(chan error, 40)
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d := db
			if w%2 == 1 {
				d = db2
			}
			for range 5 {
				tx, err := d.BeginTx(ctx, nil)
				if err != nil {
					errs <- err
					return
				}
				if _, err := Append(ctx, tx, priv, eventlog.Entry{Kind: "verify.ok", Time: testTime}); err != nil {
					tx.Rollback()
					errs <- err
					return
				}
				if err := tx.Commit(); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if l, err := Last(ctx, db); err != nil || l.Seq != 40 {
		t.Fatalf("last seq %d, want 40", l.Seq)
	}
	if bad, err := Verify(ctx, db, pub); err != nil {
		t.Fatalf("Verify = %d, %v", bad, err)
	}
}

func TestIdentity(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "sdir")
	a, err := LoadOrCreateIdentity(dir)
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(filepath.Join(dir, IdentityFile))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v, %v", st.Mode().Perm(), err)
	}
	b, err := LoadOrCreateIdentity(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !a.Public.Equal(b.Public) || a.KeyID != b.KeyID || !strings.HasPrefix(a.KeyID, "ed25519:") {
		t.Fatalf("second load gave another key: %s vs %s", a.KeyID, b.KeyID)
	}
	msg := []byte("hello")
	if !ed25519.Verify(a.Public, msg, ed25519.Sign(b.Private, msg)) {
		t.Fatal("private and public halves do not match")
	}

	if path, err := exec.LookPath("openssl"); err == nil {
		out, err := exec.Command(path, "pkey", "-in", filepath.Join(dir, IdentityFile), "-noout", "-text").CombinedOutput()
		if err != nil || !strings.Contains(string(out), "ED25519") {
			t.Fatalf("openssl cannot read the key file: %v\n%s", err, out)
		}
	} else if os.Getenv("OUTPOST_REQUIRE_INTEROP") == "1" {
		t.Fatal("openssl is not installed (OUTPOST_REQUIRE_INTEROP=1)")
	}

	if err := os.Chmod(filepath.Join(dir, IdentityFile), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadOrCreateIdentity(dir); !errors.Is(err, ErrBadIdentity) || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("world-readable key: err = %v", err)
	}
}

func TestIdentityBadFiles(t *testing.T) {
	for name, content := range map[string]string{
		"empty":       "",
		"not pem":     "hello\n",
		"public key":  "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=\n-----END PUBLIC KEY-----\n",
		"garbage der": "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
		"trailing":    "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEINTuctv5E1hK1bbY8fdp+K06/nwoy/HU++CXqI9EdVhC\n-----END PRIVATE KEY-----\nextra",
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, IdentityFile), []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
			if _, err := LoadOrCreateIdentity(dir); !errors.Is(err, ErrBadIdentity) {
				t.Fatalf("err = %v, want ErrBadIdentity", err)
			}
		})
	}
}

func FuzzParseIdentity(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		id, err := parseIdentity(data)
		if err != nil {
			return
		}
		msg := []byte("m")
		if len(id.Public) != ed25519.PublicKeySize || !ed25519.Verify(id.Public, msg, ed25519.Sign(id.Private, msg)) {
			t.Fatalf("accepted a key whose halves do not match")
		}
	})
}

// testTime stamps entries whose time does not matter to a test.
var testTime = time.Date(2031, 2, 3, 4, 5, 6, 0, time.UTC)
