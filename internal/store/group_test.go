package store

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/outpost-auth/outpost/internal/eventlog"
)

func TestCommitterBatches(t *testing.T) {
	var batches, total atomic.Int64
	release := make(chan struct{})
	c := newCommitter(func(batch []*pending[int]) {
		if batches.Add(1) == 1 {
			<-release // hold the first batch (its caller's, alone) so that the others queue up
		}
		total.Add(int64(len(batch)))
		for _, p := range batch {
			if p.req%2 == 1 {
				p.err = errors.New("odd")
			}
		}
	})
	defer c.close()

	const n = 50
	errs := make([]error, n)
	var wg sync.WaitGroup
	wg.Go(func() { errs[0] = c.do(context.Background(), 0) })
	for batches.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	for i := 1; i < n; i++ {
		wg.Go(func() { errs[i] = c.do(context.Background(), i) })
	}
	for len(c.queue) < n-2 { // the loop holds one, waiting for the first to finish
		time.Sleep(time.Millisecond)
	}
	close(release)
	wg.Wait()
	for i, err := range errs {
		if (err != nil) != (i%2 == 1) {
			t.Errorf("request %d: error %v", i, err)
		}
	}
	if total.Load() != n || batches.Load() != 2 {
		t.Errorf("%d requests in %d batches, want %d in 2 (the queued ones together)", total.Load(), batches.Load(), n)
	}
}

func TestCommitterContextAndClose(t *testing.T) {
	applied := make(chan int, 10)
	started, block := make(chan struct{}), make(chan struct{})
	c := newCommitter(func(batch []*pending[int]) {
		for _, p := range batch {
			if p.req == 0 {
				close(started)
				<-block
			}
			applied <- p.req
		}
	})
	go c.do(context.Background(), 0) // applied alone by its caller: the loop waits
	<-started

	// A request whose context ends while queued (or held by the loop,
	// waiting for the batch in progress) is answered with its error and
	// never applied.
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- c.do(ctx, 1) }()
	for deadline := time.Now().Add(time.Second); len(c.queue) == 0 && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond) // until the loop has it (the queue empties again) or a second passed
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled request: %v", err)
	}
	close(block)
	if got := <-applied; got != 0 {
		t.Errorf("applied %d first", got)
	}
	c.close()
	select {
	case got := <-applied:
		t.Errorf("cancelled request %d was applied", got)
	default:
	}
	if err := c.do(context.Background(), 2); !errors.Is(err, errClosed) {
		t.Errorf("after close: %v", err)
	}
}

// TestSQLiteBatchSavepoints: in one group-commit batch, a write failing with
// an expected error is rolled back alone, while an unexpected error fails the
// whole batch and commits nothing.
func TestSQLiteBatchSavepoints(t *testing.T) {
	e, err := openSQLite(filepath.Join(t.TempDir(), "db"))
	if err != nil {
		t.Fatal(err)
	}
	defer e.close()
	ctx := context.Background()
	if err := migrate(ctx, e, time.Now); err != nil {
		t.Fatal(err)
	}
	insert := func(id string, then error) func(q querier) error {
		return func(q querier) error {
			if _, err := q.exec(ctx, `INSERT INTO realms (id, name, created_us) VALUES ($1, '', 1)`, id); err != nil {
				return err
			}
			return then
		}
	}
	exists := func(id string) bool {
		var one int
		return e.reader().queryRow(ctx, `SELECT 1 FROM realms WHERE id = $1`, id).Scan(&one) == nil
	}
	batch := func(fns ...func(q querier) error) []error {
		ps := make([]*pending[func(q querier) error], len(fns))
		for i, fn := range fns {
			ps[i] = &pending[func(q querier) error]{ctx: ctx, req: fn}
		}
		e.applyWrites(ps)
		errs := make([]error, len(ps))
		for i, p := range ps {
			errs[i] = p.err
		}
		return errs
	}

	errs := batch(insert("a", nil), insert("b", ErrNotFound), insert("a", nil), insert("c", nil))
	if errs[0] != nil || !errors.Is(errs[1], ErrNotFound) || !errors.Is(errs[2], ErrExists) || errs[3] != nil {
		t.Errorf("batch errors %v", errs)
	}
	if !exists("a") || exists("b") || !exists("c") {
		t.Errorf("after the batch: a %v, b %v (rolled back), c %v", exists("a"), exists("b"), exists("c"))
	}

	boom := errors.New("disk on fire")
	errs = batch(insert("d", nil), insert("e", boom), insert("f", nil))
	for i, err := range errs {
		if !errors.Is(err, boom) {
			t.Errorf("write %d of an aborted batch: %v", i, err)
		}
	}
	if exists("d") || exists("e") || exists("f") {
		t.Error("an aborted batch committed something")
	}
}

