package audit

// Event kinds of device onboarding (internal/ca, internal/enrol). Their
// subject is the device serial ("ca" for the CA itself); their data holds
// the realm, the certificate's serial number and expiry, or the reason of
// a refusal, never a key or a nonce.
const (
	// CAInit: the issuing CA was created; data holds the root's fingerprint.
	CAInit = "ca.init"
	// DeviceEnrol: a device got its first certificate (first contact or EST).
	DeviceEnrol = "device.enrol"
	// DeviceRenew: a device renewed its certificate over mutual TLS.
	DeviceRenew = "device.renew"
	// DeviceRevoke: an admin revoked a device.
	DeviceRevoke = "device.revoke"
	// DeviceRefused: an enrolment or renewal was refused; data.reason says why.
	DeviceRefused = "device.refused"
)
