package notify

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"net/mail"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/outpost-auth/outpost/internal/qr"
)

var t0 = time.Date(2031, 5, 6, 7, 8, 9, 0, time.UTC)

func msg() Message {
	return Message{ID: "ob-0123", Email: "ana@example.org", Delivery: "parcel-1", Code: "123456789", NotAfter: t0.Add(48 * time.Hour), Time: t0}
}

func TestGrouped(t *testing.T) {
	for in, want := range map[string]string{"": "", "12": "12", "123": "123", "1234": "123 4", "123456789": "123 456 789"} {
		if got := Grouped(in); got != want {
			t.Errorf("Grouped(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestComposePlain(t *testing.T) {
	s := &SMTP{From: "Parcels <parcels@shipper.example>"}
	b, err := s.Compose(msg())
	if err != nil {
		t.Fatal(err)
	}
	m, err := mail.ReadMessage(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	if m.Header.Get("Message-ID") != "<ob-0123@shipper.example>" || m.Header.Get("To") != "ana@example.org" ||
		!strings.HasPrefix(m.Header.Get("Content-Type"), "text/plain") {
		t.Fatalf("headers: %v", m.Header)
	}
	body, _ := io.ReadAll(m.Body)
	if !strings.Contains(string(body), "parcel-1: 123 456 789\r\n") || !strings.Contains(string(body), "until 2031-05-08 07:08 UTC") {
		t.Fatalf("body:\n%s", body)
	}
	// The same message composes to the same Message-ID: receivers dedupe.
	again, _ := s.Compose(msg())
	if !bytes.Equal(b, again) {
		t.Fatal("a plain message is not stable")
	}
}

// TestComposeToken: a token is shown as text, as a link and as a PNG QR
// code that decodes back to it.
func TestComposeToken(t *testing.T) {
	s := &SMTP{From: "parcels@shipper.example", LinkBase: "https://shipper.example/t/"}
	m := msg()
	m.Token = "OPT1:ABCDEF0123"
	b, err := s.Compose(m)
	if err != nil {
		t.Fatal(err)
	}
	pm, err := mail.ReadMessage(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	mt, params, err := mime.ParseMediaType(pm.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/mixed" {
		t.Fatalf("content type %q: %v", mt, err)
	}
	r := multipart.NewReader(pm.Body, params["boundary"])
	text, err := r.NextPart()
	if err != nil {
		t.Fatal(err)
	}
	tb, _ := io.ReadAll(text)
	if !strings.Contains(string(tb), "OPT1:ABCDEF0123") || !strings.Contains(string(tb), "Link: https://shipper.example/t/OPT1:ABCDEF0123") {
		t.Fatalf("text:\n%s", tb)
	}
	img, err := r.NextPart()
	if err != nil || img.Header.Get("Content-Type") != "image/png" {
		t.Fatalf("attachment: %v %v", img, err)
	}
	raw, _ := io.ReadAll(img)
	png, err := base64.StdEncoding.DecodeString(strings.ReplaceAll(string(raw), "\r\n", ""))
	if err != nil {
		t.Fatal(err)
	}
	if got, err := qr.Decode(bytes.NewReader(png)); err != nil || got != m.Token {
		t.Fatalf("QR = %q, %v", got, err)
	}
}

func TestComposeRefuses(t *testing.T) {
	m := msg()
	m.Email = "ana@example.org\r\nBcc: eve@example.org"
	if _, err := (&SMTP{From: "p@shipper.example"}).Compose(m); !errors.Is(err, ErrPermanent) {
		t.Fatalf("header injection: %v", err)
	}
	if _, err := (&SMTP{From: "not an address"}).Compose(msg()); err == nil {
		t.Fatal("bad From accepted")
	}
	if err := (&SMTP{From: "p@shipper.example"}).Notify(context.Background(), Message{Phone: "+33612345678"}); !errors.Is(err, ErrNoChannel) {
		t.Fatalf("phone through SMTP: %v", err)
	}
	if err := (Channels{}).Notify(context.Background(), msg()); !errors.Is(err, ErrNoChannel) {
		t.Fatalf("no channel: %v", err)
	}
}

func TestPostSignedDown(t *testing.T) {
	err := PostSigned(context.Background(), nil, time.Second, "http://127.0.0.1:1/x?key=gateway-api-key", []byte("k"), []byte("{}"), t0, "id-1")
	if err == nil || errors.Is(err, ErrPermanent) || strings.Contains(err.Error(), "gateway-api-key") {
		t.Fatalf("down gateway: %v", err)
	}
}

// TestPostSignedStatuses: which answers are retried and which are final.
func TestPostSignedStatuses(t *testing.T) {
	for status, permanent := range map[int]bool{200: false, 202: false, 400: true, 401: true, 404: true, 408: false, 429: false, 500: false, 503: false} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(status) }))
		err := PostSigned(context.Background(), nil, time.Second, srv.URL+"?key=gateway-api-key", []byte("k"), []byte("{}"), t0, "id-1")
		srv.Close()
		switch {
		case status < 300 && err != nil:
			t.Errorf("%d: %v", status, err)
		case status >= 300 && (err == nil || errors.Is(err, ErrPermanent) != permanent):
			t.Errorf("%d: %v (permanent %v)", status, err, permanent)
		case err != nil && strings.Contains(err.Error(), "gateway-api-key"):
			t.Errorf("%d: the URL's query leaked: %v", status, err)
		}
	}
}

// TestPostSignedNoRedirect: a malicious endpoint's redirect (307 keeps the
// POST and its body, 302 turns it into a GET) is not followed, so it cannot
// aim the server's requests at another host; it is a final answer.
func TestPostSignedNoRedirect(t *testing.T) {
	var hits atomic.Int32
	inner := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hits.Add(1) }))
	defer inner.Close()
	for _, status := range []int{http.StatusFound, http.StatusTemporaryRedirect, http.StatusPermanentRedirect} {
		evil := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, inner.URL+"/internal", status)
		}))
		err := PostSigned(context.Background(), &http.Client{}, time.Second, evil.URL, []byte("k"), []byte("{}"), t0, "id-1")
		evil.Close()
		if !errors.Is(err, ErrPermanent) {
			t.Errorf("%d: %v, want a final refusal", status, err)
		}
	}
	if hits.Load() != 0 {
		t.Fatalf("the redirect was followed %d times", hits.Load())
	}
}

// TestSMSText: an SMS carries the code, and in token mode the token — as
// a link when a link base is set — so a phone recipient can show it.
func TestSMSText(t *testing.T) {
	m := Message{Delivery: "p1", Code: "123456789", NotAfter: time.Date(2031, 1, 2, 3, 4, 0, 0, time.UTC)}
	if s := SMSText(m, "https://s.example/t/"); !strings.Contains(s, "123 456 789") || strings.Contains(s, "show the courier") {
		t.Fatalf("code mode: %q", s)
	}
	m.Token = "ODT1:ABC"
	if s := SMSText(m, "https://s.example/t/"); !strings.Contains(s, "https://s.example/t/ODT1:ABC") {
		t.Fatalf("token mode with a link: %q", s)
	}
	if s := SMSText(m, ""); !strings.Contains(s, "show the courier: ODT1:ABC") {
		t.Fatalf("token mode without a link: %q", s)
	}
}
