package keyexport

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/outpost-auth/outpost/internal/audit"
	"github.com/outpost-auth/outpost/internal/keys"
	"github.com/outpost-auth/outpost/internal/store/storetest"
	"github.com/outpost-auth/outpost/otp"
)

var testKDF = keys.KDFParams{Time: 1, MemoryKiB: 8 << 10, Threads: 1}

func TestCheckPassphrase(t *testing.T) {
	master := []byte("the master passphrase")
	tests := []struct {
		name string
		pass []byte
		want error
	}{
		{"good", []byte("a file passphrase"), nil},
		{"empty", nil, keys.ErrWeakPassphrase},
		{"seven", []byte("1234567"), keys.ErrWeakPassphrase},
		{"huge", bytes.Repeat([]byte("p"), MaxPassphraseLen+1), ErrInvalid},
		{"master", []byte("the master passphrase"), ErrMasterPassphrase},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := CheckPassphrase(tc.pass, master); !errors.Is(err, tc.want) || (tc.want == nil) != (err == nil) {
				t.Fatalf("CheckPassphrase = %v, want %v", err, tc.want)
			}
		})
	}
	if err := CheckPassphrase(master, nil); err != nil {
		t.Fatalf("without a known master passphrase: %v", err)
	}
}

func TestCheckSubject(t *testing.T) {
	for _, s := range []string{"", "a\nb", "tab\there", string([]byte{0xff}), strings.Repeat("s", MaxSubjectLen+1)} {
		if err := CheckSubject(s); !errors.Is(err, ErrInvalid) {
			t.Errorf("CheckSubject(%q) = %v", s, err)
		}
	}
	for _, s := range []string{"tech-042", "Zoë", strings.Repeat("s", MaxSubjectLen)} {
		if err := CheckSubject(s); err != nil {
			t.Errorf("CheckSubject(%q) = %v", s, err)
		}
	}
}

// TestExportSubject: the file holds the derived key with its TOTP
// parameters, and key.export is recorded without the key or passphrase.
func TestExportSubject(t *testing.T) {
	ctx := context.Background()
	st := storetest.Open(t, storetest.SQLitePath(t))
	m, _ := keys.MasterFromBytes(bytes.Repeat([]byte{3}, 32))
	now := time.Date(2026, 3, 10, 12, 0, 0, 0, time.UTC)
	x := &Exporter{Master: m, Audit: &audit.Log{Store: st}, KDF: testKDF, Now: func() time.Time { return now }}
	pass := []byte("subject file passphrase")
	f, err := x.ExportSubject(ctx, "api:c1", "tech-042", 4, pass)
	if err != nil {
		t.Fatal(err)
	}
	s, secret, err := keys.Open(pass, f.Data)
	want := m.Derive(SubjectKeySize, keys.PurposeSubject, 4, "tech-042")
	if err != nil || !bytes.Equal(secret, want) || s.Subject != "tech-042" || s.Epoch != 4 || !s.Created.Equal(now) || s.Meta["issuer"] != "Outpost" {
		t.Fatalf("key file %+v, %v", s, err)
	}
	p, err := TOTPFromMeta(s.Meta)
	if err != nil || p != SubjectTOTP {
		t.Fatalf("TOTP parameters %+v, %v", p, err)
	}
	if f.Fingerprint != Fingerprint(want) || f.Purpose != "subject-key" {
		t.Fatalf("file %+v", f)
	}
	es, _ := st.ListAudit(ctx, 0, 10)
	if len(es) != 1 || es[0].Kind != audit.KeyExport || es[0].Actor != "api:c1" || es[0].Subject != "tech-042" ||
		!strings.Contains(string(es[0].Data), f.Fingerprint) {
		t.Fatalf("audit %+v", es)
	}
	for _, secretText := range []string{string(pass), otp.EncodeSecret(want)} {
		if strings.Contains(string(es[0].Data), secretText) {
			t.Fatalf("the audit entry holds a secret: %s", es[0].Data)
		}
	}
	// Refused requests record nothing.
	if _, err := x.ExportSubject(ctx, "api:c1", "", 0, pass); !errors.Is(err, ErrInvalid) {
		t.Fatalf("empty subject: %v", err)
	}
	x.MasterPassphrase = pass
	if _, err := x.ExportSubject(ctx, "api:c1", "tech-1", 0, pass); !errors.Is(err, ErrMasterPassphrase) {
		t.Fatalf("master passphrase: %v", err)
	}
	if es, _ := st.ListAudit(ctx, 0, 10); len(es) != 1 {
		t.Fatalf("refused exports were recorded: %d entries", len(es))
	}
}
