// Package offline verifies one-time passwords where there is no network, from
// signed hash lists ("bundles") issued by an Outpost server, and keeps the
// field device's state: OneSpan's hash data block and state data block.
// Other Go programs embed it; `outpost field …` is a thin shell around it.
//
// # The common case
//
// Create a store once, on the device, pinning the server's public key:
//
//	s, err := offline.Init(ctx, dir, offline.Config{DeviceID: "dev-7", ServerKey: pub}, offline.Options{})
//
// then import the bundles the server issues for this device, and verify:
//
//	_, err = s.Import(ctx, bundleFile)
//	res, err := s.Verify(ctx, offline.Attempt{User: "alice", Code: "123456", PIN: "2468"})
//	if err == nil {
//		door, _ := res.Secret("door")  // a static secret, decrypted with the key the code released
//	}
//
// Later runs call [Open] instead of [Init]. Verify's errors say what to do:
// errors.Is(err, ErrRefused) for a wrong, used or out-of-window code (it
// counts towards the wipe when it was a guess), [ErrLocked] while the delay
// after failures runs, [ErrWiped] after Policy.MaxFailures, [ErrCorrupt]
// when the store was damaged or altered.
//
// # What a bundle is
//
// A bundle is a signed artifact (internal/artifact: Ed25519, key id,
// version, not-before/not-after, serial) of type "offline-bundle", bound to one
// device id. Its body holds, for each HOTP counter or TOTP step in its event
// window or period, one 48-byte entry:
//
//	entry = AES-256-GCM( HKDF( argon2id(code || PIN, salt_counter) ), release key )
//
// The entry does not say whether a code is right: a right code unwraps the
// bundle's random 32-byte release key, and static secrets (a door code, a
// local admin password) are encrypted under that key. Patching out a
// comparison gains nothing; without the right code there is no key.
//
// The argon2id salt is one random 32-byte salt per bundle, diversified per
// entry: salt_counter = SHA-256(label, bundle salt, realm, user, token,
// device, type, counter). So one guess tests one entry of one bundle, no
// precomputation serves two entries or two bundles, and the file stays small
// (no stored salt per entry). [Bundle.EntrySalt], [Bundle.SealEntry] and
// [Bundle.OpenEntry] are the one implementation of this rule, for the issuer
// (internal/bundle) and the verifier alike.
//
// [Decode] verifies a bundle file — size, envelope, trusted key, signature,
// type, version, device, validity, then every body field — before any of it
// is used. [Bundle.Try] runs the KDF over a counter window, at most [MaxTry]
// entries and never the whole list.
//
// # The state data block
//
// A [Store] is a SQLite file in the data directory (internal/sqlitedb) plus
// the device's Ed25519 key (device.key; device.pub for registration). Per
// token it keeps the last used counter or step (each code is accepted once),
// the consecutive failures and the time the next attempt is allowed (a delay
// that doubles per failure), and whether the token was wiped. The store keeps
// a clock high-water mark and refuses a clock set back beyond the policy's
// tolerance. Every decision — import, attempt, success, failure, refusal,
// wipe — is appended to the device's signed, hash-chained log
// (internal/devicelog) in the same SQLite transaction as the state change it
// causes. Sync (docs/sync.md) ships that log and the token states to the
// server and brings back the server's state, revocations and refills:
// [Store.Sync] over HTTP, or [Store.PrepareUpload] and [Store.ApplyResponse]
// for a file carried by hand. The server's last used counters are applied
// with [Store.AdvanceUsed] (max semantics), so that codes used online are
// refused offline.
//
// A bundle also carries the server's state when it was issued: the token's
// last used counter or step (Bundle.Used), which [Store.Import] applies, so a
// code accepted online before the bundle was issued is never accepted from
// it; and the newest entry of this device's log the server acknowledged
// (Bundle.Acked), which the store's log must hold — otherwise the store was
// restored from an older copy or forked, and Import refuses the bundle with
// [ErrForkedLog]. A [Counter] (Options.Counter; by default a [FileCounter]
// in the data directory) counts the log's entries, and a store whose log is
// shorter than the count refuses to open ([ErrRolledBack]). The file
// counter does not catch a whole data directory restored whole; a hardware
// counter does (docs/offline.md, "Restored stores").
//
// An attempt is counted as a failure before the KDF runs and taken back on
// success, so that parallel attempts or a killed process get no free guess.
// The window rule: TOTP tries the steps Policy.TOTPBack..TOTPForward around
// the device clock, HOTP the next counter and Policy.HOTPLookahead after it;
// both only above the last used one.
//
// What local lockout cannot do: it stops guessing on this device only. A
// thief who copies the bundle file attacks it on their own hardware, at the
// cost internal/cost computes (docs/offline.md has the figures). That is why
// bundles need PINs, short lifetimes and few entries, not "brute-force proof".
package offline
