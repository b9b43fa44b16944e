package store_test

import (
	"testing"

	"github.com/outpost-auth/outpost/internal/store"
	"github.com/outpost-auth/outpost/internal/store/storetest"
)

// TestRosterContract runs the roster contract on both engines.
func TestRosterContract(t *testing.T) {
	for _, eng := range engines {
		t.Run(eng.name, func(t *testing.T) {
			storetest.RunRoster(t, func(t *testing.T) store.Store { return storetest.Open(t, eng.dsn(t)) })
		})
	}
}
