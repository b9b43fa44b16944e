// Package clockguard holds the two clock rules of Outpost's verifiers,
// written once.
//
// [Window] is the validity rule of everything signed with a not-before and
// a not-after (artifacts, bundles, sync uploads): now must fall within the
// window, widened at both ends by a skew that tolerates clocks set a little
// apart.
//
// [Check] is the high-water mark of the offline verifiers. A verifier with
// no network cannot ask anyone the time, so it keeps the latest time it has
// seen and refuses to decide while its clock is set back behind that mark by
// more than a tolerance: winding the clock back must not reopen an expired
// bundle, a used TOTP step or a past epoch. The field store (offline) and
// the site (site) keep the mark in their databases, in the transaction of
// each decision:
//
//	next, ok := clockguard.Check(now, mark, tolerance)
//	if !ok { /* refuse: the clock was set back */ }
//	if next.After(mark) { /* store next as the new mark */ }
package clockguard

import "time"

// Position is where a time falls against a validity window.
type Position int

// Positions of [Window].
const (
	Within Position = iota
	Before          // not valid yet
	After           // expired
)

// Window reports where now falls against [notBefore, notAfter] widened by
// skew at both ends (both ends inclusive).
func Window(now, notBefore, notAfter time.Time, skew time.Duration) Position {
	switch {
	case now.Add(skew).Before(notBefore):
		return Before
	case now.Add(-skew).After(notAfter):
		return After
	}
	return Within
}

// MaxTolerance bounds the tolerance an offline verifier's policy may set:
// a clock set back further than a day is refused whatever the policy.
const MaxTolerance = 24 * time.Hour

// Check applies the high-water-mark rule to now, given mark, the latest time
// seen. It returns ok == false when now is more than tolerance behind mark
// (refuse, and keep the mark); otherwise the mark to keep, the later of mark
// and now. A clock within the tolerance behind the mark is accepted and does
// not lower it.
func Check(now, mark time.Time, tolerance time.Duration) (next time.Time, ok bool) {
	if now.Before(mark.Add(-tolerance)) {
		return mark, false
	}
	if now.After(mark) {
		return now, true
	}
	return mark, true
}
