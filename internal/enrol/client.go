package enrol

import (
	"bufio"
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"time"
)

// Client is the device side of onboarding (`outpost device enrol|renew|
// whoami`): it talks to the device listener over TLS 1.3, trusting only
// Roots (the exported device root).
//
// Enrol runs first contact on ONE connection: it asks for a challenge,
// reads the connection's exporter value, signs the nonce and the exporter
// with Key, and sends the CSR and the signature on the same connection, so
// the server sees its own exporter value in the proof.
type Client struct {
	// Server is the device listener's URL, https://host:port.
	Server string
	Roots  *x509.CertPool
	// Key is the device key (the label's).
	Key crypto.Signer
	// Certificate is the device's current certificate, for Renew and Whoami.
	Certificate *tls.Certificate
	// Realm is the device's realm ("" is the default realm).
	Realm string
	// Now is the device's clock for checking the server's certificate;
	// nil is the system clock.
	Now func() time.Time
}

// MaxAnswer bounds a server answer the client reads.
const MaxAnswer = 1 << 20

// conn is one TLS 1.3 connection to the server.
type conn struct {
	tc *tls.Conn
	br *bufio.Reader
	u  *url.URL
}

func (c *Client) dial(ctx context.Context) (*conn, error) {
	u, err := url.Parse(c.Server)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("enrol: server %q: give the device listener's https://HOST:PORT", c.Server)
	}
	cfg := &tls.Config{RootCAs: c.Roots, MinVersion: tls.VersionTLS13, ServerName: u.Hostname(), Time: c.Now}
	if c.Certificate != nil {
		cfg.Certificates = []tls.Certificate{*c.Certificate}
	}
	d := tls.Dialer{NetDialer: &net.Dialer{Timeout: 10 * time.Second}, Config: cfg}
	nc, err := d.DialContext(ctx, "tcp", u.Host)
	if err != nil {
		return nil, fmt.Errorf("enrol: connecting to %s: %w", u.Host, err)
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = nc.SetDeadline(dl)
	}
	return &conn{tc: nc.(*tls.Conn), br: bufio.NewReader(nc), u: u}, nil
}

func (c *conn) close() error { return c.tc.Close() }

// call sends one request on the connection and returns the answer's body;
// an error answer becomes an error carrying its code and message.
func (c *conn) call(method, path string, in any) ([]byte, error) {
	var body io.Reader = http.NoBody
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return nil, err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, c.u.Scheme+"://"+c.u.Host+path, body)
	if err != nil {
		return nil, err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if err := req.Write(c.tc); err != nil {
		return nil, fmt.Errorf("enrol: sending %s: %w", path, err)
	}
	resp, err := http.ReadResponse(c.br, req)
	if err != nil {
		return nil, fmt.Errorf("enrol: reading the answer to %s (a refused certificate ends the connection): %w", path, err)
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(io.LimitReader(resp.Body, MaxAnswer))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode >= 300 {
		var e struct {
			Error struct{ Code, Message string } `json:"error"`
		}
		if json.Unmarshal(out, &e) == nil && e.Error.Code != "" {
			return nil, &ServerError{Status: resp.StatusCode, Code: e.Error.Code, Message: e.Error.Message}
		}
		return nil, &ServerError{Status: resp.StatusCode, Code: "http", Message: http.StatusText(resp.StatusCode)}
	}
	return out, nil
}

// ServerError is a refusal from the server.
type ServerError struct {
	Status        int
	Code, Message string
}

func (e *ServerError) Error() string {
	return fmt.Sprintf("the server refused (%d %s): %s", e.Status, e.Code, e.Message)
}

// Answer is an issued certificate as the server sends it.
type Answer struct {
	Realm       string    `json:"realm"`
	Serial      string    `json:"serial"`
	CertSerial  string    `json:"cert_serial"`
	NotAfter    time.Time `json:"not_after"`
	Certificate string    `json:"certificate_pem"`
}

// Enrol runs first contact for serial and returns the issued certificate.
func (c *Client) Enrol(ctx context.Context, serial string) (Answer, error) {
	cn, err := c.dial(ctx)
	if err != nil {
		return Answer{}, err
	}
	defer cn.close()
	raw, err := cn.call("POST", "/v1/enrol/challenge", map[string]string{"realm": c.Realm, "serial": serial})
	if err != nil {
		return Answer{}, err
	}
	var ch struct {
		Nonce string `json:"nonce"`
	}
	if err := json.Unmarshal(raw, &ch); err != nil {
		return Answer{}, fmt.Errorf("enrol: challenge answer: %w", err)
	}
	nonce, err := hex.DecodeString(ch.Nonce)
	if err != nil {
		return Answer{}, fmt.Errorf("enrol: challenge nonce: %w", err)
	}
	st := cn.tc.ConnectionState()
	exp, err := st.ExportKeyingMaterial(ExporterLabel, nil, ExporterLen)
	if err != nil {
		return Answer{}, fmt.Errorf("enrol: TLS exporter: %w", err)
	}
	sig, err := SignProof(c.Key, nonce, exp)
	if err != nil {
		return Answer{}, err
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: serial}}, c.Key)
	if err != nil {
		return Answer{}, fmt.Errorf("enrol: CSR: %w", err)
	}
	raw, err = cn.call("POST", "/v1/enrol", map[string]any{"realm": c.Realm, "serial": serial, "nonce": ch.Nonce, "csr": csr, "signature": sig})
	if err != nil {
		return Answer{}, err
	}
	return decodeAnswer(raw)
}

func decodeAnswer(raw []byte) (Answer, error) {
	var a Answer
	if err := json.Unmarshal(raw, &a); err != nil || a.Certificate == "" {
		return Answer{}, errors.New("enrol: the server's answer holds no certificate")
	}
	return a, nil
}

// Renew renews the device's certificate (Certificate, which may have
// expired within the server's grace) for the same key.
func (c *Client) Renew(ctx context.Context) (Answer, error) {
	if c.Certificate == nil {
		return Answer{}, errors.New("enrol: renewal needs the current certificate")
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, c.Key)
	if err != nil {
		return Answer{}, fmt.Errorf("enrol: CSR: %w", err)
	}
	cn, err := c.dial(ctx)
	if err != nil {
		return Answer{}, err
	}
	defer cn.close()
	raw, err := cn.call("POST", "/v1/device/renew", map[string]any{"csr": csr})
	if err != nil {
		return Answer{}, err
	}
	return decodeAnswer(raw)
}

// Whoami asks the server who the device's certificate names (raw JSON).
func (c *Client) Whoami(ctx context.Context) ([]byte, error) {
	cn, err := c.dial(ctx)
	if err != nil {
		return nil, err
	}
	defer cn.close()
	return cn.call("GET", "/v1/device/whoami", nil)
}
