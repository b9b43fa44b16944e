package audit

// Event kinds of deliveries (internal/delivery). Their subject is the
// delivery id; their data holds the realm, device, mode, state, expiry and
// code version, never the recipient's contact nor a code.
const (
	DeliveryCreate   = "delivery.create"
	DeliveryCancel   = "delivery.cancel"
	DeliveryReassign = "delivery.reassign"
	// DeliveryAttempt: one attempt at the delivery's code is counted (online
	// confirm or a sealed code opened at sync), before the code is compared.
	DeliveryAttempt = "delivery.attempt"
	// DeliveryWrongCode: the attempt's code was not the delivery's.
	DeliveryWrongCode = "delivery.wrong_code"
	// DeliveryDeliver: a confirmed code made the delivery delivered.
	DeliveryDeliver = "delivery.deliver"
	// DeliveryFail: the attempt limit was reached; the delivery is failed.
	DeliveryFail = "delivery.fail"
	// DeliveryRefused: a confirm refused before any attempt was counted
	// (another device, another code version, a state that takes none).
	DeliveryRefused = "delivery.confirm_refused"
	// DeliveryIncident: evidence of an attack (data.incident names it): a
	// sealed code that passed the device's fingerprint but is wrong
	// ("fraud"), a sealed code that does not open ("bad_seal"), a device
	// confirming a delivery it does not hold ("wrong_device",
	// "stale_version").
	DeliveryIncident = "delivery.incident"
	// DeliveryOutForDelivery: the delivery was listed in its courier
	// device's route manifest (created/notified/reassigned → out_for_delivery).
	DeliveryOutForDelivery = "delivery.out_for_delivery"
)