// TestAuditBatchSizes appends batches of every size from 1 to 40 directly
// (powers of two and the sizes split into several INSERTs), then checks
// the whole chain.
func TestAuditBatchSizes(t *testing.T) {
	for n := 1; n <= maxBatch; n *= 2 {
		if got := strings.Count(auditInsert(n), "$"); got != 8*n {
			t.Errorf("auditInsert(%d) has %d parameters", n, got)
		}
	}
	e, err := openSQLite(filepath.Join(t.TempDir(), "db"))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := migrate(ctx, e, time.Now); err != nil {
		t.Fatal(err)
	}
	s := newSQLStore(e)
	defer s.Close()
	total := 0
	for size := 1; size <= 40; size++ {
		batch := make([]*pending[*auditAppend], size)
		for i := range batch {
			batch[i] = &pending[*auditAppend]{ctx: ctx, req: &auditAppend{in: eventlog.Entry{Time: time.Now(), Kind: "k", Subject: fmt.Sprint(size, "/", i)}}}
		}
		s.appendBatch(batch)
		for i, p := range batch {
			total++
			if p.err != nil || p.req.out.Seq != uint64(total) {
				t.Fatalf("batch of %d, entry %d: seq %d, error %v", size, i, p.req.out.Seq, p.err)
			}
		}
	}
	all, err := s.ListAudit(ctx, 0, MaxListLimit) // 820 entries: one page
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != total {
		t.Fatalf("%d entries stored, %d appended", len(all), total)
	}
	if i, err := eventlog.VerifyChain(nil, all, nil); err != nil {
		t.Fatalf("chain broken at %d: %v", i, err)
	}
}

