package online

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/outpost-auth/outpost/internal/audit"
	"github.com/outpost-auth/outpost/internal/eventlog"
	"github.com/outpost-auth/outpost/internal/store"
)

// fakeUseLog is a UseLog of many verify.ok entries of other tokens.
type fakeUseLog struct {
	entries []eventlog.Entry // oldest first
	read    int
}

func (f *fakeUseLog) OfflineUses(realm, user, token string, counter uint64) ([]store.OfflineUse, error) {
	return nil, nil
}

func (f *fakeUseLog) FindAudit(kind, subject string, before uint64, limit int) ([]eventlog.Entry, error) {
	var out []eventlog.Entry
	for i := len(f.entries) - 1; i >= 0 && len(out) < limit; i-- {
		e := f.entries[i]
		if e.Kind == kind && e.Subject == subject && (before == 0 || e.Seq < before) {
			out = append(out, e)
		}
	}
	f.read += len(out)
	return out, nil
}

// okEntry is a verify.ok entry of user u accepting matched for token.
func okEntry(t *testing.T, seq uint64, at time.Time, token string, matched int) eventlog.Entry {
	t.Helper()
	data, err := json.Marshal(map[string]any{"token": token, "matched": matched})
	if err != nil {
		t.Fatal(err)
	}
	return eventlog.Entry{Seq: seq, Time: at, Kind: audit.VerifyOK, Subject: "u", Data: data}
}

// TestFindFirstUseBounded (item 7): the lookup of a replay's first use
// reads at most maxScan verify.ok entries, however long the user's history.
func TestFindFirstUseBounded(t *testing.T) {
	log := &fakeUseLog{}
	at := time.Date(2031, 3, 4, 5, 0, 0, 0, time.UTC)
	for i := range 5000 {
		log.entries = append(log.entries, okEntry(t, uint64(i+1), at, "tok_other", i))
	}
	tok := store.Token{Realm: "r", UserID: "u", ID: "tok_mine", Type: "hotp", Algorithm: "SHA1", Digits: 6}
	if _, found, err := FindFirstUse(log, tok, 7, nil, MaxOnlineScan); err != nil || found {
		t.Fatalf("found %v, %v", found, err)
	}
	if log.read > MaxOnlineScan {
		t.Fatalf("read %d verify.ok entries, at most %d allowed", log.read, MaxOnlineScan)
	}
	// Its own use, recent, is found.
	log.entries = append(log.entries, okEntry(t, 5001, at, "tok_mine", 7))
	fu, found, err := FindFirstUse(log, tok, 7, nil, MaxOnlineScan)
	if err != nil || !found || fu.Where != "online" || fu.AuditSeq != 5001 {
		t.Fatalf("own use: %+v %v %v", fu, found, err)
	}
}
