// Package pin hashes and checks users' static PINs with argon2id, stored as
// PHC strings ($argon2id$v=19$m=...,t=...,p=...$salt$hash). The server holds a
// PIN in the clear only while handling the request that carries it.
package pin

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/crypto/argon2"
)

// Length limits of a static PIN (digits only).
const (
	MinLen = 4
	MaxLen = 12
)

// Cost is the argon2id cost of a PIN hash: OWASP's minimum recommendation
// (19 MiB, t=2, p=1), about 50 ms here; a PIN is checked once per login.
var Cost = struct {
	Time, MemoryKiB uint32
	Threads         uint8
}{2, 19 * 1024, 1}

// ErrInvalid reports a PIN that is not 4 to 12 digits.
var ErrInvalid = errors.New("pin: must be 4 to 12 digits")

// Validate checks the PIN's form.
func Validate(p string) error {
	if len(p) < MinLen || len(p) > MaxLen {
		return ErrInvalid
	}
	for i := 0; i < len(p); i++ {
		if p[i] < '0' || p[i] > '9' {
			return ErrInvalid
		}
	}
	return nil
}

// Hash validates p and returns its PHC-format argon2id hash with a random salt.
func Hash(p string) ([]byte, error) {
	if err := Validate(p); err != nil {
		return nil, err
	}
	salt := make([]byte, 16)
	if _, err := rand.Read(salt); err != nil {
		return nil, err
	}
	sum := argon2.IDKey([]byte(p), salt, Cost.Time, Cost.MemoryKiB, Cost.Threads, 32)
	enc := base64.RawStdEncoding
	return fmt.Appendf(nil, "$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", argon2.Version, Cost.MemoryKiB, Cost.Time, Cost.Threads,
		enc.EncodeToString(salt), enc.EncodeToString(sum)), nil
}

// Check reports whether p matches hash, in constant time. A malformed hash
// never matches.
func Check(hash []byte, p string) bool {
	h, ok := parse(hash)
	if !ok {
		return false
	}
	got := argon2.IDKey([]byte(p), h.salt, h.time, h.memoryKiB, h.threads, 32)
	return subtle.ConstantTimeCompare(got, h.sum) == 1
}

// phc is a parsed PIN hash.
type phc struct {
	time, memoryKiB uint32
	threads         uint8
	salt, sum       []byte
}

// parse reads a PHC string as Hash writes it, and refuses what Check must
// not hand to argon2id: another algorithm or version, a cost out of
// bounds (no pass at all makes argon2.IDKey panic), a digest that is not
// 32 bytes.
func parse(hash []byte) (phc, bool) {
	var h phc
	parts := strings.Split(string(hash), "$")
	if len(parts) != 6 || parts[1] != "argon2id" || parts[2] != "v="+strconv.Itoa(argon2.Version) {
		return h, false
	}
	if _, err := fmt.Sscanf(parts[3], "m=%d,t=%d,p=%d", &h.memoryKiB, &h.time, &h.threads); err != nil || h.memoryKiB > 1<<20 || h.time < 1 || h.time > 10 || h.threads == 0 {
		return h, false
	}
	enc := base64.RawStdEncoding
	var err1, err2 error
	h.salt, err1 = enc.DecodeString(parts[4])
	h.sum, err2 = enc.DecodeString(parts[5])
	if err1 != nil || err2 != nil || len(h.sum) != 32 {
		return h, false
	}
	return h, true
}
