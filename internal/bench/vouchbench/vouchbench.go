// Package vouchbench measures vouch ingest through sync (the first part of
// 'outpost bench onboarding'): vouches per second taken from field
// devices' uploads into the roster by the server's sync path
// (fieldsync.Service.Receive with the roster as its entry sink: signature and chain checks, one transaction per
// upload, each vouch's label decoded again, the serial's vouches read, the
// vouch stored and audited), next to the same path with log entries that
// are not vouches (the sync's own cost) in the same run.
//
// Device logs are generated before timing, as field devices write them:
// hash-chained and signed entry by entry with each device's own key, one
// vouch per device label (P-256 keys, as the default label carries).
package vouchbench

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/outpost-auth/outpost/device"
	"github.com/outpost-auth/outpost/internal/artifact"
	"github.com/outpost-auth/outpost/internal/audit"
	"github.com/outpost-auth/outpost/internal/bench"
	"github.com/outpost-auth/outpost/internal/eventlog"
	"github.com/outpost-auth/outpost/internal/fieldsync"
	"github.com/outpost-auth/outpost/internal/keys"
	"github.com/outpost-auth/outpost/internal/roster"
	"github.com/outpost-auth/outpost/internal/store"
	"github.com/outpost-auth/outpost/internal/syncproto"
	"github.com/outpost-auth/outpost/internal/vouchwire"
)

// Config of one run.
type Config struct {
	// DSN of the store; empty uses a SQLite file in a temporary directory.
	// A PostgreSQL DSN gets a scratch schema, dropped afterwards.
	DSN string
	// Vouches in uploads of Batch entries, from Devices staff devices at once.
	Vouches int
	Batch   int
	Devices int
}

// Defaults: a purchase order's worth of devices vouched by a few installers.
var Defaults = Config{Vouches: 4000, Batch: 100, Devices: 4}

// Row is one measured workload.
type Row struct {
	Engine string `json:"engine"`
	// Workload is "vouch" (vouches into the roster) or "plain" (the same
	// number of log entries that are not vouches: the sync alone).
	Workload string        `json:"workload"`
	Entries  int           `json:"entries"`
	Batch    int           `json:"batch"`
	Devices  int           `json:"devices"`
	Wall     time.Duration `json:"wall_ns"`
	Rate     float64       `json:"entries_per_second"`
	// Stored is how many vouches the roster holds after the run (vouch only).
	Stored int `json:"stored,omitempty"`
}

// Check bounds a Config.
func (c Config) Check() error {
	if c.Vouches < 1 || c.Devices < 1 || c.Vouches < c.Devices || c.Batch < 1 || c.Batch > 10000 {
		return fmt.Errorf("vouchbench: vouches at least devices (at least 1), batch 1 to 10000")
	}
	return nil
}

// Run measures one store: the "plain" row, then the "vouch" row.
func Run(ctx context.Context, cfg Config, progress io.Writer) ([]Row, error) {
	if err := cfg.Check(); err != nil {
		return nil, err
	}
	st, done, err := bench.OpenStore(ctx, cfg.DSN, "outpost_bench_vouch")
	if err != nil {
		return nil, err
	}
	defer done()
	m, err := keys.GenerateMaster()
	if err != nil {
		return nil, err
	}
	const realm = "bench"
	if err := st.CreateRealm(ctx, store.Realm{ID: realm, Name: "Bench"}); err != nil {
		return nil, err
	}
	rs := &roster.Service{Store: st.(store.RosterStore)}
	svc := &fieldsync.Service{Store: st, Sync: st.(store.SyncStore), Audit: &audit.Log{Store: st}, Signer: m.Signer(0), Entries: rs}
	say := func(format string, a ...any) {
		fmt.Fprintf(progress, "[%s] "+format+"\n", append([]any{st.Engine()}, a...)...)
	}
	per := cfg.Vouches / cfg.Devices
	var rows []Row
	for _, w := range []string{"plain", "vouch"} {
		say("preparing %d devices with %d %s entries each", cfg.Devices, per, w)
		uploads := make([][][]byte, cfg.Devices)
		for i := range cfg.Devices {
			id := fmt.Sprintf("%s-%d", w, i)
			d, err := newDevice(ctx, st.(store.SyncStore), realm, id)
			if err != nil {
				return nil, err
			}
			if _, err := rs.Allow(ctx, realm, id, true, "bench"); err != nil {
				return nil, err
			}
			if uploads[i], err = d.uploads(w, per, cfg.Batch); err != nil {
				return nil, err
			}
		}
		say("ingesting %d %s entries in uploads of %d", per*cfg.Devices, w, cfg.Batch)
		errs := make([]error, cfg.Devices)
		start := time.Now()
		bench.Parallel(cfg.Devices, func(i int) {
			for _, up := range uploads[i] {
				if _, err := svc.Receive(ctx, up, "bench"); err != nil {
					errs[i] = err
					return
				}
			}
		})
		wall := time.Since(start)
		for _, err := range errs {
			if err != nil {
				return nil, fmt.Errorf("vouchbench: a sync failed: %w", err)
			}
		}
		row := Row{Engine: st.Engine(), Workload: w, Entries: per * cfg.Devices, Batch: cfg.Batch, Devices: cfg.Devices, Wall: wall,
			Rate: float64(per*cfg.Devices) / wall.Seconds()}
		if w == "vouch" {
			es, err := rs.List(ctx, realm, "", store.MaxListLimit)
			for err == nil && len(es) > 0 {
				row.Stored += len(es)
				es, err = rs.List(ctx, realm, es[len(es)-1].Serial, store.MaxListLimit)
			}
			if err != nil {
				return nil, err
			}
			if row.Stored != row.Entries {
				return nil, fmt.Errorf("vouchbench: %d vouches sent, the roster holds %d", row.Entries, row.Stored)
			}
		}
		rows = append(rows, row)
	}
	return rows, nil
}

