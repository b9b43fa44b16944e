package site_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/outpost-auth/outpost/internal/keys"
	"github.com/outpost-auth/outpost/internal/siteissue"
	"github.com/outpost-auth/outpost/internal/sitewire"
	"github.com/outpost-auth/outpost/site"
)

// The common case at a site: install the provisioning package once, then
// check any technician's code, each step accepted once.
func Example() {
	ctx := context.Background()
	now := time.Date(2031, 5, 1, 12, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now } // the site's clock
	master, err := keys.MasterFromBytes([]byte("an example master key, 32 bytes!"))
	if err != nil {
		fmt.Println(err)
		return
	}
	pass := []byte("correct horse battery staple")
	pkg := examplePackage(master, pass, now)
	dir, err := os.MkdirTemp("", "outpost-site-")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer os.RemoveAll(dir)

	// Once, at the site: install the package, pinning the server's key.
	s, err := site.Init(ctx, dir, site.InitConfig{SiteID: "cab-17", ServerKey: master.Signer(0).Public,
		Package: pkg, Passphrase: pass, Now: clock})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer s.Close()

	// Technician tech-042's authenticator app shows the code of the seed
	// the server derived for them (its credential).
	seed := site.TechnicianSeed(siteissue.ScopeKey(master, "north", 1), "tech-042")
	code, _ := site.DefaultPolicy().OTP().Generate(seed, 0, now)

	d, err := s.Verify(ctx, "tech-042", code)
	fmt.Println("accepted:", d.OK, "epoch", d.Epoch, err)
	d, err = s.Verify(ctx, "tech-042", code)
	fmt.Println("again:", d.Reason, errors.Is(err, site.ErrRefused), errors.Is(err, site.ErrReplayed))
	// Output:
	// accepted: true epoch 1 <nil>
	// again: replayed true true
}

// examplePackage stands in for the server ('outpost admin site provision'):
// the package of site cab-17 in scope north, epochs 1 and 2, its scope keys
// sealed under pass (with an example's argon2id cost).
func examplePackage(master *keys.Master, pass []byte, now time.Time) []byte {
	signer := master.Signer(0)
	start := now.Add(-24 * time.Hour)
	month := 30 * 24 * time.Hour
	epochs := []sitewire.Epoch{{N: 1, Start: start, End: start.Add(month)}, {N: 2, Start: start.Add(month), End: start.Add(2 * month)}}
	list, err := sitewire.BuildRevocationList(signer, "north", 1, now, nil)
	if err != nil {
		panic(err)
	}
	pol, err := site.MarshalPolicy(site.DefaultPolicy())
	if err != nil {
		panic(err)
	}
	pkg, err := sitewire.BuildPackage(signer, sitewire.PackageSpec{Site: "cab-17", Scope: "north", Policy: pol, Epochs: epochs,
		ScopeKeys: [][]byte{
			siteissue.ScopeKey(master, "north", 1),
			siteissue.ScopeKey(master, "north", 2),
		},
		Revocation: list, Serial: 1, IssuedAt: now}, pass, keys.KDFParams{Time: 1, MemoryKiB: 8 << 10, Threads: 1})
	if err != nil {
		panic(err)
	}
	return pkg
}
