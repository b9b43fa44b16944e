package notify

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"mime"
	"mime/multipart"
	"net"
	"net/mail"
	"net/smtp"
	"net/textproto"
	"strings"
	"time"

	"github.com/outpost-auth/outpost/internal/qr"
)

// SMTP sends messages by mail, one SMTP session each (net/smtp).
type SMTP struct {
	// Addr is the server's host:port.
	Addr string
	// From is the sender address; its domain names the Message-ID.
	From string
	// StartTLS, when set, makes STARTTLS required, with this configuration
	// (set ServerName); without it the session is plain (a relay on
	// localhost or in a private network).
	StartTLS *tls.Config
	// Hello is the EHLO name; "" is "localhost".
	Hello string
	// Timeout bounds one session; 0 is 30 seconds.
	Timeout time.Duration
	// LinkBase is prefixed to a token to make its link.
	LinkBase string
}

// Notify sends m to m.Email. A 5xx answer wraps ErrPermanent.
func (s *SMTP) Notify(ctx context.Context, m Message) error {
	if m.Email == "" {
		return fmt.Errorf("%w: the SMTP notifier sends to email addresses only", ErrNoChannel)
	}
	msg, err := s.Compose(m)
	if err != nil {
		return err
	}
	err = s.send(ctx, m.Email, msg)
	if err == nil {
		return nil
	}
	// The server's text may repeat the address: never let it out.
	text := strings.ReplaceAll(err.Error(), m.Email, "<recipient>")
	var te *textproto.Error
	if errors.As(err, &te) && te.Code >= 500 {
		return fmt.Errorf("%w: SMTP server %s answered %s", ErrPermanent, s.Addr, text)
	}
	return fmt.Errorf("notify: SMTP server %s: %s", s.Addr, text)
}

func (s *SMTP) send(ctx context.Context, to string, msg []byte) error {
	timeout := s.Timeout
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	conn, err := (&net.Dialer{}).DialContext(ctx, "tcp", s.Addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	host, _, _ := net.SplitHostPort(s.Addr)
	c, err := smtp.NewClient(conn, host)
	if err != nil {
		return err
	}
	defer c.Close()
	hello := s.Hello
	if hello == "" {
		hello = "localhost"
	}
	if err := c.Hello(hello); err != nil {
		return err
	}
	if s.StartTLS != nil {
		if ok, _ := c.Extension("STARTTLS"); !ok {
			return errors.New("the server does not offer STARTTLS, which is required")
		}
		if err := c.StartTLS(s.StartTLS); err != nil {
			return err
		}
	}
	if err := c.Mail(s.From); err != nil {
		return err
	}
	if err := c.Rcpt(to); err != nil {
		return err
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	if _, err := w.Write(msg); err != nil {
		return err
	}
	if err := w.Close(); err != nil {
		return err
	}
	return c.Quit()
}

// Compose returns the mail of m: headers with a stable Message-ID
// (<m.ID@From's domain>), the plain text body (Text), and when m has a
// token, a PNG QR code of it attached.
func (s *SMTP) Compose(m Message) ([]byte, error) {
	from, err := mail.ParseAddress(s.From)
	if err != nil {
		return nil, fmt.Errorf("notify: the From address %q: %w", s.From, err)
	}
	if _, err := mail.ParseAddress(m.Email); err != nil || strings.ContainsAny(m.Email, "\r\n") {
		return nil, fmt.Errorf("%w: the recipient is not an email address", ErrPermanent)
	}
	domain := from.Address[strings.LastIndexByte(from.Address, '@')+1:]
	var b bytes.Buffer
	h := func(k, v string) { fmt.Fprintf(&b, "%s: %s\r\n", k, v) }
	h("From", from.String())
	h("To", m.Email)
	h("Subject", mime.QEncoding.Encode("utf-8", "Your delivery code for parcel "+m.Delivery))
	h("Date", m.Time.UTC().Format(time.RFC1123Z))
	h("Message-ID", "<"+m.ID+"@"+domain+">")
	h("MIME-Version", "1.0")
	text := strings.ReplaceAll(Text(m, s.LinkBase), "\n", "\r\n")
	if m.Token == "" {
		h("Content-Type", "text/plain; charset=utf-8")
		h("Content-Transfer-Encoding", "8bit")
		b.WriteString("\r\n" + text)
		return b.Bytes(), nil
	}
	png, err := qr.PNG(m.Token, 0)
	if err != nil {
		return nil, fmt.Errorf("notify: the token's QR code: %w", err)
	}
	mw := multipart.NewWriter(&b)
	h("Content-Type", "multipart/mixed; boundary="+mw.Boundary())
	b.WriteString("\r\n")
	pw, err := mw.CreatePart(textproto.MIMEHeader{"Content-Type": {"text/plain; charset=utf-8"}, "Content-Transfer-Encoding": {"8bit"}})
	if err != nil {
		return nil, err
	}
	_, _ = pw.Write([]byte(text))
	aw, err := mw.CreatePart(textproto.MIMEHeader{"Content-Type": {"image/png"}, "Content-Transfer-Encoding": {"base64"},
		"Content-Disposition": {`attachment; filename="delivery-code.png"`}})
	if err != nil {
		return nil, err
	}
	enc := base64.StdEncoding.EncodeToString(png)
	for len(enc) > 76 {
		_, _ = aw.Write([]byte(enc[:76] + "\r\n"))
		enc = enc[76:]
	}
	_, _ = aw.Write([]byte(enc + "\r\n"))
	if err := mw.Close(); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}
