package auditcheck

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/outpost-auth/outpost/internal/artifact"
	"github.com/outpost-auth/outpost/internal/audit"
	"github.com/outpost-auth/outpost/internal/keys"
	"github.com/outpost-auth/outpost/internal/store"
	"github.com/outpost-auth/outpost/internal/store/storetest"
)

// t0 is the tests' clock: years ahead, so that no test leans on the wall clock.
var t0 = time.Date(2031, 11, 23, 12, 0, 0, 0, time.UTC)

func fixedClock(t time.Time) func() time.Time { return func() time.Time { return t } }

// engines returns the DSN makers to run a test against: SQLite always,
// PostgreSQL when OUTPOST_TEST_POSTGRES_DSN is set.
func engines() map[string]func(testing.TB) string {
	m := map[string]func(testing.TB) string{"sqlite": storetest.SQLitePath}
	if os.Getenv(storetest.PostgresEnv) != "" {
		m["postgres"] = storetest.PostgresDSN
	}
	return m
}

func newSigner(t testing.TB) *keys.Signer {
	t.Helper()
	m, err := keys.GenerateMaster()
	if err != nil {
		t.Fatal(err)
	}
	return m.Signer(0)
}

// newLog opens an empty store (with newDSN) and a notary over it.
func newLog(t *testing.T, newDSN func(testing.TB) string) (string, store.Store, *Notary) {
	t.Helper()
	dsn := newDSN(t)
	st := storetest.Open(t, dsn)
	return dsn, st, &Notary{Store: st, Signer: newSigner(t), Now: fixedClock(t0)}
}

// record appends n audit entries.
func record(t testing.TB, st store.Store, n int) {
	t.Helper()
	l := &audit.Log{Store: st, Now: fixedClock(t0)}
	for i := range n {
		if err := l.Record(context.Background(), audit.UserCreate, "api:test", fmt.Sprintf("u%d", i), map[string]int{"i": i}); err != nil {
			t.Fatal(err)
		}
	}
}

// TestCheckpointCatchesWhatTheChainCannot: a tail rewritten with every hash
// recomputed, or cut short, passes the plain chain check and fails against
// a checkpoint taken before — on both engines.
func TestCheckpointCatchesWhatTheChainCannot(t *testing.T) {
	cases := []struct {
		name   string
		tamper func(t *testing.T, dsn string, st store.Store)
		// brokenAt is where the check against the checkpoint (at seq 10)
		// breaks; 0 means it passes (a change the checkpoint does not cover).
		brokenAt uint64
		problem  string
	}{
		{"untouched", func(*testing.T, string, store.Store) {}, 0, ""},
		{"rewritten from seq 5", func(t *testing.T, dsn string, st store.Store) { storetest.RewriteAudit(t, dsn, st, 5, `{"forged":1}`) }, 10, "differs from the checkpoint"},
		{"rewritten from the checkpoint's own entry", func(t *testing.T, dsn string, st store.Store) {
			storetest.RewriteAudit(t, dsn, st, 10, `{"forged":1}`)
		}, 10, "differs from the checkpoint"},
		{"cut after seq 7", func(t *testing.T, dsn string, _ store.Store) { storetest.TruncateAudit(t, dsn, 7) }, 8, "cut from its end"},
		{"cut after seq 9", func(t *testing.T, dsn string, _ store.Store) { storetest.TruncateAudit(t, dsn, 9) }, 10, "cut from its end"},
		// Entries after the newest checkpoint are not anchored yet: the
		// export period bounds this window.
		{"rewritten after the checkpoint", func(t *testing.T, dsn string, st store.Store) { storetest.RewriteAudit(t, dsn, st, 11, `{"forged":1}`) }, 0, ""},
		{"cut after the checkpoint", func(t *testing.T, dsn string, _ store.Store) { storetest.TruncateAudit(t, dsn, 10) }, 0, ""},
	}
	for engine, newDSN := range engines() {
		for _, tc := range cases {
			t.Run(engine+"/"+tc.name, func(t *testing.T) {
				ctx := context.Background()
				dsn, st, n := newLog(t, newDSN)
				record(t, st, 10)
				cp, err := n.Checkpoint(ctx)
				if err != nil || cp.Seq != 10 {
					t.Fatalf("checkpoint: seq %d, %v", cp.Seq, err)
				}
				record(t, st, 3)
				tc.tamper(t, dsn, st)

				plain, err := audit.VerifyStore(ctx, st)
				if err != nil || !plain.OK {
					t.Fatalf("the plain chain check should pass (that is the attack): %+v %v", plain, err)
				}
				rep, err := VerifyStore(ctx, st, cp.Checkpoint)
				if err != nil {
					t.Fatal(err)
				}
				if tc.brokenAt == 0 {
					if !rep.OK || rep.Anchored != 10 {
						t.Fatalf("report %+v, want ok, anchored at 10", rep)
					}
					return
				}
				if rep.OK || rep.BrokenAt != tc.brokenAt || !strings.Contains(rep.Problem, tc.problem) {
					t.Fatalf("report %+v, want broken at %d with %q", rep, tc.brokenAt, tc.problem)
				}
			})
		}
	}
}

