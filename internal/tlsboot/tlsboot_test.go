package tlsboot

import (
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
	m, _ := keys.GenerateMaster()
	now := time.Now()
	c1, err := Load(dir, m, []string{"localhost", "127.0.0.1"}, now)
	if err != nil {
		t.Fatal(err)
	}
	caPEM, _ := os.ReadFile(filepath.Join(dir, CAFile))
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	if _, err := c1.Leaf.Verify(x509.VerifyOptions{Roots: pool, DNSName: "localhost"}); err != nil {
		t.Fatalf("server certificate does not chain to the CA: %v", err)
	}
	if err := c1.Leaf.VerifyHostname("127.0.0.1"); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{CAKeyFile, CertKeyFile} {
		st, _ := os.Stat(filepath.Join(dir, f))
		if st.Mode().Perm() != 0o600 {
			t.Errorf("%s mode %v", f, st.Mode().Perm())
		}
	}
	if openssl, err := exec.LookPath("openssl"); err == nil {
		out, err := exec.Command(openssl, "verify", "-CAfile", filepath.Join(dir, CAFile), filepath.Join(dir, CertFile)).CombinedOutput()
		if err != nil {
			t.Fatalf("openssl verify: %v %s", err, out)
		}
	}
	c2, _ := Load(dir, m, []string{"localhost", "127.0.0.1"}, now)
	if c2.Leaf.SerialNumber.Cmp(c1.Leaf.SerialNumber) != 0 {
		t.Fatal("a valid certificate was replaced")
	}
	c3, _ := Load(dir, m, []string{"localhost", "outpost.example"}, now)
	if c3.Leaf.VerifyHostname("outpost.example") != nil {
		t.Fatal("a new name did not renew the certificate")
	}
	c4, _ := Load(dir, m, []string{"localhost", "outpost.example"}, now.AddDate(0, 11, 10))
	if c4.Leaf.SerialNumber.Cmp(c3.Leaf.SerialNumber) == 0 {
		t.Fatal("a certificate with under 30 days left was not renewed")
	}
	other, _ := keys.GenerateMaster()
	if _, err := Load(dir, other, []string{"localhost"}, now); err == nil {
		t.Fatal("another master key opened the TLS keys")
	}
}
