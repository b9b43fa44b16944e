package enrol

import (
	"crypto/x509"
	"encoding/asn1"
	"encoding/base64"
	"errors"
	"fmt"
)

// PKCS#7 / CMS "certs-only" (RFC 7030 section 4.1.3, RFC 5652 section 5):
// a SignedData with no content, no signer and the certificates. It is a
// format, not a signature, so it is written here with encoding/asn1.

var (
	oidSignedData = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 7, 2}
	oidData       = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 7, 1}
)

type contentInfo struct {
	ContentType asn1.ObjectIdentifier
	Content     asn1.RawValue
}

type encapContent struct {
	ContentType asn1.ObjectIdentifier
}

type signedData struct {
	Version          int
	DigestAlgorithms asn1.RawValue
	Encap            encapContent
	Certificates     asn1.RawValue
	SignerInfos      asn1.RawValue
}

var emptySet = asn1.RawValue{Class: asn1.ClassUniversal, Tag: asn1.TagSet, IsCompound: true, Bytes: []byte{}}

// CertsOnly encodes DER certificates as a PKCS#7 certs-only message, DER.
func CertsOnly(certs [][]byte) []byte {
	var all []byte
	for _, c := range certs {
		all = append(all, c...)
	}
	sd, err := asn1.Marshal(signedData{
		Version:          1,
		DigestAlgorithms: emptySet,
		Encap:            encapContent{ContentType: oidData},
		Certificates:     asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 0, IsCompound: true, Bytes: all},
		SignerInfos:      emptySet,
	})
	if err != nil {
		panic("enrol: encoding certs-only: " + err.Error())
	}
	out, err := asn1.Marshal(contentInfo{ContentType: oidSignedData,
		Content: asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 0, IsCompound: true, Bytes: sd}})
	if err != nil {
		panic("enrol: encoding certs-only: " + err.Error())
	}
	return out
}

// CertsOnlyBase64 is CertsOnly in base64 with 64-character lines: an EST answer body.
func CertsOnlyBase64(certs [][]byte) []byte {
	s := base64.StdEncoding.EncodeToString(CertsOnly(certs))
	var out []byte
	for len(s) > 64 {
		out = append(append(out, s[:64]...), '\n')
		s = s[64:]
	}
	return append(append(out, s...), '\n')
}

// ErrPKCS7 means a certs-only message does not decode.
var ErrPKCS7 = errors.New("enrol: not a PKCS#7 certs-only message")

// ParseCertsOnly decodes a PKCS#7 certs-only message (DER) into its
// certificates, in order. Trailing data is refused.
func ParseCertsOnly(der []byte) ([]*x509.Certificate, error) {
	var ci contentInfo
	if rest, err := asn1.Unmarshal(der, &ci); err != nil || len(rest) > 0 {
		return nil, fmt.Errorf("%w: outer structure", ErrPKCS7)
	}
	if !ci.ContentType.Equal(oidSignedData) || ci.Content.Class != asn1.ClassContextSpecific || ci.Content.Tag != 0 {
		return nil, fmt.Errorf("%w: not SignedData", ErrPKCS7)
	}
	var sd signedData
	if rest, err := asn1.Unmarshal(ci.Content.Bytes, &sd); err != nil || len(rest) > 0 {
		return nil, fmt.Errorf("%w: SignedData", ErrPKCS7)
	}
	if sd.Certificates.Class != asn1.ClassContextSpecific || sd.Certificates.Tag != 0 {
		return nil, fmt.Errorf("%w: no certificates", ErrPKCS7)
	}
	var out []*x509.Certificate
	for rest := sd.Certificates.Bytes; len(rest) > 0; {
		var raw asn1.RawValue
		var err error
		if rest, err = asn1.Unmarshal(rest, &raw); err != nil {
			return nil, fmt.Errorf("%w: a certificate", ErrPKCS7)
		}
		c, err := x509.ParseCertificate(raw.FullBytes)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrPKCS7, err)
		}
		out = append(out, c)
	}
	return out, nil
}
