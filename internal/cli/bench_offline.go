package cli

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/outpost-auth/outpost/internal/bundle"
	"github.com/outpost-auth/outpost/internal/cost"
	"github.com/outpost-auth/outpost/internal/keys"
	"github.com/outpost-auth/outpost/offline"
	"github.com/outpost-auth/outpost/otp"
	"github.com/spf13/cobra"
	"golang.org/x/crypto/argon2"
)

// benchOfflineResult is what 'outpost bench offline --json' prints.
type benchOfflineResult struct {
	KDF        cost.KDF `json:"kdf"`
	LoadBefore string   `json:"load_average_before"`
	LoadAfter  string   `json:"load_average_after"`
	CPUs       int      `json:"cpus"`
	Rounds     int      `json:"rounds"`
	GenEntries int      `json:"generation_entries_per_measurement"`
	Generation []genRow `json:"generation"`
	// BeyondKDF is the work per entry other than argon2id, in seconds,
	// measured with a minimal KDF (8 KiB, 1 pass), and BeyondShare that
	// work as a share of one evaluation at the measured profile.
	BeyondKDF     float64     `json:"beyond_kdf_seconds_per_entry"`
	BeyondShare   float64     `json:"beyond_kdf_share"`
	Speedup       float64     `json:"speedup_2_vs_1_worker"`
	RawSpeedup    float64     `json:"raw_speedup_2_vs_1_worker"`
	HOTP100       float64     `json:"hotp_100_seconds"`
	TOTPDay       float64     `json:"totp_1_day_seconds"`
	TOTPDayMeas   bool        `json:"totp_1_day_measured"`
	BytesPerEntry []sizeRow   `json:"bundle_size"`
	Verify        []verifyRow `json:"verify"`
}

type genRow struct {
	Workers     int     `json:"workers"`
	EntriesPerS float64 `json:"entries_per_second"`
	RawPerS     float64 `json:"raw_argon2id_per_second"`
	Overhead    float64 `json:"overhead"` // raw rate ÷ bundle rate − 1 (wall time)
	// CPUOverhead is the same from process CPU time summed over the rounds:
	// the work beyond the KDF, insensitive to other processes' load.
	CPUOverhead float64 `json:"cpu_overhead"`
}

type sizeRow struct {
	Bundle   string  `json:"bundle"`
	Bytes    int     `json:"bytes"`
	PerEntry float64 `json:"bytes_per_entry"`
}

type verifyRow struct {
	Case      string  `json:"case"`
	KDFCalls  int     `json:"kdf_calls"`
	Latency   float64 `json:"latency_seconds"`
	Raw       float64 `json:"raw_kdf_seconds"`
	Ratio     float64 `json:"ratio"`
	PeakKiB   int64   `json:"peak_rss_kib,omitempty"`
	RawPeak   int64   `json:"raw_peak_rss_kib,omitempty"`
	PeakRatio float64 `json:"peak_ratio,omitempty"`
}

func (e *env) benchOfflineCmd() *cobra.Command {
	var kf kdfFlags
	var entries, rounds int
	var full, noMemory, asJSON bool
	var child childFlags
	c := &cobra.Command{
		Use:   "offline",
		Short: "Measure bundle generation, offline verification and bundle size against raw argon2id",
		Long: `Measure, at the default argon2id profile (or --kdf-*), side by side in the same
run, in paired rounds whose medians are reported (shared machines are noisy):
  - generation: bundle entries per second with 1 and 2 workers next to raw
    argon2id on the same parameters (targets: overhead <= 5%, 2 workers >= 1.8x one);
  - the time to issue a 100-entry HOTP bundle (measured) and a 1-day 30 s TOTP
    bundle (extrapolated from the measured rate unless --full);
  - offline verification of a wrong code (the whole window) next to the same
    number of raw argon2id calls on the same workers, in latency and in peak
    memory of a fresh process each (target: within 1.2x);
  - bundle size in bytes per entry.
Takes about a minute at the default profile on 2 cores.`,
		Example: "  outpost bench offline\n  outpost bench offline --rounds 3 --json",
		Args:    cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			kdf, err := kf.kdf()
			if err != nil {
				return err
			}
			if child.kind != "" {
				return e.benchOfflineChild(c.Context(), kdf, child)
			}
			if entries < 1 || entries > 10000 || rounds < 1 || rounds > 50 {
				return usageError{errors.New("--entries must be 1 to 10000 and --rounds 1 to 50")}
			}
			res, err := runBenchOffline(c.Context(), kdf, entries, rounds, full, !noMemory, e.stderr)
			if err != nil {
				return err
			}
			if asJSON {
				return e.printJSON(res)
			}
			e.printBenchOffline(res)
			return nil
		},
	}
	kf.register(c)
	c.Flags().IntVar(&entries, "entries", 4, "entries per worker in each generation round")
	c.Flags().IntVar(&rounds, "rounds", 6, "paired rounds; medians are reported")
	c.Flags().BoolVar(&full, "full", false, "measure the 1-day TOTP bundle instead of extrapolating (minutes)")
	c.Flags().BoolVar(&noMemory, "no-memory", false, "skip the peak-memory measurement (it re-runs this binary)")
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON for scripts")
	child.register(c)
	return c
}

