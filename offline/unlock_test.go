package offline_test

import (
	"context"
	"errors"
	"testing"

	"github.com/outpost-auth/outpost/offline"
)

// TestUnlock: the secret's name is checked before the code is used (a wrong
// name costs no code and no failure); a right code releases the named
// secret, or all of them.
func TestUnlock(t *testing.T) {
	ctx := context.Background()
	s, _, _ := newStore(t, quickPolicy)
	if _, err := s.Import(ctx, issue(t, hotpReq(0, 10))); err != nil {
		t.Fatal(err)
	}
	codes := hotpCodes(t, 3)
	for _, tc := range []struct {
		name, secret, code string
		want               map[string]string
		err                error
	}{
		{"unknown secret: refused before the code", "garage", codes[0], nil, offline.ErrNoSecret},
		{"the named secret", "door", codes[0], map[string]string{"door": "4711"}, nil},
		{"every secret", "", codes[1], map[string]string{"door": "4711"}, nil},
		{"a used code", "door", codes[1], nil, offline.ErrRefused},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, got, err := s.Unlock(ctx, offline.Attempt{User: "alice", Code: tc.code}, tc.secret)
			if !errors.Is(err, tc.err) {
				t.Fatalf("err %v, want %v", err, tc.err)
			}
			if len(got) != len(tc.want) {
				t.Fatalf("secrets %q, want %q", got, tc.want)
			}
			for k, v := range tc.want {
				if string(got[k]) != v {
					t.Fatalf("secret %s = %q, want %q", k, got[k], v)
				}
			}
			if errors.Is(err, offline.ErrNoSecret) {
				if st, _ := s.Lookup(ctx, "", "alice", ""); st.Failures != 0 || st.LastUsed != nil {
					t.Fatalf("a refused secret name cost a failure or a code: %+v", st)
				}
			}
		})
	}
}
