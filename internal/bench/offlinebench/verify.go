package offlinebench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"time"

	"github.com/outpost-auth/outpost/internal/bundle"
	"github.com/outpost-auth/outpost/internal/cost"
	"github.com/outpost-auth/outpost/offline"
	"github.com/outpost-auth/outpost/otp"
)

// verifyCase is one mode's wrong-code verification.
type verifyCase struct {
	name, user string
	calls      int
}

// verification: a wrong code costs the whole window. Each mode's
// verification is timed next to as many raw argon2id calls on the same
// workers, in an order alternating between rounds, then (with Memory) the
// peak memory of a fresh process doing each.
func (r *run) verification(ctx context.Context) error {
	dir, err := os.MkdirTemp("", "outpost-bench-offline")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	pol := offline.Policy{MaxFailures: 1000, ClockTolerance: 5 * time.Minute, TOTPBack: 1, TOTPForward: 1, HOTPLookahead: 4}
	fdir := filepath.Join(dir, "field")
	s, err := offline.Init(ctx, fdir, offline.Config{DeviceID: "bench-device", ServerKey: r.signer.Public, Policy: pol}, offline.Options{})
	if err != nil {
		return err
	}
	defer s.Close()
	r.say("issuing the verification bundles")
	tb := r.day
	tb.User, tb.KDF, tb.From, tb.Until = "totp-user", r.KDF, r.now.Add(-time.Minute), r.now.Add(15*time.Minute)
	hb := r.hotp(pol.HOTPLookahead+1, 0, r.KDF)
	hb.User = "hotp-user"
	for _, req := range []bundle.Request{tb, hb} {
		data, err := r.issue(ctx, req)
		if err != nil {
			return err
		}
		if _, err := s.Import(ctx, data); err != nil {
			return err
		}
	}
	cases := []verifyCase{
		{fmt.Sprintf("TOTP, steps -%d..+%d", pol.TOTPBack, pol.TOTPForward), "totp-user", pol.TOTPBack + pol.TOTPForward + 1},
		{fmt.Sprintf("HOTP, look-ahead %d", pol.HOTPLookahead), "hotp-user", pol.HOTPLookahead + 1},
	}
	for _, cs := range cases {
		v, err := r.verifyCase(ctx, s, fdir, cs)
		if err != nil {
			return err
		}
		r.res.Verify = append(r.res.Verify, v)
	}
	return nil
}

// verifyCase measures one case on s, whose store is in fdir.
func (r *run) verifyCase(ctx context.Context, s *offline.Store, fdir string, cs verifyCase) (VerifyRow, error) {
	workers := runtime.GOMAXPROCS(0)
	wrong := wrongCodeFor(r.seed, cs.user == "totp-user")
	verify := func() (float64, error) {
		return timeIt(func() error {
			_, err := s.Verify(ctx, offline.Attempt{User: cs.user, Code: wrong})
			if !errors.Is(err, offline.ErrWrongCode) {
				return fmt.Errorf("bench: expected a wrong-code refusal, got %v", err)
			}
			return nil
		})
	}
	raw := func() (float64, error) { return timeIt(func() error { rawKDF(r.KDF, cs.calls, workers); return nil }) }
	var lats, raws []float64
	for round := range r.Rounds {
		r.say("round %d/%d: verify a wrong code (%s) next to %d raw argon2id", round+1, r.Rounds, cs.name, cs.calls)
		first, second := verify, raw
		if round%2 == 1 {
			first, second = raw, verify
		}
		a, err := first()
		if err != nil {
			return VerifyRow{}, err
		}
		b, err := second()
		if err != nil {
			return VerifyRow{}, err
		}
		if round%2 == 1 {
			a, b = b, a
		}
		lats, raws = append(lats, a), append(raws, b)
	}
	v := VerifyRow{Case: cs.name, KDFCalls: cs.calls, Latency: median(lats), Raw: median(raws), Ratio: median(lats) / median(raws)}
	if !r.Memory {
		return v, nil
	}
	r.say("peak memory: a fresh process verifying (%s) and one running %d raw argon2id", cs.name, cs.calls)
	vr, err := r.runChild(ctx, Child{Kind: "verify", KDF: r.KDF, Dir: fdir, User: cs.user, Code: wrong, Workers: workers})
	if err != nil {
		return v, err
	}
	rr, err := r.runChild(ctx, Child{Kind: "raw", KDF: r.KDF, Count: cs.calls, Workers: workers})
	if err != nil {
		return v, err
	}
	v.PeakKiB, v.RawPeak = vr.PeakKiB, rr.PeakKiB
	if rr.PeakKiB > 0 {
		v.PeakRatio = float64(vr.PeakKiB) / float64(rr.PeakKiB)
	}
	return v, nil
}

