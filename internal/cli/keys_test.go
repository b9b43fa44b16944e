package cli_test

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/outpost-auth/outpost/internal/cli"
	"github.com/outpost-auth/outpost/internal/datadir"
	"github.com/outpost-auth/outpost/internal/keys"
	"github.com/outpost-auth/outpost/otp"
)

// keysFixture is a data directory shared by the keys tests: initialising
// and opening a sealed key costs an argon2id run at the default cost each.
type keysFixture struct {
	dir      string // scratch directory holding the files below
	data     string // data directory
	passFile string // master passphrase file
	kid      string // signing key id init reported
	master   *keys.Master
}

var (
	fixtureMu sync.Mutex
	fixtures  = map[bool]*keysFixture{}
)

// sharedData returns the sealed shared data directory.
func sharedData(t *testing.T) keysFixture { return getFixture(t, false) }

// unsealedData returns a shared --dev-insecure-unsealed data directory, for
// tests about other files that do not need to pay for opening the master key.
func unsealedData(t *testing.T) keysFixture { return getFixture(t, true) }

func getFixture(t *testing.T, insecure bool) keysFixture {
	t.Helper()
	fixtureMu.Lock()
	defer fixtureMu.Unlock()
	if f := fixtures[insecure]; f != nil {
		return *f
	}
	dir, err := os.MkdirTemp(testRoot, "keys-fixture")
	if err != nil {
		t.Fatal(err)
	}
	f := &keysFixture{dir: dir, data: filepath.Join(dir, "data"), passFile: writeFile(t, dir, "master.pass", masterPass+"\n")}
	args := []string{"init", "--data", f.data, "--json"}
	if insecure {
		args = append(args, "--dev-insecure-unsealed")
	} else {
		args = append(args, "--passphrase-file", f.passFile)
	}
	r := mustRun(t, nil, args...)
	var out struct {
		KeyID string `json:"signing_key_id"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &out); err != nil {
		t.Fatalf("init --json: %v\n%s", err, r)
	}
	f.kid = out.KeyID
	if f.master, _, err = datadir.LoadMaster(f.data, []byte(masterPass)); err != nil {
		t.Fatal(err)
	}
	fixtures[insecure] = f
	return *f
}

// subjectSecret is what the exported key file for subject at epoch must hold,
// computed with the library from the master key.
func subjectSecret(t *testing.T, f keysFixture, subject string, epoch uint32) []byte {
	t.Helper()
	return f.master.Derive(20, keys.PurposeSubject, epoch, subject)
}

func TestKeysExportPublic(t *testing.T) {
	f := sharedData(t)
	out := filepath.Join(t.TempDir(), "server.pub")
	r := mustRun(t, nil, "keys", "export-public", "--data", f.data, "--passphrase-file", f.passFile, "--out", out)
	notLeaked(t, r, masterPass)
	pemBytes, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := keys.ParsePublicPEM(pemBytes)
	if err != nil {
		t.Fatal(err)
	}
	if keys.KeyID(pub) != f.kid || !bytes.Contains(pemBytes, []byte(f.kid)) {
		t.Fatalf("exported key %s, init reported %s", keys.KeyID(pub), f.kid)
	}
	// stdout form is the same file.
	r = mustRun(t, nil, "keys", "export-public", "--data", f.data, "--passphrase-file", f.passFile)
	if r.stdout != string(pemBytes) {
		t.Fatalf("stdout and --out differ:\n%s\n%s", r.stdout, pemBytes)
	}
	// --json and another epoch: another key.
	r = mustRun(t, nil, "keys", "export-public", "--data", f.data, "--passphrase-file", f.passFile, "--epoch", "1", "--json")
	var j struct {
		KID   string `json:"kid"`
		Epoch uint32 `json:"epoch"`
		PEM   string `json:"pem"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &j); err != nil {
		t.Fatal(err)
	}
	pub1, err := keys.ParsePublicPEM([]byte(j.PEM))
	if err != nil || j.Epoch != 1 || keys.KeyID(pub1) != j.KID || j.KID == f.kid {
		t.Fatalf("epoch 1 key: %+v %v", j, err)
	}

	openssl, err := exec.LookPath("openssl")
	if err != nil {
		if os.Getenv("OUTPOST_REQUIRE_INTEROP") == "1" {
			t.Fatal("openssl is not installed and OUTPOST_REQUIRE_INTEROP=1")
		}
		t.Skip("openssl is not installed (apt-get install openssl); skipping interop check")
	}
	if o, err := exec.Command(openssl, "pkey", "-pubin", "-in", out, "-noout").CombinedOutput(); err != nil {
		t.Fatalf("openssl pkey -pubin rejected the exported key: %v\n%s", err, o)
	}
	o, err := exec.Command(openssl, "pkey", "-pubin", "-in", out, "-noout", "-text").CombinedOutput()
	if err != nil || !strings.Contains(string(o), "ED25519") {
		t.Fatalf("openssl does not read an Ed25519 key: %v\n%s", err, o)
	}
}

