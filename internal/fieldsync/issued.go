package fieldsync

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/outpost-auth/outpost/internal/bundlefmt"
	"github.com/outpost-auth/outpost/internal/eventlog"
	"github.com/outpost-auth/outpost/internal/online"
	"github.com/outpost-auth/outpost/internal/store"
	"github.com/outpost-auth/outpost/internal/syncproto"
	"github.com/outpost-auth/outpost/otp"
)

// A device speaks only for what it was given (docs/sync.md). The holder of
// a field device holds its key: whatever the device's log and state say is
// signed, and may be forged. So the server applies a device's claims only
// within the bundles it recorded issuing to that very device
// (store.IssuedBundle, written by RecordIssued where every bundle is
// signed):
//
//   - an "import" entry counts only when its serial, type and range are
//     those of a bundle issued to the device for that token;
//   - a "verify.ok" counts (offline use, conflict search, online counter,
//     proof of use for a refill) only when its counter or step lies inside
//     the issued bundle its serial names and, for TOTP, the step has begun
//     by the server's clock (give or take [StepTolerance]);
//   - a reported last used counter raises the online one only up to the
//     highest counter issued to the device for that token, and for TOTP
//     only up to a step that has begun;
//   - a token never issued to the device is not even locked: its events are
//     recorded as the device's claims and change nothing.
//
// Anything else is an incident (unissued_token, unissued_bundle,
// out_of_range) recorded in the audit log, once per token and kind per
// upload, and the claim changes no state. The rest of the upload applies:
// the device log is a hash chain, so a forged entry cannot be dropped from
// it, and refusing the whole upload would stop every later entry of the
// device from ever reaching the server (and a bundle issued before the
// server kept these records would stop a device for good). The evidence is
// kept, marked "ignored" in each such entry's audit record.

// Incident kinds of claims beyond what the server issued to the device.
const (
	// IncidentUnissued: events or state for a token the server never issued to the device.
	IncidentUnissued = "unissued_token"
	// IncidentUnissuedBundle: an import or acceptance naming a bundle (serial,
	// type, range) the server never issued to the device.
	IncidentUnissuedBundle = "unissued_bundle"
	// IncidentOutOfRange: a counter or step outside the issued bundle's range.
	IncidentOutOfRange = "out_of_range"
	// IncidentSearchBounded: the conflict search of an upload hit its bound
	// before it could check every counter; a person should look.
	IncidentSearchBounded = "conflict_search_bounded"
)

// RecordIssued records a bundle the server signed for device, before it is
// handed out: the only grounds on which sync later accepts that device's
// word about the bundle's token. internal/issuance, the server's one
// issuer, calls it for every bundle (the offline bundles API and its jobs,
// PIN bundles of an online login, refills).
func (s *Service) RecordIssued(ctx context.Context, data []byte, device string) error {
	b, err := bundlefmt.Decode(data, []ed25519.PublicKey{s.Signer.Public}, bundlefmt.Expect{Device: device})
	if err != nil {
		return fmt.Errorf("fieldsync: recording an issued bundle: %w", err)
	}
	return s.Sync.PutIssuedBundle(ctx, store.IssuedBundle{Realm: b.Realm, Device: b.Device, UserID: b.User, TokenID: b.Token,
		Serial: b.Serial, Type: b.OTP.Type, First: b.First, Last: b.Last(), NotAfter: b.NotAfter, PIN: b.PIN,
		Secrets: len(b.Secrets), IssuedAt: b.IssuedAt})
}

// grants is what the server issued to the syncing device, read in its
// transaction: per token, the highest counter issued, and the bundles
// looked up by serial.
type grants struct {
	tx      store.SyncTx
	last    map[syncproto.TokenKey]uint64
	bundles map[syncproto.TokenKey]map[uint64]*store.IssuedBundle // nil entry: no such bundle
}

func newGrants(tx store.SyncTx) *grants {
	return &grants{tx: tx, last: map[syncproto.TokenKey]uint64{}, bundles: map[syncproto.TokenKey]map[uint64]*store.IssuedBundle{}}
}

// load reads whether k was issued to the device at all; false: never.
func (g *grants) load(k syncproto.TokenKey) (bool, error) {
	_, last, found, err := g.tx.IssuedSpan(k.Realm, k.User, k.Token)
	if err != nil || !found {
		return false, err
	}
	g.last[k] = last
	return true, nil
}

// bundle returns the bundle serial of k issued to the device, or nil.
func (g *grants) bundle(k syncproto.TokenKey, serial uint64) (*store.IssuedBundle, error) {
	m := g.bundles[k]
	if m == nil {
		m = map[uint64]*store.IssuedBundle{}
		g.bundles[k] = m
	}
	if b, ok := m[serial]; ok {
		return b, nil
	}
	b, found, err := g.tx.IssuedBundle(k.Realm, k.User, k.Token, serial)
	if err != nil {
		return nil, err
	}
	if found {
		m[serial] = &b
	} else {
		m[serial] = nil
	}
	return m[serial], nil
}

// matchImport returns the issued bundle an "import" entry names, or nil
// when the serial, type or range differ from what was issued.
func (g *grants) matchImport(k syncproto.TokenKey, ev *eventData) (*store.IssuedBundle, error) {
	if ev.Serial == nil || ev.First == nil || ev.Last == nil {
		return nil, nil
	}
	b, err := g.bundle(k, *ev.Serial)
	if err != nil || b == nil || b.Type != ev.Type || b.First != *ev.First || b.Last != *ev.Last {
		return nil, err
	}
	return b, nil
}

