package keys

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// -update regenerates the checked-in vectors in testdata. Never run it
// to make a failing test pass: a changed vector means every key derived in the
// field changed.
var update = flag.Bool("update", false, "regenerate testdata vectors (changes frozen known answers!)")

// testSecret is the master key of every known-answer vector: bytes 0x00..0x1f.
func testSecret() []byte {
	b := make([]byte, Size)
	for i := range b {
		b[i] = byte(i)
	}
	return b
}

// testMaster is the master key of testSecret.
func testMaster(t testing.TB) *Master {
	t.Helper()
	m, err := MasterFromBytes(testSecret())
	if err != nil {
		t.Fatal(err)
	}
	return m
}

type deriveVector struct {
	Secret  string   `json:"secret"`
	N       int      `json:"n"`
	Purpose Purpose  `json:"purpose"`
	Epoch   uint32   `json:"epoch"`
	Context []string `json:"context"`
	OKM     string   `json:"okm"`
}

// deriveCases are the inputs of testdata/derive_vectors.json.
func deriveCases() []deriveVector {
	s := hex.EncodeToString(testSecret())
	cases := []deriveVector{
		{N: 32, Purpose: PurposeTokenSeed, Context: []string{"realm", "alice", "tok-1"}},
		{N: 20, Purpose: PurposeTokenSeed, Context: []string{"realm", "alice", "tok-1"}},
		{N: 64, Purpose: PurposeTokenSeed, Epoch: 1, Context: []string{"realm", "alice", "tok-1"}},
		{N: 32, Purpose: PurposeScope, Context: []string{"site-7"}},
		{N: 32, Purpose: PurposeScope, Epoch: 4294967295, Context: []string{"site-7"}},
		{N: 20, Purpose: PurposeTechnician, Context: []string{"tech-042"}},
		{N: 32, Purpose: PurposeDataKey, Context: []string{"tokens.seed"}},
		{N: 32, Purpose: PurposeSigning},
		{N: 20, Purpose: PurposeSubject, Epoch: 2, Context: []string{"tech-042"}},
		{N: 32, Purpose: PurposeAPITokenMAC},
		{N: 32, Purpose: PurposeOfflineEntryWrap},
		{N: 32, Purpose: PurposeOfflineStaticSecret},
		{N: 16, Purpose: "custom", Context: []string{""}},
		{N: 32, Purpose: "custom", Context: []string{"ab", "c"}},
		{N: 32, Purpose: "custom", Context: []string{"a", "bc"}},
		{N: 32, Purpose: "custom", Context: []string{"técnico", "\x00\u00ff"}},
	}
	for i := range cases {
		cases[i].Secret = s
	}
	return cases
}

// frozenPurposes are the label strings. Renaming one changes every key derived
// under it, so they are frozen here as well as in the vectors.
var frozenPurposes = map[Purpose]string{
	PurposeTokenSeed:   "token-seed",
	PurposeScope:       "scope-key",
	PurposeTechnician:  "technician-seed",
	PurposeDataKey:     "data-key",
	PurposeSigning:     "signing-ed25519",
	PurposeSubject:     "subject-key",
	PurposeAPITokenMAC: "api-token-mac",

	PurposeOfflineEntryWrap:    "offline-entry-wrap",
	PurposeOfflineStaticSecret: "offline-static-secret",
}

func TestPurposeLabelsFrozen(t *testing.T) {
	seen := map[string]bool{}
	for p, want := range frozenPurposes {
		if string(p) != want {
			t.Errorf("purpose label changed: %q, frozen as %q", p, want)
		}
		if seen[want] {
			t.Errorf("label %q used twice", want)
		}
		seen[want] = true
	}
}

