package online

import (
	"errors"
	"fmt"
	"testing"

	"github.com/outpost-auth/outpost/internal/store"
)

// TestWriteOutage: a refused write starts the state, a write done ends it,
// any other answer leaves it as it was.
func TestWriteOutage(t *testing.T) {
	refused := fmt.Errorf("%w (SQLSTATE 25006)", store.ErrUnavailable)
	for _, tc := range []struct {
		name   string
		before bool
		err    error
		after  bool
	}{
		{"refused", false, refused, true},
		{"still refused", true, refused, true},
		{"done", true, nil, false},
		{"a replay answered", true, store.ErrReplayed, true},
		{"a stale version answered", true, store.ErrStale, true},
		{"another error", true, errors.New("boom"), true},
		{"another error, no outage", false, errors.New("boom"), false},
	} {
		var o writeOutage
		o.refused.Store(tc.before)
		if got := o.wrote(tc.err); got != tc.err {
			t.Errorf("%s: wrote returned %v, want its argument", tc.name, got)
		}
		if o.refused.Load() != tc.after {
			t.Errorf("%s: refused %v, want %v", tc.name, o.refused.Load(), tc.after)
		}
	}
}
