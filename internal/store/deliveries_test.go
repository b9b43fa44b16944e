package store_test

import (
	"testing"

	"github.com/outpost-auth/outpost/internal/store"
	"github.com/outpost-auth/outpost/internal/store/storetest"
)

// TestDeliveriesContract runs the delivery contract on both engines.
func TestDeliveriesContract(t *testing.T) {
	for _, eng := range engines {
		t.Run(eng.name, func(t *testing.T) {
			storetest.RunDeliveries(t, func(t *testing.T) store.Store { return storetest.Open(t, eng.dsn(t)) })
		})
	}
}

// TestOutboxContract runs the outbox contract on both engines.
func TestOutboxContract(t *testing.T) {
	for _, eng := range engines {
		t.Run(eng.name, func(t *testing.T) {
			storetest.RunOutbox(t, func(t *testing.T) store.Store { return storetest.Open(t, eng.dsn(t)) })
		})
	}
}

// TestCourierContract runs the courier contract (migration 0007) on both engines.
func TestCourierContract(t *testing.T) {
	for _, eng := range engines {
		t.Run(eng.name, func(t *testing.T) {
			storetest.RunCourier(t, func(t *testing.T) store.Store { return storetest.Open(t, eng.dsn(t)) })
		})
	}
}

// TestBundleJobsContract runs the durable bundle job contract on both engines.
func TestBundleJobsContract(t *testing.T) {
	for _, eng := range engines {
		t.Run(eng.name, func(t *testing.T) {
			storetest.RunBundleJobs(t, func(t *testing.T) store.Store { return storetest.Open(t, eng.dsn(t)) })
		})
	}
}
