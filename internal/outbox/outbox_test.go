package outbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/outpost-auth/outpost/internal/courierproto"

	"github.com/outpost-auth/outpost/internal/delivery"
	"github.com/outpost-auth/outpost/internal/deliverycode"
	"github.com/outpost-auth/outpost/internal/keys"
	"github.com/outpost-auth/outpost/internal/notify"
	"github.com/outpost-auth/outpost/internal/proctest"
	"github.com/outpost-auth/outpost/internal/store"
	"github.com/outpost-auth/outpost/internal/store/storetest"
	"github.com/outpost-auth/outpost/webhook"
)

var ctx = context.Background()

// A clock years ahead, as every service test pins it.
var t0 = time.Date(2031, 5, 6, 7, 8, 9, 0, time.UTC)

type fixture struct {
	t   *testing.T
	now time.Time
	st  store.Store
	ds  *delivery.Service
	ob  *Service
}

func newFixture(t *testing.T, dsn string, ch notify.Channels) *fixture {
	t.Helper()
	m, err := keys.GenerateMaster()
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{t: t, now: t0, st: storetest.Open(t, dsn)}
	if err := f.st.CreateRealm(ctx, store.Realm{ID: "r1", Name: "r1", CreatedAt: t0}); err != nil {
		t.Fatal(err)
	}
	clk := func() time.Time { return f.now }
	f.ds = &delivery.Service{Store: f.st.(store.DeliveryStore), Master: m, Now: clk, Courier: &delivery.Courier{Costs: courierproto.TestCosts}}
	f.ob = &Service{Store: f.st.(store.OutboxStore), Deliveries: f.ds, Master: m, Channels: ch, Now: clk, Owner: "test",
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Policy: Policy{MaxAttempts: 3, BaseDelay: time.Second, MaxDelay: time.Minute, Lease: time.Minute}, WebhookTimeout: 300 * time.Millisecond}
	f.ds.Outbox = f.ob
	return f
}

func (f *fixture) create(id string, r delivery.Recipient) string {
	f.t.Helper()
	_, code, err := f.ds.Create(ctx, "r1", delivery.Request{ID: id, Device: "dev-1", Recipient: r, NotAfter: t0.Add(48 * time.Hour),
		Mode: delivery.ModeHash}, "issuer")
	if err != nil {
		f.t.Fatal(err)
	}
	return code
}

func (f *fixture) run() int {
	f.t.Helper()
	n, err := f.ob.RunOnce(ctx)
	if err != nil {
		f.t.Fatal(err)
	}
	return n
}

func (f *fixture) messages(state string) []Message {
	f.t.Helper()
	ms, err := f.ob.List(ctx, "r1", state, "", 100)
	if err != nil {
		f.t.Fatal(err)
	}
	return ms
}

func (f *fixture) state(id string) delivery.State {
	f.t.Helper()
	d, err := f.ds.Get(ctx, "r1", id)
	if err != nil {
		f.t.Fatal(err)
	}
	return d.State
}

func (f *fixture) auditKinds() string {
	f.t.Helper()
	es, err := f.st.ListAudit(ctx, 0, 1000)
	if err != nil {
		f.t.Fatal(err)
	}
	var out []string
	for _, e := range es {
		out = append(out, e.Kind)
	}
	return strings.Join(out, " ")
}

var codeRE = regexp.MustCompile(`code for parcel [^:]+: ([0-9 ]+)\r?\n`)

func codeIn(t *testing.T, mail string) string {
	t.Helper()
	m := codeRE.FindStringSubmatch(mail)
	if m == nil {
		t.Fatalf("no code in the mail:\n%s", mail)
	}
	code, err := deliverycode.Parse(m[1])
	if err != nil {
		t.Fatalf("code %q: %v", m[1], err)
	}
	return code
}

