package cli_test

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/outpost-auth/outpost/device"
	"github.com/outpost-auth/outpost/internal/cli"
	"github.com/outpost-auth/outpost/internal/devicelog"
	"github.com/outpost-auth/outpost/internal/proctest"
	"github.com/outpost-auth/outpost/internal/qr"
)

// TestDeviceInitAndLabel plays a device: its key and label, read back from
// the PNG by zbarimg and by the product's own decoder, both giving the payload.
func TestDeviceInitAndLabel(t *testing.T) {
	tmp := t.TempDir()
	dir := filepath.Join(tmp, "sn-42")
	r := mustRun(t, nil, "device", "init", "--serial", "SN-42", "--model", "gw-100", "--dir", dir, "--json")
	var info struct {
		Serial, Model, KeyType, Payload, Fallback, PNG, Fingerprint string
		KeyTypeJSON                                                 string `json:"key_type"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &info); err != nil {
		t.Fatalf("init --json: %v\n%s", err, r)
	}
	if info.Serial != "SN-42" || info.KeyTypeJSON != "p256" || !strings.HasPrefix(info.Payload, device.Prefix) ||
		info.Fallback != "SN-42 "+info.Fingerprint {
		t.Fatalf("init --json = %+v", info)
	}
	if st, err := os.Stat(filepath.Join(dir, "device.key")); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("device.key: %v %v", st, err)
	}
	png := readFile(t, info.PNG)
	if got := proctest.Zbarimg(t, png); got != info.Payload {
		t.Errorf("zbarimg read %q, want %q", got, info.Payload)
	}
	if got, err := qr.Decode(bytes.NewReader(png)); err != nil || got != info.Payload {
		t.Errorf("qr.Decode = %q, %v, want %q", got, err, info.Payload)
	}
	// Never twice: the key is made once.
	expectCode(t, cli.ExitError, nil, "device", "init", "--serial", "SN-42", "--model", "gw-100", "--dir", dir)
	expectCode(t, cli.ExitUsage, nil, "device", "init", "--serial", "SN 42", "--model", "gw-100", "--dir", filepath.Join(tmp, "x"))

	r = mustRun(t, nil, "device", "label", "--dir", dir, "--terminal", "--png", filepath.Join(tmp, "again.png"))
	if !strings.Contains(r.stdout, info.Payload) || !strings.Contains(r.stdout, info.Fallback) || !strings.Contains(r.stdout, "█") {
		t.Errorf("label output:\n%s", r)
	}
	if !bytes.Equal(readFile(t, filepath.Join(tmp, "again.png")), png) {
		t.Error("label --png differs from init's label.png")
	}
	// A label swapped for another device's: refused.
	other := filepath.Join(tmp, "sn-43")
	mustRun(t, nil, "device", "init", "--serial", "SN-43", "--model", "gw-100", "--dir", other, "--ed25519")
	must(t, os.WriteFile(filepath.Join(dir, "label.txt"), readFile(t, filepath.Join(other, "label.txt")), 0o644))
	expectCode(t, cli.ExitTampered, nil, "device", "label", "--dir", dir)
}

// TestFieldVouch vouches offline from a scanned label and from a typed
// payload; bad labels and images are refused with nothing written.
func TestFieldVouch(t *testing.T) {
	tmp := t.TempDir()
	fdir := filepath.Join(tmp, "field")
	_, pub := fieldServer(t, tmp)
	mustRun(t, nil, "field", "init", "--data", fdir, "--server-key", pub, "--device-id", "phone-1")
	ddir := filepath.Join(tmp, "sn-42")
	mustRun(t, nil, "device", "init", "--serial", "SN-42", "--model", "gw-100", "--dir", ddir)
	payload := strings.TrimSpace(string(readFile(t, filepath.Join(ddir, "label.txt"))))

	r := mustRun(t, nil, "field", "vouch", "--data", fdir, "--scan", filepath.Join(ddir, "label.png"), "--site", "cabinet-12",
		"--location", "52.3702, 4.8952", "--json")
	var v struct {
		Serial, Site, Location string
		Seq                    uint64
	}
	must(t, json.Unmarshal([]byte(r.stdout), &v))
	if v.Serial != "SN-42" || v.Site != "cabinet-12" || v.Location != "52.3702,4.8952" || v.Seq < 2 {
		t.Fatalf("vouch --json = %+v", v)
	}
	entries := func() int {
		es, err := devicelog.ReadFile(t.Context(), filepath.Join(fdir, "field.db"))
		must(t, err)
		return len(es)
	}
	n := entries()
	garbage := writeFile(t, tmp, "garbage.png", "not an image")
	blank := writeFile(t, tmp, "blank.png", string(readFile(t, filepath.Join(ddir, "label.png")))[:40])
	bad := []byte(payload)
	bad[len(bad)-2] = map[bool]byte{true: '1', false: '0'}[bad[len(bad)-2] == '0']
	for _, tc := range []struct {
		code int
		args []string
	}{
		{cli.ExitRefused, []string{"--payload", payload}}, // the same device again
		{cli.ExitTampered, []string{"--payload", string(bad)}},
		{cli.ExitTampered, []string{"--payload", payload[:12]}},
		{cli.ExitTampered, []string{"--payload", payload + strings.Repeat("A", device.MaxPayload)}},
		{cli.ExitTampered, []string{"--payload", "OPD:" + "B" + payload[5:]}},
		{cli.ExitTampered, []string{"--scan", garbage}},
		{cli.ExitTampered, []string{"--scan", blank}},
		{cli.ExitUsage, []string{"--payload", "SN-42 ABCD-EFGH-IJKL-MNOP-QRST"}}, // the fallback line: no key
		{cli.ExitUsage, []string{"--payload", payload, "--scan", garbage}},
		{cli.ExitUsage, []string{"--payload", payload, "--location", "north"}},
	} {
		args := append([]string{"field", "vouch", "--data", fdir, "--site", "cabinet-12"}, tc.args...)
		expectCode(t, tc.code, nil, args...)
	}
	if entries() != n {
		t.Errorf("refused vouches wrote %d log entries", entries()-n)
	}
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