// childFlags drive the peak-memory measurement: the parent re-runs this
// binary once per case, so that each peak is that of a fresh process.
type childFlags struct {
	kind, dir, user, code string
	count, workers        int
}

func (f *childFlags) register(c *cobra.Command) {
	c.Flags().StringVar(&f.kind, "child", "", "internal: raw|verify")
	c.Flags().StringVar(&f.dir, "child-dir", "", "internal")
	c.Flags().StringVar(&f.user, "child-user", "", "internal")
	c.Flags().StringVar(&f.code, "child-code", "", "internal")
	c.Flags().IntVar(&f.count, "child-count", 0, "internal")
	c.Flags().IntVar(&f.workers, "child-workers", 0, "internal")
	for _, n := range []string{"child", "child-dir", "child-user", "child-code", "child-count", "child-workers"} {
		_ = c.Flags().MarkHidden(n)
	}
}

type childResult struct {
	Seconds float64 `json:"seconds"`
	PeakKiB int64   `json:"peak_kib"`
}

func (e *env) benchOfflineChild(ctx context.Context, kdf cost.KDF, f childFlags) error {
	start := time.Now()
	switch f.kind {
	case "raw":
		rawKDF(kdf, f.count, f.workers)
	case "verify":
		s, err := offline.Open(ctx, f.dir, offline.Options{Workers: f.workers})
		if err != nil {
			return err
		}
		_, err = s.Verify(ctx, offline.Attempt{User: f.user, Code: f.code})
		s.Close()
		if !errors.Is(err, offline.ErrWrongCode) {
			return fmt.Errorf("bench child: expected a wrong-code refusal, got %v", err)
		}
	default:
		return usageError{fmt.Errorf("--child %q", f.kind)}
	}
	return e.printJSON(childResult{Seconds: time.Since(start).Seconds(), PeakKiB: peakRSSKiB()})
}

// peakRSSKiB reads this process's peak resident set (Linux VmHWM), or 0.
func peakRSSKiB() int64 {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return n
		}
	}
	return 0
}

// rawKDF runs n argon2id evaluations on workers goroutines: the baseline.
func rawKDF(kdf cost.KDF, n, workers int) {
	var wg sync.WaitGroup
	jobs := make(chan int)
	for range max(1, min(workers, n)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var salt [32]byte
			for i := range jobs {
				binary.BigEndian.PutUint64(salt[:], uint64(i))
				argon2.IDKey([]byte("12345678"), salt[:], kdf.Time, kdf.MemoryKiB, kdf.Threads, 32)
			}
		}()
	}
	for i := range n {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
}

// median of xs (xs is not modified).
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// overhead is a/b − 1, or 0 when b is too small to measure.
func overhead(a, b float64) float64 {
	if b <= 0 {
		return 0
	}
	return a/b - 1
}

func microseconds(sec float64) string { return strconv.FormatFloat(sec*1e6, 'f', 1, 64) + " µs" }

// cpuSeconds returns this process's user + system CPU time from
// /proc/self/stat (Linux; clock ticks of 1/100 s), or 0 elsewhere.
func cpuSeconds() float64 {
	b, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		return 0
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0
	}
	// After "pid (comm)": state is f[0], utime f[11], stime f[12].
	u, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (u + st) / 100
}

// loadAvg returns the 1-minute load average (Linux), or "".
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	if f := strings.Fields(string(b)); len(f) > 0 {
		return f[0]
	}
	return ""
}

func timeIt(f func() error) (float64, error) {
	start := time.Now()
	err := f()
	return time.Since(start).Seconds(), err
}

