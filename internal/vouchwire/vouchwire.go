// Package vouchwire is the one format of a vouch: the data of a field
// device's "vouch" log entry (docs/onboarding.md). The field store writes
// it ([New] and [Data.Marshal]); the server's roster reads it ([Parse])
// when the entry arrives by sync. Both sides run the same checks, so an
// entry the field side would never write (whatever its holder signed with
// the device's own key) is refused with the same reasons.
//
// The entry's data carries the label's payload itself, not the fields
// read from it: the server decodes the label again (device.DecodeLabel)
// and believes nothing else the entry says about the device. Serial,
// model and fingerprint are repeated beside it for people reading the
// log; Parse refuses an entry whose copies disagree with the label.
package vouchwire

import (
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/outpost-auth/outpost/device"
	"github.com/outpost-auth/outpost/internal/ident"
)

// Kind is the device log kind of a vouch.
const Kind = "vouch"

// MaxLocationLen bounds the location text ("lat,lon").
const MaxLocationLen = 64

// MaxDataLen bounds a vouch entry's data: the label, the site, the
// location and the copies, with room to spare.
const MaxDataLen = 1024

// ErrInvalid is a vouch that is not well formed (its label, site or
// location); the message says which part.
var ErrInvalid = errors.New("vouch: invalid")

// Data is a vouch entry's data.
type Data struct {
	// Label is the payload of the device's QR label (device.Label.Payload).
	Label string `json:"label"`
	// Site is where the device was installed (an ident.CheckName id).
	Site string `json:"site"`
	// Location is "lat,lon" in decimal degrees, or empty.
	Location string `json:"location,omitempty"`
	// Serial, Model and Fingerprint repeat the label's, for readers.
	Serial      string `json:"serial"`
	Model       string `json:"model"`
	Fingerprint string `json:"fingerprint"`
}

// Vouch is a checked vouch: its data and the label it carries.
type Vouch struct {
	Data
	Parsed *device.Label
	// SPKI is the label's key in PKIX SubjectPublicKeyInfo DER.
	SPKI []byte
}

// New checks a label payload, a site and a location and returns the vouch.
// Its errors wrap device.ErrMalformed, device.ErrChecksum, device.ErrVersion
// (the label) or ErrInvalid.
func New(label, site, location string) (*Vouch, error) {
	l, err := device.DecodeLabel(label)
	if err != nil {
		return nil, err
	}
	if err := ident.CheckName("site", site); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	loc, err := ParseLocation(location)
	if err != nil {
		return nil, err
	}
	spki, err := x509.MarshalPKIXPublicKey(l.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("%w: the label's key: %v", ErrInvalid, err)
	}
	fp, err := device.Fingerprint(l.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("%w: the label's key: %v", ErrInvalid, err)
	}
	return &Vouch{Data: Data{Label: label, Site: site, Location: loc, Serial: l.Serial, Model: l.Model, Fingerprint: fp},
		Parsed: l, SPKI: spki}, nil
}

// Marshal returns the entry's data.
func (v *Vouch) Marshal() ([]byte, error) { return json.Marshal(v.Data) }

// Parse reads and checks a vouch entry's data as New does, and refuses
// data larger than MaxDataLen, fields it does not know, and copies of
// the serial, model or fingerprint that differ from the label's.
func Parse(raw []byte) (*Vouch, error) {
	if len(raw) > MaxDataLen {
		return nil, fmt.Errorf("%w: %d bytes of data, at most %d", ErrInvalid, len(raw), MaxDataLen)
	}
	var d Data
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&d); err != nil {
		return nil, fmt.Errorf("%w: data is not a vouch: %v", ErrInvalid, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("%w: trailing data", ErrInvalid)
	}
	v, err := New(d.Label, d.Site, d.Location)
	if err != nil {
		return nil, err
	}
	if v.Location != d.Location || v.Serial != d.Serial || v.Model != d.Model || v.Fingerprint != d.Fingerprint {
		return nil, fmt.Errorf("%w: the entry's serial, model, fingerprint or location differ from its label's", ErrInvalid)
	}
	return v, nil
}

// ParseLocation checks "lat,lon" (decimal degrees, latitude -90..90,
// longitude -180..180) and returns it in a canonical form (no spaces,
// at most 6 decimals). Empty stays empty.
func ParseLocation(s string) (string, error) {
	if s == "" {
		return "", nil
	}
	if len(s) > MaxLocationLen {
		return "", fmt.Errorf("%w: location longer than %d characters: give \"lat,lon\" in decimal degrees", ErrInvalid, MaxLocationLen)
	}
	a, b, ok := strings.Cut(s, ",")
	lat, err1 := strconv.ParseFloat(strings.TrimSpace(a), 64)
	lon, err2 := strconv.ParseFloat(strings.TrimSpace(b), 64)
	if !ok || err1 != nil || err2 != nil || math.IsNaN(lat) || math.IsNaN(lon) || math.Abs(lat) > 90 || math.Abs(lon) > 180 {
		return "", fmt.Errorf("%w: location %q: give \"lat,lon\" in decimal degrees, e.g. \"52.3702,4.8952\"", ErrInvalid, ident.Clip(s))
	}
	round := func(x float64) string { return strconv.FormatFloat(math.Round(x*1e6)/1e6, 'f', -1, 64) }
	return round(lat) + "," + round(lon), nil
}
