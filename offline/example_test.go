package offline_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/outpost-auth/outpost/internal/bundle"
	"github.com/outpost-auth/outpost/internal/cost"
	"github.com/outpost-auth/outpost/internal/keys"
	"github.com/outpost-auth/outpost/offline"
	"github.com/outpost-auth/outpost/otp"
)

// The common case on a field device: a store that trusts the server's key,
// a bundle imported, a code verified once and a static secret released.
func Example() {
	ctx := context.Background()
	now := func() time.Time { return time.Date(2031, 5, 1, 12, 0, 0, 0, time.UTC) } // the device clock
	server := exampleServerKey()
	dir, err := os.MkdirTemp("", "outpost-field-")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer os.RemoveAll(dir)

	// Once, on the device: a store pinning the server's public key.
	s, err := offline.Init(ctx, dir, offline.Config{DeviceID: "dev-7", ServerKey: server.Public}, offline.Options{Now: now})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer s.Close()

	// A bundle the server issued for this device (see exampleBundle).
	imp, err := s.Import(ctx, exampleBundle(server, now()))
	fmt.Println("imported", imp.Entries, "entries for", imp.TokenKey, err)

	// Alice types the code of her token's counter 0.
	res, err := s.Verify(ctx, offline.Attempt{User: "alice", Code: "755224"})
	if err != nil {
		fmt.Println(err)
		return
	}
	door, err := res.Secret("door")
	fmt.Printf("accepted counter %d; door code %s %v\n", res.Counter, door, err)

	// The same code again is refused (and counts as a failure).
	_, err = s.Verify(ctx, offline.Attempt{User: "alice", Code: "755224"})
	fmt.Println("again:", errors.Is(err, offline.ErrRefused))
	// Output:
	// imported 10 entries for acme/alice/tok-1 <nil>
	// accepted counter 0; door code 4711 <nil>
	// again: true
}

// exampleServerKey is the server's artifact signing key.
func exampleServerKey() *keys.Signer {
	m, err := keys.MasterFromBytes([]byte("an example master key, 32 bytes!"))
	if err != nil {
		panic(err)
	}
	return m.Signer(0)
}

// exampleBundle stands in for the server ('outpost admin offline bundle',
// POST /v1/offline/bundles): alice's HOTP token (RFC 4226's test secret),
// counters 0 to 9, for device dev-7, with a static secret. Its argon2id
// cost is an example's; a real bundle's is cost.Default, above the floor.
func exampleBundle(server *keys.Signer, now time.Time) []byte {
	data, _, err := bundle.Issue(context.Background(), bundle.Request{
		Realm: "acme", User: "alice", TokenID: "tok-1", Device: "dev-7",
		Params: otp.Params{Type: otp.TypeHOTP, Algorithm: otp.SHA1, Digits: 6},
		Secret: []byte("12345678901234567890"), First: 0, Count: 10,
		Secrets: map[string][]byte{"door": []byte("4711")},
		KDF:     cost.KDF{Time: 1, MemoryKiB: 64, Threads: 1}, Override: true,
		Now: now,
	}, server, nil)
	if err != nil {
		panic(err)
	}
	return data
}
