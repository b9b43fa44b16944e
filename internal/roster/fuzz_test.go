package roster_test

import (
	"bytes"
	"slices"
	"strings"
	"testing"

	"github.com/outpost-auth/outpost/internal/roster"
	"github.com/outpost-auth/outpost/internal/store/storetest"
	"github.com/outpost-auth/outpost/internal/vouchwire"
)

// FuzzIngest sends the data of a vouch entry, signed with an allowed staff
// device's own key as its next log entry, through a real sync on SQLite
// (the server keeps its state across inputs, as a server does). "@label"
// and "@fp" in the input are replaced by a real label's payload and its
// key's fingerprint. The sync is never
// refused for what a vouch says; a vouch the field side would not write
// stores nothing; one it would write is stored live or held, once.
func FuzzIngest(f *testing.F) {
	h := newHarness(f, storetest.SQLitePath(f))
	d := h.staff("phone-1", true)
	d.sync()
	payload, spki := label(f, "SN-1")
	good, err := vouchwire.New(payload, "cab-1", "52.1,4.3")
	if err != nil {
		f.Fatal(err)
	}
	splice := func(data []byte) []byte {
		data = bytes.ReplaceAll(data, []byte("@label"), []byte(payload))
		return bytes.ReplaceAll(data, []byte("@fp"), []byte(good.Fingerprint))
	}
	// The good seed must stay good, or the fuzzer explores refusals only.
	if _, err := vouchwire.Parse(splice([]byte(`{"label":"@label","site":"cab-1","location":"52.1,4.3","serial":"SN-1","model":"gw-100","fingerprint":"@fp"}`))); err != nil {
		f.Fatalf("the good seed is refused: %v", err)
	}
	log := d.log()
	prev := &log[len(log)-1]
	serial := uint64(1000)
	f.Fuzz(func(t *testing.T, data []byte) {
		h.t = t // the harness's failures are this input's
		data = splice(data)
		serial++
		up, es := d.sign(serial, prev, h.clock.Now(), data)
		if up == nil {
			return // not an entry a device log holds (not JSON, too large)
		}
		res, err := h.sync.Receive(ctx, up, "fuzz")
		if err != nil {
			t.Fatalf("sync refused for a vouch's data %q: %v", data, err)
		}
		if res.New != 1 {
			t.Fatalf("sync recorded %d entries, want 1", res.New)
		}
		prev = &es[0]
		v, perr := vouchwire.Parse(data)
		if perr != nil {
			return
		}
		vs, err := h.roster.Get(ctx, realm, v.Serial)
		if err != nil {
			t.Fatalf("accepted vouch not in the roster: %v", err)
		}
		n := 0
		for _, x := range vs.Vouches {
			if x.StaffDevice == d.id && x.DeviceSeq == es[0].Seq {
				n++
				if x.State != roster.StateLive && x.State != roster.StateHeld {
					t.Fatalf("new vouch in state %s", x.State)
				}
				if bytes.Equal(x.SPKI, spki) != (v.Label == payload) {
					t.Fatalf("stored key does not match the label's")
				}
			}
		}
		if n != 1 {
			t.Fatalf("vouch stored %d times", n)
		}
	})
}

// FuzzParseExpected: the file of expected serials never panics the parser;
// what it accepts is serials that follow the label's rule, each once, and
// parses back to itself.
func FuzzParseExpected(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		out, err := roster.ParseExpected(data)
		if err != nil {
			return
		}
		if len(out) == 0 || len(out) > roster.MaxExpect {
			t.Fatalf("%d serials", len(out))
		}
		for i, s := range out {
			if s == "" || len(s) > 64 || strings.ContainsAny(s, " #\n\t\r") || slices.Contains(out[:i], s) {
				t.Fatalf("serial %q", s)
			}
		}
		again, err := roster.ParseExpected([]byte(strings.Join(out, "\n")))
		if err != nil || !slices.Equal(again, out) {
			t.Fatalf("does not parse back: %v %v", again, err)
		}
	})
}
