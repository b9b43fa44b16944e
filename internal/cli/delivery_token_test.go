package cli

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/outpost-auth/outpost/internal/deliverytoken"
	"github.com/outpost-auth/outpost/internal/keys"
	"github.com/outpost-auth/outpost/internal/qr"
)

// TestDeliveryTokenVerify runs 'outpost delivery token verify' (the command
// itself: it joins the 'delivery' group at merge) on good, forged, expired
// and foreign tokens, as text and as a QR image, and checks the exit codes.
func TestDeliveryTokenVerify(t *testing.T) {
	now := time.Date(2031, 3, 4, 10, 0, 0, 0, time.UTC)
	priv := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{1}, 32))
	other := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{2}, 32))
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "token.pub")
	if err := os.WriteFile(keyFile, keys.MarshalPublicPEM(priv.Public().(ed25519.PublicKey)), 0o600); err != nil {
		t.Fatal(err)
	}
	claims := deliverytoken.Claims{Realm: "acme", Delivery: "parcel-1", Version: 2, Device: "van-7", NotAfter: now.Add(time.Hour)}
	good, _ := deliverytoken.Sign(priv, claims)
	forged, _ := deliverytoken.Sign(other, claims)
	png, err := qr.PNG(good, 320)
	if err != nil {
		t.Fatal(err)
	}
	image := filepath.Join(dir, "token.png")
	if err := os.WriteFile(image, png, 0o600); err != nil {
		t.Fatal(err)
	}
	garbage := filepath.Join(dir, "garbage.png")
	os.WriteFile(garbage, []byte("not an image"), 0o600)

	run := func(at time.Time, args ...string) (string, int) {
		var out, errb bytes.Buffer
		e := &env{stdout: &out, stderr: &errb, now: func() time.Time { return at }}
		c := e.deliveryTokenCmd()
		c.SetArgs(append([]string{"verify", "--key", keyFile}, args...))
		c.SetOut(&out)
		c.SetErr(&errb)
		err := c.Execute()
		if err == nil {
			return out.String(), ExitOK
		}
		var ee *exitError
		if errors.As(err, &ee) {
			return out.String() + err.Error(), ee.code
		}
		return out.String() + err.Error(), exitCode(err)
	}
	tests := []struct {
		name string
		at   time.Time
		args []string
		exit int
		want string
	}{
		{"good text", now, []string{"--token", good}, ExitOK, `delivery "parcel-1"`},
		{"good QR image", now, []string{"--scan", image, "--delivery", "parcel-1", "--version", "2", "--device", "van-7"}, ExitOK, `device "van-7"`},
		{"json", now, []string{"--token", good, "--json"}, ExitOK, `"ok": true`},
		{"forged", now, []string{"--token", forged}, ExitTampered, "signature"},
		{"altered", now, []string{"--token", good[:len(good)-2] + "00"}, ExitTampered, "does not hold"},
		{"not a token", now, []string{"--token", "582039170"}, ExitTampered, "not a delivery token"},
		{"expired", now.Add(time.Hour), []string{"--token", good}, ExitRefused, "expired"},
		{"old version", now, []string{"--token", good, "--delivery", "parcel-1", "--version", "3"}, ExitRefused, "version"},
		{"another delivery", now, []string{"--token", good, "--delivery", "parcel-2", "--version", "2"}, ExitRefused, "another delivery"},
		{"another device", now, []string{"--token", good, "--delivery", "parcel-1", "--version", "2", "--device", "van-9"}, ExitRefused, "device"},
		{"not an image", now, []string{"--scan", garbage}, ExitTampered, "image"},
		{"both", now, []string{"--token", good, "--scan", image}, ExitUsage, "exactly one"},
		{"delivery without version", now, []string{"--token", good, "--delivery", "parcel-1"}, ExitUsage, "go together"},
	}
	for _, tc := range tests {
		out, code := run(tc.at, tc.args...)
		if code != tc.exit || !strings.Contains(out, tc.want) {
			t.Errorf("%s: exit %d, want %d; %s", tc.name, code, tc.exit, out)
		}
	}
}

// TestDeliveryTokenRegistered: 'outpost delivery token verify' is reachable
// from the root command, beside 'outpost delivery proof verify'.
func TestDeliveryTokenRegistered(t *testing.T) {
	root := newRoot(strings.NewReader(""), io.Discard, io.Discard)
	for _, path := range [][]string{{"delivery", "token", "verify"}, {"delivery", "proof", "verify"}} {
		c, _, err := root.Find(path)
		if err != nil || c.Name() != "verify" || c.Parent().Name() != path[1] {
			t.Errorf("outpost %s: not registered (%v)", strings.Join(path, " "), err)
		}
	}
}
