package store_test

import (
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/outpost-auth/outpost/internal/eventlog"
	"github.com/outpost-auth/outpost/internal/store"
	"github.com/outpost-auth/outpost/internal/store/storetest"
)

// benchParallelism: goroutines per CPU in the parallel benchmarks, as a
// server has many requests in flight.
const benchParallelism = 8

// BenchmarkAdvanceToken measures durable replay-state updates: from many
// goroutines, each on its own token (distinct users verifying at once), and
// from one goroutine (the latency of one). Beside them, the floor each engine
// cannot go below for one request: one fsync for SQLite (a commit in WAL
// mode with synchronous=FULL is one), one round trip for PostgreSQL (Ping,
// in parallel like the parallel case).
//
//	go test -run '^$' -bench . -benchtime 2s ./internal/store/
func BenchmarkAdvanceToken(b *testing.B) {
	for _, eng := range engines {
		for _, parallel := range []bool{true, false} {
			name := eng.name
			if !parallel {
				name += "-serial"
			}
			b.Run(name, func(b *testing.B) {
				st := storetest.Open(b, eng.dsn(b))
				must(b, st.CreateRealm(ctx, store.Realm{ID: "r1"}))
				must(b, st.CreateUser(ctx, store.User{Realm: "r1", ID: "alice"}))
				const tokens = 256
				for i := range tokens {
					must(b, st.CreateToken(ctx, store.Token{Realm: "r1", UserID: "alice", ID: fmt.Sprint("t", i), Type: "hotp",
						Algorithm: "SHA1", Digits: 6, SeedMode: store.SeedDerived, Status: store.TokenActive}))
				}
				var next atomic.Int64
				advance := func(pb interface{ Next() bool }) {
					id := fmt.Sprint("t", next.Add(1)-1)
					for v := int64(0); pb.Next(); v++ {
						if err := st.AdvanceToken(ctx, "r1", "alice", id, v); err != nil {
							b.Error(err)
							return
						}
					}
				}
				b.ResetTimer()
				if parallel {
					b.SetParallelism(benchParallelism)
					b.RunParallel(func(pb *testing.PB) { advance(pb) })
				} else {
					advance(loop{b})
				}
			})
		}
	}
	b.Run("sqlite-floor-fsync", func(b *testing.B) {
		f, err := os.Create(filepath.Join(b.TempDir(), "fsync"))
		must(b, err)
		defer f.Close()
		for b.Loop() {
			_, err := f.Write([]byte("12345678"))
			must(b, err)
			must(b, f.Sync())
		}
	})
	b.Run("postgres-floor-ping", func(b *testing.B) {
		st := storetest.Open(b, storetest.PostgresDSN(b))
		b.SetParallelism(benchParallelism)
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if err := st.Ping(ctx); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}

// BenchmarkAppendAudit measures audit appends from many goroutines at once:
// each reads the last entry, hashes, and inserts, one at a time per process.
func BenchmarkAppendAudit(b *testing.B) {
	for _, eng := range engines {
		b.Run(eng.name, func(b *testing.B) {
			st := storetest.Open(b, eng.dsn(b))
			e := eventlog.Entry{Kind: "verify.ok", Actor: "api:bench", Subject: "alice", Data: []byte(`{"token":"t1"}`)}
			b.SetParallelism(benchParallelism)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := st.AppendAudit(ctx, e); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}

// loop adapts b.Loop to the Next of testing.PB.
type loop struct{ b *testing.B }

func (l loop) Next() bool { return l.b.Loop() }
