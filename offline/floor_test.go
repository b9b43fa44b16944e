package offline_test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"testing"

	"github.com/outpost-auth/outpost/internal/bundlefmt"
	"github.com/outpost-auth/outpost/internal/devicelog"
	"github.com/outpost-auth/outpost/internal/keys"
	"github.com/outpost-auth/outpost/offline"
	"github.com/outpost-auth/outpost/otp"
)

// totpCode is the code of step for the test seed.
func totpCode(t *testing.T, step uint64) string {
	t.Helper()
	c, err := otp.HOTP(otp.SHA1, seed, step, 6)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// resign decodes a bundle, lets mod change it, and signs it again with the
// server's key: how a test makes a bundle the issuer would not make.
func resign(t *testing.T, data []byte, mod func(*bundlefmt.Bundle)) []byte {
	t.Helper()
	b, err := bundlefmt.Decode(data, trusted(t), bundlefmt.Expect{Device: "dev-1"})
	if err != nil {
		t.Fatal(err)
	}
	mod(b)
	out, err := b.Sign(testSigner(t))
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// The server's last used step travels in the bundle: the field store refuses
// a code used online before the bundle was issued, even when the bundle
// holds an entry for it, and without any sync.
func TestImportAppliesServerUsedStep(t *testing.T) {
	step := otp.DefaultTOTP.Step(t0) // S: used online at t0
	used := totpReq("")
	used.Used, used.LastUsed = true, step
	tests := []struct {
		name string
		data func(t *testing.T) []byte
	}{
		{"as issued: entries start after S", func(t *testing.T) []byte { return issue(t, used) }},
		{"a bundle holding S with S used", func(t *testing.T) []byte {
			return resign(t, issue(t, totpReq("")), func(b *bundlefmt.Bundle) { b.Used = int64(step) })
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, c, _ := newStore(t, quickPolicy)
			res, err := s.Import(ctx, tc.data(t))
			if err != nil {
				t.Fatal(err)
			}
			if ts := tokenStatus(t, s, "bob"); ts.LastUsed == nil || *ts.LastUsed != step {
				t.Fatalf("after import: last used %v, want %d (from %d)", ts.LastUsed, step, res.First)
			}
			if _, err := s.Verify(ctx, offline.Attempt{User: "bob", Code: totpCode(t, step)}); !errors.Is(err, offline.ErrRefused) {
				t.Fatalf("the code of step S, used online: %v", err)
			}
			if _, err := s.Verify(ctx, offline.Attempt{User: "bob", Code: totpCode(t, step-1)}); !errors.Is(err, offline.ErrRefused) {
				t.Fatalf("the code of step S-1: %v", err)
			}
			c.Advance(30e9)
			if r, err := s.Verify(ctx, offline.Attempt{User: "bob", Code: totpCode(t, step+1)}); err != nil || r.Counter != step+1 {
				t.Fatalf("the code of step S+1: %v", err)
			}
		})
	}
}

// The floor only raises the device's state: a bundle with a lower floor (or
// none) leaves a higher last used counter where it is.
func TestUsedFloorNeverLowers(t *testing.T) {
	s, _, _ := newStore(t, quickPolicy)
	r := hotpReq(0, 10)
	r.Used, r.LastUsed, r.Serial = true, 6, 1
	if _, err := s.Import(ctx, issue(t, r)); err != nil {
		t.Fatal(err)
	}
	r = hotpReq(0, 10)
	r.Used, r.LastUsed, r.Serial = true, 2, 2
	if _, err := s.Import(ctx, issue(t, r)); err != nil {
		t.Fatal(err)
	}
	r = hotpReq(0, 10)
	r.Serial = 3
	res, err := s.Import(ctx, issue(t, r))
	if err != nil {
		t.Fatal(err)
	}
	if ts := tokenStatus(t, s, "alice"); ts.LastUsed == nil || *ts.LastUsed != 6 || res.First != 0 {
		t.Fatalf("last used %v, first %d: want 6 kept", ts.LastUsed, res.First)
	}
	if _, err := s.Verify(ctx, offline.Attempt{User: "alice", Code: hotpCodes(t, 7)[6]}); !errors.Is(err, offline.ErrRefused) {
		t.Fatalf("counter 6, below the floor: %v", err)
	}
}

// tamper rewrites a field of a bundle's signed payload without re-signing it.
func tamper(t *testing.T, data []byte, from, to string) []byte {
	t.Helper()
	var env map[string]any
	if err := json.Unmarshal(data, &env); err != nil {
		t.Fatal(err)
	}
	p, err := base64.StdEncoding.DecodeString(env["payload"].(string))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(p, []byte(from)) {
		t.Fatalf("payload has no %s", from)
	}
	env["payload"] = base64.StdEncoding.EncodeToString(bytes.Replace(p, []byte(from), []byte(to), 1))
	out, err := json.Marshal(env)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// The attacker holds the device: the floor and the acknowledged head are
// signed by the server, so lowering them in the file, or signing a bundle
// with the device's own key, is refused, logged, and changes no state.
func TestForgedFloorRefused(t *testing.T) {
	s, _, dir := newStore(t, quickPolicy)
	head, err := devicelog.Last(ctx, s.DB())
	if err != nil {
		t.Fatal(err)
	}
	r := totpReq("")
	r.Used, r.LastUsed = true, otp.DefaultTOTP.Step(t0)
	r.Acked, r.AckedHash = head.Seq, head.Hash
	good := issue(t, r)
	id, err := devicelog.LoadOrCreateIdentity(dir)
	if err != nil {
		t.Fatal(err)
	}
	own := &keys.Signer{Private: id.Private, Public: id.Public, KeyID: id.KeyID}
	r.Used = false
	byDevice, _, err := bundleIssueWith(own, r)
	if err != nil {
		t.Fatal(err)
	}
	for name, tc := range map[string]struct {
		data []byte
		want error
	}{
		"floor lowered":            {tamper(t, good, `"used":`, `"used":-1,"x":`), offline.ErrBadSignature},
		"acknowledged entry moved": {tamper(t, good, `"acked":1,`, `"acked":0,`), offline.ErrBadSignature},
		"signed by the device key": {byDevice, offline.ErrUnknownKey},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := s.Import(ctx, tc.data); !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
			if st, _ := s.Status(ctx); len(st.Tokens) != 0 {
				t.Fatalf("a refused bundle left state: %+v", st.Tokens)
			}
		})
	}
	if k := kinds(t, s); len(k) != 4 || k[1] != "import.refused" || k[3] != "import.refused" {
		t.Fatalf("log %v", k)
	}
}
