package cli

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/outpost-auth/outpost/device"
	"github.com/outpost-auth/outpost/internal/keys"
	"github.com/outpost-auth/outpost/internal/server"
	"github.com/outpost-auth/outpost/internal/store/storetest"
)

// oneRoster vouches for one serial and key.
type oneRoster struct {
	mu     sync.Mutex
	serial string
	spki   []byte
}

func (r *oneRoster) Live(_ context.Context, _, serial string, spki []byte) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if serial != r.serial || !bytes.Equal(spki, r.spki) {
		return errors.New("no vouch for this serial and key")
	}
	return nil
}

func (r *oneRoster) Enrolled(context.Context, string, string, []byte) error { return nil }

// TestDeviceCommands runs outpost device enrol, whoami and renew against
// a device listener whose roster vouches for the key, then revokes the
// device and sees whoami refused. The server's clock is the system clock,
// read once (the command checks the server's certificate with it).
func TestDeviceCommands(t *testing.T) {
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "device.key")
	k, err := device.GenerateKey(device.P256)
	if err != nil {
		t.Fatal(err)
	}
	if err := device.WriteKeyFile(keyFile, k); err != nil {
		t.Fatal(err)
	}
	spki, _ := x509.MarshalPKIXPublicKey(k.Public())
	st := storetest.Open(t, storetest.SQLitePath(t))
	m, _ := keys.GenerateMaster()
	now := time.Now()
	srv, err := server.New(server.Config{Store: st, Master: m, Now: func() time.Time { return now },
		Logger: slog.New(slog.NewTextHandler(&bytes.Buffer{}, nil)), Vouches: &oneRoster{serial: "SN-0042", spki: spki}})
	if err != nil {
		t.Fatal(err)
	}
	admin, err := srv.Bootstrap(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	tc, err := srv.DeviceTLSConfig([]string{"127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: srv.DeviceHandler(), ReadHeaderTimeout: 5 * time.Second}
	go hs.Serve(tls.NewListener(ln, tc))
	t.Cleanup(func() { hs.Close() })
	root := filepath.Join(dir, "root.pem")
	if err := os.WriteFile(root, srv.CARootPEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) (int, string) {
		var out, errb bytes.Buffer
		code := Main(append(args, "--server", "https://"+ln.Addr().String(), "--root", root, "--key", keyFile), strings.NewReader(""), &out, &errb)
		return code, out.String() + errb.String()
	}
	if code, out := run("device", "enrol", "--serial", "SN-0042"); code != 0 || !strings.Contains(out, "enrolled SN-0042") {
		t.Fatalf("enrol: %d %s", code, out)
	}
	fi, err := os.Stat(filepath.Join(dir, "device.crt"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("certificate file: %v %v", fi, err)
	}
	if code, out := run("device", "whoami"); code != 0 || !strings.Contains(out, "urn:outpost:device:default:SN-0042") {
		t.Fatalf("whoami: %d %s", code, out)
	}
	if code, out := run("device", "renew", "--json"); code != 0 || !strings.Contains(out, `"serial": "SN-0042"`) {
		t.Fatalf("renew: %d %s", code, out)
	}
	// Another serial for the same key: the roster has no vouch: exit 3.
	if code, out := run("device", "enrol", "--serial", "SN-0043"); code != ExitRefused || !strings.Contains(out, "no_vouch") {
		t.Fatalf("enrol without a vouch: %d %s", code, out)
	}
	rec := httptest.NewRecorder()
	req := httptest.NewRequest("POST", "/v1/ca/devices/SN-0042/revoke", nil)
	req.Header.Set("Authorization", "Bearer "+admin)
	srv.Handler().ServeHTTP(rec, req)
	if rec.Code != http.StatusOK {
		t.Fatalf("revoke: %d %s", rec.Code, rec.Body)
	}
	if code, out := run("device", "whoami"); code == 0 || !strings.Contains(out, "certificate") {
		t.Fatalf("whoami of a revoked device: %d %s", code, out)
	}
}
