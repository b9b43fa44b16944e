package audit

// Event kinds of the outbox and the realms' webhooks (internal/outbox).
// Their subject is the outbox message id (the realm for webhook.set);
// their data holds the realm, delivery, version, kind, attempts and last
// error, never a code, a recipient nor a webhook secret.
const (
	DeliveryNotify = "delivery.notify"
	DeliveryExpire = "delivery.expire"
	OutboxDead     = "outbox.dead"
	OutboxResend   = "outbox.resend"
	WebhookSet     = "webhook.set"
)
