package courierproto

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// TestWriteSeeds writes the fuzz seeds in testdata when OUTPOST_WRITE_SEEDS=1.
func TestWriteSeeds(t *testing.T) {
	if os.Getenv("OUTPOST_WRITE_SEEDS") != "1" {
		t.Skip("set OUTPOST_WRITE_SEEDS=1 to rewrite the seeds")
	}
	server, device, other := signer(t, "server"), signer(t, "device"), signer(t, "other")
	seeds := map[string]map[string][]byte{
		"FuzzDecodeManifest": {
			"good_token":    []byte(`{"realm":"acme","device":"van-1","issued_at":"2031-01-01T00:00:00Z","max_age":60,"keys":{},"deliveries":[{"id":"p1","version":1,"not_after":"2031-01-02T00:00:00Z","mode":"token","attempts":5}]}`),
			"fail_unknown":  []byte(`{"realm":"acme","device":"van-1","issued_at":"2031-01-01T00:00:00Z","max_age":60,"keys":{},"deliveries":[],"email":"a@b.c"}`),
			"fail_twice":    []byte(`{"realm":"acme","device":"van-1","issued_at":"2031-01-01T00:00:00Z","max_age":60,"keys":{},"deliveries":[{"id":"p1","version":1,"not_after":"2031-01-02T00:00:00Z","mode":"token","attempts":5},{"id":"p1","version":1,"not_after":"2031-01-02T00:00:00Z","mode":"token","attempts":5}]}`),
			"fail_trailing": []byte(`{"realm":"acme","device":"van-1","issued_at":"2031-01-01T00:00:00Z","max_age":60,"keys":{},"deliveries":[]}{}`),
		},
		"FuzzDecodeReceipt": {
			"good":          []byte(`{"realm":"acme","delivery":"p1","version":1,"device":"van-1","mode":"hash","time":"2031-01-01T00:00:00Z","manifest":1,"log_seq":3,"log_hash":"AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE="}`),
			"fail_short":    []byte(`{"realm":"acme","delivery":"p1","version":1,"device":"van-1","mode":"hash","time":"2031-01-01T00:00:00Z","manifest":1,"log_seq":3,"log_hash":"AQE="}`),
			"fail_unsealed": []byte(`{"realm":"acme","delivery":"p1","version":1,"device":"van-1","mode":"fingerprint","time":"2031-01-01T00:00:00Z","manifest":1,"log_seq":3,"log_hash":"AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE="}`),
		},
		"FuzzVerifyProof": {
			"good":           proof(t, server, device, nil),
			"fail_other_dev": proof(t, server, other, func(_ *Receipt, c *Countersign) { c.DeviceKey = device.Public }),
			"fail_garbage":   []byte(`{"receipt":"AA==","countersign":"AA=="}`),
		},
	}
	for fz, files := range seeds {
		dir := filepath.Join("testdata", "fuzz", fz)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for name, data := range files {
			if err := os.WriteFile(filepath.Join(dir, name), fmt.Appendf(nil, "go test fuzz v1\n[]byte(%q)\n", data), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
}