// TestSMTPFlow: a real SMTP server receives the code once per code
// version; the delivery becomes notified; the code is erased once sent;
// the API no longer returns it.
func TestSMTPFlow(t *testing.T) {
	smtpd := proctest.StartSMTP(t)
	for _, eng := range storetest.Engines {
		name, dsn := eng.Name, eng.DSN
		t.Run(name, func(t *testing.T) {
			before := len(smtpd.Messages(t))
			f := newFixture(t, dsn(t), notify.Channels{Email: &notify.SMTP{Addr: smtpd.Addr, From: "parcels@shipper.example"}})
			if code := f.create("p1-"+name, delivery.Recipient{Email: "ana@example.org"}); code != "" {
				t.Fatal("the code was returned although a notifier sends it")
			}
			if n := f.run(); n != 1 {
				t.Fatalf("attempted %d", n)
			}
			if n := f.run(); n != 0 {
				t.Fatalf("attempted %d again", n)
			}
			mails := smtpd.Messages(t)[before:]
			if len(mails) != 1 {
				t.Fatalf("%d mails", len(mails))
			}
			id := MessageID("r1", "p1-"+name, 1, KindRecipient)
			if !strings.Contains(mails[0], "Message-ID: <"+id+"@shipper.example>") || !strings.Contains(mails[0], "To: ana@example.org") {
				t.Fatalf("mail:\n%s", mails[0])
			}
			c1 := codeIn(t, mails[0])
			if got := f.state("p1-" + name); got != delivery.Notified {
				t.Fatalf("state %s", got)
			}
			sent := f.messages(store.OutboxSent)
			if len(sent) != 1 || sent[0].HasCode || sent[0].ID != id {
				t.Fatalf("sent = %+v", sent)
			}
			// Reassignment: a new code, a new message, notified again.
			if _, code, err := f.ds.Reassign(ctx, "r1", "p1-"+name, "dev-2", "issuer"); err != nil || code != "" {
				t.Fatalf("reassign: %q %v", code, err)
			}
			f.run()
			mails = smtpd.Messages(t)[before:]
			if len(mails) != 2 || codeIn(t, mails[1]) == c1 {
				t.Fatalf("after reassignment: %d mails", len(mails))
			}
			if got := f.state("p1-" + name); got != delivery.Notified {
				t.Fatalf("state %s", got)
			}
			if got := f.auditKinds(); got != "delivery.create delivery.notify delivery.reassign delivery.notify" {
				t.Errorf("audit = %s", got)
			}
		})
	}
}

// TestSuperseded: a message for a code that a reassignment killed before
// it was sent is skipped; only the new code goes out.
func TestSuperseded(t *testing.T) {
	smtpd := proctest.StartSMTP(t)
	f := newFixture(t, storetest.SQLitePath(t), notify.Channels{Email: &notify.SMTP{Addr: smtpd.Addr, From: "p@shipper.example"}})
	f.create("p1", delivery.Recipient{Email: "ana@example.org"})
	if _, _, err := f.ds.Reassign(ctx, "r1", "p1", "dev-2", "issuer"); err != nil {
		t.Fatal(err)
	}
	if _, err := f.ds.Cancel(ctx, "r1", "p1", "issuer"); err != nil {
		t.Fatal(err)
	}
	f.run()
	if n := len(smtpd.Messages(t)); n != 0 {
		t.Fatalf("%d mails for a cancelled delivery", n)
	}
	if sk := f.messages(store.OutboxSkipped); len(sk) != 2 || sk[0].HasCode || sk[1].HasCode {
		t.Fatalf("skipped = %+v", sk)
	}
}