func runBenchOffline(ctx context.Context, kdf cost.KDF, n, rounds int, full, memory bool, progress interface{ Write([]byte) (int, error) }) (*benchOfflineResult, error) {
	say := func(format string, a ...any) { fmt.Fprintf(progress, "bench offline: "+format+"\n", a...) }
	m, err := keys.GenerateMaster()
	if err != nil {
		return nil, err
	}
	signer := m.Signer(0)
	seed := make([]byte, 20)
	rand.Read(seed)
	hotp := otp.Params{Type: otp.TypeHOTP, Algorithm: otp.SHA1, Digits: 6}
	req := func(count, workers int, k cost.KDF) bundle.Request {
		return bundle.Request{Realm: "bench", User: "u", TokenID: "t", Device: "bench-device", Params: hotp, Secret: seed,
			Count: count, KDF: k, Override: true, Workers: workers, Secrets: map[string][]byte{"door": []byte("4711")}, Now: time.Now()}
	}
	res := &benchOfflineResult{KDF: kdf, CPUs: runtime.NumCPU(), Rounds: rounds, GenEntries: n, LoadBefore: loadAvg()}
	defer func() { res.LoadAfter = loadAvg() }()

	// Generation: paired blocks. Each round measures, back to back and in an
	// order that alternates between rounds, n raw argon2id and n bundle
	// entries on 1 worker, then 2n of each on 2 workers, so that load from
	// other processes, which drifts over seconds, hits both sides alike.
	var gen1, gen2, raw1, raw2 []float64
	var cpu [4]float64
	for r := range rounds {
		say("round %d/%d: generation, %d entries on 1 worker and %d on 2, each next to raw argon2id", r+1, rounds, n, 2*n)
		var t, c [4]float64 // wall and CPU seconds: raw 1, bundle 1, raw 2, bundle 2
		measure := func(i int, f func() error) func() error {
			return func() error {
				c0 := cpuSeconds()
				var err error
				t[i], err = timeIt(f)
				c[i] = cpuSeconds() - c0
				return err
			}
		}
		steps := []func() error{
			measure(0, func() error { rawKDF(kdf, n, 1); return nil }),
			measure(1, func() error { _, _, err := bundle.Issue(ctx, req(n, 1, kdf), signer, nil); return err }),
			measure(2, func() error { rawKDF(kdf, 2*n, 2); return nil }),
			measure(3, func() error { _, _, err := bundle.Issue(ctx, req(2*n, 2, kdf), signer, nil); return err }),
		}
		if r%2 == 1 {
			steps[0], steps[1], steps[2], steps[3] = steps[1], steps[0], steps[3], steps[2]
		}
		for _, f := range steps {
			if err := f(); err != nil {
				return nil, err
			}
		}
		for i := range c {
			cpu[i] += c[i]
		}
		raw1, gen1, raw2, gen2 = append(raw1, t[0]), append(gen1, t[1]), append(raw2, t[2]), append(gen2, t[3])
	}
	// Rates are from the median times; the ratios from the same medians, so
	// that the table is consistent.
	res.Generation = []genRow{
		{Workers: 1, EntriesPerS: float64(n) / median(gen1), RawPerS: float64(n) / median(raw1), Overhead: median(gen1)/median(raw1) - 1, CPUOverhead: overhead(cpu[1], cpu[0])},
		{Workers: 2, EntriesPerS: float64(2*n) / median(gen2), RawPerS: float64(2*n) / median(raw2), Overhead: median(gen2)/median(raw2) - 1, CPUOverhead: overhead(cpu[3], cpu[2])},
	}
	res.Speedup, res.RawSpeedup = 2*median(gen1)/median(gen2), 2*median(raw1)/median(raw2)

	// The work beyond the KDF, measured directly: with a minimal KDF the
	// per-entry difference between a bundle and raw argon2id is everything
	// else an entry costs (the code's HMAC, the salt, HKDF, AES-GCM, encoding
	// and signing). Best of rounds: noise only ever adds time.
	tiny := cost.KDF{Time: 1, MemoryKiB: 8, Threads: 1}
	const tinyN = 2000
	bestGen, bestRaw := 0.0, 0.0
	for range rounds {
		g, err := timeIt(func() error { _, _, err := bundle.Issue(ctx, req(tinyN, 1, tiny), signer, nil); return err })
		if err != nil {
			return nil, err
		}
		rw, _ := timeIt(func() error { rawKDF(tiny, tinyN, 1); return nil })
		if bestGen == 0 || g < bestGen {
			bestGen = g
		}
		if bestRaw == 0 || rw < bestRaw {
			bestRaw = rw
		}
	}
	res.BeyondKDF = max(0, bestGen-bestRaw) / tinyN
	res.BeyondShare = res.BeyondKDF / (median(raw1) / float64(n))

	// A 100-entry HOTP bundle, measured on all cores.
	say("issuing a 100-entry HOTP bundle on %d worker(s)", runtime.NumCPU())
	var b100 []byte
	res.HOTP100, err = timeIt(func() error { b100, _, err = bundle.Issue(ctx, req(100, 0, kdf), signer, nil); return err })
	if err != nil {
		return nil, err
	}
	// A 1-day TOTP bundle: extrapolated from the all-core rate, or measured.
	now := time.Now()
	day := bundle.Request{Realm: "bench", User: "u", TokenID: "t", Device: "bench-device", Params: otp.DefaultTOTP, Secret: seed,
		From: now, Until: now.Add(24 * time.Hour), Override: true, Now: now}
	res.TOTPDay = 2880 / (100 / res.HOTP100)
	if full {
		say("issuing a 1-day TOTP bundle (2,880 entries): minutes")
		day.KDF = kdf
		res.TOTPDay, err = timeIt(func() error { _, _, err := bundle.Issue(ctx, day, signer, nil); return err })
		if err != nil {
			return nil, err
		}
		res.TOTPDayMeas = true
	}
	// Sizes do not depend on the KDF cost: the day bundle's is measured with a cheap one.
	day.KDF = cost.KDF{Time: 1, MemoryKiB: 8, Threads: 1}
	bDay, _, err := bundle.Issue(ctx, day, signer, nil)
	if err != nil {
		return nil, err
	}
	for _, s := range []struct {
		name string
		data []byte
		n    int
	}{{"100-entry HOTP", b100, 100}, {"1-day TOTP (2,880 entries)", bDay, 2880}} {
		res.BytesPerEntry = append(res.BytesPerEntry, sizeRow{s.name, len(s.data), float64(len(s.data)) / float64(s.n)})
	}

	// Verification: a wrong code costs the whole window.
	dir, err := os.MkdirTemp("", "outpost-bench-offline")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	pol := offline.Policy{MaxFailures: 1000, ClockTolerance: 5 * time.Minute, TOTPBack: 1, TOTPForward: 1, HOTPLookahead: 4}
	fdir := filepath.Join(dir, "field")
	s, err := offline.Init(ctx, fdir, offline.Config{DeviceID: "bench-device", ServerKey: signer.Public, Policy: pol}, offline.Options{})
	if err != nil {
		return nil, err
	}
	defer s.Close()
	say("issuing the verification bundles")
	tb := day
	tb.User, tb.KDF, tb.From, tb.Until = "totp-user", kdf, now.Add(-time.Minute), now.Add(15*time.Minute)
	hb := req(pol.HOTPLookahead+1, 0, kdf)
	hb.User = "hotp-user"
	for _, r := range []bundle.Request{tb, hb} {
		data, _, err := bundle.Issue(ctx, r, signer, nil)
		if err != nil {
			return nil, err
		}
		if _, err := s.Import(ctx, data); err != nil {
			return nil, err
		}
	}
	workers := runtime.GOMAXPROCS(0)
	cases := []struct {
		name, user string
		calls      int
	}{{fmt.Sprintf("TOTP, steps -%d..+%d", pol.TOTPBack, pol.TOTPForward), "totp-user", pol.TOTPBack + pol.TOTPForward + 1},
		{fmt.Sprintf("HOTP, look-ahead %d", pol.HOTPLookahead), "hotp-user", pol.HOTPLookahead + 1}}
	for _, cs := range cases {
		wrong := wrongCodeFor(seed, cs.user == "totp-user")
		var lats, raws []float64
		for r := range rounds {
			say("round %d/%d: verify a wrong code (%s) next to %d raw argon2id", r+1, rounds, cs.name, cs.calls)
			verify := func() (float64, error) {
				return timeIt(func() error {
					_, err := s.Verify(ctx, offline.Attempt{User: cs.user, Code: wrong})
					if !errors.Is(err, offline.ErrWrongCode) {
						return fmt.Errorf("bench: expected a wrong-code refusal, got %v", err)
					}
					return nil
				})
			}
			raw := func() (float64, error) { return timeIt(func() error { rawKDF(kdf, cs.calls, workers); return nil }) }
			var lat, rw float64
			var err error
			if r%2 == 0 {
				if lat, err = verify(); err == nil {
					rw, err = raw()
				}
			} else if rw, err = raw(); err == nil {
				lat, err = verify()
			}
			if err != nil {
				return nil, err
			}
			lats, raws = append(lats, lat), append(raws, rw)
		}
		v := verifyRow{Case: cs.name, KDFCalls: cs.calls, Latency: median(lats), Raw: median(raws), Ratio: median(lats) / median(raws)}
		if memory {
			say("peak memory: a fresh process verifying (%s) and one running %d raw argon2id", cs.name, cs.calls)
			kargs := []string{"--kdf-memory", fmt.Sprintf("%dKiB", kdf.MemoryKiB), "--kdf-time", fmt.Sprint(kdf.Time), "--kdf-threads", fmt.Sprint(kdf.Threads)}
			vr, err := runChild(ctx, append(kargs, "--child", "verify", "--child-dir", fdir, "--child-user", cs.user, "--child-code", wrong, "--child-workers", fmt.Sprint(workers)))
			if err != nil {
				return nil, err
			}
			rr, err := runChild(ctx, append(kargs, "--child", "raw", "--child-count", fmt.Sprint(cs.calls), "--child-workers", fmt.Sprint(workers)))
			if err != nil {
				return nil, err
			}
			v.PeakKiB, v.RawPeak = vr.PeakKiB, rr.PeakKiB
			if rr.PeakKiB > 0 {
				v.PeakRatio = float64(vr.PeakKiB) / float64(rr.PeakKiB)
			}
		}
		res.Verify = append(res.Verify, v)
	}
	return res, nil
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

func runChild(ctx context.Context, args []string) (childResult, error) {
	exe, err := os.Executable()
	if err != nil {
		return childResult{}, err
	}
	out, err := exec.CommandContext(ctx, exe, append([]string{"bench", "offline"}, args...)...).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return childResult{}, fmt.Errorf("bench child %v: %v: %s (use --no-memory when this is not the outpost binary)", args, err, ee.Stderr)
		}
		return childResult{}, err
	}
	var r childResult
	if err := json.Unmarshal(out, &r); err != nil {
		return r, fmt.Errorf("bench child printed %q: %v (use --no-memory when this is not the outpost binary)", out, err)
	}
	return r, nil
}