// checkUse returns "" when counter c of bundle serial of k was issued to the
// device and, for a TOTP token, is not above horizon (see [StepTolerance]),
// else the incident kind.
func (g *grants) checkUse(k syncproto.TokenKey, serial *uint64, c, horizon uint64) (string, error) {
	if serial == nil {
		return IncidentUnissuedBundle, nil
	}
	b, err := g.bundle(k, *serial)
	switch {
	case err != nil:
		return "", err
	case b == nil:
		return IncidentUnissuedBundle, nil
	case c < b.First || c > b.Last || c > horizon:
		return IncidentOutOfRange, nil
	}
	return "", nil
}

// StepTolerance is how far ahead of the server's clock the time of a TOTP
// step a device claims to have accepted (a verify.ok, or a token state's
// last used step) may lie: the clock skew sync tolerates between a device
// and the server (syncproto.Skew, also the offline DefaultPolicy's
// ClockTolerance). One step more is allowed for the step the offline window
// tries ahead of the device's clock (DefaultPolicy.TOTPForward). A TOTP
// bundle holds steps up to hours or days ahead; no device can have accepted
// one that has not begun, and a claim of one would lock the user out online
// (every code until then would be "replayed"): it is out_of_range, and
// changes nothing.
const StepTolerance = syncproto.Skew

// horizon returns the highest TOTP step of token k a device can have
// accepted by now (see [StepTolerance]); for an HOTP token, or one the
// server no longer holds, the highest counter there is.
func (a *applier) horizon(k syncproto.TokenKey) uint64 {
	t, ok := a.out.tokens[k]
	if !ok {
		return syncproto.MaxCounter
	}
	p, err := online.Params(t)
	if err != nil || p.Type != otp.TypeTOTP {
		return syncproto.MaxCounter
	}
	return p.Step(a.now.Add(StepTolerance)) + 1
}

// maxExamples bounds the examples one claim incident lists.
const maxExamples = 8

// claims collects the claims of one upload beyond what was issued: one
// incident per token and kind, with how many claims and a few examples.
type claims struct {
	order []claimKey
	m     map[claimKey]*claim
}

type claimKey struct {
	kind string
	k    syncproto.TokenKey
}

type claim struct {
	n        int
	examples []map[string]any
}

// add records one claim of kind for k; what describes it (the device's log
// entry, the counter, the serial).
func (c *claims) add(kind string, k syncproto.TokenKey, what map[string]any) {
	if c.m == nil {
		c.m = map[claimKey]*claim{}
	}
	ck := claimKey{kind, k}
	x := c.m[ck]
	if x == nil {
		x = &claim{}
		c.m[ck] = x
		c.order = append(c.order, ck)
	}
	x.n++
	if len(x.examples) < maxExamples {
		x.examples = append(x.examples, what)
	}
}

// kinds returns the incident kind of each incident entries makes.
func (c *claims) kinds() []string {
	out := make([]string, len(c.order))
	for i, ck := range c.order {
		out[i] = ck.kind
	}
	return out
}

// entries are the incidents' audit entries.
func (c *claims) entries(d store.Device, serial uint64, via string, now time.Time) []eventlog.Entry {
	out := make([]eventlog.Entry, 0, len(c.order))
	for _, ck := range c.order {
		x := c.m[ck]
		raw, _ := json.Marshal(map[string]any{"incident": ck.kind, "realm": ck.k.Realm, "user": ck.k.User, "token": ck.k.Token,
			"serial": serial, "via": via, "claims": x.n, "examples": x.examples, "reason": claimReason(ck.kind)})
		out = append(out, eventlog.Entry{Time: now, Kind: KindIncident, Actor: "device:" + d.ID, Subject: ck.k.User, Data: raw})
	}
	return out
}

// ignored are the claims for the device's answer (the server's own bound
// on the conflict search is no claim of the device).
func (c *claims) ignored() []syncproto.IgnoredClaim {
	var out []syncproto.IgnoredClaim
	for _, ck := range c.order {
		if ck.kind != IncidentSearchBounded {
			out = append(out, syncproto.IgnoredClaim{TokenKey: ck.k, Incident: ck.kind, Claims: c.m[ck].n, Reason: claimReason(ck.kind)})
		}
	}
	return out
}

func claimReason(kind string) string {
	switch kind {
	case IncidentUnissued:
		return "the device speaks for a token the server never issued to it: nothing applied"
	case IncidentUnissuedBundle:
		return "the device names a bundle (serial, type or range) the server never issued to it: nothing applied"
	case IncidentOutOfRange:
		return "a counter or step outside the bundles the server issued to the device, or a TOTP step that has not begun by the server's clock: nothing applied"
	case IncidentSearchBounded:
		return fmt.Sprintf("the conflict search of this upload read its limit of %d audit entries before checking these counters: look for another acceptance of them by hand", maxConflictScan)
	}
	return kind
}

// sortedKeys returns m's keys in lock order.
func sortedKeys[V any](m map[syncproto.TokenKey]V) []syncproto.TokenKey {
	ks := make([]syncproto.TokenKey, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	slices.SortFunc(ks, cmpKey)
	return ks
}
