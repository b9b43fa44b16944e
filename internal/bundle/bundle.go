// Package bundle issues offline bundles: the server side of Outpost's hash
// lists. A bundle lets one field device verify one user's token without a
// network, for an event window (the next N HOTP counters) or a time period
// (the TOTP steps from–until), and release a key — and static secrets
// encrypted under it — when a code is right.
//
// Call [Issue] with a [Request]; it returns the signed bundle file (what
// `outpost field import` reads), and the attack-cost report. Call [Plan]
// first to get the report and the floor decision without any KDF work:
//
//	rep, err := bundle.Plan(req)                           // cheap: validation + cost.Estimate + floor
//	data, rep, err := bundle.Issue(ctx, req, signer, func(done, total int) { … })
//
// Issue refuses a bundle below the attack-cost floor (req.Floor, default
// cost.DefaultFloor) with an error wrapping cost.ErrBelowFloor, unless
// req.Override is set: an explicit administrator decision that the caller
// must authorise and audit. The format and the entry rule live in
// internal/bundlefmt (Bundle, SealEntry), shared with the verifier; this
// package validates the request, computes the codes and runs the KDF on all
// cores (req.Workers), with a progress callback and cancellation.
//
// It knows a token seed and its online state, never the user: the PIN's
// stored hash, the lockout, who may override the floor and what was issued
// to which device are internal/issuance's, the server's one issuer, which
// checks them and then calls this package. Call it directly only where a
// seed is at hand on purpose (tests, benchmarks).
//
// Secrets handled here — the token seed, the codes, the PIN, the release key
// — are never logged nor put in an error.
package bundle

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"time"

	"github.com/outpost-auth/outpost/internal/bundlefmt"
	"github.com/outpost-auth/outpost/internal/cost"
	"github.com/outpost-auth/outpost/internal/keys"
	"github.com/outpost-auth/outpost/otp"
)

// DefaultHOTPLifetime is how long an HOTP bundle is valid when the request
// sets no NotAfter. Short lifetimes are part of the threat model: they bound
// how long a copied bundle is worth attacking.
const DefaultHOTPLifetime = 30 * 24 * time.Hour

// MaxPINLen bounds a PIN, in bytes.
const MaxPINLen = 64

// Request describes one bundle: one user's token, one field device, one
// event window or time period.
type Request struct {
	Realm, User, TokenID string
	// Params describe the token (type, algorithm, digits, period, T0).
	Params otp.Params
	// Secret is the token seed. It is never logged.
	Secret []byte
	// Device is the field device id the bundle is bound to (artifact subject).
	Device string
	// HOTP event window: counters First..First+Count-1.
	First uint64
	Count int
	// TOTP period: the steps that overlap [From, Until).
	From, Until time.Time
	// Used and LastUsed are the token's online state at issue time (as in
	// store.Token). When Used, no entry is at or below LastUsed: an HOTP
	// window starting at or below it moves to LastUsed+1 (same Count), a
	// TOTP period starts at step LastUsed+1; and the bundle carries LastUsed
	// so that the device raises its own last used one to it at import.
	Used     bool
	LastUsed uint64
	// Acked and AckedHash are the newest entry of the device's log the
	// server acknowledged (store.Device's; 0 and nil for none). The device
	// refuses the bundle if its log does not hold that entry.
	Acked     uint64
	AckedHash []byte
	// PIN, when set, is mixed into every entry (PIN + OTP).
	PIN string
	// Secrets are static secrets encrypted under the release key (names:
	// letters, digits, '-', '_', '.'; at most bundlefmt.MaxSecrets).
	Secrets map[string][]byte
	// KDF is the argon2id cost; the zero value means cost.Default.
	KDF cost.KDF
	// Now is the issue time, from the issuer's clock (required: this package
	// never reads the wall clock).
	Now time.Time
	// NotBefore defaults to Now; NotAfter to Until (TOTP) or now +
	// DefaultHOTPLifetime (HOTP).
	NotBefore, NotAfter time.Time
	// Serial orders bundles of one token on the device (a higher one
	// replaces a lower one); 0 means the issue time in Unix microseconds.
	Serial uint64
	// Workers is the number of goroutines computing entries; 0 = runtime.NumCPU().
	Workers int
	// Run, when set, runs each entry's computation fn (one argon2id
	// evaluation of memKiB KiB) and waits for it, or returns an error without
	// running it: the issuer's bounded pool (workpool.Pool.Do) sets it so
	// that every bundle and refill of a server shares one bound on cores
	// and memory. Nil runs fn on the calling worker goroutine.
	Run func(ctx context.Context, memKiB int64, fn func()) error

	// Floor is the attack-cost floor; nil means cost.DefaultFloor.
	// (An extension of the shape agreed with the server: the floor is
	// enforced here so that no caller can forget it.)
	Floor *cost.Floor
	// Override issues a bundle below the floor. It is an administrator's
	// explicit decision; the caller must audit it.
	Override bool
}

