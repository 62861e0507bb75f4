package homelock

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// Modes of a parley home: only its owner may read anything in it (the
// keys, the history, the mailbox, the control socket), whatever the umask
// and whatever was there before.
const (
	DirMode  fs.FileMode = 0o700
	FileMode fs.FileMode = 0o600
)

// MakePrivate creates dir (mode 0700) if needed, then sets dir and every
// directory under it to 0700 and every other file to 0600. Symbolic links are
// left alone and not followed, so a link cannot make it change a file
// outside the home.
func MakePrivate(dir string) error {
	if err := os.MkdirAll(dir, DirMode); err != nil {
		return err
	}
	return filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		mode := FileMode
		switch {
		case d.Type()&fs.ModeSymlink != 0:
			return nil
		case d.IsDir():
			mode = DirMode
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		if info.Mode().Perm() == mode {
			return nil
		}
		if err := os.Chmod(path, mode); err != nil {
			return fmt.Errorf("make %s private: %w", path, err)
		}
		return nil
	})
}

// PrivateFile makes sure the file at path exists with mode 0600 before a
// library opens it. SQLite creates a database's -wal and -shm files with the
// database file's mode, so a database created this way stays private with
// them.
func PrivateFile(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, FileMode)
	if err != nil {
		return fmt.Errorf("create %s: %w", path, err)
	}
	f.Close()
	for _, p := range []string{path, path + "-wal", path + "-shm", path + "-journal"} {
		if err := os.Chmod(p, FileMode); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("make %s private: %w", p, err)
		}
	}
	return nil
}