// TestSMTPRefuses: a 550 dead-letters the message at once, audited, with
// no address in the error; a resend tries again.
func TestSMTPRefuses(t *testing.T) {
	smtpd := proctest.StartSMTP(t)
	f := newFixture(t, storetest.SQLitePath(t), notify.Channels{Email: &notify.SMTP{Addr: smtpd.Addr, From: "p@shipper.example"}})
	f.create("p1", delivery.Recipient{Email: "refuse-me@example.org"})
	f.run()
	dead := f.messages(store.OutboxDead)
	if len(dead) != 1 || dead[0].Attempts != 1 || !strings.Contains(dead[0].LastError, "550") || !dead[0].HasCode {
		t.Fatalf("dead = %+v", dead)
	}
	if strings.Contains(dead[0].LastError, "refuse-me") || strings.Contains(f.auditData(), "refuse-me") {
		t.Fatal("the recipient's address leaked into the error or the audit log")
	}
	if f.state("p1") != delivery.Created {
		t.Fatal("a refused message notified the delivery")
	}
	if _, err := f.ob.Resend(ctx, "r1", "nope", "admin"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("resend of nothing: %v", err)
	}
	if _, err := f.ob.Resend(ctx, "r1", dead[0].ID, "admin"); err != nil {
		t.Fatal(err)
	}
	if _, err := f.ob.Resend(ctx, "r1", dead[0].ID, "admin"); !errors.Is(err, ErrNotDead) {
		t.Fatalf("resend of a pending message: %v", err)
	}
	f.run()
	if dead := f.messages(store.OutboxDead); len(dead) != 1 {
		t.Fatalf("dead after resend = %+v", dead)
	}
	if got := f.auditKinds(); got != "delivery.create outbox.dead outbox.resend outbox.dead" {
		t.Errorf("audit = %s", got)
	}
	// Past the delivery's expiry, the dead message's code is erased and it
	// can no longer be resent.
	f.now = t0.Add(49 * time.Hour)
	f.run()
	if dead := f.messages(store.OutboxDead); dead[0].HasCode {
		t.Fatal("code kept past expiry")
	}
	if _, err := f.ob.Resend(ctx, "r1", dead[0].ID, "admin"); !errors.Is(err, ErrCodeErased) {
		t.Fatalf("resend after erase: %v", err)
	}
}

func (f *fixture) auditData() string {
	es, err := f.st.ListAudit(ctx, 0, 1000)
	if err != nil {
		f.t.Fatal(err)
	}
	var b strings.Builder
	for _, e := range es {
		b.Write(e.Data)
	}
	return b.String()
}

// TestSMTPDown: with the server down the message stays, is retried with
// backoff, dead-letters after MaxAttempts, and is sent after a resend once
// a server answers.
func TestSMTPDown(t *testing.T) {
	down := &notify.SMTP{Addr: "127.0.0.1:" + strconv.Itoa(proctest.FreePort(t)), From: "p@shipper.example", Timeout: time.Second}
	f := newFixture(t, storetest.SQLitePath(t), notify.Channels{Email: down})
	f.create("p1", delivery.Recipient{Email: "ana@example.org"})
	f.run()
	pending := f.messages(store.OutboxPending)
	if len(pending) != 1 || pending[0].Attempts != 1 || !pending[0].NextAt.Equal(t0.Add(time.Second)) {
		t.Fatalf("after one failure: %+v", pending)
	}
	if n := f.run(); n != 0 {
		t.Fatal("retried before the backoff")
	}
	f.now = t0.Add(time.Second)
	f.run()
	if p := f.messages(store.OutboxPending); len(p) != 1 || !p[0].NextAt.Equal(t0.Add(3*time.Second)) {
		t.Fatalf("after two failures: %+v", p)
	}
	f.now = t0.Add(3 * time.Second)
	f.run()
	dead := f.messages(store.OutboxDead)
	if len(dead) != 1 || dead[0].Attempts != 3 {
		t.Fatalf("after three failures: %+v", dead)
	}
	smtpd := proctest.StartSMTP(t)
	f.ob.Channels.Email = &notify.SMTP{Addr: smtpd.Addr, From: "p@shipper.example"}
	if _, err := f.ob.Resend(ctx, "r1", dead[0].ID, "admin"); err != nil {
		t.Fatal(err)
	}
	f.run()
	if n := len(smtpd.Messages(t)); n != 1 || f.state("p1") != delivery.Notified {
		t.Fatalf("%d mails after resend, state %s", n, f.state("p1"))
	}
}

// receiver is a shipper's webhook endpoint: it checks each request's
// signature with the public webhook package and answers as told.
type receiver struct {
	mu     sync.Mutex
	secret []byte
	events []webhook.Event
	bad    int
	answer func(n int) int // status for the n-th request (from 1)
	delay  time.Duration
	n      int
	now    func() time.Time
}