func (e *env) printBenchOffline(r *benchOfflineResult) {
	w := e.stdout
	mark := func(ok bool) string {
		if ok {
			return "ok"
		}
		return "MISSED"
	}
	fmt.Fprintf(w, "Offline bundles, %s, %d CPUs, medians of %d paired rounds, load average %s before, %s after\n\n", r.KDF, r.CPUs, r.Rounds, r.LoadBefore, r.LoadAfter)
	fmt.Fprintf(w, "Generation (%d entries/worker/round)   bundle entries/s   raw argon2id/s   overhead: wall   CPU\n", r.GenEntries)
	for _, g := range r.Generation {
		fmt.Fprintf(w, "  %d worker(s)                         %10.2f       %10.2f         %6.1f%%   %5.1f%%\n", g.Workers, g.EntriesPerS, g.RawPerS, 100*g.Overhead, 100*g.CPUOverhead)
	}
	fmt.Fprintf(w, "  work beyond the KDF per entry         %s = %.3f%% of one evaluation (measured with an 8 KiB KDF; target <= 5%%)  %s\n",
		microseconds(r.BeyondKDF), 100*r.BeyondShare, mark(r.BeyondShare <= 0.05))
	fmt.Fprintf(w, "  2 workers vs 1 (target >= 1.8x)       %9.2fx       %9.2fx          %s (raw argon2id is the ceiling)\n\n", r.Speedup, r.RawSpeedup, mark(r.Speedup >= 1.8))
	how := "extrapolated from the 100-entry rate"
	if r.TOTPDayMeas {
		how = "measured"
	}
	fmt.Fprintf(w, "Issue a 100-entry HOTP bundle             %s (measured, all cores)\n", cost.Human(r.HOTP100))
	fmt.Fprintf(w, "Issue a 1-day 30 s TOTP bundle (2,880)    %s (%s)\n\n", cost.Human(r.TOTPDay), how)
	fmt.Fprintf(w, "Offline verify, wrong code (whole window)   KDF calls   latency    raw KDF    ratio (<= 1.2)   peak RSS    raw peak   ratio (<= 1.2)\n")
	for _, v := range r.Verify {
		fmt.Fprintf(w, "  %-40s %3d   %8s   %8s   %5.2f %-6s", v.Case, v.KDFCalls, cost.Human(v.Latency), cost.Human(v.Raw), v.Ratio, mark(v.Ratio <= 1.2))
		if v.PeakKiB > 0 {
			fmt.Fprintf(w, "   %6d MiB  %6d MiB   %5.2f %s", v.PeakKiB/1024, v.RawPeak/1024, v.PeakRatio, mark(v.PeakRatio <= 1.2))
		} else {
			fmt.Fprint(w, "   (not measured)")
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintf(w, "\nBundle size                               bytes      bytes/entry\n")
	for _, b := range r.BytesPerEntry {
		fmt.Fprintf(w, "  %-40s %8d   %8.1f\n", b.Bundle, b.Bytes, b.PerEntry)
	}
}