// ErrInvalidRequest wraps every validation error of a Request.
var ErrInvalidRequest = errors.New("bundle: invalid request")

// plan is a validated request.
type plan struct {
	b      *bundlefmt.Bundle
	report cost.Report
}

// Plan validates req and returns its cost report, applying the floor, without
// running the KDF. Issue calls it first.
func Plan(req Request) (cost.Report, error) {
	p, err := newPlan(req)
	if err != nil {
		return p.report, err
	}
	return p.report, nil
}

func newPlan(req Request) (plan, error) {
	bad := func(format string, a ...any) (plan, error) {
		return plan{}, fmt.Errorf("%w: %s", ErrInvalidRequest, fmt.Sprintf(format, a...))
	}
	if req.Now.IsZero() {
		return bad("no issue time (Request.Now)")
	}
	now := req.Now
	if err := req.Params.Validate(); err != nil {
		return plan{}, fmt.Errorf("%w: %w", ErrInvalidRequest, err)
	}
	if len(req.Secret) < otp.MinSecretLen || len(req.Secret) > otp.MaxSecretLen {
		return bad("token secret has %d bytes, want %d to %d", len(req.Secret), otp.MinSecretLen, otp.MaxSecretLen)
	}
	if len(req.PIN) > MaxPINLen {
		return bad("PIN longer than %d bytes", MaxPINLen)
	}
	kdf := req.KDF.OrDefault()
	if err := kdf.Validate(); err != nil {
		return plan{}, fmt.Errorf("%w: %w", ErrInvalidRequest, err)
	}
	first, count, err := entryRange(req)
	if err != nil {
		return plan{}, err
	}
	if count < 1 || count > bundlefmt.MaxEntries {
		return bad("%d entries: want 1 to %d", count, bundlefmt.MaxEntries)
	}
	nb, na := req.NotBefore, req.NotAfter
	if nb.IsZero() {
		nb = now
	}
	if na.IsZero() {
		if req.Params.Type == otp.TypeTOTP {
			na = req.Until
		} else {
			na = nb.Add(DefaultHOTPLifetime)
		}
	}
	if !na.After(nb) {
		return bad("NotAfter %s is not later than NotBefore %s", na.Format(time.RFC3339), nb.Format(time.RFC3339))
	}
	serial := req.Serial
	if serial == 0 {
		serial = uint64(now.UnixMicro())
	}
	b := &bundlefmt.Bundle{
		Device: req.Device, Serial: serial, IssuedAt: now, NotBefore: nb, NotAfter: na, Params: req.Params,
		Body: bundlefmt.Body{
			Realm: req.Realm, User: req.User, Token: req.TokenID, OTP: bundlefmt.WireParams(req.Params),
			PIN: req.PIN != "", KDF: kdf, Salt: make([]byte, bundlefmt.SaltSize), First: first,
			Entries: make([]byte, count*bundlefmt.EntrySize), Used: -1, Acked: req.Acked, AckedHash: req.AckedHash,
		},
	}
	if req.Used {
		b.Used = int64(req.LastUsed)
	}
	for name := range req.Secrets {
		b.Secrets = append(b.Secrets, bundlefmt.Secret{Name: name, Box: make([]byte, bundlefmt.SecretOverhead+len(req.Secrets[name]))})
	}
	sortSecrets(b.Secrets)
	if err := b.Validate(); err != nil {
		return plan{}, fmt.Errorf("%w: %w", ErrInvalidRequest, err)
	}
	b.Secrets = nil
	p := plan{b: b, report: cost.Estimate(req.Params.Digits, len(req.PIN), count, kdf)}
	floor := cost.DefaultFloor
	if req.Floor != nil {
		floor = *req.Floor
	}
	if err := p.report.Check(floor, req.Override); err != nil {
		return p, err
	}
	return p, nil
}