// wrongCodeFor returns a 6-digit code that matches no entry near now.
func wrongCodeFor(seed []byte, totp bool) string {
	used := map[string]bool{}
	for i := range 16 {
		c, _ := otp.HOTP(otp.SHA1, seed, uint64(i), 6)
		used[c] = true
		if totp {
			c, _ = otp.HOTP(otp.SHA1, seed, otp.DefaultTOTP.Step(time.Now())-8+uint64(i), 6)
			used[c] = true
		}
	}
	for i := 0; ; i++ {
		c := fmt.Sprintf("%06d", 999999-i)
		if !used[c] {
			return c
		}
	}
}

// Child is one peak-memory measurement, run in a fresh process so that its
// peak is its own: "raw" runs Count argon2id evaluations, "verify" opens the
// field store in Dir and verifies User's wrong Code, on Workers workers.
type Child struct {
	Kind    string   `json:"kind"`
	KDF     cost.KDF `json:"kdf"`
	Dir     string   `json:"dir,omitempty"`
	User    string   `json:"user,omitempty"`
	Code    string   `json:"code,omitempty"`
	Count   int      `json:"count,omitempty"`
	Workers int      `json:"workers"`
}

// ChildResult is what a child measured.
type ChildResult struct {
	Seconds float64 `json:"seconds"`
	PeakKiB int64   `json:"peak_kib"`
}

// RunChild runs the measurement spec (a Child in JSON) describes, in this
// process, and returns its time and this process's peak memory.
func RunChild(ctx context.Context, spec string) (ChildResult, error) {
	var c Child
	if err := json.Unmarshal([]byte(spec), &c); err != nil {
		return ChildResult{}, fmt.Errorf("bench child: %w", err)
	}
	start := time.Now()
	switch c.Kind {
	case "raw":
		rawKDF(c.KDF, c.Count, c.Workers)
	case "verify":
		s, err := offline.Open(ctx, c.Dir, offline.Options{Workers: c.Workers})
		if err != nil {
			return ChildResult{}, err
		}
		_, err = s.Verify(ctx, offline.Attempt{User: c.User, Code: c.Code})
		s.Close()
		if !errors.Is(err, offline.ErrWrongCode) {
			return ChildResult{}, fmt.Errorf("bench child: expected a wrong-code refusal, got %v", err)
		}
	default:
		return ChildResult{}, fmt.Errorf("bench child: unknown kind %q", c.Kind)
	}
	return ChildResult{Seconds: time.Since(start).Seconds(), PeakKiB: peakRSSKiB()}, nil
}

// runChild runs c in a fresh process of this binary (Config.ChildArgs).
func (r *run) runChild(ctx context.Context, c Child) (ChildResult, error) {
	exe, err := os.Executable()
	if err != nil {
		return ChildResult{}, err
	}
	spec, err := json.Marshal(c)
	if err != nil {
		return ChildResult{}, err
	}
	args := append(append([]string(nil), r.ChildArgs...), string(spec))
	out, err := exec.CommandContext(ctx, exe, args...).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return ChildResult{}, fmt.Errorf("bench child %v: %v: %s (use --no-memory when this is not the outpost binary)", args, err, ee.Stderr)
		}
		return ChildResult{}, err
	}
	var res ChildResult
	if err := json.Unmarshal(out, &res); err != nil {
		return res, fmt.Errorf("bench child printed %q: %v (use --no-memory when this is not the outpost binary)", out, err)
	}
	return res, nil
}
