package qr

import (
	"bytes"
	"errors"
	"fmt"
	"image"
	_ "image/gif"  // a scanner may hand over any of these
	_ "image/jpeg" // phone photos
	_ "image/png"
	"io"

	"github.com/makiuchi-d/gozxing"
	zxqr "github.com/makiuchi-d/gozxing/qrcode"
)

// Bounds on what Decode reads, so a hostile file cannot make it allocate
// without limit: the encoded file and the decoded pixels.
const (
	// MaxImageBytes bounds the file (a 12 MP phone JPEG is 3 to 6 MB).
	MaxImageBytes = 20 << 20
	// MaxImagePixels bounds width × height (a 48 MP phone sensor).
	MaxImagePixels = 48_000_000
)

var (
	// ErrNoCode: the image was read but no QR code was found in it; ask for
	// a sharper, closer or better-lit picture, or type the fallback text.
	ErrNoCode = errors.New("qr: no QR code found in the image")
	// ErrImage: the file is not an image Decode reads (PNG, JPEG or GIF),
	// or it is larger than the bounds above.
	ErrImage = errors.New("qr: not a readable image")
)

// Decode finds one QR code in a PNG, JPEG or GIF image read from r and
// returns its text. It is pure Go (a port of ZXing), so a field device needs
// no camera library: a photo taken by a phone works as well as a rendered
// PNG. The file is bounded by MaxImageBytes and MaxImagePixels. It returns an
// error wrapping ErrImage when r is not such an image and ErrNoCode when no
// code is found; it never panics on hostile input. The text is returned as
// the code carries it; callers validate it as any other input.
func Decode(r io.Reader) (string, error) {
	data, err := io.ReadAll(io.LimitReader(r, MaxImageBytes+1))
	if err != nil {
		return "", fmt.Errorf("qr: reading the image: %w", err)
	}
	if len(data) > MaxImageBytes {
		return "", fmt.Errorf("%w: the file is over %d MB", ErrImage, MaxImageBytes>>20)
	}
	cfg, format, err := image.DecodeConfig(bytes.NewReader(data))
	if err != nil {
		return "", fmt.Errorf("%w: %v", ErrImage, err)
	}
	if cfg.Width <= 0 || cfg.Height <= 0 || int64(cfg.Width)*int64(cfg.Height) > MaxImagePixels {
		return "", fmt.Errorf("%w: %d×%d pixels is outside the bound of %d", ErrImage, cfg.Width, cfg.Height, MaxImagePixels)
	}
	img, _, err := image.Decode(bytes.NewReader(data))
	if err != nil {
		return "", fmt.Errorf("%w: %s: %v", ErrImage, format, err)
	}
	return DecodeImage(img)
}

// DecodeImage is Decode for an image already in memory (a camera frame).
// The caller bounds its size.
func DecodeImage(img image.Image) (text string, err error) {
	defer func() {
		// The decoder is third-party code run on hostile pixels: a panic
		// in it is a refusal, not a crash of the device.
		if r := recover(); r != nil {
			text, err = "", fmt.Errorf("%w (the decoder failed on this image)", ErrNoCode)
		}
	}()
	bmp, err := gozxing.NewBinaryBitmapFromImage(img)
	if err != nil {
		return "", fmt.Errorf("%w: %v", ErrImage, err)
	}
	reader := zxqr.NewQRCodeReader()
	// A rendered label decodes on the fast path; a photo (skewed, uneven
	// light) may need the harder search. Both go through ZXing's
	// finder-pattern detector, which misses about 1 % of clean renders of
	// ~150-character codes (delivery tokens: certain module arrangements
	// next to a finder pattern look like a false one). PURE_BARCODE reads a
	// straight, unrotated code (a PNG from PNG, a screenshot, a mail
	// attachment) off its corners without the detector: those decode every
	// time (TestDecodeManyTokens).
	for _, hints := range []map[gozxing.DecodeHintType]interface{}{
		nil,
		{gozxing.DecodeHintType_TRY_HARDER: true},
		{gozxing.DecodeHintType_PURE_BARCODE: true},
	} {
		res, derr := reader.Decode(bmp, hints)
		if derr == nil {
			return res.GetText(), nil
		}
	}
	return "", ErrNoCode
}
