//go:build linux

package mount

import (
	"os"
	"strconv"
	"strings"
	"testing"
)

func TestReadProcStat(t *testing.T) {
	var buf [1024]byte
	n, ok := readProcStat(uint32(os.Getpid()), buf[:])
	if !ok || !strings.HasPrefix(string(buf[:n]), strconv.Itoa(os.Getpid())+" (") {
		t.Fatalf("readProcStat(self) = %q, %v", buf[:n], ok)
	}
	if statKilled(string(buf[:n])) {
		t.Fatal("this running process reads as killed")
	}
	if _, ok := readProcStat(1<<30, buf[:]); ok {
		t.Fatal("readProcStat of a pid that does not exist answered ok")
	}
	if _, ok := readProcStat(uint32(os.Getpid()), buf[:8]); ok {
		t.Fatal("readProcStat into a buffer too small answered ok")
	}
}

func TestStatKilled(t *testing.T) {
	// Fields 3 on: state, then 48 more; field 9 (flags) is f[6], field 52
	// (exit code) f[49].
	line := func(comm string, flags, code string) string {
		f := make([]string, 50)
		for i := range f {
			f[i] = "0"
		}
		f[0], f[6], f[49] = "R", flags, code
		return "1234 (" + comm + ") " + strings.Join(f, " ") + "\n"
	}
	for _, c := range []struct {
		line string
		want bool
	}{
		{line("fio", "4", "9"), true},         // PF_EXITING, SIGKILL
		{line("fio", "4", "0"), false},        // exiting normally
		{line("fio", "4", "256"), false},      // exit(1)
		{line("fio", "0", "9"), false},        // not exiting
		{line("a) 4 0 (b", "4", "15"), true},  // a name with ") " in it
		{line("a) 4 0 (b", "0", "15"), false}, // the name's fields are not the flags
		{"1234 (fio) R 0", false},             // short
		{"garbage", false},
	} {
		if got := statKilled(c.line); got != c.want {
			t.Errorf("statKilled(%q) = %v, want %v", c.line, got, c.want)
		}
	}
}
