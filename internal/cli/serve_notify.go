package cli

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"sync"
	"time"

	"github.com/outpost-auth/outpost/internal/datadir"
	"github.com/outpost-auth/outpost/internal/notify"
	"github.com/outpost-auth/outpost/internal/outbox"
	"github.com/outpost-auth/outpost/internal/server"
	"github.com/spf13/cobra"
)

// notifyFlags configure the recipients' notifiers and the outbox worker of
// 'outpost serve' (docs/deliveries.md, "The outbox").
type notifyFlags struct {
	smtpAddr, smtpFrom, smtpHello string
	smtpStartTLS                  bool
	smsURL, smsSecretFile         string
	linkBase                      string
	interval, webhookTimeout      time.Duration
	policy                        outbox.Policy
}

func (f *notifyFlags) register(c *cobra.Command) {
	fl := c.Flags()
	fl.StringVar(&f.smtpAddr, "smtp-addr", "", "SMTP server (host:port) that mails delivery codes to email recipients")
	fl.StringVar(&f.smtpFrom, "smtp-from", "", "sender address of the code mails (required with --smtp-addr)")
	fl.BoolVar(&f.smtpStartTLS, "smtp-starttls", false, "require STARTTLS with the SMTP server (its certificate checked against the host of --smtp-addr)")
	fl.StringVar(&f.smtpHello, "smtp-hello", "localhost", "name this server gives in EHLO")
	fl.StringVar(&f.smsURL, "sms-url", "", "SMS gateway webhook that texts delivery codes to phone recipients (JSON POST, signed)")
	fl.StringVar(&f.smsSecretFile, "sms-secret-file", "", "file holding the secret SMS gateway requests are signed with (required with --sms-url)")
	fl.StringVar(&f.linkBase, "token-link-base", "", "URL a delivery token is appended to, for the link in token mails and SMS")
	fl.DurationVar(&f.interval, "outbox-interval", 2*time.Second, "how often the outbox worker looks for due messages")
	fl.IntVar(&f.policy.MaxAttempts, "outbox-max-attempts", outbox.DefaultPolicy.MaxAttempts, "attempts before a message is dead")
	fl.DurationVar(&f.policy.MaxAge, "outbox-max-age", outbox.DefaultPolicy.MaxAge, "age after which a message that is still failing is dead")
	fl.DurationVar(&f.policy.BaseDelay, "outbox-retry-base", outbox.DefaultPolicy.BaseDelay, "wait after the first failure (doubled each time)")
	fl.DurationVar(&f.policy.MaxDelay, "outbox-retry-max", outbox.DefaultPolicy.MaxDelay, "longest wait between attempts")
	fl.DurationVar(&f.webhookTimeout, "webhook-timeout", 10*time.Second, "timeout of one webhook, SMS gateway or SMTP exchange")
	fl.DurationVar(&f.policy.Lease, "outbox-lease", outbox.DefaultPolicy.Lease, "how long a message claimed by a worker is its alone (more than twice --webhook-timeout); a killed worker's messages wait this long")
}

// config returns the notifiers and the worker's policy, or a usage error.
func (f *notifyFlags) config() (notify.Channels, error) {
	var ch notify.Channels
	if f.interval < 100*time.Millisecond {
		return ch, usageError{fmt.Errorf("--outbox-interval %s: give at least 100ms", f.interval)}
	}
	if f.policy.MaxAttempts < 1 || f.policy.MaxAge <= 0 || f.policy.BaseDelay <= 0 || f.policy.MaxDelay < f.policy.BaseDelay || f.webhookTimeout <= 0 {
		return ch, usageError{errors.New("--outbox-max-attempts, --outbox-max-age, --outbox-retry-base and --webhook-timeout must be positive, and --outbox-retry-max at least --outbox-retry-base")}
	}
	if f.policy.Lease <= 2*f.webhookTimeout {
		return ch, usageError{fmt.Errorf("--outbox-lease %s must be more than twice --webhook-timeout %s, so that a send ends before another worker may claim it", f.policy.Lease, f.webhookTimeout)}
	}
	if f.smtpAddr != "" {
		host, _, err := net.SplitHostPort(f.smtpAddr)
		if err != nil || f.smtpFrom == "" {
			return ch, usageError{fmt.Errorf("--smtp-addr needs host:port and --smtp-from an address (got %q, %q)", f.smtpAddr, f.smtpFrom)}
		}
		s := &notify.SMTP{Addr: f.smtpAddr, From: f.smtpFrom, Hello: f.smtpHello, LinkBase: f.linkBase, Timeout: f.webhookTimeout}
		if f.smtpStartTLS {
			s.StartTLS = &tls.Config{ServerName: host, MinVersion: tls.VersionTLS12}
		}
		if _, err := s.Compose(notify.Message{ID: "check", Email: "check@example.org"}); err != nil {
			return ch, usageError{fmt.Errorf("--smtp-from: %w", err)}
		}
		ch.Email = s
	}
	if f.smsURL != "" {
		if u, err := url.Parse(f.smsURL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			return ch, usageError{fmt.Errorf("--sms-url must be an http(s) URL")}
		}
		if f.smsSecretFile == "" {
			return ch, usageError{errors.New("--sms-url needs --sms-secret-file (the secret the gateway checks signatures with)")}
		}
		secret, err := datadir.ReadFileLimit(f.smsSecretFile, 4096)
		if err != nil {
			return ch, fmt.Errorf("reading --sms-secret-file: %w", err)
		}
		if secret = trimNewline(secret); len(secret) < outbox.MinWebhookKey {
			return ch, usageError{fmt.Errorf("--sms-secret-file: the secret must be at least %d bytes", outbox.MinWebhookKey)}
		}
		ch.Phone = &notify.SMSWebhook{URL: f.smsURL, Secret: secret, Timeout: f.webhookTimeout, LinkBase: f.linkBase}
	}
	return ch, nil
}

// start runs the outbox worker until the returned stop is called (which
// waits for the round in progress).
func (f notifyFlags) start(ctx context.Context, srv *server.Server, ch notify.Channels, logger *slog.Logger) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); srv.RunOutbox(ctx, f.interval) }()
	logger.Info("outbox worker running", "every", f.interval.String(), "smtp", ch.Email != nil, "sms", ch.Phone != nil)
	return func() { cancel(); wg.Wait() }
}
