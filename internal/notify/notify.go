// Package notify sends a delivery's code to its recipient (issue 11,
// docs/deliveries.md "Notifiers"). A [Notifier] is one small interface
// with two back ends: [SMTP] for email addresses and [SMSWebhook] for
// phone numbers (a JSON POST to the operator's SMS gateway, signed like
// the shipper webhook). internal/outbox calls them; nothing else does:
//
//	n := &notify.SMTP{Addr: "mail.example:587", From: "parcels@example.org", StartTLS: &tls.Config{ServerName: "mail.example"}}
//	err := n.Notify(ctx, notify.Message{ID: id, Email: "ana@example.org", Delivery: "parcel-1", Code: code, NotAfter: due})
//	if errors.Is(err, notify.ErrPermanent) { /* refused for good: dead letter */ }
//
// Message.ID is stable for one delivery version (the outbox's idempotency
// key): it is the mail's Message-ID and the SMS request's id, so a
// receiver that sees it twice (after a crash between sending and marking
// sent) can drop the second. Errors never carry the code nor the contact.
package notify

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Message is what the recipient is told.
type Message struct {
	// ID is the stable message id (see the package comment).
	ID string
	// Exactly one of Email and Phone.
	Email, Phone string
	// Delivery is the delivery's id, shown to the recipient.
	Delivery string
	// Code is the one-time code, printed in groups of three.
	Code string
	// NotAfter is when the code stops working.
	NotAfter time.Time
	// Time is when the message is sent (the mail's Date).
	Time time.Time
	// Token, when set, is a server-signed token (token-mode deliveries,
	// filled by the issuer of tokens): the mail shows it as text, as a
	// link (LinkBase + Token) and as a PNG QR code attachment.
	Token string
}

// Notifier sends a message to its recipient.
type Notifier interface {
	// Notify sends m. An error wrapping ErrPermanent means the gateway
	// refused for good (retrying will not help); any other error may be
	// retried.
	Notify(ctx context.Context, m Message) error
}

// ErrPermanent: the gateway refused the message for good (SMTP 5xx, HTTP
// 4xx other than 408 and 429).
var ErrPermanent = errors.New("notify: refused for good")

// ErrNoChannel: the message's recipient kind has no notifier configured.
var ErrNoChannel = errors.New("notify: no notifier for this kind of recipient")

// Channels routes a message to the notifier of its recipient's kind.
type Channels struct {
	Email, Phone Notifier
}

// For returns the notifier that serves m's recipient, or nil.
func (c Channels) For(m Message) Notifier {
	switch {
	case m.Email != "":
		return c.Email
	case m.Phone != "":
		return c.Phone
	}
	return nil
}

// Notify sends m through the notifier of its kind (ErrNoChannel when none).
func (c Channels) Notify(ctx context.Context, m Message) error {
	n := c.For(m)
	if n == nil {
		return ErrNoChannel
	}
	return n.Notify(ctx, m)
}

// Grouped prints a code in groups of three digits ("123 456 789"); the
// courier's device ignores the spaces (internal/deliverycode).
func Grouped(code string) string {
	var b strings.Builder
	for i, r := range code {
		if i > 0 && i%3 == 0 {
			b.WriteByte(' ')
		}
		b.WriteRune(r)
	}
	return b.String()
}

// Text is the message's plain text: the code in groups, what to do with
// it and until when, and the token (with its link) when there is one.
func Text(m Message, linkBase string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Your delivery code for parcel %s: %s\n\n", m.Delivery, Grouped(m.Code))
	fmt.Fprintf(&b, "Tell it to the courier at your door, and to nobody else: nobody from the shipper will ask for it\n"+
		"by phone or message. It works once, until %s.\n", m.NotAfter.UTC().Format("2006-01-02 15:04 MST"))
	if m.Token != "" {
		fmt.Fprintf(&b, "\nOr show the courier this code (also attached as a QR image):\n%s\n", m.Token)
		if linkBase != "" {
			fmt.Fprintf(&b, "Link: %s%s\n", linkBase, m.Token)
		}
	}
	return b.String()
}

// SMSText is the short text of an SMS; for a token-mode delivery it also
// carries the token, as a link (linkBase + token) or as its text, so that
// the courier's device can scan or read it.
func SMSText(m Message, linkBase string) string {
	t := fmt.Sprintf("Delivery %s: your code is %s. Tell it to the courier at your door only. Valid until %s.",
		m.Delivery, Grouped(m.Code), m.NotAfter.UTC().Format("2006-01-02 15:04 MST"))
	if m.Token != "" {
		t += " Or show the courier: " + linkBase + m.Token
	}
	return t
}
