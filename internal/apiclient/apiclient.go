// Package apiclient is the Go client of the Outpost HTTP API, used by the
// `outpost admin` and `outpost field` commands and by the benchmarks. It
// speaks the same JSON as the server and turns error bodies into *Error.
package apiclient

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"
)

// MaxResponse bounds a response body read by the client.
const MaxResponse = 64 << 20

// Client calls one Outpost server.
type Client struct {
	BaseURL string
	Token   string
	HTTP    *http.Client
}

// Error is an API error response.
type Error struct {
	Status     int
	Code       string `json:"code"`
	Message    string `json:"message"`
	RetryAfter int    `json:"retry_after"`
}

func (e *Error) Error() string {
	return fmt.Sprintf("server said %d %s: %s", e.Status, e.Code, e.Message)
}

// New returns a client for baseURL that trusts the PEM CA file caFile in
// addition to the system roots (when caFile is not empty).
func New(baseURL, token, caFile string) (*Client, error) {
	if !strings.HasPrefix(baseURL, "https://") && !strings.HasPrefix(baseURL, "http://") {
		return nil, fmt.Errorf("server URL %q must start with https:// (or http:// for a --plaintext loopback server)", baseURL)
	}
	hc, err := NewHTTPClient(caFile, 5*time.Minute)
	if err != nil {
		return nil, err
	}
	return &Client{BaseURL: strings.TrimRight(baseURL, "/"), Token: token, HTTP: hc}, nil
}

// NewHTTPClient is the one way Outpost's clients (admin CLI, field sync)
// reach a server: TLS 1.2 or later, trusting the PEM CA file caFile (the
// server's DIR/tls/ca.pem) in addition to the system roots when it is not
// empty, with the given overall timeout.
func NewHTTPClient(caFile string, timeout time.Duration) (*http.Client, error) {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 256
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("reading the CA file: %w", err)
		}
		pool, err := x509.SystemCertPool()
		if err != nil || pool == nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("CA file %s holds no PEM certificate", caFile)
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	return &http.Client{Transport: tr, Timeout: timeout}, nil
}

// Do sends in (JSON-encoded, unless nil) to method path and decodes the
// response into out (unless nil). Non-2xx answers return *Error.
func (c *Client) Do(ctx context.Context, method, path string, in, out any) error {
	_, err := c.do(ctx, method, path, in, out, nil)
	return err
}

// Raw is like Do but returns the raw response body (for bundle files).
func (c *Client) Raw(ctx context.Context, method, path string, in any) ([]byte, error) {
	var raw []byte
	_, err := c.do(ctx, method, path, in, nil, &raw)
	return raw, err
}

func (c *Client) do(ctx context.Context, method, path string, in, out any, raw *[]byte) (int, error) {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return 0, err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.BaseURL+path, body)
	if err != nil {
		return 0, err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return 0, fmt.Errorf("calling %s: %w", c.BaseURL, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, MaxResponse+1))
	if err != nil {
		return resp.StatusCode, err
	}
	if len(b) > MaxResponse {
		return resp.StatusCode, errors.New("response larger than the client accepts")
	}
	if resp.StatusCode/100 != 2 {
		var env struct {
			Error Error `json:"error"`
		}
		if json.Unmarshal(b, &env) != nil || env.Error.Code == "" {
			return resp.StatusCode, &Error{Status: resp.StatusCode, Code: "http_error", Message: http.StatusText(resp.StatusCode)}
		}
		env.Error.Status = resp.StatusCode
		return resp.StatusCode, &env.Error
	}
	if raw != nil {
		*raw = b
	}
	if out != nil && len(b) > 0 {
		if err := json.Unmarshal(b, out); err != nil {
			return resp.StatusCode, fmt.Errorf("decoding the server's answer: %w", err)
		}
	}
	return resp.StatusCode, nil
}