// staff is a registered field device with its own key and log.
type staff struct {
	id     string
	signer *keys.Signer
	prev   *eventlog.Entry
	serial uint64
}

func newDevice(ctx context.Context, ss store.SyncStore, realm, id string) (*staff, error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	kid := keys.KeyID(pub)
	if err := ss.CreateDevice(ctx, store.Device{Realm: realm, ID: id, Status: store.DeviceActive, PublicKey: pub, KeyID: kid}); err != nil {
		return nil, err
	}
	return &staff{id: id, signer: &keys.Signer{Private: priv, Public: pub, KeyID: kid}}, nil
}

// uploads writes n entries of workload w to the device's log and cuts them
// into signed uploads of batch entries.
func (d *staff) uploads(w string, n, batch int) ([][]byte, error) {
	now := time.Now()
	var out [][]byte
	for from := 0; from < n; from += batch {
		after := uint64(0)
		if d.prev != nil {
			after = d.prev.Seq
		}
		var es []eventlog.Entry
		for i := from; i < min(n, from+batch); i++ {
			kind, subject, data, err := entryData(w, d.id, i)
			if err != nil {
				return nil, err
			}
			e, err := eventlog.Next(d.prev, eventlog.Entry{Time: now, Kind: kind, Actor: d.id, Subject: subject, Data: data}, d.signer.Private)
			if err != nil {
				return nil, err
			}
			es = append(es, e)
			d.prev = &es[len(es)-1]
		}
		d.serial++
		u := syncproto.Upload{Device: d.id, After: after, Entries: es, Head: d.prev.Seq, HeadHash: d.prev.Hash, Tokens: []syncproto.TokenState{}}
		up, err := artifact.Sign(d.signer, artifact.Header{Type: syncproto.UploadType, Version: syncproto.UploadVersion, Subject: d.id,
			Serial: d.serial, IssuedAt: time.Now(), NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}, u)
		if err != nil {
			return nil, err
		}
		out = append(out, up)
	}
	return out, nil
}

// entryData is entry i of a device's log: a vouch for a new device, or a
// plain note of the same size class.
func entryData(w, staffID string, i int) (kind, subject string, data []byte, err error) {
	serial := fmt.Sprintf("SN-%s-%06d", staffID, i)
	if w == "plain" {
		data, err = json.Marshal(map[string]any{"note": serial})
		return "note", serial, data, err
	}
	key, err := device.GenerateKey(device.P256)
	if err != nil {
		return "", "", nil, err
	}
	l, err := device.NewLabel(serial, "gw-100", key.Public())
	if err != nil {
		return "", "", nil, err
	}
	p, err := l.Payload()
	if err != nil {
		return "", "", nil, err
	}
	v, err := vouchwire.New(p, "site-1", "52.1,4.3")
	if err != nil {
		return "", "", nil, err
	}
	data, err = v.Marshal()
	return vouchwire.Kind, serial, data, err
}