func readJSON(t testing.TB, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

func writeJSON(t testing.TB, path string, v any) {
	t.Helper()
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestDeriveVectors(t *testing.T) {
	path := filepath.Join("testdata", "derive_vectors.json")
	if *update {
		cases := deriveCases()
		for i, c := range cases {
			secret, err := hex.DecodeString(c.Secret)
			if err != nil {
				t.Fatal(err)
			}
			cases[i].OKM = hex.EncodeToString(Derive(secret, c.N, c.Purpose, c.Epoch, c.Context...))
		}
		writeJSON(t, path, cases)
	}
	var vs []deriveVector
	readJSON(t, path, &vs)
	if len(vs) < 10 {
		t.Fatalf("only %d vectors in %s", len(vs), path)
	}
	for _, v := range vs {
		secret, err := hex.DecodeString(v.Secret)
		if err != nil {
			t.Fatal(err)
		}
		got := hex.EncodeToString(Derive(secret, v.N, v.Purpose, v.Epoch, v.Context...))
		if got != v.OKM {
			t.Errorf("Derive(%d, %q, %d, %q) = %s, frozen %s: the derivation changed, which changes every key in the field", v.N, v.Purpose, v.Epoch, v.Context, got, v.OKM)
		}
		// The documented formula, written out independently of Derive.
		if ref := hex.EncodeToString(referenceDerive(secret, v.N, string(v.Purpose), v.Epoch, v.Context)); ref != v.OKM {
			t.Errorf("reference HKDF of the documented info encoding = %s, vector %s", ref, v.OKM)
		}
		m, err := MasterFromBytes(secret)
		if err != nil {
			t.Fatal(err)
		}
		if got := hex.EncodeToString(m.Derive(v.N, v.Purpose, v.Epoch, v.Context...)); got != v.OKM {
			t.Errorf("Master.Derive differs from Derive: %s", got)
		}
	}
}

// referenceDerive is RFC 5869 HKDF-SHA256 from HMAC, with the info string
// built exactly as the doc comment of Derive states.
func referenceDerive(secret []byte, n int, purpose string, epoch uint32, context []string) []byte {
	var info bytes.Buffer
	info.WriteString("outpost/v1")
	field := func(s string) {
		var l [2]byte
		binary.BigEndian.PutUint16(l[:], uint16(len(s)))
		info.Write(l[:])
		info.WriteString(s)
	}
	field(purpose)
	var e [4]byte
	binary.BigEndian.PutUint32(e[:], epoch)
	info.Write(e[:])
	for _, c := range context {
		field(c)
	}
	ext := hmac.New(sha256.New, []byte("outpost-hkdf-salt-v1"))
	ext.Write(secret)
	prk := ext.Sum(nil)
	var out, t []byte
	for i := byte(1); len(out) < n; i++ {
		h := hmac.New(sha256.New, prk)
		h.Write(t)
		h.Write(info.Bytes())
		h.Write([]byte{i})
		t = h.Sum(nil)
		out = append(out, t...)
	}
	return out[:n]
}

func TestDeriveDomainSeparation(t *testing.T) {
	m, err := MasterFromBytes(testSecret())
	if err != nil {
		t.Fatal(err)
	}
	type in struct {
		purpose Purpose
		epoch   uint32
		ctx     []string
	}
	inputs := []in{
		{PurposeTokenSeed, 0, nil},
		{PurposeTokenSeed, 0, []string{""}},
		{PurposeTokenSeed, 0, []string{"", ""}},
		{PurposeTokenSeed, 1, nil},
		{PurposeTokenSeed, 0, []string{"ab", "c"}},
		{PurposeTokenSeed, 0, []string{"a", "bc"}},
		{PurposeTokenSeed, 0, []string{"abc"}},
		{PurposeTokenSeed, 0, []string{"a", "b", "c"}},
		{PurposeTokenSeed, 0, []string{"c", "ab"}},
		{PurposeTokenSeed, 1, []string{"ab", "c"}},
		{PurposeTokenSeed, 256, []string{"ab", "c"}},
		{PurposeScope, 0, []string{"ab", "c"}},
		{PurposeScope, 0, nil},
		{PurposeTechnician, 0, nil},
		{PurposeDataKey, 0, nil},
		{PurposeSigning, 0, nil},
		{PurposeSubject, 0, nil},
		{PurposeAPITokenMAC, 0, nil},
		// A purpose that ends where a context begins must not collide.
		{"token", 0, []string{"-seed"}},
		{"token-seed\x00", 0, nil},
		{"", 0, []string{"token-seed"}},
	}
	seen := map[string]in{}
	for _, x := range inputs {
		k := hex.EncodeToString(m.Derive(32, x.purpose, x.epoch, x.ctx...))
		if prev, dup := seen[k]; dup {
			t.Errorf("%+v and %+v derive the same key", prev, x)
		}
		seen[k] = x
	}
	// A different master gives different keys for the same labels.
	other := testSecret()
	other[0] ^= 1
	if bytes.Equal(Derive(other, 32, PurposeScope, 0, "s"), m.Derive(32, PurposeScope, 0, "s")) {
		t.Error("two master keys derive the same scope key")
	}
	// Shorter outputs are prefixes (HKDF property): callers must not rely on
	// length alone to separate uses, which is why purposes exist.
	if !bytes.HasPrefix(m.Derive(64, PurposeScope, 0, "s"), m.Derive(32, PurposeScope, 0, "s")) {
		t.Error("HKDF output of 32 bytes is not a prefix of 64 bytes")
	}
}

func TestDerivePanicsOnProgrammingErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		f    func()
	}{
		{"n too small", func() { Derive(testSecret(), 15, PurposeScope, 0) }},
		{"n too large", func() { Derive(testSecret(), 255*32+1, PurposeScope, 0) }},
		{"context too long", func() { Derive(testSecret(), 32, PurposeScope, 0, strings.Repeat("x", 1<<16)) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Error("no panic")
				}
			}()
			tc.f()
		})
	}
	// The bounds themselves are accepted.
	Derive(testSecret(), 16, PurposeScope, 0, strings.Repeat("x", 0xffff))
	Derive(testSecret(), 255*32, PurposeScope, 0)
}

