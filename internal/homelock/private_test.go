package homelock

import (
	"io/fs"
	"os"
	"path/filepath"
	"testing"
)

// TestAcquireMakesHomePrivate: whatever existed before (a 0755 home, 0644
// files, a 0755 subdirectory), the home is 0700 and its files 0600 once a
// role takes its lock; a symlink to a file outside the home is not followed.
func TestAcquireMakesHomePrivate(t *testing.T) {
	home := filepath.Join(t.TempDir(), "home")
	outside := filepath.Join(t.TempDir(), "shared.txt")
	os.WriteFile(outside, []byte("x"), 0o644)
	os.Chmod(outside, 0o644)
	os.MkdirAll(filepath.Join(home, "sub"), 0o755)
	for _, p := range []string{home, filepath.Join(home, "sub")} {
		os.Chmod(p, 0o755)
	}
	for _, p := range []string{"parley.db", "parley.db-wal", "sub/notes"} {
		os.WriteFile(filepath.Join(home, p), []byte("x"), 0o644)
		os.Chmod(filepath.Join(home, p), 0o644)
	}
	if err := os.Symlink(outside, filepath.Join(home, "link")); err != nil {
		t.Fatal(err)
	}
	l, err := Acquire(home, "test.lock")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Release()
	if err := PrivateFile(filepath.Join(home, "new.db")); err != nil {
		t.Fatal(err)
	}
	want := map[string]fs.FileMode{
		"": 0o700, "sub": 0o700, "parley.db": 0o600, "parley.db-wal": 0o600, "sub/notes": 0o600,
		"test.lock": 0o600, "new.db": 0o600,
	}
	for p, m := range want {
		info, err := os.Stat(filepath.Join(home, p))
		if err != nil {
			t.Fatal(err)
		}
		if info.Mode().Perm() != m {
			t.Errorf("%q is %o, want %o", p, info.Mode().Perm(), m)
		}
	}
	if info, _ := os.Stat(outside); info.Mode().Perm() != 0o644 {
		t.Errorf("a file outside the home, reached by a symlink, became %o", info.Mode().Perm())
	}
}
