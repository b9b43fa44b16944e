package notify

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	neturl "net/url"
	"strings"
	"time"

	"github.com/outpost-auth/outpost/internal/clock"
	"github.com/outpost-auth/outpost/webhook"
)

// SMSWebhook asks an SMS gateway to send a text: a JSON POST of
// {"id","to","text"} signed with the webhook package's header under
// Secret. The gateway must answer 2xx once it has taken the message.
type SMSWebhook struct {
	URL    string
	Secret []byte
	// Client is the HTTP client; nil is one with Timeout.
	Client *http.Client
	// Timeout bounds one request; 0 is 10 seconds.
	Timeout time.Duration
	// Now is the clock of the signature's time; nil is clock.System.
	Now func() time.Time
	// LinkBase is prefixed to a token-mode delivery's token to make the
	// link the SMS carries (a page that shows its QR code); "" sends the
	// token text itself.
	LinkBase string
}

// SMSRequest is the JSON body an SMS gateway receives.
type SMSRequest struct {
	// ID is stable for one delivery version: dedupe on it.
	ID   string `json:"id"`
	To   string `json:"to"`
	Text string `json:"text"`
}

// Notify sends m to m.Phone.
func (s *SMSWebhook) Notify(ctx context.Context, m Message) error {
	if m.Phone == "" {
		return fmt.Errorf("%w: the SMS webhook sends to phone numbers only", ErrNoChannel)
	}
	body, err := json.Marshal(SMSRequest{ID: m.ID, To: m.Phone, Text: SMSText(m, s.LinkBase)})
	if err != nil {
		return err
	}
	return PostSigned(ctx, s.Client, s.Timeout, s.URL, s.Secret, body, clock.Or(s.Now)(), m.ID)
}

// PostSigned POSTs the JSON body to url with the webhook signature of
// body at now under secret, and an Idempotency-Key header of id. A 2xx
// answer is success; 408, 429, 5xx and network errors (timeouts included)
// may be retried; other answers, redirects included (never followed),
// wrap ErrPermanent. client nil is a new client; timeout 0 is 10 seconds. The error names the status, never
// the body sent.
func PostSigned(ctx context.Context, client *http.Client, timeout time.Duration, url string, secret, body []byte, now time.Time, id string) error {
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	c := http.Client{}
	if client != nil {
		c = *client
	}
	// A redirect is not followed: the endpoint (a shipper's, a gateway's)
	// could point this server's signed POSTs, or a GET, at any host it can
	// reach, internal ones included. It is a final answer (a dead letter
	// the admin sees; set the URL the endpoint redirects to).
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	client = &c
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("%w: webhook URL: %w", ErrPermanent, err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "outpost-webhook/1")
	req.Header.Set(webhook.Header, webhook.Sign(secret, body, now))
	req.Header.Set("Idempotency-Key", id)
	resp, err := client.Do(req)
	if err != nil {
		var ue *neturl.Error // it repeats the URL, query and all
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return fmt.Errorf("notify: POST %s: %w", redactURL(url), err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	switch c := resp.StatusCode; {
	case c >= 200 && c < 300:
		return nil
	case c == http.StatusRequestTimeout || c == http.StatusTooManyRequests || c >= 500:
		return fmt.Errorf("notify: POST %s answered %s (will retry)", redactURL(url), resp.Status)
	default:
		return fmt.Errorf("%w: POST %s answered %s", ErrPermanent, redactURL(url), resp.Status)
	}
}

// redactURL drops a URL's query, where gateways often put their API keys.
func redactURL(u string) string {
	if i := strings.IndexAny(u, "?#"); i >= 0 {
		return u[:i] + "?…"
	}
	return u
}
