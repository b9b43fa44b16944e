package delivery

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/outpost-auth/outpost/internal/courierproto"
	"github.com/outpost-auth/outpost/internal/deliverycode"
	"github.com/outpost-auth/outpost/internal/keys"
	"github.com/outpost-auth/outpost/internal/store"
	"github.com/outpost-auth/outpost/internal/store/storetest"
)

var ctx = context.Background()

// A clock years ahead, as every service test pins it.
var t0 = time.Date(2031, 5, 6, 7, 8, 9, 0, time.UTC)

func engines() map[string]func(t testing.TB) string {
	m := map[string]func(t testing.TB) string{"sqlite": storetest.SQLitePath}
	if os.Getenv(storetest.PostgresEnv) != "" {
		m["postgres"] = storetest.PostgresDSN
	}
	return m
}

func newService(t *testing.T, dsn string, now *time.Time) (*Service, store.Store) {
	t.Helper()
	m, err := keys.GenerateMaster()
	if err != nil {
		t.Fatal(err)
	}
	st := storetest.Open(t, dsn)
	if err := st.CreateRealm(ctx, store.Realm{ID: "r1", Name: "r1", CreatedAt: t0}); err != nil {
		t.Fatal(err)
	}
	return &Service{Store: st.(store.DeliveryStore), Master: m, Now: func() time.Time { return *now }, Courier: &Courier{Costs: courierproto.TestCosts}}, st
}

func request(id string) Request {
	return Request{ID: id, Device: "dev-1", Recipient: Recipient{Email: "ana@example.org"}, NotAfter: t0.Add(48 * time.Hour), Mode: ModeHash}
}

// TestTransitions: the table, allowed and refused changes.
func TestTransitions(t *testing.T) {
	all := []State{Created, Notified, OutForDelivery, Delivered, Failed, Expired, Cancelled, Reassigned}
	allowed := map[[2]State]bool{
		{Created, Notified}: true, {Created, OutForDelivery}: true, {Reassigned, OutForDelivery}: true, {Created, Cancelled}: true, {Created, Reassigned}: true, {Created, Expired}: true,
		{Created, Delivered}: true, {Created, Failed}: true, // online confirm before the manifest
		{Notified, OutForDelivery}: true, {Notified, Cancelled}: true, {Notified, Reassigned}: true, {Notified, Expired}: true,
		{Notified, Delivered}: true, {Notified, Failed}: true,
		{OutForDelivery, Delivered}: true, {OutForDelivery, Failed}: true, {OutForDelivery, Cancelled}: true,
		{OutForDelivery, Reassigned}: true, {OutForDelivery, Expired}: true,
		{Reassigned, Notified}: true, {Reassigned, Cancelled}: true, {Reassigned, Reassigned}: true, {Reassigned, Expired}: true,
		{Reassigned, Delivered}: true, {Reassigned, Failed}: true,
		{Failed, Reassigned}: true,
	}
	for _, from := range all {
		if !from.Valid() {
			t.Errorf("%s not valid", from)
		}
		for _, to := range all {
			if got := Allowed(from, to); got != allowed[[2]State{from, to}] {
				t.Errorf("Allowed(%s, %s) = %v", from, to, got)
			}
		}
	}
	if State("lost").Valid() || Allowed("lost", Cancelled) {
		t.Error("an unknown state is valid")
	}
}

func TestService(t *testing.T) {
	for name, dsn := range engines() {
		t.Run(name, func(t *testing.T) { testService(t, dsn(t)) })
	}
}

