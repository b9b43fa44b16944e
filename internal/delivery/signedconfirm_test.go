package delivery

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"testing"
	"time"

	"github.com/outpost-auth/outpost/internal/artifact"
	"github.com/outpost-auth/outpost/internal/keys"
	"github.com/outpost-auth/outpost/internal/store"
)

// deviceSigner registers an active device id in realm with a key from seed.
func deviceSigner(t *testing.T, st store.Store, realm, id string, seed byte) *keys.Signer {
	t.Helper()
	priv := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{seed}, 32))
	pub := priv.Public().(ed25519.PublicKey)
	s := &keys.Signer{Private: priv, Public: pub, KeyID: keys.KeyID(pub)}
	if err := st.(store.SyncStore).CreateDevice(ctx, store.Device{Realm: realm, ID: id, Status: store.DeviceActive,
		PublicKey: pub, KeyID: s.KeyID, CreatedAt: t0}); err != nil {
		t.Fatal(err)
	}
	return s
}

// TestConfirmSigned: the device-signed online confirm, and what the holder
// of a device can sign with its own key.
func TestConfirmSigned(t *testing.T) {
	perEngine(t, func(t *testing.T, svc *Service, st store.Store, now *time.Time) {
		dev1 := deviceSigner(t, st, "r1", "dev-1", 1)
		dev2 := deviceSigner(t, st, "r1", "dev-2", 2)
		if err := st.CreateRealm(ctx, store.Realm{ID: "r2", Name: "r2", CreatedAt: t0}); err != nil {
			t.Fatal(err)
		}
		devX := deviceSigner(t, st, "r2", "dev-x", 3)
		stranger := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{4}, 32))
		strangerSigner := &keys.Signer{Private: stranger, Public: stranger.Public().(ed25519.PublicKey), KeyID: keys.KeyID(stranger.Public().(ed25519.PublicKey))}
		_, code, _ := svc.Create(ctx, "r1", request("p1"), "admin")

		sign := func(s *keys.Signer, device string, b ConfirmBody, at time.Time) []byte {
			data, err := SignConfirm(s, device, b, at)
			if err != nil {
				t.Fatal(err)
			}
			return data
		}
		body := ConfirmBody{Realm: "r1", Delivery: "p1", Code: code}
		long, _ := artifact.Sign(dev1, artifact.Header{Type: ConfirmType, Version: ConfirmVersion, Subject: "dev-1",
			NotBefore: *now, NotAfter: now.Add(time.Hour)}, body)
		tampered := sign(dev1, "dev-1", body, *now)
		tampered[bytes.Index(tampered, []byte(`"payload":"`))+12] ^= 1
		attacks := []struct {
			name string
			data []byte
			want error
		}{
			{"another device's confirm for this delivery", sign(dev2, "dev-2", body, *now), ErrWrongDevice},
			{"signed by dev-2 but naming dev-1", sign(dev2, "dev-1", body, *now), ErrDeviceAuth},
			{"an unregistered key", sign(strangerSigner, "dev-1", body, *now), ErrDeviceAuth},
			{"a device of another realm", sign(devX, "dev-x", body, *now), ErrWrongDevice},
			{"for another delivery than the path", sign(dev1, "dev-1", ConfirmBody{Realm: "r1", Delivery: "p2", Code: code}, *now), ErrInvalid},
			{"expired", sign(dev1, "dev-1", body, now.Add(-10*time.Minute)), ErrDeviceAuth},
			{"valid an hour", long, ErrDeviceAuth},
			{"tampered", tampered, ErrDeviceAuth},
			{"garbage", []byte(`{"outpost_artifact":1}`), ErrDeviceAuth},
			{"oversized", make([]byte, MaxConfirmSize+1), ErrDeviceAuth},
		}
		for _, a := range attacks {
			if _, err := svc.ConfirmSigned(ctx, "p1", a.data); !errors.Is(err, a.want) {
				t.Errorf("%s: %v, want %v", a.name, err, a.want)
			}
		}
		if n := attempts(t, svc, "p1", 1); n != 0 {
			t.Fatalf("attacks used %d attempts", n)
		}

		good := sign(dev1, "dev-1", body, *now)
		out, err := svc.ConfirmSigned(ctx, "p1", good)
		if err != nil || out.Delivery.State != Delivered {
			t.Fatalf("confirm: %+v %v", out, err)
		}
		if _, err := svc.ConfirmSigned(ctx, "p1", good); !errors.Is(err, ErrReplayed) {
			t.Fatalf("replayed: %v", err)
		}
		kinds, data := auditOf(t, st)
		last := len(kinds) - 1
		if kinds[last] != "delivery.deliver" || !bytes.Contains([]byte(data[last]), []byte(`"by_device":"dev-1"`)) {
			t.Fatalf("audit: %s %s", kinds[last], data[last])
		}

		// A revoked device signs nothing the server believes.
		_, c2, _ := svc.Create(ctx, "r1", Request{ID: "p2", Device: "dev-2", Recipient: Recipient{Email: "b@example.org"},
			NotAfter: now.Add(time.Hour), Mode: ModeHash}, "admin")
		if err := st.(store.SyncStore).RevokeDevice(ctx, "r1", "dev-2", *now); err != nil {
			t.Fatal(err)
		}
		if _, err := svc.ConfirmSigned(ctx, "p2", sign(dev2, "dev-2", ConfirmBody{Realm: "r1", Delivery: "p2", Code: c2}, *now)); !errors.Is(err, ErrDeviceAuth) {
			t.Fatalf("revoked device: %v", err)
		}
	})
}
