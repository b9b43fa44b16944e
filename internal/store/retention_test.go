package store_test

import (
	"testing"

	"github.com/outpost-auth/outpost/internal/store"
	"github.com/outpost-auth/outpost/internal/store/storetest"
)

// TestAuditPruneContract runs the audit retention contract on both engines.
func TestAuditPruneContract(t *testing.T) {
	for _, eng := range engines {
		t.Run(eng.name, func(t *testing.T) {
			storetest.RunAuditPrune(t, func(t *testing.T) store.Store { return storetest.Open(t, eng.dsn(t)) })
		})
	}
}