// TestNotaryRefusesToSignOverARewrite: once the server signed a head, it
// never signs a later head of a log that no longer holds it.
func TestNotaryRefusesToSignOverARewrite(t *testing.T) {
	cases := []struct {
		name   string
		tamper func(t *testing.T, dsn string, st store.Store)
		want   string
	}{
		{"rewritten before the checkpoint", func(t *testing.T, dsn string, st store.Store) { storetest.RewriteAudit(t, dsn, st, 3, `{"forged":1}`) }, "at seq 7"},
		{"rewritten at the checkpoint", func(t *testing.T, dsn string, st store.Store) { storetest.RewriteAudit(t, dsn, st, 7, `{"forged":1}`) }, "at seq 7"},
		{"cut before the checkpoint", func(t *testing.T, dsn string, _ store.Store) { storetest.TruncateAudit(t, dsn, 4) }, "ends before seq 7"},
	}
	for engine, newDSN := range engines() {
		for _, tc := range cases {
			t.Run(engine+"/"+tc.name, func(t *testing.T) {
				ctx := context.Background()
				dsn, st, n := newLog(t, newDSN)
				if _, err := n.Checkpoint(ctx); !errors.Is(err, ErrEmpty) {
					t.Fatalf("empty log: %v, want ErrEmpty", err)
				}
				record(t, st, 5)
				first, err := n.Checkpoint(ctx)
				if err != nil {
					t.Fatal(err)
				}
				if again, err := n.Checkpoint(ctx); err != nil || !bytes.Equal(again.Bytes, first.Bytes) {
					t.Fatalf("an unmoved head was signed again: %v", err)
				}
				record(t, st, 2)
				if second, err := n.Checkpoint(ctx); err != nil || second.Seq != 7 {
					t.Fatalf("second checkpoint: seq %d, %v", second.Seq, err)
				}
				tc.tamper(t, dsn, st)
				record(t, st, 1)
				if _, err := n.Checkpoint(ctx); !errors.Is(err, ErrBroken) || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("signed over it: %v, want ErrBroken with %q", err, tc.want)
				}
				if latest, _ := n.Latest(); latest.Seq != 7 {
					t.Fatalf("latest moved to %d after a refusal", latest.Seq)
				}
			})
		}
	}
}

