package eventlog

import (
	"bytes"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite the fuzz seed corpus")

var base = time.Date(2026, 5, 1, 8, 0, 0, 0, time.UTC)

func testKey(b byte) ed25519.PrivateKey {
	seed := bytes.Repeat([]byte{b}, ed25519.SeedSize)
	return ed25519.NewKeyFromSeed(seed)
}

// chain builds n signed entries (key may be nil for an unsigned chain).
func chain(t testing.TB, n int, key ed25519.PrivateKey) []Entry {
	t.Helper()
	var out []Entry
	var prev *Entry
	for i := range n {
		e, err := Next(prev, Entry{
			Time:    base.Add(time.Duration(i) * time.Minute),
			Kind:    []string{"verify.ok", "verify.fail", "sync"}[i%3],
			Actor:   "dev-7",
			Subject: fmt.Sprintf("tech-%03d", i),
			Data:    json.RawMessage(fmt.Sprintf(`{"i": %d, "note": "<a & b>"}`, i)),
		}, key)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, e)
		prev = &out[len(out)-1]
	}
	return out
}

func clone(es []Entry) []Entry {
	out := make([]Entry, len(es))
	for i, e := range es {
		e.Prev, e.Hash, e.Sig, e.Data = bytes.Clone(e.Prev), bytes.Clone(e.Hash), bytes.Clone(e.Sig), bytes.Clone(e.Data)
		out[i] = e
	}
	return out
}

// relink recomputes every hash (and signature with key) from index from on,
// as an attacker who holds key (or, for an unsigned log, anyone) would.
func relink(es []Entry, from int, key ed25519.PrivateKey) {
	for i := from; i < len(es); i++ {
		if i == 0 {
			es[i].Prev = Genesis
		} else {
			es[i].Prev = es[i-1].Hash
		}
		es[i].Hash = digest(&es[i])
		es[i].Sig = nil
		if key != nil {
			es[i].Sig = ed25519.Sign(key, es[i].Hash)
		}
	}
}

func TestChain(t *testing.T) {
	key := testKey(1)
	pub := key.Public().(ed25519.PublicKey)
	es := chain(t, 50, key)
	if i, err := VerifyChain(nil, es, pub); err != nil || i != -1 {
		t.Fatalf("VerifyChain = %d, %v", i, err)
	}
	if i, err := VerifyChain(nil, es, nil); err != nil || i != -1 {
		t.Fatalf("VerifyChain without key = %d, %v", i, err)
	}
	// In pages, each continuing after the last entry of the one before.
	for lo := 0; lo < len(es); lo += 7 {
		hi := min(lo+7, len(es))
		var after *Entry
		if lo > 0 {
			after = &es[lo-1]
		}
		if i, err := VerifyChain(after, es[lo:hi], pub); err != nil {
			t.Fatalf("page %d..%d: %d %v", lo, hi, i, err)
		}
	}
	if i, err := VerifyChain(nil, nil, pub); err != nil || i != -1 {
		t.Fatalf("empty log: %d %v", i, err)
	}
	for i, e := range es {
		if e.Seq != uint64(i+1) || len(e.Hash) != HashSize || len(e.Sig) != ed25519.SignatureSize {
			t.Fatalf("entry %d: seq %d hash %d bytes sig %d bytes", i, e.Seq, len(e.Hash), len(e.Sig))
		}
	}
	if !bytes.Equal(es[0].Prev, Genesis) {
		t.Fatal("first entry does not follow Genesis")
	}
	// Deterministic: the same entries give the same hashes.
	again := chain(t, 50, key)
	for i := range es {
		if !bytes.Equal(es[i].Hash, again[i].Hash) || !bytes.Equal(es[i].Sig, again[i].Sig) {
			t.Fatalf("entry %d differs between two identical runs", i)
		}
	}
}

