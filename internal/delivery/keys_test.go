package delivery

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"testing"
	"time"

	"github.com/outpost-auth/outpost/internal/codecheck"
	"github.com/outpost-auth/outpost/internal/deliverytoken"
	"github.com/outpost-auth/outpost/internal/keys"
)

func TestPublicKeys(t *testing.T) {
	m, err := keys.GenerateMaster()
	if err != nil {
		t.Fatal(err)
	}
	s := &Service{Master: m}
	a, err := s.PublicKeys("acme")
	if err != nil {
		t.Fatal(err)
	}
	if len(a.Token) != ed25519.PublicKeySize || len(a.Seal) != codecheck.SealKeySize {
		t.Fatalf("key sizes %d %d", len(a.Token), len(a.Seal))
	}
	again, _ := (&Service{Master: m}).PublicKeys("acme")
	if !a.Token.Equal(again.Token) || !bytes.Equal(a.Seal, again.Seal) {
		t.Fatal("keys are not stable for one master and realm")
	}
	b, _ := s.PublicKeys("beta")
	if a.Token.Equal(b.Token) || bytes.Equal(a.Seal, b.Seal) {
		t.Fatal("two realms share a key")
	}
	m2, _ := keys.GenerateMaster()
	c, _ := (&Service{Master: m2}).PublicKeys("acme")
	if a.Token.Equal(c.Token) || bytes.Equal(a.Seal, c.Seal) {
		t.Fatal("two masters share a key")
	}
	// The artifact signing key is another key.
	if a.Token.Equal(m.Signer(0).Public) {
		t.Fatal("token key is the artifact signing key")
	}

	// The private halves work with the public halves, and only in their realm.
	now := time.Date(2031, 3, 4, 10, 0, 0, 0, time.UTC)
	priv, _ := s.tokenKey("acme")
	text, err := deliverytoken.Sign(priv, deliverytoken.Claims{Realm: "acme", Delivery: "p", Version: 1, NotAfter: now.Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := deliverytoken.Verify(a.Token, text, now); err != nil {
		t.Fatal(err)
	}
	if _, err := deliverytoken.Verify(b.Token, text, now); !errors.Is(err, deliverytoken.ErrSignature) {
		t.Fatalf("another realm's key verified: %v", err)
	}
	bind := codecheck.Binding{Realm: "acme", Delivery: "p", Version: 1, Device: "d"}
	sealed, err := codecheck.Seal(a.Seal, bind, "582039170")
	if err != nil {
		t.Fatal(err)
	}
	sp, _, _ := s.sealKeys("acme")
	if got, err := codecheck.Open(sp, bind, sealed); err != nil || got != "582039170" {
		t.Fatalf("Open = %q %v", got, err)
	}
	bp, _, _ := s.sealKeys("beta")
	if _, err := codecheck.Open(bp, bind, sealed); !errors.Is(err, codecheck.ErrMalformed) {
		t.Fatalf("another realm's key opened it: %v", err)
	}

	if _, err := s.PublicKeys(""); !errors.Is(err, ErrInvalid) {
		t.Fatalf("empty realm: %v", err)
	}
	if _, err := (&Service{}).PublicKeys("acme"); err == nil {
		t.Fatal("no master key: no error")
	}
}
