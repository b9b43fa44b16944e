package datadir

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/outpost-auth/outpost/internal/keys"
)

var pass = []byte("correct horse battery staple")

// TestMain lowers the argon2id cost of Init: DefaultKDF under the race
// detector takes seconds per call. keys tests DefaultKDF itself.
func TestMain(m *testing.M) {
	initKDF = keys.KDFParams{Time: 1, MemoryKiB: 8 << 10, Threads: 1}
	os.Exit(m.Run())
}

// withUmask runs f under umask 0, so that modes come from the code, not the
// test runner's umask.
func withUmask(t *testing.T, f func()) {
	old := syscall.Umask(0)
	defer syscall.Umask(old)
	f()
}

func mode(t *testing.T, path string) fs.FileMode {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return st.Mode().Perm()
}

// read returns path's content, failing the test when it cannot be read.
func read(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// mustWrite writes a test's file.
func mustWrite(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestInitAndLoad(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a", "data")
	var m *keys.Master
	withUmask(t, func() {
		var err error
		if m, err = Init(dir, pass, false, testNow); err != nil {
			t.Fatal(err)
		}
	})
	if got := mode(t, dir); got != 0o700 {
		t.Errorf("data dir mode %o, want 700", got)
	}
	if got := mode(t, filepath.Join(dir, MasterKeyFile)); got != 0o600 {
		t.Errorf("master key mode %o, want 600", got)
	}
	if !Initialised(dir) {
		t.Fatal("Initialised = false after Init")
	}
	data := read(t, filepath.Join(dir, MasterKeyFile))
	if bytes.Contains(data, m.Bytes()) || bytes.Contains(data, pass) {
		t.Fatal("master key or passphrase in the clear in master.key")
	}
	got, s, err := LoadMaster(dir, pass)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Bytes(), m.Bytes()) || s.Unsealed || s.Purpose != "master-key" {
		t.Fatalf("LoadMaster gave another key or header %+v", s)
	}

	// Never overwrites: a second Init fails and leaves the file as it was.
	for _, insecure := range []bool{false, true} {
		_, err := Init(dir, []byte("another passphrase"), insecure, testNow)
		if !errors.Is(err, ErrAlreadyInitialised) {
			t.Fatalf("second Init: %v", err)
		}
		if !strings.Contains(err.Error(), "another --data") {
			t.Errorf("error does not say what to do: %v", err)
		}
	}
	after := read(t, filepath.Join(dir, MasterKeyFile))
	if !bytes.Equal(after, data) {
		t.Fatal("a refused Init changed master.key")
	}
}

func TestInitInsecure(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "d")
	m, err := Init(dir, nil, true, testNow)
	if err != nil {
		t.Fatal(err)
	}
	got, s, err := LoadMaster(dir, nil)
	if err != nil || !s.Unsealed || !bytes.Equal(got.Bytes(), m.Bytes()) {
		t.Fatalf("LoadMaster(unsealed) = %+v, %v", s, err)
	}
}

func TestInitWeakPassphraseCreatesNothing(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "d")
	for _, p := range [][]byte{nil, []byte("short")} {
		if _, err := Init(dir, p, false, testNow); !errors.Is(err, keys.ErrWeakPassphrase) {
			t.Fatalf("Init(%q) = %v, want ErrWeakPassphrase", p, err)
		}
	}
	if _, err := os.Stat(dir); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("a refused Init created %s", dir)
	}
}

func TestInitExistingDir(t *testing.T) {
	// An existing empty directory is fine (e.g. a mounted volume).
	dir := t.TempDir()
	if _, err := Init(dir, nil, true, testNow); err != nil {
		t.Fatal(err)
	}
	// A path that is a file is not.
	file := filepath.Join(t.TempDir(), "f")
	mustWrite(t, file, nil)
	if _, err := Init(file, nil, true, testNow); err == nil {
		t.Fatal("Init succeeded on a regular file")
	}
}

