package ca_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"testing"
	"time"

	"github.com/outpost-auth/outpost/internal/ca"
	"github.com/outpost-auth/outpost/internal/keys"
	"github.com/outpost-auth/outpost/internal/store"
	"github.com/outpost-auth/outpost/internal/store/storetest"
)

var (
	ctx  = context.Background()
	when = time.Date(2031, 3, 1, 9, 0, 0, 0, time.UTC)
)

func master(t *testing.T, seed byte) *keys.Master {
	m, err := keys.MasterFromBytes(bytes.Repeat([]byte{seed}, keys.Size))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestLoadOrCreate(t *testing.T) {
	st := storetest.Open(t, storetest.SQLitePath(t))
	cs := st.(store.CAStore)
	if _, err := ca.Load(ctx, cs, master(t, 1)); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Load of an empty store: %v", err)
	}
	a, created, err := ca.LoadOrCreate(ctx, cs, master(t, 1), "test", when)
	if err != nil || !created {
		t.Fatalf("first: %v %v", created, err)
	}
	b, created, err := ca.LoadOrCreate(ctx, cs, master(t, 1), "test", when.Add(time.Hour))
	if err != nil || created || !b.Root.Equal(a.Root) || !b.Issuing.Equal(a.Issuing) {
		t.Fatalf("second: created %v, same %v, %v", created, b.Root.Equal(a.Root), err)
	}
	if !a.Root.IsCA || !a.Issuing.IsCA || !a.Issuing.MaxPathLenZero || a.Issuing.CheckSignatureFrom(a.Root) != nil {
		t.Error("the root and issuing CA are not a CA chain")
	}
	// The private keys are sealed: another master key opens nothing, and
	// the stored bytes hold no PKCS#8 key.
	if _, err := ca.Load(ctx, cs, master(t, 2)); err == nil {
		t.Error("another master key opened the issuing key")
	}
	_, ik, _ := cs.CAKeys(ctx)
	if _, err := x509.ParsePKCS8PrivateKey(ik.SealedKey); err == nil {
		t.Error("the issuing key is stored in the clear")
	}
	pemRoot, err := ca.StoredRootPEM(ctx, cs)
	if err != nil || !bytes.Equal(pemRoot, a.RootPEM()) {
		t.Errorf("StoredRootPEM: %v", err)
	}
}

func TestDeviceAndServerCertificates(t *testing.T) {
	st := storetest.Open(t, storetest.SQLitePath(t))
	a, _, err := ca.LoadOrCreate(ctx, st.(store.CAStore), master(t, 1), "test", when)
	if err != nil {
		t.Fatal(err)
	}
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, sn, err := a.IssueDevice(k.Public(), "acme", "SN-1", when, when.Add(24*time.Hour))
	if err != nil || len(sn) != 32 {
		t.Fatalf("IssueDevice: %q %v", sn, err)
	}
	c, _ := x509.ParseCertificate(der)
	id, err := a.VerifyDevice(c, when.Add(time.Hour))
	if err != nil || id.Realm != "acme" || id.Serial != "SN-1" {
		t.Fatalf("VerifyDevice = %+v, %v", id, err)
	}
	if _, err := a.VerifyDevice(c, when.Add(25*time.Hour)); !errors.Is(err, ca.ErrNotDevice) {
		t.Errorf("expired: %v", err)
	}
	// The listener's certificate is not a client certificate.
	now := when
	get := a.ServerCertificates([]string{"127.0.0.1", "device.example"}, func() time.Time { return now })
	sc, err := get(nil)
	if err != nil || sc.Leaf.VerifyHostname("device.example") != nil || sc.Leaf.VerifyHostname("127.0.0.1") != nil {
		t.Fatalf("server certificate: %v", err)
	}
	if _, err := a.VerifyDevice(sc.Leaf, now); !errors.Is(err, ca.ErrNotDevice) {
		t.Errorf("the listener's certificate passed as a device's: %v", err)
	}
	if again, _ := get(nil); again != sc {
		t.Error("the listener's certificate was not kept")
	}
	now = now.Add(ca.ServerValidity * 3 / 4)
	if renewed, _ := get(nil); renewed == sc || !renewed.Leaf.NotAfter.After(sc.Leaf.NotAfter) {
		t.Error("the listener's certificate was not renewed with a third of its life left")
	}
}
