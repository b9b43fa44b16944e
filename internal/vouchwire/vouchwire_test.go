package vouchwire

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/outpost-auth/outpost/device"
)

func TestParseLocation(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"", ""},
		{"52.3702,4.8952", "52.3702,4.8952"},
		{" 52.3702 , 4.8952 ", "52.3702,4.8952"},
		{"-90,180", "-90,180"},
		{"1.23456789,2", "1.234568,2"},
	} {
		if got, err := ParseLocation(c.in); err != nil || got != c.want {
			t.Errorf("ParseLocation(%q) = %q, %v, want %q", c.in, got, err, c.want)
		}
	}
	for _, in := range []string{"north", "91,0", "0,181", "1", "1,2,3", "NaN,1", "1,Inf", strings.Repeat("1", MaxLocationLen+1)} {
		if _, err := ParseLocation(in); !errors.Is(err, ErrInvalid) {
			t.Errorf("ParseLocation(%q) = %v, want ErrInvalid", in, err)
		}
	}
}

// TestParse: what New writes, Parse reads back; every way an entry can be
// wrong is refused.
func TestParse(t *testing.T) {
	key, err := device.GenerateKey(device.Ed25519)
	if err != nil {
		t.Fatal(err)
	}
	l, _ := device.NewLabel("SN-1", "gw-100", key.Public())
	p, _ := l.Payload()
	v, err := New(p, "cab-1", "1.5, 2.5")
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := v.Marshal()
	back, err := Parse(raw)
	if err != nil || back.Serial != "SN-1" || back.Location != "1.5,2.5" || string(back.SPKI) != string(v.SPKI) {
		t.Fatalf("Parse(Marshal) = %+v, %v", back, err)
	}
	mutate := func(f func(d *Data)) []byte {
		d := v.Data
		f(&d)
		b, _ := json.Marshal(d)
		return b
	}
	for name, c := range map[string]struct {
		raw  []byte
		want error
	}{
		"fail_serial_copy":      {mutate(func(d *Data) { d.Serial = "SN-2" }), ErrInvalid},
		"fail_fingerprint_copy": {mutate(func(d *Data) { d.Fingerprint = "AAAA-AAAA-AAAA-AAAA-AAAA" }), ErrInvalid},
		"fail_location_form":    {mutate(func(d *Data) { d.Location = "1.5, 2.5" }), ErrInvalid},
		"fail_site":             {mutate(func(d *Data) { d.Site = "" }), ErrInvalid},
		"fail_label":            {mutate(func(d *Data) { d.Label = p[:20] }), device.ErrMalformed},
		"fail_unknown_field":    {[]byte(`{"label":"x","site":"s","realm":"r"}`), ErrInvalid},
		"fail_trailing":         {append(raw, []byte(` {}`)...), ErrInvalid},
		"fail_too_large":        {[]byte(`"` + strings.Repeat("x", MaxDataLen) + `"`), ErrInvalid},
		"fail_not_object":       {[]byte(`[1]`), ErrInvalid},
	} {
		if _, err := Parse(c.raw); !errors.Is(err, c.want) {
			t.Errorf("%s: Parse = %v, want %v", name, err, c.want)
		}
	}
}