func TestKeysExportInspect(t *testing.T) {
	f := sharedData(t)
	tmp := t.TempDir()
	keyFile := filepath.Join(tmp, "tech-042.key")
	const filePass = "tech-042 key file passphrase"
	ep := writeFile(t, tmp, "export.pass", filePass)
	secret := subjectSecret(t, f, "tech-042", 0)
	b32 := otp.EncodeSecret(secret)

	r := mustRun(t, nil, "keys", "export", "--data", f.data, "--passphrase-file", f.passFile,
		"--subject", "tech-042", "--out", keyFile, "--export-passphrase-file", ep, "--json")
	notLeaked(t, r, masterPass, filePass, b32)
	var exp struct {
		File        string `json:"file"`
		Subject     string `json:"subject"`
		Fingerprint string `json:"fingerprint"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &exp); err != nil || exp.Subject != "tech-042" || exp.File != keyFile {
		t.Fatalf("export --json: %v\n%s", err, r)
	}
	st, err := os.Stat(keyFile)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode: %v %v", st, err)
	}
	raw := readFile(t, keyFile)
	if bytes.Contains(raw, []byte(b32)) || bytes.Contains(raw, secret) {
		t.Fatal("the key file holds the secret in the clear")
	}

	// inspect --json, without --show-secret: no secret.
	r = mustRun(t, nil, "keys", "inspect", keyFile, "--passphrase-file", ep, "--json")
	notLeaked(t, r, masterPass, filePass, b32)
	var info map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &info); err != nil {
		t.Fatalf("inspect --json: %v\n%s", err, r)
	}
	if info["subject"] != "tech-042" || info["purpose"] != "subject-key" || info["epoch"] != 0.0 || info["fingerprint"] != exp.Fingerprint {
		t.Fatalf("inspect --json = %v (export said fingerprint %s)", info, exp.Fingerprint)
	}
	if _, ok := info["otpauth_uri"]; ok {
		t.Fatal("otpauth_uri shown without --show-secret")
	}

	// Plain text form.
	r = mustRun(t, nil, "keys", "inspect", keyFile, "--passphrase-file", ep)
	notLeaked(t, r, filePass, b32)
	for _, want := range []string{"tech-042", "subject-key", exp.Fingerprint} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("inspect does not show %q:\n%s", want, r)
		}
	}

	// --show-secret: an otpauth URI holding exactly the derived secret, whose
	// code is what 'outpost otp code' prints.
	r = mustRun(t, nil, "keys", "inspect", keyFile, "--passphrase-file", ep, "--json", "--show-secret")
	notLeaked(t, r, filePass, masterPass)
	var withSecret struct {
		URI string `json:"otpauth_uri"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &withSecret); err != nil {
		t.Fatalf("inspect --show-secret --json: %v\n%s", err, r)
	}
	k, err := otp.ParseURI(withSecret.URI)
	if err != nil {
		t.Fatalf("inspect --show-secret gave %q: %v", withSecret.URI, err)
	}
	if !bytes.Equal(k.Secret, secret) || k.Account != "tech-042" || k.Issuer != "Outpost" || k.Params != otp.DefaultTOTP {
		t.Fatalf("URI %+v does not hold the subject's derived key with SHA1/6/30", k)
	}
	before := time.Now()
	r = mustRun(t, nil, "otp", "code", withSecret.URI)
	after := time.Now()
	code := strings.TrimSpace(r.stdout)
	cs := uriCodes(t, withSecret.URI, k.Step(before), k.Step(after))
	c1, c2 := cs[0], cs[1]
	if code != c1 && code != c2 {
		t.Fatalf("otp code printed %q, the derived key gives %q/%q", code, c1, c2)
	}
	r = mustRun(t, nil, "keys", "inspect", keyFile, "--passphrase-file", ep, "--show-secret")
	if !strings.Contains(r.stdout, withSecret.URI) {
		t.Fatalf("text --show-secret does not print the URI:\n%s", r)
	}
	r = mustRun(t, nil, "keys", "inspect", keyFile, "--passphrase-file", ep, "--qr")
	if len(r.stdout) < 200 {
		t.Fatalf("--qr printed no QR code:\n%s", r)
	}

	// The same subject at another epoch is another key; another subject too.
	if bytes.Equal(subjectSecret(t, f, "tech-042", 1), secret) || bytes.Equal(subjectSecret(t, f, "tech-043", 0), secret) {
		t.Fatal("subject keys do not depend on epoch and subject")
	}
}

