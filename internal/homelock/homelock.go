// Package homelock makes sure one process at a time owns a parley home
// directory, so two daemons never share keys, a database or a socket, and
// that only its owner can read it: the home is 0700 and every file in it
// 0600, whatever existed before (see MakePrivate, PrivateFile).
package homelock

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// ErrLocked is returned when another live process holds the lock.
var ErrLocked = errors.New("already in use")

// Lock is a held lock; Release frees it. The kernel frees it too when the
// process dies, so a killed daemon never leaves a stale lock behind.
type Lock struct{ f *os.File }

// Acquire takes an exclusive, non-blocking lock on dir/name, and makes dir
// private (see MakePrivate): every role takes its home's lock first.
func Acquire(dir, name string) (*Lock, error) {
	if err := MakePrivate(dir); err != nil {
		return nil, err
	}
	path := filepath.Join(dir, name)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		pid := readPID(f)
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("%s is %w by another parley process (pid %s)", dir, ErrLocked, pid)
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	if err := f.Truncate(0); err == nil {
		f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return &Lock{f: f}, nil
}

func readPID(f *os.File) string {
	b := make([]byte, 32)
	n, _ := f.ReadAt(b, 0)
	if s := strings.TrimSpace(string(b[:n])); s != "" {
		return s
	}
	return "unknown"
}

// Release frees the lock.
func (l *Lock) Release() error {
	if l == nil || l.f == nil {
		return nil
	}
	syscall.Flock(int(l.f.Fd()), syscall.LOCK_UN)
	err := l.f.Close()
	l.f = nil
	return err
}