// TestOpenRefuses: a checkpoint is used only when the server's key signed
// it as a checkpoint with a well-formed body.
func TestOpenRefuses(t *testing.T) {
	server := newSigner(t)
	// The attacker holds some other Ed25519 key (a field device's own key,
	// say) and signs whatever head suits them with it.
	attacker := newSigner(t)
	good := Checkpoint{Seq: 10, Hash: bytes.Repeat([]byte{7}, 32), EntryTime: t0, Count: 10}
	sign := func(s *keys.Signer, c Checkpoint) []byte {
		b, err := Sign(s, c, t0)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	valid := sign(server, good)
	modify := func(c Checkpoint, f func(*Checkpoint)) Checkpoint { f(&c); c.Hash = bytes.Clone(c.Hash); return c }
	otherType, err := artifact.Sign(server, artifact.Header{Type: "bundle", Version: 1, Subject: Subject, NotBefore: t0, NotAfter: t0.Add(time.Hour), Serial: 10}, good)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		data []byte
		want error
	}{
		{"signed by another key", sign(attacker, good), artifact.ErrUnknownKey},
		// The attacker's own signature under the server's key id.
		{"signed by another key under the server's key id", editEnvelope(t, valid, func(env map[string]any, payload []byte) {
			msg := append([]byte("outpost-artifact-v1\x00"+server.KeyID+"\x00"), payload...)
			env["sig"] = attacker.Sign(msg)
		}), artifact.ErrBadSig},
		// A checkpoint moved back to an earlier seq, to cover a cut.
		{"the signed seq changed", editEnvelope(t, valid, func(env map[string]any, payload []byte) {
			env["payload"] = bytes.Replace(payload, []byte(`"seq":10`), []byte(`"seq":7`), 1)
		}), artifact.ErrBadSig},
		{"not base64", bytes.Replace(valid, []byte(`"payload":"`), []byte(`"payload":"!`), 1), artifact.ErrInvalid},
		{"another artifact type", otherType, artifact.ErrWrongType},
		{"seq 0", sign(server, modify(good, func(c *Checkpoint) { c.Seq, c.Count = 0, 0 })), ErrInvalid},
		{"count differs from seq", sign(server, modify(good, func(c *Checkpoint) { c.Count = 9 })), ErrInvalid},
		{"short hash", sign(server, modify(good, func(c *Checkpoint) { c.Hash = c.Hash[:16] })), ErrInvalid},
		{"oversized", append(bytes.Clone(valid), bytes.Repeat([]byte(" "), MaxSize)...), artifact.ErrTooLarge},
		{"trailing data", append(bytes.Clone(valid), []byte(`{}`)...), artifact.ErrInvalid},
	}
	ring := artifact.Keys{server.Public}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Open(tc.data, ring)
			if !errors.Is(err, ErrInvalid) || !errors.Is(err, tc.want) {
				t.Fatalf("Open = %v, want ErrInvalid and %v", err, tc.want)
			}
		})
	}
	s, err := Open(valid, ring)
	if err != nil || s.Seq != 10 || !s.Header.IssuedAt.Equal(t0) {
		t.Fatalf("the valid checkpoint: %+v %v", s, err)
	}
}

// editEnvelope decodes an artifact's envelope, lets edit change it (and see
// the payload), and encodes it again.
func editEnvelope(t *testing.T, data []byte, edit func(env map[string]any, payload []byte)) []byte {
	t.Helper()
	var env map[string]any
	if err := json.Unmarshal(data, &env); err != nil {
		t.Fatal(err)
	}
	payload, err := base64.StdEncoding.DecodeString(env["payload"].(string))
	if err != nil {
		t.Fatal(err)
	}
	edit(env, payload)
	out, err := json.Marshal(env)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestRequestedIsAudited: a checkpoint an admin asks for is recorded in the
// audit log after it (seq and hash of what was signed); a scheduled one
// (Checkpoint) is not, and a refused request records nothing.
func TestRequestedIsAudited(t *testing.T) {
	ctx := context.Background()
	_, st, n := newLog(t, storetest.SQLitePath)
	n.Audit = &audit.Log{Store: st, Now: fixedClock(t0)}
	if _, err := n.Requested(ctx, "api:admin"); !errors.Is(err, ErrEmpty) {
		t.Fatalf("empty log: %v", err)
	}
	record(t, st, 3)
	if _, err := n.Checkpoint(ctx); err != nil {
		t.Fatal(err)
	}
	cp, err := n.Requested(ctx, "api:admin")
	if err != nil {
		t.Fatal(err)
	}
	es, err := st.ListAudit(ctx, 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	var data struct {
		Seq  uint64 `json:"seq"`
		Hash string `json:"hash"`
	}
	last := es[len(es)-1]
	if len(es) != 4 || last.Kind != audit.Checkpoint || last.Actor != "api:admin" || json.Unmarshal(last.Data, &data) != nil ||
		data.Seq != cp.Seq || data.Hash != fmt.Sprintf("%x", cp.Hash) {
		t.Fatalf("%d entries, the last %+v: want the scheduled checkpoint unaudited and the requested one audited", len(es), last)
	}
}
