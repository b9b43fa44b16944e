package cli_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/outpost-auth/outpost/internal/artifact"
	"github.com/outpost-auth/outpost/internal/cli"
	"github.com/outpost-auth/outpost/internal/courierproto"
	"github.com/outpost-auth/outpost/internal/deliverytoken"
	"github.com/outpost-auth/outpost/internal/qr"
	"github.com/outpost-auth/outpost/offline"
)

// TestCourierVerifyScan: token mode at the door from a photo of the QR
// code (qr.Decode), a garbage image (exit 2, no attempt), another
// delivery's token (exit 3), then the route.
func TestCourierVerifyScan(t *testing.T) {
	ctx := context.Background()
	tmp := t.TempDir()
	fdir := filepath.Join(tmp, "field")
	s, pub := fieldServer(t, tmp)
	mustRun(t, nil, "field", "init", "--data", fdir, "--server-key", pub, "--device-id", "dev-7")
	_, tk, _ := ed25519.GenerateKey(rand.Reader)
	now := time.Now()
	m := courierproto.Manifest{Realm: "acme", Device: "dev-7", IssuedAt: now, MaxAge: 3600, Keys: courierproto.Keys{Token: tk.Public().(ed25519.PublicKey)},
		Deliveries: []courierproto.ManifestDelivery{
			{ID: "p1", Version: 1, NotAfter: now.Add(time.Hour), Mode: courierproto.ModeToken, Attempts: 3},
			{ID: "p2", Version: 1, NotAfter: now.Add(time.Hour), Mode: courierproto.ModeToken, Attempts: 3}}}
	data, err := artifact.Sign(s, artifact.Header{Type: courierproto.ManifestType, Version: courierproto.ManifestVersion, Subject: "dev-7", Serial: 1,
		NotBefore: now.Add(-time.Minute), NotAfter: now.Add(time.Hour)}, m)
	if err != nil {
		t.Fatal(err)
	}
	st, err := offline.Open(ctx, fdir, offline.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.InstallManifest(ctx, data); err != nil {
		t.Fatal(err)
	}
	st.Close()
	token := func(id string) string {
		tok, err := deliverytoken.Sign(tk, deliverytoken.Claims{Realm: "acme", Delivery: id, Version: 1, Device: "dev-7", NotAfter: now.Add(time.Hour)})
		if err != nil {
			t.Fatal(err)
		}
		// The pure-Go decoder misses about 1 % of token QR codes at the
		// default size; a courier takes the photo again, the test another size.
		for _, size := range []int{512, 384, 640, 768} {
			png, err := qr.PNG(tok, size)
			if err != nil {
				t.Fatal(err)
			}
			if got, _ := qr.Decode(bytes.NewReader(png)); got == tok {
				return writeFile(t, tmp, id+".png", string(png))
			}
		}
		t.Fatalf("no size of the QR code of %q decodes", tok)
		return ""
	}
	expectCode(t, cli.ExitUsage, nil, "courier", "verify", "--data", fdir, "--delivery", "p1", "--scan", writeFile(t, tmp, "junk.png", "not an image"))
	expectCode(t, cli.ExitRefused, nil, "courier", "verify", "--data", fdir, "--delivery", "p1", "--scan", token("p2"))
	r := mustRun(t, nil, "courier", "verify", "--data", fdir, "--delivery", "p1", "--scan", token("p1"), "--location", "48.85,2.35")
	if !strings.Contains(r.stdout, "OK: delivery p1 accepted") {
		t.Fatalf("verify: %s", r)
	}
	expectCode(t, cli.ExitUsage, nil, "courier", "verify", "--data", fdir, "--delivery", "p1", "--code", "123", "--token", "x")
	var rt offline.Route
	if err := json.Unmarshal([]byte(mustRun(t, nil, "courier", "route", "--data", fdir, "--json").stdout), &rt); err != nil {
		t.Fatal(err)
	}
	if len(rt.Deliveries) != 2 || !rt.Deliveries[0].Accepted || rt.Deliveries[0].Attempts != 2 || rt.Deliveries[1].Attempts != 0 {
		t.Fatalf("route: %+v", rt)
	}
}
