package online

import (
	"testing"
	"time"
)

func TestDelayGrowsAndCaps(t *testing.T) {
	p := DefaultPolicy
	cases := []struct {
		failures int
		want     time.Duration
	}{
		{0, 0}, {1, 0}, {3, 0}, {4, time.Second}, {5, 2 * time.Second}, {6, 4 * time.Second},
		{12, 256 * time.Second}, {13, 5 * time.Minute}, {99, 5 * time.Minute},
	}
	for _, c := range cases {
		if got := p.Delay(c.failures); got != c.want {
			t.Errorf("Delay(%d) = %v, want %v", c.failures, got, c.want)
		}
	}
}

func TestLocked(t *testing.T) {
	p := DefaultPolicy
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	if _, locked := p.Locked(3, now, now); locked {
		t.Error("free failures lock the user")
	}
	l, locked := p.Locked(5, now.Add(-time.Second), now)
	if !locked || l.Hard || l.RetryAfter != time.Second {
		t.Errorf("after 5 failures 1 s ago: %+v %v, want 1 s more", l, locked)
	}
	if _, locked := p.Locked(5, now.Add(-2*time.Second), now); locked {
		t.Error("still locked after the delay passed")
	}
	if l, locked := p.Locked(p.MaxFailures, now.Add(-24*time.Hour), now); !locked || !l.Hard {
		t.Errorf("at MaxFailures: %+v %v, want a hard lock", l, locked)
	}
}

func TestPolicyValidate(t *testing.T) {
	if err := DefaultPolicy.Validate(); err != nil {
		t.Fatal(err)
	}
	for name, mod := range map[string]func(*Policy){
		"max failures 0":       func(p *Policy) { p.MaxFailures = 0 },
		"max failures 101":     func(p *Policy) { p.MaxFailures = NISTMaxFailures + 1 },
		"negative window":      func(p *Policy) { p.TOTPWindow.Back = -1 },
		"huge lookahead":       func(p *Policy) { p.HOTPLookahead = 5000 },
		"tiny resync":          func(p *Policy) { p.ResyncWindow = 1 },
		"max delay below base": func(p *Policy) { p.MaxDelay = p.BaseDelay / 2 },
	} {
		p := DefaultPolicy
		mod(&p)
		if err := p.Validate(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
