package store_test

import (
	"testing"

	"github.com/outpost-auth/outpost/internal/store"
	"github.com/outpost-auth/outpost/internal/store/storetest"
)

// TestDeliveryAttemptsContract runs the attempt-count contract on both engines.
func TestDeliveryAttemptsContract(t *testing.T) {
	for _, eng := range engines {
		t.Run(eng.name, func(t *testing.T) {
			storetest.RunDeliveryAttempts(t, func(t *testing.T) store.Store { return storetest.Open(t, eng.dsn(t)) })
		})
	}
}
