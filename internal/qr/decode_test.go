package qr

import (
	"bytes"
	"errors"
	"image"
	"image/color"
	"image/draw"
	"image/jpeg"
	"image/png"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A PNG from PNG decodes to its content; so does a "photo" of it: scaled,
// on a grey background, with noise, saved as JPEG.
func TestDecodeRoundTrip(t *testing.T) {
	contents := []string{
		"otpauth://totp/Outpost:ana?secret=JBSWY3DPEHPK3PXP&issuer=Outpost",
		"OPD:" + strings.Repeat("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:", 4),
		"x",
	}
	for _, c := range contents {
		p, err := PNG(c, 0)
		if err != nil {
			t.Fatal(err)
		}
		got, err := Decode(bytes.NewReader(p))
		if err != nil || got != c {
			t.Fatalf("Decode(PNG(%q)) = %q, %v", c, got, err)
		}
		photo := photograph(t, p)
		got, err = Decode(bytes.NewReader(photo))
		if err != nil || got != c {
			t.Fatalf("Decode(photo of %q) = %q, %v", c, got, err)
		}
	}
}

// photograph places the code off-centre on a larger grey, noisy canvas and
// encodes it as a JPEG at middling quality, as a phone camera would.
func photograph(t *testing.T, pngData []byte) []byte {
	t.Helper()
	src, err := png.Decode(bytes.NewReader(pngData))
	if err != nil {
		t.Fatal(err)
	}
	b := src.Bounds()
	canvas := image.NewRGBA(image.Rect(0, 0, b.Dx()*2+37, b.Dy()*2+11))
	draw.Draw(canvas, canvas.Bounds(), &image.Uniform{color.RGBA{200, 195, 190, 255}}, image.Point{}, draw.Src)
	r := rand.New(rand.NewPCG(1, 2))
	off := image.Pt(b.Dx()/2+13, b.Dy()/3)
	for y := 0; y < b.Dy(); y++ {
		for x := 0; x < b.Dx(); x++ {
			c := color.GrayModel.Convert(src.At(b.Min.X+x, b.Min.Y+y)).(color.Gray)
			v := int(c.Y)
			if v > 128 {
				v = 215
			} else {
				v = 40
			}
			v += r.IntN(31) - 15
			canvas.Set(off.X+x, off.Y+y, color.RGBA{uint8(v), uint8(v), uint8(v), 255})
		}
	}
	var out bytes.Buffer
	if err := jpeg.Encode(&out, canvas, &jpeg.Options{Quality: 70}); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

func TestDecodeRefuses(t *testing.T) {
	blank := image.NewGray(image.Rect(0, 0, 200, 200))
	draw.Draw(blank, blank.Bounds(), image.White, image.Point{}, draw.Src)
	var blankPNG bytes.Buffer
	if err := png.Encode(&blankPNG, blank); err != nil {
		t.Fatal(err)
	}
	huge := hugeHeader()
	cases := []struct {
		name string
		data []byte
		want error
	}{
		{"empty", nil, ErrImage},
		{"text", []byte("not an image at all"), ErrImage},
		{"truncated png", blankPNG.Bytes()[:40], ErrImage},
		{"blank image", blankPNG.Bytes(), ErrNoCode},
		{"pixel bomb", huge, ErrImage},
		{"oversize file", make([]byte, MaxImageBytes+1), ErrImage},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Decode(bytes.NewReader(c.data))
			if !errors.Is(err, c.want) {
				t.Fatalf("Decode = %v, want %v", err, c.want)
			}
		})
	}
}

// hugeHeader is a PNG header that claims 100,000 × 100,000 pixels.
func hugeHeader() []byte {
	img := image.NewGray(image.Rect(0, 0, 1, 1))
	var b bytes.Buffer
	_ = png.Encode(&b, img)
	data := b.Bytes()
	// IHDR width and height at bytes 16..23; the CRC no longer matches,
	// which DecodeConfig does not check before the bound does.
	copy(data[16:24], []byte{0, 1, 0x86, 0xa0, 0, 1, 0x86, 0xa0})
	return data
}

func FuzzDecode(f *testing.F) {
	seeds, _ := filepath.Glob("testdata/*.png")
	for _, s := range seeds {
		data, err := os.ReadFile(s)
		if err == nil {
			f.Add(data)
		}
	}
	f.Add([]byte("GIF89a"))
	f.Add([]byte{0xff, 0xd8, 0xff})
	f.Fuzz(func(t *testing.T, data []byte) {
		text, err := Decode(bytes.NewReader(data))
		if err == nil && text == "" {
			t.Fatal("decoded an empty text without error")
		}
	})
}

// TestDecodeManyTokens: random delivery-token-like contents (base45, 110 to
// 170 characters as deliverytoken makes for various realm, delivery and
// device names) all decode from their PNG, at the default size and at the
// token's (delivery.TokenQRSize, 320 px), and so do two real tokens that
// once failed. Before the pure-barcode pass about 1 % failed; before PNG drew
// every module at one whole number of pixels, about 1 % of 136-character
// tokens still failed at 320 px (41 modules in 6 and 7 pixel columns: the
// reader miscounted the grid as 42).
func TestDecodeManyTokens(t *testing.T) {
	const alpha = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:"
	texts := []string{
		"ODT1:200SJE200B8E0001005006VCD.E6B6/E92ZCZ$405S%/5*.TXFSMOMH6R0KM5ZT-2IUE7XKEAUOUWNA8R03RT%I.VGEHJFG05IQ:B4 SVRHP59B7EVVN6$4I7XL97R7QG90",
		"ODT1:200SJE200B8E0001005006VCD.E6B6/E9A5GKQB$VQ$6F35OXOMW6EEN8YTFP$M-C1FHK:K0SHJM1G*EOSYAA01:KDZ9UEEB+LPX998.QYG3N FH%U$+7-DJ:K4.20LH540",
	}
	rng := rand.New(rand.NewPCG(11, 150))
	n := 150
	if testing.Short() {
		n = 30
	}
	for range n {
		b := make([]byte, 110+rng.IntN(61))
		for j := range b {
			b[j] = alpha[rng.IntN(len(alpha))]
		}
		texts = append(texts, "ODT1:"+string(b))
	}
	for i, text := range texts {
		for _, size := range []int{0, 320} {
			p, err := PNG(text, size)
			if err != nil {
				t.Fatal(err)
			}
			if got, err := Decode(bytes.NewReader(p)); err != nil || got != text {
				t.Fatalf("token %d (%d characters) at %d px: %q, %v", i, len(text), size, got, err)
			}
		}
	}
}
