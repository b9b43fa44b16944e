package delivery

// State is where a delivery stands.
type State string

// The states. Terminal ones (Delivered, Failed, Expired, Cancelled) take
// no change except Failed → Reassigned (another courier tries again, with a
// new code).
const (
	Created        State = "created"
	Notified       State = "notified"
	OutForDelivery State = "out_for_delivery"
	Delivered      State = "delivered"
	Failed         State = "failed"
	Expired        State = "expired"
	Cancelled      State = "cancelled"
	Reassigned     State = "reassigned"
)

// transitions is the one table of allowed changes: from → the states it
// may move to. Reassigned is not terminal: the delivery goes on with a new
// code on its new device (notified again, out for delivery, …). A
// delivery goes out for delivery when its courier device fetches a route
// manifest listing it (courier.go), notified or not yet. Delivered and
// Failed are reachable before out_for_delivery too: an online confirm
// (confirm.go) may come before the courier's device fetched its manifest,
// and so may the attempt that uses up the limit.
var transitions = map[State][]State{
	Created:        {Notified, OutForDelivery, Cancelled, Reassigned, Expired, Delivered, Failed},
	Notified:       {OutForDelivery, Cancelled, Reassigned, Expired, Delivered, Failed},
	OutForDelivery: {Delivered, Failed, Cancelled, Reassigned, Expired},
	Reassigned:     {Notified, OutForDelivery, Cancelled, Reassigned, Expired, Delivered, Failed},
	Failed:         {Reassigned},
	Delivered:      nil,
	Expired:        nil,
	Cancelled:      nil,
}

// Allowed reports whether a delivery in state from may move to state to.
func Allowed(from, to State) bool {
	for _, s := range transitions[from] {
		if s == to {
			return true
		}
	}
	return false
}

// Valid reports whether s is a known state.
func (s State) Valid() bool { _, ok := transitions[s]; return ok }
