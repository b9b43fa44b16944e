package audit

// Event kinds of deliveries (internal/delivery). Their subject is the
// delivery id; their data holds the realm, device, mode, state, expiry and
// code version, never the recipient's contact nor a code.
const (
	DeliveryCreate   = "delivery.create"
	DeliveryCancel   = "delivery.cancel"
	DeliveryReassign = "delivery.reassign"
)