// An entry must keep its hash through every way callers serialise it:
// json.Marshal (which HTML-escapes and compacts RawMessage), MarshalIndent,
// an encoder without HTML escaping.
func TestChainSurvivesJSON(t *testing.T) {
	key := testKey(1)
	pub := key.Public().(ed25519.PublicKey)
	es := chain(t, 5, key)
	encoders := map[string]func([]Entry) ([]byte, error){
		"Marshal":       func(v []Entry) ([]byte, error) { return json.Marshal(v) },
		"MarshalIndent": func(v []Entry) ([]byte, error) { return json.MarshalIndent(v, "", "    ") },
		"no HTML escape": func(v []Entry) ([]byte, error) {
			var buf bytes.Buffer
			enc := json.NewEncoder(&buf)
			enc.SetEscapeHTML(false)
			err := enc.Encode(v)
			return buf.Bytes(), err
		},
	}
	for name, enc := range encoders {
		roundTrip := func(v []Entry) []Entry {
			t.Helper()
			b, err := enc(v)
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			var back []Entry
			if err := json.Unmarshal(b, &back); err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			return back
		}
		back := roundTrip(es)
		if i, err := VerifyChain(nil, back, pub); err != nil {
			t.Errorf("%s: round trip broke the chain at %d: %v", name, i, err)
		}
		// And twice.
		back2 := roundTrip(back)
		if _, err := VerifyChain(nil, back2, pub); err != nil {
			t.Errorf("%s twice: %v", name, err)
		}
	}
	// Next stores Data in the form json.Marshal leaves unchanged.
	e := es[0]
	if want := `{"i":0,"note":"\u003ca \u0026 b\u003e"}`; string(e.Data) != want {
		t.Fatalf("Data stored as %s, want %s", e.Data, want)
	}
	b, err := json.Marshal(e.Data)
	if err != nil || !bytes.Equal(b, e.Data) {
		t.Fatalf("json.Marshal changes stored Data: %s", b)
	}
}