func (rc *receiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	rc.mu.Lock()
	rc.n++
	n, delay := rc.n, rc.delay
	rc.mu.Unlock()
	if delay > 0 {
		time.Sleep(delay)
	}
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if err := webhook.Verify(rc.secret, r.Header.Get(webhook.Header), body, rc.now(), webhook.DefaultTolerance); err != nil {
		rc.bad++
		http.Error(w, err.Error(), http.StatusUnauthorized)
		return
	}
	status := http.StatusNoContent
	if rc.answer != nil {
		status = rc.answer(n)
	}
	if status < 300 {
		var ev webhook.Event
		if err := json.Unmarshal(body, &ev); err != nil {
			rc.bad++
		}
		rc.events = append(rc.events, ev)
		if strings.Contains(string(body), "ana@") || strings.Contains(string(body), "code") {
			rc.bad++
		}
	}
	w.WriteHeader(status)
}

func (rc *receiver) types() string {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	var out []string
	for _, e := range rc.events {
		out = append(out, e.Type)
	}
	return strings.Join(out, " ")
}

// TestWebhookEvents: each state change is a signed event, with no code
// nor recipient, sent once; a 500 is retried; a receiver that times out
// is retried, then dead-lettered.
func TestWebhookEvents(t *testing.T) {
	for _, eng := range storetest.Engines {
		name, dsn := eng.Name, eng.DSN
		t.Run(name, func(t *testing.T) {
			f := newFixture(t, dsn(t), notify.Channels{})
			rc := &receiver{now: func() time.Time { return t0 }, answer: func(n int) int {
				if n == 2 {
					return http.StatusInternalServerError
				}
				return http.StatusOK
			}}
			srv := httptest.NewServer(rc)
			defer srv.Close()
			_, secret, err := f.ob.SetWebhook(ctx, "r1", srv.URL+"/hook", nil, "admin")
			if err != nil {
				t.Fatal(err)
			}
			rc.secret = secret
			// Without a notifier the API still returns the code.
			if code := f.create("p1", delivery.Recipient{Phone: "+33612345678"}); code == "" {
				t.Fatal("no code returned without a notifier")
			}
			f.run()
			if _, err := f.ds.Cancel(ctx, "r1", "p1", "issuer"); err != nil {
				t.Fatal(err)
			}
			f.run() // the receiver answers 500: retried later
			if got := rc.types(); got != "created" {
				t.Fatalf("events = %q", got)
			}
			f.now = f.now.Add(time.Second)
			f.run()
			if got := rc.types(); got != "created cancelled" || rc.bad != 0 {
				t.Fatalf("events = %q, %d bad", got, rc.bad)
			}
			ev := rc.events[1]
			if ev.ID != MessageID("r1", "p1", 1, "event.cancelled") || ev.Delivery != "p1" || ev.Version != 1 || ev.State != "cancelled" || !ev.Time.Equal(t0) {
				t.Fatalf("event = %+v", ev)
			}
			// A receiver that hangs: retried after each timeout, then dead.
			rc.mu.Lock()
			rc.delay = time.Second
			rc.mu.Unlock()
			f.create("p2", delivery.Recipient{Phone: "+33612345678"})
			for range 3 {
				f.run()
				f.now = f.now.Add(time.Minute)
			}
			dead := f.messages(store.OutboxDead)
			if len(dead) != 1 || dead[0].Attempts != 3 || !strings.Contains(dead[0].LastError, "deadline") {
				t.Fatalf("dead = %+v", dead)
			}
			rc.mu.Lock()
			rc.delay = 0
			rc.mu.Unlock()
			if _, err := f.ob.Resend(ctx, "r1", dead[0].ID, "admin"); err != nil {
				t.Fatal(err)
			}
			f.run()
			if got := rc.types(); !strings.HasSuffix(got, " created") {
				t.Fatalf("events after resend = %q", got)
			}
		})
	}
}

