package node

import (
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
)

// assertPrivate fails unless dir and every directory under it is 0700 and
// every regular file 0600.
func assertPrivate(t *testing.T, dir string) {
	t.Helper()
	n := 0
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			t.Fatal(err)
		}
		info, _ := d.Info()
		switch {
		case d.IsDir() && info.Mode().Perm() != 0o700:
			t.Errorf("directory %s is %o, want 700", p, info.Mode().Perm())
		case d.Type().IsRegular():
			n++
			if info.Mode().Perm() != 0o600 {
				t.Errorf("file %s is %o, want 600", p, info.Mode().Perm())
			}
		}
		return nil
	})
	if n == 0 {
		t.Fatalf("no files in %s", dir)
	}
}

// TestHomePrivateWhateverExisted: a local user must not read another's
// history. A home that already exists as 0755 with 0644 files in it is
// made 0700 with 0600 files, and the database with its -wal and -shm is
// created 0600.
func TestHomePrivateWhateverExisted(t *testing.T) {
	sn := startSupernode(t)
	home := initHome(t, "alice")
	os.Chmod(home, 0o755)
	os.WriteFile(filepath.Join(home, "notes.txt"), []byte("x"), 0o644)
	os.Chmod(filepath.Join(home, "notes.txt"), 0o644) // whatever the umask
	filepath.WalkDir(home, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			os.Chmod(p, 0o644)
		}
		return nil
	})
	n := startNode(t, home, sn)
	if _, err := n.store.NextLamport(context.Background(), "x"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(home, storeFile+"-wal")); err != nil {
		t.Fatalf("the database has no WAL to check: %v", err)
	}
	assertPrivate(t, home)
}