func testService(t *testing.T, dsn string) {
	now := t0
	svc, st := newService(t, dsn, &now)
	d, code, err := svc.Create(ctx, "r1", request("p1"), "admin")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := deliverycode.Parse(code); err != nil || len(code) != deliverycode.DefaultDigits+1 {
		t.Fatalf("code %q: %v", code, err)
	}
	if d.State != Created || d.CodeVersion != 1 || d.Device != "dev-1" || d.Mode != ModeHash {
		t.Fatalf("created %+v", d)
	}
	if _, _, err := svc.Create(ctx, "r1", request("p1"), "admin"); !errors.Is(err, store.ErrExists) {
		t.Fatalf("duplicate id: %v", err)
	}

	// Stored: no code, the recipient sealed; the code matches its MAC.
	raw, err := svc.Store.GetDelivery(ctx, "r1", "p1")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(raw.Recipient), "ana@") || strings.Contains(string(raw.CodeMAC), code) || !svc.codeMatches(raw, code) {
		t.Fatal("stored in the clear, or the code does not match")
	}
	if r, err := svc.Recipient(ctx, "r1", "p1"); err != nil || r.Email != "ana@example.org" {
		t.Fatalf("Recipient = %v, %v", r, err)
	}

	// Reassign: a new code version; the old code is dead.
	now = now.Add(time.Hour)
	d, code2, err := svc.Reassign(ctx, "r1", "p1", "dev-2", "admin")
	if err != nil {
		t.Fatal(err)
	}
	raw, _ = svc.Store.GetDelivery(ctx, "r1", "p1")
	if d.State != Reassigned || d.CodeVersion != 2 || d.Device != "dev-2" || svc.codeMatches(raw, code) || !svc.codeMatches(raw, code2) {
		t.Fatalf("reassigned %+v", d)
	}

	// Cancel, then nothing more.
	if d, err = svc.Cancel(ctx, "r1", "p1", "admin"); err != nil || d.State != Cancelled {
		t.Fatalf("cancel: %+v %v", d, err)
	}
	if _, err := svc.Cancel(ctx, "r1", "p1", "admin"); !errors.Is(err, ErrState) {
		t.Fatalf("cancel twice: %v", err)
	}
	if _, _, err := svc.Reassign(ctx, "r1", "p1", "dev-3", "admin"); !errors.Is(err, ErrState) {
		t.Fatalf("reassign cancelled: %v", err)
	}
	if _, err := svc.Cancel(ctx, "r1", "nope", "admin"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("cancel unknown: %v", err)
	}

	// Expiry: past not_after the delivery reads as expired and takes no change.
	if _, _, err := svc.Create(ctx, "r1", request("p2"), "admin"); err != nil {
		t.Fatal(err)
	}
	now = t0.Add(48 * time.Hour)
	if d, _ := svc.Get(ctx, "r1", "p2"); d.State != Expired {
		t.Fatalf("past not_after: %s", d.State)
	}
	if _, err := svc.Cancel(ctx, "r1", "p2", "admin"); !errors.Is(err, ErrState) {
		t.Fatalf("cancel expired: %v", err)
	}
	ds, err := svc.List(ctx, "r1", "", 10)
	if err != nil || len(ds) != 2 || ds[0].ID != "p1" || ds[1].State != Expired {
		t.Fatalf("List = %+v, %v", ds, err)
	}

	// The audit log: one entry per change, neither recipient nor code.
	es, err := st.ListAudit(ctx, 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	var kinds []string
	for _, e := range es {
		kinds = append(kinds, e.Kind)
		for _, secret := range []string{"ana@example.org", code, code2} {
			if strings.Contains(string(e.Data), secret) || strings.Contains(e.Subject, secret) {
				t.Errorf("audit entry %s holds %q", e.Kind, secret)
			}
		}
	}
	if got := strings.Join(kinds, " "); got != "delivery.create delivery.reassign delivery.cancel delivery.create" {
		t.Errorf("audit kinds: %s", got)
	}
}

// TestCreateRefuses: each bad field is refused before anything is stored,
// and no error repeats the recipient's contact.
func TestCreateRefuses(t *testing.T) {
	now := t0
	svc, st := newService(t, storetest.SQLitePath(t), &now)
	for name, mutate := range map[string]func(*Request){
		"no id":          func(r *Request) { r.ID = "" },
		"no device":      func(r *Request) { r.Device = "" },
		"mode":           func(r *Request) { r.Mode = "pin" },
		"past":           func(r *Request) { r.NotAfter = t0 },
		"too far":        func(r *Request) { r.NotAfter = t0.Add(MaxLifetime + time.Second) },
		"no recipient":   func(r *Request) { r.Recipient = Recipient{} },
		"both":           func(r *Request) { r.Recipient.Phone = "+33612345678" },
		"email":          func(r *Request) { r.Recipient.Email = "secret-ana.example.org" },
		"email space":    func(r *Request) { r.Recipient.Email = "secret ana@example.org" },
		"phone":          func(r *Request) { r.Recipient = Recipient{Phone: "0612345678secret"} },
		"phone too long": func(r *Request) { r.Recipient = Recipient{Phone: "+1234567890123456"} },
	} {
		r := request("p1")
		mutate(&r)
		_, _, err := svc.Create(ctx, "r1", r, "admin")
		if !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: %v", name, err)
		} else if strings.Contains(err.Error(), "secret") {
			t.Errorf("%s: error repeats the contact: %v", name, err)
		}
	}
	r := request("p1")
	r.Recipient = Recipient{Phone: "+33612345678"}
	if _, _, err := svc.Create(ctx, "r1", r, "admin"); err != nil {
		t.Fatalf("a phone recipient: %v", err)
	}
	if es, _ := st.ListAudit(ctx, 0, 100); len(es) != 1 {
		t.Fatalf("%d audit entries, want 1", len(es))
	}
}