// TestSMSWebhook: a phone recipient's code goes to the SMS gateway as a
// signed JSON request; with no phone notifier it dead-letters, kept for a
// resend.
func TestSMSWebhook(t *testing.T) {
	var mu sync.Mutex
	var got []notify.SMSRequest
	secret := []byte("sms-gateway-secret-0123")
	gw := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if err := webhook.Verify(secret, r.Header.Get(webhook.Header), body, t0, webhook.DefaultTolerance); err != nil {
			http.Error(w, err.Error(), http.StatusUnauthorized)
			return
		}
		var req notify.SMSRequest
		_ = json.Unmarshal(body, &req)
		mu.Lock()
		got = append(got, req)
		mu.Unlock()
		w.WriteHeader(http.StatusAccepted)
	}))
	defer gw.Close()
	f := newFixture(t, storetest.SQLitePath(t), notify.Channels{Email: &notify.SMTP{Addr: "127.0.0.1:1", From: "p@x.example"}})
	f.create("p1", delivery.Recipient{Phone: "+33612345678"})
	f.run()
	dead := f.messages(store.OutboxDead)
	if len(dead) != 1 || !strings.Contains(dead[0].LastError, "no notifier") {
		t.Fatalf("without an SMS notifier: %+v", dead)
	}
	f.ob.Channels.Phone = &notify.SMSWebhook{URL: gw.URL, Secret: secret, Now: func() time.Time { return f.now }}
	if _, err := f.ob.Resend(ctx, "r1", dead[0].ID, "admin"); err != nil {
		t.Fatal(err)
	}
	f.run()
	if len(got) != 1 || got[0].To != "+33612345678" || got[0].ID != dead[0].ID || !strings.Contains(got[0].Text, "Delivery p1: your code is ") {
		t.Fatalf("SMS = %+v", got)
	}
	if f.state("p1") != delivery.Notified {
		t.Fatal("not notified")
	}
}

func TestSetWebhookRefuses(t *testing.T) {
	f := newFixture(t, storetest.SQLitePath(t), notify.Channels{})
	for _, u := range []string{"", "ftp://x.example/", "http://shipper.example/hook", "https://user:pw@x.example/", "/relative",
		"https://x.example/#f", "https://x.example/" + strings.Repeat("a", MaxWebhookURL)} {
		if _, _, err := f.ob.SetWebhook(ctx, "r1", u, nil, "admin"); !errors.Is(err, ErrInvalid) {
			t.Errorf("%q: %v", u, err)
		}
	}
	if _, _, err := f.ob.SetWebhook(ctx, "r1", "https://x.example/h", []byte("short"), "admin"); !errors.Is(err, ErrInvalid) {
		t.Errorf("short secret: %v", err)
	}
	if _, _, err := f.ob.SetWebhook(ctx, "nope", "https://x.example/h", nil, "admin"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("unknown realm: %v", err)
	}
	w, secret, err := f.ob.SetWebhook(ctx, "r1", "https://x.example/h", []byte("a-secret-of-the-admin"), "admin")
	if err != nil || string(secret) != "a-secret-of-the-admin" || w.URL != "https://x.example/h" {
		t.Fatalf("%+v %q %v", w, secret, err)
	}
	if strings.Contains(f.auditData(), "a-secret") {
		t.Fatal("the secret is in the audit log")
	}
	if _, err := f.ob.List(ctx, "r1", "bogus", "", 10); !errors.Is(err, ErrInvalid) {
		t.Fatalf("bad state: %v", err)
	}
}

// countingNotifier counts the messages it is given, by id.
type countingNotifier struct {
	mu   sync.Mutex
	seen map[string]int
}

func (c *countingNotifier) Notify(_ context.Context, m notify.Message) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.seen[m.ID]++
	return nil
}