// entryRange returns the first counter or step of req's bundle and its
// number of entries: the one place where a bundle's range meets the token's
// online state. Nothing at or below the last used counter or step goes in.
func entryRange(req Request) (first uint64, count int, err error) {
	bad := func(format string, a ...any) (uint64, int, error) {
		return 0, 0, fmt.Errorf("%w: %s", ErrInvalidRequest, fmt.Sprintf(format, a...))
	}
	if req.Used && req.LastUsed > bundlefmt.MaxCounter {
		return bad("last used counter %d out of range", req.LastUsed)
	}
	next := otp.NextCounter(req.Used, req.LastUsed) // the first counter or step not used online
	switch req.Params.Type {
	case otp.TypeHOTP:
		if !req.From.IsZero() || !req.Until.IsZero() {
			return bad("an HOTP bundle takes an event window (First, Count), not From/Until")
		}
		return max(req.First, next), req.Count, nil
	case otp.TypeTOTP:
		if req.Count != 0 || req.First != 0 {
			return bad("a TOTP bundle takes a period (From, Until), not First/Count")
		}
		if req.From.IsZero() || !req.Until.After(req.From) {
			return bad("a TOTP bundle needs From earlier than Until")
		}
		first = req.Params.Step(req.From)
		last := req.Params.Step(req.Until.Add(-time.Nanosecond))
		if next > last {
			return bad("every step of the period up to %s was already used online: ask for a later period",
				req.Until.UTC().Format(time.RFC3339))
		}
		first = max(first, next)
		if last-first >= bundlefmt.MaxEntries {
			return bad("the period covers more than %d steps of %d s", bundlefmt.MaxEntries, req.Params.Period)
		}
		return first, int(last-first) + 1, nil
	}
	return bad("unknown token type")
}

// Issue computes and signs the bundle of req. progress, when not nil, is
// called from the calling goroutine after each entry with the entries done
// and the total. Cancelling ctx stops the work within one KDF evaluation per
// worker and returns ctx's error. The returned report is that of Plan.
func Issue(ctx context.Context, req Request, signer *keys.Signer, progress func(done, total int)) ([]byte, cost.Report, error) {
	p, err := newPlan(req)
	if err != nil {
		return nil, p.report, err
	}
	if signer == nil {
		return nil, p.report, errors.New("bundle: a signing key is required")
	}
	b := p.b
	release := make([]byte, bundlefmt.ReleaseKeySize)
	defer clear(release)
	if _, err := rand.Read(b.Salt); err != nil {
		return nil, p.report, fmt.Errorf("bundle: %w", err)
	}
	if _, err := rand.Read(release); err != nil {
		return nil, p.report, fmt.Errorf("bundle: %w", err)
	}
	if err := computeEntries(ctx, b, req.Secret, req.PIN, release, req.Workers, req.Run, progress); err != nil {
		return nil, p.report, err
	}
	if err := b.SealSecrets(release, req.Secrets); err != nil {
		return nil, p.report, fmt.Errorf("%w: %w", ErrInvalidRequest, err)
	}
	data, err := b.Sign(signer)
	if err != nil {
		return nil, p.report, err
	}
	return data, p.report, nil
}

// computeEntries fills every entry of b, on workers goroutines.
func computeEntries(ctx context.Context, b *bundlefmt.Bundle, secret []byte, pin string, release []byte, workers int,
	run func(context.Context, int64, func()) error, progress func(done, total int)) error {
	total := b.Count()
	if run == nil {
		run = func(_ context.Context, _ int64, fn func()) error { fn(); return nil }
	}
	memKiB := int64(b.KDF.MemoryKiB)
	if workers <= 0 {
		workers = runtime.NumCPU()
	}
	workers = min(workers, total)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	jobs := make(chan int)
	done := make(chan error, workers)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				var err error
				if rerr := run(ctx, memKiB, func() {
					code, e := otp.HOTP(b.Params.Algorithm, secret, b.First+uint64(i), b.Params.Digits)
					if e == nil {
						e = b.SealEntry(i, code, pin, release)
					}
					err = e
				}); rerr != nil {
					err = rerr
				}
				select {
				case done <- err:
				case <-ctx.Done():
					return
				}
			}
		}()
	}
	go func() {
		defer close(jobs)
		for i := range total {
			select {
			case jobs <- i:
			case <-ctx.Done():
				return
			}
		}
	}()
	var err error
	for n := 0; n < total; n++ {
		select {
		case e := <-done:
			if e != nil {
				err = fmt.Errorf("bundle: entry: %w", e)
			} else if progress != nil {
				progress(n+1, total)
			}
		case <-ctx.Done():
			err = ctx.Err()
		}
		if err != nil {
			break
		}
	}
	cancel()
	wg.Wait()
	return err
}

func sortSecrets(s []bundlefmt.Secret) {
	for i := 1; i < len(s); i++ {
		for j := i; j > 0 && s[j].Name < s[j-1].Name; j-- {
			s[j], s[j-1] = s[j-1], s[j]
		}
	}
}