// TestAcceptChainsOnInOneBatch: SQLite acceptances in one writer batch chain
// on from the head the previous one wrote, and re-read it when another
// write of the batch appended meanwhile (its number is taken); writes of a
// batch of one run without a savepoint and roll back alone.
func TestAcceptChainsOnInOneBatch(t *testing.T) {
	ctx := context.Background()
	e, err := openSQLite(filepath.Join(t.TempDir(), "db"))
	if err != nil {
		t.Fatal(err)
	}
	s := newSQLStore(e)
	defer s.Close()
	must := func(t *testing.T, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := migrate(ctx, e, time.Now); err != nil {
		t.Fatal(err)
	}
	must(t, s.CreateRealm(ctx, Realm{ID: "r", Name: "r"}))
	must(t, s.CreateUser(ctx, User{Realm: "r", ID: "u"}))
	for _, id := range []string{"a", "b", "c"} {
		must(t, s.CreateToken(ctx, Token{Realm: "r", UserID: "u", ID: id, Type: "hotp", Algorithm: "SHA1", Digits: 6, SeedMode: SeedDerived, Status: TokenActive}))
	}
	entry := eventlog.Entry{Time: time.Now(), Kind: "verify.ok", Subject: "u"}
	accept := func(id string) func(q querier) error {
		return func(q querier) error { _, err := s.acceptSQLite(ctx, q, "r", "u", id, 1, -1, entry); return err }
	}
	other := func(q querier) error { // another writer appending in the same batch
		h := &batchHead{}
		if err := readHead(ctx, q, h); err != nil {
			return err
		}
		out, err := eventlog.Next(&eventlog.Entry{Seq: h.seq, Hash: h.hash}, eventlog.Entry{Time: time.Now(), Kind: "admin.x", Subject: "u"}, nil)
		if err != nil {
			return err
		}
		_, err = q.exec(ctx, auditInsert(1), int64(out.Seq), out.Time.UnixMicro(), out.Kind, out.Actor, out.Subject, nil, out.Prev, out.Hash)
		return err
	}
	if _, err := s.AppendAudit(ctx, eventlog.Entry{Time: time.Now(), Kind: "first", Subject: "u"}); err != nil {
		t.Fatal(err)
	}
	fns := []func(q querier) error{accept("a"), other, accept("b"), accept("a") /* replayed */, accept("c")}
	batch := make([]*pending[func(q querier) error], len(fns))
	for i, fn := range fns {
		batch[i] = &pending[func(q querier) error]{ctx: ctx, req: fn}
	}
	e.applyWrites(batch)
	for i, p := range batch {
		if want := i == 3; errors.Is(p.err, ErrReplayed) != want || (!want && p.err != nil) {
			t.Fatalf("write %d: %v", i, p.err)
		}
	}
	// A stale acceptance (another replica moved the user's version) fails
	// alone: the failure counted beside it in the same batch stays.
	must(t, s.CreateUser(ctx, User{Realm: "r", ID: "v"}))
	stale := func(q querier) error { _, err := s.acceptSQLite(ctx, q, "r", "u", "b", 2, 99, entry); return err }
	count := func(q querier) error {
		_, err := q.exec(ctx, `UPDATE users SET failures = failures + 1, version = version + 1 WHERE realm = 'r' AND id = 'v'`)
		return err
	}
	mixed := []*pending[func(q querier) error]{{ctx: ctx, req: stale}, {ctx: ctx, req: count}}
	e.applyWrites(mixed)
	if !errors.Is(mixed[0].err, ErrStale) || mixed[1].err != nil {
		t.Fatalf("stale acceptance beside a failure count: %v, %v", mixed[0].err, mixed[1].err)
	}
	if v, err := s.GetUser(ctx, "r", "v"); err != nil || v.Failures != 1 {
		t.Fatalf("the failure counted beside a stale acceptance: %+v, %v", v, err)
	}
	// A batch of one: a replay rolls back alone, an acceptance commits.
	for _, c := range []struct {
		id      string
		wantErr error
	}{{"a", ErrReplayed}, {"nope", ErrNotFound}} {
		one := []*pending[func(q querier) error]{{ctx: ctx, req: accept(c.id)}}
		e.applyWrites(one)
		if !errors.Is(one[0].err, c.wantErr) {
			t.Fatalf("batch of one, token %s: %v, want %v", c.id, one[0].err, c.wantErr)
		}
	}
	all, err := s.ListAudit(ctx, 0, MaxListLimit)
	must(t, err)
	if len(all) != 5 {
		t.Fatalf("%d entries, want 5 (first, a, other, b, c)", len(all))
	}
	if i, err := eventlog.VerifyChain(nil, all, nil); err != nil {
		t.Fatalf("chain broken at %d: %v", i, err)
	}
}

// TestCommitterPanicAlone: a write that panics while its caller applies it
// alone propagates the panic to that caller and does not hold up the next.
func TestCommitterPanicAlone(t *testing.T) {
	c := newCommitter(func(batch []*pending[int]) {
		for _, p := range batch {
			if p.req == 1 {
				panic("write 1")
			}
		}
	})
	defer c.close()
	func() {
		defer func() {
			if r := recover(); r != "write 1" {
				t.Errorf("recovered %v, want the write's panic", r)
			}
		}()
		_ = c.do(context.Background(), 1)
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.do(ctx, 2); err != nil {
		t.Fatalf("the write after a panic: %v", err)
	}
}

func TestMigrationEngine(t *testing.T) {
	for _, c := range []struct {
		sql, want string
		bad       bool
	}{
		{"CREATE TABLE t (a TEXT);", "", false},
		{"-- 0001: a comment\nCREATE TABLE t (a TEXT);", "", false},
		{"-- engine: sqlite\nCREATE TABLE t (a TEXT);", "sqlite", false},
		{"-- engine:postgres\n", "postgres", false},
		{"-- engine: oracle\nCREATE TABLE t (a TEXT);", "", true},
		{"-- engine:\n", "", true},
	} {
		got, err := migrationEngine(c.sql)
		if got != c.want || (err != nil) != c.bad {
			t.Errorf("migrationEngine(%q) = %q, %v", c.sql, got, err)
		}
	}
}
