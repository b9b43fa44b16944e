// Package qr renders text (an otpauth URI, a device token) as a QR code: a PNG
// for files and APIs, or half-block characters for a terminal.
package qr

import (
	"fmt"

	qrcode "github.com/skip2/go-qrcode"
)

// MaxContent bounds what is encoded; a version 40 code at medium recovery holds 2,331 bytes.
const MaxContent = 2000

// PNG returns a PNG of content, size pixels square (256 when size <= 0), at
// medium error correction.
func PNG(content string, size int) ([]byte, error) {
	q, err := encode(content)
	if err != nil {
		return nil, err
	}
	if size <= 0 {
		size = 256
	}
	return q.PNG(size)
}

// Terminal returns content as a QR code drawn with Unicode half blocks, dark on
// light, for printing to a terminal.
func Terminal(content string) (string, error) {
	q, err := encode(content)
	if err != nil {
		return "", err
	}
	return q.ToSmallString(false), nil
}

func encode(content string) (*qrcode.QRCode, error) {
	if len(content) > MaxContent {
		return nil, fmt.Errorf("qr: %d bytes is more than a QR code should carry (%d)", len(content), MaxContent)
	}
	q, err := qrcode.New(content, qrcode.Medium)
	if err != nil {
		return nil, fmt.Errorf("qr: %w", err)
	}
	return q, nil
}
