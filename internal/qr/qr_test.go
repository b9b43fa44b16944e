package qr_test

import (
	"bytes"
	"fmt"
	"image"
	"image/png"
	"strings"
	"testing"

	"github.com/outpost-auth/outpost/internal/proctest"
	"github.com/outpost-auth/outpost/internal/qr"
	"github.com/outpost-auth/outpost/otp"
)

func testURI(t *testing.T) string {
	t.Helper()
	k := &otp.Key{
		Params:  otp.Params{Type: otp.TypeTOTP, Algorithm: otp.SHA256, Digits: 8, Period: 30},
		Secret:  []byte("12345678901234567890123456789012"),
		Issuer:  "Outpost Demo",
		Account: "jürgen@example.com",
	}
	if err := k.Validate(); err != nil {
		t.Fatal(err)
	}
	return k.URI()
}

func decodePNG(t *testing.T, b []byte) image.Image {
	t.Helper()
	img, err := png.Decode(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("not a PNG: %v", err)
	}
	return img
}

func TestPNG(t *testing.T) {
	uri := testURI(t)
	tests := []struct {
		size, want int
	}{
		{0, qr.DefaultPNGSize},
		{256, 256},
		{512, 512},
		{1024, 1024},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.size), func(t *testing.T) {
			b, err := qr.PNG(uri, tt.size)
			if err != nil {
				t.Fatal(err)
			}
			bounds := decodePNG(t, b).Bounds()
			if bounds.Dx() != tt.want || bounds.Dy() != tt.want {
				t.Errorf("image is %v, want %d px square", bounds.Size(), tt.want)
			}
		})
	}
	// Too small for the modules: a larger, still square, image.
	b, err := qr.PNG(uri, 10)
	if err != nil {
		t.Fatal(err)
	}
	if s := decodePNG(t, b).Bounds().Size(); s.X < 10 || s.X != s.Y {
		t.Errorf("size 10 gave %v", s)
	}
}

// TestPNGWholeModules: at every size each module is the same whole number
// of pixels, so a reader's estimate of the module size from a finder
// pattern holds across the code. The top-left finder pattern's first row is
// 7 dark modules: its run of dark pixels is 7 × the scale, and the image is
// the size asked for.
func TestPNGWholeModules(t *testing.T) {
	uri := testURI(t)
	for _, size := range []int{0, 200, 256, 300, 320, 333, 512} {
		b, err := qr.PNG(uri, size)
		if err != nil {
			t.Fatal(err)
		}
		img := decodePNG(t, b)
		want := size
		if size == 0 {
			want = qr.DefaultPNGSize
		}
		if img.Bounds().Dx() != want || img.Bounds().Dy() != want {
			t.Fatalf("%d px: image is %v", size, img.Bounds().Size())
		}
		dark := func(x, y int) bool { r, _, _, _ := img.At(x, y).RGBA(); return r < 0x8000 }
		// The first dark pixel on the diagonal is the finder's corner.
		c := 0
		for c < want && !dark(c, c) {
			c++
		}
		run := 0
		for c+run < want && dark(c+run, c) {
			run++
		}
		col := 0
		for c+col < want && dark(c, c+col) {
			col++
		}
		if run%7 != 0 || col != run {
			t.Errorf("%d px: the finder's top row is %d px and its left column %d px, not 7 whole modules", size, run, col)
		}
	}
}

func TestBounds(t *testing.T) {
	tests := []struct {
		name    string
		content string
		size    int
		msg     string
	}{
		{"empty", "", 256, "nothing to encode"},
		{"too long", strings.Repeat("A", qr.MaxContent+1), 256, "more than a QR code should carry"},
		{"raw UTF-8", "otpauth://totp/Bäckerei:jürgen?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ", 256, "byte 16 is not ASCII"},
		{"negative size", "x", -5, "outside 1 to 4096"},
		{"huge size", "x", qr.MaxPNGSize + 1, "outside 1 to 4096"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := qr.PNG(tt.content, tt.size); err == nil || !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("PNG: %v, want %q", err, tt.msg)
			}
			if tt.size == 256 {
				if _, err := qr.Terminal(tt.content); err == nil || !strings.Contains(err.Error(), tt.msg) {
					t.Errorf("Terminal: %v, want %q", err, tt.msg)
				}
			}
		})
	}
	// The limit itself fits, in bytes that need the binary mode.
	if _, err := qr.PNG(strings.Repeat("a~", qr.MaxContent/2), 0); err != nil {
		t.Errorf("MaxContent bytes: %v", err)
	}
}

func TestTerminal(t *testing.T) {
	s, err := qr.Terminal(testURI(t))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) < 10 {
		t.Fatalf("%d lines: %q", len(lines), s)
	}
	width := len([]rune(lines[0]))
	for i, l := range lines {
		if n := len([]rune(l)); n != width {
			t.Fatalf("line %d is %d cells wide, line 0 %d", i, n, width)
		}
		for _, r := range l {
			if !strings.ContainsRune(" █▀▄", r) {
				t.Fatalf("line %d has %q: only half blocks and spaces are expected", i, r)
			}
		}
	}
	// Two modules per cell vertically: about half as many lines as columns.
	if len(lines) > width {
		t.Errorf("%d lines for %d columns: not half-block rendering", len(lines), width)
	}
}

// TestZbarimgDecodesPNG reads the PNG back with a real QR reader. zbarimg
// comes from Debian's zbar-tools; the test skips without it unless
// OUTPOST_REQUIRE_INTEROP=1.
func TestZbarimgDecodesPNG(t *testing.T) {
	hotp := &otp.Key{Params: otp.Params{Type: otp.TypeHOTP, Algorithm: otp.SHA1, Digits: 6},
		Secret: bytes.Repeat([]byte{0xfe}, 20), Issuer: "ACME", Account: "dev-7", Counter: 42}
	contents := map[string]string{
		"totp_uri":   testURI(t),
		"hotp_uri":   hotp.URI(),
		"long_label": (&otp.Key{Params: otp.DefaultTOTP, Secret: make([]byte, 64), Issuer: "Outpost", Account: strings.Repeat("x", 400)}).URI(),
	}
	for name, content := range contents {
		for _, size := range []int{0, 600} {
			t.Run(fmt.Sprintf("%s/%d", name, size), func(t *testing.T) {
				b, err := qr.PNG(content, size)
				if err != nil {
					t.Fatal(err)
				}
				got := proctest.Zbarimg(t, b)
				if got != content {
					t.Fatalf("zbarimg read\n%q\nwant\n%q", got, content)
				}
				if _, err := otp.ParseURI(got); err != nil {
					t.Errorf("the decoded URI does not parse: %v", err)
				}
			})
		}
	}
}
