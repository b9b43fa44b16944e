package notifybench

import (
	"context"
	"io"
	"testing"

	"github.com/outpost-auth/outpost/internal/proctest"
)

// TestRun: a small run against a real SMTP server sends every message,
// alone and through the outbox with two workers.
func TestRun(t *testing.T) {
	smtpd := proctest.StartSMTP(t)
	rep, err := Run(context.Background(), Config{SMTPAddr: smtpd.Addr, Messages: 6, Concurrency: 2, Workers: 2}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Rows) != 2 || rep.Rows[0].PerSec <= 0 || rep.Rows[1].Messages != 6 {
		t.Fatalf("report: %+v", rep)
	}
	if n := len(smtpd.Messages(t)); n != 12 {
		t.Fatalf("%d mails, want 12 (each outbox message once)", n)
	}
}
