package delivery

import (
	"bytes"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/outpost-auth/outpost/internal/audit"
	"github.com/outpost-auth/outpost/internal/codecheck"
	"github.com/outpost-auth/outpost/internal/deliverycode"
	"github.com/outpost-auth/outpost/internal/deliverytoken"
	"github.com/outpost-auth/outpost/internal/proctest"
	"github.com/outpost-auth/outpost/internal/qr"
	"github.com/outpost-auth/outpost/internal/store"
	"github.com/outpost-auth/outpost/internal/store/storetest"
)

// perEngine runs fn against a fresh service on each engine.
func perEngine(t *testing.T, fn func(t *testing.T, svc *Service, st store.Store, now *time.Time)) {
	for name, dsn := range engines() {
		t.Run(name, func(t *testing.T) {
			now := t0
			svc, st := newService(t, dsn(t), &now)
			fn(t, svc, st, &now)
		})
	}
}

// wrongCode returns a well-formed code that is not code.
func wrongCode(t *testing.T, code string) string {
	for {
		c, err := deliverycode.New(deliverycode.DefaultDigits)
		if err != nil {
			t.Fatal(err)
		}
		if c != code {
			return c
		}
	}
}

// typo changes code's first digit: the check digit catches it.
func typo(code string) string {
	b := []byte(code)
	b[0] = '0' + (b[0]-'0'+1)%10
	return string(b)
}

