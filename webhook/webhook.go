// Package webhook signs and verifies Outpost's webhook requests: the
// delivery events a realm's shipper receives and the messages an SMS
// gateway is asked to send. A shipper's receiver needs only this package
// and the secret the admin read once when setting the webhook up
// (`outpost admin webhook set`):
//
//	body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
//	err := webhook.Verify(secret, r.Header.Get(webhook.Header), body, time.Now(), webhook.DefaultTolerance)
//	if err != nil { http.Error(w, "bad signature", http.StatusUnauthorized); return }
//	var ev webhook.Event
//	_ = json.Unmarshal(body, &ev) // dedupe on ev.ID: a retry after a lost answer sends it again
//
// The header is "Outpost-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256>"
// over the bytes "<t>.<body>": the time is signed with the body, so a
// recorded request replays only within the tolerance, and a receiver
// that remembers event ids within it sees no replay at all. The same
// check in a shell:
//
//	printf '%s.%s' "$t" "$(cat body.json)" | openssl dgst -sha256 -hmac "$secret" -hex
//
// Several v1 values may be present (while a secret is being replaced);
// one matching is enough. Comparison is constant-time.
package webhook

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Header is the HTTP header that carries the signature.
const Header = "Outpost-Signature"

// DefaultTolerance is how far a signature's time may be from the
// receiver's clock.
const DefaultTolerance = 5 * time.Minute

// MaxHeaderLen bounds the header Verify reads.
const MaxHeaderLen = 1024

var (
	// ErrMalformed: the header is not "t=<unix>,v1=<hex>[,v1=…]".
	ErrMalformed = errors.New("webhook: malformed signature header")
	// ErrSignature: no v1 value is the HMAC of this body and time under the secret.
	ErrSignature = errors.New("webhook: signature does not match (wrong secret, or the body was changed)")
	// ErrTime: the signed time is further from now than the tolerance.
	ErrTime = errors.New("webhook: signature time outside the tolerance (a replay, or a clock off)")
)

// Event is the JSON body of a delivery event sent to a shipper. It holds
// no code and no recipient.
type Event struct {
	// ID is stable across retries of one event: dedupe on it.
	ID string `json:"id"`
	// Type is the delivery's new state: created, notified,
	// out_for_delivery, delivered, failed, expired, cancelled, reassigned.
	Type     string    `json:"type"`
	Realm    string    `json:"realm"`
	Delivery string    `json:"delivery"`
	Version  uint32    `json:"version"`
	State    string    `json:"state"`
	Device   string    `json:"device"`
	Time     time.Time `json:"time"`
}

// Sign returns the header value for body sent at t under secret.
func Sign(secret, body []byte, t time.Time) string {
	ts := strconv.FormatInt(t.Unix(), 10)
	return "t=" + ts + ",v1=" + hex.EncodeToString(mac(secret, ts, body))
}

// Verify checks header (the value of Header) against body under secret:
// a v1 value must be the HMAC of "<t>.<body>" and t within tolerance of
// now. It returns ErrMalformed, ErrTime or ErrSignature.
func Verify(secret []byte, header string, body []byte, now time.Time, tolerance time.Duration) error {
	ts, sigs, err := Parse(header)
	if err != nil {
		return err
	}
	if d := now.Sub(time.Unix(ts, 0)); d > tolerance || d < -tolerance {
		return fmt.Errorf("%w: signed at %d, now %d", ErrTime, ts, now.Unix())
	}
	want := mac(secret, strconv.FormatInt(ts, 10), body)
	ok := false
	for _, s := range sigs {
		ok = hmac.Equal(s, want) || ok
	}
	if !ok {
		return ErrSignature
	}
	return nil
}

// Parse splits a header into its time and v1 signatures; unknown keys
// (later versions) are skipped. At most MaxHeaderLen bytes and 8 v1 values.
func Parse(header string) (int64, [][]byte, error) {
	if len(header) > MaxHeaderLen {
		return 0, nil, fmt.Errorf("%w: longer than %d bytes", ErrMalformed, MaxHeaderLen)
	}
	var ts int64 = -1
	var sigs [][]byte
	for _, part := range strings.Split(header, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			return 0, nil, fmt.Errorf("%w: %q is not key=value", ErrMalformed, clip(part))
		}
		switch k {
		case "t":
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil || n < 0 || ts >= 0 || len(v) > 12 {
				return 0, nil, fmt.Errorf("%w: t must be one Unix time in seconds", ErrMalformed)
			}
			ts = n
		case "v1":
			b, err := hex.DecodeString(v)
			if err != nil || len(b) != sha256.Size {
				return 0, nil, fmt.Errorf("%w: v1 must be %d hex digits", ErrMalformed, 2*sha256.Size)
			}
			if sigs = append(sigs, b); len(sigs) > 8 {
				return 0, nil, fmt.Errorf("%w: more than 8 v1 values", ErrMalformed)
			}
		}
	}
	if ts < 0 || len(sigs) == 0 {
		return 0, nil, fmt.Errorf("%w: needs t= and v1=", ErrMalformed)
	}
	return ts, sigs, nil
}

func mac(secret []byte, ts string, body []byte) []byte {
	h := hmac.New(sha256.New, secret)
	h.Write([]byte(ts))
	h.Write([]byte{'.'})
	h.Write(body)
	return h.Sum(nil)
}

func clip(s string) string {
	if len(s) > 32 {
		return s[:32] + "…"
	}
	return s
}
