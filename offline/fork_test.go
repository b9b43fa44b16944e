package offline_test

import (
	"bytes"
	"errors"
	"testing"

	"github.com/outpost-auth/outpost/internal/devicelog"
	"github.com/outpost-auth/outpost/offline"
)

// A bundle names the newest entry of the device's log the server holds; the
// store refuses it when its own log does not hold that very entry (a store
// restored from an older copy, or forked), logs a "fork", and changes no
// token state.
func TestImportRefusesForkedLog(t *testing.T) {
	s, _, _ := newStore(t, quickPolicy)
	r := hotpReq(0, 5)
	r.Serial = 1
	if _, err := s.Import(ctx, issue(t, r)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Verify(ctx, offline.Attempt{User: "alice", Code: hotpCodes(t, 1)[0]}); err != nil {
		t.Fatal(err)
	}
	log, err := devicelog.Since(ctx, s.DB(), 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	head := log[len(log)-1]
	other := bytes.Repeat([]byte{7}, 32)
	tests := []struct {
		name  string
		acked uint64
		hash  []byte
		want  error
	}{
		{"acknowledged beyond this log (restored copy)", head.Seq + 2, other, offline.ErrForkedLog},
		{"another entry at the acknowledged place (fork)", head.Seq, other, offline.ErrForkedLog},
		{"the log's head", head.Seq, head.Hash, nil},
		{"an older entry of this log", 2, log[1].Hash, nil},
		{"nothing acknowledged yet", 0, nil, nil},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req := hotpReq(0, 5)
			req.Serial, req.Acked, req.AckedHash = uint64(10+i), tc.acked, tc.hash
			before := tokenStatus(t, s, "alice")
			n := len(kinds(t, s))
			_, err := s.Import(ctx, issue(t, req))
			if !errors.Is(err, tc.want) || (tc.want == nil) != (err == nil) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
			if tc.want == nil {
				return
			}
			if !errors.Is(err, offline.ErrCorrupt) {
				t.Errorf("a fork is not reported as a damaged store: %v", err)
			}
			if after := tokenStatus(t, s, "alice"); after.Serial != before.Serial || *after.LastUsed != *before.LastUsed {
				t.Fatalf("a refused import changed state: %+v -> %+v", before, after)
			}
			if k := kinds(t, s); len(k) != n+1 || k[n] != "fork" {
				t.Fatalf("log after the refusal: %v", k[n:])
			}
		})
	}
}
