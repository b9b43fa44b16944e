package pin

import (
	"encoding/base64"
	"fmt"
	"testing"

	"golang.org/x/crypto/argon2"
)

// cheapHash is a well-formed hash of pin at the smallest argon2id cost, so
// that the fuzzer can afford to run Check on inputs derived from it.
func cheapHash(pin string) string {
	salt := []byte("0123456789abcdef")
	sum := argon2.IDKey([]byte(pin), salt, 1, 8, 1, 32)
	enc := base64.RawStdEncoding
	return fmt.Sprintf("$argon2id$v=%d$m=8,t=1,p=1$%s$%s", argon2.Version, enc.EncodeToString(salt), enc.EncodeToString(sum))
}

// FuzzParseHash feeds arbitrary strings to the PIN hash parser, which
// reads the hash stored with each user before Check runs argon2id with the
// cost it names. Nothing may panic, and a hash the parser accepts must
// name a cost within the bounds Check promises (at most 1 GiB and 10
// passes, at least one pass and one lane) and a 32-byte digest. Check
// itself runs only when the cost is tiny: the parser accepts costs up to
// a second of work, which would starve the fuzzer.
func FuzzParseHash(f *testing.F) {
	real, err := Hash("4711")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(string(real))
	f.Add(cheapHash("4711"))
	f.Add("$argon2i$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA")
	f.Add("plain")
	f.Fuzz(func(t *testing.T, hash string) {
		h, ok := parse([]byte(hash))
		if !ok {
			if Check([]byte(hash), "4711") {
				t.Fatalf("Check accepted a hash parse refuses: %q", hash)
			}
			return
		}
		if h.time < 1 || h.time > 10 || h.memoryKiB > 1<<20 || h.threads < 1 || len(h.sum) != 32 {
			t.Fatalf("parse accepted %q as %+v", hash, h)
		}
		if h.memoryKiB <= 64 && h.time == 1 && h.threads <= 4 {
			Check([]byte(hash), "4711")
		}
	})
}
