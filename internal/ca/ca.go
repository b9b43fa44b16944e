// Package ca is Outpost's issuing certificate authority for onboarded
// devices (docs/onboarding.md): a root and an issuing CA, both ECDSA P-256
// keys from crypto/rand, kept in the database (store.CAStore) with their
// private keys sealed under a key derived from the master key
// (internal/secretbox), so a copied database without the master key yields
// no CA key.
//
// Load the CA once per process, creating it the first time:
//
//	a, created, err := ca.LoadOrCreate(ctx, st, master, "serve", now)
//
// then issue a device's short-lived client certificate, a certificate for
// the device listener, or check a certificate a device presents:
//
//	der, err := a.IssueDevice(pub, realm, serial, notBefore, notAfter)
//	get := a.ServerCertificates(names, now)       // tls.Config.GetCertificate
//	id, err := a.VerifyDevice(leaf, at)           // chain, clientAuth, identity
//
// A device certificate names its device in one URI SAN,
// urn:outpost:device:<realm>:<serial> ([DeviceURI]); it has ExtKeyUsage
// clientAuth only, KeyUsage digitalSignature, no CA flag and a random
// 128-bit serial number. The rules of who gets one (proof of possession,
// the roster's vouch, revocation, renewal and its grace) are
// internal/enrol's; this package only signs and checks signatures.
//
// The device listener's own TLS certificate is issued by the same issuing
// CA (ServerCertificates, a fresh in-memory key renewed before expiry), so
// a device needs one file, the root ('outpost ca export-root'), for both
// directions.
package ca

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/outpost-auth/outpost/internal/audit"
	"github.com/outpost-auth/outpost/internal/eventlog"
	"github.com/outpost-auth/outpost/internal/keys"
	"github.com/outpost-auth/outpost/internal/secretbox"
	"github.com/outpost-auth/outpost/internal/store"
	"github.com/outpost-auth/outpost/internal/tlsboot"
)

// Lifetimes of the CA's own certificates.
const (
	RootValidity    = 20 * 365 * 24 * time.Hour
	IssuingValidity = 10 * 365 * 24 * time.Hour
	// ServerValidity is the device listener certificate's lifetime; it is
	// renewed when less than a third is left.
	ServerValidity = 7 * 24 * time.Hour
)

// URIPrefix starts every device identity URI.
const URIPrefix = "urn:outpost:device:"

// ErrNotDevice means a certificate is not a device certificate of this CA
// (another CA, a broken chain, expired at the time checked, not clientAuth,
// or without exactly one device URI).
var ErrNotDevice = errors.New("ca: not a device certificate of this CA")

// Authority is a loaded CA. It is safe for concurrent use.
type Authority struct {
	Root, Issuing *x509.Certificate
	key           crypto.Signer
	roots, inter  *x509.CertPool
}

// box seals the CA's private keys; the additional data binds each to its
// row's name and certificate.
func box(m *keys.Master) *secretbox.Box { return secretbox.New(m, 0, "ca-private-keys") }

func sealAD(name string, cert []byte) []byte {
	sum := sha256.Sum256(cert)
	return append([]byte(name+"\x00"), sum[:]...)
}

// LoadOrCreate loads the CA from st, creating and storing it (audited as
// ca.init by actor) when none is stored. created says whether this call made it.
func LoadOrCreate(ctx context.Context, st store.CAStore, m *keys.Master, actor string, now time.Time) (*Authority, bool, error) {
	if a, err := Load(ctx, st, m); !errors.Is(err, store.ErrNotFound) {
		return a, false, err
	}
	root, issuing, err := generate(m, now)
	if err != nil {
		return nil, false, err
	}
	e := eventlog.Entry{Time: now, Kind: audit.CAInit, Actor: actor, Subject: "ca",
		Data: []byte(fmt.Sprintf(`{"root_sha256":%q}`, Fingerprint(root.Cert)))}
	created, err := st.InitCA(ctx, root, issuing, e)
	if err != nil {
		return nil, false, fmt.Errorf("ca: storing the new CA: %w", err)
	}
	a, err := Load(ctx, st, m)
	return a, created, err
}

