package outbox

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"net/url"
	"time"

	"github.com/outpost-auth/outpost/internal/audit"
	"github.com/outpost-auth/outpost/internal/eventlog"
	"github.com/outpost-auth/outpost/internal/store"
)

// Limits of a realm's webhook.
const (
	MaxWebhookURL   = 2048
	MinWebhookKey   = 16
	MaxWebhookKey   = 128
	generatedKeyLen = 32
)

// Webhook is a realm's shipper webhook as the admin sees it: no secret.
type Webhook struct {
	Realm, URL string
	UpdatedAt  time.Time
}

// SetWebhook sets realm's shipper webhook, audited (webhook.set, with the
// URL's host only), and returns the secret events will be signed with:
// secret when given (MinWebhookKey to MaxWebhookKey bytes), else a new
// random one (base64url of 32 bytes from crypto/rand). The secret is stored
// sealed and is shown this once. The URL is https, or http to a loopback
// address (a relay on the same host).
func (s *Service) SetWebhook(ctx context.Context, realm, rawURL string, secret []byte, actor string) (Webhook, []byte, error) {
	u, err := checkWebhookURL(rawURL)
	if err != nil {
		return Webhook{}, nil, err
	}
	if secret == nil {
		var b [generatedKeyLen]byte
		if _, err := rand.Read(b[:]); err != nil {
			return Webhook{}, nil, err
		}
		secret = []byte(base64.RawURLEncoding.EncodeToString(b[:]))
	} else if len(secret) < MinWebhookKey || len(secret) > MaxWebhookKey {
		return Webhook{}, nil, fmt.Errorf("%w: the webhook secret must be %d to %d bytes (or leave it out to have one made)", ErrInvalid, MinWebhookKey, MaxWebhookKey)
	}
	sealed, err := s.webhookBox().Seal(secret, []byte(realm))
	if err != nil {
		return Webhook{}, nil, err
	}
	now := s.now()
	data, _ := json.Marshal(map[string]any{"realm": realm, "host": u.Host})
	e := eventlog.Entry{Time: now, Kind: audit.WebhookSet, Actor: actor, Subject: realm, Data: data}
	if err := s.Store.SetRealmWebhook(ctx, store.RealmWebhook{Realm: realm, URL: rawURL, Secret: sealed, UpdatedAt: now}, e); err != nil {
		return Webhook{}, nil, err
	}
	return Webhook{Realm: realm, URL: rawURL, UpdatedAt: now}, secret, nil
}

// Webhook returns realm's shipper webhook (store.ErrNotFound when none).
func (s *Service) Webhook(ctx context.Context, realm string) (Webhook, error) {
	w, err := s.Store.GetRealmWebhook(ctx, realm)
	if err != nil {
		return Webhook{}, err
	}
	return Webhook{Realm: w.Realm, URL: w.URL, UpdatedAt: w.UpdatedAt}, nil
}

func checkWebhookURL(raw string) (*url.URL, error) {
	bad := func(why string) (*url.URL, error) {
		return nil, fmt.Errorf("%w: the webhook URL %s", ErrInvalid, why)
	}
	if len(raw) > MaxWebhookURL {
		return bad(fmt.Sprintf("is longer than %d bytes", MaxWebhookURL))
	}
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" || u.User != nil || u.Fragment != "" {
		return bad("must be absolute (https://host/path), without user:password@ or #fragment")
	}
	switch u.Scheme {
	case "https":
	case "http":
		if ip := net.ParseIP(u.Hostname()); u.Hostname() != "localhost" && (ip == nil || !ip.IsLoopback()) {
			return bad("must use https (http only to a loopback address)")
		}
	default:
		return bad("must use https")
	}
	return u, nil
}