func TestKeysExportRefusals(t *testing.T) {
	f := sharedData(t)
	tmp := t.TempDir()
	ep := writeFile(t, tmp, "export.pass", "a good key file passphrase")
	base := []string{"keys", "export", "--data", f.data, "--passphrase-file", f.passFile, "--subject", "tech-9"}

	// Never overwrites.
	existing := writeFile(t, tmp, "existing.key", "precious")
	r := expectCode(t, cli.ExitError, nil, append(base, "--out", existing, "--export-passphrase-file", ep)...)
	if !strings.Contains(r.stderr, "never overwritten") {
		t.Errorf("message:\n%s", r)
	}
	if b := readFile(t, existing); string(b) != "precious" {
		t.Fatal("existing file was overwritten")
	}
	// The key file's passphrase must not be the master passphrase.
	out := filepath.Join(tmp, "same.key")
	r = expectCode(t, cli.ExitUsage, nil, append(base, "--out", out, "--export-passphrase-file", f.passFile)...)
	notLeaked(t, r, masterPass)
	if !strings.Contains(r.stderr, "master key's passphrase") {
		t.Errorf("message:\n%s", r)
	}
	// Weak passphrase: a bad argument, as for every key file and package.
	weak := writeFile(t, tmp, "weak.pass", "short")
	r = expectCode(t, cli.ExitUsage, nil, append(base, "--out", out, "--export-passphrase-file", weak)...)
	if !strings.Contains(r.stderr, "at least 8") {
		t.Errorf("message:\n%s", r)
	}
	// No passphrase source for the file and no terminal.
	r = expectCode(t, cli.ExitError, nil, append(base, "--out", out)...)
	if !strings.Contains(r.stderr, "--passphrase-file") {
		t.Errorf("message:\n%s", r)
	}
	if _, err := os.Stat(out); err == nil {
		t.Fatal("a refused export wrote a file")
	}
	// Missing --subject / --out: usage errors.
	expectCode(t, cli.ExitUsage, nil, "keys", "export", "--data", f.data, "--out", out)
	expectCode(t, cli.ExitUsage, nil, "keys", "export", "--data", f.data, "--subject", "x")
	expectCode(t, cli.ExitUsage, nil, "keys", "export", "--data", f.data, "--subject", strings.Repeat("x", 257), "--out", out)
}

