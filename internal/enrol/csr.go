package enrol

import (
	"crypto/x509"
	"encoding/asn1"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// MaxCSR bounds a PKCS#10 request, DER. A P-256 or Ed25519 request with a
// challenge password is a few hundred bytes.
const MaxCSR = 4 << 10

// MaxESTBody bounds an EST request body (base64 of a CSR, with line breaks).
const MaxESTBody = 8 << 10

// ErrCSR means a certificate request was refused: malformed, badly signed,
// or asking for more than a device certificate (names, CA, extensions).
var ErrCSR = errors.New("enrol: certificate request refused")

// CSR is a certificate request that passed [ParseCSR]: it is well formed,
// signed by its own key, and asks for nothing but that key (and perhaps a
// common name, checked by the service against the serial).
type CSR struct {
	Req *x509.CertificateRequest
	// SPKI is the request's public key as PKIX SubjectPublicKeyInfo, DER.
	SPKI []byte
	// ChallengePassword is the PKCS#9 challengePassword attribute's value
	// ("" when absent): EST's one-time enrolment token (see EnrolEST).
	ChallengePassword string
}

var (
	oidChallengePassword = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 7}
	oidExtensionRequest  = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 14}
	oidCommonName        = asn1.ObjectIdentifier{2, 5, 4, 3}
	oidSAN               = asn1.ObjectIdentifier{2, 5, 29, 17}
	oidBasicConstraints  = asn1.ObjectIdentifier{2, 5, 29, 19}
)

// tbsRequest is CertificationRequestInfo (RFC 2986), for its attributes.
type tbsRequest struct {
	Version    int
	Subject    asn1.RawValue
	PublicKey  asn1.RawValue
	Attributes []asn1.RawValue `asn1:"tag:0"`
}

type attribute struct {
	Type   asn1.ObjectIdentifier
	Values []asn1.RawValue `asn1:"set"`
}

func csrError(format string, a ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrCSR}, a...)...)
}

// ParseCSR decodes a DER PKCS#10 request and checks that a device may ask
// for it: at most MaxCSR bytes, no trailing data, a valid self-signature,
// a subject of at most a common name, no extension at all (no names, no
// basicConstraints, no key usage: the CA decides those) and no attribute
// but an empty extension request and one challengePassword. Every refusal
// wraps ErrCSR and says what to remove.
func ParseCSR(der []byte) (*CSR, error) {
	if len(der) == 0 || len(der) > MaxCSR {
		return nil, csrError("a request is 1 to %d bytes of DER, this one is %d", MaxCSR, len(der))
	}
	req, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return nil, csrError("not a PKCS#10 request: %v", err)
	}
	if err := req.CheckSignature(); err != nil {
		return nil, csrError("its signature does not verify with its own key: %v", err)
	}
	for _, ext := range req.Extensions {
		switch {
		case ext.Id.Equal(oidSAN):
			return nil, csrError("it asks for subject alternative names; the CA names the device itself (remove subjectAltName)")
		case ext.Id.Equal(oidBasicConstraints):
			return nil, csrError("it asks for basicConstraints (a CA?); a device certificate is never a CA (remove it)")
		default:
			return nil, csrError("it asks for extension %v; ask for none, the CA sets them", ext.Id)
		}
	}
	for _, n := range req.Subject.Names {
		if !n.Type.Equal(oidCommonName) {
			return nil, csrError("its subject holds %v; give at most a common name (the serial)", n.Type)
		}
	}
	if len(req.Subject.Names) > 1 {
		return nil, csrError("its subject holds %d names; give at most one common name (the serial)", len(req.Subject.Names))
	}
	var tbs tbsRequest
	if rest, err := asn1.Unmarshal(req.RawTBSCertificateRequest, &tbs); err != nil || len(rest) > 0 {
		return nil, csrError("its request info does not decode")
	}
	c := &CSR{Req: req, SPKI: req.RawSubjectPublicKeyInfo}
	seenPassword := false
	for _, raw := range tbs.Attributes {
		var a attribute
		if rest, err := asn1.Unmarshal(raw.FullBytes, &a); err != nil || len(rest) > 0 {
			return nil, csrError("an attribute does not decode")
		}
		switch {
		case a.Type.Equal(oidExtensionRequest):
			// Extensions were checked above (Go parses them from here).
		case a.Type.Equal(oidChallengePassword):
			if seenPassword || len(a.Values) != 1 {
				return nil, csrError("give one challengePassword with one value")
			}
			seenPassword = true
			pw, err := directoryString(a.Values[0])
			if err != nil {
				return nil, err
			}
			c.ChallengePassword = pw
		default:
			return nil, csrError("it carries attribute %v; only challengePassword is read", a.Type)
		}
	}
	return c, nil
}

// directoryString reads a challengePassword value: PrintableString,
// UTF8String, IA5String or (ASCII) TeletexString, at most 256 bytes.
func directoryString(v asn1.RawValue) (string, error) {
	if v.Class != asn1.ClassUniversal || len(v.Bytes) > 256 {
		return "", csrError("the challengePassword is not a short string")
	}
	switch v.Tag {
	case asn1.TagPrintableString, asn1.TagUTF8String, asn1.TagIA5String, asn1.TagT61String:
	default:
		return "", csrError("the challengePassword has string type %d; use a PrintableString or UTF8String", v.Tag)
	}
	s := string(v.Bytes)
	if !utf8.ValidString(s) {
		return "", csrError("the challengePassword is not UTF-8")
	}
	return s, nil
}

// DecodeESTBody decodes an EST request body (RFC 7030 section 4.2.1: a
// base64 PKCS#10 request, line breaks allowed) and parses it with
// ParseCSR. Bodies over MaxESTBody are refused before decoding.
func DecodeESTBody(body []byte) (*CSR, error) {
	if len(body) > MaxESTBody {
		return nil, csrError("an EST body is at most %d bytes", MaxESTBody)
	}
	clean := strings.Map(func(r rune) rune {
		switch r {
		case '\r', '\n', ' ', '\t':
			return -1
		}
		return r
	}, string(body))
	der, err := base64.StdEncoding.DecodeString(clean)
	if err != nil {
		return nil, csrError("the EST body is not base64 (send the DER request base64-encoded, Content-Type application/pkcs10)")
	}
	return ParseCSR(der)
}
