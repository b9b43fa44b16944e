// Package tlsboot gives `outpost serve` HTTPS without any set-up: on first
// start it creates a private CA (ECDSA P-256, 10 years) and a server
// certificate signed by it (1 year, renewed automatically when it has less
// than 30 days left or its names change) in DIR/tls. Clients trust DIR/tls/ca.pem
// (`outpost admin --cacert`, `curl --cacert`). Private keys are stored
// encrypted under a data key derived from the master key, so a copied data
// directory without the passphrase yields no TLS key.
package tlsboot

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/outpost-auth/outpost/internal/datadir"
	"github.com/outpost-auth/outpost/internal/keys"
	"github.com/outpost-auth/outpost/internal/secretbox"
)

// File names in DIR/tls.
const (
	CAFile      = "ca.pem"
	CAKeyFile   = "ca.key.enc"
	CertFile    = "server.pem"
	CertKeyFile = "server.key.enc"
)

// Load returns a TLS certificate for names (DNS names or IP addresses),
// creating the CA and server certificate in dir when missing or due.
func Load(dir string, m *keys.Master, names []string, now time.Time) (tls.Certificate, error) {
	if len(names) == 0 {
		return tls.Certificate{}, errors.New("tls: a server certificate needs at least one name")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return tls.Certificate{}, err
	}
	box := secretbox.New(m, 0, "tls-private-keys")
	caCert, caKey, err := loadOrCreateCA(dir, box, now)
	if err != nil {
		return tls.Certificate{}, err
	}
	cert, key, err := loadPair(dir, CertFile, CertKeyFile, box)
	if err == nil && cert.NotAfter.Sub(now) > 30*24*time.Hour && covers(cert, names) && cert.CheckSignatureFrom(caCert) == nil {
		return tls.Certificate{Certificate: [][]byte{cert.Raw}, PrivateKey: key, Leaf: cert}, nil
	}
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return tls.Certificate{}, err
	}
	key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(), Subject: pkix.Name{CommonName: names[0]},
		NotBefore: now.Add(-time.Hour), NotAfter: now.AddDate(1, 0, 0),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	SetNames(tmpl, names)
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
	if err != nil {
		return tls.Certificate{}, err
	}
	if err := storePair(dir, CertFile, CertKeyFile, der, key, box); err != nil {
		return tls.Certificate{}, err
	}
	leaf, _ := x509.ParseCertificate(der)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, nil
}

// SetNames puts names in a server certificate template: each an IP
// address or else a DNS name. (internal/ca's device listener certificate
// uses it too.)
func SetNames(tmpl *x509.Certificate, names []string) {
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
}

func covers(c *x509.Certificate, names []string) bool {
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			if !slices.ContainsFunc(c.IPAddresses, ip.Equal) {
				return false
			}
		} else if !slices.Contains(c.DNSNames, n) {
			return false
		}
	}
	return true
}

func loadOrCreateCA(dir string, box *secretbox.Box, now time.Time) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	cert, key, err := loadPair(dir, CAFile, CAKeyFile, box)
	if err == nil {
		return cert, key, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, nil, err
	}
	key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(), Subject: pkix.Name{CommonName: "Outpost local CA", Organization: []string{"Outpost"}},
		NotBefore: now.Add(-time.Hour), NotAfter: now.AddDate(10, 0, 0),
		IsCA: true, BasicConstraintsValid: true, MaxPathLenZero: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, err
	}
	if err := storePair(dir, CAFile, CAKeyFile, der, key, box); err != nil {
		return nil, nil, err
	}
	cert, _ = x509.ParseCertificate(der)
	return cert, key, nil
}

func loadPair(dir, certName, keyName string, box *secretbox.Box) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	cp, err := datadir.ReadFileLimit(filepath.Join(dir, certName), 64<<10)
	if err != nil {
		return nil, nil, err
	}
	kp, err := datadir.ReadFileLimit(filepath.Join(dir, keyName), 64<<10)
	if err != nil {
		return nil, nil, err
	}
	b, _ := pem.Decode(cp)
	if b == nil || b.Type != "CERTIFICATE" {
		return nil, nil, fmt.Errorf("tls: %s is not a PEM certificate", certName)
	}
	cert, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		return nil, nil, fmt.Errorf("tls: %s: %w", certName, err)
	}
	der, err := box.Open(kp, []byte(keyName))
	if err != nil {
		return nil, nil, fmt.Errorf("tls: %s: %w", keyName, err)
	}
	key, err := x509.ParseECPrivateKey(der)
	if err != nil {
		return nil, nil, fmt.Errorf("tls: %s: %w", keyName, err)
	}
	return cert, key, nil
}

func storePair(dir, certName, keyName string, der []byte, key *ecdsa.PrivateKey, box *secretbox.Box) error {
	kd, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	enc, err := box.Seal(kd, []byte(keyName))
	if err != nil {
		return err
	}
	if err := datadir.WriteFileAtomic(filepath.Join(dir, keyName), enc, 0o600); err != nil {
		return err
	}
	return datadir.WriteFileAtomic(filepath.Join(dir, certName), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	return n
}
