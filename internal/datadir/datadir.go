// Package datadir lays out a server's data directory and opens its master key.
//
//	DIR/master.key    the master key, sealed with a passphrase (mode 0600)
//	DIR/outpost.db    the embedded SQLite database (default engine)
//	DIR/admin.token   the bootstrap admin API token (mode 0600)
//	DIR/tls/          the self-signed CA and server certificate
package datadir

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"syscall"
	"time"

	"github.com/outpost-auth/outpost/internal/keys"
)

// File names inside a data directory.
const (
	MasterKeyFile  = "master.key"
	DatabaseFile   = "outpost.db"
	AdminTokenFile = "admin.token"
	TLSDir         = "tls"
)

// ErrNotInitialised is returned when DIR has no master key yet.
var ErrNotInitialised = errors.New("datadir: no master key")

// ErrAlreadyInitialised is returned by Init when DIR already has a master key.
var ErrAlreadyInitialised = errors.New("datadir: already initialised")

// initKDF is the cost Init seals with; tests lower it.
var initKDF = keys.DefaultKDF

// Initialised reports whether dir holds a master key file.
func Initialised(dir string) bool {
	_, err := os.Stat(filepath.Join(dir, MasterKeyFile))
	return err == nil
}

// Init creates dir (mode 0700) and a new master key sealed under passphrase,
// or stored unsealed when insecure is set. It never overwrites a key, and it
// checks the passphrase before creating anything. now stamps the key file.
func Init(dir string, passphrase []byte, insecure bool, now time.Time) (*keys.Master, error) {
	if Initialised(dir) {
		return nil, fmt.Errorf("%w: %s exists; refusing to overwrite a master key (every key derived from it would be lost): choose another --data directory", ErrAlreadyInitialised, filepath.Join(dir, MasterKeyFile))
	}
	if !insecure && len(passphrase) < keys.MinPassphraseLen {
		return nil, fmt.Errorf("%w: use at least %d characters", keys.ErrWeakPassphrase, keys.MinPassphraseLen)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("datadir: %w", err)
	}
	m, err := keys.GenerateMaster()
	if err != nil {
		return nil, err
	}
	meta := keys.Sealed{Purpose: "master-key", Created: now}
	var data []byte
	if insecure {
		data, err = keys.SealInsecure(meta, m.Bytes())
	} else {
		data, err = keys.Seal(passphrase, initKDF, meta, m.Bytes())
	}
	if err != nil {
		return nil, err
	}
	if err := WriteFileExclusive(filepath.Join(dir, MasterKeyFile), data, 0o600); err != nil {
		return nil, err
	}
	return m, nil
}

// LoadMaster opens dir's master key with passphrase. The returned Sealed
// tells whether the key was stored unsealed (callers must warn).
func LoadMaster(dir string, passphrase []byte) (*keys.Master, keys.Sealed, error) {
	path := filepath.Join(dir, MasterKeyFile)
	data, err := ReadFileLimit(path, keys.MaxSealedFileSize)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, keys.Sealed{}, fmt.Errorf("%w in %s: run 'outpost init --data %s' first", ErrNotInitialised, dir, dir)
	}
	if err != nil {
		return nil, keys.Sealed{}, err
	}
	s, raw, err := keys.Open(passphrase, data)
	switch {
	case errors.Is(err, keys.ErrMalformedFile):
		return nil, keys.Sealed{}, fmt.Errorf("opening %s: %w: restore it from your backup", path, err)
	case err != nil:
		return nil, keys.Sealed{}, fmt.Errorf("opening %s: %w", path, err)
	}
	if s.Purpose != "master-key" {
		return nil, keys.Sealed{}, fmt.Errorf("%w: %s holds a %q, not a master key: was another key file copied over it? Restore master.key from your backup", keys.ErrMalformedFile, path, s.Purpose)
	}
	m, err := keys.MasterFromBytes(raw)
	if err != nil {
		return nil, keys.Sealed{}, fmt.Errorf("%w: %s: %v", keys.ErrMalformedFile, path, err)
	}
	return m, s, nil
}

// WriteFileExclusive writes a new file with perm, failing (with an error
// matching fs.ErrExist) if it exists, and syncs the file and its directory,
// so that a crash leaves either no file or the whole file. On any error
// after creating the file it removes it.
func WriteFileExclusive(path string, data []byte, perm os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return err
	}
	return syncDir(filepath.Dir(path))
}

// syncDir makes a new or renamed directory entry durable. Windows cannot
// sync a directory, and some file systems answer EINVAL: neither is an error.
func syncDir(dir string) error {
	if runtime.GOOS == "windows" {
		return nil
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !errors.Is(err, syscall.EINVAL) && !errors.Is(err, errors.ErrUnsupported) {
		return err
	}
	return nil
}

// WriteFileAtomic replaces path with data via a synced temporary file and
// rename (then syncs the directory): readers see the old or the new content,
// never a mix, and the temporary file never outlives the call.
func WriteFileAtomic(path string, data []byte, perm os.FileMode) error {
	return writeViaTemp(path, writeBytes(data), perm, os.Rename)
}

// WriteFileAtomicNew is WriteFileAtomic for a file that must not exist yet:
// the synced temporary file is hard-linked into place, which fails (with an
// error matching fs.ErrExist) when path exists, so that it never overwrites
// and readers never see a partial file.
func WriteFileAtomicNew(path string, data []byte, perm os.FileMode) error {
	return writeViaTemp(path, writeBytes(data), perm, os.Link)
}

// WriteFileAtomicNewFunc is WriteFileAtomicNew for a file too large to
// hold in memory: write streams its content. When write fails, nothing
// is put in place.
func WriteFileAtomicNewFunc(path string, perm os.FileMode, write func(w io.Writer) error) error {
	return writeViaTemp(path, write, perm, os.Link)
}

func writeBytes(data []byte) func(io.Writer) error {
	return func(w io.Writer) error { _, err := w.Write(data); return err }
}

// writeViaTemp writes to a synced temporary file next to path, puts it
// in place with place(tmp, path), syncs the directory, and removes the
// temporary name.
func writeViaTemp(path string, write func(io.Writer) error, perm os.FileMode, place func(tmp, path string) error) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(perm); err != nil {
		tmp.Close()
		return err
	}
	bw := bufio.NewWriterSize(tmp, 64<<10)
	if err := write(bw); err != nil {
		tmp.Close()
		return err
	}
	if err := bw.Flush(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := place(tmp.Name(), path); err != nil {
		return err
	}
	return syncDir(filepath.Dir(path))
}

// ErrTooLarge is ReadFileLimit's error for a file over its limit.
var ErrTooLarge = errors.New("file too large")

// ReadFileLimit reads at most limit bytes of path and fails if it is larger
// (an error wrapping ErrTooLarge), so that no file can make Outpost allocate
// without bound.
func ReadFileLimit(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if st.Size() > limit {
		return nil, fmt.Errorf("%w: %s is %d bytes, larger than the %d bytes allowed for this kind of file", ErrTooLarge, path, st.Size(), limit)
	}
	buf, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(buf)) > limit {
		return nil, fmt.Errorf("%w: %s grew past %d bytes while being read", ErrTooLarge, path, limit)
	}
	return buf, nil
}