// TestWorkersShareOneDatabase: workers of separate processes (each with
// its own connection pool) on one database never send a message twice.
func TestWorkersShareOneDatabase(t *testing.T) {
	for _, eng := range storetest.Engines {
		name, dsn := eng.Name, eng.DSN
		t.Run(name, func(t *testing.T) {
			db := dsn(t)
			cn := &countingNotifier{seen: map[string]int{}}
			f := newFixture(t, db, notify.Channels{Email: cn})
			const n = 30
			for i := range n {
				f.create(fmt.Sprintf("p%02d", i), delivery.Recipient{Email: "ana@example.org"})
			}
			var wg sync.WaitGroup
			for w := range 4 {
				st := storetest.Open(t, db) // another process's pool
				ds := &delivery.Service{Store: st.(store.DeliveryStore), Master: f.ds.Master, Now: f.ds.Now, Courier: f.ds.Courier}
				ob := &Service{Store: st.(store.OutboxStore), Deliveries: ds, Master: f.ob.Master, Channels: f.ob.Channels,
					Now: f.ob.Now, Owner: fmt.Sprintf("w%d", w), Log: f.ob.Log, Policy: Policy{Batch: 2}}
				ds.Outbox = ob
				wg.Add(1)
				go func() {
					defer wg.Done()
					for {
						k, err := ob.RunOnce(ctx)
						if err != nil {
							t.Error(err)
							return
						}
						if k == 0 {
							return
						}
					}
				}()
			}
			wg.Wait()
			if len(cn.seen) != n {
				t.Fatalf("%d messages sent, want %d", len(cn.seen), n)
			}
			for id, c := range cn.seen {
				if c != 1 {
					t.Errorf("%s sent %d times", id, c)
				}
			}
			if p := f.messages(store.OutboxPending); len(p) != 0 {
				t.Fatalf("pending: %+v", p)
			}
		})
	}
}

// TestExpiredEvent: past its not_after a delivery's expiry is stored by the
// worker's sweep, audited, and sent to the shipper as an event; its unsent
// recipient message is not sent.
func TestExpiredEvent(t *testing.T) {
	cn := &countingNotifier{seen: map[string]int{}}
	f := newFixture(t, storetest.SQLitePath(t), notify.Channels{Phone: cn})
	rc := &receiver{now: func() time.Time { return t0.Add(48 * time.Hour) }}
	srv := httptest.NewServer(rc)
	defer srv.Close()
	_, secret, err := f.ob.SetWebhook(ctx, "r1", srv.URL, nil, "admin")
	if err != nil {
		t.Fatal(err)
	}
	rc.secret = secret
	f.create("p1", delivery.Recipient{Phone: "+33612345678"})
	f.now = t0.Add(48 * time.Hour)
	f.run() // the code is not sent (expired); the expiry is stored
	f.run() // its event is sent
	if len(cn.seen) != 0 {
		t.Fatal("the code of an expired delivery was sent")
	}
	if got := rc.types(); got != "created expired" {
		t.Fatalf("events = %q", got)
	}
	d, err := f.st.(store.DeliveryStore).GetDelivery(ctx, "r1", "p1")
	if err != nil || d.State != "expired" {
		t.Fatalf("stored state %q, %v", d.State, err)
	}
	if got := f.auditKinds(); got != "webhook.set delivery.create delivery.expire" {
		t.Errorf("audit = %s", got)
	}
	if n, err := f.ds.ExpireDue(ctx, 10, "outbox"); n != 0 || err != nil {
		t.Fatalf("expired again: %d %v", n, err)
	}
}

// TestTokenInMail: a token-mode delivery's mail carries the token the
// Token hook gives (as text; notify's tests check the link and QR code).
func TestTokenInMail(t *testing.T) {
	smtpd := proctest.StartSMTP(t)
	f := newFixture(t, storetest.SQLitePath(t), notify.Channels{Email: &notify.SMTP{Addr: smtpd.Addr, From: "p@shipper.example"}})
	f.ob.Token = func(_ context.Context, d delivery.Delivery) (string, error) {
		return fmt.Sprintf("TOKEN-%s-%d", d.ID, d.CodeVersion), nil
	}
	if _, _, err := f.ds.Create(ctx, "r1", delivery.Request{ID: "p1", Device: "dev-1", Recipient: delivery.Recipient{Email: "ana@example.org"},
		NotAfter: t0.Add(48 * time.Hour), Mode: delivery.ModeToken}, "issuer"); err != nil {
		t.Fatal(err)
	}
	f.create("p2", delivery.Recipient{Email: "bob@example.org"}) // hash mode: no token
	f.run()
	mails := smtpd.Messages(t)
	if len(mails) != 2 {
		t.Fatalf("%d mails", len(mails))
	}
	all := mails[0] + mails[1]
	if strings.Count(all, "TOKEN-p1-1") != 1 || strings.Contains(all, "TOKEN-p2") || strings.Count(all, "image/png") != 1 {
		t.Fatalf("mails:\n%s", all)
	}
}