func TestTamper(t *testing.T) {
	key, other := testKey(1), testKey(2)
	pub := key.Public().(ed25519.PublicKey)
	const n = 10
	for _, tc := range []struct {
		name   string
		signed bool // verify with pub
		edit   func([]Entry) []Entry
		index  int // first bad entry VerifyChain must report; -1: not detectable by VerifyChain
		msg    string
	}{
		{"removed first", true, func(es []Entry) []Entry { return es[1:] }, 0, "missing"},
		{"removed middle", true, func(es []Entry) []Entry { return append(es[:4], es[5:]...) }, 4, "missing"},
		{"removed two", true, func(es []Entry) []Entry { return append(es[:2], es[4:]...) }, 2, "missing"},
		{"reordered", true, func(es []Entry) []Entry { es[3], es[4] = es[4], es[3]; return es }, 3, "out of order"},
		{"duplicated", true, func(es []Entry) []Entry { return append(es[:6], es[5:]...) }, 6, ""},
		{"rewritten kind", true, func(es []Entry) []Entry { es[5].Kind = "verify.ok"; return es }, 5, "altered"},
		{"rewritten subject", false, func(es []Entry) []Entry { es[2].Subject = "tech-999"; return es }, 2, "altered"},
		{"rewritten actor", false, func(es []Entry) []Entry { es[0].Actor = "dev-8"; return es }, 0, "altered"},
		{"rewritten data", false, func(es []Entry) []Entry { es[7].Data = json.RawMessage(`{"i":8}`); return es }, 7, "altered"},
		{"data removed", false, func(es []Entry) []Entry { es[7].Data = nil; return es }, 7, "altered"},
		{"data not json", false, func(es []Entry) []Entry { es[7].Data = json.RawMessage(`{`); return es }, 7, "JSON"},
		{"rewritten time", false, func(es []Entry) []Entry { es[9].Time = es[9].Time.Add(time.Microsecond); return es }, 9, "altered"},
		{"time moved 2^64 ns", false, func(es []Entry) []Entry {
			es[4].Time = es[4].Time.Add(math.MaxInt64).Add(math.MaxInt64).Add(2)
			return es
		}, 4, "1678..2262"},
		{"rewritten seq", false, func(es []Entry) []Entry { es[3].Seq = 30; return es }, 3, ""},
		{"rewritten prev", false, func(es []Entry) []Entry { es[3].Prev = es[1].Hash; return es }, 3, "prev"},
		{"kind invalid utf-8", false, func(es []Entry) []Entry { es[1].Kind = "verify\xff"; return es }, 1, "UTF-8"},
		{"kind too long", false, func(es []Entry) []Entry { es[1].Kind = strings.Repeat("k", MaxKindLen+1); return es }, 1, "bounds"},
		{"rewritten and rehashed, unsigned check", false, func(es []Entry) []Entry {
			es[5].Subject = "tech-999"
			es[5].Hash = digest(&es[5])
			return es
		}, 6, "prev"},
		{"rewritten and rehashed, signed check", true, func(es []Entry) []Entry {
			es[5].Subject = "tech-999"
			es[5].Hash = digest(&es[5])
			return es
		}, 5, "signature"},
		{"re-signed with another key", true, func(es []Entry) []Entry {
			es[5].Kind = "verify.ok"
			relink(es, 5, other)
			return es
		}, 5, "signature"},
		{"whole log re-signed with another key", true, func(es []Entry) []Entry { relink(es, 0, other); return es }, 0, "signature"},
		{"signature removed", true, func(es []Entry) []Entry { es[8].Sig = nil; return es }, 8, "signature"},
		{"signature truncated", true, func(es []Entry) []Entry { es[8].Sig = es[8].Sig[:63]; return es }, 8, "signature"},
		{"signature of another entry", true, func(es []Entry) []Entry { es[8].Sig = es[7].Sig; return es }, 8, "signature"},
		{"hash truncated", false, func(es []Entry) []Entry { es[3].Hash = es[3].Hash[:31]; return es }, 3, "altered"},
		{"hash missing", false, func(es []Entry) []Entry { es[0].Hash = nil; return es }, 0, "altered"},
		// What a chain alone cannot see; VerifyHead and signatures cover these.
		{"truncated at the end", true, func(es []Entry) []Entry { return es[:7] }, -1, ""},
		{"unsigned log rewritten wholesale", false, func(es []Entry) []Entry {
			es[2].Subject = "tech-999"
			relink(es, 2, nil)
			return es
		}, -1, ""},
		// Formatting only: not tampering.
		{"data reformatted", true, func(es []Entry) []Entry {
			es[4].Data = json.RawMessage("{ \"i\" : 4,\n \"note\": \"<a & b>\" }")
			return es
		}, -1, ""},
		{"time zone changed", true, func(es []Entry) []Entry { es[4].Time = es[4].Time.In(time.FixedZone("Z", 3600)); return es }, -1, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			es := tc.edit(clone(chain(t, n, key)))
			var k ed25519.PublicKey
			if tc.signed {
				k = pub
			}
			i, err := VerifyChain(nil, es, k)
			if i != tc.index {
				t.Fatalf("VerifyChain = %d, %v; want index %d", i, err, tc.index)
			}
			if tc.index == -1 {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if !errors.Is(err, ErrBroken) {
				t.Fatalf("error %v does not wrap ErrBroken", err)
			}
			if !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("error %q does not say %q", err, tc.msg)
			}
			if want := fmt.Sprintf("seq %d", es[i].Seq); !strings.Contains(err.Error(), want) {
				t.Errorf("error %q does not name %q", err, want)
			}
		})
	}
}

