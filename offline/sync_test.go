package offline_test

import (
	"errors"
	"testing"
	"time"

	"github.com/outpost-auth/outpost/internal/artifact"
	"github.com/outpost-auth/outpost/internal/devicelog"
	"github.com/outpost-auth/outpost/internal/keys"
	"github.com/outpost-auth/outpost/internal/syncproto"
	"github.com/outpost-auth/outpost/offline"
)

// answer signs a sync answer to upload serial as server s, issued at
// issued and valid for an hour from valid (the device's clock).
func answer(t *testing.T, s *keys.Signer, serial uint64, issued, valid time.Time, r syncproto.Response) []byte {
	t.Helper()
	data, err := artifact.Sign(s, artifact.Header{Type: syncproto.ResponseType, Version: 1, Subject: r.Device, Serial: serial,
		IssuedAt: issued, NotBefore: valid.Add(-time.Minute), NotAfter: valid.Add(time.Hour)}, r)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func TestPrepareUpload(t *testing.T) {
	s, c, _ := newStore(t, quickPolicy)
	if _, err := s.Import(ctx, issue(t, hotpReq(1, 10))); err != nil {
		t.Fatal(err)
	}
	up, info, err := s.PrepareUpload(ctx, offline.UploadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	h, body, err := artifact.Verify(up, artifact.Keys{s.DevicePublicKey()}, artifact.Expect{Type: syncproto.UploadType, Subject: "dev-1", Now: c.Now()})
	if err != nil {
		t.Fatal(err)
	}
	u, err := syncproto.DecodeUpload(body)
	if err != nil {
		t.Fatal(err)
	}
	if h.Serial != 1 || info.Serial != 1 || u.After != 0 || len(u.Entries) != 2 || u.Head != 2 || info.More {
		t.Fatalf("upload serial %d, after %d, %d entries, head %d, info %+v", h.Serial, u.After, len(u.Entries), u.Head, info)
	}
	if got := h.NotAfter.Sub(h.IssuedAt); got != syncproto.OnlineValidity {
		t.Errorf("validity %v", got)
	}
	if len(u.Tokens) != 1 || u.Tokens[0].Type != "hotp" || u.Tokens[0].First != 1 || u.Tokens[0].Last != 10 || u.Tokens[0].LastUsed != -1 ||
		u.Tokens[0].Secrets != 1 || u.Tokens[0].Remaining != 10 {
		t.Errorf("token state %+v", u.Tokens)
	}
	// Every upload takes a new serial, even if the last one never left.
	_, info, err = s.PrepareUpload(ctx, offline.UploadOptions{Validity: syncproto.FileValidity, MaxEntries: 1})
	if err != nil || info.Serial != 2 || info.Entries != 1 || !info.More {
		t.Fatalf("second upload %+v %v", info, err)
	}
	if _, _, err := s.PrepareUpload(ctx, offline.UploadOptions{Validity: 365 * 24 * time.Hour}); err == nil {
		t.Error("an upload valid for a year was made")
	}
}

// ApplyResponse refuses answers that are not for this store, and applies a
// good one: the acknowledgement, the state, the revocations.
func TestApplyResponse(t *testing.T) {
	s, c, _ := newStore(t, quickPolicy)
	if _, err := s.Import(ctx, issue(t, hotpReq(1, 10))); err != nil {
		t.Fatal(err)
	}
	_, info, err := s.PrepareUpload(ctx, offline.UploadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	log, err := devicelog.Since(ctx, s.DB(), 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	head := log[len(log)-1]
	key := syncproto.TokenKey{Realm: "acme", User: "alice", Token: "tok-1"}
	good := syncproto.Response{Device: "dev-1", UploadSerial: info.Serial, Acked: head.Seq, AckedHash: head.Hash,
		Tokens: []syncproto.ServerToken{{TokenKey: key, Status: syncproto.StatusActive, LastUsed: 4}}}
	now := c.Now()
	bad := func(name string, data []byte, want error) {
		t.Helper()
		if _, err := s.ApplyResponse(ctx, data); err == nil || (want != nil && !errors.Is(err, want)) {
			t.Errorf("%s: %v, want %v", name, err, want)
		}
	}
	other := good
	other.Device = "dev-2"
	bad("another server's key", answer(t, otherSigner(t), info.Serial, now, now, good), artifact.ErrUnknownKey)
	bad("another device", answer(t, testSigner(t), info.Serial, now, now, other), artifact.ErrWrongBound)
	bad("a future upload", answer(t, testSigner(t), info.Serial+1, now, now, func() syncproto.Response { r := good; r.UploadSerial++; return r }()), offline.ErrSyncMismatch)
	wrong := good
	wrong.AckedHash = make([]byte, 32)
	bad("another log", answer(t, testSigner(t), info.Serial, now, now, wrong), offline.ErrSyncMismatch)
	beyond := good
	beyond.Acked = head.Seq + 5
	bad("entries this log does not have", answer(t, testSigner(t), info.Serial, now, now, beyond), offline.ErrSyncMismatch)
	bad("expired", answer(t, testSigner(t), info.Serial, now, now.Add(-3*time.Hour), good), artifact.ErrExpired)
	data := answer(t, testSigner(t), info.Serial, now, now, good)
	bad("truncated", data[:len(data)/2], artifact.ErrInvalid)
	if st := tokenStatus(t, s, "alice"); st.LastUsed != nil {
		t.Fatalf("a refused answer changed the state: %+v", st)
	}

	rep, err := s.ApplyResponse(ctx, data)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Acked != head.Seq || len(rep.Advanced) != 1 {
		t.Fatalf("report %+v", rep)
	}
	if st := tokenStatus(t, s, "alice"); st.LastUsed == nil || *st.LastUsed != 4 {
		t.Fatalf("state after the answer: %+v", st)
	}
	if _, err := s.ApplyResponse(ctx, data); !errors.Is(err, offline.ErrStaleResponse) {
		t.Errorf("the same answer again: %v", err)
	}
	st, err := s.SyncState(ctx)
	if err != nil || st.Acked != head.Seq || st.ResponseSerial != info.Serial {
		t.Fatalf("sync state %+v %v", st, err)
	}

	// A revocation deletes bundles issued before the answer, not one imported since.
	if _, info, err = s.PrepareUpload(ctx, offline.UploadOptions{}); err != nil {
		t.Fatal(err)
	}
	revoked := syncproto.Response{Device: "dev-1", UploadSerial: info.Serial, Acked: head.Seq, AckedHash: head.Hash,
		Tokens: []syncproto.ServerToken{{TokenKey: key, Status: syncproto.StatusDisabled, LastUsed: 4}}}
	old := answer(t, testSigner(t), info.Serial, t0.Add(-time.Hour), now, revoked)
	rep, err = s.ApplyResponse(ctx, old)
	if err != nil || len(rep.Revoked) != 0 {
		t.Fatalf("an answer older than the bundle revoked it: %+v %v", rep, err)
	}
	if _, info, err = s.PrepareUpload(ctx, offline.UploadOptions{}); err != nil {
		t.Fatal(err)
	}
	revoked.UploadSerial = info.Serial
	rep, err = s.ApplyResponse(ctx, answer(t, testSigner(t), info.Serial, t0.Add(time.Minute), now, revoked))
	if err != nil || len(rep.Revoked) != 1 {
		t.Fatalf("revocation: %+v %v", rep, err)
	}
	if _, err := s.Verify(ctx, offline.Attempt{User: "alice", Code: hotpCodes(t, 6)[5]}); !errors.Is(err, offline.ErrWiped) {
		t.Fatalf("verify after revocation: %v", err)
	}
	if k := kinds(t, s); k[len(k)-1] != "revoke" && k[len(k)-2] != "revoke" {
		t.Errorf("log kinds %v", k)
	}
}