func TestKeysInspectBadFiles(t *testing.T) {
	f := unsealedData(t)
	tmp := t.TempDir()
	const filePass = "inspect test passphrase"
	ep := writeFile(t, tmp, "export.pass", filePass)
	keyFile := filepath.Join(tmp, "t.key")
	mustRun(t, nil, "keys", "export", "--data", f.data, "--subject", "tech-7", "--out", keyFile, "--export-passphrase-file", ep)
	good := readFile(t, keyFile)
	b32 := otp.EncodeSecret(subjectSecret(t, f, "tech-7", 0))

	// Wrong passphrase: exit 3, no content.
	wrong := writeFile(t, tmp, "wrong.pass", "not the right passphrase")
	r := expectCode(t, cli.ExitRefused, nil, "keys", "inspect", keyFile, "--passphrase-file", wrong)
	if r.stdout != "" || !strings.Contains(r.stderr, "wrong passphrase") {
		t.Fatalf("wrong passphrase:\n%s", r)
	}
	notLeaked(t, r, "not the right passphrase", filePass)

	edit := func(from, to string) []byte {
		if !bytes.Contains(good, []byte(from)) {
			t.Fatalf("key file has no %q", from)
		}
		return bytes.Replace(good, []byte(from), []byte(to), 1)
	}
	for _, tc := range []struct {
		name string
		data []byte
		code int
		says string
	}{
		{"truncated", good[:len(good)/2], cli.ExitTampered, "not a valid Outpost sealed key file"},
		{"empty", nil, cli.ExitTampered, "truncated"},
		{"garbage", []byte("PK\x03\x04 this is a zip file"), cli.ExitTampered, "not a valid"},
		{"trailing data", append(bytes.Clone(good), "more"...), cli.ExitTampered, "trailing data"},
		{"unknown field", edit(`"format"`, `"comment": "x", "format"`), cli.ExitTampered, "unknown field"},
		{"future version", edit(`"version": 1`, `"version": 2`), cli.ExitTampered, "upgrade"},
		{"absurd kdf cost", edit(`"memory_kib": 65536`, `"memory_kib": 4000000000`), cli.ExitTampered, "argon2id cost"},
		{"subject changed", edit(`"tech-7"`, `"tech-8"`), cli.ExitRefused, "altered"},
		{"digits changed", edit(`"digits": "6"`, `"digits": "8"`), cli.ExitRefused, "altered"},
		{"oversize", append(bytes.Repeat([]byte(" "), keys.MaxSealedFileSize), good...), cli.ExitTampered, "larger than"}, // bounds check: integrity exit, as for every input file
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := writeFile(t, t.TempDir(), "k", string(tc.data))
			r := expectCode(t, tc.code, nil, "keys", "inspect", p, "--passphrase-file", ep, "--show-secret")
			if !strings.Contains(r.stderr, tc.says) {
				t.Errorf("message does not say %q:\n%s", tc.says, r)
			}
			if r.stdout != "" {
				t.Errorf("printed something for a bad file:\n%s", r)
			}
			notLeaked(t, r, filePass, b32)
		})
	}
	expectCode(t, cli.ExitError, nil, "keys", "inspect", filepath.Join(tmp, "missing.key"), "--passphrase-file", ep)
	expectCode(t, cli.ExitUsage, nil, "keys", "inspect")
}

// The master key file: a wrong passphrase is exit 3, damage is exit 5.
func TestMasterKeyProblems(t *testing.T) {
	f := sharedData(t)
	good, err := os.ReadFile(filepath.Join(f.data, "master.key"))
	if err != nil {
		t.Fatal(err)
	}
	wrong := writeFile(t, t.TempDir(), "wrong.pass", "wrong master passphrase")
	r := expectCode(t, cli.ExitRefused, nil, "keys", "export-public", "--data", f.data, "--passphrase-file", wrong)
	if !strings.Contains(r.stderr, "--passphrase-file") || r.stdout != "" {
		t.Errorf("wrong master passphrase:\n%s", r)
	}
	notLeaked(t, r, "wrong master passphrase", masterPass)

	for _, tc := range []struct {
		name string
		data []byte
		code int
		says string
	}{
		{"truncated", good[:100], cli.ExitTampered, "backup"},
		{"header altered", bytes.Replace(good, []byte(`"created": "`), []byte(`"created": "1`), 1), cli.ExitTampered, "backup"},
		{"salt altered", bytes.Replace(good, []byte(`"salt": "`), []byte(`"salt": "A`), 1), cli.ExitTampered, ""},
		{"purpose altered", bytes.Replace(good, []byte(`"master-key"`), []byte(`"subject-key"`), 1), cli.ExitRefused, "altered"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data := filepath.Join(t.TempDir(), "data")
			if err := os.Mkdir(data, 0o700); err != nil {
				t.Fatal(err)
			}
			writeFile(t, data, "master.key", string(tc.data))
			r := expectCode(t, tc.code, nil, "keys", "export-public", "--data", data, "--passphrase-file", f.passFile)
			if !strings.Contains(r.stderr, tc.says) {
				t.Errorf("message does not say %q:\n%s", tc.says, r)
			}
			notLeaked(t, r, masterPass)
		})
	}
	r = expectCode(t, cli.ExitError, nil, "keys", "export-public", "--data", t.TempDir(), "--passphrase-file", f.passFile)
	if !strings.Contains(r.stderr, "outpost init --data") {
		t.Errorf("uninitialised dir message:\n%s", r)
	}
}
