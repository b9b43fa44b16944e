package store_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"testing"
	"time"

	"github.com/outpost-auth/outpost/internal/eventlog"
	"github.com/outpost-auth/outpost/internal/store"
	"github.com/outpost-auth/outpost/internal/store/storetest"
)

// The multi-process test re-executes this test binary as a child that opens
// the database the parent names and races the other child; TestMain routes
// the child there before any test runs.
const (
	childEnv = "OUTPOST_STORE_RACE_CHILD" // the DSN; set only in children
	// raceValues is how many values of the shared sequence, and how many
	// single-value tokens, each child offers.
	raceValues = 150
	raceAudit  = 40 // audit entries each child appends
)

func TestMain(m *testing.M) {
	if dsn := os.Getenv(childEnv); dsn != "" {
		if err := raceChild(dsn, os.Getenv(childEnv+"_INDEX") == "1", os.Stdin, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "race child:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// raceResult is what a child reports: the values it had accepted.
type raceResult struct {
	Seq  []int64 `json:"seq"`  // values of token "seq" accepted
	Same []int   `json:"same"` // k of the tokens "same-k" whose value 42 it got accepted
}

// raceChild opens the store, says "ready", waits for a line on stdin, then
// interleaves: offer the next value of the shared sequence, offer 42 to the
// next single-value token, append an audit entry. It prints its acceptances
// as JSON. The reversed child takes the single-value tokens from the other
// end, so that the two meet however much faster one of them runs.
func raceChild(dsn string, reversed bool, in io.Reader, out io.Writer) error {
	st, err := store.Open(ctx, dsn)
	if err != nil {
		return err
	}
	defer st.Close()
	fmt.Fprintln(out, "ready")
	if _, err := bufio.NewReader(in).ReadString('\n'); err != nil {
		return err
	}
	var res raceResult
	accept := func(err error) (bool, error) {
		if errors.Is(err, store.ErrReplayed) {
			return false, nil
		}
		return err == nil, err
	}
	for v := 1; v <= raceValues; v++ {
		ok, err := accept(st.AdvanceToken(ctx, "r1", "alice", "seq", int64(v)))
		if err != nil {
			return err
		}
		if ok {
			res.Seq = append(res.Seq, int64(v))
		}
		k := v
		if reversed {
			k = raceValues + 1 - v
		}
		if ok, err = accept(st.AdvanceToken(ctx, "r1", "alice", "same-"+strconv.Itoa(k), 42)); err != nil {
			return err
		}
		if ok {
			res.Same = append(res.Same, k)
		}
		if v <= raceAudit {
			if _, err := st.AppendAudit(ctx, eventlog.Entry{Kind: "race", Subject: strconv.Itoa(os.Getpid())}); err != nil {
				return err
			}
		}
	}
	return json.NewEncoder(out).Encode(res)
}

// TestMultiProcessRace starts two OS processes on one database, as two
// `outpost serve` replicas, and checks that every value was accepted once
// overall and the audit chain is whole.
func TestMultiProcessRace(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes; skipped with -short")
	}
	for _, eng := range engines {
		t.Run(eng.name, func(t *testing.T) {
			dsn := eng.dsn(t)
			st := storetest.Open(t, dsn)
			must(t, st.CreateRealm(ctx, store.Realm{ID: "r1"}))
			must(t, st.CreateUser(ctx, store.User{Realm: "r1", ID: "alice"}))
			tok := store.Token{Realm: "r1", UserID: "alice", Type: "hotp", Algorithm: "SHA1", Digits: 6,
				SeedMode: store.SeedDerived, Status: store.TokenActive}
			for v := 0; v <= raceValues; v++ {
				tok.ID = "same-" + strconv.Itoa(v)
				if v == 0 {
					tok.ID = "seq"
				}
				must(t, st.CreateToken(ctx, tok))
			}

			results := runChildren(t, dsn, 2)

			seq, same := map[int64]int{}, map[int]int{}
			for _, r := range results {
				for _, v := range r.Seq {
					seq[v]++
				}
				for _, k := range r.Same {
					same[k]++
				}
			}
			for v, n := range seq {
				if n != 1 {
					t.Errorf("value %d of the shared token accepted %d times", v, n)
				}
			}
			if seq[raceValues] != 1 {
				t.Errorf("the last value was accepted %d times, want 1", seq[raceValues])
			}
			for k := 1; k <= raceValues; k++ {
				if same[k] != 1 {
					t.Errorf("token same-%d: value 42 accepted %d times, want exactly 1", k, same[k])
				}
			}
			got, err := st.GetToken(ctx, "r1", "alice", "seq")
			must(t, err)
			if got.LastUsed != raceValues {
				t.Errorf("shared token ends at %d, want %d", got.LastUsed, raceValues)
			}
			checkAudit(t, st, 2*raceAudit)
			t.Logf("%s: the children won %d and %d of the shared sequence's %d values, and %d and %d of the %d single-value tokens",
				eng.name, len(results[0].Seq), len(results[1].Seq), len(seq), len(results[0].Same), len(results[1].Same), raceValues)
		})
	}
}

// runChildren starts n children on dsn, releases them together once all are
// ready, and returns their results.
func runChildren(t *testing.T, dsn string, n int) []raceResult {
	t.Helper()
	type child struct {
		cmd    *exec.Cmd
		stdin  io.WriteCloser
		stdout *bufio.Reader
		stderr bytes.Buffer
	}
	children := make([]*child, n)
	for i := range children {
		c := &child{cmd: exec.Command(os.Args[0], "-test.run=^$")}
		c.cmd.Env = append(os.Environ(), childEnv+"="+dsn, childEnv+"_INDEX="+strconv.Itoa(i))
		c.cmd.Stderr = &c.stderr
		var err error
		if c.stdin, err = c.cmd.StdinPipe(); err != nil {
			t.Fatal(err)
		}
		pipe, err := c.cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		c.stdout = bufio.NewReader(pipe)
		if err := c.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.cmd.Process.Kill(); _ = c.cmd.Wait() })
		children[i] = c
	}
	for i, c := range children {
		line, err := readLine(c.stdout, 60*time.Second)
		if err != nil || line != "ready" {
			t.Fatalf("child %d did not get ready (%q, %v): %s", i, line, err, c.stderr.String())
		}
	}
	for _, c := range children {
		fmt.Fprintln(c.stdin, "go")
	}
	results := make([]raceResult, n)
	for i, c := range children {
		line, err := readLine(c.stdout, 120*time.Second)
		if err == nil {
			err = json.Unmarshal([]byte(line), &results[i])
		}
		if werr := c.cmd.Wait(); err != nil || werr != nil {
			t.Fatalf("child %d: %v / %v: %s", i, err, werr, c.stderr.String())
		}
	}
	return results
}

// readLine reads one line, giving up after d.
func readLine(r *bufio.Reader, d time.Duration) (string, error) {
	type res struct {
		s   string
		err error
	}
	ch := make(chan res, 1)
	go func() {
		s, err := r.ReadString('\n')
		ch <- res{string(bytes.TrimSpace([]byte(s))), err}
	}()
	select {
	case r := <-ch:
		return r.s, r.err
	case <-time.After(d):
		return "", errors.New("timed out")
	}
}