func TestVerifyChainAfter(t *testing.T) {
	key := testKey(1)
	pub := key.Public().(ed25519.PublicKey)
	es := chain(t, 10, key)
	// A page that does not follow the given entry.
	if i, err := VerifyChain(&es[2], es[4:], pub); i != 0 || !errors.Is(err, ErrBroken) {
		t.Fatalf("gap after a page: %d %v", i, err)
	}
	// A page whose first entry claims the right seq but another prev.
	if i, err := VerifyChain(&es[3], es[5:], pub); i != 0 || !errors.Is(err, ErrBroken) {
		t.Fatalf("%d %v", i, err)
	}
	other := clone(es)
	other[0].Subject = "another device's log"
	relink(other, 0, nil)
	if i, err := VerifyChain(&other[3], es[4:], nil); i != 0 || !errors.Is(err, ErrBroken) {
		t.Fatalf("page after another log's entry: %d %v", i, err)
	}
	if i, err := VerifyChain(nil, es, pub[:31]); i != -1 || err == nil || errors.Is(err, ErrBroken) {
		t.Fatalf("short public key: %d %v", i, err)
	}
}

func TestVerifyHead(t *testing.T) {
	key := testKey(1)
	es := chain(t, 10, key)
	head := es[7]
	for _, tc := range []struct {
		name    string
		after   *Entry
		entries []Entry
		index   int
	}{
		{"whole log", nil, es, -1},
		{"ends at head", nil, es[:8], -1},
		{"cut after head", nil, es[:7], 7},
		{"cut to nothing", nil, nil, 0},
		{"page holding head", &es[4], es[5:], -1},
		{"page cut short", &es[4], es[5:7], 2},
		{"head is after", &es[7], es[8:], -1},
		{"head before page", &es[8], es[9:], -1},
		{"rewritten head", nil, func() []Entry { c := clone(es); c[7].Hash[0] ^= 1; return c }(), 7},
		{"rewritten after", func() *Entry { c := clone(es[7:8]); c[0].Hash[0] ^= 1; return &c[0] }(), es[8:], 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			i, err := VerifyHead(tc.after, tc.entries, head.Seq, head.Hash)
			if i != tc.index || (tc.index == -1) != (err == nil) {
				t.Fatalf("VerifyHead = %d, %v; want %d", i, err, tc.index)
			}
			if err != nil && !errors.Is(err, ErrBroken) {
				t.Fatal(err)
			}
		})
	}
}

func TestNextRejects(t *testing.T) {
	ok := Entry{Time: base, Kind: "k"}
	for name, edit := range map[string]func(*Entry){
		"no kind":            func(e *Entry) { e.Kind = "" },
		"long kind":          func(e *Entry) { e.Kind = strings.Repeat("k", MaxKindLen+1) },
		"long subject":       func(e *Entry) { e.Subject = strings.Repeat("s", MaxSubjectLen+1) },
		"long actor":         func(e *Entry) { e.Actor = strings.Repeat("a", MaxSubjectLen+1) },
		"big data":           func(e *Entry) { e.Data = json.RawMessage(`"` + strings.Repeat("d", MaxDataLen) + `"`) },
		"data grows":         func(e *Entry) { e.Data = json.RawMessage(`"` + strings.Repeat("<", MaxDataLen/2) + `"`) },
		"data not json":      func(e *Entry) { e.Data = json.RawMessage(`{"a":`) },
		"data two values":    func(e *Entry) { e.Data = json.RawMessage(`1 2`) },
		"invalid utf-8":      func(e *Entry) { e.Subject = "\xc3" },
		"time before 1678":   func(e *Entry) { e.Time = time.Date(1600, 1, 1, 0, 0, 0, 0, time.UTC) },
		"time after 2262":    func(e *Entry) { e.Time = time.Date(2300, 1, 1, 0, 0, 0, 0, time.UTC) },
		"secret-ish not hid": func(e *Entry) { e.Kind = strings.Repeat("x", 65) },
	} {
		e := ok
		edit(&e)
		if _, err := Next(nil, e, nil); err == nil {
			t.Errorf("%s: Next accepted it", name)
		}
	}
	// A zero time is refused: the caller's clock sets it.
	if _, err := Next(nil, Entry{Kind: "k"}, nil); err == nil {
		t.Fatal("Next accepted an entry without a time")
	}
	at := time.Date(2031, 1, 2, 3, 4, 5, 6789, time.FixedZone("x", 3600))
	e, err := Next(nil, Entry{Kind: "k", Time: at}, nil)
	if err != nil || !e.Time.Equal(at.Truncate(time.Microsecond)) || e.Time.Location() != time.UTC {
		t.Fatalf("time: %v %v", e.Time, err)
	}
	if e.Time.Nanosecond()%1000 != 0 {
		t.Fatal("time not truncated to microseconds")
	}
	// The returned entry does not share Genesis's memory.
	e.Prev[0] = 1
	if !bytes.Equal(Genesis, make([]byte, HashSize)) {
		t.Fatal("Next returned Genesis itself; writing to the entry changed it")
	}
	Genesis = make([]byte, HashSize)
	// Sig of the input is never carried over. (The entry needs a time:
	// without one Next refuses it, and the check would prove nothing.)
	e, err = Next(nil, Entry{Kind: "k", Time: at, Sig: []byte("forged")}, nil)
	if err != nil || e.Sig != nil {
		t.Fatalf("Next kept a caller-supplied signature: %x, %v", e.Sig, err)
	}
}