func auditOf(t *testing.T, st store.Store) (kinds []string, data []string) {
	t.Helper()
	es, err := st.ListAudit(ctx, 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range es {
		kinds = append(kinds, e.Kind)
		data = append(data, string(e.Data))
	}
	return kinds, data
}

func attempts(t *testing.T, svc *Service, id string, version uint32) int {
	t.Helper()
	n, err := svc.Store.(store.DeliveryAttemptStore).DeliveryAttempts(ctx, "r1", id, version)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestConfirm(t *testing.T) {
	perEngine(t, func(t *testing.T, svc *Service, st store.Store, now *time.Time) {
		_, code, err := svc.Create(ctx, "r1", request("p1"), "admin")
		if err != nil {
			t.Fatal(err)
		}
		// A typo and a non-code cost nothing.
		if _, err := svc.Confirm(ctx, "r1", "p1", typo(code), "dev-1", "api:shipper"); !errors.Is(err, deliverycode.ErrTypo) {
			t.Fatalf("typo: %v", err)
		}
		if _, err := svc.Confirm(ctx, "r1", "p1", "hello", "dev-1", "api:shipper"); !errors.Is(err, ErrInvalid) {
			t.Fatalf("not a code: %v", err)
		}
		// Another device: refused, audited, no attempt used.
		if _, err := svc.Confirm(ctx, "r1", "p1", code, "dev-2", "api:shipper"); !errors.Is(err, ErrWrongDevice) {
			t.Fatalf("another device: %v", err)
		}
		if n := attempts(t, svc, "p1", 1); n != 0 {
			t.Fatalf("%d attempts used before any counted one", n)
		}
		// A wrong code uses one attempt and says how many are left.
		_, err = svc.Confirm(ctx, "r1", "p1", wrongCode(t, code), "dev-1", "api:shipper")
		if !errors.Is(err, ErrWrongCode) || !strings.Contains(err.Error(), "1 of 5 attempts used") {
			t.Fatalf("wrong code: %v", err)
		}
		// The right code, formatted as printed: delivered, once.
		grouped := code[:4] + " " + code[4:]
		out, err := svc.Confirm(ctx, "r1", "p1", grouped, "dev-1", "api:shipper")
		if err != nil || out.Delivery.State != Delivered || out.Attempt != 2 {
			t.Fatalf("confirm: %+v %v", out, err)
		}
		if _, err := svc.Confirm(ctx, "r1", "p1", code, "dev-1", "api:shipper"); !errors.Is(err, ErrDelivered) || !errors.Is(err, ErrState) {
			t.Fatalf("used code: %v", err)
		}
		if d, _ := svc.Get(ctx, "r1", "p1"); d.State != Delivered {
			t.Fatalf("stored state %s", d.State)
		}
		kinds, data := auditOf(t, st)
		want := []string{audit.DeliveryCreate, audit.DeliveryRefused, audit.DeliveryAttempt, audit.DeliveryWrongCode,
			audit.DeliveryAttempt, audit.DeliveryDeliver}
		if strings.Join(kinds, " ") != strings.Join(want, " ") {
			t.Fatalf("audit %v, want %v", kinds, want)
		}
		for _, d := range data {
			if strings.Contains(d, code) {
				t.Fatalf("audit entry holds the code: %s", d)
			}
		}
	})
}

// TestConfirmLimit: the fifth wrong code fails the delivery; the right code
// is refused after that; a reassignment starts a new count with a new code.
func TestConfirmLimit(t *testing.T) {
	perEngine(t, func(t *testing.T, svc *Service, st store.Store, now *time.Time) {
		_, code, _ := svc.Create(ctx, "r1", request("p1"), "admin")
		for i := 1; i <= 4; i++ {
			if _, err := svc.Confirm(ctx, "r1", "p1", wrongCode(t, code), "dev-1", "a"); !errors.Is(err, ErrWrongCode) || errors.Is(err, ErrAttempts) {
				t.Fatalf("wrong code %d: %v", i, err)
			}
		}
		_, err := svc.Confirm(ctx, "r1", "p1", wrongCode(t, code), "dev-1", "a")
		if !errors.Is(err, ErrWrongCode) || !errors.Is(err, ErrAttempts) || !strings.Contains(err.Error(), "reassign") {
			t.Fatalf("fifth wrong code: %v", err)
		}
		if d, _ := svc.Get(ctx, "r1", "p1"); d.State != Failed {
			t.Fatalf("state %s, want failed", d.State)
		}
		if _, err := svc.Confirm(ctx, "r1", "p1", code, "dev-1", "a"); !errors.Is(err, ErrAttempts) {
			t.Fatalf("right code after the limit: %v", err)
		}
		*now = now.Add(time.Minute)
		_, code2, err := svc.Reassign(ctx, "r1", "p1", "dev-2", "admin")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := svc.Confirm(ctx, "r1", "p1", code, "dev-2", "a"); !errors.Is(err, ErrWrongCode) {
			t.Fatalf("old code after reassignment: %v", err)
		}
		if _, err := svc.Confirm(ctx, "r1", "p1", code2, "dev-1", "a"); !errors.Is(err, ErrWrongDevice) {
			t.Fatalf("new code on the old device: %v", err)
		}
		if out, err := svc.Confirm(ctx, "r1", "p1", code2, "dev-2", "a"); err != nil || out.Attempt != 2 {
			t.Fatalf("new code: %+v %v", out, err)
		}
	})
}

// TestConfirmParallel: 12 guesses and the right code at once against a
// limit of 5: at most 5 are compared, at most one delivers.
func TestConfirmParallel(t *testing.T) {
	perEngine(t, func(t *testing.T, svc *Service, st store.Store, now *time.Time) {
		_, code, _ := svc.Create(ctx, "r1", request("p1"), "admin")
		var wg sync.WaitGroup
		var mu sync.Mutex
		results := map[string]int{}
		for i := range 12 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c := wrongCode(t, code)
				if i%3 == 0 {
					c = code
				}
				_, err := svc.Confirm(ctx, "r1", "p1", c, "dev-1", "a")
				key := "ok"
				switch {
				case err == nil:
				case errors.Is(err, ErrDelivered):
					key = "delivered"
				case errors.Is(err, ErrAttempts):
					key = "attempts"
				case errors.Is(err, ErrWrongCode):
					key = "wrong"
				case errors.Is(err, ErrState), errors.Is(err, store.ErrConflict):
					key = "state"
				default:
					t.Errorf("confirm: %v", err)
				}
				mu.Lock()
				results[key]++
				mu.Unlock()
			}()
		}
		wg.Wait()
		if results["ok"] > 1 || attempts(t, svc, "p1", 1) > 5 {
			t.Fatalf("results %v, %d attempts", results, attempts(t, svc, "p1", 1))
		}
	})
}

func TestConfirmStates(t *testing.T) {
	perEngine(t, func(t *testing.T, svc *Service, st store.Store, now *time.Time) {
		_, c1, _ := svc.Create(ctx, "r1", request("p1"), "admin")
		if _, err := svc.Cancel(ctx, "r1", "p1", "admin"); err != nil {
			t.Fatal(err)
		}
		if _, err := svc.Confirm(ctx, "r1", "p1", c1, "dev-1", "a"); !errors.Is(err, ErrState) || errors.Is(err, ErrDelivered) {
			t.Fatalf("cancelled: %v", err)
		}
		_, c2, _ := svc.Create(ctx, "r1", request("p2"), "admin")
		*now = t0.Add(48 * time.Hour)
		if _, err := svc.Confirm(ctx, "r1", "p2", c2, "dev-1", "a"); !errors.Is(err, ErrExpired) {
			t.Fatalf("expired: %v", err)
		}
		if _, err := svc.Confirm(ctx, "r1", "nope", c2, "dev-1", "a"); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("unknown: %v", err)
		}
		if n := attempts(t, svc, "p1", 1) + attempts(t, svc, "p2", 1); n != 0 {
			t.Fatalf("%d attempts used by refusals", n)
		}
	})
}

