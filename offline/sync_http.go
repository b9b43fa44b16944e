package offline

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/outpost-auth/outpost/internal/apiclient"
	"github.com/outpost-auth/outpost/internal/clock"
	"github.com/outpost-auth/outpost/internal/syncproto"
)

// SyncClient talks to an Outpost server for [Store.Sync] and [Store.Enrol].
type SyncClient struct {
	// URL is the server's base URL (https://host:port).
	URL  string
	HTTP *http.Client
	// Retries is how often one upload is sent again, the very same bytes,
	// after a network error (default 3).
	Retries int
	// RefillWait is how long Sync waits in all for refills the server is
	// still computing: it syncs again after each answer's retry delay
	// until they arrive. 0: it does not wait (SyncReport.Pending lists
	// them; any later sync collects them).
	RefillWait time.Duration
}

// refillDelay is how long to wait before syncing again for pending
// refills, having waited already; 0: do not.
func (c *SyncClient) refillDelay(pending []PendingRefill, waited time.Duration) time.Duration {
	left := c.RefillWait - waited
	if len(pending) == 0 || left <= 0 {
		return 0
	}
	d := pending[0].RetryAfter
	for _, p := range pending[1:] {
		d = min(d, p.RetryAfter)
	}
	return min(max(d, time.Second), left)
}

// NewSyncClient returns a client for url, trusting the PEM CA file caFile
// in addition to the system roots when it is not empty.
func NewSyncClient(url, caFile string) (*SyncClient, error) {
	if !strings.HasPrefix(url, "https://") && !strings.HasPrefix(url, "http://") {
		return nil, fmt.Errorf("offline: server URL %q must start with https:// (or http:// for a loopback test server)", url)
	}
	hc, err := apiclient.NewHTTPClient(caFile, 10*time.Minute)
	if err != nil {
		return nil, fmt.Errorf("offline: %w", err)
	}
	return &SyncClient{URL: strings.TrimRight(url, "/"), HTTP: hc}, nil
}

// ServerError is an error answer of the server.
type ServerError struct {
	Status  int
	Code    string `json:"code"`
	Message string `json:"message"`
	// Acked is set with code "sync_gap": the entry the server's copy of
	// this device's log ends at.
	Acked *uint64 `json:"acked,omitempty"`
}

func (e *ServerError) Error() string {
	return fmt.Sprintf("server said %d %s: %s", e.Status, e.Code, e.Message)
}

func (e *ServerError) Unwrap() error { return ErrSyncRefused }

// post sends body to path and returns the answer's body; non-2xx answers
// are *ServerError. Network errors are retried with the same bytes.
func (c *SyncClient) post(ctx context.Context, path string, body []byte, limit int64) ([]byte, error) {
	tries := c.Retries
	if tries <= 0 {
		tries = 3
	}
	var err error
	for i := range tries {
		if i > 0 {
			if err := clock.Sleep(ctx, time.Duration(i)*500*time.Millisecond); err != nil {
				return nil, err
			}
		}
		var out []byte
		out, err = c.postOnce(ctx, path, body, limit)
		var se *ServerError
		if err == nil || errors.As(err, &se) || ctx.Err() != nil {
			return out, err
		}
	}
	return nil, err
}

func (c *SyncClient) postOnce(ctx context.Context, path string, body []byte, limit int64) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.URL+path, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return nil, fmt.Errorf("offline: calling %s: %w", c.URL, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, fmt.Errorf("offline: reading the answer of %s: %w", c.URL, err)
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("offline: the answer of %s is larger than %d bytes", c.URL, limit)
	}
	if resp.StatusCode/100 != 2 {
		var env struct {
			Error ServerError `json:"error"`
		}
		if json.Unmarshal(b, &env) != nil || env.Error.Code == "" {
			return nil, &ServerError{Status: resp.StatusCode, Code: "http_error", Message: http.StatusText(resp.StatusCode)}
		}
		env.Error.Status = resp.StatusCode
		return nil, &env.Error
	}
	return b, nil
}

// Sync runs sync rounds with the server until the server holds the whole
// device log: each round prepares an upload (PrepareUpload), posts it to
// /v1/sync and applies the signed answer (ApplyResponse). When the server
// says its copy of the log ends earlier than this device believes (it lost
// entries, e.g. restored from a backup, and recorded an incident), Sync
// sends the entries again from there, once. When the answer says refills
// are still being computed, Sync syncs again to collect them for up to
// c.RefillWait.
func (s *Store) Sync(ctx context.Context, c *SyncClient) (SyncReport, error) {
	rep := SyncReport{Advanced: []TokenKey{}, Revoked: []TokenKey{}, Imported: []ImportResult{}, Conflicts: []Conflict{}}
	rewound := false
	var waited time.Duration
	for round := 0; round < 100000; round++ {
		up, info, err := s.PrepareUpload(ctx, UploadOptions{})
		if err != nil {
			return rep, err
		}
		answer, err := c.post(ctx, "/v1/sync", up, syncproto.MaxResponseSize)
		var se *ServerError
		if errors.As(err, &se) && se.Code == "sync_gap" && se.Acked != nil && !rewound {
			rewound = true
			if err := s.rewindAck(ctx, *se.Acked); err != nil {
				return rep, err
			}
			continue
		}
		if err != nil {
			return rep, err
		}
		rep.Uploads++
		rep.Sent += info.Entries
		r, err := s.ApplyResponse(ctx, answer)
		if err != nil {
			return rep, err
		}
		rep.merge(r)
		if info.More {
			continue
		}
		d := c.refillDelay(rep.Pending, waited)
		if d <= 0 {
			return rep, nil
		}
		if err := clock.Sleep(ctx, d); err != nil {
			return rep, err
		}
		waited += d
	}
	return rep, errors.New("offline: sync did not finish")
}

// Enrol registers this device's key with the server using the one-time
// enrolment code an administrator created for this device id
// ('outpost admin device enrol-code'). The code is sent once, over TLS;
// the signature proves this device holds the private key.
func (s *Store) Enrol(ctx context.Context, c *SyncClient, code string) error {
	pub := s.id.Public
	e := syncproto.Enrol{Device: s.device, PublicKey: pub, Code: code,
		Sig: ed25519.Sign(s.id.Private, syncproto.EnrolMessage(s.device, pub, code))}
	body, err := json.Marshal(e)
	if err != nil {
		return err
	}
	_, err = c.post(ctx, "/v1/devices/enrol", body, 1<<20)
	return err
}
