// Package offline verifies one-time passwords where there is no network,
// from signed hash lists ("bundles") an Outpost server issues to one field
// device, and keeps that device's state: OneSpan's hash data block and state
// data block. Other Go programs embed it; `outpost field …` is a thin shell
// around it.
//
// # The common case
//
// Create a store once, on the device, pinning the server's public key (from
// 'outpost keys export-public'); later runs call [Open] instead:
//
//	s, err := offline.Init(ctx, dir, offline.Config{DeviceID: "dev-7", ServerKey: pub}, offline.Options{})
//
// Import the bundles the server issues for this device, then verify:
//
//	_, err = s.Import(ctx, bundleFile)
//	res, err := s.Verify(ctx, offline.Attempt{User: "alice", Code: "123456", PIN: "2468"})
//	if err == nil {
//		door, _ := res.Secret("door") // a static secret, decrypted with the key the code released
//	}
//
// Verify's errors say what to do: errors.Is(err, [ErrRefused]) for a wrong,
// used or out-of-window code (it counts towards the wipe when it was a
// guess), [ErrLocked] while the delay after failures runs, [ErrWiped] after
// Policy.MaxFailures, [ErrCorrupt] when the store was damaged or altered.
// Import refuses a bundle that fails any check before storing anything
// ([ErrMalformed], [ErrBadSignature], [ErrWrongDevice], [ErrExpired], …).
//
// When the network returns, [Store.Sync] ships the device's log and token
// states to the server and brings back the server's state, revocations and
// refill bundles; [Store.PrepareUpload] and [Store.ApplyResponse] do the
// same with a file carried by hand. [Store.Status] shows everything the
// device holds. docs/offline.md and docs/sync.md are the user's guides.
//
// Field staff installing a device vouch for it offline with [Store.Vouch]: the
// label's QR payload, the site and a location go into this device's signed
// log, and the next sync takes the vouch to the server's roster, once
// (docs/onboarding.md).
// # A courier's device
//
// The same store serves a courier (docs/deliveries.md): each sync installs
// the device's route manifest ([Store.InstallManifest]: signed by the
// server, for this device, newer than the one held), [Store.CheckDelivery]
// checks a recipient's code or token at the door (a typo costs no attempt;
// attempts are counted before the check and kept across restarts; every
// decision is logged; an acceptance writes a receipt signed with the device
// key), and the next sync uploads the receipts and reports the server's
// answers (SyncReport.Receipts). [Store.Route] lists the manifest's
// deliveries.
//
// # What a bundle holds
//
// For each HOTP counter or TOTP step of its window, one entry: the bundle's
// random release key, sealed under a key that argon2id derives from the
// code (and the user's PIN, when the bundle takes one) with a salt unique to
// that entry. A right code unwraps the release key, and static secrets are
// encrypted under it: nothing in the file says whether a code is right, and
// patching out a comparison gains nothing. The format and that rule are
// internal/bundlefmt's, shared with the issuer.
//
// # The state data block
//
// A [Store] is a SQLite file in the data directory plus the device's
// Ed25519 key (device.key; device.pub for registration). Per token it keeps
// the last used counter or step (each code is accepted once), the
// consecutive failures, the time the next attempt is allowed (a delay that
// doubles per failure) and whether the token was wiped; a clock high-water
// mark refuses a clock set back beyond the policy's tolerance. Every
// decision is appended to the device's signed, hash-chained log in the same
// transaction as the state change it causes. An attempt is counted as a
// failure before the KDF runs and taken back on success, so that parallel
// attempts or a killed process get no free guess; the KDF runs only over the
// policy's window (TOTPBack..TOTPForward steps around the clock, or the next
// counter and HOTPLookahead after it), never the whole list.
//
// A bundle carries the server's state when it was issued: the token's last
// used counter (Import applies it, so a code accepted online is never
// accepted offline) and the newest entry of this device's log the server
// acknowledged, which the store's log must hold — otherwise the store was
// restored from an older copy or forked ([ErrForkedLog]). A [Counter]
// (Options.Counter; by default a [FileCounter]) counts the log's entries,
// and a store whose log is shorter refuses to open ([ErrRolledBack]); only
// a hardware counter also catches a whole directory restored
// (docs/offline.md, "Restored stores").
//
// What local lockout cannot do: it stops guessing on this device only. A
// thief who copies the bundle file attacks it on their own hardware, at the
// cost docs/offline.md computes. That is why bundles need PINs, short
// lifetimes and few entries, not "brute-force proof".
package offline
