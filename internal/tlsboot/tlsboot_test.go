package tlsboot

import (
	"crypto/tls"
	"crypto/x509"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/outpost-auth/outpost/internal/keys"
)

func TestLoadCreatesReusesAndRenews(t *testing.T) {
	dir := t.TempDir()
	m, err := keys.GenerateMaster()
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	load := func(names []string, at time.Time) tls.Certificate {
		t.Helper()
		c, err := Load(dir, m, names, at)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	c1 := load([]string{"localhost", "127.0.0.1"}, now)
	caPEM, err := os.ReadFile(filepath.Join(dir, CAFile))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		t.Fatalf("%s holds no certificate", CAFile)
	}
	if _, err := c1.Leaf.Verify(x509.VerifyOptions{Roots: pool, DNSName: "localhost"}); err != nil {
		t.Fatalf("server certificate does not chain to the CA: %v", err)
	}
	if err := c1.Leaf.VerifyHostname("127.0.0.1"); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{CAKeyFile, CertKeyFile} {
		st, err := os.Stat(filepath.Join(dir, f))
		if err != nil || st.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v, %v", f, st, err)
		}
	}
	if openssl, err := exec.LookPath("openssl"); err == nil {
		out, err := exec.Command(openssl, "verify", "-CAfile", filepath.Join(dir, CAFile), filepath.Join(dir, CertFile)).CombinedOutput()
		if err != nil {
			t.Fatalf("openssl verify: %v %s", err, out)
		}
	}
	c2 := load([]string{"localhost", "127.0.0.1"}, now)
	if c2.Leaf.SerialNumber.Cmp(c1.Leaf.SerialNumber) != 0 {
		t.Fatal("a valid certificate was replaced")
	}
	c3 := load([]string{"localhost", "outpost.example"}, now)
	if c3.Leaf.VerifyHostname("outpost.example") != nil {
		t.Fatal("a new name did not renew the certificate")
	}
	c4 := load([]string{"localhost", "outpost.example"}, now.AddDate(0, 11, 10))
	if c4.Leaf.SerialNumber.Cmp(c3.Leaf.SerialNumber) == 0 {
		t.Fatal("a certificate with under 30 days left was not renewed")
	}
	other, err := keys.GenerateMaster()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Load(dir, other, []string{"localhost"}, now); err == nil {
		t.Fatal("another master key opened the TLS keys")
	}
}