func TestMasterFromBytes(t *testing.T) {
	for _, n := range []int{0, 16, 31, 33, 64} {
		if _, err := MasterFromBytes(make([]byte, n)); err == nil {
			t.Errorf("MasterFromBytes accepted %d bytes", n)
		}
	}
	m, err := MasterFromBytes(testSecret())
	if err != nil {
		t.Fatal(err)
	}
	b := m.Bytes()
	if !bytes.Equal(b, testSecret()) {
		t.Fatal("Bytes does not return the key")
	}
	b[0] ^= 0xff
	if !bytes.Equal(m.Bytes(), testSecret()) {
		t.Fatal("Bytes returned the key's own memory, not a copy")
	}
	g1, err := GenerateMaster()
	if err != nil {
		t.Fatal(err)
	}
	g2, err := GenerateMaster()
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(g1.Bytes(), g2.Bytes()) || bytes.Equal(g1.Bytes(), make([]byte, Size)) {
		t.Fatal("GenerateMaster is not random")
	}
}

type signerVector struct {
	Epoch  uint32 `json:"epoch"`
	Public string `json:"public"`
	KeyID  string `json:"kid"`
	// Sig is the signature of "outpost" (Ed25519 is deterministic).
	Sig string `json:"sig_of_outpost"`
}

var keyIDFormat = regexp.MustCompile(`^ed25519:[0-9a-f]{16}$`)

func TestSignerVectors(t *testing.T) {
	m := testMaster(t)
	path := filepath.Join("testdata", "signer_vectors.json")
	if *update {
		var vs []signerVector
		for _, e := range []uint32{0, 1, 2, 4294967295} {
			s := m.Signer(e)
			vs = append(vs, signerVector{Epoch: e, Public: hex.EncodeToString(s.Public), KeyID: s.KeyID, Sig: hex.EncodeToString(s.Sign([]byte("outpost")))})
		}
		writeJSON(t, path, vs)
	}
	var vs []signerVector
	readJSON(t, path, &vs)
	kids := map[string]bool{}
	for _, v := range vs {
		s := m.Signer(v.Epoch)
		if hex.EncodeToString(s.Public) != v.Public || s.KeyID != v.KeyID {
			t.Errorf("epoch %d: signer %x %s, frozen %s %s: every pinned public key would change", v.Epoch, s.Public, s.KeyID, v.Public, v.KeyID)
		}
		if got := hex.EncodeToString(s.Sign([]byte("outpost"))); got != v.Sig {
			t.Errorf("epoch %d: signature %s, frozen %s", v.Epoch, got, v.Sig)
		}
		if s.Epoch != v.Epoch {
			t.Errorf("Signer(%d).Epoch = %d", v.Epoch, s.Epoch)
		}
		if !keyIDFormat.MatchString(s.KeyID) {
			t.Errorf("key id %q does not match %s", s.KeyID, keyIDFormat)
		}
		sum := sha256.Sum256(s.Public)
		if s.KeyID != "ed25519:"+hex.EncodeToString(sum[:8]) || KeyID(s.Public) != s.KeyID {
			t.Errorf("key id %q is not ed25519: + hex of the first 8 bytes of SHA-256(public key)", s.KeyID)
		}
		if kids[s.KeyID] {
			t.Errorf("two epochs share key id %s", s.KeyID)
		}
		kids[s.KeyID] = true
		// Deterministic: the same master and epoch always give the same key.
		if again := m.Signer(v.Epoch); !again.Private.Equal(s.Private) {
			t.Errorf("Signer(%d) is not deterministic", v.Epoch)
		}
		if !ed25519.Verify(s.Public, []byte("msg"), s.Sign([]byte("msg"))) {
			t.Error("signature does not verify")
		}
		if !s.Public.Equal(s.Private.Public()) {
			t.Error("Public is not the public half of Private")
		}
	}
	if len(vs) < 3 {
		t.Fatalf("only %d signer vectors", len(vs))
	}
}

func TestPublicPEMRoundTrip(t *testing.T) {
	m := testMaster(t)
	pub := m.Signer(0).Public
	p := MarshalPublicPEM(pub)
	if !bytes.Contains(p, []byte(KeyID(pub))) {
		t.Errorf("PEM does not name the key id:\n%s", p)
	}
	got, err := ParsePublicPEM(p)
	if err != nil {
		t.Fatal(err)
	}
	if !got.Equal(pub) {
		t.Fatal("round trip changed the key")
	}
	// Without the comment line, and with CRLF line endings.
	bare := p[bytes.Index(p, []byte("-----BEGIN")):]
	for _, in := range [][]byte{bare, bytes.ReplaceAll(p, []byte("\n"), []byte("\r\n")), append(append([]byte{}, p...), "\n\n  \t\n"...)} {
		if got, err := ParsePublicPEM(in); err != nil || !got.Equal(pub) {
			t.Errorf("ParsePublicPEM(%q) = %v", in, err)
		}
	}
}

