// Package qr renders text (an otpauth URI, a device label, a delivery token)
// as a QR code: a PNG for files and APIs, or half-block characters for a
// terminal; and reads one back from an image (Decode, pure Go, bounded), so a
// field device decodes a photo without a camera library.
//
//	png, err := qr.PNG(key.URI(), 0)      // 256 px, medium error correction
//	text, err := qr.Terminal(key.URI())   // for `outpost ... --qr`
//	text, err := qr.Decode(file)          // PNG, JPEG or GIF; ErrNoCode, ErrImage
//
// Content is bounded by [MaxContent] and images by [MaxPNGSize], so a caller
// passing user input cannot make it allocate without limit. The codes carry a
// quiet zone (white border) so phone cameras find them.
//
// Content must be ASCII. QR codes carry no character set unless an ECI marker
// says so, and readers guess: zbarimg reads the UTF-8 of "ä" as Big5 "瓣".
// Percent-encode anything else first; otp.Key.URI already does, so encode
// key.URI() rather than a URI as the user typed it. ASCII content comes back
// from a reader (zbarimg, an authenticator app) byte for byte.
//
// A QR code of an otpauth URI carries its secret: treat the PNG and the
// terminal output like the secret itself.
package qr

import (
	"bytes"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"unicode/utf8"

	qrcode "github.com/skip2/go-qrcode"
)

// MaxContent bounds what is encoded; a version 40 code at medium recovery
// holds 2,331 bytes, and an otpauth URI is usually under 200.
const MaxContent = 2000

// MaxPNGSize bounds the side of a PNG in pixels (64 MiB of pixels at most).
const MaxPNGSize = 4096

// DefaultPNGSize is the side of a PNG when the caller passes 0.
const DefaultPNGSize = 256

// PNG returns a PNG of content, size pixels square (DefaultPNGSize when
// size is 0), at medium error correction. Every module is drawn as the same
// whole number of pixels, centred, with the rest of the image white: readers
// estimate the module size from the finder patterns, and modules of 6 and 7
// pixels side by side (a 41-module code in 320 px) make ZXing-based readers
// miscount the grid. If size is too small for one pixel per module, the
// image is larger than asked. Sizes above MaxPNGSize or below 0 are an
// error.
func PNG(content string, size int) ([]byte, error) {
	if size == 0 {
		size = DefaultPNGSize
	}
	if size < 0 || size > MaxPNGSize {
		return nil, fmt.Errorf("qr: size %d px is outside 1 to %d", size, MaxPNGSize)
	}
	q, err := encode(content)
	if err != nil {
		return nil, err
	}
	modules := q.Bitmap() // with its quiet zone
	scale := max(size/len(modules), 1)
	size = max(size, len(modules))
	img := image.NewPaletted(image.Rect(0, 0, size, size), color.Palette{color.White, color.Black})
	off := (size - len(modules)*scale) / 2
	for y, row := range modules {
		for x, dark := range row {
			if !dark {
				continue
			}
			for dy := range scale {
				p := img.PixOffset(off+x*scale, off+y*scale+dy)
				for dx := range scale {
					img.Pix[p+dx] = 1
				}
			}
		}
	}
	var b bytes.Buffer
	if err := (&png.Encoder{CompressionLevel: png.BestCompression}).Encode(&b, img); err != nil {
		return nil, fmt.Errorf("qr: encoding the PNG: %w", err)
	}
	return b.Bytes(), nil
}

// Terminal returns content as a QR code drawn with Unicode half blocks (two
// modules per character cell), dark on light, for printing to a terminal.
// Print it on a light background or a scanner may not read it.
func Terminal(content string) (string, error) {
	q, err := encode(content)
	if err != nil {
		return "", err
	}
	return q.ToSmallString(false), nil
}

func encode(content string) (*qrcode.QRCode, error) {
	if content == "" {
		return nil, errors.New("qr: nothing to encode")
	}
	if len(content) > MaxContent {
		return nil, fmt.Errorf("qr: %d bytes is more than a QR code should carry (%d)", len(content), MaxContent)
	}
	for i := 0; i < len(content); i++ {
		if content[i] >= utf8.RuneSelf {
			return nil, fmt.Errorf("qr: byte %d is not ASCII, which QR readers may misread; percent-encode the content (otp.Key.URI does)", i)
		}
	}
	q, err := qrcode.New(content, qrcode.Medium)
	if err != nil {
		return nil, fmt.Errorf("qr: %w", err)
	}
	return q, nil
}