func mustSeal(t *testing.T, pub []byte, b codecheck.Binding, code string) []byte {
	s, err := codecheck.Seal(pub, b, code)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestToken: token mode's token at Create and Reassign, and what a device
// does with it (attacks: another key, another delivery/version/device,
// expired).
func TestToken(t *testing.T) {
	perEngine(t, func(t *testing.T, svc *Service, st store.Store, now *time.Time) {
		r := request("p1")
		r.Mode = ModeToken
		d, _, err := svc.Create(ctx, "r1", r, "admin")
		if err != nil || d.Token == nil {
			t.Fatalf("create: %+v %v", d, err)
		}
		pk, _ := svc.PublicKeys("r1")
		c, err := deliverytoken.Verify(pk.Token, d.Token.Text, *now)
		if err != nil || c.For("r1", "p1", 1, "dev-1") != nil || !c.NotAfter.Equal(r.NotAfter.Truncate(time.Second)) {
			t.Fatalf("token: %+v %v", c, err)
		}
		scanned, err := qr.Decode(bytes.NewReader(d.Token.PNG))
		if err != nil || scanned != d.Token.Text {
			t.Fatalf("QR reads %q, %v", scanned, err)
		}
		// Other realms' keys do not verify it; it expires with the delivery.
		m2, _ := svc.PublicKeys("r2")
		if _, err := deliverytoken.Verify(m2.Token, d.Token.Text, *now); !errors.Is(err, deliverytoken.ErrSignature) {
			t.Fatalf("another realm's key: %v", err)
		}
		if _, err := deliverytoken.Verify(pk.Token, d.Token.Text, r.NotAfter); !errors.Is(err, deliverytoken.ErrExpired) {
			t.Fatalf("at not_after: %v", err)
		}
		// Reassigned: a new token for version 2 on dev-2; the old one names
		// version 1 and dev-1, which the new device refuses.
		d2, _, err := svc.Reassign(ctx, "r1", "p1", "dev-2", "admin")
		if err != nil || d2.Token == nil || d2.Token.Text == d.Token.Text {
			t.Fatalf("reassign: %+v %v", d2, err)
		}
		c2, err := deliverytoken.Verify(pk.Token, d2.Token.Text, *now)
		if err != nil || c2.For("r1", "p1", 2, "dev-2") != nil {
			t.Fatalf("new token: %+v %v", c2, err)
		}
		if err := c.For("r1", "p1", 2, "dev-2"); !errors.Is(err, deliverytoken.ErrMismatch) {
			t.Fatalf("old token after reassignment: %v", err)
		}
		if err := c2.For("r1", "p2", 2, "dev-2"); !errors.Is(err, deliverytoken.ErrMismatch) {
			t.Fatalf("token for another delivery: %v", err)
		}
		// Other modes carry no token.
		if d, _, _ := svc.Create(ctx, "r1", request("p2"), "admin"); d.Token != nil {
			t.Fatal("hash mode with a token")
		}
	})
}

// TestTokenZbarimg: the token's QR code reads back with a real reader
// (zbarimg) as the exact token text, which then verifies; skipped without
// zbarimg unless OUTPOST_REQUIRE_INTEROP=1.
func TestTokenZbarimg(t *testing.T) {
	now := t0
	svc, _ := newService(t, storetest.SQLitePath(t), &now)
	r := request("p1")
	r.Mode = ModeToken
	d, _, err := svc.Create(ctx, "r1", r, "admin")
	if err != nil {
		t.Fatal(err)
	}
	text := proctest.Zbarimg(t, d.Token.PNG)
	if text != d.Token.Text {
		t.Fatalf("zbarimg read %q, want %q", text, d.Token.Text)
	}
	pk, _ := svc.PublicKeys("r1")
	if _, err := deliverytoken.Verify(pk.Token, text, now); err != nil {
		t.Fatal(err)
	}
}
