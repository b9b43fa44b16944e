// mklegacy made sites.db and legacy-cab-1.pkg in this directory with the
// site issuer of commit 9a8baeb, the last one that kept its state in a
// SQLite file of its own, for TestMigrateLegacy. It builds only against
// that commit:
//
//	git archive 9a8baeb | tar -x -C /tmp/old && mkdir /tmp/old/cmd/mklegacy
//	cp mklegacy.go /tmp/old/cmd/mklegacy/main.go
//	(cd /tmp/old && go run ./cmd/mklegacy DIR)
//
// The master key is the bytes 00 01 … 1f; the clock is fixed.
package main

import (
	"context"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"time"

	"github.com/outpost-auth/outpost/internal/keys"
	"github.com/outpost-auth/outpost/internal/siteissue"
	"github.com/outpost-auth/outpost/site"
)

func main() {
	dir := os.Args[1]
	ctx := context.Background()
	mb := make([]byte, 32)
	for i := range mb {
		mb[i] = byte(i)
	}
	m, err := keys.MasterFromBytes(mb)
	check(err)
	is, err := siteissue.Open(ctx, dir, m)
	check(err)
	now := time.Date(2026, 3, 10, 12, 0, 0, 0, time.UTC)
	is.Now = func() time.Time { return now }
	kdf := keys.KDFParams{Time: 1, MemoryKiB: 8 << 10, Threads: 1}
	p := site.DefaultPolicy()
	p.Window = 2
	p.SiteFailuresPerHour = 10
	_, err = is.SetPolicy(ctx, "north", p)
	check(err)
	_, err = is.Provision(ctx, "north", "cab-1", []byte("legacy package passphrase"), kdf)
	check(err)
	_, err = is.Provision(ctx, "north", "cab-2", []byte("legacy package passphrase"), kdf)
	check(err)
	_, err = is.Credential(ctx, "north", "tech-1", siteissue.Next, false)
	check(err)
	_, err = is.Revoke(ctx, "north", []string{"tech-7"}, nil, "lost phone")
	check(err)
	now = now.Add(time.Hour)
	_, err = is.Roll(ctx, "north")
	check(err)
	now = now.Add(time.Minute)
	pk, err := is.Provision(ctx, "north", "cab-1", []byte("legacy package passphrase"), kdf)
	check(err)
	check(os.WriteFile(filepath.Join(dir, "legacy-cab-1.pkg"), pk.Package, 0o644))
	_, err = is.Credential(ctx, "south", "tech-2", siteissue.Current, false)
	check(err)
	sc, err := is.Scope(ctx, "north")
	check(err)
	fmt.Printf("%+v\n", sc)
	sc2, _ := is.Scope(ctx, "south")
	fmt.Printf("%+v\n", sc2)
	check(is.Close())
}

func check(err error) {
	if err != nil {
		log.Fatal(err)
	}
}
