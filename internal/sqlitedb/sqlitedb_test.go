package sqlitedb

import (
	"os"
	"path/filepath"
	"testing"
)

// TestFilesArePrivate: a new database and its -wal and -shm files are 0600,
// and an existing world-readable one is tightened when opened.
func TestFilesArePrivate(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name string
		pre  os.FileMode // 0: no file before Open
	}{{"new", 0}, {"world-readable", 0o644}, {"group-writable", 0o660}} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, tc.name+".db")
			if tc.pre != 0 {
				if err := os.WriteFile(path, nil, tc.pre); err != nil {
					t.Fatal(err)
				}
				if err := os.Chmod(path, tc.pre); err != nil { // past the umask
					t.Fatal(err)
				}
			}
			db, err := Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			if _, err := db.Exec(`CREATE TABLE t (x INTEGER); INSERT INTO t VALUES (1)`); err != nil {
				t.Fatal(err)
			}
			for _, p := range []string{path, path + "-wal", path + "-shm"} {
				fi, err := os.Stat(p)
				if err != nil {
					t.Fatal(err)
				}
				if m := fi.Mode().Perm(); m != FileMode {
					t.Errorf("%s has mode %04o, want %04o", filepath.Base(p), m, FileMode)
				}
			}
		})
	}
}
