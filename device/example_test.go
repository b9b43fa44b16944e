package device_test

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"log"
	"os"
	"path/filepath"

	"github.com/outpost-auth/outpost/device"
)

func Example() {
	// On the device, once: make the key and keep it (0600, never replaced).
	key, err := device.GenerateKey(device.P256)
	if err != nil {
		log.Fatal(err)
	}
	dir, _ := os.MkdirTemp("", "device")
	defer os.RemoveAll(dir)
	if err := device.WriteKeyFile(filepath.Join(dir, "device.key"), key); err != nil {
		log.Fatal(err)
	}

	// The label: the payload goes into the QR code (l.PNG, l.Terminal).
	l, err := device.NewLabel("SN-0042", "gw-100", key.Public())
	if err != nil {
		log.Fatal(err)
	}
	payload, err := l.Payload()
	if err != nil {
		log.Fatal(err)
	}

	// Whoever scans it decodes it.
	got, err := device.DecodeLabel(payload)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(got.Serial, got.Model, got.KeyType())

	// A misread label is refused.
	misread := []byte(payload)
	misread[len(device.Prefix)] ^= 1 // "W" read as "V"
	_, err = device.DecodeLabel(string(misread))
	fmt.Println(errors.Is(err, device.ErrChecksum))
	// Output:
	// SN-0042 gw-100 p256
	// true
}

func ExampleLabel_Fallback() {
	pub := ed25519.NewKeyFromSeed(make([]byte, 32)).Public()
	l, err := device.NewLabel("SN-0042", "gw-100", pub)
	if err != nil {
		log.Fatal(err)
	}
	fb, _ := l.Fallback()
	fmt.Println(fb)
	// Output:
	// SN-0042 GOPC-76IX-MMCQ-PNVE-EO24
}