// ---- fuzzing ----

// honestChain is the chain every fuzz input is compared with.
func honestChain(t testing.TB) []Entry { return chain(t, 6, testKey(1)) }

func TestWriteFuzzCorpus(t *testing.T) {
	if !*update {
		t.Skip("only with -update")
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzVerifyChain")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	writeRaw := func(name string, data []byte) {
		body := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", data)
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write := func(name string, es []Entry) {
		b, err := json.Marshal(es)
		if err != nil {
			t.Fatal(err)
		}
		writeRaw(name, b)
	}
	h := honestChain(t)
	write("good_chain", h)
	write("good_prefix", h[:3])
	c := clone(h)
	c[2].Kind = "verify.ok"
	write("fail_rewritten", c)
	c = clone(h)
	c[1], c[2] = c[2], c[1]
	write("fail_reordered", c)
	write("fail_removed", append(clone(h[:2]), clone(h[3:])...))
	c = clone(h)
	relink(c, 3, testKey(2))
	write("fail_resigned", c)
	c = clone(h)
	c[4].Sig = nil
	write("fail_unsigned", c)
	writeRaw("fail_garbage", []byte(`[{"seq":1}]`))
}

// FuzzVerifyChain: VerifyChain never panics, reports an index inside the
// slice, and accepts only a prefix of the honest chain: without the device's
// key no entry can be added, changed or reordered.
func FuzzVerifyChain(f *testing.F) {
	honest := honestChain(f)
	pub := testKey(1).Public().(ed25519.PublicKey)
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > 64<<10 {
			return
		}
		var es []Entry
		if json.Unmarshal(data, &es) != nil || len(es) > 100 {
			return
		}
		i, err := VerifyChain(nil, es, pub)
		if err != nil {
			if i < 0 || i >= len(es) || !errors.Is(err, ErrBroken) {
				t.Fatalf("VerifyChain = %d, %v for %d entries", i, err, len(es))
			}
		} else {
			if i != -1 {
				t.Fatalf("index %d with no error", i)
			}
			if len(es) > len(honest) {
				t.Fatalf("verified %d entries; the device wrote %d", len(es), len(honest))
			}
			for k := range es {
				a, b := es[k], honest[k]
				ca, _ := canonicalData(a.Data)
				if a.Seq != b.Seq || !a.Time.Equal(b.Time) || a.Kind != b.Kind || a.Actor != b.Actor || a.Subject != b.Subject || !bytes.Equal(ca, b.Data) || !bytes.Equal(a.Hash, b.Hash) {
					t.Fatalf("entry %d verified but differs from what the device wrote: %+v", k, a)
				}
			}
		}
		// Without a key: must not panic, index in range.
		if i, err := VerifyChain(nil, es, nil); err != nil && (i < 0 || i >= len(es)) {
			t.Fatalf("unsigned: index %d of %d", i, len(es))
		}
		if len(es) > 0 {
			VerifyHead(nil, es, es[len(es)-1].Seq, es[len(es)-1].Hash)
		}
	})
}