// Load loads the stored CA; store.ErrNotFound when there is none.
func Load(ctx context.Context, st store.CAStore, m *keys.Master) (*Authority, error) {
	rk, ik, err := st.CAKeys(ctx)
	if err != nil {
		return nil, err
	}
	root, err := x509.ParseCertificate(rk.Cert)
	if err != nil {
		return nil, fmt.Errorf("ca: stored root: %w", err)
	}
	iss, err := x509.ParseCertificate(ik.Cert)
	if err != nil {
		return nil, fmt.Errorf("ca: stored issuing CA: %w", err)
	}
	if err := iss.CheckSignatureFrom(root); err != nil {
		return nil, fmt.Errorf("ca: the stored issuing CA is not signed by the stored root: %w", err)
	}
	der, err := box(m).Open(ik.SealedKey, sealAD(ik.Name, ik.Cert))
	if err != nil {
		return nil, fmt.Errorf("ca: the issuing key does not open under this master key: %w", err)
	}
	k, err := x509.ParsePKCS8PrivateKey(der)
	clear(der)
	if err != nil {
		return nil, fmt.Errorf("ca: issuing key: %w", err)
	}
	signer, ok := k.(crypto.Signer)
	if !ok || !publicEqual(signer.Public(), iss.PublicKey) {
		return nil, errors.New("ca: the issuing key does not match the issuing certificate")
	}
	a := &Authority{Root: root, Issuing: iss, key: signer, roots: x509.NewCertPool(), inter: x509.NewCertPool()}
	a.roots.AddCert(root)
	a.inter.AddCert(iss)
	return a, nil
}

func publicEqual(a, b crypto.PublicKey) bool {
	x, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && x.Equal(b)
}

func generate(m *keys.Master, now time.Time) (root, issuing store.CAKey, err error) {
	rootKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return root, issuing, err
	}
	issKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return root, issuing, err
	}
	rootTmpl := &x509.Certificate{
		SerialNumber: serialNumber(), Subject: pkix.Name{CommonName: "Outpost device root CA", Organization: []string{"Outpost"}},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(RootValidity),
		IsCA: true, BasicConstraintsValid: true, MaxPathLen: 1,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	rootDER, err := x509.CreateCertificate(rand.Reader, rootTmpl, rootTmpl, &rootKey.PublicKey, rootKey)
	if err != nil {
		return root, issuing, err
	}
	rootCert, _ := x509.ParseCertificate(rootDER)
	issTmpl := &x509.Certificate{
		SerialNumber: serialNumber(), Subject: pkix.Name{CommonName: "Outpost device issuing CA", Organization: []string{"Outpost"}},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(IssuingValidity),
		IsCA: true, BasicConstraintsValid: true, MaxPathLenZero: true,
		KeyUsage:    x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth},
	}
	issDER, err := x509.CreateCertificate(rand.Reader, issTmpl, rootCert, &issKey.PublicKey, rootKey)
	if err != nil {
		return root, issuing, err
	}
	b := box(m)
	seal := func(name string, cert []byte, k *ecdsa.PrivateKey) (store.CAKey, error) {
		der, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			return store.CAKey{}, err
		}
		sealed, err := b.Seal(der, sealAD(name, cert))
		clear(der)
		return store.CAKey{Name: name, Cert: cert, SealedKey: sealed, CreatedAt: now}, err
	}
	if root, err = seal("root", rootDER, rootKey); err != nil {
		return root, issuing, err
	}
	issuing, err = seal("issuing", issDER, issKey)
	return root, issuing, err
}

// serialNumber is a random positive 128-bit certificate serial number.
func serialNumber() *big.Int {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		panic("ca: crypto/rand failed: " + err.Error())
	}
	b[0] &= 0x7f // positive in DER without a leading zero byte
	b[0] |= 0x40 // and always 16 bytes long
	return new(big.Int).SetBytes(b)
}

// Fingerprint is the SHA-256 of a DER certificate, in hex.
func Fingerprint(der []byte) string {
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:])
}

// StoredRootPEM reads the stored root certificate in PEM without the
// master key (the root is no secret); store.ErrNotFound when there is no CA.
func StoredRootPEM(ctx context.Context, st store.CAStore) ([]byte, error) {
	root, _, err := st.CAKeys(ctx)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: root.Cert}), nil
}

// RootPEM is the root certificate in PEM: what devices trust.
func (a *Authority) RootPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: a.Root.Raw})
}

// CACerts are the issuing CA and the root, DER, in that order (EST cacerts).
func (a *Authority) CACerts() [][]byte { return [][]byte{a.Issuing.Raw, a.Root.Raw} }

