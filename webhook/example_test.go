package webhook_test

import (
	"fmt"
	"time"

	"github.com/outpost-auth/outpost/webhook"
)

func Example() {
	secret := []byte("the secret `outpost admin webhook set` printed once")
	body := []byte(`{"id":"ob-3f2a","type":"notified","delivery":"parcel-1","version":1,"state":"notified"}`)
	sent := time.Date(2031, 5, 6, 7, 8, 9, 0, time.UTC)

	// Outpost sends the body with this header…
	header := webhook.Sign(secret, body, sent)

	// …and the shipper's receiver checks it before reading the body.
	err := webhook.Verify(secret, header, body, sent.Add(3*time.Second), webhook.DefaultTolerance)
	fmt.Println(err)
	err = webhook.Verify(secret, header, []byte(`{"type":"delivered"}`), sent, webhook.DefaultTolerance)
	fmt.Println(err)
	// Output:
	// <nil>
	// webhook: signature does not match (wrong secret, or the body was changed)
}
