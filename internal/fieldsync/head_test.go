package fieldsync_test

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/outpost-auth/outpost/internal/fieldsync"
	"github.com/outpost-auth/outpost/internal/store"
	"github.com/outpost-auth/outpost/internal/syncproto"
)

// Every upload states the device log's head (sequence number and hash),
// even without entries, and the server compares it with the entry it
// acknowledged: a head at the acknowledged number with another hash is a
// rewritten log, and a head hash that is not the upload's last entry's is a
// broken chain. Each is refused, recorded as an incident, and changes nothing.
func TestHeadComparedAtEverySync(t *testing.T) {
	forEngine(t, func(t *testing.T, h *harness) {
		d := h.device("dev-1")
		d.bundle(1, 20, nil)
		must(t, d.verify(1))
		_, res := d.sync()
		acked := res.Response.Acked
		hdr, idle := d.decodeUpload(d.upload()) // nothing new: no entries, head = acked
		if len(idle.Entries) != 0 || idle.Head != acked || !bytes.Equal(idle.HeadHash, res.Response.AckedHash) {
			t.Fatalf("idle upload: %d entries, head %d %x; acked %d", len(idle.Entries), idle.Head, idle.HeadHash, acked)
		}
		must(t, d.verify(2))
		_, busy := d.decodeUpload(d.upload())
		serial := hdr.Serial + 2
		dev0, used0 := state(t, h), h.lastUsed()
		other := bytes.Repeat([]byte{0x5a}, 32)
		for _, tc := range []struct {
			name     string
			u        syncproto.Upload
			want     error
			incident string
		}{
			{"restored and used since: another entry at the acknowledged head", withHeadHash(idle, other), fieldsync.ErrRewritten, fieldsync.IncidentRewritten},
			{"a head hash that is not the last entry's", withHeadHash(busy, other), fieldsync.ErrBrokenChain, fieldsync.IncidentBrokenChain},
		} {
			n := len(h.audit(fieldsync.KindIncident))
			_, err := h.svc.Receive(ctx, d.craft(serial, tc.u), "test")
			serial++
			if !errors.Is(err, tc.want) {
				t.Fatalf("%s: %v, want %v", tc.name, err, tc.want)
			}
			if dev := state(t, h); dev.AckedSeq != dev0.AckedSeq || dev.UploadSerial != dev0.UploadSerial || h.lastUsed() != used0 {
				t.Fatalf("%s changed state: %+v, last used %d", tc.name, dev, h.lastUsed())
			}
			es := h.audit(fieldsync.KindIncident)
			if len(es) != n+1 || !strings.Contains(string(es[n].Data), `"incident":"`+tc.incident+`"`) {
				t.Fatalf("%s: incidents %d -> %d", tc.name, n, len(es))
			}
		}
		// The honest uploads still go through.
		if _, err := h.svc.Receive(ctx, d.craft(serial, idle), "test"); err != nil {
			t.Fatalf("honest idle upload: %v", err)
		}
		if _, err := h.svc.Receive(ctx, d.craft(serial+1, busy), "test"); err != nil {
			t.Fatalf("honest upload: %v", err)
		}
	})
}

func withHeadHash(u syncproto.Upload, hash []byte) syncproto.Upload {
	u.HeadHash = hash
	return u
}

func state(t *testing.T, h *harness) store.Device {
	t.Helper()
	dev, err := h.ss.GetDevice(ctx, "dev-1")
	must(t, err)
	return dev
}