// DeviceURI is the identity URI of realm's device serial.
func DeviceURI(realm, serial string) *url.URL {
	return &url.URL{Scheme: "urn", Opaque: "outpost:device:" + realm + ":" + serial}
}

// parseDeviceURI returns the realm and serial of a device URI.
func parseDeviceURI(u *url.URL) (realm, serial string, ok bool) {
	rest, ok := strings.CutPrefix(u.String(), URIPrefix)
	if !ok {
		return "", "", false
	}
	realm, serial, ok = strings.Cut(rest, ":")
	return realm, serial, ok && realm != "" && serial != "" && !strings.Contains(serial, ":")
}

// IssueDevice signs a client certificate for pub naming realm's device
// serial, valid from notBefore to notAfter. It returns the DER and the
// serial number in hex.
func (a *Authority) IssueDevice(pub crypto.PublicKey, realm, serial string, notBefore, notAfter time.Time) ([]byte, string, error) {
	sn := serialNumber()
	tmpl := &x509.Certificate{
		SerialNumber: sn, Subject: pkix.Name{CommonName: serial},
		NotBefore: notBefore, NotAfter: notAfter,
		URIs:                  []*url.URL{DeviceURI(realm, serial)},
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true, IsCA: false,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, a.Issuing, pub, a.key)
	if err != nil {
		return nil, "", fmt.Errorf("ca: signing the certificate of %s: %w", serial, err)
	}
	return der, hex.EncodeToString(sn.Bytes()), nil
}

// Identity is who a verified device certificate names.
type Identity struct {
	Realm, Serial string
	Cert          *x509.Certificate
}

// VerifyDevice checks that leaf chains to this CA's root through its
// issuing CA at time at, is for clientAuth and names exactly one device.
// Every failure wraps ErrNotDevice.
func (a *Authority) VerifyDevice(leaf *x509.Certificate, at time.Time) (Identity, error) {
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: a.roots, Intermediates: a.inter, CurrentTime: at,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		return Identity{}, fmt.Errorf("%w: %w", ErrNotDevice, err)
	}
	if len(leaf.URIs) != 1 || leaf.IsCA {
		return Identity{}, fmt.Errorf("%w: it names no single device", ErrNotDevice)
	}
	realm, serial, ok := parseDeviceURI(leaf.URIs[0])
	if !ok {
		return Identity{}, fmt.Errorf("%w: its URI is not %s<realm>:<serial>", ErrNotDevice, URIPrefix)
	}
	return Identity{Realm: realm, Serial: serial, Cert: leaf}, nil
}

// IssuedHere reports whether leaf's signature is by this issuing CA,
// whatever its dates: a certificate this CA issued.
func (a *Authority) IssuedHere(leaf *x509.Certificate) bool {
	return leaf.CheckSignatureFrom(a.Issuing) == nil
}

// ServerCertificates returns a tls.Config.GetCertificate for the device
// listener: a certificate for names (DNS names or IP addresses) issued by
// this CA to a fresh in-memory ECDSA key, renewed when less than a third
// of ServerValidity is left by now's clock. Nothing of it is stored.
func (a *Authority) ServerCertificates(names []string, now func() time.Time) func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	var mu sync.Mutex
	var cur *tls.Certificate
	return func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
		mu.Lock()
		defer mu.Unlock()
		t := now()
		if cur != nil && cur.Leaf.NotAfter.Sub(t) > ServerValidity/3 {
			return cur, nil
		}
		c, err := a.serverCert(names, t)
		if err != nil {
			return nil, err
		}
		cur = c
		return cur, nil
	}
}

func (a *Authority) serverCert(names []string, now time.Time) (*tls.Certificate, error) {
	if len(names) == 0 {
		return nil, errors.New("ca: the device listener's certificate needs a name")
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serialNumber(), Subject: pkix.Name{CommonName: names[0]},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(ServerValidity),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	tlsboot.SetNames(tmpl, names)
	der, err := x509.CreateCertificate(rand.Reader, tmpl, a.Issuing, &key.PublicKey, a.key)
	if err != nil {
		return nil, err
	}
	leaf, _ := x509.ParseCertificate(der)
	return &tls.Certificate{Certificate: [][]byte{der, a.Issuing.Raw}, PrivateKey: key, Leaf: leaf}, nil
}
