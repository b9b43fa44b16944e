package proctest

import (
	_ "embed"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"testing"
	"time"
)

//go:embed smtpd.py
var smtpdScript []byte

// SMTPServer is a real SMTP server process (Debian's python3-aiosmtpd)
// that keeps each message it accepts as a file in Dir, and refuses with
// 550 every recipient whose address starts with "refuse".
type SMTPServer struct {
	Addr string
	Dir  string
	*Process
}

// StartSMTP starts an SMTPServer on a free loopback port, stopped at the
// end of the test. Without python3-aiosmtpd the test is skipped, or fails
// when OUTPOST_REQUIRE_INTEROP=1 (as in .ci/run).
func StartSMTP(t testing.TB) *SMTPServer {
	t.Helper()
	return StartSMTPOn(t, FreePort(t))
}

// StartSMTPOn is StartSMTP on a given loopback port (a server that comes
// up where a client was already told to look).
func StartSMTPOn(t testing.TB, port int) *SMTPServer {
	t.Helper()
	if err := exec.Command("/usr/bin/python3", "-c", "import aiosmtpd").Run(); err != nil {
		msg := fmt.Sprintf("python3-aiosmtpd is not installed (%v): apt-get install python3-aiosmtpd", err)
		if os.Getenv("OUTPOST_REQUIRE_INTEROP") == "1" {
			t.Fatal(msg + " (OUTPOST_REQUIRE_INTEROP=1)")
		}
		t.Skip(msg + "; set OUTPOST_REQUIRE_INTEROP=1 to make this a failure")
	}
	dir := t.TempDir()
	script := filepath.Join(dir, "smtpd.py")
	if err := os.WriteFile(script, smtpdScript, 0o600); err != nil {
		t.Fatal(err)
	}
	mail := filepath.Join(dir, "mail")
	if err := os.Mkdir(mail, 0o700); err != nil {
		t.Fatal(err)
	}
	s := &SMTPServer{Addr: "127.0.0.1:" + strconv.Itoa(port), Dir: mail}
	s.Process = Start(t, exec.Command("/usr/bin/python3", script, strconv.Itoa(port), mail))
	s.WaitFor(t, "listening on "+s.Addr, func() bool {
		c, err := net.DialTimeout("tcp", s.Addr, time.Second)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	return s
}

// Messages returns the messages received so far, oldest first.
func (s *SMTPServer) Messages(t testing.TB) []string {
	t.Helper()
	names, err := filepath.Glob(filepath.Join(s.Dir, "*.eml"))
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(names)
	var out []string
	for _, n := range names {
		b, err := os.ReadFile(n)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, string(b))
	}
	return out
}

// FreePort returns a loopback TCP port that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}