// requireTool returns the path of an interop tool, or skips; with
// OUTPOST_REQUIRE_INTEROP=1 (set by CI) a missing tool fails the test.
func requireTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("OUTPOST_REQUIRE_INTEROP") == "1" {
			t.Fatalf("%s is not installed and OUTPOST_REQUIRE_INTEROP=1", name)
		}
		t.Skipf("%s is not installed (apt-get install %s); skipping interop test", name, name)
	}
	return p
}

func TestPublicPEMOpenSSL(t *testing.T) {
	openssl := requireTool(t, "openssl")
	dir := t.TempDir()
	m := testMaster(t)
	pub := m.Signer(0).Public
	file := filepath.Join(dir, "server.pub")
	if err := os.WriteFile(file, MarshalPublicPEM(pub), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(openssl, "pkey", "-pubin", "-in", file, "-noout").CombinedOutput()
	if err != nil {
		t.Fatalf("openssl pkey rejected MarshalPublicPEM output: %v\n%s", err, out)
	}
	// openssl's DER of the key is ours, and what openssl writes we read.
	out, err = exec.Command(openssl, "pkey", "-pubin", "-in", file, "-pubout").Output()
	if err != nil {
		t.Fatal(err)
	}
	got, err := ParsePublicPEM(out)
	if err != nil || !got.Equal(pub) {
		t.Fatalf("ParsePublicPEM(openssl output) = %v, %v", got, err)
	}
	// A key openssl generated itself.
	priv := filepath.Join(dir, "ed.pem")
	if out, err := exec.Command(openssl, "genpkey", "-algorithm", "ed25519", "-out", priv).CombinedOutput(); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	out, err = exec.Command(openssl, "pkey", "-in", priv, "-pubout").Output()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ParsePublicPEM(out); err != nil {
		t.Fatalf("ParsePublicPEM(openssl genpkey ed25519) = %v", err)
	}
}

func TestParsePublicPEMRejects(t *testing.T) {
	m := testMaster(t)
	good := MarshalPublicPEM(m.Signer(0).Public)
	rsaKey, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pemOf := func(typ string, der []byte, hdr map[string]string) []byte {
		return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der, Headers: hdr})
	}
	// A DER that failed to marshal would be rejected for being empty,
	// not for what its case names.
	der := func(b []byte, err error) []byte {
		t.Helper()
		if err != nil || len(b) == 0 {
			t.Fatalf("marshalling a test key: %v", err)
		}
		return b
	}
	rsaDER := der(x509.MarshalPKIXPublicKey(&rsaKey.PublicKey))
	ecDER := der(x509.MarshalPKIXPublicKey(&ecKey.PublicKey))
	edDER := der(x509.MarshalPKIXPublicKey(m.Signer(0).Public))
	privDER := der(x509.MarshalPKCS8PrivateKey(m.Signer(0).Private))
	for _, tc := range []struct {
		name string
		in   []byte
	}{
		{"empty", nil},
		{"garbage", []byte("not a key at all")},
		{"binary", []byte{0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70}},
		{"rsa", pemOf("PUBLIC KEY", rsaDER, nil)},
		{"ecdsa", pemOf("PUBLIC KEY", ecDER, nil)},
		{"private key", pemOf("PRIVATE KEY", privDER, nil)},
		{"certificate type", pemOf("CERTIFICATE", edDER, nil)},
		{"headers", pemOf("PUBLIC KEY", edDER, map[string]string{"Proc-Type": "4,ENCRYPTED"})},
		{"trailing text", append(append([]byte{}, good...), "trailing"...)},
		{"two keys", append(append([]byte{}, good...), good...)},
		{"trailing DER", pemOf("PUBLIC KEY", append(append([]byte{}, edDER...), 0), nil)},
		{"truncated DER", pemOf("PUBLIC KEY", edDER[:len(edDER)-1], nil)},
		{"truncated PEM", good[:len(good)-20]},
		{"oversize", append(bytes.Repeat([]byte("#"), 16<<10), good...)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k, err := ParsePublicPEM(tc.in)
			if !errors.Is(err, ErrNotPublicKey) {
				t.Fatalf("ParsePublicPEM = %x, %v; want ErrNotPublicKey", k, err)
			}
			if k != nil {
				t.Fatal("returned a key with the error")
			}
		})
	}
}