func TestLoadMasterErrors(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	if _, err := Init(dir, pass, false, testNow); err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(dir, MasterKeyFile)
	good := read(t, keyFile)
	replace := func(t *testing.T, d string, data []byte) {
		t.Helper()
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(d, MasterKeyFile), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	subjectFile, err := keys.Seal(pass, keys.KDFParams{Time: 1, MemoryKiB: 8 << 10, Threads: 1}, keys.Sealed{Purpose: "subject-key"}, make([]byte, 20))
	if err != nil {
		t.Fatal(err)
	}
	wrongLen, err := keys.SealInsecure(keys.Sealed{Purpose: "master-key"}, make([]byte, 16))
	if err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name  string
		setup func(t *testing.T) string // returns the dir
		pass  []byte
		err   error
		says  []string
	}{
		{"missing dir", func(t *testing.T) string { return filepath.Join(t.TempDir(), "nope") }, pass, ErrNotInitialised, []string{"outpost init --data"}},
		{"empty dir", func(t *testing.T) string { return t.TempDir() }, pass, ErrNotInitialised, []string{"outpost init --data"}},
		{"wrong passphrase", func(t *testing.T) string { return dir }, []byte("wrong passphrase"), keys.ErrWrongPassphrase, []string{keyFile, "wrong passphrase"}},
		{"no passphrase", func(t *testing.T) string { return dir }, nil, keys.ErrWrongPassphrase, []string{keyFile}},
		{"truncated", func(t *testing.T) string {
			d := filepath.Join(t.TempDir(), "d")
			replace(t, d, good[:len(good)/2])
			return d
		}, pass, keys.ErrMalformedFile, []string{"backup"}},
		{"tampered", func(t *testing.T) string {
			d := filepath.Join(t.TempDir(), "d")
			replace(t, d, bytes.Replace(good, []byte(`"master-key"`), []byte(`"master-kez"`), 1))
			return d
		}, pass, keys.ErrWrongPassphrase, []string{"altered"}},
		{"another kind of key file", func(t *testing.T) string {
			d := filepath.Join(t.TempDir(), "d")
			replace(t, d, subjectFile)
			return d
		}, pass, keys.ErrMalformedFile, []string{`"subject-key"`, "backup"}},
		{"wrong key length", func(t *testing.T) string {
			d := filepath.Join(t.TempDir(), "d")
			replace(t, d, wrongLen)
			return d
		}, nil, keys.ErrMalformedFile, []string{"16 bytes"}},
		{"oversize", func(t *testing.T) string {
			d := filepath.Join(t.TempDir(), "d")
			replace(t, d, make([]byte, keys.MaxSealedFileSize+1))
			return d
		}, pass, nil, []string{"larger than"}},
		{"directory in its place", func(t *testing.T) string {
			d := filepath.Join(t.TempDir(), "d")
			if err := os.MkdirAll(filepath.Join(d, MasterKeyFile), 0o700); err != nil {
				t.Fatal(err)
			}
			return d
		}, pass, nil, []string{MasterKeyFile}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := tc.setup(t)
			m, _, err := LoadMaster(d, tc.pass)
			if err == nil || m != nil {
				t.Fatalf("LoadMaster = %v, %v", m, err)
			}
			if tc.err != nil && !errors.Is(err, tc.err) {
				t.Fatalf("error %v, want %v", err, tc.err)
			}
			for _, s := range tc.says {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not say %q", err, s)
				}
			}
			if strings.Contains(err.Error(), string(pass)) {
				t.Errorf("error contains the passphrase: %v", err)
			}
		})
	}
}

func TestReadFileLimit(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "f")
	mustWrite(t, f, []byte("0123456789"))
	if b, err := ReadFileLimit(f, 10); err != nil || string(b) != "0123456789" {
		t.Fatalf("at the limit: %q %v", b, err)
	}
	if _, err := ReadFileLimit(f, 9); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Fatalf("over the limit: %v", err)
	}
	if b, err := ReadFileLimit(f, 1<<20); err != nil || len(b) != 10 {
		t.Fatalf("under the limit: %v", err)
	}
	empty := filepath.Join(dir, "empty")
	mustWrite(t, empty, nil)
	if b, err := ReadFileLimit(empty, 0); err != nil || len(b) != 0 {
		t.Fatalf("empty file, limit 0: %v", err)
	}
	if _, err := ReadFileLimit(filepath.Join(dir, "missing"), 10); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("missing file: %v", err)
	}
	if _, err := ReadFileLimit(dir, 10); err == nil {
		t.Fatal("read a directory")
	}
	// A file whose size Stat does not know (a device, a pipe) is still bounded.
	if _, err := os.Stat("/dev/zero"); err == nil {
		if _, err := ReadFileLimit("/dev/zero", 1<<10); err == nil || !strings.Contains(err.Error(), "grew past") {
			t.Fatalf("/dev/zero: %v", err)
		}
	}
}

func TestWriteFileExclusive(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "key")
	withUmask(t, func() {
		if err := WriteFileExclusive(p, []byte("one"), 0o600); err != nil {
			t.Fatal(err)
		}
	})
	if mode(t, p) != 0o600 {
		t.Errorf("mode %o", mode(t, p))
	}
	if err := WriteFileExclusive(p, []byte("two"), 0o600); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("second write: %v", err)
	}
	if b := read(t, p); string(b) != "one" {
		t.Fatalf("existing file changed to %q", b)
	}
	if err := WriteFileExclusive(filepath.Join(dir, "no", "such", "dir"), nil, 0o600); err == nil {
		t.Fatal("wrote into a missing directory")
	}
}

func TestWriteFileAtomic(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "state")
	withUmask(t, func() {
		if err := WriteFileAtomic(p, []byte("old"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := WriteFileAtomic(p, []byte("new"), 0o640); err != nil {
			t.Fatal(err)
		}
	})
	if b := read(t, p); string(b) != "new" {
		t.Fatalf("content %q", b)
	}
	if mode(t, p) != 0o640 {
		t.Errorf("mode %o", mode(t, p))
	}
	if err := WriteFileAtomic(filepath.Join(dir, "missing", "x"), nil, 0o600); err == nil {
		t.Fatal("wrote into a missing directory")
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Fatalf("temporary files left behind: %v", names)
	}
}

// TestWriteFileAtomicNew: a new file appears whole with its mode; an
// existing one is never replaced, and no temporary file is left behind.
func TestWriteFileAtomicNew(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "checkpoint")
	withUmask(t, func() {
		if err := WriteFileAtomicNew(p, []byte("first"), 0o600); err != nil {
			t.Fatal(err)
		}
	})
	if err := WriteFileAtomicNew(p, []byte("second"), 0o600); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("second write: %v, want fs.ErrExist", err)
	}
	if b := read(t, p); string(b) != "first" || mode(t, p) != 0o600 {
		t.Fatalf("content %q mode %o", b, mode(t, p))
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Fatalf("%d files in the directory, want 1 (a temporary file left behind?)", len(entries))
	}
}

// testNow stamps the key files the tests write: a fixed time, years ahead.
var testNow = time.Date(2031, 5, 6, 7, 8, 9, 0, time.UTC)
