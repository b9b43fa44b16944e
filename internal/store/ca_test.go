package store_test

import (
	"testing"

	"github.com/outpost-auth/outpost/internal/store"
	"github.com/outpost-auth/outpost/internal/store/storetest"
)

// TestCAContract runs the onboarding contract on both engines.
func TestCAContract(t *testing.T) {
	for _, eng := range engines {
		t.Run(eng.name, func(t *testing.T) {
			storetest.RunCA(t, func(t *testing.T) store.Store { return storetest.Open(t, eng.dsn(t)) })
		})
	}
}
